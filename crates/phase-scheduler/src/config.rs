//! The scheduler's configuration, its validation and the closed-form schedule counts.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The largest allowed phase length (`warmup_steps`, `full_steps`, `predict_steps`, their
/// bounds, `correct_every` and the back-off intervals): `2^32 − 1`. It keeps every sum and
/// product the scheduler forms far from `u64` overflow.
pub const MAX_PHASE_LEN: usize = u32::MAX as usize;

/// The largest accepted `|cosine|` in a quality report. Cosines computed in `f32` over long
/// vectors can exceed 1 by rounding; values in `1 ..= COSINE_SLACK` are clamped to 1.
pub const COSINE_SLACK: f32 = 1.01;

/// Configuration of the phase schedule and of its adaptation.
///
/// The first six fields are the schedule fields of vsa-optim-rs 0.1.1's
/// `DeterministicPhaseConfig`, with its defaults. The predictor's settings (history window,
/// decay, model, residual) belong to the trainer: the facade's `DeterministicPhaseConfig` keeps
/// the flat 0.1.1 API and splits itself into this config and the predictor's. The remaining
/// fields bound and tune the adaptation (see `docs/phase-scheduler.md`); they are validated even
/// when `adaptive_phases` is false.
///
/// Build one with struct-update syntax (`..Default::default()`) or with
/// [`ScheduleConfig::builder`]; [`ScheduleConfig::new`] and
/// [`PhaseScheduler::new`](crate::PhaseScheduler::new) validate it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Number of warmup steps (true gradients) before the first Full phase. Default 10. May be 0.
    pub warmup_steps: usize,
    /// Length of a Full phase (true gradients before each predict block). Default 5, at least 1.
    pub full_steps: usize,
    /// Number of *predicted* steps per predict block; the block's Correct steps come on top.
    /// Default 20, at least 1.
    pub predict_steps: usize,
    /// A Correct step follows every `correct_every` predicted steps (and closes a shorter final
    /// run). Default 5, at least 1.
    pub correct_every: usize,
    /// Whether the phase lengths adapt to prediction quality and to the loss. Default true.
    pub adaptive_phases: bool,
    /// Relative rise of the loss over its smoothed value that counts as a spike. Default 0.1,
    /// finite and positive.
    pub loss_increase_threshold: f32,
    /// Lower bound of the adapted predict length. Default 1, at least 1.
    pub min_predict_steps: usize,
    /// Upper bound of the adapted predict length. Default 80, at least `min_predict_steps`;
    /// `predict_steps` must lie in `[min_predict_steps, max_predict_steps]`.
    pub max_predict_steps: usize,
    /// Additive increase of the predict length after a good block. Default 5, at least 1.
    pub predict_increase: usize,
    /// Lower bound of the adapted Full length. Default 1, at least 1.
    pub min_full_steps: usize,
    /// Upper bound of the adapted Full length. Default 40, at least `min_full_steps`;
    /// `full_steps` must lie in `[min_full_steps, max_full_steps]`.
    pub max_full_steps: usize,
    /// A report is *good* when `cosine >= good_cosine` and `relative_error <=
    /// good_relative_error`. Default 0.9.
    pub good_cosine: f32,
    /// A report is *bad* when `cosine < bad_cosine` or `relative_error > bad_relative_error`.
    /// Default 0.5.
    pub bad_cosine: f32,
    /// A report with `cosine < backoff_cosine` backs off to Full-only at once. Default 0.0.
    /// Required: `-1 <= backoff_cosine <= bad_cosine <= good_cosine <= 1`.
    pub backoff_cosine: f32,
    /// See `good_cosine`. Default 0.5.
    pub good_relative_error: f32,
    /// See `bad_cosine`. Default 1.0: a relative error above 1 means a zero gradient would
    /// have been closer to the truth than the prediction. Required: `0 <= good <= bad`.
    pub bad_relative_error: f32,
    /// Decay of the exponential moving averages of the quality reports, in `[0, 1)`.
    /// Default 0.9.
    pub quality_ema_decay: f32,
    /// Decay of the exponential moving average of the loss, in `[0, 1)`. Default 0.9.
    pub loss_ema_decay: f32,
    /// Without quality reports, the predict length grows after this many consecutive completed
    /// blocks over which the smoothed loss fell. Default 2, at least 1.
    pub steady_blocks: usize,
    /// Full-only steps before the first probe after backing off. Default 32, at least 1.
    pub backoff_initial_interval: usize,
    /// Cap of the doubling back-off interval. Default 1024, at least
    /// `backoff_initial_interval`.
    pub backoff_max_interval: usize,
    /// The back-off interval returns to `backoff_initial_interval` after this many consecutive
    /// completed blocks without a bad report. Default 4, at least 1.
    pub backoff_reset_blocks: usize,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            warmup_steps: 10,
            full_steps: 5,
            predict_steps: 20,
            correct_every: 5,
            adaptive_phases: true,
            loss_increase_threshold: 0.1,
            min_predict_steps: 1,
            max_predict_steps: 80,
            predict_increase: 5,
            min_full_steps: 1,
            max_full_steps: 40,
            good_cosine: 0.9,
            bad_cosine: 0.5,
            backoff_cosine: 0.0,
            good_relative_error: 0.5,
            bad_relative_error: 1.0,
            quality_ema_decay: 0.9,
            loss_ema_decay: 0.9,
            steady_blocks: 2,
            backoff_initial_interval: 32,
            backoff_max_interval: 1024,
            backoff_reset_blocks: 4,
        }
    }
}

fn invalid(parameter: &'static str, expected: impl Into<String>, actual: impl ToString) -> Error {
    Error::InvalidConfig {
        parameter,
        expected: expected.into(),
        actual: actual.to_string(),
    }
}

fn check_len(parameter: &'static str, value: usize, min: usize) -> Result<()> {
    if value < min || value > MAX_PHASE_LEN {
        return Err(invalid(
            parameter,
            format!("in [{min}, {MAX_PHASE_LEN}]"),
            value,
        ));
    }
    Ok(())
}

fn check_between(
    parameter: &'static str,
    value: usize,
    lo: (&str, usize),
    hi: (&str, usize),
) -> Result<()> {
    if value < lo.1 || value > hi.1 {
        return Err(invalid(
            parameter,
            format!("in [{} = {}, {} = {}]", lo.0, lo.1, hi.0, hi.1),
            value,
        ));
    }
    Ok(())
}

fn check_f32(parameter: &'static str, value: f32, lo: f32, hi: f32, expected: &str) -> Result<()> {
    if !value.is_finite() || value < lo || value > hi {
        return Err(invalid(parameter, expected, value));
    }
    Ok(())
}

impl ScheduleConfig {
    /// `config` after [`validate`](Self::validate).
    ///
    /// # Errors
    /// As [`ScheduleConfig::validate`].
    pub fn new(config: Self) -> Result<Self> {
        config.validate()?;
        Ok(config)
    }

    /// A builder starting from the defaults.
    #[must_use]
    pub fn builder() -> ScheduleConfigBuilder {
        ScheduleConfigBuilder {
            config: Self::default(),
        }
    }

    /// Checks every field; the error names the first offending one, its allowed range and its
    /// value.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for any field out of range (see the field docs).
    pub fn validate(&self) -> Result<()> {
        check_len("warmup_steps", self.warmup_steps, 0)?;
        check_len("full_steps", self.full_steps, 1)?;
        check_len("predict_steps", self.predict_steps, 1)?;
        check_len("correct_every", self.correct_every, 1)?;
        if !self.loss_increase_threshold.is_finite() || self.loss_increase_threshold <= 0.0 {
            return Err(invalid(
                "loss_increase_threshold",
                "finite and > 0",
                self.loss_increase_threshold,
            ));
        }
        check_len("min_predict_steps", self.min_predict_steps, 1)?;
        check_len(
            "max_predict_steps",
            self.max_predict_steps,
            self.min_predict_steps,
        )?;
        check_between(
            "predict_steps",
            self.predict_steps,
            ("min_predict_steps", self.min_predict_steps),
            ("max_predict_steps", self.max_predict_steps),
        )?;
        check_len("predict_increase", self.predict_increase, 1)?;
        check_len("min_full_steps", self.min_full_steps, 1)?;
        check_len("max_full_steps", self.max_full_steps, self.min_full_steps)?;
        check_between(
            "full_steps",
            self.full_steps,
            ("min_full_steps", self.min_full_steps),
            ("max_full_steps", self.max_full_steps),
        )?;
        check_f32(
            "good_cosine",
            self.good_cosine,
            -1.0,
            1.0,
            "finite, in [-1, 1]",
        )?;
        check_f32(
            "bad_cosine",
            self.bad_cosine,
            -1.0,
            self.good_cosine,
            "finite, in [-1, good_cosine]",
        )?;
        check_f32(
            "backoff_cosine",
            self.backoff_cosine,
            -1.0,
            self.bad_cosine,
            "finite, in [-1, bad_cosine]",
        )?;
        check_f32(
            "good_relative_error",
            self.good_relative_error,
            0.0,
            f32::MAX,
            "finite and >= 0",
        )?;
        check_f32(
            "bad_relative_error",
            self.bad_relative_error,
            self.good_relative_error,
            f32::MAX,
            "finite and >= good_relative_error",
        )?;
        if !(0.0..1.0).contains(&self.quality_ema_decay) {
            return Err(invalid(
                "quality_ema_decay",
                "in [0, 1)",
                self.quality_ema_decay,
            ));
        }
        if !(0.0..1.0).contains(&self.loss_ema_decay) {
            return Err(invalid("loss_ema_decay", "in [0, 1)", self.loss_ema_decay));
        }
        check_len("steady_blocks", self.steady_blocks, 1)?;
        check_len("backoff_initial_interval", self.backoff_initial_interval, 1)?;
        check_len(
            "backoff_max_interval",
            self.backoff_max_interval,
            self.backoff_initial_interval,
        )?;
        check_len("backoff_reset_blocks", self.backoff_reset_blocks, 1)?;
        Ok(())
    }

    /// Number of Correct steps in a predict block of `predict_len` predicted steps:
    /// `ceil(predict_len / correct_every)`. `correct_every` must be at least 1.
    #[must_use]
    pub fn corrects_per_block(&self, predict_len: usize) -> usize {
        predict_len.div_ceil(self.correct_every.max(1))
    }

    /// The step counts after `n` steps **without adaptation** (`adaptive_phases = false`, or
    /// adaptive with no event that changes the lengths), in closed form.
    ///
    /// With `W = warmup_steps`, `F = full_steps`, `P = predict_steps`, `C = correct_every`,
    /// `K = ceil(P / C)` Correct steps per block and cycle length `L = F + P + K`:
    ///
    /// * if `n <= W`: `n` warmup steps and nothing else;
    /// * otherwise, with `m = n − W`, `q = m / L`, `r = m mod L`, `s = max(0, r − F)`:
    ///   * Full-phase steps `= q·F + min(r, F)`,
    ///   * Correct steps `= q·K + floor(s / (C + 1))`,
    ///   * predicted steps `= q·P + s − floor(s / (C + 1))`.
    ///
    /// Backward passes (the stats' `full_steps`) are warmup + Full-phase + Correct steps. The
    /// property tests check this against the state machine for random configs and `n`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when the config does not validate.
    pub fn counts_without_adaptation(&self, n: u64) -> Result<ScheduleCounts> {
        self.validate()?;
        let w = self.warmup_steps as u64;
        let f = self.full_steps as u64;
        let p = self.predict_steps as u64;
        let c = self.correct_every as u64;
        let k = p.div_ceil(c);
        if n <= w {
            return Ok(ScheduleCounts {
                total_steps: n,
                warmup_steps: n,
                full_phase_steps: 0,
                predicted_steps: 0,
                correct_steps: 0,
            });
        }
        let m = n - w;
        let cycle = f + p + k;
        let (q, r) = (m / cycle, m % cycle);
        let s = r.saturating_sub(f);
        let partial_corrects = s / (c + 1);
        Ok(ScheduleCounts {
            total_steps: n,
            warmup_steps: w,
            full_phase_steps: q * f + r.min(f),
            predicted_steps: q * p + s - partial_corrects,
            correct_steps: q * k + partial_corrects,
        })
    }
}

/// Step counts by phase, as computed by
/// [`ScheduleConfig::counts_without_adaptation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ScheduleCounts {
    /// All steps.
    pub total_steps: u64,
    /// Warmup steps.
    pub warmup_steps: u64,
    /// Steps of Full phases.
    pub full_phase_steps: u64,
    /// Predicted (backward-free) steps.
    pub predicted_steps: u64,
    /// Correct steps.
    pub correct_steps: u64,
}

impl ScheduleCounts {
    /// Steps that run a backward pass: warmup + Full + Correct.
    #[must_use]
    pub const fn backward_steps(&self) -> u64 {
        self.warmup_steps + self.full_phase_steps + self.correct_steps
    }
}

/// Builder for [`ScheduleConfig`]; every setter takes the field of the same name, and
/// [`build`](Self::build) validates.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleConfigBuilder {
    config: ScheduleConfig,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty),* $(,)?) => {
        $(
            $(#[$doc])*
            #[must_use]
            pub fn $name(mut self, value: $ty) -> Self {
                self.config.$name = value;
                self
            }
        )*
    };
}

impl ScheduleConfigBuilder {
    setters! {
        /// Sets `warmup_steps`.
        warmup_steps: usize,
        /// Sets `full_steps`.
        full_steps: usize,
        /// Sets `predict_steps`.
        predict_steps: usize,
        /// Sets `correct_every`.
        correct_every: usize,
        /// Sets `adaptive_phases`.
        adaptive_phases: bool,
        /// Sets `loss_increase_threshold`.
        loss_increase_threshold: f32,
        /// Sets `min_predict_steps`.
        min_predict_steps: usize,
        /// Sets `max_predict_steps`.
        max_predict_steps: usize,
        /// Sets `predict_increase`.
        predict_increase: usize,
        /// Sets `min_full_steps`.
        min_full_steps: usize,
        /// Sets `max_full_steps`.
        max_full_steps: usize,
        /// Sets `good_cosine`.
        good_cosine: f32,
        /// Sets `bad_cosine`.
        bad_cosine: f32,
        /// Sets `backoff_cosine`.
        backoff_cosine: f32,
        /// Sets `good_relative_error`.
        good_relative_error: f32,
        /// Sets `bad_relative_error`.
        bad_relative_error: f32,
        /// Sets `quality_ema_decay`.
        quality_ema_decay: f32,
        /// Sets `loss_ema_decay`.
        loss_ema_decay: f32,
        /// Sets `steady_blocks`.
        steady_blocks: usize,
        /// Sets `backoff_initial_interval`.
        backoff_initial_interval: usize,
        /// Sets `backoff_max_interval`.
        backoff_max_interval: usize,
        /// Sets `backoff_reset_blocks`.
        backoff_reset_blocks: usize,
    }

    /// Validates and returns the config.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the first invalid field.
    pub fn build(self) -> Result<ScheduleConfig> {
        self.config.validate()?;
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_match_the_seed() {
        let c = ScheduleConfig::default();
        c.validate().unwrap();
        assert_eq!(
            (
                c.warmup_steps,
                c.full_steps,
                c.predict_steps,
                c.correct_every
            ),
            (10, 5, 20, 5)
        );
        assert!(c.adaptive_phases);
        assert_eq!(c.loss_increase_threshold, 0.1);
    }

    #[test]
    fn hundred_default_steps() {
        // W=10, then cycles of L = 5 + 20 + 4 = 29: 90 = 3·29 + 3.
        let counts = ScheduleConfig::default()
            .counts_without_adaptation(100)
            .unwrap();
        assert_eq!(counts.warmup_steps, 10);
        assert_eq!(counts.full_phase_steps, 18);
        assert_eq!(counts.correct_steps, 12);
        assert_eq!(counts.predicted_steps, 60);
        assert_eq!(counts.backward_steps(), 40);
    }
}
