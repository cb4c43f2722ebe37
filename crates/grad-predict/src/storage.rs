//! Storage precisions: conversion between the stored type and f32 blocks.

use half::{bf16, f16, slice::HalfFloatSliceExt};

/// Elements processed per block: the block's f32 scratch lives on the stack (4 KiB).
pub(crate) const BLOCK: usize = 1024;

/// A type the per-element history can be stored in. Conversions happen block by block, so
/// that f32 storage is used in place and the 16-bit types convert with vectorised loops.
pub(crate) trait Stored: Copy + Default + Send + Sync + 'static {
    /// Largest magnitude that survives `store`.
    const MAX: f32;
    /// Name, for error messages.
    const NAME: &'static str;

    /// Returns `src` as f32, converting into `buf` when needed. `buf.len() >= src.len()`.
    fn read<'a>(src: &'a [Self], buf: &'a mut [f32; BLOCK]) -> &'a [f32];

    /// Runs `f` on `dst` as f32 (in place for f32, through `buf` otherwise), storing back.
    fn modify<R>(dst: &mut [Self], buf: &mut [f32; BLOCK], f: impl FnOnce(&mut [f32]) -> R) -> R;

    /// Stores `src` into `dst` (equal lengths).
    fn store(src: &[f32], dst: &mut [Self]);
}

impl Stored for f32 {
    const MAX: f32 = f32::MAX;
    const NAME: &'static str = "f32";

    #[inline]
    fn read<'a>(src: &'a [f32], _buf: &'a mut [f32; BLOCK]) -> &'a [f32] {
        src
    }

    #[inline]
    fn modify<R>(dst: &mut [f32], _buf: &mut [f32; BLOCK], f: impl FnOnce(&mut [f32]) -> R) -> R {
        f(dst)
    }

    #[inline]
    fn store(src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
}

/// Round-to-nearest-even f32 → bf16 for finite inputs (validated before storage), written
/// without branches so that it vectorises.
#[inline(always)]
fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

impl Stored for bf16 {
    const MAX: f32 = bf16::MAX.to_f32_const();
    const NAME: &'static str = "bf16";

    #[inline]
    fn read<'a>(src: &'a [bf16], buf: &'a mut [f32; BLOCK]) -> &'a [f32] {
        let out = &mut buf[..src.len()];
        for (o, s) in out.iter_mut().zip(src) {
            *o = f32::from_bits(u32::from(s.to_bits()) << 16);
        }
        out
    }

    #[inline]
    fn modify<R>(dst: &mut [bf16], buf: &mut [f32; BLOCK], f: impl FnOnce(&mut [f32]) -> R) -> R {
        let n = dst.len();
        Self::read(dst, buf);
        let r = f(&mut buf[..n]);
        Self::store(&buf[..n], dst);
        r
    }

    #[inline]
    fn store(src: &[f32], dst: &mut [bf16]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = bf16::from_bits(bf16_bits(s));
        }
    }
}

impl Stored for f16 {
    const MAX: f32 = f16::MAX.to_f32_const();
    const NAME: &'static str = "f16";

    #[inline]
    fn read<'a>(src: &'a [f16], buf: &'a mut [f32; BLOCK]) -> &'a [f32] {
        let out = &mut buf[..src.len()];
        src.convert_to_f32_slice(out);
        out
    }

    #[inline]
    fn modify<R>(dst: &mut [f16], buf: &mut [f32; BLOCK], f: impl FnOnce(&mut [f32]) -> R) -> R {
        let n = dst.len();
        dst.convert_to_f32_slice(&mut buf[..n]);
        let r = f(&mut buf[..n]);
        dst.convert_from_f32_slice(&buf[..n]);
        r
    }

    #[inline]
    fn store(src: &[f32], dst: &mut [f16]) {
        dst.convert_from_f32_slice(src);
    }
}

/// Largest `|x|` bit pattern in `x` (sign cleared). Since positive f32 bit patterns are
/// ordered like their values, `max_abs_bits(x) > limit.to_bits()` tells whether some element
/// exceeds `limit` or is non-finite (Inf and NaN have the largest patterns). One vectorised
/// pass of integer maxima, no early exit.
pub(crate) fn max_abs_bits(x: &[f32]) -> u32 {
    const L: usize = 16;
    let mut lanes = [0u32; L];
    let chunks = x.chunks_exact(L);
    let tail = chunks.remainder();
    for c in chunks {
        for (m, v) in lanes.iter_mut().zip(c) {
            *m = (*m).max(v.to_bits() & 0x7fff_ffff);
        }
    }
    let mut m = lanes.iter().copied().max().unwrap_or(0);
    for v in tail {
        m = m.max(v.to_bits() & 0x7fff_ffff);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding_matches_half() {
        // Our branch-free RNE must agree with `half` on every finite input class.
        for &x in &[
            0.0f32,
            -0.0,
            1.0,
            // Exact ties: round down to even, round up to even.
            f32::from_bits(0x3F80_8000),
            f32::from_bits(0x3F81_8000),
            -2.5,
            1e-40,
            6.0e-39,
            3.0e38,
            -2.5e-20,
            65504.0,
        ] {
            assert_eq!(bf16_bits(x), bf16::from_f32(x).to_bits(), "x = {x}");
        }
        let mut s = 0x1234_5678u32;
        for _ in 0..100_000 {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let x = f32::from_bits(s);
            if x.is_finite() && x.abs() <= bf16::MAX.to_f32() {
                assert_eq!(bf16_bits(x), bf16::from_f32(x).to_bits(), "bits {s:#x}");
            }
        }
    }

    #[test]
    fn max_abs_bits_flags_nonfinite_and_range() {
        let mut v = vec![1.0f32; 37];
        assert_eq!(max_abs_bits(&v), 1.0f32.to_bits());
        v[33] = -70000.0;
        assert!(max_abs_bits(&v) > f16::MAX.to_f32().to_bits());
        assert!(max_abs_bits(&v) <= f32::MAX.to_bits());
        v[3] = f32::NAN;
        assert!(max_abs_bits(&v) > f32::MAX.to_bits());
        v[3] = f32::NEG_INFINITY;
        assert!(max_abs_bits(&v) > f32::MAX.to_bits());
        assert_eq!(max_abs_bits(&[]), 0);
    }
}
