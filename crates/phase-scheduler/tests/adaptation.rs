//! Adaptation: quality high → longer, quality low → back-off with bounded probing, loss
//! spike → shorter.

use phase_scheduler::{DeterministicPhase as Ph, PhaseScheduler, ScheduleConfig};

use crate::common::{BAD, GOOD, NEUTRAL, run, small, step};

/// Good quality grows P by `predict_increase` per block up to `max_predict_steps`, and
/// shrinks F by one per block down to `min_full_steps`.
#[test]
fn high_quality_lengthens_prediction_within_bounds() {
    let mut s = PhaseScheduler::new(ScheduleConfig::default()).unwrap();
    let mut seen = vec![s.stats().effective_predict_steps];
    for _ in 0..4000 {
        let info = s.peek();
        let q = (info.phase == Ph::Correct).then_some(GOOD);
        step(&mut s, None, q);
        let p = s.stats().effective_predict_steps;
        if p != *seen.last().unwrap() {
            seen.push(p);
        }
    }
    assert_eq!(
        seen,
        vec![20, 25, 30, 35, 40, 45, 50, 55, 60, 65, 70, 75, 80]
    );
    let st = s.stats();
    assert_eq!(st.effective_full_steps, 1);
    assert_eq!(st.predict_growths, st.completed_blocks);
    assert_eq!(st.quality.reports, st.correct_steps);
    assert_eq!(
        st.quality.ema_cosine.map(|c| (c * 100.0).round()),
        Some(99.0)
    );
    // At the cap: cycle = 1 Full + 80 predicted + 16 Correct → 97 steps, 17 backward.
    assert!(st.speedup() > 5.0, "{}", st);
    assert!(st.skipped_forward_steps == st.predicted_steps);
}

/// Persistently bad quality: P is halved at each bad Correct (20 → 10 → 5 → 2 → 1), then the
/// scheduler backs off; probes come after 32, 64, …, 1024 Full steps, then every 1024.
#[test]
fn low_quality_backs_off_and_probing_is_bounded() {
    let mut s = PhaseScheduler::new(ScheduleConfig::default()).unwrap();
    let n = 20_000;
    let mut predicted_before_backoff = None;
    let mut intervals = Vec::new();
    for _ in 0..n {
        let info = s.peek();
        if info.phase == Ph::Full && info.phase_step == 0 && info.backed_off {
            intervals.push(info.phase_len);
        }
        let q = (info.phase == Ph::Correct).then_some(BAD);
        step(&mut s, Some(1.0), q);
        if s.stats().backed_off && predicted_before_backoff.is_none() {
            predicted_before_backoff = Some(s.stats().predicted_steps);
        }
    }
    // Aborted at the first Correct of each block: 5 + 5 + 5 + 2 + 1 predicted steps.
    assert_eq!(predicted_before_backoff, Some(18));
    let mut expected = vec![32, 64, 128, 256, 512];
    // The rest: 1024 each. Steps so far: 10 W + per cut (5 F + run + C), then each back-off
    // run is followed by a probe (P, C).
    let used: u64 =
        10 + (5 + 6) * 3 + (5 + 3) + (5 + 2) + expected.iter().map(|i| i + 2).sum::<u64>();
    let full_cycles = (n - used) / (1024 + 2);
    expected.extend(std::iter::repeat_n(1024, full_cycles as usize + 1));
    assert_eq!(intervals, expected);
    let st = s.stats();
    assert_eq!(st.backoffs, 1);
    assert_eq!(st.failed_probes, st.probes);
    // Worst-case bound from docs/phase-scheduler.md: after backing off, at most
    // m · (ceil(log2(I_max / I_0)) + 1 + N / I_max) predicted steps, m = 1.
    let bound = 18 + (5 + 1 + n / 1024);
    assert!(
        st.predicted_steps <= bound,
        "{} > {bound}",
        st.predicted_steps
    );
    // Here: 18 + 23 probes = 41 predicted steps in 20 000.
    assert_eq!(st.predicted_steps, 41);
    assert!(
        st.backward_fraction() >= 1.0 - bound as f64 / n as f64,
        "{st}"
    );
}

/// A probe that passes ends the back-off; the interval only returns to its start after
/// `backoff_reset_blocks` blocks without a bad report, so an adversary that lets every probe
/// pass and fails the block right after still faces a doubling interval.
#[test]
fn reprobe_success_and_interval_reset() {
    let mut s = PhaseScheduler::new(ScheduleConfig {
        predict_steps: 1,
        ..small()
    })
    .unwrap();
    let mut bad_next = true;
    let mut intervals = Vec::new();
    for _ in 0..2000 {
        let info = s.peek();
        if info.phase == Ph::Full && info.phase_step == 0 && info.backed_off {
            intervals.push(info.phase_len);
        }
        let q = if info.phase != Ph::Correct {
            None
        } else if info.probe {
            Some(NEUTRAL)
        } else if bad_next {
            Some(BAD)
        } else {
            Some(GOOD)
        };
        step(&mut s, Some(1.0), q);
        if s.stats().probes == 3 {
            bad_next = false;
        }
    }
    assert_eq!(&intervals[..3], &[32, 64, 128]);
    assert_eq!(intervals.len(), 3);
    assert!(!s.stats().backed_off);
    // After 4 good blocks the next back-off would start again at 32.
    assert_eq!(s.stats().next_backoff_interval, 32);
    assert!(s.stats().effective_predict_steps > 1);
    // Bad quality again: P is cut back to 1, then the back-off starts over at 32.
    let mut steps = 0;
    while !s.stats().backed_off {
        run(&mut s, 1, Some(BAD));
        steps += 1;
    }
    assert!(steps < 100, "{steps}");
    assert_eq!(s.stats().backoffs, 4);
    assert_eq!(s.stats().backoff_interval, Some(32));
}

/// A loss spike after predicted updates halves P and doubles F; repeated spikes saturate at
/// `min_predict_steps` and `max_full_steps`.
#[test]
fn loss_spikes_shorten_prediction() {
    let mut s = PhaseScheduler::new(ScheduleConfig::default()).unwrap();
    let mut loss = 1.0f32;
    let mut history = Vec::new();
    for _ in 0..3000 {
        let info = s.peek();
        // The loss jumps by 50% at the second predicted step of every run.
        if info.phase == Ph::Predict && info.run_position == 2 {
            loss *= 1.5;
        }
        step(&mut s, Some(loss), None);
        let st = s.stats();
        let pair = (st.effective_predict_steps, st.effective_full_steps);
        if history.last() != Some(&pair) {
            history.push(pair);
        }
    }
    // 20 → 10 → 5 → 2 → 1, with F doubling to its cap of 40. At P = 1 a block is `P C`, so
    // the loss never jumps again (no second predicted step) and nothing changes any more.
    assert_eq!(history, vec![(20, 5), (10, 10), (5, 20), (2, 40), (1, 40)]);
    assert_eq!(s.stats().loss_spikes, 4);
    assert!(!s.stats().backed_off, "spikes alone never back off");
}
