//! The crate's single error type.

/// Everything that can go wrong in `vsa-core`. Every fallible function validates its input
/// before it mutates anything, so an `Err` never leaves an output half written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Two operands (or an operand and an output buffer) have different lengths.
    #[error("dimension mismatch for {what}: expected {expected}, got {actual}")]
    DimensionMismatch {
        /// Which parameter had the wrong length.
        what: &'static str,
        /// The length it had to have.
        expected: usize,
        /// The length it had.
        actual: usize,
    },
    /// A dimension that must be positive was zero.
    #[error("{what} must be at least 1, got 0")]
    ZeroDimension {
        /// Which parameter was zero.
        what: &'static str,
    },
    /// An operation that needs at least one input got none.
    #[error("{what} needs at least one input, got none")]
    EmptyInput {
        /// Which parameter was empty.
        what: &'static str,
    },
    /// An item memory was built from an empty codebook.
    #[error("codebook is empty: an item memory needs at least one vector")]
    EmptyCodebook,
    /// A codebook holds vectors of different dimensions.
    #[error(
        "codebook is mixed: vector {index} has dimension {actual}, expected {expected} (the dimension of vector 0)"
    )]
    MixedCodebook {
        /// Position of the first offending vector.
        index: usize,
        /// Dimension of vector 0.
        expected: usize,
        /// Dimension of the offending vector.
        actual: usize,
    },
    /// Bit planes handed to `from_planes`/`from_words` are malformed.
    #[error("bad planes: {reason} (word {word})")]
    BadPlanes {
        /// What is wrong: overlapping `plus`/`minus` bits, or non-zero padding past `len`.
        reason: &'static str,
        /// The first word where it is wrong.
        word: usize,
    },
    /// An element value outside the allowed alphabet.
    #[error("invalid value {value} at index {index} for {what}: expected {expected}")]
    InvalidValue {
        /// Which parameter held the value.
        what: &'static str,
        /// Position of the first bad value.
        index: usize,
        /// The value found.
        value: i64,
        /// The allowed values, in words.
        expected: &'static str,
    },
    /// A counter would overflow.
    #[error("{what} would overflow: limit is {limit}")]
    Overflow {
        /// Which counter.
        what: &'static str,
        /// Its largest allowed value.
        limit: u64,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Returns `DimensionMismatch` unless `actual == expected`.
pub(crate) fn check_len(what: &'static str, expected: usize, actual: usize) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(Error::DimensionMismatch {
            what,
            expected,
            actual,
        })
    }
}

/// The dimension of a bundle's first input (`lens` lists the inputs' dimensions);
/// `EmptyInput` when there is none.
pub(crate) fn bundle_len(mut lens: impl Iterator<Item = usize>) -> Result<usize> {
    lens.next().ok_or(Error::EmptyInput { what: "vs" })
}

/// Checks a bundle's inputs against its output of dimension `out_len`: `EmptyInput` when
/// `lens` (the inputs' dimensions) is empty, `DimensionMismatch` for the first that differs.
pub(crate) fn check_bundle(
    lens: impl ExactSizeIterator<Item = usize>,
    out_len: usize,
) -> Result<()> {
    if lens.len() == 0 {
        return Err(Error::EmptyInput { what: "vs" });
    }
    lens.into_iter()
        .try_for_each(|len| check_len("vs[i]", out_len, len))
}

/// Returns `ZeroDimension` when `dim == 0`.
pub(crate) fn check_nonzero(what: &'static str, dim: usize) -> Result<()> {
    if dim == 0 {
        Err(Error::ZeroDimension { what })
    } else {
        Ok(())
    }
}
