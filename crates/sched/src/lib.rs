//! The evaluation broker, scheduler worker threads and placement for Caravan.
//!
//! This crate is reserved in the workspace layout; the scheduler issue fills it in. It exports
//! nothing yet, on purpose: no placeholder API that callers could come to depend on.
