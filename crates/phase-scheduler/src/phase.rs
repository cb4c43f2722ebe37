//! The four phases.

use serde::{Deserialize, Serialize};

/// The phase of one training step.
///
/// `Warmup`, `Full` and `Correct` steps run a backward pass; `Predict` steps apply a predicted
/// gradient instead (and may skip the forward pass too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DeterministicPhase {
    /// The first `warmup_steps` steps: true gradients that fill the predictor's history.
    Warmup,
    /// True-gradient steps between predict blocks.
    Full,
    /// A step that applies a predicted gradient; no backward pass.
    Predict,
    /// A true-gradient step closing a run of predicted steps; the trainer measures the
    /// prediction's quality against the true gradient here.
    Correct,
}

impl DeterministicPhase {
    /// Whether a step of this phase runs a backward pass (every phase but `Predict`).
    #[must_use]
    pub const fn needs_backward(self) -> bool {
        !matches!(self, Self::Predict)
    }

    /// A one-letter code (`W`, `F`, `P`, `C`), handy for printing schedules.
    #[must_use]
    pub const fn letter(self) -> char {
        match self {
            Self::Warmup => 'W',
            Self::Full => 'F',
            Self::Predict => 'P',
            Self::Correct => 'C',
        }
    }
}

impl std::fmt::Display for DeterministicPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Warmup => "Warmup",
            Self::Full => "Full",
            Self::Predict => "Predict",
            Self::Correct => "Correct",
        })
    }
}

/// Why a `Full` phase began: the trainer may, for example, reset its predictor's history after
/// a non-finite loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FullReason {
    /// The regular schedule: after warmup, or after a completed predict block.
    Scheduled,
    /// A non-finite loss was reported.
    NonFiniteLoss,
    /// The loss rose above its smoothed value by more than `loss_increase_threshold`.
    LossSpike,
    /// A Correct step measured bad prediction quality.
    BadQuality,
    /// The scheduler is backed off to Full-only training until its next probe.
    Backoff,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_predict_skips_backward() {
        assert!(DeterministicPhase::Warmup.needs_backward());
        assert!(DeterministicPhase::Full.needs_backward());
        assert!(DeterministicPhase::Correct.needs_backward());
        assert!(!DeterministicPhase::Predict.needs_backward());
        assert_eq!(DeterministicPhase::Correct.to_string(), "Correct");
        assert_eq!(DeterministicPhase::Predict.letter(), 'P');
    }
}
