//! The crate's error type.

/// Everything that can go wrong in this crate. Each variant names the parameter, the
/// expected and the actual value where there is one. A call that returns an error changes
/// no state.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is out of range.
    #[error("invalid config `{parameter}`: expected {expected}, got {actual}")]
    InvalidConfig {
        /// The configuration field.
        parameter: &'static str,
        /// What is allowed.
        expected: String,
        /// The value received.
        actual: String,
    },
    /// No parameters were declared.
    #[error("no parameters were declared")]
    NoParameters,
    /// A declared parameter has no elements.
    #[error("parameter `{name}` is empty (shape {shape:?})")]
    EmptyParameter {
        /// The parameter.
        name: String,
        /// Its declared shape.
        shape: Vec<usize>,
    },
    /// The same parameter name was declared twice.
    #[error("duplicate parameter `{name}`")]
    DuplicateParameter {
        /// The repeated name.
        name: String,
    },
    /// A name that was not declared.
    #[error("unknown parameter `{name}`")]
    UnknownParameter {
        /// The offending name.
        name: String,
    },
    /// A list of gradients (or output buffers) has the wrong number of parameters.
    #[error("expected {expected} parameters, got {actual}")]
    ParameterCount {
        /// Declared parameters.
        expected: usize,
        /// Parameters received.
        actual: usize,
    },
    /// A gradient or buffer has the wrong number of elements.
    #[error("parameter `{name}`: expected shape {expected:?}, got {actual:?}")]
    ShapeMismatch {
        /// The parameter.
        name: String,
        /// The declared shape.
        expected: Vec<usize>,
        /// The shape (or length) received.
        actual: Vec<usize>,
    },
    /// A gradient holds NaN or ±Inf (or its sum with the error-feedback residual overflows).
    #[error("parameter `{name}`: gradient holds a non-finite value (NaN or Inf)")]
    NonFiniteGradient {
        /// The parameter.
        name: String,
    },
    /// A compressed value was made by a compressor with a different configuration, seed or
    /// parameter set (its config fingerprint differs).
    #[error(
        "compressed gradients: config fingerprint {actual:#018x} does not match this compressor's {expected:#018x}"
    )]
    FingerprintMismatch {
        /// This compressor's fingerprint.
        expected: u64,
        /// The fingerprint stored in the compressed value.
        actual: u64,
    },
    /// A compressed value (or its byte serialisation) is malformed.
    #[error("compressed gradients are malformed: {reason}")]
    InvalidCompressed {
        /// What is wrong, naming the field, the expected and the actual value.
        reason: String,
    },
    /// A call was made in a state that does not allow it.
    #[error("invalid state: {0}")]
    InvalidState(String),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

vsa_core::define_config_error!();

/// An [`Error::InvalidCompressed`].
pub(crate) fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidCompressed {
        reason: reason.into(),
    }
}
