//! The per-block requantization kernel of [`crate::PackedAccumulator`].
//!
//! Blocks of at most [`TILE`] elements are processed a stack tile of whole blocks at a time
//! ([`Step::blocks`]): the held levels are decoded, combined with the gradient into
//! `v = a·unit_old·level + b·g`, the block statistic is taken (`max|v|`, or `mean|v|` for
//! deterministic single-trit absmean), a scale is chosen, and `v` is requantized onto `L`
//! levels per sign with that scale. The default (stochastic, one trit) runs in whole-tile
//! loops that vectorize ([`Step::blocks`] hands it to `blocks_one_trit`); a larger block is
//! processed in tiles and decoded twice (statistic, then quantization), so no `O(len)`
//! scratch exists ([`Step::block`]).
//!
//! Stochastic rounding takes one 8-bit draw per element ([`Draws8`]: four per ChaCha8 word)
//! and compares it with `t = 256·p`, `p` the probability of rounding up; the draw decides
//! alone unless `⌊t⌋` equals it (probability `2^-8`), and then a refinement keyed by the
//! element index decides, so the probability is `p` up to `2^-32` (`docs/ternary.md` §3.1).

use crate::levels::{decode_levels_f32, encode_levels};
use crate::pack::{BASE3_ZERO, pack_digits};
use crate::quant::prescale;
use crate::rng::{Draws8, round_up_fast};

/// Elements per stack tile.
pub(crate) const TILE: usize = 320;

/// Stack tiles reused across the blocks of one step (so that small blocks do not pay for
/// zeroing them again).
pub(crate) struct Scratch {
    v: [f32; TILE],
    lv: [f32; TILE],
    r: [u8; TILE],
    q: [i8; TILE],
    d: [u8; TILE],
    di: [i32; TILE],
}

impl Scratch {
    pub(crate) fn new() -> Self {
        Self {
            v: [0.0; TILE],
            lv: [0.0; TILE],
            r: [0; TILE],
            q: [0; TILE],
            d: [0; TILE],
            di: [0; TILE],
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
    #[inline]
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

#[inline]
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

/// One stochastic trit as a base-3 digit (`q + 1`, as `i32` so that the vector loop stays in
/// 32-bit lanes) from `t`, the element's probability of being kept times 256 with the
/// element's sign, and its 8-bit draw, branch-free; and whether the draw tied (then the
/// digit is the "not kept" one, 1, and [`digits_8`] decides it with the refinement).
#[inline(always)]
fn digit_8(t: f32, r8: u8) -> (i32, bool) {
    let (keep, tie) = round_up_fast(t.abs(), r8);
    // A kept element has |t| > 0, so its sign bit is its sign: `s` is −1 for negative `t`
    // and 0 otherwise, `(s << 1) | 1` is ±1, and masking with `−keep` gives the trit (SSE2
    // integer ops, where the two compares it replaces cost more).
    let s = (t.to_bits() as i32) >> 31;
    let q = -i32::from(keep) & ((s << 1) | 1);
    (1 + q, tie)
}

/// The exact digit of element `index` ([`digit_8`] with a tie decided by the refinement).
#[cold]
#[inline(never)]
fn tied_digit(t: f32, r8: u8, dr: &Draws8, index: u64) -> i32 {
    let keep = dr.round_up(t.abs(), r8, index);
    1 + i32::from(keep) * if t < 0.0 { -1 } else { 1 }
}

/// [`digit_8`] of 16 elements into `d`; whether any of them tied.
#[inline(always)]
fn digits_16(t: &[f32; 16], r: &[u8; 16], d: &mut [i32; 16]) -> bool {
    let mut any = 0u32;
    for j in 0..16 {
        let (dj, tie) = digit_8(t[j], r[j]);
        d[j] = dj;
        any |= u32::from(tie);
    }
    any != 0
}

/// One-trit digits `q + 1` of `t` (see [`digit_8`]) with 8-bit draws `r` of elements
/// `base, base + 1, …`, written to `d` (through `di`): [`digit_8`] in chunks of 16 in
/// 32-bit lanes, noting which chunks hold a tie, then the rare ties (probability `2^-8` per
/// element) redone exactly, then one narrowing pass to bytes.
#[inline]
fn digits_8(t: &[f32], r: &[u8], dr: &Draws8, base: u64, di: &mut [i32], d: &mut [u8]) {
    let (t16, t_rest) = t.as_chunks::<16>();
    let (r16, r_rest) = r.as_chunks::<16>();
    let (d16, d_rest) = di.as_chunks_mut::<16>();
    let mut tied = [false; TILE / 16];
    for (((dc, tc), rc), f) in d16.iter_mut().zip(t16).zip(r16).zip(&mut tied) {
        *f = digits_16(tc, rc, dc);
    }
    let full = 16 * t16.len();
    let mut rest_tied = false;
    if !t_rest.is_empty() {
        // The short last chunk through padded copies (`t = 0` pads: digit 1, never a tie).
        let (mut tc, mut rc, mut dc) = ([0f32; 16], [0u8; 16], [0i32; 16]);
        tc[..t_rest.len()].copy_from_slice(t_rest);
        rc[..t_rest.len()].copy_from_slice(r_rest);
        rest_tied = digits_16(&tc, &rc, &mut dc);
        d_rest.copy_from_slice(&dc[..t_rest.len()]);
    }
    let chunks = tied[..t16.len()].iter().chain([&rest_tied]).enumerate();
    for (c, _) in chunks.filter(|(_, f)| **f) {
        // The chunk's ties as a bit mask, branch-free (a tie is a coin flip per element, so
        // a branch per element would mispredict), then one refinement per set bit.
        let i0 = 16 * c;
        let i1 = (i0 + 16).min(t.len());
        let mut mask = 0u32;
        for (j, (&tj, &rj)) in t[i0..i1].iter().zip(&r[i0..i1]).enumerate() {
            mask |= u32::from(digit_8(tj, rj).1) << j;
        }
        while mask != 0 {
            let i = i0 + mask.trailing_zeros() as usize;
            di[i] = tied_digit(t[i], r[i], dr, base + i as u64);
            mask &= mask - 1;
        }
    }
    // Digits are 0, 1 or 2: the narrowing is exact. In chunks of 16, so that it runs as
    // vector packs rather than a byte store per element.
    let (o16, o_rest) = d.as_chunks_mut::<16>();
    for (o, x) in o16.iter_mut().zip(di.as_chunks::<16>().0) {
        for j in 0..16 {
            o[j] = x[j] as u8;
        }
    }
    for (o, &x) in o_rest.iter_mut().zip(&di[full..]) {
        *o = x as u8;
    }
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
    pub(crate) fn blocks(
        &self,
        tile: Tile<'_>,
        choose: impl Fn(f32) -> Choice,
        mut draws: Option<&mut Draws8>,
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
        let base = draws.as_deref_mut().map_or(0, |dr| dr.fill(&mut r[..m]));
        let draws = draws.as_deref();
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
            let at = (draws, base + e0 as u64);
            if digits {
                stochastic_digits(vs, rs, at, pre, inv, &mut d[e0..e1]);
            } else if stochastic {
                stochastic_levels(vs, rs, at, pre, inv, self.l, &mut q[e0..e1]);
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
    /// the scale choices and the scaling into draw units (`t = (v·pre)·(256·inv)`, in place)
    /// are per block, each its own pass over the tile's blocks.
    fn blocks_one_trit(
        &self,
        tile: Tile<'_>,
        choose: impl Fn(f32) -> Choice,
        draws: &mut Draws8,
        scratch: &mut Scratch,
    ) {
        let (g, block, old_units) = (tile.g, tile.block, tile.old_units);
        let m = g.len();
        let nbk = m.div_ceil(block);
        let Scratch {
            v, lv, r, d, di, ..
        } = scratch;
        let (lv, v, r, d) = (&mut lv[..m], &mut v[..m], &mut r[..m], &mut d[..m]);
        // `a_u·l` straight from the decode table (`a_u·t` for the trit `t`: the same product).
        for ((c, bc), &u) in lv
            .chunks_mut(block)
            .zip(tile.bytes.chunks(block / 5))
            .zip(old_units)
        {
            crate::fused::dequantize_base3_unchecked(bc, self.a * u, c);
        }
        let base = draws.fill(r);
        // Three passes over the blocks (values and maxima, scale choices, scaling), so that
        // one block's dependency chain (maximum, code, factors) overlaps the next block's.
        let b = self.b;
        for ((v, &al), &g) in v.iter_mut().zip(lv.iter()).zip(g) {
            *v = value(al, g, 1.0, b);
        }
        let mut stats = [0f32; TILE / 5];
        for (st, vs) in stats[..nbk].iter_mut().zip(v.chunks(block)) {
            *st = max_abs_finite(vs);
        }
        // Separate scalars, not a pair: `choose` is not always inlined, and a pair loaded as
        // one 8-byte value from its two 4-byte stores would stall store forwarding.
        let (mut pres, mut invs) = ([0f32; TILE / 5], [0f32; TILE / 5]);
        for (((c, &st), p), i) in tile.chosen[..nbk]
            .iter_mut()
            .zip(&stats[..nbk])
            .zip(&mut pres)
            .zip(&mut invs)
        {
            let ch = choose(st);
            *c = (ch.scale, ch.code);
            (*p, *i) = (ch.pre, ch.inv);
        }
        // `v` becomes `t = (v·pre)·(256·inv)` in place: rounding is symmetric, so
        // `|t| = (|v|·pre)·(256·inv)`, the rounding loops' value, and `t` keeps `v`'s sign. A
        // zero scale has factors 0: `t = ±0`, never kept, so trit 0 as in `Step::blocks`.
        for ((vs, &pre), &inv) in v.chunks_mut(block).zip(&pres[..nbk]).zip(&invs[..nbk]) {
            let inv256 = inv * 256.0;
            for x in vs.iter_mut() {
                *x = (*x * pre) * inv256;
            }
        }
        digits_8(v, r, draws, base, &mut di[..m], d);
        pack_digits(d, tile.bytes);
    }

    /// Requantizes one block in place. `bytes` are the block's level bytes, `g` its gradient
    /// slice, `old_unit` its current level unit (`scale/L`). `choose` maps the block
    /// statistic to the stored `(scale, code)`; `draws` supplies one 8-bit draw per element
    /// (consumed even for an all-zero block, so that positions stay element-indexed).
    /// Returns what `choose` returned.
    pub(crate) fn block(
        &self,
        bytes: &mut [u8],
        g: &[f32],
        old_unit: f32,
        choose: impl Fn(f32) -> Choice,
        mut draws: Option<&mut Draws8>,
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
                let first = d.fill(rt);
                let at = (Some(&*d), first);
                if self.n == 1 {
                    stochastic_trits(vt, rt, at, pre, inv, qt);
                } else {
                    stochastic_levels(vt, rt, at, pre, inv, self.l, qt);
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

/// The draws of a run and the element index of its first draw (`None` only when the run
/// is deterministic).
type At<'a> = (Option<&'a Draws8>, u64);

/// A tie's decision for element `i` of a run, out of line (inlined, the compiler may
/// evaluate the refinement for every element and select, instead of branching on the rare
/// tie).
#[cold]
#[inline(never)]
fn tied_up(at: At<'_>, i: usize, t: f32, r8: u8) -> bool {
    at.0.is_some_and(|dr| dr.round_up(t, r8, at.1 + i as u64))
}

/// Runs `decide(i, x, r8, up)` over a run with the fast 8-bit decisions `up` of `t(x)` (see
/// [`round_up_fast`]); if any element tied, runs it again on the tied elements with their
/// exact decisions. The first pass is branch-free; ties have probability `2^-8`.
#[inline(always)]
fn decide_8(
    v: &[f32],
    r: &[u8],
    at: At<'_>,
    t: impl Fn(f32) -> f32,
    mut decide: impl FnMut(usize, f32, bool),
) {
    let mut any = false;
    for (i, (&x, &rw)) in v.iter().zip(r).enumerate() {
        let (up, tie) = round_up_fast(t(x), rw);
        decide(i, x, up);
        any |= tie;
    }
    if any {
        for (i, (&x, &rw)) in v.iter().zip(r).enumerate() {
            let tx = t(x);
            if round_up_fast(tx, rw).1 {
                decide(i, x, tied_up(at, i, tx, rw));
            }
        }
    }
}

/// Unbiased stochastic rounding of `y = |v|/unit ∈ [0, L]` to `⌊y⌋` or `⌊y⌋ + 1`, the latter
/// with probability `frac(y)` up to `2^-32` (8-bit draw `r`, refined on a tie: [`Draws8`]),
/// signed like `v`. `y − ⌊y⌋` is exact (Sterbenz), and so is its product by 256.
#[inline]
fn stochastic_levels(v: &[f32], r: &[u8], at: At<'_>, pre: f32, inv: f32, l: f32, q: &mut [i8]) {
    // y >= 0, so truncation is floor (and one SSE2 instruction, unlike `floor`).
    let y = |x: f32| ((x.abs() * pre) * inv).min(l);
    let t = |x: f32| (y(x) - ((y(x) as i32) as f32)) * 256.0;
    decide_8(v, r, at, t, |i, x, up| {
        let yx = y(x);
        let m = (((yx as i32) as f32) + up as i32 as f32).min(l) as i8;
        q[i] = m * ((x > 0.0) as i8 - (x < 0.0) as i8);
    });
}

/// [`stochastic_levels`] for `L = 1` without float-to-integer conversions (the same trits:
/// `⌊y⌋ + [r < frac y]` is `[r < y]` for `y < 1`, and 1 for `y >= 1`).
#[inline]
fn stochastic_trits(v: &[f32], r: &[u8], at: At<'_>, pre: f32, inv: f32, q: &mut [i8]) {
    let t = |x: f32| (x.abs() * pre) * (inv * 256.0);
    decide_8(v, r, at, t, |i, x, up| {
        q[i] = up as i8 * ((x > 0.0) as i8 - (x < 0.0) as i8);
    });
}

/// [`stochastic_trits`] written as base-3 digits `q + 1` (0, 1 or 2), ready for
/// [`pack_digits`].
#[inline]
fn stochastic_digits(v: &[f32], r: &[u8], at: At<'_>, pre: f32, inv: f32, d: &mut [u8]) {
    let t = |x: f32| (x.abs() * pre) * (inv * 256.0);
    decide_8(v, r, at, t, |i, x, up| {
        d[i] = (1 + up as i8 * ((x > 0.0) as i8 - (x < 0.0) as i8)) as u8;
    });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::levels::{encode_levels, levels_bytes, max_level};
    use crate::rng::RngKey;

    /// The 8-bit draws are refined on ties: a rounding probability of `2^-9` (half the 8-bit
    /// grid) is met, where the draw alone would give `2^-8` (`r8 < 256·p`) or 0
    /// (`r8 + 1 <= 256·p`). One trit (`|v|/s = 2^-9`, through [`Step::blocks`]) and two
    /// trits (`|v|/u = 2 + 2^-9`, through [`Step::block`]), 400 keys × 319 elements each:
    /// the count of roundings up is binomial with mean `N·2^-9 ≈ 249` and standard
    /// deviation `≈ 15.8`; the bound is 6 standard deviations, and both wrong rules are
    /// more than 15 away.
    #[test]
    fn ties_are_refined_to_the_exact_probability() {
        for n in [1u8, 2] {
            let l = max_level(n) as f32;
            let step = Step {
                n,
                l,
                stochastic: true,
                a: 0.0,
                b: 1.0,
            };
            // Element 0 sets the block maximum (the scale): L·2^-9-unit steps above level
            // `base` for the others.
            let base = if n == 1 { 0.0 } else { 2.0 };
            let g: Vec<f32> = (0..320)
                .map(|i| if i == 0 { l } else { base + 1.0 / 512.0 })
                .collect();
            let (mut ups, mut total) = (0usize, 0usize);
            for seed in 0..400u64 {
                let mut bytes = vec![BASE3_ZERO; levels_bytes(n, 320)];
                let mut draws = Draws8::new(RngKey::new(seed, 0, 9));
                let mut q = vec![0i8; 320];
                let choose = |stat: f32| Choice::new(stat, 0, l);
                if n == 1 {
                    let mut chosen = [(0f32, 0u8); 1];
                    let tile = Tile {
                        bytes: &mut bytes,
                        g: &g,
                        block: 320,
                        old_units: &[0.0],
                        chosen: &mut chosen,
                    };
                    step.blocks(tile, choose, Some(&mut draws), &mut Scratch::new());
                } else {
                    step.block(
                        &mut bytes,
                        &g,
                        0.0,
                        choose,
                        Some(&mut draws),
                        &mut Scratch::new(),
                    );
                }
                crate::levels::unpack_levels(n, &bytes, &mut q).unwrap();
                assert_eq!(q[0], l as i8);
                for &qi in &q[1..] {
                    assert!(f32::from(qi) == base || f32::from(qi) == base + 1.0, "{qi}");
                    ups += usize::from(f32::from(qi) == base + 1.0);
                    total += 1;
                }
            }
            let mean = total as f64 / 512.0;
            let sd = (mean * (1.0 - 1.0 / 512.0)).sqrt();
            assert!(
                (ups as f64 - mean).abs() < 6.0 * sd,
                "n {n}: {ups} roundings up, expected {mean:.1} ± {sd:.1}"
            );
        }
    }

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
                    let mut draws = Draws8::new(key);
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
                    let mut draws = Draws8::new(key);
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
