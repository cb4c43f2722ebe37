//! `vsa-optim-rs`: deterministic, measured training optimisation for candle.
//!
//! This facade keeps the seed crate's API and holds the candle integration. It re-exports the
//! framework-free micro-crates it is built on:
//!
//! - [`vsa_core`]: packed hypervectors and the matrix-free random projection;
//! - [`ternary_quant`]: unbiased ternary quantization, 2-bit/1.6-bit packing, the packed
//!   accumulator;
//! - [`grad_predict`]: the closed-form WLS (Cramer's rule) gradient predictor;
//! - [`phase_scheduler`]: the Warmup → Full → Predict/Correct state machine.
//!
//! What lives here: [`DeterministicPhaseTrainer`] (skip backward passes with predicted
//! gradients, adaptively), [`ternary::TernaryGradientAccumulator`],
//! [`compress::VSAGradientCompressor`], a checkpointable [`AdamW`] that matches candle-nn's
//! bit for bit, [`init::deterministic_init`] (candle-nn's own initialisation is unseeded), and
//! [`ParamSet`], which gives every object the same sorted parameter order. Every stateful
//! object checkpoints the same way (`state` / `from_state` / `restore`, and `save` / `load`
//! as one safetensors file with a versioned header): see [`checkpoint`].
//!
//! # Quick start: the training loop
//!
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{Optimizer, VarBuilder, VarMap};
//! use vsa_optim_rs::{AdamW, DeterministicPhaseConfig, DeterministicPhaseTrainer, ParamsAdamW};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let device = Device::Cpu;
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
//! let model = candle_nn::linear(4, 1, vb.pp("fc"))?;
//! vsa_optim_rs::init::deterministic_init(&varmap, 42)?; // seeded, reproducible weights
//!
//! let x = Tensor::arange(0f32, 32f32, &device)?.reshape((8, 4))?.affine(0.1, -1.0)?;
//! let y = x.sum_keepdim(1)?;
//! let mut opt = AdamW::from_varmap(&varmap, ParamsAdamW { lr: 0.05, ..Default::default() })?;
//! let mut trainer =
//!     DeterministicPhaseTrainer::from_varmap(&varmap, DeterministicPhaseConfig::default(), &device)?;
//!
//! for _ in 0..100 {
//!     let info = trainer.begin_step()?;
//!     if info.needs_backward {
//!         let loss = candle_nn::loss::mse(&model.forward(&x)?, &y)?;
//!         let grads = loss.backward()?;
//!         trainer.record_grad_store(&varmap, &grads)?;
//!         opt.step(&grads)?;
//!         trainer.end_step(loss.to_scalar::<f32>()?)?;
//!     } else {
//!         // No forward, no backward: the predicted gradient drives the optimizer.
//!         opt.step(&trainer.predicted_grad_store(&varmap)?)?;
//!         trainer.end_step_without_loss()?;
//!     }
//! }
//! let stats = trainer.get_stats();
//! assert_eq!(stats.total_steps, 100);
//! assert!(stats.predicted_steps > 0);
//! println!("{stats}"); // e.g. "100 steps (40 full, 60 predicted): 2.50x fewer backward passes"
//! # Ok(())
//! # }
//! ```
//!
//! `speedup` in the statistics counts backward passes saved, not time. The measured
//! wall-clock results, against a learning-rate-tuned baseline, are in `docs/benchmarks.md`.

#![deny(missing_docs)]

pub use grad_predict;
pub use grad_sketch;
pub use phase_scheduler;
pub use ternary_quant;
pub use vsa_core;

pub mod adamw;
pub mod checkpoint;
pub mod compress;
#[cfg(feature = "distributed")]
pub mod distributed;
pub mod error;
pub mod init;
pub mod params;
pub mod ternary;
pub mod trainer;

pub use adamw::{AdamW, AdamWState, ParamsAdamW};
pub use compress::{
    BundleQuantization, CompressedGradients, CompressionStats, Reconstruction, SketchState,
    VSAConfig, VSAGradientCompressor,
};
pub use error::{Error, Result};
pub use grad_predict::{HistoryMode, PredictorModel, StatPrecision};
pub use params::{ParamSet, ParamSpec};
pub use phase_scheduler::{DeterministicPhase, GroupRule, ScheduleConfig, StepInfo};
pub use ternary::{
    TernaryAccumulatorState, TernaryConfig, TernaryConfigBuilder, TernaryGradientAccumulator,
};
pub use trainer::{
    BackwardPlan, DeterministicPhaseConfig, DeterministicPhaseConfigBuilder,
    DeterministicPhaseTrainer, GroupStats, TrainerState, TrainerStats, TransferStats,
};
