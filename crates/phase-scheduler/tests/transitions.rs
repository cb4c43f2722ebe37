//! One test (at least) per row of the transition table in the crate docs.

use phase_scheduler::{DeterministicPhase as Ph, FullReason, PhaseScheduler, ScheduleConfig};

use crate::common::{BAD, GOOD, NEUTRAL, SEVERE, run, small, snapshot, step, until};

fn fixed() -> ScheduleConfig {
    ScheduleConfig {
        adaptive_phases: false,
        ..small()
    }
}

/// T0, T11, T13, T14, T16, T17: the regular schedule, letter by letter.
#[test]
fn regular_schedule_letters() {
    let mut s = PhaseScheduler::new(fixed()).unwrap();
    assert_eq!(run(&mut s, 24, None), "WWFFPPCPPCPCFFPPCPPCPCFF");
    // The seed's defaults: FFFFF then four runs of PPPPPC.
    let mut s = PhaseScheduler::new(ScheduleConfig::default()).unwrap();
    let letters = run(&mut s, 10 + 29 + 5, None);
    assert_eq!(
        letters,
        format!("{}FFFFF{}FFFFF", "W".repeat(10), "PPPPPC".repeat(4))
    );
}

/// T0 with `W = 0`: the first step is Full.
#[test]
fn zero_warmup_starts_full() {
    let cfg = ScheduleConfig {
        warmup_steps: 0,
        ..fixed()
    };
    let mut s = PhaseScheduler::new(cfg).unwrap();
    let info = s.begin_step().unwrap();
    assert_eq!(info.phase, Ph::Full);
    assert_eq!(info.full_reason, Some(FullReason::Scheduled));
    assert_eq!((info.phase_step, info.phase_len), (0, 2));
}

/// The positions reported in `StepInfo`.
#[test]
fn step_info_positions() {
    let mut s = PhaseScheduler::new(fixed()).unwrap();
    let infos: Vec<_> = (0..13).map(|_| step(&mut s, Some(1.0), None)).collect();
    let view = |i: usize| {
        let x = infos[i];
        (x.step, x.phase, x.phase_step, x.phase_len, x.run_position)
    };
    assert_eq!(view(1), (1, Ph::Warmup, 1, 2, 0));
    assert_eq!(view(3), (3, Ph::Full, 1, 2, 0));
    assert_eq!(view(4), (4, Ph::Predict, 0, 8, 1));
    assert_eq!(view(5), (5, Ph::Predict, 1, 8, 2));
    assert_eq!(view(6), (6, Ph::Correct, 2, 8, 2));
    assert_eq!(view(10), (10, Ph::Predict, 6, 8, 1));
    assert_eq!(view(11), (11, Ph::Correct, 7, 8, 1));
    assert_eq!(view(12), (12, Ph::Full, 0, 2, 0));
    assert!(
        infos
            .iter()
            .all(|i| i.needs_backward == i.phase.needs_backward())
    );
    assert_eq!((infos[12].full_steps, infos[12].predicted_steps), (7, 5));
}

/// T1: a non-finite loss during warmup keeps warming up, and after the last warmup step goes
/// to Full marked `NonFiniteLoss`. The loss never enters the average.
#[test]
fn t1_non_finite_in_warmup() {
    let mut s = PhaseScheduler::new(small()).unwrap();
    step(&mut s, Some(f32::NAN), None);
    assert_eq!(s.stats().loss_ema, None);
    assert_eq!(s.peek().phase, Ph::Warmup);
    step(&mut s, Some(f32::INFINITY), None);
    let info = s.peek();
    assert_eq!(info.phase, Ph::Full);
    assert_eq!(info.full_reason, Some(FullReason::NonFiniteLoss));
    assert_eq!(info.non_finite_losses, 2);
    assert_eq!(s.stats().last_non_finite_step, Some(1));
    assert_eq!(s.stats().loss_ema, None);
    // Warmup-time events do not adapt the lengths.
    assert_eq!(s.stats().effective_predict_steps, 5);
}

/// T3: a non-finite loss during Full restarts the Full phase; adaptive cuts P and doubles F.
#[test]
fn t3_non_finite_in_full() {
    for adaptive in [false, true] {
        let cfg = ScheduleConfig {
            adaptive_phases: adaptive,
            ..small()
        };
        let mut s = PhaseScheduler::new(cfg).unwrap();
        run(&mut s, 3, None); // W W F: the next is the second F
        step(&mut s, Some(f32::NEG_INFINITY), None);
        let info = s.peek();
        assert_eq!(info.phase, Ph::Full);
        assert_eq!(info.phase_step, 0);
        assert_eq!(info.full_reason, Some(FullReason::NonFiniteLoss));
        assert_eq!(s.stats().loss_ema, Some(1.0));
        let (p, f) = if adaptive { (2, 4) } else { (5, 2) };
        assert_eq!(info.phase_len, f);
        assert_eq!(
            (
                s.stats().effective_predict_steps,
                s.stats().effective_full_steps
            ),
            (p, f)
        );
    }
}

/// T5: a non-finite loss in a block aborts it (in both modes: "switches to Full at once").
#[test]
fn t5_non_finite_in_block() {
    for adaptive in [false, true] {
        let mut s = PhaseScheduler::new(ScheduleConfig {
            adaptive_phases: adaptive,
            ..small()
        })
        .unwrap();
        run(&mut s, 5, None); // W W F F P
        let info = step(&mut s, Some(f32::NAN), None);
        assert_eq!(info.phase, Ph::Predict);
        let next = s.peek();
        assert_eq!(next.phase, Ph::Full);
        assert_eq!(next.full_reason, Some(FullReason::NonFiniteLoss));
        assert_eq!(s.stats().aborted_blocks, 1);
        assert_eq!(s.stats().non_finite_losses, 1);
        assert_eq!(s.stats().loss_ema, Some(1.0));
        let p = if adaptive { 2 } else { 5 };
        assert_eq!(s.stats().effective_predict_steps, p);
    }
}

/// T8: a bad report halves P and goes to Full marked `BadQuality`; the next block is shorter.
#[test]
fn t8_bad_report_cuts_predict() {
    let mut s = PhaseScheduler::new(small()).unwrap();
    assert_eq!(run(&mut s, 7, Some(BAD)), "WWFFPPC");
    let info = s.peek();
    assert_eq!(info.phase, Ph::Full);
    assert_eq!(info.full_reason, Some(FullReason::BadQuality));
    assert_eq!(s.stats().effective_predict_steps, 2);
    assert_eq!(s.stats().effective_full_steps, 2);
    assert!(!s.stats().backed_off);
    // Next block: 2 predicted, one Correct, with neutral quality (no change).
    assert_eq!(run(&mut s, 7, Some(NEUTRAL)), "FFPPCFF");
    assert_eq!(s.stats().effective_predict_steps, 2);
    assert_eq!(s.stats().quality.bad, 1);
    assert_eq!(s.stats().quality.neutral, 1);
}

/// T7: a severe report backs off at once; a bad report at `P = min_predict_steps` too.
#[test]
fn t7_backoff_entry() {
    let mut s = PhaseScheduler::new(small()).unwrap();
    assert_eq!(run(&mut s, 7, Some(SEVERE)), "WWFFPPC");
    let info = s.peek();
    assert_eq!(info.full_reason, Some(FullReason::Backoff));
    assert!(info.backed_off);
    assert_eq!(info.phase_len, 32);
    assert_eq!(s.stats().backoffs, 1);
    assert_eq!(s.stats().backoff_interval, Some(32));
    assert_eq!(s.stats().next_backoff_interval, 64);
    assert_eq!(s.stats().effective_predict_steps, 1);

    let cfg = ScheduleConfig {
        predict_steps: 1,
        ..small()
    };
    let mut s = PhaseScheduler::new(cfg).unwrap();
    assert_eq!(run(&mut s, 6, Some(BAD)), "WWFFPC");
    assert!(s.stats().backed_off);
    assert_eq!(s.peek().phase_len, 32);
}

fn backed_off() -> PhaseScheduler {
    let mut s = PhaseScheduler::new(small()).unwrap();
    run(&mut s, 7, Some(SEVERE));
    assert!(s.stats().backed_off);
    // The back-off run of 32 Full steps, then the probe block (P C of length 1).
    assert_eq!(until(&mut s, Ph::Predict, 100), 32);
    let info = s.peek();
    assert!(info.probe && info.backed_off);
    assert_eq!(info.phase_len, 2);
    assert_eq!(s.stats().probes, 1);
    s
}

/// T2: a non-finite loss during the back-off run restarts it with the same interval.
#[test]
fn t2_non_finite_while_backed_off() {
    let mut s = PhaseScheduler::new(small()).unwrap();
    run(&mut s, 7, Some(SEVERE));
    run(&mut s, 10, None);
    assert_eq!(s.peek().phase_step, 10);
    step(&mut s, Some(f32::NAN), None);
    let info = s.peek();
    assert_eq!(
        (info.phase, info.phase_step, info.phase_len),
        (Ph::Full, 0, 32)
    );
    assert_eq!(info.full_reason, Some(FullReason::NonFiniteLoss));
    assert!(info.backed_off);
    assert_eq!(s.stats().next_backoff_interval, 64);
}

/// T4: a non-finite loss in a probe fails it: the interval doubles.
#[test]
fn t4_non_finite_in_probe() {
    let mut s = backed_off();
    step(&mut s, Some(f32::NAN), None);
    let info = s.peek();
    assert_eq!((info.phase, info.phase_len), (Ph::Full, 64));
    assert_eq!(info.full_reason, Some(FullReason::NonFiniteLoss));
    assert_eq!(s.stats().failed_probes, 1);
    assert_eq!(s.stats().next_backoff_interval, 128);
}

/// T6: a bad report at the probe's Correct step fails it: the interval doubles.
#[test]
fn t6_bad_probe() {
    let mut s = backed_off();
    assert_eq!(run(&mut s, 2, Some(BAD)), "PC");
    let info = s.peek();
    assert_eq!((info.phase, info.phase_len), (Ph::Full, 64));
    assert_eq!(info.full_reason, Some(FullReason::Backoff));
    assert_eq!(s.stats().failed_probes, 1);
    assert_eq!(s.stats().backoffs, 1);
}

/// T9: a loss spike at the probe's Correct step fails it.
#[test]
fn t9_spike_in_probe() {
    let mut s = backed_off();
    step(&mut s, Some(1.0), None);
    step(&mut s, Some(1.5), Some(GOOD));
    assert_eq!(s.stats().loss_spikes, 1);
    assert_eq!(s.stats().failed_probes, 1);
    assert_eq!(s.peek().phase_len, 64);
}

/// T12, T15: a probe that is not bad ends the back-off; prediction resumes at the minimum.
#[test]
fn t15_successful_probe() {
    let mut s = backed_off();
    assert_eq!(run(&mut s, 2, Some(NEUTRAL)), "PC");
    let info = s.peek();
    assert_eq!(info.phase, Ph::Full);
    assert_eq!(info.full_reason, Some(FullReason::Scheduled));
    assert!(!info.backed_off);
    assert_eq!(s.stats().backoff_interval, None);
    assert_eq!(s.stats().effective_predict_steps, 1);
    assert_eq!(run(&mut s, 5, Some(NEUTRAL)), "FFPCF");
}

/// T10: a loss spike after a predicted update halves P, doubles F, goes to Full.
/// Spikes in Full phases, or at a block's first step, change nothing.
#[test]
fn t10_spike() {
    let mut s = PhaseScheduler::new(small()).unwrap();
    run(&mut s, 3, None);
    step(&mut s, Some(5.0), None); // spike in Full: ignored
    assert_eq!(s.stats().loss_spikes, 0);
    let ema = s.stats().loss_ema.unwrap();
    // First Predict step: no predicted update yet in this block, so no spike.
    let info = step(&mut s, Some((ema * 3.0) as f32), None);
    assert_eq!((info.phase, info.run_position), (Ph::Predict, 1));
    assert_eq!(s.stats().loss_spikes, 0);
    assert_eq!(s.peek().phase, Ph::Predict);
    let ema = s.stats().loss_ema.unwrap();
    // Just below the threshold: 1.09 · ema is no spike; 1.11 · ema is.
    step(&mut s, Some((ema * 1.09) as f32), None);
    assert_eq!(s.stats().loss_spikes, 0);
    assert_eq!(s.peek().phase, Ph::Correct);
    let ema = s.stats().loss_ema.unwrap();
    step(&mut s, Some((ema * 1.11) as f32), Some(GOOD));
    assert_eq!(s.stats().loss_spikes, 1);
    let info = s.peek();
    assert_eq!(info.full_reason, Some(FullReason::LossSpike));
    assert_eq!(info.phase_len, 4);
    assert_eq!(s.stats().effective_predict_steps, 2);
    assert_eq!(s.stats().aborted_blocks, 1);
}

/// T16: growth after a block with only good reports; none after a neutral one.
#[test]
fn t16_growth_from_quality() {
    let mut s = PhaseScheduler::new(small()).unwrap();
    run(&mut s, 4 + 8, Some(GOOD));
    assert_eq!(s.stats().effective_predict_steps, 10);
    assert_eq!(s.stats().effective_full_steps, 1);
    assert_eq!(s.stats().predict_growths, 1);
    // The next cycle: F (1) then a block of 10 predicted + 5 Correct; neutral reports.
    assert_eq!(run(&mut s, 16, Some(NEUTRAL)), "FPPCPPCPPCPPCPPC");
    assert_eq!(s.stats().effective_predict_steps, 10);
    assert_eq!(s.stats().completed_blocks, 2);
}

/// T16 without reports: growth after `steady_blocks` blocks over which the loss fell.
#[test]
fn t16_growth_from_falling_loss() {
    let mut s = PhaseScheduler::new(small()).unwrap();
    let mut loss = 10.0f32;
    for _ in 0..(4 + 10) {
        loss *= 0.99;
        step(&mut s, Some(loss), None);
    }
    assert_eq!(s.stats().completed_blocks, 1);
    assert_eq!(s.stats().effective_predict_steps, 5);
    for _ in 0..10 {
        loss *= 0.99;
        step(&mut s, Some(loss), None);
    }
    assert_eq!(s.stats().completed_blocks, 2);
    assert_eq!(s.stats().effective_predict_steps, 10);
    // A flat loss does not count as falling.
    let mut s = PhaseScheduler::new(small()).unwrap();
    run(&mut s, 4 + 30, None);
    assert_eq!(s.stats().completed_blocks, 3);
    assert_eq!(s.stats().effective_predict_steps, 5);
}

/// Without adaptation, bad reports and spikes change nothing but the counters.
#[test]
fn fixed_schedule_ignores_quality_and_spikes() {
    let mut a = PhaseScheduler::new(fixed()).unwrap();
    let mut b = PhaseScheduler::new(fixed()).unwrap();
    let la = run(&mut a, 50, Some(SEVERE));
    let lb: String = (0..50)
        .map(|i| step(&mut b, Some(1.0 + i as f32), None).phase.letter())
        .collect();
    assert_eq!(la, lb);
    assert_eq!(a.stats().quality.bad, a.stats().correct_steps);
    assert!(b.stats().loss_spikes > 0);
    assert!(!a.stats().backed_off);
    assert!(snapshot(&b).contains("\"aborted_blocks\":0"));
    assert_eq!(b.stats().aborted_blocks, 0);
}
