//! The crate's error type.

/// Everything that can go wrong in `ternary-quant`.
///
/// Every fallible function validates its whole input before it writes anything, so an
/// `Err` always leaves outputs and accumulator state exactly as they were.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A slice or buffer has the wrong length.
    #[error("length mismatch for `{what}`: expected {expected}, got {actual}")]
    LengthMismatch {
        /// Which argument.
        what: &'static str,
        /// Required length.
        expected: usize,
        /// Length passed.
        actual: usize,
    },
    /// An input value is NaN or infinite.
    #[error("non-finite value in `{what}` at index {index}: expected a finite f32, got {value}")]
    NonFinite {
        /// Which argument.
        what: &'static str,
        /// Index of the first offending element.
        index: usize,
        /// The offending value.
        value: f32,
    },
    /// A configuration or scalar parameter is out of range.
    #[error("invalid parameter `{param}`: expected {expected}, got {actual}")]
    InvalidParameter {
        /// Parameter name.
        param: &'static str,
        /// What was required.
        expected: &'static str,
        /// What was passed, formatted.
        actual: String,
    },
    /// A stochastic quantizer was given a scale smaller than `max |x|`.
    #[error("scale too small: expected scale >= max|x| = {max_abs}, got {scale}")]
    ScaleTooSmall {
        /// Scale passed.
        scale: f32,
        /// Largest magnitude in the input.
        max_abs: f32,
    },
    /// A trit slice holds a value outside {-1, 0, 1}.
    #[error("invalid trit at index {index}: expected -1, 0 or 1, got {value}")]
    InvalidTrit {
        /// Index of the first offending element.
        index: usize,
        /// The offending value.
        value: i8,
    },
    /// Packed data is not a valid encoding (overlapping planes, byte > 242, non-zero padding).
    #[error("invalid packed data in `{what}` at {index}: {detail}")]
    InvalidPacked {
        /// Which buffer.
        what: &'static str,
        /// Word or byte index.
        index: usize,
        /// What is wrong.
        detail: &'static str,
    },
    /// `accumulate` was called after `accumulation_steps` micro-batches without `reset`.
    #[error(
        "accumulator full: expected at most accumulation_steps = {accumulation_steps} micro-batches before reset, got one more"
    )]
    AccumulationFull {
        /// The configured number of steps.
        accumulation_steps: usize,
    },
    /// An ndarray input has the wrong shape.
    #[error("shape mismatch for `{what}`: expected {expected:?}, got {actual:?}")]
    ShapeMismatch {
        /// Which argument.
        what: &'static str,
        /// Required shape.
        expected: Vec<usize>,
        /// Shape passed.
        actual: Vec<usize>,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn check_len(what: &'static str, expected: usize, actual: usize) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(Error::LengthMismatch {
            what,
            expected,
            actual,
        })
    }
}
