//! Helpers shared by the integration tests.

use phase_scheduler::{PhaseScheduler, QualityReport, ScheduleConfig, StepInfo};

/// Good by the default thresholds (cosine >= 0.9, relative error <= 0.5).
pub const GOOD: QualityReport = QualityReport {
    cosine: 0.99,
    relative_error: 0.1,
};
/// Neither good nor bad.
pub const NEUTRAL: QualityReport = QualityReport {
    cosine: 0.7,
    relative_error: 0.7,
};
/// Bad (cosine < 0.5) but above `backoff_cosine = 0`.
pub const BAD: QualityReport = QualityReport {
    cosine: 0.3,
    relative_error: 0.9,
};
/// Below `backoff_cosine = 0`: backs off at once.
pub const SEVERE: QualityReport = QualityReport {
    cosine: -0.2,
    relative_error: 1.5,
};

/// A small schedule: W 2, F 2, P 5, C 2 (blocks `PPC PPC PC`), adaptive.
pub fn small() -> ScheduleConfig {
    ScheduleConfig {
        warmup_steps: 2,
        full_steps: 2,
        predict_steps: 5,
        correct_every: 2,
        ..Default::default()
    }
}

/// The serialised state, for before/after comparisons.
pub fn snapshot(s: &PhaseScheduler) -> String {
    serde_json::to_string(s).unwrap()
}

/// One step: the loss (skipped on Predict steps when `None`) and an optional quality report
/// (ignored on Predict steps).
pub fn step(s: &mut PhaseScheduler, loss: Option<f32>, q: Option<QualityReport>) -> StepInfo {
    let info = s.begin_step().unwrap();
    if info.needs_backward {
        if let Some(q) = q {
            s.report_quality(q).unwrap();
        }
        s.end_step(loss.unwrap_or(1.0)).unwrap();
    } else {
        match loss {
            Some(l) => s.end_step(l).unwrap(),
            None => s.end_step_without_loss().unwrap(),
        }
    }
    info
}

/// Runs `n` steps with a constant loss and the same report at every Correct step; returns the
/// phase letters.
pub fn run(s: &mut PhaseScheduler, n: usize, q: Option<QualityReport>) -> String {
    (0..n)
        .map(|_| {
            let info = s.peek();
            let q = if info.phase == phase_scheduler::DeterministicPhase::Correct {
                q
            } else {
                None
            };
            step(s, Some(1.0), q).phase.letter()
        })
        .collect()
}

/// Steps until the next step has the given phase (at most `limit` steps); returns how many.
pub fn until(
    s: &mut PhaseScheduler,
    phase: phase_scheduler::DeterministicPhase,
    limit: usize,
) -> usize {
    for i in 0..limit {
        if s.peek().phase == phase {
            return i;
        }
        step(s, Some(1.0), None);
    }
    panic!("phase {phase} not reached in {limit} steps");
}
