//! VSA gradient compression: matrix-free bind-and-bundle sketches with error feedback.
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
//! keeps tiny tensors such as a 10-element bias from a 1-slot sketch), split into `b = ⌈m / D⌉` bundles
//! (hypervectors) of at most `D` = [`VSAConfig::dimension`] slots each; bundle `i` sketches a
//! contiguous share of about `n/b` elements with its own projection keyed by
//! `mix(mix(mix(seed, key_from_name(name)), step), i)`, where `step` counts the compressor's
//! calls and travels in the compressed value. So `D` caps the hypervector length, not the
//! compression: the payload is always about `ρ·n` values.
//!
//! **Fresh keys every call.** A fixed sketch would never transmit the part of the gradient
//! in its null space (with error feedback that part would pile up in the residual forever).
//! Drawing new keys each call makes the losses of successive calls independent.
//!
//! **Error feedback** ([`VSAConfig::error_feedback`], Karimireddy et al. 2019): the
//! compressor keeps a residual `e` per parameter (one `f32` per gradient element), compresses
//! `v = g + e` and sets `e ← v − decompress(compress(v))`. This needs a contractive decoder
//! (`‖v − v̂‖ ≤ ‖v‖`), which [`Reconstruction::Projection`] is (also with quantized bundles),
//! so the other modes are rejected with error feedback.
//!
//! # Quick start
//!
//! ```
//! use std::collections::HashMap;
//! use candle_core::{Device, Tensor};
//! use vsa_optim_rs::compress::{VSAConfig, VSAGradientCompressor};
//!
//! # fn main() -> vsa_optim_rs::Result<()> {
//! let device = Device::Cpu;
//! let param_shapes = vec![("w".to_string(), vec![64, 128]), ("b".to_string(), vec![128])];
//! let config = VSAConfig::builder().dimension(8192).compression_ratio(0.1).seed(42).build();
//! let mut compressor = VSAGradientCompressor::new(&param_shapes, config, &device)?;
//!
//! let mut gradients = HashMap::new();
//! let w: Vec<f32> = (0..64 * 128).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
//! gradients.insert("w".to_string(), Tensor::from_vec(w, (64, 128), &device)?);
//! gradients.insert("b".to_string(), Tensor::ones(128, candle_core::DType::F32, &device)?);
//!
//! let compressed = compressor.compress(&gradients)?;
//! assert!(compressed.stats.compression_ratio > 9.0);
//! let bytes = compressed.to_bytes();
//! assert_eq!(bytes.len(), compressed.stats.compressed_bytes);
//!
//! let restored = compressor.decompress(&compressed)?;
//! assert_eq!(restored["w"].dims(), &[64, 128]);
//! // Projection reconstruction: cosine ≈ √0.1 ≈ 0.32 on an arbitrary gradient.
//! let (g, r) = (gradients["w"].flatten_all()?, restored["w"].flatten_all()?);
//! let cos = (&g * &r)?.sum_all()?.to_scalar::<f32>()?
//!     / (g.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?
//!         * r.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?);
//! assert!(cos > 0.25 && cos < 0.4, "cos = {cos}");
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};
use vsa_core::RandomProjection;
use vsa_core::rng::{key_from_name, mix, splitmix64};

use crate::error::{Error, Result};
use crate::params::{ParamSet, ParamSpec};

/// How a bundle is turned back into a gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Reconstruction {
    /// `x̂ = Sᵀ diag(1/m_j) S x`, the exact orthogonal projection onto the row space of `S`.
    /// The minimum-norm estimate consistent with the sketch: `cos ≈ √ρ`, norm ratio
    /// `‖x̂‖/‖x‖ = cos ≈ √ρ`, and `‖x − x̂‖² = ‖x‖² − ‖x̂‖²` (a contraction, as error feedback
    /// needs). The default.
    #[default]
    Projection,
    /// `x̂ = Sᵀ S x`: unbiased over the random keys (`E x̂ = x`), but its norm ratio is
    /// about `1/√ρ` (the variance of an unbiased rank-`m` estimate). Same cosine.
    Unbiased,
    /// The projection rescaled to the true norm, stored as one extra `f32` per parameter:
    /// norm ratio exactly 1, cosine as [`Reconstruction::Projection`]. Not contractive, so
    /// it cannot be combined with error feedback.
    NormMatched,
}

impl Reconstruction {
    fn code(self) -> u8 {
        match self {
            Self::Projection => 0,
            Self::Unbiased => 1,
            Self::NormMatched => 2,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        [Self::Projection, Self::Unbiased, Self::NormMatched]
            .into_iter()
            .find(|m| m.code() == c)
    }
}

/// How the bundle values are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum BundleQuantization {
    /// Real-valued bundles: 4 bytes per slot. The default.
    #[default]
    F32,
    /// One sign bit per slot plus one `f32` scale per bundle (the weighted-L2-optimal
    /// `α = Σ_j w_j|y_j| / Σ_j w_j`, `w_j = 1/m_j`). 32× fewer payload bytes at the same
    /// ratio; cosine multiplied by `cos(y, α·sign y)` (≈ 0.80 for Gaussian slots).
    Sign,
    /// Trits `{−α, 0, +α}` (2 bits per slot: non-zero and negative masks) plus one `f32`
    /// scale per bundle: threshold `0.7 · mean|y|` (ternary weight networks), then the
    /// weighted-L2-optimal `α` on the support. Cosine multiplied by ≈ 0.9 for Gaussian slots.
    Ternary,
}

impl BundleQuantization {
    fn code(self) -> u8 {
        match self {
            Self::F32 => 0,
            Self::Sign => 1,
            Self::Ternary => 2,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        [Self::F32, Self::Sign, Self::Ternary]
            .into_iter()
            .find(|m| m.code() == c)
    }
}

/// Compressor configuration: plain public fields with [`Default`], or the builder.
/// Validation happens in [`VSAGradientCompressor::new`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VSAConfig {
    /// `D`: the maximum number of slots of one bundle (hypervector). Tensors with more than
    /// `D` slots are sketched as several bundles. Must be ≥ 1. Default 8192.
    pub dimension: usize,
    /// `ρ`: slots per gradient element, in `(0, 1]`. A parameter with `n` elements gets
    /// `min(n, max(⌈ρ·n⌉, MIN_SLOTS))` slots; with f32 bundles the bytes shrink by about `1/ρ`. Default 0.1.
    pub compression_ratio: f64,
    /// Seed of every binding key. Default 0.
    pub seed: u64,
    /// How bundles are decoded. Default [`Reconstruction::Projection`].
    pub reconstruction: Reconstruction,
    /// How bundle values are stored. Default [`BundleQuantization::F32`].
    pub quantization: BundleQuantization,
    /// Keep a per-parameter residual and add it to the next gradient. Default false.
    /// Costs one `f32` per gradient element.
    pub error_feedback: bool,
}

impl Default for VSAConfig {
    fn default() -> Self {
        Self {
            dimension: 8192,
            compression_ratio: 0.1,
            seed: 0,
            reconstruction: Reconstruction::Projection,
            quantization: BundleQuantization::F32,
            error_feedback: false,
        }
    }
}

impl VSAConfig {
    /// A builder starting from [`VSAConfig::default`].
    pub fn builder() -> VSAConfigBuilder {
        VSAConfigBuilder {
            config: Self::default(),
        }
    }

    fn validate(&self) -> Result<()> {
        if self.dimension == 0 {
            return Err(Error::InvalidConfig {
                field: "dimension",
                reason: "must be at least 1, got 0".into(),
            });
        }
        if u32::try_from(self.dimension).is_err() {
            return Err(Error::InvalidConfig {
                field: "dimension",
                reason: format!("must be at most {}, got {}", u32::MAX, self.dimension),
            });
        }
        let r = self.compression_ratio;
        if !(r.is_finite() && r > 0.0 && r <= 1.0) {
            return Err(Error::InvalidConfig {
                field: "compression_ratio",
                reason: format!("must lie in (0, 1], got {r}"),
            });
        }
        if self.error_feedback && self.reconstruction != Reconstruction::Projection {
            return Err(Error::InvalidConfig {
                field: "error_feedback",
                reason: format!(
                    "needs the contractive Reconstruction::Projection, got {:?} \
                     (its residual grows: ‖x − x̂‖ > ‖x‖)",
                    self.reconstruction
                ),
            });
        }
        Ok(())
    }
}

/// Builder for [`VSAConfig`]; [`build`](Self::build) returns the config itself.
#[derive(Debug, Clone, Copy)]
pub struct VSAConfigBuilder {
    config: VSAConfig,
}

impl VSAConfigBuilder {
    /// Sets [`VSAConfig::dimension`].
    pub fn dimension(mut self, dimension: usize) -> Self {
        self.config.dimension = dimension;
        self
    }

    /// Sets [`VSAConfig::compression_ratio`].
    pub fn compression_ratio(mut self, ratio: f64) -> Self {
        self.config.compression_ratio = ratio;
        self
    }

    /// Sets [`VSAConfig::seed`].
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
    }

    /// Sets [`VSAConfig::reconstruction`].
    pub fn reconstruction(mut self, reconstruction: Reconstruction) -> Self {
        self.config.reconstruction = reconstruction;
        self
    }

    /// Sets [`VSAConfig::quantization`].
    pub fn quantization(mut self, quantization: BundleQuantization) -> Self {
        self.config.quantization = quantization;
        self
    }

    /// Sets [`VSAConfig::error_feedback`].
    pub fn error_feedback(mut self, on: bool) -> Self {
        self.config.error_feedback = on;
        self
    }

    /// The config (not validated: [`VSAGradientCompressor::new`] validates).
    pub fn build(self) -> VSAConfig {
        self.config
    }
}

/// Sizes of one compressed value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CompressionStats {
    /// Bytes of the gradients as f32 (`4 ×` elements).
    pub original_bytes: usize,
    /// Bytes needed to decompress, apart from the config, seed and parameter shapes: exactly
    /// the length of [`CompressedGradients::to_bytes`] (header, per-parameter sizes, scales,
    /// norms and bundle values).
    pub compressed_bytes: usize,
    /// `original_bytes / compressed_bytes`.
    pub compression_ratio: f64,
}

impl CompressionStats {
    fn new(elements: u64, compressed_bytes: usize) -> Self {
        let original_bytes = 4 * elements as usize;
        Self {
            original_bytes,
            compressed_bytes,
            compression_ratio: original_bytes as f64 / compressed_bytes as f64,
        }
    }
}

/// The stored values of one parameter's bundles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Payload {
    /// `m` real slot values.
    F32(Vec<f32>),
    /// One scale per bundle; bit `j` (of word `j / 64`) set means slot `j` is `−scale`.
    Sign {
        /// Per-bundle scales.
        scales: Vec<f32>,
        /// Negative-sign bits, `⌈m/64⌉` words.
        negative: Vec<u64>,
    },
    /// One scale per bundle; slot `j` is `0` unless its `nonzero` bit is set, then `±scale`.
    Ternary {
        /// Per-bundle scales.
        scales: Vec<f32>,
        /// Non-zero bits, `⌈m/64⌉` words.
        nonzero: Vec<u64>,
        /// Negative bits (a subset of `nonzero`), `⌈m/64⌉` words.
        negative: Vec<u64>,
    },
}

/// One parameter's compressed gradient.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompressedParam {
    /// `m`, the number of slots.
    pub slots: usize,
    /// `b`, the number of bundles (`⌈m / D⌉`).
    pub bundles: usize,
    /// `‖x‖` for [`Reconstruction::NormMatched`], else `None`.
    pub norm: Option<f32>,
    /// The bundle values.
    pub payload: Payload,
}

/// A self-contained compressed gradient set, in sorted parameter-name order. Serialise with
/// [`to_bytes`](Self::to_bytes) (documented little-endian layout) or serde.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompressedGradients {
    /// Hash of the compressor's dimension, ratio, seed, reconstruction, quantization and
    /// parameter names and shapes; checked by [`VSAGradientCompressor::decompress`].
    pub fingerprint: u64,
    /// The reconstruction mode it was made for.
    pub reconstruction: Reconstruction,
    /// The bundle quantization.
    pub quantization: BundleQuantization,
    /// The compressor's call counter when this value was made (0 for the first call); the
    /// binding keys of every call are fresh, derived from the seed, the name and this step.
    pub step: u64,
    /// Total gradient elements.
    pub elements: u64,
    /// Per parameter, sorted by name.
    pub params: Vec<CompressedParam>,
    /// Sizes.
    pub stats: CompressionStats,
}

/// The fewest slots a parameter gets (all of them when it has fewer elements): a sketch of
/// `m` slots has `E cos ≈ √(m/n)·(1 − O(1/m))`, and at `m = 1` the Jensen gap is 20%
/// (`E|N(0,1)| = √(2/π)`), which would miss the `0.9·√ρ` goal on a 10-element bias.
pub const MIN_SLOTS: usize = 8;

const MAGIC: &[u8; 4] = b"VSAC";
const FORMAT_VERSION: u8 = 1;
/// Header bytes: magic 4, version 1, reconstruction 1, quantization 1, reserved 1,
/// fingerprint 8, step 8, elements 8, parameter count 4.
const HEADER_BYTES: usize = 36;

fn bit_words(m: usize) -> usize {
    m.div_ceil(64)
}

fn param_bytes(slots: usize, bundles: usize, norm: bool, q: BundleQuantization) -> usize {
    let bits = slots.div_ceil(8);
    8 + if norm { 4 } else { 0 }
        + match q {
            BundleQuantization::F32 => 4 * slots,
            BundleQuantization::Sign => 4 * bundles + bits,
            BundleQuantization::Ternary => 4 * bundles + 2 * bits,
        }
}

fn invalid(reason: String) -> Error {
    Error::InvalidCompressed { reason }
}

fn put_bits(out: &mut Vec<u8>, words: &[u64], m: usize) {
    let bytes = m.div_ceil(8);
    out.extend(words.iter().flat_map(|w| w.to_le_bytes()).take(bytes));
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| {
            invalid(format!(
                "{what}: needs {n} bytes at offset {}, only {} left",
                self.pos,
                self.bytes.len() - self.pos
            ))
        })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn f32s(&mut self, n: usize, what: &str) -> Result<Vec<f32>> {
        let len = n
            .checked_mul(4)
            .ok_or_else(|| invalid(format!("{what}: length overflow")))?;
        let b = self.take(len, what)?;
        Ok(b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    fn bits(&mut self, m: usize, what: &str) -> Result<Vec<u64>> {
        let b = self.take(m.div_ceil(8), what)?;
        let mut words = vec![0u64; bit_words(m)];
        for (i, &byte) in b.iter().enumerate() {
            words[i / 8] |= u64::from(byte) << (8 * (i % 8));
        }
        if !m.is_multiple_of(64) && words.last().is_some_and(|w| w >> (m % 64) != 0) {
            return Err(invalid(format!(
                "{what}: padding bits after slot {m} are set"
            )));
        }
        Ok(words)
    }
}

impl CompressedGradients {
    /// The little-endian byte layout (its length is `stats.compressed_bytes`):
    ///
    /// | bytes | field |
    /// |---|---|
    /// | 4 | magic `b"VSAC"` |
    /// | 1 | format version (1) |
    /// | 1 | reconstruction (0 projection, 1 unbiased, 2 norm-matched) |
    /// | 1 | quantization (0 f32, 1 sign, 2 ternary) |
    /// | 1 | reserved, 0 |
    /// | 8 | config fingerprint, u64 |
    /// | 8 | step (call counter), u64 |
    /// | 8 | total elements, u64 |
    /// | 4 | parameter count, u32 |
    ///
    /// then per parameter in sorted-name order: slots `m` (u32), bundles `b` (u32), the norm
    /// (f32, norm-matched only), then the payload: f32 → `m` f32 values; sign → `b` f32
    /// scales and `⌈m/8⌉` bytes of negative bits (slot `j` is bit `j mod 8` of byte `j/8`);
    /// ternary → `b` scales, `⌈m/8⌉` bytes of non-zero bits, `⌈m/8⌉` bytes of negative bits.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.byte_len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[
            FORMAT_VERSION,
            self.reconstruction.code(),
            self.quantization.code(),
            0,
        ]);
        out.extend_from_slice(&self.fingerprint.to_le_bytes());
        out.extend_from_slice(&self.step.to_le_bytes());
        out.extend_from_slice(&self.elements.to_le_bytes());
        out.extend_from_slice(&(self.params.len() as u32).to_le_bytes());
        for p in &self.params {
            out.extend_from_slice(&(p.slots as u32).to_le_bytes());
            out.extend_from_slice(&(p.bundles as u32).to_le_bytes());
            if let Some(n) = p.norm {
                out.extend_from_slice(&n.to_le_bytes());
            }
            let f32s = |out: &mut Vec<u8>, v: &[f32]| {
                out.extend(v.iter().flat_map(|x| x.to_le_bytes()));
            };
            match &p.payload {
                Payload::F32(v) => f32s(&mut out, v),
                Payload::Sign { scales, negative } => {
                    f32s(&mut out, scales);
                    put_bits(&mut out, negative, p.slots);
                }
                Payload::Ternary {
                    scales,
                    nonzero,
                    negative,
                } => {
                    f32s(&mut out, scales);
                    put_bits(&mut out, nonzero, p.slots);
                    put_bits(&mut out, negative, p.slots);
                }
            }
        }
        out
    }

    fn byte_len(&self) -> usize {
        HEADER_BYTES
            + self
                .params
                .iter()
                .map(|p| param_bytes(p.slots, p.bundles, p.norm.is_some(), self.quantization))
                .sum::<usize>()
    }

    /// Parses [`to_bytes`](Self::to_bytes)' layout, checking the magic, version, mode codes,
    /// lengths (no trailing bytes), padding bits, and that every value is finite. Whether it
    /// matches a compressor is checked by [`VSAGradientCompressor::decompress`].
    ///
    /// # Errors
    /// [`Error::InvalidCompressed`] naming the field and offset.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader { bytes, pos: 0 };
        let head = r.take(8, "header")?;
        if &head[..4] != MAGIC {
            return Err(invalid(format!(
                "magic: expected {MAGIC:?}, got {:?}",
                &head[..4]
            )));
        }
        if head[4] != FORMAT_VERSION {
            return Err(invalid(format!(
                "format version: expected {FORMAT_VERSION}, got {}",
                head[4]
            )));
        }
        let reconstruction = Reconstruction::from_code(head[5])
            .ok_or_else(|| invalid(format!("reconstruction code {} is unknown", head[5])))?;
        let quantization = BundleQuantization::from_code(head[6])
            .ok_or_else(|| invalid(format!("quantization code {} is unknown", head[6])))?;
        if head[7] != 0 {
            return Err(invalid(format!(
                "reserved byte: expected 0, got {}",
                head[7]
            )));
        }
        let fingerprint = r.u64("fingerprint")?;
        let step = r.u64("step")?;
        let elements = r.u64("elements")?;
        let count = r.u32("parameter count")? as usize;
        let mut params = Vec::with_capacity(count.min(bytes.len() / 8));
        for i in 0..count {
            let slots = r.u32(&format!("parameter {i} slots"))? as usize;
            let bundles = r.u32(&format!("parameter {i} bundles"))? as usize;
            if slots == 0 || bundles == 0 || bundles > slots {
                return Err(invalid(format!(
                    "parameter {i}: needs 1 ≤ bundles ≤ slots, got {bundles} bundles, {slots} slots"
                )));
            }
            let norm = match reconstruction {
                Reconstruction::NormMatched => Some(r.f32s(1, &format!("parameter {i} norm"))?[0]),
                _ => None,
            };
            let payload = match quantization {
                BundleQuantization::F32 => {
                    Payload::F32(r.f32s(slots, &format!("parameter {i} values"))?)
                }
                BundleQuantization::Sign => Payload::Sign {
                    scales: r.f32s(bundles, &format!("parameter {i} scales"))?,
                    negative: r.bits(slots, &format!("parameter {i} sign bits"))?,
                },
                BundleQuantization::Ternary => Payload::Ternary {
                    scales: r.f32s(bundles, &format!("parameter {i} scales"))?,
                    nonzero: r.bits(slots, &format!("parameter {i} non-zero bits"))?,
                    negative: r.bits(slots, &format!("parameter {i} negative bits"))?,
                },
            };
            let p = CompressedParam {
                slots,
                bundles,
                norm,
                payload,
            };
            check_param_values(&p, &format!("parameter {i}"))?;
            params.push(p);
        }
        if r.pos != bytes.len() {
            return Err(invalid(format!(
                "{} trailing bytes after the last parameter",
                bytes.len() - r.pos
            )));
        }
        Ok(Self {
            fingerprint,
            step,
            reconstruction,
            quantization,
            elements,
            params,
            stats: CompressionStats::new(elements, bytes.len()),
        })
    }
}

/// Checks a parameter's internal consistency: vector lengths against `slots`/`bundles`,
/// finite values, non-negative scales, ternary negative ⊆ non-zero.
fn check_param_values(p: &CompressedParam, who: &str) -> Result<()> {
    let words = bit_words(p.slots);
    let check_len = |what: &str, expected: usize, actual: usize| {
        if expected == actual {
            Ok(())
        } else {
            Err(invalid(format!(
                "{who} {what}: expected length {expected}, got {actual}"
            )))
        }
    };
    let check_scales = |scales: &[f32]| -> Result<()> {
        check_len("scales", p.bundles, scales.len())?;
        if scales.iter().all(|s| s.is_finite() && *s >= 0.0) {
            Ok(())
        } else {
            Err(invalid(format!("{who}: a scale is negative or not finite")))
        }
    };
    if let Some(n) = p.norm
        && !(n.is_finite() && n >= 0.0)
    {
        return Err(invalid(format!(
            "{who}: norm {n} is negative or not finite"
        )));
    }
    match &p.payload {
        Payload::F32(v) => {
            check_len("values", p.slots, v.len())?;
            if !v.iter().all(|x| x.is_finite()) {
                return Err(invalid(format!("{who}: a value is not finite")));
            }
        }
        Payload::Sign { scales, negative } => {
            check_scales(scales)?;
            check_len("sign bits", words, negative.len())?;
        }
        Payload::Ternary {
            scales,
            nonzero,
            negative,
        } => {
            check_scales(scales)?;
            check_len("non-zero bits", words, nonzero.len())?;
            check_len("negative bits", words, negative.len())?;
            if nonzero.iter().zip(negative).any(|(z, n)| n & !z != 0) {
                return Err(invalid(format!(
                    "{who}: a negative bit is set on a zero slot"
                )));
            }
        }
    }
    Ok(())
}

/// How one parameter is cut into bundles.
#[derive(Debug, Clone, Copy)]
struct Layout {
    numel: usize,
    slots: usize,
    bundles: usize,
    key: u64,
}

impl Layout {
    /// Element range, slot range and projection of bundle `i` at call `step` (balanced
    /// integer splits; keys `mix(mix(param_key, step), i)`).
    fn bundle(
        &self,
        i: usize,
        step: u64,
    ) -> (
        std::ops::Range<usize>,
        std::ops::Range<usize>,
        RandomProjection,
    ) {
        let split = |total: usize, i: usize| total * i / self.bundles;
        let (x0, x1) = (split(self.numel, i), split(self.numel, i + 1));
        let (s0, s1) = (split(self.slots, i), split(self.slots, i + 1));
        let proj = RandomProjection::new(x1 - x0, s1 - s0, mix(mix(self.key, step), i as u64))
            .expect("bundle sizes are at least 1 by construction");
        (x0..x1, s0..s1, proj)
    }
}

/// Per-slot weights `w_j = 1/m_j` of a projection (`m_j` = chunks reaching slot `j`; 0 for
/// slots no chunk reaches).
fn slot_weight(p: &RandomProjection, j: usize) -> f32 {
    match p.slot_count(j) {
        Some(0) | None => 0.0,
        Some(m) => 1.0 / m as f32,
    }
}

/// Weighted-L2-optimal scale on the slots `keep` selects: `Σ w|y| / Σ w` (f64 sums).
fn optimal_scale(p: &RandomProjection, y: &[f32], keep: impl Fn(f32) -> bool) -> f32 {
    let (mut num, mut den) = (0f64, 0f64);
    for (j, &v) in y.iter().enumerate() {
        if keep(v) {
            let w = f64::from(slot_weight(p, j));
            num += w * f64::from(v.abs());
            den += w;
        }
    }
    if den > 0.0 { (num / den) as f32 } else { 0.0 }
}

/// The VSA gradient compressor. See the [module docs](self).
#[derive(Debug)]
pub struct VSAGradientCompressor {
    config: VSAConfig,
    params: ParamSet,
    layouts: Vec<Layout>,
    device: Device,
    fingerprint: u64,
    /// Error-feedback residuals in sorted order (empty vectors when off).
    residuals: Vec<Vec<f32>>,
    /// Calls to compress so far (keys are fresh per call).
    step: u64,
}

fn fnv(h: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *h = (*h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3);
    }
}

impl VSAGradientCompressor {
    /// A compressor for the parameters `param_shapes` (`(name, shape)` in any order) on
    /// `device`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for `dimension` 0, a ratio outside `(0, 1]`, error feedback
    /// with a non-contractive reconstruction, or a parameter needing more than `u32::MAX`
    /// slots; the errors of [`ParamSet::new`] for bad shapes.
    pub fn new(
        param_shapes: &[(String, Vec<usize>)],
        config: VSAConfig,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let params = ParamSet::new(param_shapes)?;
        let mut layouts = Vec::with_capacity(params.len());
        for s in params.specs() {
            let numel = s.numel();
            let slots = ((config.compression_ratio * numel as f64).ceil() as usize)
                .max(MIN_SLOTS)
                .min(numel);
            if u32::try_from(slots).is_err() {
                return Err(Error::InvalidConfig {
                    field: "compression_ratio",
                    reason: format!(
                        "parameter `{}` would need {slots} slots, more than {}",
                        s.name,
                        u32::MAX
                    ),
                });
            }
            layouts.push(Layout {
                numel,
                slots,
                bundles: slots.div_ceil(config.dimension),
                key: mix(config.seed, key_from_name(&s.name)),
            });
        }
        let fingerprint = Self::fingerprint_of(&config, params.specs());
        let residuals = if config.error_feedback {
            layouts.iter().map(|l| vec![0f32; l.numel]).collect()
        } else {
            vec![Vec::new(); layouts.len()]
        };
        Ok(Self {
            config,
            params,
            layouts,
            device: device.clone(),
            fingerprint,
            residuals,
            step: 0,
        })
    }

    /// A compressor for the float variables of `varmap`.
    ///
    /// # Errors
    /// As [`VSAGradientCompressor::new`].
    pub fn from_varmap(varmap: &VarMap, config: VSAConfig, device: &Device) -> Result<Self> {
        Self::new(&ParamSet::varmap_shapes(varmap)?, config, device)
    }

    fn fingerprint_of(config: &VSAConfig, specs: &[ParamSpec]) -> u64 {
        let mut h = 0xCBF2_9CE4_8422_2325u64;
        fnv(&mut h, b"vsa-optim-rs/compress/1");
        fnv(&mut h, &(config.dimension as u64).to_le_bytes());
        fnv(&mut h, &config.compression_ratio.to_bits().to_le_bytes());
        fnv(&mut h, &config.seed.to_le_bytes());
        fnv(
            &mut h,
            &[config.reconstruction.code(), config.quantization.code()],
        );
        fnv(&mut h, &(specs.len() as u64).to_le_bytes());
        for s in specs {
            fnv(&mut h, &(s.name.len() as u64).to_le_bytes());
            fnv(&mut h, s.name.as_bytes());
            fnv(&mut h, &(s.shape.len() as u64).to_le_bytes());
            for &d in &s.shape {
                fnv(&mut h, &(d as u64).to_le_bytes());
            }
        }
        splitmix64(h)
    }

    /// The configuration.
    pub fn config(&self) -> &VSAConfig {
        &self.config
    }

    /// The declared parameters, sorted by name.
    pub fn params(&self) -> &ParamSet {
        &self.params
    }

    /// The config fingerprint stored in every compressed value.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// `(slots, bundles)` of each parameter, in sorted-name order.
    pub fn layout(&self) -> Vec<(usize, usize)> {
        self.layouts.iter().map(|l| (l.slots, l.bundles)).collect()
    }

    /// Bytes of state: the error-feedback residuals (4 per element when on) plus the layout
    /// (a few words per parameter). Never O(n·D).
    pub fn memory_bytes(&self) -> usize {
        self.residuals.iter().map(|r| 4 * r.len()).sum::<usize>()
            + self.layouts.len() * std::mem::size_of::<Layout>()
    }

    /// The error-feedback residual of `name` (`None` when error feedback is off or the name is
    /// unknown).
    pub fn residual(&self, name: &str) -> Option<&[f32]> {
        let i = self.params.position(name)?;
        let r = &self.residuals[i];
        (!r.is_empty()).then_some(r.as_slice())
    }

    /// Successful compress calls so far: the `step` of the next compressed value.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Sets the call counter (to resume a run exactly, with [`Self::residual`]s restored by
    /// [`Self::set_residual`]).
    pub fn set_step(&mut self, step: u64) {
        self.step = step;
    }

    /// Replaces the error-feedback residual of `name`.
    ///
    /// # Errors
    /// [`Error::UnknownParameter`], [`Error::InvalidState`] when error feedback is off,
    /// [`Error::ShapeMismatch`] for a wrong length, [`Error::NonFiniteGradient`].
    pub fn set_residual(&mut self, name: &str, values: &[f32]) -> Result<()> {
        let i = self
            .params
            .position(name)
            .ok_or_else(|| Error::UnknownParameter {
                name: name.to_string(),
            })?;
        if !self.config.error_feedback {
            return Err(Error::InvalidState(
                "error feedback is off: there is no residual to set".into(),
            ));
        }
        let s = &self.params.specs()[i];
        if values.len() != s.numel() {
            return Err(Error::ShapeMismatch {
                name: s.name.clone(),
                expected: s.shape.clone(),
                actual: vec![values.len()],
            });
        }
        if !values.iter().all(|v| v.is_finite()) {
            return Err(Error::NonFiniteGradient {
                name: s.name.clone(),
            });
        }
        self.residuals[i].copy_from_slice(values);
        Ok(())
    }

    /// Sets every error-feedback residual to zero.
    pub fn reset_error_feedback(&mut self) {
        self.residuals.iter_mut().for_each(|r| r.fill(0.0));
    }

    /// Compresses a gradient map (exactly the declared names, declared shapes, f32/f16/bf16
    /// on this compressor's device, all finite). With error feedback, adds and updates the
    /// residuals.
    ///
    /// # Errors
    /// [`Error::UnknownParameter`], [`Error::MissingParameter`], [`Error::ShapeMismatch`],
    /// [`Error::UnsupportedDtype`], [`Error::DeviceMismatch`], [`Error::NonFiniteGradient`].
    /// On error the residuals are unchanged.
    pub fn compress(&mut self, grads: &HashMap<String, Tensor>) -> Result<CompressedGradients> {
        self.params.check_map(grads)?;
        for s in self.params.specs() {
            let d = grads[&s.name].device();
            if !d.same_device(&self.device) {
                return Err(Error::DeviceMismatch {
                    name: s.name.clone(),
                    expected: format!("{:?}", self.device),
                    actual: format!("{d:?}"),
                });
            }
        }
        let host = self.params.to_host_f32(grads)?;
        self.compress_host(&host)
    }

    /// Compresses host gradients given in sorted-name order (see [`Self::params`]).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a wrong count or length, [`Error::NonFiniteGradient`].
    /// On error the residuals are unchanged.
    pub fn compress_host<G: AsRef<[f32]>>(&mut self, grads: &[G]) -> Result<CompressedGradients> {
        self.check_host_lengths(grads.len(), |i| grads[i].as_ref().len())?;
        for (s, g) in self.params.specs().iter().zip(grads) {
            if !g.as_ref().iter().all(|x| x.is_finite()) {
                return Err(Error::NonFiniteGradient {
                    name: s.name.clone(),
                });
            }
        }
        let mut params = Vec::with_capacity(self.layouts.len());
        let mut new_residuals = Vec::new();
        let ef = self.config.error_feedback;
        for (i, (l, g)) in self.layouts.iter().zip(grads).enumerate() {
            let g = g.as_ref();
            let v: Vec<f32>;
            let x = if ef {
                v = g
                    .iter()
                    .zip(&self.residuals[i])
                    .map(|(a, b)| a + b)
                    .collect();
                &v[..]
            } else {
                g
            };
            let p = self.encode(l, x, self.step);
            if check_param_values(&p, "").is_err() {
                // Only reachable when g + e (or a bundle sum) overflows f32.
                return Err(Error::NonFiniteGradient {
                    name: self.params.specs()[i].name.clone(),
                });
            }
            if ef {
                let mut r = vec![0f32; l.numel];
                self.decode(l, &p, self.step, &mut r);
                r.iter_mut().zip(x).for_each(|(r, x)| *r = x - *r);
                new_residuals.push(r);
            }
            params.push(p);
        }
        if ef {
            self.residuals = new_residuals;
        }
        let step = self.step;
        self.step += 1;
        let elements = self.params.total_numel() as u64;
        let mut c = CompressedGradients {
            fingerprint: self.fingerprint,
            step,
            reconstruction: self.config.reconstruction,
            quantization: self.config.quantization,
            elements,
            params,
            stats: CompressionStats::new(elements, 0),
        };
        c.stats = CompressionStats::new(elements, c.byte_len());
        Ok(c)
    }

    fn check_host_lengths(&self, count: usize, len: impl Fn(usize) -> usize) -> Result<()> {
        let specs = self.params.specs();
        if count != specs.len() {
            return Err(Error::InvalidConfig {
                field: "gradients",
                reason: format!("expected {} parameters, got {count}", specs.len()),
            });
        }
        for (i, s) in specs.iter().enumerate() {
            if len(i) != s.numel() {
                return Err(Error::ShapeMismatch {
                    name: s.name.clone(),
                    expected: s.shape.clone(),
                    actual: vec![len(i)],
                });
            }
        }
        Ok(())
    }

    fn encode(&self, l: &Layout, x: &[f32], step: u64) -> CompressedParam {
        let norm = (self.config.reconstruction == Reconstruction::NormMatched)
            .then(|| (x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>()).sqrt() as f32);
        let q = self.config.quantization;
        let mut values = vec![0f32; l.slots];
        let mut scales = Vec::new();
        let mut nonzero = Vec::new();
        let mut negative = Vec::new();
        if q != BundleQuantization::F32 {
            scales = vec![0f32; l.bundles];
            nonzero = vec![0u64; bit_words(l.slots)];
            negative = vec![0u64; bit_words(l.slots)];
        }
        #[allow(clippy::needless_range_loop)] // `b` also picks the bundle's keys and ranges
        for b in 0..l.bundles {
            let (xr, sr, proj) = l.bundle(b, step);
            let y = &mut values[sr.clone()];
            proj.encode_into(&x[xr], y)
                .expect("lengths match the layout by construction");
            if q == BundleQuantization::F32 {
                continue;
            }
            let tau = match q {
                BundleQuantization::Ternary => 0.7 * optimal_scale(&proj, y, |_| true),
                _ => -1.0,
            };
            let keep = |v: f32| v.abs() > tau;
            scales[b] = optimal_scale(&proj, y, keep);
            for (j, &v) in y.iter().enumerate() {
                let k = sr.start + j;
                let (w, bit) = (k / 64, 1u64 << (k % 64));
                if keep(v) {
                    nonzero[w] |= bit;
                    if v.is_sign_negative() {
                        negative[w] |= bit;
                    }
                }
            }
        }
        let payload = match q {
            BundleQuantization::F32 => Payload::F32(values),
            BundleQuantization::Sign => Payload::Sign { scales, negative },
            BundleQuantization::Ternary => Payload::Ternary {
                scales,
                nonzero,
                negative,
            },
        };
        CompressedParam {
            slots: l.slots,
            bundles: l.bundles,
            norm,
            payload,
        }
    }

    /// Decodes one validated parameter into `out` (length `numel`).
    fn decode(&self, l: &Layout, p: &CompressedParam, step: u64, out: &mut [f32]) {
        let mut scratch = Vec::new();
        for b in 0..l.bundles {
            let (xr, sr, proj) = l.bundle(b, step);
            let y: &[f32] = match &p.payload {
                Payload::F32(v) => &v[sr],
                Payload::Sign { scales, negative } => {
                    scratch.clear();
                    scratch.extend(sr.map(|k| {
                        let neg = negative[k / 64] >> (k % 64) & 1 == 1;
                        if neg { -scales[b] } else { scales[b] }
                    }));
                    &scratch
                }
                Payload::Ternary {
                    scales,
                    nonzero,
                    negative,
                } => {
                    scratch.clear();
                    scratch.extend(sr.map(|k| {
                        let (w, s) = (k / 64, k % 64);
                        match (nonzero[w] >> s & 1, negative[w] >> s & 1) {
                            (0, _) => 0.0,
                            (_, 1) => -scales[b],
                            _ => scales[b],
                        }
                    }));
                    &scratch
                }
            };
            let o = &mut out[xr];
            match self.config.reconstruction {
                Reconstruction::Unbiased => proj.transpose_into(y, o),
                _ => proj.reconstruct_into(y, o),
            }
            .expect("lengths match the layout by construction");
        }
        if let Some(norm) = p.norm {
            let have = out
                .iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum::<f64>()
                .sqrt();
            let s = if have > 0.0 {
                (f64::from(norm) / have) as f32
            } else {
                0.0
            };
            out.iter_mut().for_each(|v| *v *= s);
        }
    }

    /// Checks that `c` was made by a compressor with this config and parameters and that
    /// its payload sizes match.
    fn check_compressed(&self, c: &CompressedGradients) -> Result<()> {
        if c.fingerprint != self.fingerprint {
            return Err(Error::FingerprintMismatch {
                expected: self.fingerprint,
                actual: c.fingerprint,
            });
        }
        let cfg = &self.config;
        if c.reconstruction != cfg.reconstruction || c.quantization != cfg.quantization {
            return Err(invalid(format!(
                "modes: expected {:?}/{:?}, got {:?}/{:?}",
                cfg.reconstruction, cfg.quantization, c.reconstruction, c.quantization
            )));
        }
        if c.params.len() != self.layouts.len() {
            return Err(invalid(format!(
                "parameter count: expected {}, got {}",
                self.layouts.len(),
                c.params.len()
            )));
        }
        for ((s, l), p) in self.params.specs().iter().zip(&self.layouts).zip(&c.params) {
            let who = format!("parameter `{}`", s.name);
            if (p.slots, p.bundles) != (l.slots, l.bundles) {
                return Err(invalid(format!(
                    "{who}: expected {} slots in {} bundles, got {} in {}",
                    l.slots, l.bundles, p.slots, p.bundles
                )));
            }
            if p.norm.is_some() != (cfg.reconstruction == Reconstruction::NormMatched) {
                return Err(invalid(format!(
                    "{who}: norm presence does not match the mode"
                )));
            }
            let kind_ok = matches!(
                (&p.payload, cfg.quantization),
                (Payload::F32(_), BundleQuantization::F32)
                    | (Payload::Sign { .. }, BundleQuantization::Sign)
                    | (Payload::Ternary { .. }, BundleQuantization::Ternary)
            );
            if !kind_ok {
                return Err(invalid(format!(
                    "{who}: payload kind does not match {:?}",
                    cfg.quantization
                )));
            }
            check_param_values(p, &who)?;
        }
        Ok(())
    }

    /// Decompresses into f32 tensors with the declared shapes on this compressor's device.
    ///
    /// # Errors
    /// [`Error::FingerprintMismatch`] for a value made by a compressor with another config,
    /// seed or parameter set; [`Error::InvalidCompressed`] for a malformed value.
    pub fn decompress(&self, compressed: &CompressedGradients) -> Result<HashMap<String, Tensor>> {
        let host = self.decompress_host(compressed)?;
        self.params.from_host_f32(&host, &self.device)
    }

    /// Decompresses into host vectors in sorted-name order.
    ///
    /// # Errors
    /// As [`Self::decompress`].
    pub fn decompress_host(&self, compressed: &CompressedGradients) -> Result<Vec<Vec<f32>>> {
        let mut out: Vec<Vec<f32>> = self.layouts.iter().map(|l| vec![0f32; l.numel]).collect();
        self.decompress_host_into(compressed, &mut out)?;
        Ok(out)
    }

    /// Decompresses into caller-provided host buffers in sorted-name order (no allocation for
    /// f32 bundles).
    ///
    /// # Errors
    /// As [`Self::decompress`], plus [`Error::ShapeMismatch`] for a buffer of the wrong length.
    pub fn decompress_host_into<O: AsMut<[f32]>>(
        &self,
        compressed: &CompressedGradients,
        out: &mut [O],
    ) -> Result<()> {
        self.check_compressed(compressed)?;
        let lens: Vec<usize> = out.iter_mut().map(|o| o.as_mut().len()).collect();
        self.check_host_lengths(lens.len(), |i| lens[i])?;
        for ((l, p), o) in self.layouts.iter().zip(&compressed.params).zip(out) {
            self.decode(l, p, compressed.step, o.as_mut());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_cover_every_element_and_slot() {
        for (numel, slots, bundles) in [(10, 1, 1), (100, 10, 3), (7, 7, 7), (1000, 333, 4)] {
            let l = Layout {
                numel,
                slots,
                bundles,
                key: 1,
            };
            let (mut xe, mut se) = (0, 0);
            for b in 0..bundles {
                let (xr, sr, p) = l.bundle(b, 3);
                assert_eq!((xr.start, sr.start), (xe, se));
                assert!(!xr.is_empty() && !sr.is_empty());
                assert_eq!((p.input_len(), p.output_len()), (xr.len(), sr.len()));
                (xe, se) = (xr.end, sr.end);
            }
            assert_eq!((xe, se), (numel, slots));
        }
    }

    #[test]
    fn mode_codes_round_trip() {
        for m in [
            Reconstruction::Projection,
            Reconstruction::Unbiased,
            Reconstruction::NormMatched,
        ] {
            assert_eq!(Reconstruction::from_code(m.code()), Some(m));
        }
        for q in [
            BundleQuantization::F32,
            BundleQuantization::Sign,
            BundleQuantization::Ternary,
        ] {
            assert_eq!(BundleQuantization::from_code(q.code()), Some(q));
        }
        assert_eq!(Reconstruction::from_code(3), None);
        assert_eq!(BundleQuantization::from_code(3), None);
    }
}
