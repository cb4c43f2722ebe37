//! The crate's single error type.

use crate::phase::DeterministicPhase;

/// Everything that can go wrong in `phase-scheduler`.
///
/// Every fallible method validates its input before it mutates anything, so an `Err` leaves
/// the scheduler exactly as it was (the tests compare serialised snapshots before and after).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration field is out of its allowed range, or two fields contradict each other.
    #[error("invalid config: `{parameter}` must be {expected}, got {actual}")]
    InvalidConfig {
        /// The offending field of [`ScheduleConfig`](crate::ScheduleConfig).
        parameter: &'static str,
        /// The allowed range, in words.
        expected: String,
        /// The value it had.
        actual: String,
    },
    /// `begin_step` was called while a step was already in progress.
    #[error(
        "begin_step called while step {step} is in progress: expected end_step or \
         end_step_without_loss first"
    )]
    StepInProgress {
        /// The index of the step in progress.
        step: u64,
    },
    /// A method that needs a step in progress was called outside one.
    #[error("{operation} called with no step in progress: expected begin_step first")]
    NoStepInProgress {
        /// The method that was called.
        operation: &'static str,
    },
    /// `end_step_without_loss` was called on a step that runs a backward pass (and so has a
    /// loss).
    #[error(
        "end_step_without_loss called at step {step} in phase {phase}: expected a Predict \
         step; a step that runs backward has a loss, pass it to end_step"
    )]
    LossRequired {
        /// The index of the step in progress.
        step: u64,
        /// Its phase.
        phase: DeterministicPhase,
    },
    /// `report_quality` was called on a Predict step, where there is no true gradient.
    #[error(
        "report_quality called at step {step} in phase {phase}: expected a step that runs \
         backward (Warmup, Full or Correct)"
    )]
    QualityNotExpected {
        /// The index of the step in progress.
        step: u64,
        /// Its phase.
        phase: DeterministicPhase,
    },
    /// `report_quality` was called twice in one step.
    #[error("report_quality called twice at step {step}: expected at most one report per step")]
    QualityAlreadyReported {
        /// The index of the step in progress.
        step: u64,
    },
    /// A quality report holds a NaN, an infinity or an out-of-range value.
    #[error("invalid quality report: `{field}` must be {expected}, got {actual}")]
    InvalidQuality {
        /// `cosine` or `relative_error`.
        field: &'static str,
        /// The allowed range, in words.
        expected: &'static str,
        /// The value it had.
        actual: f32,
    },
    /// A deserialised scheduler violates an invariant (a corrupted or hand-edited checkpoint).
    #[error("invalid scheduler state: {reason}")]
    InvalidState {
        /// What is inconsistent.
        reason: String,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
