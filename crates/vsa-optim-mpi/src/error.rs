//! The crate's error type.

/// What can go wrong in a gradient exchange. Every variant is returned identically on every
/// rank whenever the cause is visible to all of them (a handshake field, a rank's non-finite
/// gradient, a malformed payload), so that all ranks stop together instead of some of them
/// waiting in a collective that will never complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is invalid on its own (on this rank).
    #[error("invalid config `{parameter}`: expected {expected}, got {actual}")]
    InvalidConfig {
        /// The configuration field (or argument).
        parameter: &'static str,
        /// What is allowed.
        expected: String,
        /// The value received.
        actual: String,
    },
    /// The start-up handshake found ranks that disagree.
    #[error(
        "configuration mismatch between ranks: {field} is {expected} on rank 0 but {found} on rank {rank}"
    )]
    ConfigMismatch {
        /// Which field differs ("mode", "seed", "parameter layout", ...).
        field: &'static str,
        /// The first rank that differs from rank 0.
        rank: usize,
        /// Rank 0's value.
        expected: String,
        /// The differing rank's value.
        found: String,
    },
    /// A buffer or gradient set has the wrong length.
    #[error("{what}: expected length {expected}, got {actual}")]
    LengthMismatch {
        /// What was measured.
        what: String,
        /// Expected length.
        expected: usize,
        /// Actual length.
        actual: usize,
    },
    /// A rank's local gradient or loss held NaN or Inf; no rank applied the step.
    #[error(
        "rank {rank} had a non-finite gradient or loss at step {step}; the exchange was abandoned on every rank"
    )]
    NonFinite {
        /// The first rank with non-finite values.
        rank: usize,
        /// The step.
        step: u64,
    },
    /// Ranks called the exchange for different steps (they are out of lockstep).
    #[error("rank {rank} exchanged step {found} while rank 0 exchanged step {expected}")]
    StepMismatch {
        /// The first rank that differs from rank 0.
        rank: usize,
        /// Rank 0's step.
        expected: u64,
        /// The rank's step.
        found: u64,
    },
    /// A received payload could not be decoded.
    #[error("payload from rank {rank} is malformed: {reason}")]
    Decode {
        /// The sending rank.
        rank: usize,
        /// Why.
        reason: String,
    },
    /// An error from the ternary quantizers.
    #[error(transparent)]
    Quant(#[from] ternary_quant::Error),
    /// An error from a codec defined outside this crate (for example the VSA codec in
    /// `vsa-optim-rs`).
    #[error("codec error: {0}")]
    Codec(String),
    /// A message is too large for the transport. Found from the all-gathered message
    /// lengths before any payload moves ([`LengthsFirst`](crate::LengthsFirst)), so every
    /// rank returns the same error and none waits for a transfer that will not happen.
    #[error(
        "rank {rank}'s message of {bytes} bytes at offset {offset} of the gathered buffer exceeds the transport's limit of {limit} bytes (per message and per offset); no rank sent its payload"
    )]
    MessageTooLarge {
        /// The first rank whose message (or its offset) is over the limit.
        rank: usize,
        /// That rank's message length in bytes.
        bytes: u64,
        /// Where that message starts in the gathered buffer (the sum of the lengths of the
        /// ranks before it).
        offset: u64,
        /// The smallest limit that any rank's transport stated.
        limit: u64,
    },
    /// A [`Collective`](crate::Collective) returned an all-gather that does not add up (a
    /// bug in a user-implemented transport): the wrong number of parts, part lengths that
    /// do not sum to the bytes received, or this rank's own part changed.
    #[error("the collective returned a malformed all-gather: {reason}")]
    MalformedGather {
        /// What does not add up.
        reason: String,
    },
    /// The transport failed or is not available.
    #[error("transport error: {0}")]
    Transport(String),
}

/// Result alias.
pub type Result<T> = std::result::Result<T, Error>;

vsa_core::define_config_error!();

/// A grad-sketch error from building a codec, as [`Error::InvalidConfig`]: a config error
/// keeps its three fields; a parameter-list error is reported against `parameters`.
pub(crate) fn sketch_config_error(e: grad_sketch::Error) -> Error {
    match e {
        grad_sketch::Error::InvalidConfig {
            parameter,
            expected,
            actual,
        } => Error::InvalidConfig {
            parameter,
            expected,
            actual,
        },
        other => config_error("parameters", "a valid parameter list", other),
    }
}
