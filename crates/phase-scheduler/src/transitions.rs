//! Transitions: how a step's end (its loss, its quality report) moves the schedule.

use crate::phase::{DeterministicPhase, FullReason};
use crate::scheduler::{LossObservation, PhaseScheduler, Segment, to_u64};
use crate::stats::QualityClass;

impl PhaseScheduler {
    /// Ends the active step. Infallible: every check happened before.
    pub(crate) fn finish(&mut self, obs: LossObservation) {
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

    pub(crate) fn start_full(&mut self, reason: FullReason) {
        self.s.segment = Segment::Full {
            done: 0,
            len: self.s.stats.effective_full_steps,
            backoff: false,
            reason,
        };
    }

    pub(crate) fn start_block(&mut self, probe: bool) {
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

    pub(crate) fn cut_predict(&mut self) {
        let min = to_u64(self.s.config.min_predict_steps);
        let st = &mut self.s.stats;
        st.effective_predict_steps = (st.effective_predict_steps / 2).max(min);
        st.predict_cuts += 1;
    }

    pub(crate) fn grow_full(&mut self) {
        let max = to_u64(self.s.config.max_full_steps);
        let st = &mut self.s.stats;
        st.effective_full_steps = (st.effective_full_steps * 2).min(max);
    }

    /// Backs off (or stays backed off after a failed probe) with the next, doubling interval.
    pub(crate) fn enter_backoff(&mut self, reason: FullReason) {
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

    pub(crate) fn abort_block(&mut self) {
        self.s.stats.aborted_blocks += 1;
        self.s.falling_blocks = 0;
        self.s.good_blocks = 0;
    }

    pub(crate) fn on_non_finite(&mut self) {
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

    pub(crate) fn on_bad_quality(&mut self, severe: bool) {
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

    pub(crate) fn on_spike(&mut self) {
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

    pub(crate) fn advance_regular(&mut self) {
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

    pub(crate) fn block_end(
        &mut self,
        probe: bool,
        reports: u64,
        all_good: bool,
        start: Option<f64>,
    ) {
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
}
