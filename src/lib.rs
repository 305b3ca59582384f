//! acevisor: keeps a pool of AceStream engine containers alive behind Gluetun VPN containers.
//!
//! The crate is split into a functional core (`core`: pure decisions) and an imperative shell
//! (`actors`, `runtime`, `clients`, `api`) that feeds facts in and performs effects.

pub mod actors;
pub mod api;
pub mod clients;
pub mod config;
pub mod config_check;
pub mod core;
pub mod daemon;
pub mod metrics;
pub mod runtime;
pub mod telemetry;
