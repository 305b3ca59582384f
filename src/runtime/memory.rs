//! `MemoryRuntime`: an in-memory Docker, Gluetun and engine world with fault injection, for fast
//! tests of the actor tree. Never the only test of a behaviour.
