//! Block scales: plain `f32`, or one byte per block on a logarithmic grid below a per-tensor
//! `f32` reference.
//!
//! **`Log8`.** Block `b` stores a code `c_b`; its scale is
//! `s(R, c) = (R · F[c mod 8]) · 2^−⌊c/8⌋` with `F[j] ≈ 2^{−j/8}` (fixed `f32` constants) and
//! `R` the tensor's reference; code 255 means scale 0. Every operation is one IEEE multiply,
//! so the scale is bit-reproducible everywhere. The encoder picks the **largest** code with
//! `s(R, c) >= m_b` (the block's statistic), so a stochastic quantizer with that scale stays
//! unbiased (its scale only has to be `>= max|x|`): the price is a scale at most `2^{1/8}`
//! (9%) above `m_b`, i.e. at most 9% more variance in that block. Codes span
//! `2^{−254/8} ≈ 2^−31.75` below `R`; a block smaller than that gets code 254 (a larger,
//! still valid scale).

/// How block scales are held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ScaleFormat {
    /// One `f32` per block (32 bits): the scale is exactly the block statistic.
    F32,
    /// One byte per block on a `2^{1/8}` grid below a per-tensor `f32` reference (8 bits per
    /// block + 32 per tensor); scales round up, so stochastic quantization stays unbiased.
    Log8,
}

/// Code of an all-zero block.
pub(crate) const ZERO_CODE: u8 = 255;
/// Largest code of a non-zero scale.
const MAX_CODE: u8 = 254;

/// `F[j] = 2^{−j/8}` rounded to `f32`.
const FRAC: [f32; 8] = [
    1.0,
    0.917_004_04,
    0.840_896_4,
    0.771_105_4,
    0.707_106_77,
    0.648_419_8,
    0.594_603_55,
    0.545_253_9,
];

/// `s(R, c)`: the scale of code `c` under reference `r` (0 for [`ZERO_CODE`]).
#[inline]
pub(crate) fn log8_scale(r: f32, c: u8) -> f32 {
    if c == ZERO_CODE {
        return 0.0;
    }
    let q = u32::from(c / 8); // <= 31
    (r * FRAC[usize::from(c % 8)]) * f32::from_bits((127 - q) << 23)
}

/// The largest code `c` with `s(r, c) >= m` ([`ZERO_CODE`] for `m == 0`; 0 when even
/// `s(r, 0) = r` is below `m`).
#[inline]
pub(crate) fn log8_code(r: f32, m: f32) -> u8 {
    if m == 0.0 {
        return ZERO_CODE;
    }
    // Estimate 8·log2(r/m) from the bit patterns (exponent plus linear mantissa: within
    // 0.09 octave, i.e. one code), then settle exactly (s is non-increasing in c), so the
    // result does not depend on the estimate.
    let lg = |x: f32| x.to_bits() as f32 * (1.0 / 8_388_608.0);
    let est = (8.0 * (lg(r) - lg(m))) as i32;
    let mut c = est.clamp(0, i32::from(MAX_CODE)) as u8;
    while c > 0 && log8_scale(r, c) < m {
        c -= 1;
    }
    while c < MAX_CODE && log8_scale(r, c + 1) >= m {
        c += 1;
    }
    c
}

/// The 255 scales of one reference `R` as a table, so that a block's code costs a few
/// independent loads and compares instead of [`log8_code`]'s chain of scale evaluations.
/// [`Log8Table::code`] equals [`log8_code`] and [`Log8Table::scale`] equals [`log8_scale`]
/// for every input (tested): the table holds exactly those values.
pub(crate) struct Log8Table {
    /// `scale[c] = s(R, c)` for `c <= 254`; 0 past it ([`ZERO_CODE`] and the padding that
    /// lets [`Log8Table::code`] read four entries past any code).
    scale: [f32; 260],
    /// `8·lg(R)`, `lg` as in [`log8_code`].
    lg_r: f32,
    /// `prescale(s(R, c) / L)` for `c <= 254` (see [`crate::quant::prescale`]), `(0, 0)`
    /// for [`ZERO_CODE`]: the rounding factors of each code, so that no block divides.
    pre_inv: [(f32, f32); 256],
}

/// `lg(x)`: the bit pattern of a positive float over `2^23`, i.e. `log2 x + 127` up to a
/// piecewise-linear error in `[−0.0861, 0]`.
#[inline(always)]
fn lg(x: f32) -> f32 {
    x.to_bits() as f32 * (1.0 / 8_388_608.0)
}

impl Log8Table {
    /// The table of reference `r`, for levels `1..=l`.
    pub(crate) fn new(r: f32, l: f32) -> Self {
        let mut scale = [0f32; 260];
        let mut pre_inv = [(0f32, 0f32); 256];
        for (c, (s, pi)) in scale.iter_mut().zip(&mut pre_inv).enumerate() {
            if c < usize::from(ZERO_CODE) {
                *s = log8_scale(r, c as u8);
                if *s != 0.0 {
                    *pi = crate::quant::prescale(*s / l);
                }
            }
        }
        Self {
            scale,
            lg_r: 8.0 * lg(r),
            pre_inv,
        }
    }

    /// `prescale(s(R, c) / L)`, `(0, 0)` for a zero scale.
    #[inline(always)]
    pub(crate) fn pre_inv(&self, c: u8) -> (f32, f32) {
        self.pre_inv[usize::from(c)]
    }

    /// `s(R, c)`.
    #[inline(always)]
    pub(crate) fn scale(&self, c: u8) -> f32 {
        self.scale[usize::from(c)]
    }

    /// [`log8_code`]`(R, m)`: the largest `c <= 254` with `s(R, c) >= m` (0 if none;
    /// [`ZERO_CODE`] for `m = 0`).
    ///
    /// `s(R, c) >= m` holds on a prefix of the codes (`s` is non-increasing in `c`). The
    /// estimate `e = ⌊8·(lg R − lg m)⌋` is within one code of that prefix's end (the two
    /// `lg` errors differ by under 0.09 octave, 0.69 code), so starting two codes below it
    /// and counting the true predicates among the next four finds the end without a
    /// branch. The result is then checked against the definition, and a miss (subnormal
    /// `R` or `m`, whose bit patterns are not logarithmic) falls back to a binary search,
    /// so correctness does not rest on the estimate.
    #[inline(always)]
    pub(crate) fn code(&self, m: f32) -> u8 {
        if m == 0.0 {
            return ZERO_CODE;
        }
        self.estimated_code(m).unwrap_or_else(|| self.slow_code(m))
    }

    /// The estimate-and-count code for `m > 0`, or `None` if it fails the check.
    #[inline(always)]
    fn estimated_code(&self, m: f32) -> Option<u8> {
        let est = (self.lg_r - 8.0 * lg(m)) as i32;
        let c0 = (est - 2).clamp(0, 254) as usize;
        let w = &self.scale[c0..c0 + 5];
        let c = c0 + (1..5).map(|j| usize::from(w[j] >= m)).sum::<usize>();
        let ok = (c == 0 || self.scale[c] >= m) && self.scale[c + 1] < m && c <= 254;
        ok.then_some(c as u8)
    }

    #[cold]
    fn slow_code(&self, m: f32) -> u8 {
        let mut c = 0usize;
        for step in [128, 64, 32, 16, 8, 4, 2, 1] {
            c += step * usize::from(self.scale[c + step] >= m);
        }
        c as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_up_and_are_tight() {
        for r in [f32::from_bits(40), 1e-30, 1.0, 3.7, 1e30, f32::MAX] {
            assert_eq!(log8_scale(r, 0), r);
            for k in 0..400 {
                let m = r * 0.93f32.powi(k);
                if m == 0.0 {
                    continue;
                }
                let c = log8_code(r, m);
                let s = log8_scale(r, c);
                assert!(s >= m, "r {r} m {m} c {c} s {s}");
                if c < MAX_CODE {
                    assert!(log8_scale(r, c + 1) < m);
                    // Within 2^{1/8} (plus subnormal granularity) of m.
                    assert!(
                        s <= m * 1.0906 + f32::from_bits(2) * 2.0,
                        "r {r} m {m} s {s}"
                    );
                }
            }
        }
        assert_eq!(log8_code(1.0, 0.0), ZERO_CODE);
        // The table gives the same codes and scales, including at the exact scale values,
        // just above and below them, and past both ends of the range.
        for r in [f32::from_bits(40), 1e-30, 1.0, 3.7, 1e30, f32::MAX] {
            let t = Log8Table::new(r, 4.0);
            for c in 0..=255u8 {
                assert_eq!(t.scale(c).to_bits(), log8_scale(r, c).to_bits());
                if t.scale(c) != 0.0 {
                    assert_eq!(t.pre_inv(c), crate::quant::prescale(t.scale(c) / 4.0));
                }
                let s = log8_scale(r, c);
                for m in [
                    s,
                    f32::from_bits(s.to_bits() + 1),
                    f32::from_bits(s.to_bits().saturating_sub(1)),
                ] {
                    if m.is_finite() && m > 0.0 {
                        assert_eq!(t.code(m), log8_code(r, m), "r {r} m {m}");
                        // For normal values the estimate alone gets it (subnormal bit
                        // patterns are not logarithmic: those take the fallback).
                        if r.is_normal() && m.is_normal() {
                            assert_eq!(t.estimated_code(m), Some(t.code(m)), "r {r} m {m}");
                        }
                    }
                }
            }
            for k in 0..400 {
                let m = r * 0.93f32.powi(k);
                assert_eq!(t.code(m), log8_code(r, m), "r {r} m {m}");
                if r.is_normal() && m.is_normal() {
                    assert_eq!(t.estimated_code(m), Some(t.code(m)), "r {r} m {m}");
                }
            }
            // Above the reference (code 0) and at the bottom of the range.
            for m in [r * 1.5, f32::MAX, f32::from_bits(1)] {
                assert_eq!(t.code(m), log8_code(r, m), "r {r} m {m}");
            }
        }
        assert_eq!(log8_scale(1.0, ZERO_CODE), 0.0);
        assert_eq!(log8_code(1.0, 1e-20), MAX_CODE);
    }
}
