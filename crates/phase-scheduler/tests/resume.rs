//! Checkpoint and resume: a deserialised scheduler continues exactly like the original.

use phase_scheduler::{
    DeterministicPhase as Ph, PhaseScheduler, QualityReport, ScheduleConfig, StepInfo,
};
use proptest::prelude::*;

/// One scripted step: the loss (or a skipped forward), and a report.
#[derive(Debug, Clone, Copy)]
struct Event {
    loss: f32,
    skip_forward: bool,
    report: Option<QualityReport>,
}

fn event() -> impl Strategy<Value = Event> {
    let loss = prop_oneof![
        8 => 0.5f32..2.0,
        1 => Just(f32::NAN),
        1 => 3.0f32..10.0,
    ];
    let report = prop_oneof![
        1 => Just(None),
        3 => (-1.0f32..=1.0, 0.0f32..2.0).prop_map(|(cosine, relative_error)| Some(QualityReport {
            cosine,
            relative_error,
        })),
    ];
    (loss, any::<bool>(), report).prop_map(|(loss, skip_forward, report)| Event {
        loss,
        skip_forward,
        report,
    })
}

fn begin(s: &mut PhaseScheduler, e: Event) -> StepInfo {
    let info = s.begin_step().unwrap();
    if info.needs_backward
        && let Some(q) = e.report
    {
        s.report_quality(q).unwrap();
    }
    info
}

fn end(s: &mut PhaseScheduler, info: StepInfo, e: Event) {
    if info.phase == Ph::Predict && e.skip_forward {
        s.end_step_without_loss().unwrap();
    } else {
        s.end_step(e.loss).unwrap();
    }
}

fn small_adaptive() -> ScheduleConfig {
    ScheduleConfig {
        warmup_steps: 3,
        full_steps: 2,
        predict_steps: 6,
        correct_every: 2,
        max_predict_steps: 12,
        max_full_steps: 8,
        backoff_initial_interval: 4,
        backoff_max_interval: 16,
        backoff_reset_blocks: 2,
        ..Default::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Interrupt at step `k` (between steps, or in the middle of one, after its quality
    /// report), serialise to JSON, deserialise, continue: every later `StepInfo`, the final
    /// stats and the final serialised state are identical to the uninterrupted run.
    #[test]
    fn resume_continues_identically(
        events in prop::collection::vec(event(), 1..300),
        cut in any::<prop::sample::Index>(),
        mid_step in any::<bool>(),
    ) {
        let k = cut.index(events.len());
        let mut a = PhaseScheduler::new(small_adaptive()).unwrap();
        for &e in &events[..k] {
            let info = begin(&mut a, e);
            end(&mut a, info, e);
        }
        let pending = if mid_step { Some(begin(&mut a, events[k])) } else { None };
        let json = serde_json::to_string(&a).unwrap();
        let mut b: PhaseScheduler = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&b, &a);
        if let Some(info) = pending {
            prop_assert_eq!(b.current_step(), Some(info));
            end(&mut a, info, events[k]);
            end(&mut b, info, events[k]);
        }
        let rest = if mid_step { &events[k + 1..] } else { &events[k..] };
        for &e in rest {
            let ia = begin(&mut a, e);
            let ib = begin(&mut b, e);
            prop_assert_eq!(ia, ib);
            end(&mut a, ia, e);
            end(&mut b, ib, e);
        }
        prop_assert_eq!(a.stats(), b.stats());
        prop_assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
    }

    /// Invariant: whatever happens, the counters add up and the lengths stay within bounds.
    #[test]
    fn counters_and_bounds_hold(events in prop::collection::vec(event(), 1..400)) {
        let cfg = small_adaptive();
        let mut s = PhaseScheduler::new(cfg.clone()).unwrap();
        for &e in &events {
            let info = begin(&mut s, e);
            prop_assert!(info.phase_step < info.phase_len);
            if info.phase == Ph::Predict {
                prop_assert!(info.run_position >= 1 && info.run_position <= 2);
            }
            end(&mut s, info, e);
            let st = s.stats();
            prop_assert_eq!(st.full_steps, st.warmup_steps + st.full_phase_steps + st.correct_steps);
            prop_assert_eq!(st.total_steps, st.full_steps + st.predicted_steps);
            prop_assert!((1..=12).contains(&st.effective_predict_steps));
            prop_assert!((1..=8).contains(&st.effective_full_steps));
            prop_assert!((4..=16).contains(&st.next_backoff_interval));
            prop_assert!(st.loss_ema.is_none_or(f64::is_finite));
            // Round trip at every step (validation accepts every reachable state).
            let back: PhaseScheduler = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
            prop_assert_eq!(&back, &s);
        }
    }
}
