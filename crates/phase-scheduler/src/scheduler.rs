//! The state machine: its state, the public step API and the next-step computation.

use serde::{Deserialize, Serialize};

use crate::config::{COSINE_SLACK, ScheduleConfig};
use crate::error::{Error, Result};
use crate::phase::{DeterministicPhase, FullReason};
use crate::stats::{PhaseStats, QualityClass};
use crate::step::{MAX_RELATIVE_ERROR, QualityReport, StepInfo};

use crate::checkpoint::STATE_VERSION;

/// Where the schedule stands: the segment the next (or current) step belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) enum Segment {
    Warmup {
        done: u64,
    },
    Full {
        done: u64,
        len: u64,
        backoff: bool,
        reason: FullReason,
    },
    Block {
        len: u64,
        predicted: u64,
        corrects: u64,
        run: u64,
        probe: bool,
        reports: u64,
        all_good: bool,
        start_loss_ema: Option<f64>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct ActiveStep {
    pub(crate) info: StepInfo,
    pub(crate) quality: Option<QualityReport>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum LossObservation {
    Finite(f32),
    NonFinite,
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct State {
    pub(crate) version: u32,
    pub(crate) config: ScheduleConfig,
    pub(crate) next_step: u64,
    pub(crate) segment: Segment,
    pub(crate) active: Option<ActiveStep>,
    pub(crate) falling_blocks: u64,
    pub(crate) good_blocks: u64,
    pub(crate) stats: PhaseStats,
}

/// The deterministic phase state machine.
///
/// Call [`begin_step`](Self::begin_step) before each training step, then exactly one of
/// [`end_step`](Self::end_step) or [`end_step_without_loss`](Self::end_step_without_loss);
/// in between, at backward steps, optionally [`report_quality`](Self::report_quality).
/// Serialise it with serde to checkpoint it: a deserialised scheduler continues identically
/// (the deserialiser validates the config and every invariant).
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseScheduler {
    pub(crate) s: State,
}

pub(crate) fn to_u64(x: usize) -> u64 {
    x as u64
}

impl PhaseScheduler {
    /// A scheduler at step 0.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when `config.validate()` fails.
    pub fn new(config: ScheduleConfig) -> Result<Self> {
        config.validate()?;
        let stats = PhaseStats::new(
            to_u64(config.predict_steps),
            to_u64(config.full_steps),
            to_u64(config.backoff_initial_interval),
        );
        let segment = if config.warmup_steps > 0 {
            Segment::Warmup { done: 0 }
        } else {
            Segment::Full {
                done: 0,
                len: to_u64(config.full_steps),
                backoff: false,
                reason: FullReason::Scheduled,
            }
        };
        Ok(Self {
            s: State {
                version: STATE_VERSION,
                config,
                next_step: 0,
                segment,
                active: None,
                falling_blocks: 0,
                good_blocks: 0,
                stats,
            },
        })
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &ScheduleConfig {
        &self.s.config
    }

    /// Counters, running measurements and the current adapted lengths.
    #[must_use]
    pub fn stats(&self) -> &PhaseStats {
        &self.s.stats
    }

    /// The step in progress, if any.
    #[must_use]
    pub fn current_step(&self) -> Option<StepInfo> {
        self.s.active.map(|a| a.info)
    }

    /// What the next call to [`begin_step`](Self::begin_step) will return, without starting
    /// it. While a step is in progress this is that step.
    #[must_use]
    pub fn peek(&self) -> StepInfo {
        match self.s.active {
            Some(a) => a.info,
            None => self.next_info(),
        }
    }

    /// Starts the next step and says what it is.
    ///
    /// # Errors
    /// [`Error::StepInProgress`] when the previous step has not ended (state unchanged).
    pub fn begin_step(&mut self) -> Result<StepInfo> {
        if let Some(a) = self.s.active {
            return Err(Error::StepInProgress { step: a.info.step });
        }
        let info = self.next_info();
        self.s.active = Some(ActiveStep {
            info,
            quality: None,
        });
        Ok(info)
    }

    /// Reports the quality of the trainer's prediction for the step in progress, measured
    /// against its true gradient. At Correct steps it drives the adaptation; at Warmup and
    /// Full steps it is recorded in `stats().shadow_quality` only. At most one report per
    /// step; the decision it triggers is taken at `end_step`.
    ///
    /// # Errors
    /// [`Error::NoStepInProgress`], [`Error::QualityNotExpected`] at a Predict step,
    /// [`Error::QualityAlreadyReported`], [`Error::InvalidQuality`] for a NaN, an infinite
    /// cosine, `|cosine| > COSINE_SLACK` or a negative relative error. State unchanged on
    /// error.
    pub fn report_quality(&mut self, report: QualityReport) -> Result<()> {
        let Some(active) = self.s.active else {
            return Err(Error::NoStepInProgress {
                operation: "report_quality",
            });
        };
        let info = active.info;
        if info.phase == DeterministicPhase::Predict {
            return Err(Error::QualityNotExpected {
                step: info.step,
                phase: info.phase,
            });
        }
        if active.quality.is_some() {
            return Err(Error::QualityAlreadyReported { step: info.step });
        }
        if !report.cosine.is_finite() || report.cosine.abs() > COSINE_SLACK {
            return Err(Error::InvalidQuality {
                field: "cosine",
                expected: "finite, in [-1, 1] (up to 1.01 in magnitude, clamped)",
                actual: report.cosine,
            });
        }
        if report.relative_error.is_nan() || report.relative_error < 0.0 {
            return Err(Error::InvalidQuality {
                field: "relative_error",
                expected: ">= 0 (+inf allowed, recorded as MAX_RELATIVE_ERROR)",
                actual: report.relative_error,
            });
        }
        let report = QualityReport {
            cosine: report.cosine.clamp(-1.0, 1.0),
            relative_error: report.relative_error.min(MAX_RELATIVE_ERROR),
        };
        let class = self.classify(report);
        let decay = f64::from(self.s.config.quality_ema_decay);
        let target = if info.phase == DeterministicPhase::Correct {
            &mut self.s.stats.quality
        } else {
            &mut self.s.stats.shadow_quality
        };
        target.record(report.cosine, report.relative_error, class, decay);
        if let Some(a) = self.s.active.as_mut() {
            a.quality = Some(report);
        }
        Ok(())
    }

    /// Ends the step in progress with its loss.
    ///
    /// A non-finite loss (NaN, ±Inf) is **not** an error: it is counted in
    /// `stats().non_finite_losses`, never enters the loss average, and switches to a Full
    /// phase at once (see the transition table). The method returns `Ok` so the trainer can
    /// continue; the next [`StepInfo`] shows `full_reason = Some(NonFiniteLoss)`.
    ///
    /// # Errors
    /// [`Error::NoStepInProgress`] (state unchanged).
    pub fn end_step(&mut self, loss: f32) -> Result<()> {
        if self.s.active.is_none() {
            return Err(Error::NoStepInProgress {
                operation: "end_step",
            });
        }
        let obs = if loss.is_finite() {
            LossObservation::Finite(loss)
        } else {
            LossObservation::NonFinite
        };
        self.finish(obs);
        Ok(())
    }

    /// Ends a Predict step whose forward pass was skipped, so that it has no loss. The loss
    /// average and the spike detection simply see no value for it.
    ///
    /// # Errors
    /// [`Error::NoStepInProgress`]; [`Error::LossRequired`] when the step runs a backward pass
    /// (Warmup, Full, Correct), since it has a loss. State unchanged on error.
    pub fn end_step_without_loss(&mut self) -> Result<()> {
        let Some(active) = self.s.active else {
            return Err(Error::NoStepInProgress {
                operation: "end_step_without_loss",
            });
        };
        if active.info.needs_backward {
            return Err(Error::LossRequired {
                step: active.info.step,
                phase: active.info.phase,
            });
        }
        self.finish(LossObservation::Skipped);
        Ok(())
    }

    pub(crate) fn classify(&self, q: QualityReport) -> QualityClass {
        let c = &self.s.config;
        if q.cosine < c.bad_cosine || q.relative_error > c.bad_relative_error {
            QualityClass::Bad
        } else if q.cosine >= c.good_cosine && q.relative_error <= c.good_relative_error {
            QualityClass::Good
        } else {
            QualityClass::Neutral
        }
    }

    pub(crate) fn next_info(&self) -> StepInfo {
        let s = &self.s;
        let c = to_u64(s.config.correct_every);
        let (phase, phase_step, phase_len, run_position, full_reason, probe) = match s.segment {
            Segment::Warmup { done } => (
                DeterministicPhase::Warmup,
                done,
                to_u64(s.config.warmup_steps),
                0,
                None,
                false,
            ),
            Segment::Full {
                done, len, reason, ..
            } => (DeterministicPhase::Full, done, len, 0, Some(reason), false),
            Segment::Block {
                len,
                predicted,
                corrects,
                run,
                probe,
                ..
            } => {
                let correct = run > 0 && (run == c || predicted == len);
                let (phase, run_position) = if correct {
                    (DeterministicPhase::Correct, run)
                } else {
                    (DeterministicPhase::Predict, run + 1)
                };
                (
                    phase,
                    predicted + corrects,
                    len + len.div_ceil(c),
                    run_position,
                    None,
                    probe,
                )
            }
        };
        StepInfo {
            step: s.next_step,
            phase,
            needs_backward: phase.needs_backward(),
            phase_step,
            phase_len,
            run_position,
            full_reason,
            probe,
            backed_off: s.stats.backed_off,
            full_steps: s.stats.full_steps,
            predicted_steps: s.stats.predicted_steps,
            non_finite_losses: s.stats.non_finite_losses,
        }
    }
}
