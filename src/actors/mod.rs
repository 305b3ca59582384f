//! The actor tree (ractor): Supervisor owns NameRegistry, VpnMonitor and one Engine per container.
