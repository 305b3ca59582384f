//! The actor tree (ractor): the Supervisor owns the NameRegistry, the VpnMonitor and one Engine
//! actor per engine container. They talk only through the typed messages of `messages`.

pub mod engine;
pub mod messages;
pub mod name_registry;
pub mod proxy;
pub mod streams;
pub mod supervisor;
pub mod vpn_monitor;
