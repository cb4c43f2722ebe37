//! Subtractive-dither decoding for [`crate::PackedAccumulator`]
//! ([`Rounding::Subtractive`]).
//!
//! Each step still rounds `x = v/s ∈ [−1, 1]` stochastically onto `L` levels per sign, with
//! one uniform `u` per element from the counter-based stream, in the monotone form
//! `q = ⌊L·x + u⌋ ∈ [−L, L]` (unbiased stochastic rounding). The decoder regenerates `u` from
//! `(seed, step, tensor_id, element)` and reads the element as
//!
//! ```text
//! m̂ = (s/L)·(q − λ·(u − ½))
//! ```
//!
//! For any `λ` fixed before the draw, `E[m̂] = v` (`E[u − ½] = 0`), and the per-element
//! variance is `(s/L)²·[p(1−p)(1−λ) + λ²/12]` with `p = frac(L·x)`; `λ = 1` is subtractive
//! dither (error uniform on `±s/(2L)`, independent of `v`). Nothing extra is held: the
//! draws are regenerated. The decoded state reaches `s·(1 + λ/(2L))`, so the next step's
//! block maximum, and with it the scale, could grow step after step; the effective `λ` for
//! the state after `k` micro-batches is therefore capped at `2L/k`, the largest value for
//! which `((k)/(k+1))·(1 + λ/(2L)) <= 1`. The derivation and the measured errors are in
//! `docs/ternary.md` §3.3.
//!
//! **Draws.** Element `i` of step `k` uses the 16-bit half `i mod 2` of ChaCha8 word `⌊i/2⌋`
//! of stream `RngKey { seed, step: k − 1, tensor_id }` (the same positions as the stochastic
//! scheme), as the midpoint `w = (r + ½)·2^-16`, and `u = 1 − w`: the element rounds up
//! when `w < frac(L·x)` (a probability within `2^-17` of `frac(L·x)`), and the decode term
//! `u − ½ = ½ − w` has mean exactly 0. Every tile seeks its own position with
//! [`RngKey::stream_at`], so results do not depend on how the tensor is split.

use crate::error::{Error, Result};
use crate::levels::{decode_levels_f32, encode_levels, max_level};
use crate::quant::prescale;
use crate::rng::RngKey;
use crate::scales::{ScaleFormat, ZERO_CODE, log8_code, log8_scale};

/// Elements per stack tile (a multiple of 5 and of 2).
const TILE: usize = 320;

/// How each step rounds the running mean onto its levels, and how the held levels are read
/// back. Part of [`crate::AccumulatorConfig`] (`rounding`); checkpoints written before it
/// existed load as [`Rounding::Stochastic`].
#[derive(Debug, Clone, Copy, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Rounding {
    /// Unbiased stochastic rounding, levels read back as they are (the scheme of
    /// `docs/ternary.md` §3.1; default). With `stochastic: false` the deterministic rounding.
    #[default]
    Stochastic,
    /// The same rounding with a monotone draw, and the subtractive-dither decode
    /// `m̂ = (s/L)·(q − λ_k·(u − ½))` with the step's regenerated draw `u`
    /// (`docs/ternary.md` §3.3). `lambda` in `[0, 2]` (1 = plain subtractive dither); the
    /// state after `k` micro-batches is decoded with `λ_k = min(lambda, 2L/k)`. Needs
    /// `stochastic: true`.
    Subtractive {
        /// The dither weight `λ` before the stability cap.
        lambda: f32,
    },
}

/// Bitwise on `lambda`, so that equality is an equivalence relation (validated configs hold
/// no NaN anyway).
impl PartialEq for Rounding {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Stochastic, Self::Stochastic) => true,
            (Self::Subtractive { lambda: a }, Self::Subtractive { lambda: b }) => {
                a.to_bits() == b.to_bits()
            }
            _ => false,
        }
    }
}

impl Eq for Rounding {}

impl Rounding {
    /// Plain subtractive dither, `λ = 1` (capped at `2L/k` as every `λ` is).
    pub const SUBTRACTIVE: Self = Self::Subtractive { lambda: 1.0 };

    /// Checks the rounding against the config's `stochastic` flag.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] (`rounding`) for a `lambda` that is not finite or lies
    /// outside `[0, 2]`, or for [`Rounding::Subtractive`] with `stochastic: false` (the
    /// decode needs the draws).
    pub fn validate(&self, stochastic: bool) -> Result<()> {
        match *self {
            Self::Stochastic => Ok(()),
            Self::Subtractive { lambda } => {
                if !(lambda.is_finite() && (0.0..=2.0).contains(&lambda)) {
                    return Err(Error::InvalidParameter {
                        param: "rounding",
                        expected: "Subtractive { lambda } with lambda finite in [0, 2]",
                        actual: format!("{self:?}"),
                    });
                }
                if !stochastic {
                    return Err(Error::InvalidParameter {
                        param: "rounding",
                        expected: "Stochastic when stochastic is false (the dithered decode needs the draws)",
                        actual: format!("{self:?}"),
                    });
                }
                Ok(())
            }
        }
    }

    /// The dither weight that decodes the state after `count` micro-batches of `n` trits:
    /// `min(lambda, 2L/count)` for [`Rounding::Subtractive`], 0 for `count = 0` and for
    /// [`Rounding::Stochastic`].
    pub fn lambda_at(&self, count: usize, n: u8) -> f32 {
        match *self {
            Self::Subtractive { lambda } if count > 0 => {
                let cap = (2.0 * f64::from(max_level(n)) / count as f64) as f32;
                lambda.min(cap)
            }
            _ => 0.0,
        }
    }
}

/// `w − ½` for the midpoint draw `w = (r + ½)·2^-16`: `(2r − 65535)/2^17`, exact in `f32`.
#[inline(always)]
fn centred(r: u16) -> f32 {
    (2.0 * f32::from(r) - 65_535.0) * (1.0 / 131_072.0)
}

/// The draws of elements `e0 .. e0 + out.len()` of `key`'s stream: element `i` is the 16-bit
/// half `i mod 2` (low first) of word `⌊i/2⌋`, as in the stochastic scheme.
fn draws_at(key: RngKey, e0: usize, out: &mut [u16]) {
    let mut rng = key.stream_at((e0 / 2) as u64);
    let mut word = 0u32;
    for (i, o) in (e0..).zip(out.iter_mut()) {
        let low = i.is_multiple_of(2);
        if low || i == e0 {
            word = rand_core::RngCore::next_u32(&mut rng);
        }
        *o = if low {
            word as u16
        } else {
            (word >> 16) as u16
        };
    }
}

/// The parts of a [`crate::PackedAccumulator`] that one dithered step reads and writes.
pub(crate) struct Held<'a> {
    /// Elements per block.
    pub block: usize,
    /// Trits per element.
    pub n: u8,
    /// Micro-batches already in (the step about to run is `count + 1`).
    pub count: usize,
    /// Run seed and tensor id of the streams.
    pub seed: u64,
    /// Tensor id of the streams.
    pub tensor_id: u64,
    /// The rounding (its `lambda`).
    pub rounding: Rounding,
    /// Scale format.
    pub fmt: ScaleFormat,
    /// Level bytes.
    pub trits: &'a mut [u8],
    /// `F32`: the block scales; `Log8`: `[R]`.
    pub scales: &'a mut [f32],
    /// `Log8`: the block codes.
    pub codes: &'a mut [u8],
}

/// Block `bi`'s scale under reference `r` (`Log8`) or from `scales` (`F32`).
#[inline]
fn scale_of(fmt: ScaleFormat, scales: &[f32], codes: &[u8], r: f32, bi: usize) -> f32 {
    match fmt {
        ScaleFormat::F32 => scales[bi],
        ScaleFormat::Log8 => log8_scale(r, codes[bi]),
    }
}

/// Writes the decoded held values `(q + λ·(w − ½))·unit_j` of elements `t0..t1` (a run
/// inside whole blocks starting at a multiple of 5) into `out`, `unit(e)` giving the level
/// unit of element `e`'s block.
#[allow(clippy::too_many_arguments)]
fn decode_run(
    n: u8,
    trits: &[u8],
    key: Option<RngKey>,
    lambda: f32,
    t0: usize,
    out: &mut [f32],
    r: &mut [u16],
    unit: impl Fn(usize) -> f32,
) {
    let nn = usize::from(n);
    let t1 = t0 + out.len();
    decode_levels_f32(n, &trits[nn * t0 / 5..(nn * t1).div_ceil(5)], out);
    if let Some(key) = key.filter(|_| lambda > 0.0) {
        let r = &mut r[..out.len()];
        draws_at(key, t0, r);
        for (o, &rw) in out.iter_mut().zip(r.iter()) {
            *o += lambda * centred(rw);
        }
    }
    for (j, o) in out.iter_mut().enumerate() {
        *o *= unit(t0 + j);
    }
}

/// The monotone stochastic rounding `q = ⌊y⌋ + [w < frac y]` of `y = v/unit` (clamped to
/// `[−L, L]`), `(pre, inv)` the prescale pair of the unit.
#[inline]
fn round_levels(v: &[f32], r: &[u16], pre: f32, inv: f32, l: f32, q: &mut [i8]) {
    for ((o, &x), &rw) in q.iter_mut().zip(v).zip(r) {
        let y = ((x * pre) * inv).clamp(-l, l);
        // y + L >= 0, so truncation is floor; f32 rounding of y + L may land on the next
        // integer, which the correction below undoes (f stays in [0, 1)).
        let mut fl = ((y + l) as i32) as f32 - l;
        if fl > y {
            fl -= 1.0;
        }
        let f = y - fl;
        let w = (f32::from(rw) + 0.5) * (1.0 / 65_536.0);
        let up = if w < f { 1.0 } else { 0.0 };
        *o = (fl + up).clamp(-l, l) as i8;
    }
}

/// One dithered step (after validation; cannot fail): `v = a·m̂ + b·g` with the held state
/// decoded as in [`mean_into`], then each block rounded with the step's fresh draws.
/// `gmax = max|g|`. Allocation-free: stack tiles only.
pub(crate) fn step(h: Held<'_>, grad: &[f32], gmax: f32) {
    let len = grad.len();
    let k = h.count + 1;
    let (a, b) = (h.count as f32 / k as f32, 1.0 / k as f32);
    let l = max_level(h.n) as f32;
    let lam = h.rounding.lambda_at(h.count, h.n);
    let prev = (h.count > 0).then(|| RngKey::new(h.seed, (h.count - 1) as u64, h.tensor_id));
    let next = RngKey::new(h.seed, h.count as u64, h.tensor_id);
    // Log8: R bounds every |v|: |m̂| <= s·(1 + λ/(2L)) <= R_old·(1 + λ/(2L)).
    let r_old = h.scales.first().copied().unwrap_or(0.0);
    let r_new = (a * (r_old * (1.0 + lam / (2.0 * l))) + b * gmax).min(f32::MAX);
    let nn = usize::from(h.n);
    let blocks = len.div_ceil(h.block);
    let (mut v, mut r, mut q) = ([0f32; TILE], [0u16; TILE], [0i8; TILE]);
    let (fmt, block) = (h.fmt, h.block);
    let choose = |stat: f32| -> (f32, u8) {
        match fmt {
            ScaleFormat::F32 => (stat, 0),
            ScaleFormat::Log8 => {
                let c = if stat == 0.0 {
                    ZERO_CODE
                } else if stat >= r_new {
                    0
                } else {
                    log8_code(r_new, stat)
                };
                (log8_scale(r_new, c), c)
            }
        }
    };
    // Values of elements t0..t1 (inside block bi) into v[..t1 − t0].
    let values =
        |trits: &[u8], old_unit: f32, t0: usize, t1: usize, v: &mut [f32], r: &mut [u16]| {
            let vt = &mut v[..t1 - t0];
            decode_run(h.n, trits, prev, lam, t0, vt, r, |_| old_unit);
            for (x, &g) in vt.iter_mut().zip(&grad[t0..t1]) {
                *x = (a * *x + b * g).clamp(-f32::MAX, f32::MAX);
            }
        };
    for bi in 0..blocks {
        let (e0, e1) = (bi * block, ((bi + 1) * block).min(len));
        let old_unit = scale_of(fmt, h.scales, h.codes, r_old, bi) / l;
        // Pass 1: the block maximum.
        let mut mx = 0f32;
        for t0 in (e0..e1).step_by(TILE) {
            let t1 = (t0 + TILE).min(e1);
            values(h.trits, old_unit, t0, t1, &mut v, &mut r);
            mx = v[..t1 - t0].iter().fold(mx, |m, x| m.max(x.abs()));
        }
        let (scale, code) = choose(mx);
        let (pre, inv) = if scale == 0.0 {
            (0.0, 0.0)
        } else {
            prescale(scale / l)
        };
        // Pass 2: round (the values again unless the block was one tile, still in `v`).
        for t0 in (e0..e1).step_by(TILE) {
            let t1 = (t0 + TILE).min(e1);
            if e1 - e0 > TILE {
                values(h.trits, old_unit, t0, t1, &mut v, &mut r);
            }
            let m = t1 - t0;
            // The draws are taken even for a zero block: positions stay element-indexed.
            draws_at(next, t0, &mut r[..m]);
            if scale == 0.0 {
                q[..m].fill(0);
            } else {
                round_levels(&v[..m], &r[..m], pre, inv, l, &mut q[..m]);
            }
            encode_levels(
                h.n,
                &q[..m],
                &mut h.trits[nn * t0 / 5..(nn * t1).div_ceil(5)],
            );
        }
        match fmt {
            ScaleFormat::F32 => h.scales[bi] = scale,
            ScaleFormat::Log8 => h.codes[bi] = code,
        }
    }
    if fmt == ScaleFormat::Log8 {
        h.scales[0] = r_new;
    }
}

/// Writes the dithered decode of the held state into `out` (`out.len()` elements; zeros
/// before the first micro-batch).
#[allow(clippy::too_many_arguments)]
pub(crate) fn mean_into(
    block: usize,
    n: u8,
    count: usize,
    key_parts: (u64, u64),
    rounding: Rounding,
    fmt: ScaleFormat,
    held: (&[u8], &[f32], &[u8]),
    out: &mut [f32],
) {
    let (trits, scales, codes) = held;
    let l = max_level(n) as f32;
    let lam = rounding.lambda_at(count, n);
    let prev = (count > 0).then(|| RngKey::new(key_parts.0, (count - 1) as u64, key_parts.1));
    let r0 = scales.first().copied().unwrap_or(0.0);
    let mut r = [0u16; TILE];
    let len = out.len();
    for t0 in (0..len).step_by(TILE) {
        let t1 = (t0 + TILE).min(len);
        decode_run(n, trits, prev, lam, t0, &mut out[t0..t1], &mut r, |e| {
            scale_of(fmt, scales, codes, r0, e / block) / l
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_at_match_the_stochastic_positions() {
        let key = RngKey::new(9, 2, 4);
        let mut all = vec![0u16; 1001];
        crate::rng::Draws16::new(key).fill(&mut all);
        for (e0, m) in [(0usize, 1001usize), (1, 10), (25, 320), (333, 7), (1000, 1)] {
            let mut got = vec![0u16; m];
            draws_at(key, e0, &mut got);
            assert_eq!(got, all[e0..e0 + m], "e0 {e0}");
        }
    }

    #[test]
    fn centred_draws_have_mean_zero_and_range_half() {
        let sum: f64 = (0..=u16::MAX).map(|r| f64::from(centred(r))).sum();
        assert_eq!(sum, 0.0);
        assert_eq!(centred(0), -65_535.0 / 131_072.0);
        assert_eq!(centred(u16::MAX), 65_535.0 / 131_072.0);
    }

    #[test]
    fn rounding_is_monotone_and_unbiased_over_all_draws() {
        // Exhaustive over the 2^16 draws: E[q] is within 2^-17 of y, and q is floor/ceil.
        for y in [-3.7f32, -1.0, -0.25, 0.0, 0.3, 0.999, 2.5, 4.0] {
            let (mut sum, mut lo, mut hi) = (0f64, i8::MAX, i8::MIN);
            let mut q = [0i8; 1];
            for rw in 0..=u16::MAX {
                round_levels(&[y], &[rw], 1.0, 1.0, 4.0, &mut q);
                sum += f64::from(q[0]);
                lo = lo.min(q[0]);
                hi = hi.max(q[0]);
            }
            let mean = sum / 65_536.0;
            assert!(
                (mean - f64::from(y)).abs() <= 1.0 / 131_072.0,
                "y {y}: {mean}"
            );
            assert!(
                f32::from(lo) >= y.floor() && f32::from(hi) <= y.ceil(),
                "y {y}"
            );
        }
    }

    /// The tiled kernel equals an element-by-element reference with no tiles at all (one
    /// `stream_at` seek per element, blocks walked whole), bit for bit: so the result does
    /// not depend on the tiling, for blocks below, at and above the tile, a per-tensor
    /// block, odd lengths and every trit count.
    #[test]
    fn step_equals_an_untiled_reference() {
        let draw = |key: RngKey, i: usize| -> u16 {
            let w = rand_core::RngCore::next_u32(&mut key.stream_at((i / 2) as u64));
            if i.is_multiple_of(2) {
                w as u16
            } else {
                (w >> 16) as u16
            }
        };
        for n in crate::levels::SUPPORTED_TRITS {
            for (len, block) in [(703usize, 25usize), (703, 320), (1301, 640), (703, 705)] {
                let l = max_level(n) as f32;
                let rounding = Rounding::Subtractive { lambda: 0.8 };
                let gs: Vec<Vec<f32>> = (0..4)
                    .map(|k| {
                        (0..len)
                            .map(|i| {
                                (((i * 37 + k * 11) % 101) as f32 - 50.0) * 0.013 * (1 + k) as f32
                            })
                            .collect()
                    })
                    .collect();
                let nb = len.div_ceil(block);
                let mut trits = vec![crate::pack::BASE3_ZERO; crate::levels::levels_bytes(n, len)];
                let mut scales = vec![0f32; nb];
                // Reference state: levels and scales as plain vectors.
                let (mut rq, mut rs) = (vec![0i8; len], vec![0f32; nb]);
                for (count, g) in gs.iter().enumerate() {
                    let gmax = g.iter().fold(0f32, |m, x| m.max(x.abs()));
                    step(
                        Held {
                            block,
                            n,
                            count,
                            seed: 3,
                            tensor_id: 8,
                            rounding,
                            fmt: ScaleFormat::F32,
                            trits: &mut trits,
                            scales: &mut scales,
                            codes: &mut [],
                        },
                        g,
                        gmax,
                    );
                    let k = count + 1;
                    let (a, b) = (count as f32 / k as f32, 1.0 / k as f32);
                    let lam = rounding.lambda_at(count, n);
                    let v: Vec<f32> = (0..len)
                        .map(|i| {
                            let mut m = f32::from(rq[i]);
                            if count > 0 && lam > 0.0 {
                                m += lam * centred(draw(RngKey::new(3, count as u64 - 1, 8), i));
                            }
                            let m = m * (rs[i / block] / l);
                            (a * m + b * g[i]).clamp(-f32::MAX, f32::MAX)
                        })
                        .collect();
                    for (bi, sb) in rs.iter_mut().enumerate() {
                        let e = bi * block..((bi + 1) * block).min(len);
                        let s = v[e.clone()].iter().fold(0f32, |m, x| m.max(x.abs()));
                        *sb = s;
                        for i in e {
                            rq[i] = 0;
                            if s > 0.0 {
                                let (pre, inv) = prescale(s / l);
                                let mut q = [0i8];
                                let r = draw(RngKey::new(3, count as u64, 8), i);
                                round_levels(&[v[i]], &[r], pre, inv, l, &mut q);
                                rq[i] = q[0];
                            }
                        }
                    }
                    let mut expect = vec![0u8; trits.len()];
                    crate::levels::pack_levels(n, &rq, &mut expect).unwrap();
                    assert_eq!(trits, expect, "n {n} len {len} block {block} step {k}");
                    assert_eq!(scales, rs, "n {n} len {len} block {block} step {k}");
                }
            }
        }
    }

    #[test]
    fn lambda_cap_and_validation() {
        let s = Rounding::SUBTRACTIVE;
        assert_eq!(s.lambda_at(0, 1), 0.0);
        assert_eq!(s.lambda_at(1, 1), 1.0);
        assert_eq!(s.lambda_at(4, 1), 0.5);
        assert_eq!(s.lambda_at(16, 2), 0.5);
        assert_eq!(Rounding::Stochastic.lambda_at(3, 2), 0.0);
        assert!(s.validate(true).is_ok());
        assert!(s.validate(false).is_err());
        for bad in [-0.1f32, 2.5, f32::NAN, f32::INFINITY] {
            assert!(
                Rounding::Subtractive { lambda: bad }
                    .validate(true)
                    .is_err()
            );
        }
    }
}
