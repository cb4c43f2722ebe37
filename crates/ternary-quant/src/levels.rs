//! Multi-trit values: `n` balanced trits per element (`n` in [`SUPPORTED_TRITS`]), i.e.
//! integers in `[−L, L]` with `L = (3^n − 1)/2` (1, 4, 13 or 121), packed base 3.
//!
//! **Layout.** Element `i`'s value `q_i = Σ_{j<n} t_{i,j}·3^j` (balanced digits
//! `t ∈ {−1, 0, 1}`) occupies trits `n·i .. n·i + n` of one trit stream, and that stream is
//! packed five trits per byte exactly as [`crate::pack_base3`] packs trits (digit `t + 1`,
//! least significant first; padding trits zero). So `n = 1` is the plain base-3 layout,
//! `n = 5` is one byte per element holding `q + 121`, and every `n` costs `1.6·n` bits per
//! element. [`levels_bytes`]`(n, len) = ⌈n·len/5⌉`.
//!
//! [`TernaryPacking`] names the two single-trit transports (bitplanes and base 3) so that
//! every crate (the accumulator here, the MPI codec) uses one definition.

use crate::error::{Error, Result, check_len};
use crate::pack::{DECODE, check_base3, pack_base3_unchecked};

/// Trit counts per element that the accumulator and [`pack_levels`] support: 1, 2, 3 and 5
/// trits (3, 9, 27 and 243 levels; 1.6, 3.2, 4.8 and 8 bits per element).
pub const SUPPORTED_TRITS: [u8; 4] = [1, 2, 3, 5];

/// How single trits travel or are held: the two lossless packings of [`crate::pack`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum TernaryPacking {
    /// Two `u64` bitplanes (`+1` and `−1`), 2 bits per element: [`crate::pack_planes`].
    Planes,
    /// Base 3, five trits per byte, 1.6 bits per element: [`crate::pack_base3`].
    Base3,
}

impl TernaryPacking {
    /// Bytes that `len` trits occupy in this packing (planes: `16·⌈len/64⌉`; base 3:
    /// `⌈len/5⌉`).
    pub const fn packed_bytes(self, len: usize) -> usize {
        match self {
            Self::Planes => 16 * crate::pack::plane_words(len),
            Self::Base3 => crate::pack::base3_bytes(len),
        }
    }
}

/// `L = (3^n − 1)/2`, the largest value `n` balanced trits hold (`n <= 5`).
pub const fn max_level(n: u8) -> i32 {
    (3i32.pow(n as u32) - 1) / 2
}

/// Fails with [`Error::InvalidParameter`] unless `n` is in [`SUPPORTED_TRITS`].
pub fn check_trits_per_element(n: u8) -> Result<()> {
    if SUPPORTED_TRITS.contains(&n) {
        Ok(())
    } else {
        Err(Error::InvalidParameter {
            param: "trits_per_element",
            expected: "one of 1, 2, 3, 5",
            actual: n.to_string(),
        })
    }
}

/// Bytes of `len` elements of `n` trits each: `⌈n·len/5⌉`.
pub const fn levels_bytes(n: u8, len: usize) -> usize {
    (n as usize * len).div_ceil(5)
}

/// Packs values `q_i ∈ [−L, L]` (`L` = [`max_level`]`(n)`) as `n` balanced trits each into
/// [`levels_bytes`]`(n, values.len())` bytes.
///
/// # Errors
/// [`Error::InvalidParameter`] for an unsupported `n`, [`Error::LengthMismatch`] for `out`,
/// [`Error::InvalidParameter`] naming `values` for a value out of range. `out` is untouched
/// on error.
pub fn pack_levels(n: u8, values: &[i8], out: &mut [u8]) -> Result<()> {
    check_trits_per_element(n)?;
    check_len("out", levels_bytes(n, values.len()), out.len())?;
    let l = max_level(n);
    if let Some(v) = values.iter().find(|&&v| i32::from(v).abs() > l) {
        return Err(Error::InvalidParameter {
            param: "values",
            expected: "integers in [-L, L], L = (3^n - 1)/2",
            actual: v.to_string(),
        });
    }
    // 320 elements = 64·n bytes: whole bytes for every n.
    for (vc, oc) in values.chunks(320).zip(out.chunks_mut(64 * usize::from(n))) {
        encode_levels(n, vc, oc);
    }
    Ok(())
}

/// Unpacks `out.len()` values of `n` trits each; validates the bytes first (length, bytes
/// `<= 242`, zero padding). `out` is untouched on error.
pub fn unpack_levels(n: u8, bytes: &[u8], out: &mut [i8]) -> Result<()> {
    check_trits_per_element(n)?;
    check_base3(usize::from(n) * out.len(), bytes)?;
    let mut f = [0f32; 320];
    for (oc, bc) in out.chunks_mut(320).zip(bytes.chunks(64 * usize::from(n))) {
        let fc = &mut f[..oc.len()];
        decode_levels_f32(n, bc, fc);
        for (o, &v) in oc.iter_mut().zip(fc.iter()) {
            *o = v as i8;
        }
    }
    Ok(())
}

/// Writes the values of `out.len() <= 320` elements, `n` trits each, read from `bytes`
/// (which start at an element whose trit offset is a multiple of 5), as `f32`.
#[inline(always)]
pub(crate) fn decode_levels_f32(n: u8, bytes: &[u8], out: &mut [f32]) {
    match n {
        1 => crate::fused::dequantize_base3_unchecked(bytes, 1.0, out),
        5 => {
            for (o, &b) in out.iter_mut().zip(bytes) {
                *o = f32::from(b) - 121.0;
            }
        }
        2 => decode_multi::<2>(bytes, out),
        _ => decode_multi::<3>(bytes, out),
    }
}

/// [`decode_levels_f32`] for `N` in {2, 3} (a constant, so the per-element digit loops
/// unroll): 40 elements = `8·N` whole bytes, decoded through a small trit buffer.
#[inline(always)]
fn decode_multi<const N: usize>(bytes: &[u8], out: &mut [f32]) {
    let mut t = [0i8; 5 * 40];
    for (oc, bc) in out.chunks_mut(40).zip(bytes.chunks(8 * N)) {
        let nt = N * oc.len();
        for (c, &b) in t[..nt.div_ceil(5) * 5]
            .as_chunks_mut::<5>()
            .0
            .iter_mut()
            .zip(bc)
        {
            *c = DECODE[usize::from(b)];
        }
        for (o, d) in oc.iter_mut().zip(t[..nt].as_chunks::<N>().0) {
            let mut v = 0i32;
            for &dj in d.iter().rev() {
                v = 3 * v + i32::from(dj);
            }
            *o = v as f32;
        }
    }
}

/// Packs `values.len() <= 320` in-range values, `n` trits each, into `out`
/// (`⌈n·len/5⌉` bytes); no validation.
#[inline(always)]
pub(crate) fn encode_levels(n: u8, values: &[i8], out: &mut [u8]) {
    match n {
        1 => pack_base3_unchecked(values, out),
        5 => {
            for (o, &v) in out.iter_mut().zip(values) {
                *o = (i16::from(v) + 121) as u8;
            }
        }
        2 => encode_multi::<2>(values, out),
        _ => encode_multi::<3>(values, out),
    }
}

/// [`encode_levels`] for `N` in {2, 3}: 40 values = `8·N` whole bytes per piece.
#[inline(always)]
fn encode_multi<const N: usize>(values: &[i8], out: &mut [u8]) {
    let mut t = [0i8; 5 * 40];
    for (vc, oc) in values.chunks(40).zip(out.chunks_mut(8 * N)) {
        encode_levels_piece::<N>(vc, &mut t, oc);
    }
}

/// `BALANCED[n][q + L]`: the `n` balanced digits (least significant first) of every value
/// `q ∈ [−L, L]` for `n` in {2, 3}, so that encoding is a table lookup per element.
const BALANCED: [[[i8; 3]; 27]; 4] = {
    let mut t = [[[0i8; 3]; 27]; 4];
    let mut n = 2;
    while n <= 3 {
        let l = max_level(n as u8);
        let mut q = -l;
        while q <= l {
            let mut v = q;
            let mut j = 0;
            while j < n {
                // Balanced digit: remainder in {-1, 0, 1}.
                let r = v.rem_euclid(3);
                let digit = if r == 2 { -1 } else { r };
                t[n][(q + l) as usize][j] = digit as i8;
                v = (v - digit) / 3;
                j += 1;
            }
            q += 1;
        }
        n += 1;
    }
    t
};

/// [`encode_levels`] for at most 40 values of `N` in {2, 3} trits, through the buffer `t`.
#[inline(always)]
fn encode_levels_piece<const N: usize>(values: &[i8], t: &mut [i8; 200], out: &mut [u8]) {
    let l = max_level(N as u8);
    let table = &BALANCED[N];
    for (d, &v) in t.as_chunks_mut::<N>().0.iter_mut().zip(values) {
        let digits = &table[(i32::from(v) + l) as usize];
        for (dj, &x) in d.iter_mut().zip(digits) {
            *dj = x;
        }
    }
    pack_base3_unchecked(&t[..N * values.len()], out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_sizes() {
        assert_eq!(SUPPORTED_TRITS.map(max_level), [1, 4, 13, 121]);
        assert_eq!(levels_bytes(2, 7), 3);
        assert_eq!(TernaryPacking::Base3.packed_bytes(7), 2);
        assert_eq!(TernaryPacking::Planes.packed_bytes(65), 32);
        for n in [0u8, 4, 6] {
            assert!(check_trits_per_element(n).is_err());
        }
    }

    #[test]
    fn every_value_round_trips_at_every_trit_count() {
        for n in SUPPORTED_TRITS {
            let l = max_level(n);
            let values: Vec<i8> = (-l..=l).map(|v| v as i8).collect();
            let mut bytes = vec![0u8; levels_bytes(n, values.len())];
            pack_levels(n, &values, &mut bytes).unwrap();
            let mut back = vec![0i8; values.len()];
            unpack_levels(n, &bytes, &mut back).unwrap();
            assert_eq!(back, values, "n = {n}");
        }
        // n = 5 is one byte per element, q + 121; n = 1 is plain base 3.
        let mut b = [0u8; 2];
        pack_levels(5, &[-121, 7], &mut b).unwrap();
        assert_eq!(b, [0, 128]);
        let mut b1 = [0u8; 1];
        pack_levels(1, &[0, 0, 0, 0, 0], &mut b1).unwrap();
        assert_eq!(b1, [crate::pack::BASE3_ZERO]);
        assert!(pack_levels(2, &[5], &mut [0u8; 1]).is_err());
        let mut out = [9i8; 3];
        assert!(unpack_levels(2, &[250, 0], &mut out).is_err());
        assert_eq!(out, [9; 3]);
    }
}
