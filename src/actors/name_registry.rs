//! The NameRegistry actor: the single owner of engine ordinals (`core::naming::Ordinals`).
//! Seeded from Docker at start; reserves before create, releases on failure, frees on removal
//! only once Docker confirmed the container gone; reserves the target of a rename below a number.

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::actors::messages::NameMsg;
use crate::core::naming::Ordinals;

pub struct NameRegistry;

impl Actor for NameRegistry {
    type Msg = NameMsg;
    type State = Ordinals;
    type Arguments = Vec<u32>;

    async fn pre_start(
        &self,
        _myself: ActorRef<NameMsg>,
        seed: Vec<u32>,
    ) -> Result<Ordinals, ActorProcessingErr> {
        let mut ordinals = Ordinals::new();
        for n in seed {
            ordinals.mark_live(n);
        }
        Ok(ordinals)
    }

    async fn handle(
        &self,
        _myself: ActorRef<NameMsg>,
        msg: NameMsg,
        ordinals: &mut Ordinals,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NameMsg::Seed(live) => live.into_iter().for_each(|n| ordinals.mark_live(n)),
            NameMsg::Reserve(reply) => {
                let n = ordinals.reserve();
                if reply.send(n).is_err() {
                    // The caller gave up: the number must not stay reserved forever.
                    ordinals.release(n);
                }
            }
            NameMsg::ReserveBelow(limit, reply) => {
                let n = ordinals.reserve_below(limit);
                if reply.send(n).is_err()
                    && let Some(n) = n
                {
                    ordinals.release(n);
                }
            }
            NameMsg::Confirm(n) => ordinals.confirm(n),
            NameMsg::Release(n) => ordinals.release(n),
            NameMsg::Removing(n) => ordinals.removing(n),
            NameMsg::Gone(n) => ordinals.gone(n),
            NameMsg::Held(reply) => {
                let _ = reply.send(ordinals.held());
            }
        }
        Ok(())
    }
}
