//! `grad-sketch`: framework-free gradient compression for data-parallel training.
//!
//! The VSA sketch ([`SketchCompressor`]) is a matrix-free bind-and-bundle projection with
//! optional error feedback:
//!
//! ```text
//! gradient x (n floats) ──split into chunks of m──▶ bind chunk c with ±1 key s_c ──▶ bundle
//!     y = S x = Σ_c s_c ⊙ x_c        (m = ⌈ρ·n⌉ floats, the compressed payload)
//! payload y ──unbind with the same keys──▶ x̂ = Sᵀ diag(1/m_j) y   (the inverse projection)
//! ```
//!
//! `S` is [`vsa_core::RandomProjection`]: never stored (its ±1 keys are regenerated from the
//! seed and the parameter name), so the compressor's state is O(number of parameters) plus
//! the optional error-feedback residuals, whatever the tensor sizes.
//!
//! **Quality bound.** Any linear sketch of rank `m` followed by a linear decoder returns a
//! vector in an `m`-dimensional subspace `W`; for an isotropic `x ∈ ℝⁿ`,
//! `E cos(x, x̂) ≤ √(E‖P_W x‖²/‖x‖²) = √(m/n) ≈ √ρ` (0.32 at 10×). The default
//! [`Reconstruction::Projection`] is the orthogonal projection onto the row space of `S`,
//! so it reaches the bound: `cos ≈ √ρ` for *every* fixed `x` (the expectation is over the
//! random keys). See `docs/compression.md` for the derivation and measurements.
//!
//! **Parameters and `dimension`.** Parameters are processed in sorted-name order. Parameter
//! `p` with `n` elements gets `m = min(n, max(⌈ρ·n⌉, MIN_SLOTS))` slots ([`MIN_SLOTS`] = 8
//! keeps tiny tensors such as a 10-element bias from a 1-slot sketch), split into
//! `b = ⌈m / D⌉` bundles (hypervectors) of at most `D` = [`SketchConfig::dimension`] slots
//! each; bundle `i` sketches a contiguous share of about `n/b` elements with its own
//! projection keyed by `mix(mix(mix(seed, key_from_name(name)), step), i)`, where `step`
//! counts the compressor's calls and travels in the compressed value. So `D` caps the
//! hypervector length, not the compression: the payload is always about `ρ·n` values.
//!
//! **Fresh keys every call.** A fixed sketch would never transmit the part of the gradient
//! in its null space (with error feedback that part would pile up in the residual forever).
//! Drawing new keys each call makes the losses of successive calls independent.
//!
//! **Error feedback** ([`SketchConfig::error_feedback`], Karimireddy et al. 2019): the
//! compressor keeps a residual `e` per parameter (one `f32` per gradient element), compresses
//! `v = g + e` and sets `e ← v − decompress(compress(v))`. This needs a contractive decoder
//! (`‖v − v̂‖ ≤ ‖v‖`), which [`Reconstruction::Projection`] is (also with quantized bundles),
//! so the other modes are rejected with error feedback.
//!
//! The candle adapter is `vsa_optim_rs::compress` (it re-exports these types under the seed
//! crate's names: `VSAConfig`, `VSAGradientCompressor`); the MPI codec is
//! `vsa_optim_mpi::VsaCodec`. Sibling crates: `vsa-core` (the projection),
//! `ternary-quant`, `grad-predict`, `phase-scheduler`.
//!
//! # Quick start
//!
//! ```
//! use grad_sketch::{CompressedGradients, SketchCompressor, SketchConfig};
//!
//! let shapes = vec![("w".to_string(), vec![64, 128]), ("b".to_string(), vec![128])];
//! let config = SketchConfig::builder().dimension(8192).compression_ratio(0.1).seed(42).build();
//! let mut compressor = SketchCompressor::new(&shapes, config)?;
//!
//! // Gradients in sorted-name order: "b", then "w".
//! let w: Vec<f32> = (0..64 * 128).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
//! let grads = vec![vec![1.0f32; 128], w];
//! let compressed = compressor.compress(&grads)?;
//! assert!(compressed.stats.compression_ratio > 9.0);
//! let bytes = compressed.to_bytes()?;
//! assert_eq!(bytes.len(), compressed.stats.compressed_bytes);
//!
//! // Any holder of the config and shapes decodes the bytes.
//! let restored = compressor.decompress(&CompressedGradients::from_bytes(&bytes)?)?;
//! let (g, r) = (&grads[1], &restored[1]);
//! let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| f64::from(x * y)).sum::<f64>();
//! let cos = dot(g, r) / (dot(g, g) * dot(r, r)).sqrt();
//! assert!(cos > 0.25 && cos < 0.4, "cos = {cos}"); // ≈ √0.1
//! # Ok::<(), grad_sketch::Error>(())
//! ```
#![deny(missing_docs)]

mod bytes;
mod compressor;
mod config;
mod error;
pub mod methods;
mod params;
mod sketch;
mod state;
#[doc(hidden)]
pub mod test_support;
mod wire;

pub use compressor::SketchCompressor;
pub use config::{BundleQuantization, Reconstruction, SketchConfig, SketchConfigBuilder};
pub use error::{Error, Result};
pub use methods::{
    AdamConfig, AdamMoments, Compressor, CompressorConfig, CompressorState, FetchSgd,
    FetchSgdConfig, FetchSgdState, Message, Method, MomentumCompressor, MomentumConfig,
    MomentumState, PackedValues, Part, ValueCoding,
};
pub use params::{Param, Params};
pub use sketch::MIN_SLOTS;
pub use state::SketchState;
pub use wire::{CompressedGradients, CompressedParam, CompressionStats, HEADER_BYTES, Payload};
