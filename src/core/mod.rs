//! The functional core: pure, synchronous, deterministic decisions over facts and time.
//! Nothing here performs I/O or reads the clock; the actors feed facts in and perform effects.

pub mod breaker;
pub mod emergency;
pub mod engine_spec;
pub mod histogram;
pub mod incidents;
pub mod intensity;
#[cfg(test)]
mod invariants;
pub mod labels;
pub mod model;
pub mod naming;
pub mod plan;
pub mod port_set;
pub mod port_tracker;
pub mod ports;
pub mod provisioning;
pub mod proxy;
pub mod public_ip;
pub mod readiness;
pub mod streams;
pub mod template;
pub mod vpn_watch;
