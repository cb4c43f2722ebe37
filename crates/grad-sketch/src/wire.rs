//! The compressed value of the VSA sketch and its little-endian byte format.

use crate::bytes::{Reader, put_f32s, put_u32};
use crate::config::{BundleQuantization, Reconstruction};
use crate::error::{Result, invalid};

/// Sizes of one compressed value.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
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
    pub(crate) fn new(elements: u64, compressed_bytes: usize) -> Self {
        let original_bytes = usize::try_from(elements)
            .unwrap_or(usize::MAX)
            .saturating_mul(4);
        Self {
            original_bytes,
            compressed_bytes,
            compression_ratio: original_bytes as f64 / compressed_bytes as f64,
        }
    }
}

/// The stored values of one parameter's bundles.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
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
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
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
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CompressedGradients {
    /// Hash of the compressor's dimension, ratio, seed, reconstruction, quantization and
    /// parameter names and shapes; checked by the compressor's `decompress`.
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

const MAGIC: &[u8; 4] = b"VSAC";
const FORMAT_VERSION: u8 = 1;
/// Header bytes: magic 4, version 1, reconstruction 1, quantization 1, reserved 1,
/// fingerprint 8, step 8, elements 8, parameter count 4.
pub const HEADER_BYTES: usize = 36;

pub(crate) fn bit_words(m: usize) -> usize {
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

fn put_bits(out: &mut Vec<u8>, words: &[u64], m: usize) {
    let bytes = m.div_ceil(8);
    out.extend(words.iter().flat_map(|w| w.to_le_bytes()).take(bytes));
}

fn read_bits(r: &mut Reader<'_>, m: usize, what: &str) -> Result<Vec<u64>> {
    let b = r.take(m.div_ceil(8), what)?;
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
    ///
    /// # Errors
    /// [`Error::InvalidCompressed`](crate::Error::InvalidCompressed) for a value that
    /// [`from_bytes`](Self::from_bytes) would refuse: a count above `u32::MAX`, vector
    /// lengths that do not match `slots`/`bundles`, a payload kind or norm that does not
    /// match the modes, non-finite values.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.byte_len());
        self.write_bytes(&mut out)?;
        Ok(out)
    }

    /// Appends [`to_bytes`](Self::to_bytes)' layout to `out` (no allocation when `out` has
    /// the capacity). On error `out` is unchanged.
    ///
    /// # Errors
    /// As [`Self::to_bytes`].
    pub fn write_bytes(&self, out: &mut Vec<u8>) -> Result<()> {
        self.check()?;
        let start = out.len();
        let r = self.write_unchecked(out);
        if r.is_err() {
            out.truncate(start);
        }
        r
    }

    fn check(&self) -> Result<()> {
        for (i, p) in self.params.iter().enumerate() {
            let who = format!("parameter {i}");
            if p.norm.is_some() != (self.reconstruction == Reconstruction::NormMatched) {
                return Err(invalid(format!(
                    "{who}: norm presence does not match the mode"
                )));
            }
            check_kind(p, self.quantization, &who)?;
            check_param_values(p, &who)?;
        }
        Ok(())
    }

    fn write_unchecked(&self, out: &mut Vec<u8>) -> Result<()> {
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
        put_u32(out, self.params.len(), "parameter count")?;
        for p in &self.params {
            put_u32(out, p.slots, "slots")?;
            put_u32(out, p.bundles, "bundles")?;
            if let Some(n) = p.norm {
                out.extend_from_slice(&n.to_le_bytes());
            }
            match &p.payload {
                Payload::F32(v) => put_f32s(out, v),
                Payload::Sign { scales, negative } => {
                    put_f32s(out, scales);
                    put_bits(out, negative, p.slots);
                }
                Payload::Ternary {
                    scales,
                    nonzero,
                    negative,
                } => {
                    put_f32s(out, scales);
                    put_bits(out, nonzero, p.slots);
                    put_bits(out, negative, p.slots);
                }
            }
        }
        Ok(())
    }

    /// The length of [`to_bytes`](Self::to_bytes) (for a consistent value).
    pub fn byte_len(&self) -> usize {
        HEADER_BYTES
            + self
                .params
                .iter()
                .map(|p| param_bytes(p.slots, p.bundles, p.norm.is_some(), self.quantization))
                .sum::<usize>()
    }

    /// Parses [`to_bytes`](Self::to_bytes)' layout, checking the magic, version, mode codes,
    /// lengths (no trailing bytes), padding bits, and that every value is finite. Whether it
    /// matches a compressor is checked by the compressor's `decompress`.
    ///
    /// # Errors
    /// [`Error::InvalidCompressed`](crate::Error::InvalidCompressed) naming the field and
    /// offset.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let head = r.header(MAGIC)?;
        if head[0] != FORMAT_VERSION {
            return Err(invalid(format!(
                "format version: expected {FORMAT_VERSION}, got {}",
                head[0]
            )));
        }
        let reconstruction = Reconstruction::from_code(head[1])
            .ok_or_else(|| invalid(format!("reconstruction code {} is unknown", head[1])))?;
        let quantization = BundleQuantization::from_code(head[2])
            .ok_or_else(|| invalid(format!("quantization code {} is unknown", head[2])))?;
        if head[3] != 0 {
            return Err(invalid(format!(
                "reserved byte: expected 0, got {}",
                head[3]
            )));
        }
        let fingerprint = r.u64("fingerprint")?;
        let step = r.u64("step")?;
        let elements = r.u64("elements")?;
        let count = r.len("parameter count")?;
        let mut params = Vec::with_capacity(count.min(bytes.len() / 8));
        for i in 0..count {
            let slots = r.len(&format!("parameter {i} slots"))?;
            let bundles = r.len(&format!("parameter {i} bundles"))?;
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
                    negative: read_bits(&mut r, slots, &format!("parameter {i} sign bits"))?,
                },
                BundleQuantization::Ternary => Payload::Ternary {
                    scales: r.f32s(bundles, &format!("parameter {i} scales"))?,
                    nonzero: read_bits(&mut r, slots, &format!("parameter {i} non-zero bits"))?,
                    negative: read_bits(&mut r, slots, &format!("parameter {i} negative bits"))?,
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
        r.finish("parameter")?;
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

/// Checks that a parameter's payload kind matches the quantization.
pub(crate) fn check_kind(p: &CompressedParam, q: BundleQuantization, who: &str) -> Result<()> {
    let kind_ok = matches!(
        (&p.payload, q),
        (Payload::F32(_), BundleQuantization::F32)
            | (Payload::Sign { .. }, BundleQuantization::Sign)
            | (Payload::Ternary { .. }, BundleQuantization::Ternary)
    );
    if kind_ok {
        Ok(())
    } else {
        Err(invalid(format!("{who}: payload kind does not match {q:?}")))
    }
}

/// Checks a parameter's internal consistency: vector lengths against `slots`/`bundles`,
/// finite values, non-negative scales, ternary negative ⊆ non-zero.
pub(crate) fn check_param_values(p: &CompressedParam, who: &str) -> Result<()> {
    if p.slots == 0 || p.bundles == 0 || p.bundles > p.slots {
        return Err(invalid(format!(
            "{who}: needs 1 ≤ bundles ≤ slots, got {} bundles, {} slots",
            p.bundles, p.slots
        )));
    }
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
    let check_padding = |what: &str, w: &[u64]| {
        if !p.slots.is_multiple_of(64) && w.last().is_some_and(|w| w >> (p.slots % 64) != 0) {
            Err(invalid(format!(
                "{who} {what}: padding bits after slot {} are set",
                p.slots
            )))
        } else {
            Ok(())
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
            check_padding("sign bits", negative)?;
        }
        Payload::Ternary {
            scales,
            nonzero,
            negative,
        } => {
            check_scales(scales)?;
            check_len("non-zero bits", words, nonzero.len())?;
            check_len("negative bits", words, negative.len())?;
            check_padding("non-zero bits", nonzero)?;
            if nonzero.iter().zip(negative).any(|(z, n)| n & !z != 0) {
                return Err(invalid(format!(
                    "{who}: a negative bit is set on a zero slot"
                )));
            }
        }
    }
    Ok(())
}
