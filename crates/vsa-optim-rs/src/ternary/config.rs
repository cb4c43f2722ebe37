//! [`TernaryConfig`] and its builder.

use serde::{Deserialize, Serialize};
use ternary_quant::{
    AccumulatorConfig, DEFAULT_COMPACT_BLOCK, Rounding, ScaleFormat, ScaleGranularity,
};

use super::window_seed;
use crate::error::{Result, config_error};

/// Configuration of a [`TernaryGradientAccumulator`](super::TernaryGradientAccumulator): plain public fields with
/// [`Default`], or [`TernaryConfig::builder`]. Validated by
/// [`TernaryGradientAccumulator::new`](super::TernaryGradientAccumulator::new).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TernaryConfig {
    /// Micro-batches per optimizer step (`>= 1`, default 8); `accumulate` fails past it until
    /// `reset`.
    pub accumulation_steps: usize,
    /// `true` (default): unbiased stochastic requantization. `false`: deterministic absmean
    /// requantization (no randomness, smaller error per step but biased).
    pub use_stochastic_rounding: bool,
    /// Run seed (default 0).
    pub seed: u64,
    /// Elements sharing one scale (default `PerBlock(25)`; `PerBlock(n)` needs `n` a positive
    /// multiple of 5; `PerTensor` holds one scale per tensor).
    pub scale_granularity: ScaleGranularity,
    /// Balanced trits held per element: 1 (default), 2, 3 or 5 (3, 9, 27 or 243 levels;
    /// 1.6, 3.2, 4.8 or 8 bits per element before scales).
    #[serde(default = "one_trit")]
    pub trits_per_element: u8,
    /// How block scales are held (default [`ScaleFormat::Log8`], one byte per block;
    /// [`ScaleFormat::F32`] is the earlier 32-bit scale).
    #[serde(default = "f32_scales")]
    pub scale_format: ScaleFormat,
    /// How levels are rounded and read back (default [`Rounding::Stochastic`];
    /// [`Rounding::Subtractive`] decodes with the regenerated draw, lower error at 2+ trits:
    /// `docs/ternary.md` §3.3). Checkpoints written before it existed load as `Stochastic`.
    #[serde(default)]
    pub rounding: Rounding,
}

fn one_trit() -> u8 {
    1
}

/// Checkpoints written before `scale_format` existed held `f32` scales.
fn f32_scales() -> ScaleFormat {
    ScaleFormat::F32
}

impl Default for TernaryConfig {
    fn default() -> Self {
        Self {
            accumulation_steps: 8,
            use_stochastic_rounding: true,
            seed: 0,
            scale_granularity: ScaleGranularity::PerBlock(DEFAULT_COMPACT_BLOCK),
            trits_per_element: 1,
            scale_format: ScaleFormat::Log8,
            rounding: Rounding::Stochastic,
        }
    }
}

impl TernaryConfig {
    /// A builder starting from [`TernaryConfig::default`].
    pub fn builder() -> TernaryConfigBuilder {
        TernaryConfigBuilder {
            config: Self::default(),
        }
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) naming the field: `accumulation_steps = 0`, a
    /// `PerBlock(n)` scale block that is not a positive multiple of 5, or
    /// `trits_per_element` outside {1, 2, 3, 5}, or a `rounding` that
    /// [`Rounding::validate`] rejects (a `lambda` outside `[0, 2]`, or `Subtractive`
    /// without stochastic rounding).
    pub fn validate(&self) -> Result<()> {
        if self.accumulation_steps == 0 {
            return Err(config_error("accumulation_steps", "at least 1", 0));
        }
        if let ScaleGranularity::PerBlock(b) = self.scale_granularity
            && (b == 0 || !b.is_multiple_of(5))
        {
            return Err(config_error(
                "scale_granularity",
                "PerBlock(n) with n a positive multiple of 5",
                b,
            ));
        }
        if !ternary_quant::SUPPORTED_TRITS.contains(&self.trits_per_element) {
            return Err(config_error(
                "trits_per_element",
                "1, 2, 3 or 5",
                self.trits_per_element,
            ));
        }
        if self
            .rounding
            .validate(self.use_stochastic_rounding)
            .is_err()
        {
            return Err(config_error(
                "rounding",
                "Stochastic, or Subtractive { lambda in [0, 2] } with use_stochastic_rounding",
                format!("{:?}", self.rounding),
            ));
        }
        Ok(())
    }

    /// The config of parameter `tensor_id`'s packed accumulator in window `window`.
    pub(crate) fn tensor_config(&self, window: u64, tensor_id: usize) -> AccumulatorConfig {
        AccumulatorConfig {
            accumulation_steps: self.accumulation_steps,
            stochastic: self.use_stochastic_rounding,
            seed: window_seed(self.seed, window),
            tensor_id: tensor_id as u64,
            scale_granularity: self.scale_granularity,
            trits_per_element: self.trits_per_element,
            scale_format: self.scale_format,
            rounding: self.rounding,
        }
    }
}

/// Builder for [`TernaryConfig`]; [`build`](TernaryConfigBuilder::build) returns the config
/// itself (validation happens in [`TernaryGradientAccumulator::new`](super::TernaryGradientAccumulator::new)).
#[derive(Debug, Clone, Copy)]
pub struct TernaryConfigBuilder {
    config: TernaryConfig,
}

impl TernaryConfigBuilder {
    /// Sets [`TernaryConfig::accumulation_steps`].
    pub fn accumulation_steps(mut self, steps: usize) -> Self {
        self.config.accumulation_steps = steps;
        self
    }

    /// Sets [`TernaryConfig::use_stochastic_rounding`].
    pub fn use_stochastic_rounding(mut self, yes: bool) -> Self {
        self.config.use_stochastic_rounding = yes;
        self
    }

    /// Sets [`TernaryConfig::seed`].
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
    }

    /// Sets [`TernaryConfig::scale_granularity`].
    pub fn scale_granularity(mut self, g: ScaleGranularity) -> Self {
        self.config.scale_granularity = g;
        self
    }

    /// Sets [`TernaryConfig::trits_per_element`] (1, 2, 3 or 5; checked by
    /// [`TernaryConfig::validate`]).
    pub fn trits_per_element(mut self, n: u8) -> Self {
        self.config.trits_per_element = n;
        self
    }

    /// Sets [`TernaryConfig::scale_format`].
    pub fn scale_format(mut self, f: ScaleFormat) -> Self {
        self.config.scale_format = f;
        self
    }

    /// Sets [`TernaryConfig::rounding`] (checked by [`TernaryConfig::validate`]).
    pub fn rounding(mut self, r: Rounding) -> Self {
        self.config.rounding = r;
        self
    }

    /// Shorthand for `rounding(Rounding::SUBTRACTIVE)`: the subtractive-dither decode with
    /// `λ = 1` (`docs/ternary.md` §3.3).
    pub fn subtractive_dither(self) -> Self {
        self.rounding(Rounding::SUBTRACTIVE)
    }

    /// Shorthand for `scale_granularity(ScaleGranularity::PerBlock(block))`.
    pub fn scale_block(self, block: usize) -> Self {
        self.scale_granularity(ScaleGranularity::PerBlock(block))
    }

    /// The configuration.
    pub fn build(self) -> TernaryConfig {
        self.config
    }
}
