//! The closed formula for the step counts without adaptation, against the state machine.

use phase_scheduler::{DeterministicPhase, PhaseScheduler, ScheduleConfig};
use proptest::prelude::*;

use crate::common::{BAD, GOOD, SEVERE, step};

fn config(w: usize, f: usize, p: usize, c: usize, adaptive: bool) -> ScheduleConfig {
    ScheduleConfig {
        warmup_steps: w,
        full_steps: f,
        predict_steps: p,
        correct_every: c,
        adaptive_phases: adaptive,
        max_predict_steps: p.max(80),
        max_full_steps: f.max(40),
        ..Default::default()
    }
}

fn check(s: &PhaseScheduler, cfg: &ScheduleConfig, n: u64) {
    let expected = cfg.counts_without_adaptation(n).unwrap();
    let st = s.stats();
    assert_eq!(st.total_steps, n);
    assert_eq!(st.warmup_steps, expected.warmup_steps, "warmup at {n}");
    assert_eq!(
        st.full_phase_steps, expected.full_phase_steps,
        "full at {n}"
    );
    assert_eq!(st.correct_steps, expected.correct_steps, "correct at {n}");
    assert_eq!(
        st.predicted_steps, expected.predicted_steps,
        "predicted at {n}"
    );
    assert_eq!(st.full_steps, expected.backward_steps(), "backward at {n}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Non-adaptive: the formula holds after every step, whatever the losses and reports.
    #[test]
    fn formula_matches_fixed_schedule(
        w in 0usize..30, f in 1usize..12, p in 1usize..40, c in 1usize..12, n in 0u64..400,
        seed in any::<u64>(),
    ) {
        let cfg = config(w, f, p, c, false);
        let mut s = PhaseScheduler::new(cfg.clone()).unwrap();
        check(&s, &cfg, 0);
        let mut x = seed;
        for i in 1..=n {
            // A cheap deterministic mix of losses (with spikes) and reports of every class.
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let loss = 1.0 + (x >> 60) as f32;
            let q = [Some(GOOD), Some(BAD), Some(SEVERE), None][(x >> 40) as usize % 4];
            let skip = (x >> 50) & 1 == 1;
            let info = s.peek();
            let loss = if info.phase == DeterministicPhase::Predict && skip { None } else { Some(loss) };
            step(&mut s, loss, q);
            check(&s, &cfg, i);
        }
    }

    /// Adaptive, but with a flat loss and no quality reports, nothing triggers adaptation:
    /// the formula holds too.
    #[test]
    fn formula_matches_quiet_adaptive_schedule(
        w in 0usize..30, f in 1usize..12, p in 1usize..40, c in 1usize..12, n in 0u64..400,
    ) {
        let cfg = config(w, f, p, c, true);
        let mut s = PhaseScheduler::new(cfg.clone()).unwrap();
        for _ in 0..n {
            step(&mut s, Some(2.5), None);
        }
        check(&s, &cfg, n);
        prop_assert_eq!(s.stats().effective_predict_steps, p as u64);
    }
}

/// The README arithmetic: 100 steps with the defaults.
#[test]
fn hundred_steps_with_defaults() {
    let cfg = ScheduleConfig {
        adaptive_phases: false,
        ..Default::default()
    };
    let mut s = PhaseScheduler::new(cfg.clone()).unwrap();
    for _ in 0..100 {
        step(&mut s, Some(1.0), None);
    }
    check(&s, &cfg, 100);
    let st = s.stats();
    assert_eq!(
        (st.warmup_steps, st.full_phase_steps, st.correct_steps),
        (10, 18, 12)
    );
    assert_eq!((st.full_steps, st.predicted_steps), (40, 60));
    assert_eq!(st.speedup(), 2.5);
    assert_eq!(
        st.to_string(),
        "100 steps (40 full, 60 predicted): 2.50x fewer backward passes"
    );
}

/// Hand-computed values of the formula at its edges.
#[test]
fn formula_edges() {
    let cfg = config(3, 2, 5, 2, false); // cycle: FF PPC PPC PC (10 steps, K = 3)
    let at = |n| {
        let c = cfg.counts_without_adaptation(n).unwrap();
        (
            c.warmup_steps,
            c.full_phase_steps,
            c.predicted_steps,
            c.correct_steps,
        )
    };
    assert_eq!(at(0), (0, 0, 0, 0));
    assert_eq!(at(3), (3, 0, 0, 0));
    assert_eq!(at(4), (3, 1, 0, 0));
    assert_eq!(at(5), (3, 2, 0, 0));
    assert_eq!(at(7), (3, 2, 2, 0));
    assert_eq!(at(8), (3, 2, 2, 1));
    assert_eq!(at(12), (3, 2, 5, 2));
    assert_eq!(at(13), (3, 2, 5, 3));
    assert_eq!(at(14), (3, 3, 5, 3));
    assert_eq!(at(23), (3, 4, 10, 6));
    assert!(
        config(0, 0, 5, 2, false)
            .counts_without_adaptation(1)
            .is_err()
    );
}
