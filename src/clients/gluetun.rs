//! `GluetunClient`: the real Gluetun control server over HTTP (PROTOCOLS.md section 1).
