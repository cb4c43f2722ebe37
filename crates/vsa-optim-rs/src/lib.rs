//! `vsa-optim-rs`: the facade. Re-exports the micro-crates and holds the candle integration.

pub use grad_predict;
pub use phase_scheduler;
pub use ternary_quant;
pub use vsa_core;
