//! Ternary quantizers on plain slices, writing trits (`i8` in {-1, 0, 1}) into caller buffers.
//!
//! | quantizer | scale `s` | trit `q_i` | bias | variance of `s·q_i` |
//! |---|---|---|---|---|
//! | [`quantize_absmean_into`] (BitNet b1.58) | `γ = mean|x|` | `sign(x_i)·[2|x_i| > γ]` | deterministic error | 0 |
//! | [`quantize_threshold_into`] (TWN) | mean of `|x_i|` over kept `i` | `sign(x_i)·[|x_i| > δγ]` | deterministic error | 0 |
//! | [`quantize_stochastic_into`] (TernGrad) | any `s ≥ max|x|` | `sign(x_i)` w.p. `|x_i|/s`, else 0 | 0 (up to `2^-24·s`) | `s|x_i| − x_i²` |
//!
//! See `docs/ternary.md` for the derivations.

use crate::error::{Error, Result, check_len};
use crate::rng::{RngKey, unit};
use rand_core::RngCore;

const ABS_MASK: u32 = 0x7fff_ffff;
const EXP_ALL_ONES: u32 = 0x7f80_0000;

/// Largest `|x|` as raw bits. For finite floats the order of `|x|`'s bit patterns is the order
/// of the values, and NaN/Inf have bits `>= 0x7f80_0000`, so one integer max both finds the
/// largest magnitude and detects non-finite values. The masked patterns are below `2^31`, so
/// the maximum is taken as `i32`: it vectorizes as a signed compare and select on SSE2,
/// which has no unsigned 32-bit maximum.
#[inline(always)]
fn max_abs_bits(x: &[f32]) -> u32 {
    let mut acc = [0i32; 16];
    let chunks = x.chunks_exact(16);
    let rem = chunks.remainder();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a = (*a).max((v.to_bits() & ABS_MASK) as i32);
        }
    }
    let mut m = acc.iter().copied().max().unwrap_or(0);
    for v in rem {
        m = m.max((v.to_bits() & ABS_MASK) as i32);
    }
    m as u32
}

fn non_finite(what: &'static str, x: &[f32]) -> Error {
    let (index, value) = x
        .iter()
        .copied()
        .enumerate()
        .find(|(_, v)| !v.is_finite())
        .unwrap_or((0, f32::NAN));
    Error::NonFinite { what, index, value }
}

/// `max |x_i|` (0 for an empty slice), or [`Error::NonFinite`] if any element is NaN or ±Inf.
pub fn max_abs(x: &[f32]) -> Result<f32> {
    checked_max_abs("x", x)
}

#[inline(always)]
pub(crate) fn checked_max_abs(what: &'static str, x: &[f32]) -> Result<f32> {
    let m = max_abs_bits(x);
    if m >= EXP_ALL_ONES {
        Err(non_finite(what, x))
    } else {
        Ok(f32::from_bits(m))
    }
}

/// `mean |x_i|` (0 for an empty slice), summed in f64, or [`Error::NonFinite`].
pub fn mean_abs(x: &[f32]) -> Result<f32> {
    checked_max_abs("x", x)?;
    Ok(mean_abs_unchecked(x))
}

pub(crate) fn mean_abs_unchecked(x: &[f32]) -> f32 {
    if x.is_empty() {
        return 0.0;
    }
    // f32 lanes over blocks of 256 (16 terms per lane, relative rounding error < 2^-20),
    // then exact-enough f64 accumulation across blocks: vectorizes, unlike a pure f64 sum.
    let mut s = 0f64;
    for block in x.chunks(256) {
        let mut acc = [0f32; 16];
        let chunks = block.chunks_exact(16);
        let rem = chunks.remainder();
        for c in chunks {
            for (a, v) in acc.iter_mut().zip(c) {
                *a += v.abs();
            }
        }
        let lanes: f64 = acc.iter().map(|&a| f64::from(a)).sum();
        s += if lanes.is_finite() {
            lanes + rem.iter().map(|v| f64::from(v.abs())).sum::<f64>()
        } else {
            // Magnitudes near f32::MAX overflowed a lane: redo this block in f64.
            block.iter().map(|v| f64::from(v.abs())).sum::<f64>()
        };
    }
    (s / x.len() as f64) as f32
}

/// Deterministic absmean quantization (BitNet b1.58): `γ = mean|x|`,
/// `q_i = RoundClip(x_i / γ, −1, 1)`, written to `out`; returns the scale `γ`.
///
/// `RoundClip` rounds half to even as `torch.round` does, so `q_i = sign(x_i)` exactly when
/// `2|x_i| > γ`; the comparison is done in that multiplied form, so a zero or subnormal `γ`
/// never divides. BitNet's `ε` is unnecessary: an all-zero input gives `γ = 0` and all-zero
/// trits. Reconstruction is `γ·q`.
pub fn quantize_absmean_into(x: &[f32], out: &mut [i8]) -> Result<f32> {
    check_len("out", x.len(), out.len())?;
    checked_max_abs("x", x)?;
    let gamma = mean_abs_unchecked(x);
    threshold_trits(x, gamma, 2.0, out);
    Ok(gamma)
}

/// `q_i = sign(x_i)·[factor·|x_i| > t]`, branch-free.
#[inline(always)]
pub(crate) fn threshold_trits(x: &[f32], t: f32, factor: f32, out: &mut [i8]) {
    for (o, &v) in out.iter_mut().zip(x) {
        let keep = (factor * v.abs() > t) as i8;
        *o = keep * ((v > 0.0) as i8 - (v < 0.0) as i8);
    }
}

/// Threshold quantization (ternary weight networks): `t = delta · mean|x|`,
/// `q_i = sign(x_i)·[|x_i| > t]`; returns the least-squares scale for those trits, the mean of
/// `|x_i|` over the kept elements (0 if none is kept).
///
/// `delta` must be finite and `>= 0`; TWN uses `0.7`.
pub fn quantize_threshold_into(x: &[f32], delta: f32, out: &mut [i8]) -> Result<f32> {
    check_len("out", x.len(), out.len())?;
    if !(delta.is_finite() && delta >= 0.0) {
        return Err(Error::InvalidParameter {
            param: "delta",
            expected: "a finite value >= 0",
            actual: format!("{delta}"),
        });
    }
    checked_max_abs("x", x)?;
    let t = delta * mean_abs_unchecked(x);
    threshold_trits(x, t, 1.0, out);
    let (mut sum, mut n) = (0f64, 0usize);
    for (&v, &q) in x.iter().zip(out.iter()) {
        let k = (q != 0) as usize;
        sum += f64::from(v.abs()) * k as f64;
        n += k;
    }
    Ok(if n == 0 { 0.0 } else { (sum / n as f64) as f32 })
}

/// Pre-scaling for the stochastic quantizers: returns `(pre, inv)` with `pre` a power of two
/// such that `scale·pre` is in `[1, 4)` (or `[2^-22, 1)` for subnormal `scale`), and
/// `inv = 1/(scale·pre)`. Then `p_i = (|x_i|·pre)·inv ≈ |x_i|/scale` without overflow for a
/// subnormal scale or loss of precision for a huge one. `scale` must be positive and finite.
#[inline(always)]
pub(crate) fn prescale(scale: f32) -> (f32, f32) {
    let e = (scale.to_bits() >> 23).min(253);
    let pre = f32::from_bits((254 - e) << 23);
    (pre, 1.0 / (scale * pre))
}

/// Validates `scale` for a stochastic quantizer against `m = max|x|`.
pub(crate) fn check_scale(scale: f32, m: f32) -> Result<()> {
    if !scale.is_finite() {
        return Err(Error::InvalidParameter {
            param: "scale",
            expected: "a finite value >= max|x|",
            actual: format!("{scale}"),
        });
    }
    if scale < m || scale < 0.0 {
        return Err(Error::ScaleTooSmall { scale, max_abs: m });
    }
    Ok(())
}

/// One stochastic trit from `x`, its random word `r` and the prescale pair.
#[inline(always)]
pub(crate) fn stochastic_trit(x: f32, r: u32, pre: f32, inv: f32) -> i8 {
    let p = (x.abs() * pre) * inv;
    let keep = (unit(r) < p) as i8;
    keep * ((x > 0.0) as i8 - (x < 0.0) as i8)
}

/// Random words per refill in the stochastic kernels (one per element).
pub(crate) const RAND_TILE: usize = 320;

/// Fills `words` from `rng`, one little-endian `u32` per element.
#[inline]
pub(crate) fn fill_words(rng: &mut rand_chacha::ChaCha8Rng, bytes: &mut [u8], words: &mut [u32]) {
    let bytes = &mut bytes[..4 * words.len()];
    rng.fill_bytes(bytes);
    for (w, b) in words.iter_mut().zip(bytes.chunks_exact(4)) {
        *w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

/// Stochastic, unbiased ternary quantization (TernGrad): with `scale = s >= max|x|`,
/// `q_i = sign(x_i)` with probability `|x_i|/s` and `0` otherwise, so `E[s·q_i] = x_i` and
/// `Var[s·q_i] = s|x_i| − x_i²`.
///
/// Element `i` of `x` is element `start_index + i` of the tensor: it uses word
/// `start_index + i` of `key`'s stream, so quantizing a tensor in chunks gives the same trits
/// as quantizing it whole. The uniform is `k·2^-24`, so the probability is `|x_i|/s` rounded
/// up to a multiple of `2^-24`: `|E[s·q_i] − x_i| <= 2^-24·s`.
///
/// `scale = 0` is accepted only for an all-zero input and yields all-zero trits. Use
/// [`max_abs`] for the smallest valid scale, which also gives the smallest variance.
pub fn quantize_stochastic_into(
    x: &[f32],
    scale: f32,
    key: RngKey,
    start_index: u64,
    out: &mut [i8],
) -> Result<()> {
    check_len("out", x.len(), out.len())?;
    let m = checked_max_abs("x", x)?;
    check_scale(scale, m)?;
    if scale == 0.0 {
        out.fill(0);
        return Ok(());
    }
    let (pre, inv) = prescale(scale);
    let mut rng = key.stream_at(start_index);
    let mut bytes = [0u8; 4 * RAND_TILE];
    let mut words = [0u32; RAND_TILE];
    for (xc, oc) in x.chunks(RAND_TILE).zip(out.chunks_mut(RAND_TILE)) {
        let w = &mut words[..xc.len()];
        fill_words(&mut rng, &mut bytes, w);
        for ((o, &v), &r) in oc.iter_mut().zip(xc).zip(w.iter()) {
            *o = stochastic_trit(v, r, pre, inv);
        }
    }
    Ok(())
}

/// `out_i = scale · q_i`. Fails if a trit is outside {-1, 0, 1} or the lengths differ.
pub fn dequantize_into(trits: &[i8], scale: f32, out: &mut [f32]) -> Result<()> {
    check_len("out", trits.len(), out.len())?;
    crate::pack::check_trits(trits)?;
    for (o, &q) in out.iter_mut().zip(trits) {
        *o = scale * f32::from(q);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_abs_detects_non_finite() {
        assert_eq!(max_abs(&[]).unwrap(), 0.0);
        assert_eq!(max_abs(&[1.0, -3.0, 2.0]).unwrap(), 3.0);
        let mut v = vec![0.5f32; 40];
        v[33] = f32::NEG_INFINITY;
        assert_eq!(
            max_abs(&v),
            Err(Error::NonFinite {
                what: "x",
                index: 33,
                value: f32::NEG_INFINITY
            })
        );
        v[33] = f32::NAN;
        assert!(matches!(
            max_abs(&v),
            Err(Error::NonFinite { index: 33, .. })
        ));
    }

    #[test]
    fn absmean_matches_roundclip() {
        // gamma = mean(|[0.1, -0.5, 2.0, 0.25, -0.15]|) = 3.0 / 5 = 0.6
        // x / gamma = [0.1667, -0.8333, 3.333, 0.4167, -0.25] -> RoundClip = [0, -1, 1, 0, 0]
        let x = [0.1f32, -0.5, 2.0, 0.25, -0.15];
        let mut q = [9i8; 5];
        let g = quantize_absmean_into(&x, &mut q).unwrap();
        assert!((g - 0.6).abs() < 1e-6);
        assert_eq!(q, [0, -1, 1, 0, 0]);
        // Huge magnitudes must not overflow the mean (f32 lanes fall back to f64).
        let big = [f32::MAX; 40];
        assert_eq!(mean_abs(&big).unwrap(), f32::MAX);
        // Ties round to even (0): |x| = gamma / 2 exactly.
        let mut q2 = [9i8; 2];
        assert_eq!(quantize_absmean_into(&[1.0, -3.0], &mut q2).unwrap(), 2.0);
        assert_eq!(q2, [0, -1]);
    }

    #[test]
    fn zero_and_subnormal_inputs() {
        let mut q = [5i8; 4];
        assert_eq!(quantize_absmean_into(&[0.0; 4], &mut q).unwrap(), 0.0);
        assert_eq!(q, [0; 4]);
        let tiny = f32::from_bits(1); // smallest subnormal
        let x = [tiny, -tiny, 0.0, tiny];
        let g = quantize_absmean_into(&x, &mut q).unwrap();
        assert!(g > 0.0);
        assert_eq!(q, [1, -1, 0, 1]);
        // Stochastic with a subnormal scale equal to max|x|: |x_i| = s so q_i = sign(x_i).
        quantize_stochastic_into(&x, tiny, RngKey::new(1, 0, 0), 0, &mut q).unwrap();
        assert_eq!(q, [1, -1, 0, 1]);
        // Huge scale: same at the top of the range.
        let big = f32::MAX;
        quantize_stochastic_into(&[big, -big], big, RngKey::new(1, 0, 0), 0, &mut q[..2]).unwrap();
        assert_eq!(&q[..2], &[1, -1]);
        quantize_stochastic_into(&[0.0; 4], 0.0, RngKey::default(), 0, &mut q).unwrap();
        assert_eq!(q, [0; 4]);
    }

    #[test]
    fn stochastic_rejects_bad_scale_and_leaves_out_untouched() {
        let mut q = [7i8; 3];
        let x = [0.5f32, -1.0, 0.25];
        assert_eq!(
            quantize_stochastic_into(&x, 0.9, RngKey::default(), 0, &mut q),
            Err(Error::ScaleTooSmall {
                scale: 0.9,
                max_abs: 1.0
            })
        );
        assert!(quantize_stochastic_into(&x, f32::NAN, RngKey::default(), 0, &mut q).is_err());
        assert!(
            quantize_stochastic_into(&[f32::NAN, 0.0, 0.0], 1.0, RngKey::default(), 0, &mut q)
                .is_err()
        );
        assert_eq!(q, [7; 3]);
    }

    #[test]
    fn threshold_scale_is_mean_of_kept() {
        // mean|x| = (0.1+0.2+1.0+3.0)/4 = 1.075, t = 0.7*1.075 = 0.7525 -> keep 1.0 and -3.0
        let x = [0.1f32, 0.2, 1.0, -3.0];
        let mut q = [0i8; 4];
        let s = quantize_threshold_into(&x, 0.7, &mut q).unwrap();
        assert_eq!(q, [0, 0, 1, -1]);
        assert!((s - 2.0).abs() < 1e-6);
        assert!(quantize_threshold_into(&x, -1.0, &mut q).is_err());
    }

    #[test]
    fn prescale_is_exact_power_of_two() {
        for s in [
            f32::from_bits(1),
            1e-40,
            1e-30,
            0.5,
            1.0,
            3.0,
            1e30,
            f32::MAX,
        ] {
            let (pre, inv) = prescale(s);
            assert!(pre.is_normal() && inv.is_finite() && inv > 0.0, "{s}");
            assert_eq!(pre.to_bits() & 0x007f_ffff, 0);
            let p = (s * pre) * inv;
            assert!((p - 1.0).abs() < 1e-6, "{s} {p}");
        }
    }
}
