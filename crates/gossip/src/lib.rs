//! SWIM gossip membership for Caravan, on the `foca` crate.
//!
//! This crate is reserved in the workspace layout; the gossip issue fills it in. It exports
//! nothing yet, on purpose: no placeholder API that callers could come to depend on.
