//! The per-block requantization kernel of [`crate::PackedAccumulator`].
//!
//! Blocks of at most [`TILE`] elements are processed a stack tile of whole blocks at a time
//! ([`Step::blocks`]): the held levels are decoded, combined with the gradient into
//! `v = a·unit_old·level + b·g`, the block statistic is taken (`max|v|`, or `mean|v|` for
//! deterministic single-trit absmean), a scale is chosen, and `v` is requantized onto `L`
//! levels per sign with that scale. The default (stochastic, one trit) runs in whole-tile
//! loops that vectorize ([`Step::blocks`] hands it to `blocks_one_trit`); a larger block is
//! processed in tiles and decoded twice (statistic, then quantization), so no `O(len)`
//! scratch exists ([`Step::block`]). The call tree is `#[inline(always)]`, so that under
//! `crate::simd::Isa::run` every loop gets the lanes of the instruction set detected at run
//! time (eight `f32` lanes with AVX2).

use crate::levels::{decode_levels_f32, encode_levels};
use crate::pack::{BASE3_ZERO, pack_digits};
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
    d: [u8; TILE],
}

impl Scratch {
    pub(crate) fn new() -> Self {
        Self {
            v: [0.0; TILE],
            lv: [0.0; TILE],
            r: [0; TILE],
            q: [0; TILE],
            d: [0; TILE],
        }
    }
}

/// A block's scale as chosen for one step: the scale, its stored code (`Log8`; 0 for `f32`
/// scales) and the prescale pair of its level unit, `prescale(scale / L)` (`(0, 0)` for a
/// zero scale), which the rounding loops use.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Choice {
    pub scale: f32,
    pub code: u8,
    pub pre: f32,
    pub inv: f32,
}

impl Choice {
    /// The choice of `scale` (stored as `code`) for levels `1..=l`.
    #[inline(always)]
    pub(crate) fn new(scale: f32, code: u8, l: f32) -> Self {
        let (pre, inv) = if scale == 0.0 {
            (0.0, 0.0)
        } else {
            prescale(scale / l)
        };
        Self {
            scale,
            code,
            pre,
            inv,
        }
    }
}

/// A run of whole blocks for [`Step::blocks`] (`g.len() <= TILE`; only the tensor's last
/// block may be short).
pub(crate) struct Tile<'a> {
    /// The run's level bytes.
    pub bytes: &'a mut [u8],
    /// The run's gradient slice.
    pub g: &'a [f32],
    /// Elements per block.
    pub block: usize,
    /// Block `j`'s current level unit (`scale/L`).
    pub old_units: &'a [f32],
    /// Receives block `j`'s new `(scale, code)`.
    pub chosen: &'a mut [(f32, u8)],
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

#[inline(always)]
fn values(n: u8, bytes: &[u8], g: &[f32], a_u: f32, b: f32, lv: &mut [f32], v: &mut [f32]) {
    let lv = &mut lv[..g.len()];
    decode_levels_f32(n, bytes, lv);
    for ((o, &l), &gi) in v.iter_mut().zip(lv.iter()).zip(g) {
        *o = (a_u * l + b * gi).clamp(-f32::MAX, f32::MAX);
    }
}

/// `v = a_u·l + b·g` clamped to the finite range (a select, so that it vectorizes; `v` is
/// never NaN: every input is finite).
#[inline(always)]
fn value(l: f32, g: f32, a_u: f32, b: f32) -> f32 {
    let x = a_u * l + b * g;
    let x = if x < f32::MAX { x } else { f32::MAX };
    if x > -f32::MAX { x } else { -f32::MAX }
}

/// `max |v|` of finite values, in four lanes (`maxps`) with a tree reduction: equal to the
/// serial `fold(0, max)`, since the maximum of finite values does not depend on the order.
#[inline(always)]
fn max_abs_finite(vs: &[f32]) -> f32 {
    let gt = |a: f32, b: f32| if a > b { a } else { b };
    let mut acc = [0f32; 4];
    let (v4, vr) = vs.as_chunks::<4>();
    for v in v4 {
        for j in 0..4 {
            acc[j] = gt(v[j].abs(), acc[j]);
        }
    }
    let mx = vr.iter().fold(0f32, |m, x| gt(x.abs(), m));
    gt(gt(gt(acc[0], acc[2]), gt(acc[1], acc[3])), mx)
}

/// One stochastic trit as a base-3 digit (`q + 1`) from `y = (v·pre)·inv`, the element in
/// level units with its sign: [`stochastic_digits`] for one element, branch-free.
#[inline(always)]
fn digit(y: f32, rw: u16) -> u8 {
    let keep = f32::from(rw) * TWO_POW_M16 < y.abs();
    // A kept element has |y| > 0, so its sign bit is its sign: `s` is −1 for negative `y`
    // and 0 otherwise, `(s << 1) | 1` is ±1, and masking with `−keep` gives the trit (SSE2
    // integer ops, where the two compares it replaces cost more).
    let s = (y.to_bits() as i32) >> 31;
    let q = -i32::from(keep) & ((s << 1) | 1);
    (1 + q) as u8
}

/// Writes [`value`] of every element to `vs`; returns `max |v|`.
///
/// The maximum runs in eight lanes (`maxps`), so it vectorizes; the result equals the serial
/// `fold(0, max)` exactly, since `v` is finite and the maximum does not depend on the order.
#[inline(always)]
fn values_max(ls: &[f32], gs: &[f32], a_u: f32, b: f32, vs: &mut [f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (v8, vr) = vs.as_chunks_mut::<8>();
    let (l8, lr) = ls.as_chunks::<8>();
    let (g8, gr) = gs.as_chunks::<8>();
    for ((v, l), g) in v8.iter_mut().zip(l8).zip(g8) {
        for j in 0..8 {
            let x = value(l[j], g[j], a_u, b);
            v[j] = x;
            let y = x.abs();
            acc[j] = if y > acc[j] { y } else { acc[j] };
        }
    }
    let mut mx = 0f32;
    for ((o, &l), &g) in vr.iter_mut().zip(lr).zip(gr) {
        let x = value(l, g, a_u, b);
        *o = x;
        let y = x.abs();
        mx = if y > mx { y } else { mx };
    }
    // Tree reduction: three dependent steps instead of eight.
    let gt = |a: f32, b: f32| if a > b { a } else { b };
    let h: [f32; 4] = std::array::from_fn(|j| gt(acc[j], acc[j + 4]));
    gt(gt(gt(h[0], h[2]), gt(h[1], h[3])), mx)
}

impl Step {
    /// Requantizes a run of whole blocks of `block` elements (`g.len() <= TILE`; only the
    /// tensor's last block may be short) with one decode, one draw copy and one pack.
    /// Element by element identical to [`Step::block`] on each block in order.
    #[inline(always)]
    pub(crate) fn blocks(
        &self,
        tile: Tile<'_>,
        choose: impl Fn(f32) -> Choice,
        draws: Option<&mut Draws16>,
        scratch: &mut Scratch,
    ) {
        if self.n == 1
            && let Some(dr) = draws
        {
            return self.blocks_one_trit(tile, choose, dr, scratch);
        }
        let Tile {
            bytes,
            g,
            block,
            old_units,
            chosen,
        } = tile;
        let m = g.len();
        let Scratch { v, lv, r, q, d, .. } = scratch;
        decode_levels_f32(self.n, bytes, &mut lv[..m]);
        let absmean = !self.stochastic && self.n == 1;
        let stochastic = draws.is_some();
        // One stochastic trit per element: digits straight from the comparison.
        let digits = stochastic && self.n == 1;
        if let Some(dr) = draws {
            dr.fill(&mut r[..m]);
        }
        // Three passes over the blocks (values and statistics, scales, rounding), so that
        // the short dependency chain of one block (maximum, code, reciprocal) overlaps with
        // the next block's instead of stalling the loop.
        let nbk = m.div_ceil(block);
        let mut stats = [0f32; TILE / 5];
        for (j, st) in stats[..nbk].iter_mut().enumerate() {
            let (e0, e1) = (j * block, ((j + 1) * block).min(m));
            let (gs, ls, vs) = (&g[e0..e1], &lv[e0..e1], &mut v[e0..e1]);
            let a_u = self.a * old_units[j];
            *st = if absmean {
                for ((o, &l), &gi) in vs.iter_mut().zip(ls).zip(gs) {
                    *o = value(l, gi, a_u, self.b);
                }
                let sum = vs.iter().map(|x| f64::from(x.abs())).sum::<f64>();
                (sum / vs.len().max(1) as f64) as f32
            } else {
                values_max(ls, gs, a_u, self.b, vs)
            };
        }
        let mut pre_inv = [(0f32, 0f32); TILE / 5];
        for ((c, &st), pi) in chosen.iter_mut().zip(&stats[..nbk]).zip(&mut pre_inv) {
            let ch = choose(st);
            *c = (ch.scale, ch.code);
            *pi = (ch.pre, ch.inv);
        }
        for (j, &(scale, _)) in chosen[..nbk].iter().enumerate() {
            let (e0, e1) = (j * block, ((j + 1) * block).min(m));
            let (vs, rs) = (&v[e0..e1], &r[e0..e1]);
            if scale == 0.0 {
                q[e0..e1].fill(0);
                d[e0..e1].fill(1);
                continue;
            }
            let (pre, inv) = pre_inv[j];
            if digits {
                stochastic_digits(vs, rs, pre, inv, &mut d[e0..e1]);
            } else if stochastic {
                stochastic_levels(vs, rs, pre, inv, self.l, &mut q[e0..e1]);
            } else if absmean {
                crate::quant::threshold_trits(vs, scale, 2.0, &mut q[e0..e1]);
            } else {
                nearest_levels(vs, pre, inv, self.l, &mut q[e0..e1]);
            }
        }
        if digits {
            pack_digits(&d[..m], bytes);
        } else {
            encode_levels(self.n, &q[..m], bytes);
        }
    }

    /// [`Step::blocks`] for stochastic rounding to one trit, the default: the same result,
    /// computed in whole-tile loops where it can be: the decode writes `a·unit_old·t` per
    /// block, the values and the rounding run over the whole tile, and only the block maxima,
    /// the scale choice and the scaling into level units (`y = (v·pre)·inv`, in place) are
    /// per block.
    #[inline(always)]
    fn blocks_one_trit(
        &self,
        tile: Tile<'_>,
        choose: impl Fn(f32) -> Choice,
        draws: &mut Draws16,
        scratch: &mut Scratch,
    ) {
        let (g, block, old_units) = (tile.g, tile.block, tile.old_units);
        let m = g.len();
        let nbk = m.div_ceil(block);
        let Scratch { v, lv, r, d, .. } = scratch;
        let (lv, v, r, d) = (&mut lv[..m], &mut v[..m], &mut r[..m], &mut d[..m]);
        // `a_u·l` straight from the decode table (`a_u·t` for the trit `t`: the same product).
        for ((c, bc), &u) in lv
            .chunks_mut(block)
            .zip(tile.bytes.chunks(block / 5))
            .zip(old_units)
        {
            crate::fused::dequantize_base3_unchecked(bc, self.a * u, c);
        }
        draws.fill(r);
        let b = self.b;
        for ((v, &al), &g) in v.iter_mut().zip(lv.iter()).zip(g) {
            *v = value(al, g, 1.0, b);
        }
        for (c, vs) in tile.chosen[..nbk].iter_mut().zip(v.chunks_mut(block)) {
            let ch = choose(max_abs_finite(vs));
            *c = (ch.scale, ch.code);
            // `v` becomes `y = (v·pre)·inv` in place: rounding is symmetric, so
            // `|y| = (|v|·pre)·inv`, the rounding loops' value, and `y` keeps `v`'s sign. A
            // zero scale has factors 0: `y = ±0`, never kept, so trit 0 as in `Step::blocks`.
            for x in vs.iter_mut() {
                *x = (*x * ch.pre) * ch.inv;
            }
        }
        for ((d, &y), &r) in d.iter_mut().zip(v.iter()).zip(r.iter()) {
            *d = digit(y, r);
        }
        pack_digits(d, tile.bytes);
    }

    /// Requantizes one block in place. `bytes` are the block's level bytes, `g` its gradient
    /// slice, `old_unit` its current level unit (`scale/L`). `choose` maps the block
    /// statistic to the stored `(scale, code)`; `draws` supplies one 16-bit draw per element
    /// (consumed even for an all-zero block, so that positions stay element-indexed).
    /// Returns what `choose` returned.
    #[inline(always)]
    pub(crate) fn block(
        &self,
        bytes: &mut [u8],
        g: &[f32],
        old_unit: f32,
        choose: impl Fn(f32) -> Choice,
        mut draws: Option<&mut Draws16>,
        scratch: &mut Scratch,
    ) -> (f32, u8) {
        let Scratch { v, lv, r, q, .. } = scratch;
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
        let ch = choose(stat);
        let (scale, code) = (ch.scale, ch.code);
        if scale == 0.0 {
            bytes.fill(BASE3_ZERO);
            if let Some(d) = draws {
                for t0 in (0..nb).step_by(TILE) {
                    d.fill(&mut r[..(nb - t0).min(TILE)]);
                }
            }
            return (scale, code);
        }
        let (pre, inv) = (ch.pre, ch.inv);
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
#[inline(always)]
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
#[inline(always)]
fn stochastic_trits(v: &[f32], r: &[u16], pre: f32, inv: f32, q: &mut [i8]) {
    for ((o, &x), &rw) in q.iter_mut().zip(v).zip(r) {
        let keep = (f32::from(rw) * TWO_POW_M16 < (x.abs() * pre) * inv) as i8;
        *o = keep * ((x > 0.0) as i8 - (x < 0.0) as i8);
    }
}

/// [`stochastic_trits`] written as base-3 digits `q + 1` (0, 1 or 2), ready for
/// [`pack_digits`].
#[inline(always)]
fn stochastic_digits(v: &[f32], r: &[u16], pre: f32, inv: f32, d: &mut [u8]) {
    for ((o, &x), &rw) in d.iter_mut().zip(v).zip(r) {
        let keep = (f32::from(rw) * TWO_POW_M16 < (x.abs() * pre) * inv) as i8;
        *o = (1 + keep * ((x > 0.0) as i8 - (x < 0.0) as i8)) as u8;
    }
}

/// Deterministic nearest level (half away from zero), signed like `v`.
#[inline(always)]
fn nearest_levels(v: &[f32], pre: f32, inv: f32, l: f32, q: &mut [i8]) {
    for (o, &x) in q.iter_mut().zip(v) {
        let y = ((x.abs() * pre) * inv).min(l);
        let m = (((y + 0.5) as i32) as f32).min(l) as i8;
        *o = m * ((x > 0.0) as i8 - (x < 0.0) as i8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::levels::{encode_levels, levels_bytes, max_level};
    use crate::rng::RngKey;

    /// The tile kernels ([`Step::blocks`], whole-tile one-trit loops included) give the same
    /// bytes, scales and codes as [`Step::block`] run block by block with the same draws:
    /// every trit count, both rounding modes, full and short last blocks, zero blocks,
    /// with a scale choice that rounds up (as `Log8` does) so the levels are not all ±L.
    #[test]
    fn tile_kernels_equal_the_per_block_kernel() {
        for n in crate::levels::SUPPORTED_TRITS {
            for stochastic in [true, false] {
                for (block, m) in [
                    (25usize, 300usize),
                    (25, 290),
                    (5, 7),
                    (320, 320),
                    (80, 203),
                ] {
                    let l = max_level(n) as f32;
                    let step = Step {
                        n,
                        l,
                        stochastic,
                        a: 0.75,
                        b: 0.25,
                    };
                    let g: Vec<f32> = (0..m)
                        .map(|i| {
                            if i / block == 1 {
                                0.0
                            } else {
                                ((i * 37 % 101) as f32 - 50.0) * 0.01 * (1 + i / block) as f32
                            }
                        })
                        .collect();
                    // Some held levels, and per-block old units.
                    let held: Vec<i8> = (0..m)
                        .map(|i| {
                            ((i * 7 % (2 * max_level(n) as usize + 1)) as i32 - max_level(n)) as i8
                        })
                        .collect();
                    let mut start = vec![0u8; levels_bytes(n, m)];
                    encode_levels(n, &held, &mut start);
                    let nbk = m.div_ceil(block);
                    let units: Vec<f32> = (0..nbk).map(|j| 0.01 * (j + 1) as f32 / l).collect();
                    let choose = |stat: f32| Choice::new(stat * 1.0625, 3, l);
                    let key = RngKey::new(5, 2, u64::from(n));

                    let mut tiled = start.clone();
                    let mut chosen = vec![(0f32, 0u8); nbk];
                    let mut draws = Draws16::new(key);
                    let tile = Tile {
                        bytes: &mut tiled,
                        g: &g,
                        block,
                        old_units: &units,
                        chosen: &mut chosen,
                    };
                    step.blocks(
                        tile,
                        choose,
                        stochastic.then_some(&mut draws),
                        &mut Scratch::new(),
                    );

                    let mut single = start.clone();
                    let mut draws = Draws16::new(key);
                    let nn = usize::from(n);
                    for j in 0..nbk {
                        let (e0, e1) = (j * block, ((j + 1) * block).min(m));
                        let got = step.block(
                            &mut single[nn * e0 / 5..(nn * e1).div_ceil(5)],
                            &g[e0..e1],
                            units[j],
                            choose,
                            stochastic.then_some(&mut draws),
                            &mut Scratch::new(),
                        );
                        assert_eq!(got, chosen[j], "n {n} block {block} m {m} j {j}");
                    }
                    assert_eq!(
                        tiled, single,
                        "n {n} stochastic {stochastic} block {block} m {m}"
                    );
                }
            }
        }
    }
}
