//! Counters and running measurements.

use serde::{Deserialize, Serialize};

/// How one quality report compares with the config's thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum QualityClass {
    /// `cosine >= good_cosine` and `relative_error <= good_relative_error`.
    Good,
    /// Neither good nor bad.
    Neutral,
    /// `cosine < bad_cosine` or `relative_error > bad_relative_error`.
    Bad,
}

/// Running statistics of quality reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QualityStats {
    /// Number of reports.
    pub reports: u64,
    /// Reports classified good.
    pub good: u64,
    /// Reports classified neutral.
    pub neutral: u64,
    /// Reports classified bad.
    pub bad: u64,
    /// The last report's cosine (after clamping to `[-1, 1]`).
    pub last_cosine: Option<f32>,
    /// The last report's relative error.
    pub last_relative_error: Option<f32>,
    /// Exponential moving average of the cosine (decay `quality_ema_decay`; the first report
    /// initialises it).
    pub ema_cosine: Option<f64>,
    /// Exponential moving average of the relative error.
    pub ema_relative_error: Option<f64>,
}

impl QualityStats {
    pub(crate) fn record(
        &mut self,
        cosine: f32,
        relative_error: f32,
        class: QualityClass,
        decay: f64,
    ) {
        self.reports += 1;
        match class {
            QualityClass::Good => self.good += 1,
            QualityClass::Neutral => self.neutral += 1,
            QualityClass::Bad => self.bad += 1,
        }
        self.last_cosine = Some(cosine);
        self.last_relative_error = Some(relative_error);
        let ema = |old: Option<f64>, x: f32| {
            Some(old.map_or(f64::from(x), |o| decay * o + (1.0 - decay) * f64::from(x)))
        };
        self.ema_cosine = ema(self.ema_cosine, cosine);
        self.ema_relative_error = ema(self.ema_relative_error, relative_error);
    }
}

/// Counters, running measurements and the current adapted lengths.
///
/// `full_steps` counts every step that ran a backward pass (warmup + Full + Correct);
/// `predicted_steps` counts the others. [`speedup`](Self::speedup) is the ratio of all steps
/// to backward passes: *fewer backward passes*, not wall-clock time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseStats {
    /// Completed steps.
    pub total_steps: u64,
    /// Completed steps that ran a backward pass: `warmup_steps + full_phase_steps +
    /// correct_steps`.
    pub full_steps: u64,
    /// Completed Predict steps (no backward pass).
    pub predicted_steps: u64,
    /// Completed Warmup steps.
    pub warmup_steps: u64,
    /// Completed steps of Full phases.
    pub full_phase_steps: u64,
    /// Completed Correct steps.
    pub correct_steps: u64,
    /// Predict steps ended with `end_step_without_loss` (forward skipped).
    pub skipped_forward_steps: u64,
    /// Non-finite (NaN or ±Inf) losses passed to `end_step`; never averaged into `loss_ema`.
    pub non_finite_losses: u64,
    /// Index of the step with the last non-finite loss.
    pub last_non_finite_step: Option<u64>,
    /// Loss spikes detected (on steps after a predicted update of the current block).
    pub loss_spikes: u64,
    /// Exponential moving average of the finite losses (decay `loss_ema_decay`).
    pub loss_ema: Option<f64>,
    /// The last finite loss.
    pub last_loss: Option<f32>,
    /// Predict blocks completed to their end.
    pub completed_blocks: u64,
    /// Predict blocks cut short by a non-finite loss, a spike or a bad quality report.
    pub aborted_blocks: u64,
    /// Times the predict length grew.
    pub predict_growths: u64,
    /// Times the predict length was cut (halved, or set to its minimum on backing off).
    pub predict_cuts: u64,
    /// The predict length of the next regular block.
    pub effective_predict_steps: u64,
    /// The length of the next regular Full phase.
    pub effective_full_steps: u64,
    /// Whether the scheduler is backed off to Full-only training (probe blocks included).
    pub backed_off: bool,
    /// The Full-only interval of the current back-off, when backed off.
    pub backoff_interval: Option<u64>,
    /// The interval the next back-off (or failed probe) will use.
    pub next_backoff_interval: u64,
    /// Times the scheduler backed off from prediction.
    pub backoffs: u64,
    /// Probe blocks started while backed off.
    pub probes: u64,
    /// Probe blocks that failed (bad quality, spike or non-finite loss) and doubled the
    /// interval.
    pub failed_probes: u64,
    /// Quality reports at Correct steps: these drive the adaptation.
    pub quality: QualityStats,
    /// Quality reports at Warmup and Full steps: informational only.
    pub shadow_quality: QualityStats,
}

impl PhaseStats {
    pub(crate) fn new(predict: u64, full: u64, backoff_interval: u64) -> Self {
        Self {
            total_steps: 0,
            full_steps: 0,
            predicted_steps: 0,
            warmup_steps: 0,
            full_phase_steps: 0,
            correct_steps: 0,
            skipped_forward_steps: 0,
            non_finite_losses: 0,
            last_non_finite_step: None,
            loss_spikes: 0,
            loss_ema: None,
            last_loss: None,
            completed_blocks: 0,
            aborted_blocks: 0,
            predict_growths: 0,
            predict_cuts: 0,
            effective_predict_steps: predict,
            effective_full_steps: full,
            backed_off: false,
            backoff_interval: None,
            next_backoff_interval: backoff_interval,
            backoffs: 0,
            probes: 0,
            failed_probes: 0,
            quality: QualityStats::default(),
            shadow_quality: QualityStats::default(),
        }
    }

    /// `total_steps / full_steps`: how many times fewer backward passes than one per step.
    /// This is not a wall-clock speedup (predicted steps still cost a forward pass unless it
    /// is skipped, plus the prediction). Returns 1 before any step.
    #[must_use]
    pub fn speedup(&self) -> f64 {
        if self.full_steps == 0 {
            1.0
        } else {
            self.total_steps as f64 / self.full_steps as f64
        }
    }

    /// The fraction of steps that ran a backward pass, `full_steps / total_steps` (1 before
    /// any step).
    #[must_use]
    pub fn backward_fraction(&self) -> f64 {
        if self.total_steps == 0 {
            1.0
        } else {
            self.full_steps as f64 / self.total_steps as f64
        }
    }
}

impl std::fmt::Display for PhaseStats {
    /// `100 steps (40 full, 60 predicted): 2.50x fewer backward passes`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} steps ({} full, {} predicted): {:.2}x fewer backward passes",
            self.total_steps,
            self.full_steps,
            self.predicted_steps,
            self.speedup()
        )
    }
}
