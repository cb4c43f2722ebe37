//! The crate's error type.

/// Everything that can go wrong in `grad-predict`.
///
/// Every fallible method validates its whole input before it mutates anything, so an `Err`
/// always leaves the predictor exactly as it was.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A slice (gradient or output buffer) has the wrong number of elements.
    #[error("length mismatch for {what}: expected {expected} elements, got {actual}")]
    LengthMismatch {
        /// Which argument had the wrong length.
        what: &'static str,
        /// The predictor's element count.
        expected: usize,
        /// The length that was passed.
        actual: usize,
    },
    /// A gradient holds NaN or ±Inf.
    #[error("{what} must be finite, but element {index} is {value}")]
    NonFinite {
        /// Which argument held the value.
        what: &'static str,
        /// Position of the first non-finite element.
        index: usize,
        /// The offending value.
        value: f32,
    },
    /// A gradient element is finite but too large for the configured storage precision
    /// (|x| > 65504 for `F16`, |x| > 3.39e38 for `Bf16`).
    #[error(
        "{what} element {index} is {value}, outside ±{limit} representable by {precision} storage"
    )]
    OutOfRange {
        /// Which argument held the value.
        what: &'static str,
        /// Position of the first offending element.
        index: usize,
        /// The offending value.
        value: f32,
        /// The largest magnitude the storage holds.
        limit: f32,
        /// The storage precision's name.
        precision: &'static str,
    },
    /// `decay` is not in (0, 1].
    #[error("decay must be in (0, 1], got {value}")]
    InvalidDecay {
        /// The value passed.
        value: f32,
    },
    /// `HistoryMode::Window(0)`.
    #[error("history window must hold at least 1 gradient, got Window(0)")]
    ZeroWindow,
    /// Another configuration parameter is outside its range.
    #[error("{parameter} must be {expected}, got {actual}")]
    InvalidParameter {
        /// The field's name.
        parameter: &'static str,
        /// The accepted range, in words.
        expected: &'static str,
        /// The value passed.
        actual: f32,
    },
    /// A prediction (or a correction, which measures one) was asked for before any gradient
    /// was recorded.
    #[error("cannot predict at step {step}: no gradient has been recorded yet")]
    NoSamples {
        /// The step that was asked for.
        step: u64,
    },
    /// A step was not strictly greater than the last recorded step.
    #[error("step must be greater than the last recorded step {last}, got {step}")]
    NonIncreasingStep {
        /// The last recorded step.
        last: u64,
        /// The step that was passed.
        step: u64,
    },
    /// A prediction was asked for at a step before the last recorded one.
    #[error("cannot predict at step {step}: it precedes the last recorded step {last}")]
    StepInPast {
        /// The last recorded step.
        last: u64,
        /// The step that was asked for.
        step: u64,
    },
    /// An ndarray view is not contiguous in standard (row-major) order.
    #[error("{what} must be a contiguous array in standard layout")]
    NotContiguous {
        /// Which argument was not contiguous.
        what: &'static str,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
