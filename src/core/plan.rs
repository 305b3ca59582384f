//! `reconcile`: from the desired state and the facts, the actions that move toward it.
//!
//! Owns the forwarded-engine invariant: for each Up VPN and each forwarded port P it serves there
//! is exactly one live forwarded engine whose recorded P2P port is P, and no live engine of that
//! VPN holds P in any other role (such an engine is replaced on a free block, create first). A VPN
//! serves its lowest [`forwarded_cap`] ports (`max_replicas` split over the configured VPNs, at
//! least one). A forwarded engine whose port the VPN no longer serves is removed once every
//! served port has a forwarded engine that is not on its way (created or starting). Port events are only triggers; this function decides
//! from the facts alone, so a stale "old port" can never delete a fresh forwarded engine.
//!
//! It also rolls a changed engine template over the pool: one outdated engine at a time (idle
//! ones first, the forwarded engine last) stops counting toward capacity, so the deficit creates
//! its replacement, and it is removed once its lane's ready engines fill the lane's share again
//! without it and at least `min_replicas` engines are ready without it. A forwarded engine's
//! successor needs its P2P port, so its replacement is an ordinary engine (capacity never
//! drops), and the forwarded engine's place is filled again once the old engine is gone, as for
//! an unhealthy forwarded engine; the extra engine is then trimmed as surplus.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

use crate::core::model::EnginePhase;
use crate::core::model::{EngineFact, VpnView};
use crate::core::port_set::PortSet;
use crate::core::ports::{EnginePorts, FreeBlocks, block_containing, held_ports};

/// What happens to the engine count while a VPN has failed (`vpn.emergency_capacity`).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EmergencyCapacity {
    /// Each healthy VPN keeps its normal share; the failed VPN's share is simply missing.
    Reduced,
    /// The healthy VPNs are topped up so that together they hold `min_replicas`.
    Shift,
}

/// Everything `reconcile` decides from.
#[derive(Clone, Debug)]
pub struct PlanInput<'a> {
    pub now: Instant,
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub min_free: u32,
    pub idle_grace: Duration,
    pub unhealthy_grace: Duration,
    pub emergency_capacity: EmergencyCapacity,
    /// Every configured lane (VPN, or the plain network in mode `none`), in config order.
    pub lanes: &'a [VpnView],
    /// Every engine acevisor knows, including creations under way.
    pub engines: &'a [EngineFact],
    /// At least this many engines while provisioning requests wait (each request raises it to
    /// one more than the engines that existed when it came).
    pub demand_floor: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RemoveReason {
    /// Its VPN failed: the engine is dead or stranded.
    VpnFailed,
    /// Attached to a previous container of its VPN (recreated or restarted).
    Stale,
    /// A forwarded engine whose P2P port is no longer one the VPN serves (every served port has a
    /// forwarded engine past its start).
    PortMismatch,
    /// Idle above the replica floors for longer than `idle_grace`.
    Surplus,
    /// Unhealthy beyond `unhealthy_grace` (its replacement is ready).
    Unhealthy,
    /// Its VPN is not in the config any more.
    UnknownVpn,
    /// A second forwarded engine holding the VPN's port (never planned; cleaned up if found).
    Duplicate,
    /// Holds one of the VPN's forwarded ports as one of its own ports (its replacement is ready).
    PortClash,
    /// Made from an earlier engine template (its replacement is ready): a rolling update.
    Outdated,
}

impl RemoveReason {
    pub fn label(&self) -> &'static str {
        match self {
            RemoveReason::VpnFailed => "vpn_failed",
            RemoveReason::Stale => "stale",
            RemoveReason::PortMismatch => "port_mismatch",
            RemoveReason::Surplus => "surplus",
            RemoveReason::Unhealthy => "unhealthy",
            RemoveReason::UnknownVpn => "unknown_vpn",
            RemoveReason::Duplicate => "duplicate",
            RemoveReason::PortClash => "port_clash",
            RemoveReason::Outdated => "outdated",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create an engine on `vpn` with these ports (for a forwarded engine, `ports.p2p` is the
    /// VPN's forwarded port).
    Create {
        vpn: Option<String>,
        vpn_id: Option<String>,
        vpn_started_at: Option<String>,
        forwarded: bool,
        ports: EnginePorts,
    },
    Remove {
        name: String,
        reason: RemoveReason,
    },
}

/// The actions that move the facts toward the desired state, in the order to perform them:
/// forwarded engines first, then ordinary creations, then removals (so a replacement is always
/// created before what it replaces is removed).
pub fn reconcile(input: &PlanInput<'_>) -> Vec<Action> {
    let mut forwarded_creates = Vec::new();
    let mut ordinary_creates = Vec::new();
    let mut removals = Vec::new();

    // Every engine grouped by lane once (whatever its phase: ports are free only once the
    // container is gone), and the live ones: engines whose lane makes them dead or unknown go
    // first.
    let mut all_by_lane: HashMap<&str, Vec<&EngineFact>> = HashMap::new();
    let mut live_by_lane: HashMap<&str, Vec<&EngineFact>> = HashMap::new();
    let lanes_by_key: HashMap<&str, &VpnView> = input.lanes.iter().map(|l| (l.key(), l)).collect();
    for e in input.engines {
        all_by_lane.entry(e.vpn_key()).or_default().push(e);
        if e.phase == EnginePhase::Removing {
            continue;
        }
        let Some(lane) = lanes_by_key.get(e.vpn_key()) else {
            if e.phase != EnginePhase::Creating {
                removals.push(remove(e, RemoveReason::UnknownVpn));
            }
            continue;
        };
        let dead = if lane.failed {
            Some(RemoveReason::VpnFailed)
        } else if is_stale(e, lane) {
            Some(RemoveReason::Stale)
        } else {
            None
        };
        match dead {
            // A creation under way is removed by the next pass, once its container exists.
            Some(_) if e.phase == EnginePhase::Creating => {}
            Some(reason) => removals.push(remove(e, reason)),
            None => live_by_lane.entry(e.vpn_key()).or_default().push(e),
        }
    }
    let no_engines: Vec<&EngineFact> = Vec::new();
    let live_on = |lane: &VpnView| live_by_lane.get(lane.key()).unwrap_or(&no_engines);

    // Live engines that hold one of their lane's served forwarded ports in another role: they are
    // replaced, so they no longer count toward capacity.
    let cap = forwarded_cap(input);
    let clashing: Vec<Vec<&EngineFact>> = input
        .lanes
        .iter()
        .map(|lane| {
            let ports = invariant_ports(lane, cap);
            live_on(lane)
                .iter()
                .copied()
                .filter(|e| ports.iter().any(|p| clashes_with(e, p)))
                .collect()
        })
        .collect();

    let target = target_total(input);
    let shares = lane_shares(input, target);
    let rolling = roll_target(input, &live_by_lane, &clashing, cap);
    let is_rolling = |e: &EngineFact| rolling.is_some_and(|r| r.name == e.name);
    let mut total_counted = live_by_lane
        .values()
        .flatten()
        .filter(|e| e.counts() && !is_rolling(e))
        .count() as u32
        - clashing.iter().flatten().filter(|e| e.counts()).count() as u32;
    let ready_total = live_by_lane
        .values()
        .flatten()
        .filter(|e| e.phase == EnginePhase::Ready)
        .count() as u32;

    for ((lane, share), clashing) in input.lanes.iter().zip(shares).zip(clashing) {
        let on_lane: Vec<&EngineFact> = live_on(lane)
            .iter()
            .copied()
            .filter(|e| !clashing.iter().any(|c| c.name == e.name))
            .collect();
        let reported = lane.forwarded_ports();
        let mut free = FreeBlocks::new(
            &lane.engine_ports,
            all_by_lane
                .get(lane.key())
                .unwrap_or(&no_engines)
                .iter()
                // A block is used by the engine that has it, and by any engine whose P2P port
                // lies in it (a forwarded engine whose port is inside the range).
                .flat_map(|e| {
                    [
                        Some(e.http_port),
                        block_containing(&lane.engine_ports, e.p2p_port),
                    ]
                })
                // Never hand out a block containing a forwarded port (served or not).
                .chain(
                    reported
                        .iter()
                        .map(|p| block_containing(&lane.engine_ports, p)),
                )
                .flatten(),
        );
        let mut counted = on_lane
            .iter()
            .filter(|e| e.counts() && !is_rolling(e))
            .count() as u32;
        let mut removed_here: Vec<&str> = Vec::new();
        // A forwarded engine's place is claimed but its engine does not exist yet.
        let mut forwarded_claimed = false;
        let mut created_here = 0;

        // The forwarded-engine invariant, for every served port.
        let ports = invariant_ports(lane, cap);
        if !ports.is_empty() {
            let forwarded: Vec<&EngineFact> = live_on(lane)
                .iter()
                .copied()
                .filter(|e| e.forwarded)
                .collect();
            // Forwarded engines on a port the lane does not serve (any more).
            let old: Vec<&EngineFact> = forwarded
                .iter()
                .copied()
                .filter(|e| !ports.contains(e.p2p_port))
                .collect();
            let mut all_ready = true;
            let mut missing = 0u32;
            for p in ports.iter() {
                let mut holders: Vec<&EngineFact> = forwarded
                    .iter()
                    .copied()
                    .filter(|e| e.p2p_port == p)
                    .collect();
                holders.sort_by_key(|e| (phase_rank(e.phase), e.ordinal));
                let keeper = holders.first().copied();
                for extra in holders.iter().skip(1) {
                    if extra.phase != EnginePhase::Creating {
                        removals.push(remove(extra, RemoveReason::Duplicate));
                        removed_here.push(&extra.name);
                    }
                }
                match keeper {
                    Some(k) if unhealthy_past_grace(k, input) => {
                        // Its replacement needs the same P2P port: remove first, create next pass.
                        removals.push(remove(k, RemoveReason::Unhealthy));
                        removed_here.push(&k.name);
                        all_ready = false;
                    }
                    Some(k) if ports.iter().any(|q| q != p && clashes_with(k, q)) => {
                        // Its block holds another served port; its successor needs the same P2P
                        // port, so it goes first and both places are filled again next pass.
                        if k.phase != EnginePhase::Creating {
                            removals.push(remove(k, RemoveReason::PortClash));
                            removed_here.push(&k.name);
                        }
                        all_ready = false;
                        missing += 1;
                        forwarded_claimed = true;
                    }
                    // Still on its way: the old engines wait for it. (An unhealthy one is the
                    // health rules' business.)
                    Some(k) => {
                        all_ready &=
                            !matches!(k.phase, EnginePhase::Creating | EnginePhase::Starting)
                    }
                    None => {
                        // The forwarded engine's place is claimed now even when the port is still
                        // held by a container on its way out, so ordinary engines never take it.
                        all_ready = false;
                        missing += 1;
                        forwarded_claimed = true;
                        // An old forwarded engine that holds the new port as its HTTP, HTTPS or
                        // API port cannot wait for its successor: the successor needs that port.
                        for o in old.iter().filter(|e| clashes_with(e, p)) {
                            if o.phase != EnginePhase::Creating
                                && !removed_here.contains(&o.name.as_str())
                            {
                                removals.push(remove(o, RemoveReason::PortMismatch));
                                removed_here.push(&o.name);
                            }
                        }
                        let port_held = all_by_lane
                            .get(lane.key())
                            .unwrap_or(&no_engines)
                            .iter()
                            .any(|e| held_ports(e.http_port, e.p2p_port).contains(&p));
                        if !port_held && let Some(block) = free.take() {
                            forwarded_creates.push(Action::Create {
                                vpn: lane.name.clone(),
                                vpn_id: lane.container_id.clone(),
                                vpn_started_at: lane.started_at.clone(),
                                forwarded: true,
                                ports: EnginePorts { p2p: p, ..block },
                            });
                        }
                    }
                }
            }
            // An old forwarded engine that still counts stands in for a claimed forwarded place
            // until a successor is ready: counting both would make an idle engine look surplus.
            let old_counting = old
                .iter()
                .filter(|e| e.counts() && !clashing.iter().any(|c| c.name == e.name))
                .count() as u32;
            let claims = missing.saturating_sub(old_counting);
            counted += claims;
            total_counted += claims;
            // Once every served port has its engine and none is on its way, the old ones go.
            if all_ready {
                for o in &old {
                    if o.phase != EnginePhase::Creating && !removed_here.contains(&o.name.as_str())
                    {
                        removals.push(remove(o, RemoveReason::PortMismatch));
                        removed_here.push(&o.name);
                    }
                }
            }
        }

        // Capacity: top the lane up to its share.
        if placeable(lane) {
            while counted < share && total_counted < input.max_replicas {
                let Some(block) = free.take() else {
                    break;
                };
                ordinary_creates.push(Action::Create {
                    vpn: lane.name.clone(),
                    vpn_id: lane.container_id.clone(),
                    vpn_started_at: lane.started_at.clone(),
                    forwarded: false,
                    ports: block,
                });
                counted += 1;
                total_counted += 1;
                created_here += 1;
            }
        }

        // Ordinary engines holding the forwarded port: replaced first (they do not count, so the
        // deficit above creates the replacement on a free block), removed once no replacement is
        // under way on the lane (it is ready, or none can be made), so the forwarded engine can
        // take the port.
        let replacement_pending = created_here > 0
            || on_lane
                .iter()
                .any(|e| matches!(e.phase, EnginePhase::Creating | EnginePhase::Starting));
        for e in &clashing {
            if !e.forwarded && e.phase != EnginePhase::Creating && !replacement_pending {
                removals.push(remove(e, RemoveReason::PortClash));
                removed_here.push(&e.name);
            }
        }

        // Unhealthy ordinary engines: replaced first (they do not count, so the deficit above
        // creates the replacement), removed once the lane's ready engines fill its share.
        let ready = on_lane
            .iter()
            .filter(|e| e.phase == EnginePhase::Ready)
            .count() as u32;
        for e in &on_lane {
            if !e.forwarded
                && unhealthy_past_grace(e, input)
                && (ready >= share || !placeable(lane))
            {
                removals.push(remove(e, RemoveReason::Unhealthy));
                removed_here.push(&e.name);
            }
        }

        // The engine being rolled: removed once its replacement is ready, never taking the lane
        // below its share or the pool below `min_replicas` ready engines.
        if let Some(r) = rolling
            .filter(|r| r.vpn_key() == lane.key() && !removed_here.contains(&r.name.as_str()))
        {
            let ready_without = |engines: &[&EngineFact]| {
                engines
                    .iter()
                    .filter(|e| e.phase == EnginePhase::Ready && e.name != r.name)
                    .count() as u32
            };
            if created_here == 0
                && ready_without(&on_lane) >= share
                && ready_total.saturating_sub(1) >= input.min_replicas
            {
                removals.push(remove(r, RemoveReason::Outdated));
                removed_here.push(&r.name);
            }
        }

        // Surplus: idle engines above the share, highest ordinal first, never the forwarded one;
        // not while an engine of the lane is on its way (it would leave the lane short of ready
        // engines until that one is ready).
        let on_the_way = replacement_pending || forwarded_claimed;
        if lane.readiness.is_up() && counted > share && !on_the_way {
            let mut idle: Vec<&EngineFact> = on_lane
                .iter()
                .copied()
                .filter(|e| {
                    e.phase == EnginePhase::Ready
                        && !e.forwarded
                        && e.streams == 0
                        && !removed_here.contains(&e.name.as_str())
                        && e.idle_since.is_some_and(|t| {
                            input.now.saturating_duration_since(t) >= input.idle_grace
                        })
                })
                .collect();
            idle.sort_by_key(|e| std::cmp::Reverse(e.ordinal));
            for e in idle.into_iter().take((counted - share) as usize) {
                removals.push(remove(e, RemoveReason::Surplus));
            }
        }
    }

    forwarded_creates
        .into_iter()
        .chain(ordinary_creates)
        .chain(removals)
        .collect()
}

/// The outdated engine to roll now, if any: one at a time (none while an outdated engine is
/// being removed), only while every lane can take engines and knows its forwarded port, among
/// engines that nothing else replaces; idle before busy, the forwarded engine last, highest
/// ordinal first; and only once that engine is ready.
fn roll_target<'a>(
    input: &PlanInput<'a>,
    live_by_lane: &HashMap<&str, Vec<&'a EngineFact>>,
    clashing: &[Vec<&EngineFact>],
    cap: usize,
) -> Option<&'a EngineFact> {
    let finishing = input
        .engines
        .iter()
        .any(|e| e.outdated && e.phase == EnginePhase::Removing);
    if finishing || !input.lanes.iter().all(rollable) {
        return None;
    }
    live_by_lane
        .values()
        .flatten()
        .copied()
        .filter(|e| {
            // A forwarded engine on a port its VPN does not serve any more is replaced anyway.
            let superseded = e.forwarded
                && !input
                    .lanes
                    .iter()
                    .find(|l| l.key() == e.vpn_key())
                    .is_some_and(|l| invariant_ports(l, cap).contains(e.p2p_port));
            // An unhealthy engine is replaced by the health rules.
            let sick = matches!(e.phase, EnginePhase::Unhealthy { .. });
            e.outdated
                && !superseded
                && !sick
                && !clashing.iter().flatten().any(|c| c.name == e.name)
        })
        .min_by_key(|e| (e.forwarded, e.streams > 0, std::cmp::Reverse(e.ordinal)))
        // The next in line may still be starting: the roll waits for it, so the order holds.
        .filter(|e| e.phase == EnginePhase::Ready)
}

/// A lane that lets a roll go on: it takes engines and, if it forwards, knows its port.
pub fn rollable(lane: &VpnView) -> bool {
    placeable(lane) && !lane.failed && (!lane.forwarding || lane.forwarded_port().is_some())
}

/// The ports the forwarded-engine invariant applies to: the lane forwards and is Up; its lowest
/// `cap` known ports (empty while none is known).
pub fn invariant_ports(lane: &VpnView, cap: usize) -> PortSet {
    if lane.forwarding && lane.readiness.is_up() {
        lane.forwarded_ports().lowest(cap)
    } else {
        PortSet::EMPTY
    }
}

/// How many forwarded ports each VPN serves at most: `max_replicas` split evenly over the
/// configured lanes, at least one, so the forwarded engines of every VPN fit in `max_replicas`
/// (when it is at least the number of VPNs). A VPN forwarding more ports serves its lowest ones.
pub fn forwarded_cap(input: &PlanInput<'_>) -> usize {
    let lanes = input.lanes.len().max(1) as u32;
    (input.max_replicas / lanes).max(1) as usize
}

/// Holds `port` in some role other than the forwarded engine's P2P port.
fn clashes_with(e: &EngineFact, port: u16) -> bool {
    !(e.forwarded && e.p2p_port == port) && held_ports(e.http_port, e.p2p_port).contains(&port)
}

/// How many engines should exist in all: the floor, or enough to keep `min_free` idle, capped.
pub fn target_total(input: &PlanInput<'_>) -> u32 {
    let busy = input
        .engines
        .iter()
        .filter(|e| e.counts() && e.streams > 0)
        .count() as u32;
    input
        .min_replicas
        .max(busy + input.min_free)
        .max(input.demand_floor)
        .min(input.max_replicas)
}

/// Each lane's share of `target`, in lane order. Normally the target is spread evenly over every
/// configured lane. In an emergency, `reduced` keeps those shares (the failed lanes' shares are
/// simply missing) and `shift` spreads the target over the lanes that have not failed.
pub fn lane_shares(input: &PlanInput<'_>, target: u32) -> Vec<u32> {
    let over: Vec<bool> = match input.emergency_capacity {
        EmergencyCapacity::Shift if input.lanes.iter().any(|l| !l.failed) => {
            input.lanes.iter().map(|l| !l.failed).collect()
        }
        _ => input.lanes.iter().map(|_| true).collect(),
    };
    let n = over.iter().filter(|b| **b).count() as u32;
    let mut k = 0;
    over.iter()
        .map(|&counted| {
            if !counted || n == 0 {
                return 0;
            }
            let share = target / n + u32::from(k < target % n);
            k += 1;
            share
        })
        .collect()
}

/// Ordinary engines may be placed: Up, not failed, and the forwarded port known (or not expected,
/// or waited for long enough).
pub fn placeable(lane: &VpnView) -> bool {
    lane.readiness.is_up()
        && !lane.failed
        && (!lane.forwarding || lane.forwarded_port().is_some() || lane.port_wait_expired)
}

fn is_stale(e: &EngineFact, lane: &VpnView) -> bool {
    let differs =
        |a: &Option<String>, b: &Option<String>| matches!((a, b), (Some(a), Some(b)) if a != b);
    differs(&e.vpn_id, &lane.container_id) || differs(&e.vpn_started_at, &lane.started_at)
}

fn unhealthy_past_grace(e: &EngineFact, input: &PlanInput<'_>) -> bool {
    matches!(e.phase, EnginePhase::Unhealthy { since } if input.now.saturating_duration_since(since) >= input.unhealthy_grace)
}

fn phase_rank(p: EnginePhase) -> u8 {
    match p {
        EnginePhase::Ready => 0,
        EnginePhase::Starting => 1,
        EnginePhase::Creating => 2,
        EnginePhase::Unhealthy { .. } => 3,
        EnginePhase::Removing => 4,
    }
}

fn remove(e: &EngineFact, reason: RemoveReason) -> Action {
    Action::Remove {
        name: e.name.clone(),
        reason,
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
