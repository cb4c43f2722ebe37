//! Step types: what the scheduler tells the trainer about a step, and what the trainer
//! reports back.

use serde::{Deserialize, Serialize};

use crate::phase::{DeterministicPhase, FullReason};

#[cfg(doc)]
use crate::config::COSINE_SLACK;

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

/// What [`PhaseScheduler::begin_step`](crate::PhaseScheduler::begin_step) tells the trainer about the step it starts.
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
