//! `vsa-core`: packed hypervectors for vector-symbolic architectures (VSA), the core of
//! `vsa-optim-rs`.
//!
//! Three models, each with bind, unbind, bundle, permute and similarity:
//!
//! | type | elements | storage | bind |
//! | --- | --- | --- | --- |
//! | [`BinaryVector`] | {−1, +1} | 1 bit (0 = +1, 1 = −1) | XOR |
//! | [`TernaryVector`] | {−1, 0, +1} | 2 bit planes | elementwise product |
//! | [`RealVector`] | `f32` (MAP) | 4 bytes | product with a ±1 key (sign-bit XOR) |
//!
//! plus a streaming [`BundleAccumulator`], a cleanup [`ItemMemory`], and a matrix-free
//! [`RandomProjection`] `ℝⁿ → ℝᴰ` with its transpose (used by the VSA gradient compressor).
//!
//! All randomness is counter-based ([`rng::chacha_stream`]): the vector for `(seed, key)` is
//! the same whatever else was generated, in whatever order, on however many threads. Every
//! operation on packed vectors works on whole `u64` words. Bad input (mismatched dimensions,
//! `D = 0`, an empty or mixed codebook, malformed planes) returns an [`Error`]; nothing panics.
//! The algebra and the projection mathematics are derived in `docs/vsa-core.md`.
//!
//! # Quick start
//!
//! ```
//! use vsa_core::{BinaryVector, ItemMemory, rng::key_from_name};
//!
//! # fn main() -> vsa_core::Result<()> {
//! let d = 10_000;
//! let seed = 42;
//! let role = BinaryVector::random(d, seed, key_from_name("colour"))?;
//! let red = BinaryVector::random(d, seed, key_from_name("red"))?;
//! let blue = BinaryVector::random(d, seed, key_from_name("blue"))?;
//!
//! // Bind is XOR: self-inverse.
//! let pair = role.bind(&red)?;
//! assert_eq!(pair.unbind(&role)?, red);
//!
//! // Random vectors are quasi-orthogonal: |cos| ~ 1/sqrt(D) = 0.01.
//! assert!(red.cosine(&blue)?.abs() < 0.05);
//!
//! // Bundle three vectors; each stays similar to the bundle (E cos = 1/2 for m = 3).
//! let other = BinaryVector::random(d, seed, 7)?;
//! let record = BinaryVector::bundle(&[&pair, &blue, &other])?;
//! assert!(record.cosine(&pair)? > 0.4);
//!
//! // Cleanup: unbinding the role from the record gives a noisy `red`.
//! let memory = ItemMemory::new(vec![red.clone(), blue.clone()])?;
//! let (index, _cos) = memory.nearest(&record.unbind(&role)?)?;
//! assert_eq!(index, 0);
//! # Ok(())
//! # }
//! ```
//!
//! # Sibling crates
//!
//! `ternary-quant` packs quantised gradients into [`TernaryVector`]'s layout; the facade
//! `vsa-optim-rs` re-exports this crate and builds the VSA gradient compressor on
//! [`RandomProjection`]; `grad-predict` and `phase-scheduler` do not depend on it.
#![deny(missing_docs)]

mod accumulator;
mod binary;
mod bits;
mod error;
mod item_memory;
mod projection;
mod real;
pub mod rng;
mod ternary;

pub use accumulator::BundleAccumulator;
pub use binary::BinaryVector;
pub use error::{Error, Result};
pub use item_memory::{Hypervector, ItemMemory};
pub use projection::RandomProjection;
pub use real::RealVector;
pub use ternary::TernaryVector;

/// Defines `pub(crate) fn config_error(parameter, expected, actual) -> Error` in a crate
/// whose `Error` has the workspace's one shape for configuration errors,
/// `InvalidConfig { parameter: &'static str, expected: String, actual: String }`, so that
/// every crate builds that error the same way from one definition.
///
/// ```
/// #[derive(Debug)]
/// enum Error {
///     InvalidConfig { parameter: &'static str, expected: String, actual: String },
/// }
/// vsa_core::define_config_error!();
///
/// let e = config_error("rows", "at least 1", 0);
/// assert!(matches!(e, Error::InvalidConfig { parameter: "rows", .. }));
/// ```
#[macro_export]
macro_rules! define_config_error {
    () => {
        /// An `Error::InvalidConfig` naming the parameter, the expected and the actual value.
        pub(crate) fn config_error(
            parameter: &'static str,
            expected: impl Into<String>,
            actual: impl std::fmt::Display,
        ) -> Error {
            Error::InvalidConfig {
                parameter,
                expected: expected.into(),
                actual: actual.to_string(),
            }
        }
    };
}
