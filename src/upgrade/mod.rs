//! Upgrading cutover itself without a gap (SPEC §10): the running process
//! ([`old`]) starts the new binary, which ([`new`]) inherits the listeners
//! and the state_dir lock over a private socket pair ([`wire`]), adopts the
//! running apps and serves; only then does the old process let go, drain
//! and exit. ARCHITECTURE.md has the sequence step by step.

pub mod new;
pub mod old;
pub mod wire;
