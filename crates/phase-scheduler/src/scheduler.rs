//! The state machine.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::{COSINE_SLACK, DeterministicPhaseConfig};
use crate::error::{Error, Result};
use crate::phase::{DeterministicPhase, FullReason};
use crate::stats::{PhaseStats, QualityClass};

/// Version of the serialised scheduler format; a checkpoint with another version is refused.
pub const STATE_VERSION: u32 = 1;

/// What the trainer measured at a backward step: its prediction for this step compared with
/// the true gradient.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QualityReport {
    /// Cosine similarity between predicted and true gradient, in `[-1, 1]` (values up to
    /// [`COSINE_SLACK`] in magnitude are clamped).
    pub cosine: f32,
    /// `‖predicted − true‖ / ‖true‖`, `>= 0`. `+inf` (grad-predict's convention when the true
    /// gradient is zero) and anything above [`MAX_RELATIVE_ERROR`] are recorded as
    /// `MAX_RELATIVE_ERROR`, so that averages and checkpoints stay finite.
    pub relative_error: f32,
}

/// The largest relative error recorded; larger reports (and `+inf`) are clamped to it.
pub const MAX_RELATIVE_ERROR: f32 = 1.0e3;

impl From<grad_predict::PredictionQuality> for QualityReport {
    fn from(q: grad_predict::PredictionQuality) -> Self {
        Self {
            cosine: q.cosine,
            relative_error: q.relative_error,
        }
    }
}

/// What [`PhaseScheduler::begin_step`] tells the trainer about the step it starts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepInfo {
    /// 0-based index of this step.
    pub step: u64,
    /// Its phase.
    pub phase: DeterministicPhase,
    /// Whether it runs a backward pass (`phase.needs_backward()`).
    pub needs_backward: bool,
    /// 0-based position in its segment: the warmup, the Full phase, or the predict block
    /// (which counts its Predict and Correct steps together).
    pub phase_step: u64,
    /// Planned length of the segment: `warmup_steps`, the Full phase's length, or the block's
    /// `P + ceil(P / correct_every)` steps. A block may end early (see the transition table).
    pub phase_len: u64,
    /// For a Predict step, its 1-based position in the current run of predicted steps (the
    /// prediction's distance from the last true gradient); for a Correct step, the length of
    /// the run it closes; 0 otherwise.
    pub run_position: u64,
    /// Why the current Full phase began (`None` outside Full phases).
    pub full_reason: Option<FullReason>,
    /// Whether this step belongs to a probe block (a trial of prediction while backed off).
    pub probe: bool,
    /// Whether the scheduler is backed off to Full-only training.
    pub backed_off: bool,
    /// Backward passes completed before this step.
    pub full_steps: u64,
    /// Predicted steps completed before this step.
    pub predicted_steps: u64,
    /// Non-finite losses seen before this step.
    pub non_finite_losses: u64,
}

/// Where the schedule stands: the segment the next (or current) step belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
enum Segment {
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
struct ActiveStep {
    info: StepInfo,
    quality: Option<QualityReport>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum LossObservation {
    Finite(f32),
    NonFinite,
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct State {
    version: u32,
    config: DeterministicPhaseConfig,
    next_step: u64,
    segment: Segment,
    active: Option<ActiveStep>,
    falling_blocks: u64,
    good_blocks: u64,
    stats: PhaseStats,
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
    s: State,
}

impl Serialize for PhaseScheduler {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.s.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for PhaseScheduler {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let s = State::deserialize(deserializer)?;
        let scheduler = Self { s };
        scheduler
            .check_invariants()
            .map_err(serde::de::Error::custom)?;
        Ok(scheduler)
    }
}

fn to_u64(x: usize) -> u64 {
    x as u64
}

impl PhaseScheduler {
    /// A scheduler at step 0.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when `config.validate()` fails.
    pub fn new(config: DeterministicPhaseConfig) -> Result<Self> {
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
    pub fn config(&self) -> &DeterministicPhaseConfig {
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

    fn classify(&self, q: QualityReport) -> QualityClass {
        let c = &self.s.config;
        if q.cosine < c.bad_cosine || q.relative_error > c.bad_relative_error {
            QualityClass::Bad
        } else if q.cosine >= c.good_cosine && q.relative_error <= c.good_relative_error {
            QualityClass::Good
        } else {
            QualityClass::Neutral
        }
    }

    fn next_info(&self) -> StepInfo {
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

    /// Ends the active step. Infallible: every check happened before.
    fn finish(&mut self, obs: LossObservation) {
        let Some(active) = self.s.active.take() else {
            return;
        };
        let info = active.info;
        let phase = info.phase;
        let adaptive = self.s.config.adaptive_phases;

        // 1. Counters.
        let st = &mut self.s.stats;
        st.total_steps += 1;
        match phase {
            DeterministicPhase::Warmup => st.warmup_steps += 1,
            DeterministicPhase::Full => st.full_phase_steps += 1,
            DeterministicPhase::Predict => st.predicted_steps += 1,
            DeterministicPhase::Correct => st.correct_steps += 1,
        }
        if phase.needs_backward() {
            st.full_steps += 1;
        }

        // 2. The loss. Spikes count only on steps whose weights already received a predicted
        //    update of the current block.
        let after_prediction =
            matches!(self.s.segment, Segment::Block { predicted, .. } if predicted > 0);
        let mut spike = false;
        let mut non_finite = false;
        match obs {
            LossObservation::Finite(loss) => {
                let l = f64::from(loss);
                if let Some(ema) = st.loss_ema {
                    let threshold = f64::from(self.s.config.loss_increase_threshold);
                    if after_prediction && l - ema > threshold * ema.abs() {
                        spike = true;
                        st.loss_spikes += 1;
                    }
                }
                let d = f64::from(self.s.config.loss_ema_decay);
                st.loss_ema = Some(st.loss_ema.map_or(l, |e| d * e + (1.0 - d) * l));
                st.last_loss = Some(loss);
            }
            LossObservation::NonFinite => {
                non_finite = true;
                st.non_finite_losses += 1;
                st.last_non_finite_step = Some(info.step);
            }
            LossObservation::Skipped => st.skipped_forward_steps += 1,
        }

        // 3. Quality of a Correct step.
        let class = match phase {
            DeterministicPhase::Correct => active.quality.map(|q| (self.classify(q), q)),
            _ => None,
        };

        // 4. Advance the segment.
        match &mut self.s.segment {
            Segment::Warmup { done } | Segment::Full { done, .. } => *done += 1,
            Segment::Block {
                predicted,
                corrects,
                run,
                reports,
                all_good,
                ..
            } => {
                if phase == DeterministicPhase::Predict {
                    *predicted += 1;
                    *run += 1;
                } else {
                    *corrects += 1;
                    *run = 0;
                    if let Some((cl, _)) = class {
                        *reports += 1;
                        *all_good &= cl == QualityClass::Good;
                    }
                }
            }
        }
        self.s.next_step += 1;

        // 5. Transitions, in order of precedence.
        if non_finite {
            self.on_non_finite();
            return;
        }
        if adaptive && let Some((QualityClass::Bad, q)) = class {
            let severe = q.cosine < self.s.config.backoff_cosine;
            self.on_bad_quality(severe);
            return;
        }
        if adaptive && spike {
            self.on_spike();
            return;
        }
        self.advance_regular();
    }

    fn start_full(&mut self, reason: FullReason) {
        self.s.segment = Segment::Full {
            done: 0,
            len: self.s.stats.effective_full_steps,
            backoff: false,
            reason,
        };
    }

    fn start_block(&mut self, probe: bool) {
        let len = if probe {
            self.s.stats.probes += 1;
            to_u64(self.s.config.min_predict_steps)
        } else {
            self.s.stats.effective_predict_steps
        };
        self.s.segment = Segment::Block {
            len,
            predicted: 0,
            corrects: 0,
            run: 0,
            probe,
            reports: 0,
            all_good: true,
            start_loss_ema: self.s.stats.loss_ema,
        };
    }

    fn cut_predict(&mut self) {
        let min = to_u64(self.s.config.min_predict_steps);
        let st = &mut self.s.stats;
        st.effective_predict_steps = (st.effective_predict_steps / 2).max(min);
        st.predict_cuts += 1;
    }

    fn grow_full(&mut self) {
        let max = to_u64(self.s.config.max_full_steps);
        let st = &mut self.s.stats;
        st.effective_full_steps = (st.effective_full_steps * 2).min(max);
    }

    /// Backs off (or stays backed off after a failed probe) with the next, doubling interval.
    fn enter_backoff(&mut self, reason: FullReason) {
        let cfg = &self.s.config;
        let (min_p, max_i) = (
            to_u64(cfg.min_predict_steps),
            to_u64(cfg.backoff_max_interval),
        );
        let st = &mut self.s.stats;
        if !st.backed_off {
            st.backoffs += 1;
        }
        st.backed_off = true;
        if st.effective_predict_steps != min_p {
            st.effective_predict_steps = min_p;
            st.predict_cuts += 1;
        }
        let interval = st.next_backoff_interval;
        st.backoff_interval = Some(interval);
        st.next_backoff_interval = (interval * 2).min(max_i);
        self.s.good_blocks = 0;
        self.s.falling_blocks = 0;
        self.s.segment = Segment::Full {
            done: 0,
            len: interval,
            backoff: true,
            reason,
        };
    }

    fn abort_block(&mut self) {
        self.s.stats.aborted_blocks += 1;
        self.s.falling_blocks = 0;
        self.s.good_blocks = 0;
    }

    fn on_non_finite(&mut self) {
        let adaptive = self.s.config.adaptive_phases;
        let w = to_u64(self.s.config.warmup_steps);
        match self.s.segment {
            Segment::Warmup { done } => {
                if done >= w {
                    self.start_full(FullReason::NonFiniteLoss);
                }
            }
            Segment::Full {
                backoff: true, len, ..
            } => {
                self.s.segment = Segment::Full {
                    done: 0,
                    len,
                    backoff: true,
                    reason: FullReason::NonFiniteLoss,
                };
            }
            Segment::Full { .. } => {
                if adaptive {
                    self.cut_predict();
                    self.grow_full();
                }
                self.start_full(FullReason::NonFiniteLoss);
            }
            Segment::Block { probe, .. } => {
                self.abort_block();
                if probe {
                    self.s.stats.failed_probes += 1;
                    self.enter_backoff(FullReason::NonFiniteLoss);
                } else {
                    if adaptive {
                        self.cut_predict();
                        self.grow_full();
                    }
                    self.start_full(FullReason::NonFiniteLoss);
                }
            }
        }
    }

    fn on_bad_quality(&mut self, severe: bool) {
        let Segment::Block { probe, .. } = self.s.segment else {
            return;
        };
        self.abort_block();
        let min_p = to_u64(self.s.config.min_predict_steps);
        if probe {
            self.s.stats.failed_probes += 1;
            self.enter_backoff(FullReason::Backoff);
        } else if severe || self.s.stats.effective_predict_steps <= min_p {
            self.enter_backoff(FullReason::Backoff);
        } else {
            self.cut_predict();
            self.start_full(FullReason::BadQuality);
        }
    }

    fn on_spike(&mut self) {
        let Segment::Block { probe, .. } = self.s.segment else {
            return;
        };
        self.abort_block();
        if probe {
            self.s.stats.failed_probes += 1;
            self.enter_backoff(FullReason::Backoff);
        } else {
            self.cut_predict();
            self.grow_full();
            self.start_full(FullReason::LossSpike);
        }
    }

    fn advance_regular(&mut self) {
        let w = to_u64(self.s.config.warmup_steps);
        match self.s.segment {
            Segment::Warmup { done } if done >= w => self.start_full(FullReason::Scheduled),
            Segment::Full {
                done, len, backoff, ..
            } if done >= len => self.start_block(backoff),
            Segment::Block {
                len,
                predicted,
                run,
                probe,
                reports,
                all_good,
                start_loss_ema,
                ..
            } if predicted == len && run == 0 => {
                self.block_end(probe, reports, all_good, start_loss_ema);
            }
            _ => {}
        }
    }

    fn block_end(&mut self, probe: bool, reports: u64, all_good: bool, start: Option<f64>) {
        self.s.stats.completed_blocks += 1;
        if probe {
            // A probe that was not bad ends the back-off; prediction resumes at the minimum
            // length and must earn its growth again.
            let st = &mut self.s.stats;
            st.backed_off = false;
            st.backoff_interval = None;
            self.start_full(FullReason::Scheduled);
            return;
        }
        if self.s.config.adaptive_phases {
            let cfg = &self.s.config;
            self.s.good_blocks += 1;
            if self.s.good_blocks >= to_u64(cfg.backoff_reset_blocks) {
                self.s.stats.next_backoff_interval = to_u64(cfg.backoff_initial_interval);
            }
            let falling = matches!((start, self.s.stats.loss_ema), (Some(a), Some(b)) if b < a);
            self.s.falling_blocks = if falling {
                self.s.falling_blocks + 1
            } else {
                0
            };
            let grow = if reports > 0 {
                all_good
            } else {
                self.s.falling_blocks >= to_u64(cfg.steady_blocks)
            };
            if grow {
                let (max_p, min_f, inc) = (
                    to_u64(cfg.max_predict_steps),
                    to_u64(cfg.min_full_steps),
                    to_u64(cfg.predict_increase),
                );
                let st = &mut self.s.stats;
                st.effective_predict_steps = (st.effective_predict_steps + inc).min(max_p);
                st.effective_full_steps = st.effective_full_steps.saturating_sub(1).max(min_f);
                st.predict_growths += 1;
                self.s.falling_blocks = 0;
            }
        }
        self.start_full(FullReason::Scheduled);
    }

    /// Checks a (deserialised) scheduler: config valid, counters consistent, the segment
    /// within its bounds, and an active step equal to what the segment implies.
    fn check_invariants(&self) -> Result<()> {
        let s = &self.s;
        let bad = |reason: String| Err(Error::InvalidState { reason });
        if s.version != STATE_VERSION {
            return bad(format!(
                "version must be {STATE_VERSION}, got {}",
                s.version
            ));
        }
        s.config.validate()?;
        let cfg = &s.config;
        let st = &s.stats;
        let sums = [
            st.warmup_steps.checked_add(st.full_phase_steps),
            st.correct_steps.checked_add(st.predicted_steps),
        ];
        let (Some(a), Some(b)) = (sums[0], sums[1]) else {
            return bad("counters overflow".into());
        };
        if a.checked_add(st.correct_steps) != Some(st.full_steps)
            || st.full_steps.checked_add(st.predicted_steps) != Some(st.total_steps)
            || b > st.total_steps
            || st.total_steps != s.next_step
        {
            return bad(
                "step counters disagree (full = warmup + full phase + correct, total = full + \
                 predicted = next step)"
                    .into(),
            );
        }
        let in_range = |v: u64, lo: usize, hi: usize| v >= to_u64(lo) && v <= to_u64(hi);
        if !in_range(
            st.effective_predict_steps,
            cfg.min_predict_steps,
            cfg.max_predict_steps,
        ) || !in_range(
            st.effective_full_steps,
            cfg.min_full_steps,
            cfg.max_full_steps,
        ) || !in_range(
            st.next_backoff_interval,
            cfg.backoff_initial_interval,
            cfg.backoff_max_interval,
        ) {
            return bad("adapted lengths outside their configured bounds".into());
        }
        let c = to_u64(cfg.correct_every);
        let ok = match s.segment {
            Segment::Warmup { done } => done < to_u64(cfg.warmup_steps),
            Segment::Full {
                done, len, backoff, ..
            } => {
                let (lo, hi) = if backoff {
                    (cfg.backoff_initial_interval, cfg.backoff_max_interval)
                } else {
                    (cfg.min_full_steps, cfg.max_full_steps)
                };
                done < len && in_range(len, lo, hi)
            }
            Segment::Block {
                len,
                predicted,
                corrects,
                run,
                ..
            } => {
                in_range(len, cfg.min_predict_steps, cfg.max_predict_steps)
                    && predicted <= len
                    && run <= c
                    && run <= predicted
                    && !(predicted == len && run == 0)
                    && corrects.checked_mul(c) == Some(predicted - run)
            }
        };
        if !ok {
            return bad(format!(
                "segment {:?} is inconsistent with the config",
                s.segment
            ));
        }
        let backoff_segment = matches!(
            s.segment,
            Segment::Full { backoff: true, .. } | Segment::Block { probe: true, .. }
        );
        if backoff_segment != st.backed_off || st.backed_off != st.backoff_interval.is_some() {
            return bad("back-off flag disagrees with the segment".into());
        }
        if let Some(a) = s.active {
            let expected = self.next_info();
            if a.info != expected {
                return bad(format!(
                    "active step {:?} differs from the one the schedule implies {:?}",
                    a.info, expected
                ));
            }
            if a.quality.is_some() && !a.info.needs_backward {
                return bad("a Predict step holds a quality report".into());
            }
        }
        Ok(())
    }
}
