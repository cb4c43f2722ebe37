//! Misuse returns a typed error and leaves the state exactly as it was.

use phase_scheduler::{DeterministicPhase as Ph, Error, PhaseScheduler, QualityReport};

use crate::common::{GOOD, run, small, snapshot, step};

/// Runs `f`, expects `Err(expected)`, and checks the serialised state did not change.
fn rejects<T: std::fmt::Debug>(
    s: &mut PhaseScheduler,
    expected: Error,
    f: impl FnOnce(&mut PhaseScheduler) -> phase_scheduler::Result<T>,
) {
    let before = snapshot(s);
    let err = f(s).unwrap_err();
    assert_eq!(err, expected);
    assert_eq!(snapshot(s), before, "state changed by {expected:?}");
}

#[test]
fn ending_or_reporting_without_a_step() {
    let mut s = PhaseScheduler::new(small()).unwrap();
    run(&mut s, 5, None);
    rejects(
        &mut s,
        Error::NoStepInProgress {
            operation: "end_step",
        },
        |s| s.end_step(1.0),
    );
    rejects(
        &mut s,
        Error::NoStepInProgress {
            operation: "end_step_without_loss",
        },
        |s| s.end_step_without_loss(),
    );
    rejects(
        &mut s,
        Error::NoStepInProgress {
            operation: "report_quality",
        },
        |s| s.report_quality(GOOD),
    );
    // Still usable, and the schedule did not move.
    assert_eq!(step(&mut s, Some(1.0), None).step, 5);
}

#[test]
fn beginning_twice() {
    let mut s = PhaseScheduler::new(small()).unwrap();
    run(&mut s, 3, None);
    let info = s.begin_step().unwrap();
    assert_eq!(s.current_step(), Some(info));
    rejects(&mut s, Error::StepInProgress { step: 3 }, |s| {
        s.begin_step()
    });
    s.end_step(1.0).unwrap();
    assert_eq!(s.current_step(), None);
}

#[test]
fn loss_required_on_backward_steps() {
    let mut s = PhaseScheduler::new(small()).unwrap();
    for (skip, phase) in [(0, Ph::Warmup), (2, Ph::Full), (2, Ph::Correct)] {
        run(&mut s, skip, None);
        let info = s.begin_step().unwrap();
        assert_eq!(info.phase, phase);
        rejects(
            &mut s,
            Error::LossRequired {
                step: info.step,
                phase,
            },
            |s| s.end_step_without_loss(),
        );
        s.end_step(1.0).unwrap();
    }
}

#[test]
fn quality_misuse() {
    let mut s = PhaseScheduler::new(small()).unwrap();
    run(&mut s, 4, None);
    let info = s.begin_step().unwrap();
    assert_eq!(info.phase, Ph::Predict);
    rejects(
        &mut s,
        Error::QualityNotExpected {
            step: 4,
            phase: Ph::Predict,
        },
        |s| s.report_quality(GOOD),
    );
    s.end_step_without_loss().unwrap();
    run(&mut s, 1, None);
    let info = s.begin_step().unwrap();
    assert_eq!(info.phase, Ph::Correct);
    let q = |cosine, relative_error| QualityReport {
        cosine,
        relative_error,
    };
    for (bad, field) in [
        (q(f32::NAN, 0.1), "cosine"),
        (q(1.5, 0.1), "cosine"),
        (q(-1.2, 0.1), "cosine"),
        (q(0.9, f32::NAN), "relative_error"),
        (q(f32::NEG_INFINITY, 0.1), "cosine"),
        (q(0.9, f32::NEG_INFINITY), "relative_error"),
        (q(0.9, -0.1), "relative_error"),
    ] {
        let before = snapshot(&s);
        let err = s.report_quality(bad).unwrap_err();
        assert!(
            matches!(err, Error::InvalidQuality { field: f, .. } if f == field),
            "{err:?}"
        );
        assert_eq!(snapshot(&s), before);
    }
    // Rounding slack: 1.005 is accepted and clamped to 1.
    s.report_quality(q(1.005, 0.0)).unwrap();
    assert_eq!(s.stats().quality.last_cosine, Some(1.0));
    // A zero true gradient: grad-predict reports relative error +inf; it is recorded as the
    // cap, so the state stays finite and serialisable.
    let mut t = s.clone();
    t.end_step(1.0).unwrap();
    run(&mut t, 2, None);
    t.begin_step().unwrap();
    t.report_quality(grad_predict_quality(f32::INFINITY))
        .unwrap();
    assert_eq!(
        t.stats().quality.last_relative_error,
        Some(phase_scheduler::MAX_RELATIVE_ERROR)
    );
    let back: PhaseScheduler = serde_json::from_str(&snapshot(&t)).unwrap();
    assert_eq!(back, t);
    rejects(&mut s, Error::QualityAlreadyReported { step: 6 }, |s| {
        s.report_quality(GOOD)
    });
    s.end_step(1.0).unwrap();
    assert_eq!(s.stats().quality.reports, 1);
    assert_eq!(s.stats().quality.good, 1);
}

#[test]
fn shadow_reports_at_full_steps_do_not_adapt() {
    let mut s = PhaseScheduler::new(small()).unwrap();
    for _ in 0..4 {
        s.begin_step().unwrap();
        s.report_quality(QualityReport {
            cosine: -0.5,
            relative_error: 3.0,
        })
        .unwrap();
        s.end_step(1.0).unwrap();
    }
    assert_eq!(s.stats().shadow_quality.reports, 4);
    assert_eq!(s.stats().shadow_quality.bad, 4);
    assert_eq!(s.stats().quality.reports, 0);
    assert!(!s.stats().backed_off);
    assert_eq!(s.stats().effective_predict_steps, 5);
}

#[test]
fn corrupted_checkpoints_are_refused() {
    let mut s = PhaseScheduler::new(small()).unwrap();
    run(&mut s, 9, None);
    let json = snapshot(&s);
    let tamper = |from: &str, to: &str| {
        assert!(json.contains(from), "{from} not in {json}");
        let bad = json.replacen(from, to, 1);
        let err = serde_json::from_str::<PhaseScheduler>(&bad).unwrap_err();
        assert!(
            err.to_string().contains("invalid")
                || err.to_string().contains("unknown")
                || err.to_string().contains("missing"),
            "{err}"
        );
    };
    tamper("\"next_step\":9", "\"next_step\":10");
    tamper("\"version\":2", "\"version\":3");
    tamper("\"correct_every\":2", "\"correct_every\":0");
    tamper(
        "\"effective_predict_steps\":5",
        "\"effective_predict_steps\":500",
    );
    tamper("\"backed_off\":false", "\"backed_off\":true");
    assert_eq!(serde_json::from_str::<PhaseScheduler>(&json).unwrap(), s);
}

fn grad_predict_quality(relative_error: f32) -> QualityReport {
    QualityReport {
        cosine: 0.0,
        relative_error,
    }
}
