//! `vsa-optim-rs`: the facade. Re-exports the micro-crates and holds the candle integration.

#![deny(missing_docs)]

pub use grad_predict;
pub use phase_scheduler;
pub use ternary_quant;
pub use vsa_core;

pub mod adamw;
pub mod compress;
pub mod error;
pub mod init;
pub mod params;
pub mod ternary;
pub mod trainer;

pub use adamw::{AdamW, ParamsAdamW};
pub use error::{Error, Result};
pub use grad_predict::{HistoryMode, PredictorModel};
pub use params::{ParamSet, ParamSpec};
pub use phase_scheduler::{DeterministicPhase, DeterministicPhaseConfig, StepInfo};
pub use trainer::{DeterministicPhaseTrainer, TrainerStats};
