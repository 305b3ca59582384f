//! `EngineClient`: the real AceStream engine HTTP API (PROTOCOLS.md section 2).
