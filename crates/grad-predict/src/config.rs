//! Configuration: history mode, model, storage precision and the config struct.

use crate::error::{Error, Result};

/// How a predictor keeps its history of recorded gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum HistoryMode {
    /// Keep the last `W` gradients in a ring buffer (the seed's `history_window`).
    /// Holds `W` stored values per element.
    Window(usize),
    /// Keep only the exponentially decayed sufficient statistics: O(1) history per element
    /// (two stored values for [`PredictorModel::LinearWls`], one for
    /// [`PredictorModel::DecayedMean`]), whatever the effective window.
    Streaming,
}

/// Which model turns the history into a prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum PredictorModel {
    /// Reuse the last true gradient. Holds exactly one gradient whatever the history mode
    /// (the mode is still validated).
    LastGradient,
    /// An exponentially decayed mean of the history (the WLS baseline `b` alone).
    DecayedMean,
    /// Linear weighted least squares `b + v·t`, solved by Cramer's rule.
    LinearWls,
}

/// The precision in which the per-element history (S0/S1 statistics, ring-buffer slots or the
/// last gradient) is stored. Arithmetic is always f32; the residual `r` is always f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum StatPrecision {
    /// 4 bytes per stored value, exact.
    F32,
    /// 2 bytes, 8 significant bits (relative rounding 2⁻⁹), f32's range.
    Bf16,
    /// 2 bytes, 11 significant bits (relative rounding 2⁻¹²), |x| ≤ 65504.
    F16,
}

impl StatPrecision {
    /// The largest magnitude a stored value can hold (a larger gradient is refused with
    /// [`Error::OutOfRange`](crate::Error::OutOfRange)).
    pub const fn max_abs(self) -> f32 {
        match self {
            StatPrecision::F32 => f32::MAX,
            StatPrecision::Bf16 => half::bf16::MAX.to_f32_const(),
            StatPrecision::F16 => half::f16::MAX.to_f32_const(),
        }
    }

    /// The precision's name, as in error messages: `f32`, `bf16` or `f16`.
    pub const fn name(self) -> &'static str {
        match self {
            StatPrecision::F32 => "f32",
            StatPrecision::Bf16 => "bf16",
            StatPrecision::F16 => "f16",
        }
    }

    /// Bytes per stored value.
    pub const fn bytes(self) -> usize {
        match self {
            StatPrecision::F32 => 4,
            StatPrecision::Bf16 | StatPrecision::F16 => 2,
        }
    }
}

/// Configuration of a [`GradientPredictor`](crate::GradientPredictor).
///
/// Plain public fields; [`PredictorConfig::validate`] is called by the constructor.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PredictorConfig {
    /// The prediction model. Default: [`PredictorModel::LinearWls`] (the seed's model).
    pub model: PredictorModel,
    /// How the history is kept. Default: `Window(8)` (the seed's `history_window`).
    pub history: HistoryMode,
    /// Weight of a sample `a` steps old is `decay^a`. Must be in (0, 1]. Default 0.95.
    pub decay: f32,
    /// The residual `r` is added to predictions only while ‖r‖ / ‖g‖ > this value, where g is
    /// the true gradient of the latest correction. Must be finite and ≥ 0. Default 0.1.
    pub residual_threshold: f32,
    /// Averaging factor ρ of the residual: r ← (1 − ρ)·r + ρ·(g − ĝ). Must be in (0, 1].
    /// Default 0.5.
    pub residual_rate: f32,
    /// Storage precision of the per-element history. Default [`StatPrecision::F32`].
    pub precision: StatPrecision,
}

impl Default for PredictorConfig {
    fn default() -> Self {
        Self {
            model: PredictorModel::LinearWls,
            history: HistoryMode::Window(8),
            decay: 0.95,
            residual_threshold: 0.1,
            residual_rate: 0.5,
            precision: StatPrecision::F32,
        }
    }
}

impl PredictorConfig {
    /// Checks every field; returns the first violation.
    ///
    /// # Errors
    /// [`Error::InvalidDecay`] unless `0 < decay ≤ 1`; [`Error::ZeroWindow`] for `Window(0)`;
    /// [`Error::InvalidParameter`] for a negative or non-finite `residual_threshold` or a
    /// `residual_rate` outside (0, 1].
    pub fn validate(&self) -> Result<()> {
        if !(self.decay > 0.0 && self.decay <= 1.0) {
            return Err(Error::InvalidDecay { value: self.decay });
        }
        if self.history == HistoryMode::Window(0) {
            return Err(Error::ZeroWindow);
        }
        if !(self.residual_threshold >= 0.0 && self.residual_threshold.is_finite()) {
            return Err(Error::InvalidParameter {
                parameter: "residual_threshold",
                expected: "finite and >= 0",
                actual: self.residual_threshold,
            });
        }
        if !(self.residual_rate > 0.0 && self.residual_rate <= 1.0) {
            return Err(Error::InvalidParameter {
                parameter: "residual_rate",
                expected: "in (0, 1]",
                actual: self.residual_rate,
            });
        }
        Ok(())
    }
}
