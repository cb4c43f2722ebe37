//! `vsa-optim-rs`: the facade. Re-exports the micro-crates and holds the candle integration.

#![deny(missing_docs)]

pub use grad_predict;
pub use phase_scheduler;
pub use ternary_quant;
pub use vsa_core;

pub mod adamw;
pub mod error;
pub mod params;

pub use adamw::{AdamW, ParamsAdamW};
pub use error::{Error, Result};
pub use params::{ParamSet, ParamSpec};
