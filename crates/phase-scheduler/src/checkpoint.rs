//! Checkpoints: serde for the scheduler, with every invariant checked on load.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::scheduler::{PhaseScheduler, Segment, State, to_u64};

/// Version of the serialised scheduler format; a checkpoint with another version is refused.
/// Version 2: the config is a [`ScheduleConfig`](crate::ScheduleConfig) (no predictor fields).
pub const STATE_VERSION: u32 = 2;

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

impl PhaseScheduler {
    /// Checks a (deserialised) scheduler: config valid, counters consistent, the segment
    /// within its bounds, and an active step equal to what the segment implies.
    pub(crate) fn check_invariants(&self) -> Result<()> {
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
