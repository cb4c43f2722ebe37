//! The per-block requantization kernel of [`crate::PackedAccumulator`].
//!
//! One block is processed in 320-element stack tiles: the held levels are decoded, combined
//! with the gradient into `v = a·unit_old·level + b·g`, the block statistic is taken
//! (`max|v|`, or `mean|v|` for deterministic single-trit absmean), a scale is chosen, and
//! `v` is requantized onto `L` levels per sign with that scale. A block of at most one tile
//! is decoded once; a longer block is decoded twice (statistic, then quantization), so no
//! `O(len)` scratch exists.

use crate::levels::{decode_levels_f32, encode_levels};
use crate::pack::BASE3_ZERO;
use crate::quant::prescale;
use crate::rng::Draws16;

/// Elements per stack tile.
pub(crate) const TILE: usize = 320;

/// `2^-16`: a 16-bit draw as a uniform in `[0, 1)`.
const TWO_POW_M16: f32 = 1.0 / 65_536.0;

/// Stack tiles reused across the blocks of one step (so that small blocks do not pay for
/// zeroing them again).
pub(crate) struct Scratch {
    v: [f32; TILE],
    lv: [f32; TILE],
    r: [u16; TILE],
    q: [i8; TILE],
}

impl Scratch {
    pub(crate) fn new() -> Self {
        Self {
            v: [0.0; TILE],
            lv: [0.0; TILE],
            r: [0; TILE],
            q: [0; TILE],
        }
    }
}

/// What one step does to every block.
pub(crate) struct Step {
    /// Trits per element.
    pub n: u8,
    /// `L` as `f32`.
    pub l: f32,
    /// Stochastic (unbiased) or deterministic requantization.
    pub stochastic: bool,
    /// Weight of the held mean, `(k−1)/k`.
    pub a: f32,
    /// Weight of the new gradient, `1/k`.
    pub b: f32,
}

/// Byte range, relative to the block's first byte, of elements `t0..t1` of the block.
#[inline]
fn tile_bytes(n: usize, t0: usize, t1: usize) -> (usize, usize) {
    (n * t0 / 5, (n * t1).div_ceil(5))
}

#[inline]
fn values(n: u8, bytes: &[u8], g: &[f32], a_u: f32, b: f32, lv: &mut [f32], v: &mut [f32]) {
    let lv = &mut lv[..g.len()];
    decode_levels_f32(n, bytes, lv);
    for ((o, &l), &gi) in v.iter_mut().zip(lv.iter()).zip(g) {
        *o = (a_u * l + b * gi).clamp(-f32::MAX, f32::MAX);
    }
}

impl Step {
    /// Requantizes a run of whole blocks of `block` elements (`g.len() <= TILE`; only the
    /// tensor's last block may be short) with one decode, one draw copy and one pack.
    /// Element by element identical to [`Step::block`] on each block in order.
    /// `old_units[j]` is block `j`'s current level unit; `chosen[j]` receives its
    /// `(scale, code)`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn blocks(
        &self,
        bytes: &mut [u8],
        g: &[f32],
        block: usize,
        old_units: &[f32],
        choose: impl Fn(f32) -> (f32, u8),
        draws: Option<&mut Draws16>,
        scratch: &mut Scratch,
        chosen: &mut [(f32, u8)],
    ) {
        let m = g.len();
        let Scratch { v, lv, r, q } = scratch;
        decode_levels_f32(self.n, bytes, &mut lv[..m]);
        let absmean = !self.stochastic && self.n == 1;
        let stochastic = draws.is_some();
        if let Some(d) = draws {
            d.fill(&mut r[..m]);
        }
        let parts = g
            .chunks(block)
            .zip(lv[..m].chunks(block))
            .zip(v[..m].chunks_mut(block))
            .zip(q[..m].chunks_mut(block))
            .zip(r[..m].chunks(block));
        for (j, ((((gs, ls), vs), qs), rs)) in parts.enumerate() {
            let a_u = self.a * old_units[j];
            for ((o, &l), &gi) in vs.iter_mut().zip(ls).zip(gs) {
                *o = (a_u * l + self.b * gi).clamp(-f32::MAX, f32::MAX);
            }
            let stat = if absmean {
                let sum = vs.iter().map(|x| f64::from(x.abs())).sum::<f64>();
                (sum / vs.len().max(1) as f64) as f32
            } else {
                vs.iter().fold(0f32, |m, x| m.max(x.abs()))
            };
            let (scale, code) = choose(stat);
            chosen[j] = (scale, code);
            if scale == 0.0 {
                qs.fill(0);
                continue;
            }
            let (pre, inv) = prescale(scale / self.l);
            if stochastic {
                if self.n == 1 {
                    stochastic_trits(vs, rs, pre, inv, qs);
                } else {
                    stochastic_levels(vs, rs, pre, inv, self.l, qs);
                }
            } else if absmean {
                crate::quant::threshold_trits(vs, scale, 2.0, qs);
            } else {
                nearest_levels(vs, pre, inv, self.l, qs);
            }
        }
        encode_levels(self.n, &q[..m], bytes);
    }

    /// Requantizes one block in place. `bytes` are the block's level bytes, `g` its gradient
    /// slice, `old_unit` its current level unit (`scale/L`). `choose` maps the block
    /// statistic to the stored `(scale, code)`; `draws` supplies one 16-bit draw per element
    /// (consumed even for an all-zero block, so that positions stay element-indexed).
    /// Returns what `choose` returned.
    pub(crate) fn block(
        &self,
        bytes: &mut [u8],
        g: &[f32],
        old_unit: f32,
        choose: impl Fn(f32) -> (f32, u8),
        mut draws: Option<&mut Draws16>,
        scratch: &mut Scratch,
    ) -> (f32, u8) {
        let Scratch { v, lv, r, q } = scratch;
        let nb = g.len();
        let n = usize::from(self.n);
        let a_u = self.a * old_unit;
        let absmean = !self.stochastic && self.n == 1;
        let (mut mx, mut sum) = (0f32, 0f64);
        for t0 in (0..nb).step_by(TILE) {
            let t1 = (t0 + TILE).min(nb);
            let (b0, b1) = tile_bytes(n, t0, t1);
            let vt = &mut v[..t1 - t0];
            values(self.n, &bytes[b0..b1], &g[t0..t1], a_u, self.b, lv, vt);
            if absmean {
                sum += vt.iter().map(|x| f64::from(x.abs())).sum::<f64>();
            } else {
                mx = vt.iter().fold(mx, |m, x| m.max(x.abs()));
            }
        }
        let stat = if absmean {
            (sum / nb.max(1) as f64) as f32
        } else {
            mx
        };
        let (scale, code) = choose(stat);
        if scale == 0.0 {
            bytes.fill(BASE3_ZERO);
            if let Some(d) = draws {
                for t0 in (0..nb).step_by(TILE) {
                    d.fill(&mut r[..(nb - t0).min(TILE)]);
                }
            }
            return (scale, code);
        }
        let unit = scale / self.l;
        let (pre, inv) = prescale(unit);
        let single = nb <= TILE;
        for t0 in (0..nb).step_by(TILE) {
            let t1 = (t0 + TILE).min(nb);
            let m = t1 - t0;
            let (b0, b1) = tile_bytes(n, t0, t1);
            if !single {
                values(
                    self.n,
                    &bytes[b0..b1],
                    &g[t0..t1],
                    a_u,
                    self.b,
                    lv,
                    &mut v[..m],
                );
            }
            let (vt, qt) = (&v[..m], &mut q[..m]);
            if let Some(d) = draws.as_deref_mut() {
                let rt = &mut r[..m];
                d.fill(rt);
                if self.n == 1 {
                    stochastic_trits(vt, rt, pre, inv, qt);
                } else {
                    stochastic_levels(vt, rt, pre, inv, self.l, qt);
                }
            } else if absmean {
                crate::quant::threshold_trits(vt, scale, 2.0, qt);
            } else {
                nearest_levels(vt, pre, inv, self.l, qt);
            }
            encode_levels(self.n, qt, &mut bytes[b0..b1]);
        }
        (scale, code)
    }
}

/// Unbiased stochastic rounding of `y = |v|/unit ∈ [0, L]` to `⌊y⌋` or `⌊y⌋ + 1`, the latter
/// with probability `⌈frac(y)·2^16⌉/2^16` (draw `r` below it), signed like `v`.
#[inline]
fn stochastic_levels(v: &[f32], r: &[u16], pre: f32, inv: f32, l: f32, q: &mut [i8]) {
    for ((o, &x), &rw) in q.iter_mut().zip(v).zip(r) {
        let y = ((x.abs() * pre) * inv).min(l);
        // y >= 0, so truncation is floor (and one SSE2 instruction, unlike `floor`).
        let fl = (y as i32) as f32;
        let up = (f32::from(rw) * TWO_POW_M16 < y - fl) as i32 as f32;
        let m = (fl + up).min(l) as i8;
        *o = m * ((x > 0.0) as i8 - (x < 0.0) as i8);
    }
}

/// [`stochastic_levels`] for `L = 1` without float-to-integer conversions (the same trits:
/// `⌊y⌋ + [r < frac y]` is `[r < y]` for `y < 1`, and 1 for `y >= 1`).
#[inline]
fn stochastic_trits(v: &[f32], r: &[u16], pre: f32, inv: f32, q: &mut [i8]) {
    for ((o, &x), &rw) in q.iter_mut().zip(v).zip(r) {
        let keep = (f32::from(rw) * TWO_POW_M16 < (x.abs() * pre) * inv) as i8;
        *o = keep * ((x > 0.0) as i8 - (x < 0.0) as i8);
    }
}

/// Deterministic nearest level (half away from zero), signed like `v`.
#[inline]
fn nearest_levels(v: &[f32], pre: f32, inv: f32, l: f32, q: &mut [i8]) {
    for (o, &x) in q.iter_mut().zip(v) {
        let y = ((x.abs() * pre) * inv).min(l);
        let m = (((y + 0.5) as i32) as f32).min(l) as i8;
        *o = m * ((x > 0.0) as i8 - (x < 0.0) as i8);
    }
}
