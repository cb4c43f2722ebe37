//! The unbiased stochastic ternary codec.

pub use ternary_quant::TernaryPacking;
use ternary_quant::fused::{
    quantize_stochastic_base3_with_scale_into, quantize_stochastic_planes_with_scale_into,
};
use ternary_quant::levels::check_trits_per_element;
use ternary_quant::pack::{check_base3, check_planes};
use ternary_quant::{
    AccumulatorConfig, DEFAULT_SCALE_BLOCK, PackedAccumulator, RngKey, ScaleFormat,
    ScaleGranularity, base3_bytes, dequantize_base3_into, dequantize_planes_into, levels_bytes,
    max_abs, max_level, plane_words, unpack_levels,
};

use super::{Context, ExchangeMode, GradientCodec, check_grads, decode_error, fnv};
use crate::error::{Result, config_error};

/// Unbiased stochastic ternary: per block of `block` elements, scale `s = max|x|` and trits
/// with `P(q = sign x) = |x|/s`, so `E[s·q] = x`. Randomness is keyed by
/// `(seed, step, rank, parameter)` and the element index, so every rank's payload is
/// reproducible and independent of every other's.
///
/// Payload per parameter: `⌈n/block⌉` little-endian `f32` scales, then the packed trits of
/// the whole parameter (planes: `2·⌈n/64⌉` little-endian `u64` words, plus first; base 3:
/// `⌈n/5⌉` bytes).
///
/// **Trits per element** ([`set_trits_per_element`](Self::set_trits_per_element)): with
/// `t` in {2, 3, 5} each element is one of the `2L + 1` levels `s·j/L`, `L = (3^t − 1)/2`
/// (9, 27 or 243 levels), rounded stochastically and without bias between its two neighbours
/// (`E[s·j/L] = x` up to `2^-16·s/L`: 16-bit draws), by the same code as
/// `ternary_quant::PackedAccumulator` (it *is* a one-step accumulator with `f32` scales per
/// `block`), and packed `t` balanced trits per element, base 3 (`⌈t·n/5⌉` bytes,
/// [`ternary_quant::levels`]). Its stream is `RngKey::new(mix(seed, step), 0,
/// mix(rank, parameter))`. The default, one trit, is the single-trit layout above,
/// byte for byte. The trit count is part of the [fingerprint](GradientCodec::fingerprint),
/// so the handshake refuses ranks that disagree on it.
#[derive(Debug, Clone)]
pub struct TernaryCodec {
    lens: Vec<usize>,
    seed: u64,
    block: usize,
    packing: TernaryPacking,
    trits: u8,
    words: Vec<u64>,
    levels: Vec<i8>,
}

/// The default scale block: 320 elements (64 base-3 bytes, 5 plane words): ternary-quant's
/// [`DEFAULT_SCALE_BLOCK`], defined there once.
pub const DEFAULT_TERNARY_BLOCK: usize = DEFAULT_SCALE_BLOCK;

impl TernaryCodec {
    /// A codec for parameters of lengths `lens`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) unless `block` is a positive
    /// multiple of 320 (so that every block starts on a plane word and on a base-3 byte).
    pub fn new(lens: &[usize], seed: u64, block: usize, packing: TernaryPacking) -> Result<Self> {
        if block == 0 || !block.is_multiple_of(DEFAULT_TERNARY_BLOCK) {
            return Err(config_error(
                "block",
                format!("a positive multiple of {DEFAULT_TERNARY_BLOCK}"),
                block,
            ));
        }
        Ok(Self {
            lens: lens.to_vec(),
            seed,
            block,
            packing,
            trits: 1,
            words: Vec::new(),
            levels: Vec::new(),
        })
    }

    /// Balanced trits per element: 1 (the default), 2, 3 or 5 (3, 9, 27 or 243 levels;
    /// `1.6·t` bits per element plus the scales). More trits cost more bytes and cut the
    /// quantization error: the variance per element is `(s/L)²·f(1 − f)` with `f` the
    /// fractional part of `x·L/s`, at most `(s/(2L))²`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) (`trits_per_element`) unless `n`
    /// is one of 1, 2, 3, 5, or (`packing`) for `n > 1` with [`TernaryPacking::Planes`]
    /// (bitplanes hold single trits; levels travel base 3). The codec is unchanged on error.
    pub fn set_trits_per_element(&mut self, n: u8) -> Result<()> {
        if check_trits_per_element(n).is_err() {
            return Err(config_error("trits_per_element", "one of 1, 2, 3, 5", n));
        }
        if n > 1 && self.packing == TernaryPacking::Planes {
            return Err(config_error(
                "packing",
                "Base3 when trits_per_element > 1",
                "Planes",
            ));
        }
        self.trits = n;
        Ok(())
    }

    /// [`set_trits_per_element`](Self::set_trits_per_element), builder style.
    ///
    /// # Errors
    /// As [`set_trits_per_element`](Self::set_trits_per_element).
    pub fn with_trits_per_element(mut self, n: u8) -> Result<Self> {
        self.set_trits_per_element(n)?;
        Ok(self)
    }

    /// Balanced trits per element (1 unless set).
    pub fn trits_per_element(&self) -> u8 {
        self.trits
    }

    /// Payload bytes for one rank's gradient.
    pub fn payload_bytes(&self) -> usize {
        self.lens
            .iter()
            .map(|&n| 4 * n.div_ceil(self.block) + self.packed_bytes(n))
            .sum()
    }

    fn packed_bytes(&self, n: usize) -> usize {
        if self.trits > 1 {
            return levels_bytes(self.trits, n);
        }
        match self.packing {
            TernaryPacking::Planes => 16 * plane_words(n),
            TernaryPacking::Base3 => base3_bytes(n),
        }
    }

    fn key(&self, ctx: Context, param: usize) -> RngKey {
        RngKey::new(
            self.seed,
            ctx.step,
            vsa_core::rng::mix(ctx.rank as u64, param as u64),
        )
    }

    /// The multi-trit encode: per parameter, one step of a [`PackedAccumulator`] with `f32`
    /// scales per `block` (so `v = g` is rounded onto its levels once), copied out.
    fn encode_levels(&self, ctx: Context, grads: &[Vec<f32>], out: &mut Vec<u8>) -> Result<()> {
        let seed = vsa_core::rng::mix(self.seed, ctx.step);
        for (k, g) in grads.iter().enumerate() {
            let config = AccumulatorConfig {
                accumulation_steps: 1,
                stochastic: true,
                seed,
                tensor_id: vsa_core::rng::mix(ctx.rank as u64, k as u64),
                scale_granularity: ScaleGranularity::PerBlock(self.block),
                trits_per_element: self.trits,
                scale_format: ScaleFormat::F32,
                rounding: ternary_quant::Rounding::Stochastic,
            };
            let mut acc = PackedAccumulator::new(g.len(), config)?;
            acc.accumulate(g)?;
            let state = acc.state();
            for s in &state.scales {
                out.extend_from_slice(&s.to_le_bytes());
            }
            out.extend_from_slice(&state.trits);
        }
        Ok(())
    }

    fn encode_unchecked(
        &mut self,
        ctx: Context,
        grads: &[Vec<f32>],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        if self.trits > 1 {
            return self.encode_levels(ctx, grads, out);
        }
        let block = self.block;
        for (k, g) in grads.iter().enumerate() {
            let key = self.key(ctx, k);
            let nb = g.len().div_ceil(block);
            let at = out.len();
            out.resize(at + 4 * nb + self.packed_bytes(g.len()), 0);
            let (scales, packed) = out[at..].split_at_mut(4 * nb);
            match self.packing {
                TernaryPacking::Base3 => {
                    let per = block / 5;
                    for (i, ((x, o), sc)) in g
                        .chunks(block)
                        .zip(packed.chunks_mut(per))
                        .zip(scales.chunks_exact_mut(4))
                        .enumerate()
                    {
                        let s = max_abs(x)?;
                        sc.copy_from_slice(&s.to_le_bytes());
                        quantize_stochastic_base3_with_scale_into(x, s, key, (i * per) as u64, o)?;
                    }
                }
                TernaryPacking::Planes => {
                    let w = plane_words(g.len());
                    self.words.clear();
                    self.words.resize(2 * w, 0);
                    let (plus, minus) = self.words.split_at_mut(w);
                    let per = block / 64;
                    for (i, ((x, (p, m)), sc)) in g
                        .chunks(block)
                        .zip(plus.chunks_mut(per).zip(minus.chunks_mut(per)))
                        .zip(scales.chunks_exact_mut(4))
                        .enumerate()
                    {
                        let s = max_abs(x)?;
                        sc.copy_from_slice(&s.to_le_bytes());
                        quantize_stochastic_planes_with_scale_into(
                            x,
                            s,
                            key,
                            (i * per) as u64,
                            p,
                            m,
                        )?;
                    }
                    for (dst, word) in packed.chunks_exact_mut(8).zip(&self.words) {
                        dst.copy_from_slice(&word.to_le_bytes());
                    }
                }
            }
        }
        Ok(())
    }
}

impl GradientCodec for TernaryCodec {
    fn mode(&self) -> ExchangeMode {
        ExchangeMode::Ternary
    }

    fn fingerprint(&self) -> u64 {
        // One trit keeps the words of the single-trit codec (so its fingerprint, like its
        // bytes, is unchanged); `t > 1` trits (base 3 only) set the packing word to 1 | t << 8.
        let packing = match self.packing {
            TernaryPacking::Planes => 0,
            TernaryPacking::Base3 if self.trits > 1 => 1 | (u64::from(self.trits) << 8),
            TernaryPacking::Base3 => 1,
        };
        fnv([self.block as u64, packing]
            .into_iter()
            .chain(self.lens.iter().map(|&n| n as u64)))
    }

    fn encode(&mut self, ctx: Context, grads: &[Vec<f32>], out: &mut Vec<u8>) -> Result<()> {
        check_grads(&self.lens, grads)?;
        let start = out.len();
        let r = self.encode_unchecked(ctx, grads, out);
        if r.is_err() {
            out.truncate(start);
        }
        r
    }

    fn decode(&mut self, ctx: Context, payload: &[u8], out: &mut [Vec<f32>]) -> Result<()> {
        if payload.len() != self.payload_bytes() {
            return Err(decode_error(
                ctx,
                format!(
                    "ternary payload of {} bytes, expected {}",
                    payload.len(),
                    self.payload_bytes()
                ),
            ));
        }
        check_grads(&self.lens, out)?;
        // Validate everything (scales, packed trits) before writing, so that `out` is
        // untouched on error. Plane words are converted once, for all parameters.
        let scale = |c: &[u8]| f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        let packed_err = |e: ternary_quant::Error| decode_error(ctx, e.to_string());
        self.words.clear();
        let mut at = 0usize;
        for &n in &self.lens {
            let nb = n.div_ceil(self.block);
            for c in payload[at..at + 4 * nb].chunks_exact(4) {
                let s = scale(c);
                if !(s.is_finite() && s >= 0.0) {
                    return Err(decode_error(
                        ctx,
                        format!("block scale {s} is not finite and >= 0"),
                    ));
                }
            }
            at += 4 * nb;
            let packed = &payload[at..at + self.packed_bytes(n)];
            at += self.packed_bytes(n);
            if self.trits > 1 {
                check_base3(usize::from(self.trits) * n, packed).map_err(packed_err)?;
                continue;
            }
            match self.packing {
                TernaryPacking::Base3 => check_base3(n, packed).map_err(packed_err)?,
                TernaryPacking::Planes => {
                    let first = self.words.len();
                    self.words.extend(packed.chunks_exact(8).map(|c| {
                        u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
                    }));
                    let (plus, minus) = self.words[first..].split_at(plane_words(n));
                    check_planes(n, plus, minus).map_err(packed_err)?;
                }
            }
        }
        let (mut at, mut word) = (0usize, 0usize);
        for (o, &n) in out.iter_mut().zip(&self.lens) {
            let nb = n.div_ceil(self.block);
            let scales = &payload[at..at + 4 * nb];
            at += 4 * nb;
            let packed = &payload[at..at + self.packed_bytes(n)];
            at += self.packed_bytes(n);
            let scale_at = |i: usize| scale(&scales[4 * i..4 * i + 4]);
            if self.trits > 1 {
                // Element i is level j_i times the unit s_b/L of its block, as
                // `PackedAccumulator::mean_into` computes it.
                let l = max_level(self.trits) as f32;
                self.levels.clear();
                self.levels.resize(n, 0);
                unpack_levels(self.trits, packed, &mut self.levels).map_err(packed_err)?;
                for (i, (x, q)) in o
                    .chunks_mut(self.block)
                    .zip(self.levels.chunks(self.block))
                    .enumerate()
                {
                    let unit = scale_at(i) / l;
                    for (xi, &qi) in x.iter_mut().zip(q) {
                        *xi = f32::from(qi) * unit;
                    }
                }
                continue;
            }
            match self.packing {
                TernaryPacking::Base3 => {
                    let per = self.block / 5;
                    for (i, (x, b)) in o.chunks_mut(self.block).zip(packed.chunks(per)).enumerate()
                    {
                        dequantize_base3_into(b, scale_at(i), x).map_err(packed_err)?;
                    }
                }
                TernaryPacking::Planes => {
                    let w = plane_words(n);
                    let (plus, minus) = self.words[word..word + 2 * w].split_at(w);
                    word += 2 * w;
                    let per = self.block / 64;
                    for (i, (x, (p, m))) in o
                        .chunks_mut(self.block)
                        .zip(plus.chunks(per).zip(minus.chunks(per)))
                        .enumerate()
                    {
                        dequantize_planes_into(p, m, scale_at(i), x).map_err(packed_err)?;
                    }
                }
            }
        }
        Ok(())
    }
}
