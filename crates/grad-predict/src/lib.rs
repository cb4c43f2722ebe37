//! `grad-predict`: closed-form weighted-least-squares (Cramer's rule) gradient prediction on
//! plain slices, framework-free.
//!
//! A [`GradientPredictor`] watches the true gradients of one tensor at training steps t and
//! predicts the gradient at a later step with the model g(t) = b + v·t + r:
//!
//! * b and v are fitted by weighted least squares with weights `decay^age`; the 2×2 normal
//!   equations `[Σw Σwτ; Σwτ Σwτ²]·[b; v] = [Σwg; Σwτg]` are solved by Cramer's rule. The
//!   scalars (Σw, Σwτ, Σwτ², the determinant) are shared by every element, so per element only
//!   the sums S₀ = Σwg and S₁ = Σwτg matter and a prediction is α·S₀ + β·S₁ (+ r);
//! * time τ is measured relative to the last sample, so nothing degrades at step 10⁹;
//! * r is an exponentially averaged residual measured at Correct steps
//!   ([`GradientPredictor::record_correction`]), applied while ‖r‖/‖g‖ exceeds
//!   [`PredictorConfig::residual_threshold`].
//!
//! Two history modes ([`HistoryMode`]): `Window(W)` keeps W gradients in a ring;
//! `Streaming` keeps only the decayed statistics (two values per element, plus r once
//! corrections start). Three models ([`PredictorModel`]): the last gradient, the decayed mean
//! (b alone) and linear WLS. The history can be stored in f32, bf16 or f16
//! ([`StatPrecision`]). The mathematics, the noise amplification of extrapolation
//! ([`extrapolation_variance_factor`]) and measured speeds are in `docs/grad-predict.md`.
//!
//! # Quick start
//!
//! ```
//! use grad_predict::{GradientPredictor, HistoryMode, PredictorConfig, PredictorModel};
//!
//! let config = PredictorConfig {
//!     model: PredictorModel::LinearWls,
//!     history: HistoryMode::Streaming,
//!     ..PredictorConfig::default()
//! };
//! let mut p = GradientPredictor::new(3, config)?;
//! // Gradients that move linearly: g(t) = [1 + t, 2 − t, 0.5].
//! for t in 0..5u64 {
//!     let t_f = t as f32;
//!     p.record(t, &[1.0 + t_f, 2.0 - t_f, 0.5])?;
//! }
//! let mut out = [0.0f32; 3];
//! p.predict_into(7, &mut out)?; // three steps after the last sample
//! assert!((out[0] - 8.0).abs() < 1e-4 && (out[1] + 5.0).abs() < 1e-4);
//! assert!((out[2] - 0.5).abs() < 1e-6);
//!
//! // At a Correct step, measure the prediction against the true gradient, then record it.
//! let q = p.record_correction(8, &[9.0, -6.0, 0.5])?;
//! assert!(q.cosine > 0.9999 && q.relative_error < 1e-4);
//! assert_eq!(p.samples(), 6);
//! # Ok::<(), grad_predict::Error>(())
//! ```
//!
//! Sibling crates: `phase-scheduler` decides when to predict and uses this crate's
//! [`HistoryMode`] and [`PredictorModel`]; the facade `vsa-optim-rs` runs predictors per
//! parameter inside its candle trainer; `vsa-core` and `ternary-quant` hold the VSA
//! compression and ternary accumulation.

#![deny(missing_docs)]

#[cfg(feature = "ndarray")]
mod array;
mod config;
mod error;
mod fit;
mod kernels;
mod predictor;
mod quality;
mod storage;
mod variance;

pub use config::{HistoryMode, PredictorConfig, PredictorModel, StatPrecision};
pub use error::{Error, Result};
pub use fit::{PredictCoefficients, RecordCoefficients};
pub use predictor::GradientPredictor;
pub use quality::{PredictionQuality, QualitySums, quality, residual_decision};
pub use variance::extrapolation_variance_factor;
