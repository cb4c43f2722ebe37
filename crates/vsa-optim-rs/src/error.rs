//! The facade's error type.

/// Everything that can go wrong in the facade. Each variant names the parameter, the
/// expected and the actual value where there is one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A candle operation failed.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// The phase scheduler rejected a call or a config.
    #[error("phase scheduler: {0}")]
    Scheduler(#[from] phase_scheduler::Error),
    /// The gradient predictor rejected a call or a config.
    #[error("gradient predictor: {0}")]
    Predict(#[from] grad_predict::Error),
    /// A ternary quantization or accumulation call failed.
    #[error("ternary-quant: {0}")]
    Ternary(#[from] ternary_quant::Error),
    /// A gradient map names a parameter the object was not built for.
    #[error("unknown parameter `{name}`")]
    UnknownParameter {
        /// The offending name.
        name: String,
    },
    /// A name that is not one of the trainer's parameter groups.
    #[error("unknown parameter group `{name}`: the groups are {groups:?}")]
    UnknownGroup {
        /// The name asked for.
        name: String,
        /// The groups there are.
        groups: Vec<String>,
    },
    /// A gradient map lacks a parameter the object was built for.
    #[error("missing parameter `{name}`")]
    MissingParameter {
        /// The missing name.
        name: String,
    },
    /// The same parameter name was declared twice.
    #[error("duplicate parameter `{name}`")]
    DuplicateParameter {
        /// The repeated name.
        name: String,
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
    /// A tensor's shape differs from the declared one.
    #[error("parameter `{name}`: expected shape {expected:?}, got {actual:?}")]
    ShapeMismatch {
        /// The parameter.
        name: String,
        /// The declared shape.
        expected: Vec<usize>,
        /// The shape received.
        actual: Vec<usize>,
    },
    /// A tensor's dtype is not f32, f16 or bf16.
    #[error("parameter `{name}`: dtype {dtype:?} is not supported (expected f32, f16 or bf16)")]
    UnsupportedDtype {
        /// The parameter.
        name: String,
        /// The dtype received.
        dtype: candle_core::DType,
    },
    /// A tensor's device differs from the object's device.
    #[error("parameter `{name}`: expected device {expected}, got {actual}")]
    DeviceMismatch {
        /// The parameter.
        name: String,
        /// The expected device, formatted.
        expected: String,
        /// The device received, formatted.
        actual: String,
    },
    /// A gradient holds NaN or ±Inf.
    #[error("parameter `{name}`: gradient holds a non-finite value (NaN or Inf)")]
    NonFiniteGradient {
        /// The parameter.
        name: String,
    },
    /// A configuration field (or argument) is out of range.
    #[error("invalid config `{parameter}`: expected {expected}, got {actual}")]
    InvalidConfig {
        /// The configuration field (or argument).
        parameter: &'static str,
        /// What is allowed.
        expected: String,
        /// The value received.
        actual: String,
    },
    /// The `VarMap` passed to the trainer no longer holds the variables it was bound to (a
    /// variable was replaced, removed or added, or another `VarMap` was passed). The
    /// trainer resolves its variables once; build a new trainer for a new `VarMap`.
    #[error("the VarMap changed since the trainer resolved its variables (at `{name}`)")]
    VarMapChanged {
        /// The first parameter (in sorted order) that differs.
        name: String,
    },
    /// A call was made in a state that does not allow it.
    #[error("invalid state: {0}")]
    InvalidState(String),
    /// A checkpoint could not be read or does not match this object.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// File input or output failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// JSON (de)serialisation failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// The compressor core rejected a compressed value: `grad_sketch::Error::FingerprintMismatch`
    /// for a value made by a compressor with another configuration, seed or parameter set,
    /// `grad_sketch::Error::InvalidCompressed` for a malformed value or byte serialisation.
    /// (Its parameter and state errors come back as this enum's own variants.)
    #[error("compressor: {0}")]
    Sketch(grad_sketch::Error),
    /// A data-parallel gradient exchange failed (handshake mismatch, a rank's non-finite
    /// gradient, transport); feature `distributed`.
    #[cfg(feature = "distributed")]
    #[error("gradient exchange: {0}")]
    Exchange(#[from] vsa_optim_mpi::Error),
}

/// So that a candle training loop returning `candle_core::Result` can use `?` on the
/// facade's calls. Candle errors come back as they were; everything else is wrapped.
impl From<Error> for candle_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Candle(e) => e,
            other => candle_core::Error::wrap(other),
        }
    }
}

/// The facade's result type.
pub type Result<T> = std::result::Result<T, Error>;

vsa_core::define_config_error!();
