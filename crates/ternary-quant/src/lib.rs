//! `ternary-quant`: unbiased ternary quantization of gradients, lossless 2-bit and 1.6-bit
//! trit packing, and a gradient accumulator whose held state really is packed.
//!
//! * Quantizers ([`quantize_absmean_into`], [`quantize_threshold_into`],
//!   [`quantize_stochastic_into`]) turn `f32` slices into a scale and trits in {-1, 0, 1}. The
//!   stochastic one is unbiased, `E[s·q] = x`, with randomness keyed by an [`RngKey`]
//!   `(seed, step, tensor id)` and the element index, so results do not depend on chunking
//!   or threads.
//! * Packings ([`pack`]): two `u64` bitplanes, the layout of `vsa_core::TernaryVector`, and
//!   base 3 with 5 trits per byte ([`TernaryPacking`] names them); [`levels`] packs 1, 2, 3
//!   or 5 balanced trits per element into the same base-3 trit stream. Fused kernels
//!   ([`fused`]) quantize straight into either packing and dequantize straight out of it,
//!   into caller buffers, without allocating; [`interop`] hands bitplanes to
//!   `vsa_core::TernaryVector` without copying.
//! * [`PackedAccumulator`] averages micro-batch gradients holding only packed trits
//!   (1, 2, 3 or 5 per element) and one scale per block: by default one trit and a one-byte
//!   logarithmic scale per 25 elements, 1.92 bits/element (measured by
//!   [`PackedAccumulator::memory_bytes`]); its mean is unbiased.
//!
//! The mathematics, the scheme choice and measured numbers are in `docs/ternary.md`.
//!
//! # Quick start
//!
//! ```
//! use ternary_quant::{AccumulatorConfig, PackedAccumulator, RngKey};
//!
//! // Quantize stochastically into 2-bit planes and back.
//! let x = [0.5f32, -1.0, 0.25, 0.0, 2.0];
//! let (mut plus, mut minus) = ([0u64; 1], [0u64; 1]);
//! let s = ternary_quant::fused::quantize_stochastic_planes_into(&x, RngKey::new(42, 0, 7), &mut plus, &mut minus)?;
//! assert_eq!(s, 2.0); // scale = max|x|
//! let mut back = [0f32; 5];
//! ternary_quant::fused::dequantize_planes_into(&plus, &minus, s, &mut back)?;
//! assert_eq!(back[4], 2.0); // |x| = s is kept with probability 1
//! assert_eq!(back[3], 0.0);
//!
//! // Accumulate 4 micro-batches in under 2 bits per element.
//! let n = 1 << 16;
//! let cfg = AccumulatorConfig { accumulation_steps: 4, seed: 42, tensor_id: 7, ..Default::default() };
//! let mut acc = PackedAccumulator::new(n, cfg)?;
//! for k in 0..4 {
//!     let g: Vec<f32> = (0..n).map(|i| ((i * 7 + k) % 13) as f32 - 6.0).collect();
//!     acc.accumulate(&g)?;
//! }
//! assert!(acc.ready());
//! let mut mean = vec![0f32; n];
//! acc.mean_into(&mut mean)?;
//! assert!(acc.memory_bytes() * 8 < 2 * n);
//!
//! // Two trits per element (9 levels): 3.2 bits of levels plus the same scales.
//! let two = AccumulatorConfig { trits_per_element: 2, ..cfg };
//! assert!(PackedAccumulator::new(n, two)?.bits_per_element() < 3.6);
//! // Unsupported trit counts are typed errors.
//! let bad = AccumulatorConfig { trits_per_element: 4, ..cfg };
//! assert!(PackedAccumulator::new(n, bad).is_err());
//! # Ok::<(), ternary_quant::Error>(())
//! ```
//!
//! Sibling crates: `vsa-core` (hypervectors; its ternary vectors share the bitplane layout),
//! `grad-predict`, `phase-scheduler`, and the facade `vsa-optim-rs`, whose
//! `TernaryGradientAccumulator` wraps [`PackedAccumulator`] for candle tensors.
#![deny(missing_docs)]

mod acc_step;
mod accumulator;
#[cfg(feature = "ndarray")]
mod array;
mod dither;
mod error;
pub mod fused;
pub mod interop;
pub mod levels;
pub mod pack;
mod quant;
mod rng;
mod scales;
mod simd;

pub use accumulator::{
    AccumulatorConfig, AccumulatorState, DEFAULT_COMPACT_BLOCK, DEFAULT_SCALE_BLOCK,
    PackedAccumulator, ScaleFormat, ScaleGranularity,
};
#[cfg(feature = "ndarray")]
pub use array::{quantize_absmean_array, quantize_stochastic_array};
pub use dither::Rounding;
pub use error::{Error, Result};
pub use fused::{
    dequantize_base3_into, dequantize_planes_into, quantize_absmean_base3_into,
    quantize_absmean_planes_into, quantize_stochastic_base3_into, quantize_stochastic_planes_into,
};
pub use levels::{
    SUPPORTED_TRITS, TernaryPacking, levels_bytes, max_level, pack_levels, unpack_levels,
};
pub use pack::{
    base3_bytes, base3_to_planes, pack_base3, pack_planes, plane_words, planes_to_base3,
    unpack_base3, unpack_planes,
};
pub use quant::{
    dequantize_into, max_abs, mean_abs, quantize_absmean_into, quantize_stochastic_into,
    quantize_threshold_into,
};
pub use rng::RngKey;
