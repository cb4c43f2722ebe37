//! [`DeterministicPhaseConfig`]: the trainer's flat configuration (the schedule fields of
//! vsa-optim-rs 0.1.1, the predictor's settings and the adaptation bounds), its validation,
//! its presets and its split into the scheduler's and the predictor's configs.

use grad_predict::{HistoryMode, PredictorConfig, PredictorModel, StatPrecision};
use phase_scheduler::{GroupRule, MAX_PHASE_LEN, ScheduleConfig};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A config error in the shared shape `{parameter, expected, actual}`.
fn invalid(parameter: &'static str, expected: impl Into<String>, actual: impl ToString) -> Error {
    Error::Scheduler(phase_scheduler::Error::InvalidConfig {
        parameter,
        expected: expected.into(),
        actual: actual.to_string(),
    })
}

/// Whether `rule` is the default (serialised configs leave it out, so one-group checkpoints
/// keep their bytes).
fn is_whole(rule: &GroupRule) -> bool {
    *rule == GroupRule::Whole
}

macro_rules! flat_config {
    (
        seed { $($(#[$sdoc:meta])* $sname:ident: $sty:ty,)* }
        window { $($(#[$wdoc:meta])* $wname:ident: $wty:ty = $wdef:expr,)* }
        predictor { $($(#[$pdoc:meta])* $pname:ident: $pty:ty = $pdef:expr,)* }
        adaptation { $($(#[$adoc:meta])* $aname:ident: $aty:ty,)* }
    ) => {
        /// Configuration of [`DeterministicPhaseTrainer`](crate::DeterministicPhaseTrainer).
        ///
        /// The fields are flat, as in vsa-optim-rs 0.1.1: its ten fields first (the schedule,
        /// the history window, the horizon, the decay and the residual threshold), then the
        /// predictor's settings this crate added, then the bounds of the adaptation. The
        /// trainer owns the predictor settings; the schedule fields are handed to
        /// [`phase_scheduler::ScheduleConfig`] (see [`schedule`](Self::schedule)), whose docs
        /// give each schedule field's range.
        ///
        /// [`Default`] keeps 0.1.1's values (F5 P20 C5, adaptive). Named presets:
        /// [`alternating`](Self::alternating) (the best measured configuration),
        /// [`seed_schedule`](Self::seed_schedule) and
        /// [`prediction_off`](Self::prediction_off); `docs/trainer.md` says when to use each.
        ///
        /// Build one with struct-update syntax or [`builder`](Self::builder);
        /// [`validate`](Self::validate) checks it, and the trainer's constructor calls it.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct DeterministicPhaseConfig {
            $($(#[$sdoc])* pub $sname: $sty,)*
            $($(#[$wdoc])* pub $wname: $wty,)*
            $($(#[$pdoc])* pub $pname: $pty,)*
            $($(#[$adoc])* pub $aname: $aty,)*
        }

        impl Default for DeterministicPhaseConfig {
            fn default() -> Self {
                let s = ScheduleConfig::default();
                Self {
                    $($sname: s.$sname,)*
                    $($wname: $wdef,)*
                    $($pname: $pdef,)*
                    $($aname: s.$aname,)*
                }
            }
        }

        impl DeterministicPhaseConfig {
            /// The scheduler's part of the config (no validation).
            #[must_use]
            pub fn schedule(&self) -> ScheduleConfig {
                ScheduleConfig {
                    $($sname: self.$sname,)*
                    $($aname: self.$aname,)*
                }
            }
        }

        /// Builder for [`DeterministicPhaseConfig`]: one setter per field, and
        /// [`build`](Self::build) returns the config itself (as in 0.1.1); the trainer
        /// validates it, or call [`DeterministicPhaseConfig::validate`].
        #[derive(Debug, Clone, PartialEq)]
        pub struct DeterministicPhaseConfigBuilder {
            config: DeterministicPhaseConfig,
        }

        impl DeterministicPhaseConfigBuilder {
            $(
                #[doc = concat!("Sets `", stringify!($sname), "`.")]
                #[must_use]
                pub fn $sname(mut self, value: $sty) -> Self {
                    self.config.$sname = value;
                    self
                }
            )*
            $(
                #[doc = concat!("Sets `", stringify!($pname), "`.")]
                #[must_use]
                pub fn $pname(mut self, value: $pty) -> Self {
                    self.config.$pname = value;
                    self
                }
            )*
            $(
                #[doc = concat!("Sets `", stringify!($aname), "`.")]
                #[must_use]
                pub fn $aname(mut self, value: $aty) -> Self {
                    self.config.$aname = value;
                    self
                }
            )*
        }
    };
}

flat_config! {
    seed {
        /// Warmup steps (true gradients) before the first Full phase. Default 10.
        warmup_steps: usize,
        /// Length of a Full phase. Default 5.
        full_steps: usize,
        /// Predicted steps per predict block (Correct steps come on top). Default 20.
        predict_steps: usize,
        /// A Correct step follows every `correct_every` predicted steps. Default 5.
        correct_every: usize,
        /// Whether the phase lengths adapt to prediction quality and the loss. Default true.
        adaptive_phases: bool,
        /// Relative loss rise that counts as a spike. Default 0.1.
        loss_increase_threshold: f32,
    }
    window {
        /// History length of a windowed predictor (`HistoryMode::Window(n)` must carry this
        /// `n`). Default 8, at least 1 (2 for a windowed `LinearWls`).
        history_window: usize = 8,
        /// How the predictor keeps its history. Default `Streaming`. `Window(W)` keeps W
        /// gradient tensors on the device (a reference each with f32 storage).
        history_mode: HistoryMode = HistoryMode::Streaming,
    }
    predictor {
        /// How many steps ahead a prediction extrapolates. Only 1 is supported (the
        /// prediction for step t extrapolates from the last true gradient to t); any other
        /// value is a config error. Default 1.
        prediction_horizon: usize = 1,
        /// Per-step decay of the history weights, in `(0, 1]`. Default 0.95.
        history_decay: f32 = 0.95,
        /// The residual r is added to predictions while ‖r‖/‖g‖ exceeds this; finite, ≥ 0.
        /// Default 0.1.
        residual_threshold: f32 = 0.1,
        /// Averaging rate ρ of the residual, r ← (1 − ρ)·r + ρ·(g − ĝ), in `(0, 1]`.
        /// Default 0.5.
        residual_rate: f32 = 0.5,
        /// Which model the predictor fits. Default `LastGradient` (chosen by measurement,
        /// `docs/trainer.md`).
        predictor_model: PredictorModel = PredictorModel::LastGradient,
        /// Storage precision of the predictor's per-element history: `F32` (default), or the
        /// 16-bit `Bf16` / `F16` (half the bytes; f16 refuses gradients above 65504).
        history_precision: StatPrecision = StatPrecision::F32,
        /// How parameters split into groups with their own phases (`docs/trainer.md`,
        /// per-block phases). Default `GroupRule::Whole`: one group, the behaviour of
        /// vsa-optim-rs 0.1.1. `GroupRule::blocks("layers.")` makes one group per residual
        /// block; the model detaches the branches of predicting groups with
        /// [`BackwardPlan`](crate::BackwardPlan).
        #[serde(skip_serializing_if = "is_whole")]
        groups: GroupRule = GroupRule::Whole,
    }
    adaptation {
        /// Lower bound of the adapted predict length. Default 1.
        min_predict_steps: usize,
        /// Upper bound of the adapted predict length. Default 80.
        max_predict_steps: usize,
        /// Increase of the predict length after a good block. Default 5.
        predict_increase: usize,
        /// Lower bound of the adapted Full length. Default 1.
        min_full_steps: usize,
        /// Upper bound of the adapted Full length. Default 40.
        max_full_steps: usize,
        /// A report is good at `cosine >= good_cosine` (and a small relative error). Default 0.9.
        good_cosine: f32,
        /// A report is bad below `bad_cosine` (or at a large relative error). Default 0.5.
        bad_cosine: f32,
        /// Below this cosine the scheduler backs off to Full-only at once. Default 0.0.
        backoff_cosine: f32,
        /// Largest relative error of a good report. Default 0.5.
        good_relative_error: f32,
        /// Relative error above which a report is bad. Default 1.0.
        bad_relative_error: f32,
        /// Decay of the quality averages, in `[0, 1)`. Default 0.9.
        quality_ema_decay: f32,
        /// Decay of the loss average, in `[0, 1)`. Default 0.9.
        loss_ema_decay: f32,
        /// Falling-loss blocks after which the predict length grows without reports. Default 2.
        steady_blocks: usize,
        /// Full-only steps before the first probe after backing off. Default 32.
        backoff_initial_interval: usize,
        /// Cap of the doubling back-off interval. Default 1024.
        backoff_max_interval: usize,
        /// Clean blocks after which the back-off interval resets. Default 4.
        backoff_reset_blocks: usize,
    }
}

impl DeterministicPhaseConfig {
    /// A builder starting from the defaults.
    #[must_use]
    pub fn builder() -> DeterministicPhaseConfigBuilder {
        DeterministicPhaseConfigBuilder {
            config: Self::default(),
        }
    }

    /// The schedule of vsa-optim-rs 0.1.1 (F5 P20 C5 after 10 warmup steps, adaptive) with
    /// this crate's measured predictor defaults: the same as [`Default`]. Use it where
    /// gradients are noisy or unknown: adaptation backs it off to Full-only steps when
    /// predictions are poor (`docs/trainer.md`).
    #[must_use]
    pub fn seed_schedule() -> Self {
        Self::default()
    }

    /// The best configuration measured (`docs/trainer.md`, `docs/benchmarks.md`): after
    /// warmup, alternate one true and one predicted (last-gradient) step (F1 P1 C1), with a
    /// Correct step measuring every prediction and the predict length capped at 1. On the
    /// full-batch digits MLP, at twice the learning rate, it held the tuned baseline's loss
    /// 1.2–1.8× sooner; on minibatch and char-LM runs it backed off like the defaults. Use it
    /// for full-batch or large-batch training with smooth gradients.
    #[must_use]
    pub fn alternating() -> Self {
        Self {
            full_steps: 1,
            predict_steps: 1,
            correct_every: 1,
            min_full_steps: 1,
            min_predict_steps: 1,
            max_predict_steps: 1,
            ..Self::default()
        }
    }

    /// A trainer that never predicts: every step is a Warmup step (warmup lasts
    /// `MAX_PHASE_LEN` steps), so every step runs backward and only records. It measures the
    /// trainer's own overhead (the "trainer, prediction off" row of the demo) and is the
    /// safe choice when prediction is known not to help.
    #[must_use]
    pub fn prediction_off() -> Self {
        Self {
            warmup_steps: MAX_PHASE_LEN,
            ..Self::default()
        }
    }

    /// `config` after [`validate`](Self::validate).
    ///
    /// # Errors
    /// As [`validate`](Self::validate).
    pub fn new(config: Self) -> Result<Self> {
        config.validate()?;
        Ok(config)
    }

    /// The predictor's part of the config (no validation).
    #[must_use]
    pub fn predictor(&self) -> PredictorConfig {
        PredictorConfig {
            model: self.predictor_model,
            history: self.history_mode,
            decay: self.history_decay,
            residual_threshold: self.residual_threshold,
            residual_rate: self.residual_rate,
            precision: self.history_precision,
        }
    }

    /// Checks every field; the error names the first offending one with its allowed range
    /// and its value (`{parameter, expected, actual}`): schedule fields through
    /// [`ScheduleConfig::validate`], predictor fields through
    /// [`PredictorConfig::validate`], and the fields that tie them together here.
    ///
    /// # Errors
    /// [`Error::Scheduler`] with `InvalidConfig` for a schedule field, `history_window`,
    /// `prediction_horizon ≠ 1` or a `Window` history that disagrees with `history_window`;
    /// [`Error::Predict`] for a predictor field (decay, residual threshold and rate).
    pub fn validate(&self) -> Result<()> {
        self.schedule().validate()?;
        if self.history_window == 0 || self.history_window > MAX_PHASE_LEN {
            return Err(invalid(
                "history_window",
                format!("in [1, {MAX_PHASE_LEN}]"),
                self.history_window,
            ));
        }
        if self.prediction_horizon != 1 {
            return Err(invalid(
                "prediction_horizon",
                "1 (predictions extrapolate from the last true gradient to the current step)",
                self.prediction_horizon,
            ));
        }
        if let HistoryMode::Window(n) = self.history_mode {
            if n != self.history_window {
                return Err(invalid(
                    "history_mode",
                    format!(
                        "Window(history_window = {}) or Streaming",
                        self.history_window
                    ),
                    format!("Window({n})"),
                ));
            }
            if self.predictor_model == PredictorModel::LinearWls && n < 2 {
                return Err(invalid(
                    "history_window",
                    "at least 2 for a windowed LinearWls predictor",
                    n,
                ));
            }
        }
        self.predictor().validate()?;
        self.groups.validate()?;
        Ok(())
    }
}

impl DeterministicPhaseConfigBuilder {
    /// Sets `history_window`, and the window of a `Window` history mode, so that the two
    /// never disagree.
    #[must_use]
    pub fn history_window(mut self, value: usize) -> Self {
        self.config.history_window = value;
        if let HistoryMode::Window(_) = self.config.history_mode {
            self.config.history_mode = HistoryMode::Window(value);
        }
        self
    }

    /// Sets `history_mode`; `Window(n)` also sets `history_window = n`.
    #[must_use]
    pub fn history_mode(mut self, value: HistoryMode) -> Self {
        self.config.history_mode = value;
        if let HistoryMode::Window(n) = value {
            self.config.history_window = n;
        }
        self
    }

    /// The config (not validated: the trainer validates it, or call
    /// [`DeterministicPhaseConfig::validate`]).
    #[must_use]
    pub fn build(self) -> DeterministicPhaseConfig {
        self.config
    }
}
