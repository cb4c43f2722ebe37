//! Lossless trit packings.
//!
//! **Bitplanes (2 bits/trit)**, the layout of `vsa_core::TernaryVector`: two `u64` planes
//! `plus` and `minus` of [`plane_words`]`(len)` words each. Trit `i` lives in word `i / 64`
//! at bit `i % 64` (LSB first); a set `plus` bit means `+1`, a set `minus` bit means `−1`,
//! never both; bits at positions `>= len` are zero.
//!
//! **Base 3 (1.6 bits/trit)**: [`base3_bytes`]`(len)` bytes; byte `b` holds trits
//! `5b .. 5b+5` as the digits `d_j = q_{5b+j} + 1` of `Σ_j d_j·3^j` (so bytes are `0..=242`,
//! `121` is five zeros). Padding trits past `len` are zero, so the last byte is canonical.

use crate::error::{Error, Result, check_len};

/// Number of `u64` words per plane for `len` trits.
pub const fn plane_words(len: usize) -> usize {
    len.div_ceil(64)
}

/// Number of bytes for `len` trits in base 3.
pub const fn base3_bytes(len: usize) -> usize {
    len.div_ceil(5)
}

/// The base-3 byte of five zero trits.
pub const BASE3_ZERO: u8 = 121;

/// `DECODE[b]` = the five trits of base-3 byte `b` (for `b <= 242`).
pub(crate) const DECODE: [[i8; 5]; 243] = {
    let mut t = [[0i8; 5]; 243];
    let mut b = 0;
    while b < 243 {
        let mut v = b;
        let mut j = 0;
        while j < 5 {
            t[b][j] = (v % 3) as i8 - 1;
            v /= 3;
            j += 1;
        }
        b += 1;
    }
    t
};

/// `DECODE_F32[b]` = [`DECODE`] as `f32`, for the dequantize kernels.
pub(crate) const DECODE_F32: [[f32; 5]; 243] = {
    let mut t = [[0f32; 5]; 243];
    let mut b = 0;
    while b < 243 {
        let mut j = 0;
        while j < 5 {
            t[b][j] = DECODE[b][j] as f32;
            j += 1;
        }
        b += 1;
    }
    t
};

/// `BITS_F32[b][j]` = bit `j` of byte `b` as `0.0`/`1.0`: bitplane decoding one byte
/// (8 trits) per lookup instead of a variable shift per element.
pub(crate) const BITS_F32: [[f32; 8]; 256] = {
    let mut t = [[0f32; 8]; 256];
    let mut b = 0;
    while b < 256 {
        let mut j = 0;
        while j < 8 {
            t[b][j] = ((b >> j) & 1) as f32;
            j += 1;
        }
        b += 1;
    }
    t
};

/// Encodes five trits (already validated) as one base-3 byte.
#[inline(always)]
pub(crate) fn encode5(t: &[i8; 5]) -> u8 {
    let d = |j: usize| (t[j] + 1) as u8;
    d(0) + 3 * d(1) + 9 * d(2) + 27 * d(3) + 81 * d(4)
}

/// Fails with [`Error::InvalidTrit`] on the first value outside {-1, 0, 1}.
pub(crate) fn check_trits(trits: &[i8]) -> Result<()> {
    // Branch-free scan first (vectorizes); locate only on failure.
    let bad = trits
        .iter()
        .fold(false, |acc, &t| acc | (t.wrapping_add(1) as u8 > 2));
    if !bad {
        return Ok(());
    }
    let (index, &value) = trits
        .iter()
        .enumerate()
        .find(|(_, t)| !(-1..=1).contains(*t))
        .unwrap_or((0, &0));
    Err(Error::InvalidTrit { index, value })
}

/// Validates a pair of planes for `len` trits: lengths, no overlap, zero tail bits.
pub fn check_planes(len: usize, plus: &[u64], minus: &[u64]) -> Result<()> {
    let words = plane_words(len);
    check_len("plus", words, plus.len())?;
    check_len("minus", words, minus.len())?;
    let overlap = plus.iter().zip(minus).fold(0u64, |a, (p, m)| a | (p & m));
    if overlap != 0 {
        let index = plus.iter().zip(minus).position(|(p, m)| p & m != 0);
        return Err(Error::InvalidPacked {
            what: "plus/minus",
            index: index.unwrap_or(0),
            detail: "a trit has both its plus and minus bit set",
        });
    }
    if !len.is_multiple_of(64) {
        let tail = !0u64 << (len % 64);
        if (plus[words - 1] | minus[words - 1]) & tail != 0 {
            return Err(Error::InvalidPacked {
                what: "plus/minus",
                index: words - 1,
                detail: "bits past len are set",
            });
        }
    }
    Ok(())
}

/// Validates base-3 bytes for `len` trits: length, every byte `<= 242`, zero padding trits.
pub fn check_base3(len: usize, bytes: &[u8]) -> Result<()> {
    check_len("bytes", base3_bytes(len), bytes.len())?;
    let max = bytes.iter().copied().fold(0u8, u8::max);
    if max > 242 {
        let index = bytes.iter().position(|&b| b > 242).unwrap_or(0);
        return Err(Error::InvalidPacked {
            what: "bytes",
            index,
            detail: "byte > 242 is not five base-3 digits",
        });
    }
    let used = len % 5;
    if used != 0 {
        let last = bytes[bytes.len() - 1];
        if DECODE[usize::from(last)][used..].iter().any(|&t| t != 0) {
            return Err(Error::InvalidPacked {
                what: "bytes",
                index: bytes.len() - 1,
                detail: "padding trits past len are not zero",
            });
        }
    }
    Ok(())
}

/// Packs trits into the two bitplanes (each of [`plane_words`]`(trits.len())` words).
pub fn pack_planes(trits: &[i8], plus: &mut [u64], minus: &mut [u64]) -> Result<()> {
    let words = plane_words(trits.len());
    check_len("plus", words, plus.len())?;
    check_len("minus", words, minus.len())?;
    check_trits(trits)?;
    for ((c, p), m) in trits.chunks(64).zip(plus.iter_mut()).zip(minus.iter_mut()) {
        (*p, *m) = planes_word(c);
    }
    Ok(())
}

/// Packs 64 flags (each byte 0 or 1) into a word, flag `j` at bit `j`. Each group of 8 bytes
/// is gathered with one multiply: byte `i` of `v` times byte `7−i` of the magic lands at bit
/// `56 + i`, and every other partial product lands at a distinct bit below 56 or past 63, so
/// there are no carries into the top byte.
#[inline(always)]
pub(crate) fn flags_to_word(flags: &[u8; 64]) -> u64 {
    let mut w = 0u64;
    for (k, c) in flags.chunks_exact(8).enumerate() {
        let v = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        w |= (v.wrapping_mul(0x0102_0408_1020_4080) >> 56) << (8 * k);
    }
    w
}

/// Packs up to 64 valid trits into one `(plus, minus)` word pair.
#[inline(always)]
pub(crate) fn planes_word(c: &[i8]) -> (u64, u64) {
    let (mut fp, mut fm) = ([0u8; 64], [0u8; 64]);
    for ((p, m), &t) in fp.iter_mut().zip(fm.iter_mut()).zip(c) {
        *p = u8::from(t == 1);
        *m = u8::from(t == -1);
    }
    (flags_to_word(&fp), flags_to_word(&fm))
}

/// Unpacks bitplanes into `out.len()` trits; validates the planes first.
pub fn unpack_planes(plus: &[u64], minus: &[u64], out: &mut [i8]) -> Result<()> {
    check_planes(out.len(), plus, minus)?;
    for ((c, &p), &m) in out.chunks_mut(64).zip(plus).zip(minus) {
        for (j, o) in c.iter_mut().enumerate() {
            *o = ((p >> j) & 1) as i8 - ((m >> j) & 1) as i8;
        }
    }
    Ok(())
}

/// Packs trits into base-3 bytes ([`base3_bytes`]`(trits.len())` of them).
pub fn pack_base3(trits: &[i8], out: &mut [u8]) -> Result<()> {
    check_len("out", base3_bytes(trits.len()), out.len())?;
    check_trits(trits)?;
    pack_base3_unchecked(trits, out);
    Ok(())
}

/// `M = 81 + 27·2^8 + 9·2^16 + 3·2^24 + 2^32`: see [`digits_to_byte`].
const BASE3_MAGIC: u64 = 81 | 27 << 8 | 9 << 16 | 3 << 24 | 1 << 32;

/// The base-3 byte `Σ_j 3^j·d_j` of five digits `d_j ∈ {0, 1, 2}` held in bytes `0..5` of
/// `w` (bytes `5..8` zero), with one multiply: byte 4 of `w·M` is `Σ_j d_j·3^j ≤ 242`, and
/// bytes 0–3 of the product hold `81d_0`, `27d_0 + 81d_1`, `9d_0 + 27d_1 + 81d_2`,
/// `3d_0 + 9d_1 + 27d_2 + 81d_3`, each at most 240, so nothing carries into byte 4.
#[inline(always)]
pub(crate) fn digits_to_byte(w: u64) -> u8 {
    (w.wrapping_mul(BASE3_MAGIC) >> 32) as u8
}

/// Packs digits `d_i = q_i + 1 ∈ {0, 1, 2}`, five per byte, into `out`
/// (`⌈d.len()/5⌉` bytes; a short last group is padded with digit 1, the zero trit).
#[inline(always)]
pub(crate) fn pack_digits(d: &[u8], out: &mut [u8]) {
    let chunks = d.chunks_exact(5);
    let rem = chunks.remainder();
    for (o, c) in out.iter_mut().zip(chunks) {
        let w = u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])) | u64::from(c[4]) << 32;
        *o = digits_to_byte(w);
    }
    if !rem.is_empty() {
        let mut t = [1u8; 8];
        t[..rem.len()].copy_from_slice(rem);
        t[5..].fill(0);
        if let Some(o) = out.last_mut() {
            *o = digits_to_byte(u64::from_le_bytes(t));
        }
    }
}

/// [`pack_base3`] without validation (trits must be in {-1, 0, 1}, lengths must agree).
#[inline]
pub(crate) fn pack_base3_unchecked(trits: &[i8], out: &mut [u8]) {
    let chunks = trits.chunks_exact(5);
    let rem = chunks.remainder();
    for (o, c) in out.iter_mut().zip(chunks) {
        let d = |j: usize| (c[j] + 1) as u8;
        let w = u64::from(u32::from_le_bytes([d(0), d(1), d(2), d(3)])) | u64::from(d(4)) << 32;
        *o = digits_to_byte(w);
    }
    if !rem.is_empty() {
        let mut t = [0i8; 5];
        t[..rem.len()].copy_from_slice(rem);
        if let Some(o) = out.last_mut() {
            *o = encode5(&t);
        }
    }
}

/// Unpacks base-3 bytes into `out.len()` trits (table-driven); validates the bytes first.
pub fn unpack_base3(bytes: &[u8], out: &mut [i8]) -> Result<()> {
    check_base3(out.len(), bytes)?;
    let mut chunks = out.chunks_exact_mut(5);
    for (c, &b) in (&mut chunks).zip(bytes) {
        c.copy_from_slice(&DECODE[usize::from(b)]);
    }
    let rem = chunks.into_remainder();
    if !rem.is_empty() {
        let n = rem.len();
        rem.copy_from_slice(&DECODE[usize::from(bytes[bytes.len() - 1])][..n]);
    }
    Ok(())
}

/// Re-packs bitplanes as base-3 bytes for `len` trits, through a small stack buffer.
pub fn planes_to_base3(len: usize, plus: &[u64], minus: &[u64], out: &mut [u8]) -> Result<()> {
    check_planes(len, plus, minus)?;
    check_len("out", base3_bytes(len), out.len())?;
    // 320 trits = 5 plane words = 64 base-3 bytes.
    let mut buf = [0i8; 320];
    for (i, oc) in out.chunks_mut(64).enumerate() {
        let start = i * 320;
        let n = (len - start).min(320);
        let t = &mut buf[..n];
        for (w, c) in t.chunks_mut(64).enumerate() {
            let (p, m) = (plus[start / 64 + w], minus[start / 64 + w]);
            for (j, o) in c.iter_mut().enumerate() {
                *o = ((p >> j) & 1) as i8 - ((m >> j) & 1) as i8;
            }
        }
        pack_base3_unchecked(t, oc);
    }
    Ok(())
}

/// Re-packs base-3 bytes as bitplanes for `len` trits, through a small stack buffer.
pub fn base3_to_planes(
    len: usize,
    bytes: &[u8],
    plus: &mut [u64],
    minus: &mut [u64],
) -> Result<()> {
    check_base3(len, bytes)?;
    check_len("plus", plane_words(len), plus.len())?;
    check_len("minus", plane_words(len), minus.len())?;
    let mut buf = [0i8; 320];
    for (i, bc) in bytes.chunks(64).enumerate() {
        let start = i * 320;
        let n = (len - start).min(320);
        for (c, &b) in buf.chunks_exact_mut(5).zip(bc) {
            c.copy_from_slice(&DECODE[usize::from(b)]);
        }
        let w0 = start / 64;
        for (w, c) in buf[..n].chunks(64).enumerate() {
            (plus[w0 + w], minus[w0 + w]) = planes_word(c);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_to_word_gathers_every_bit() {
        for j in 0..64 {
            let mut f = [0u8; 64];
            f[j] = 1;
            assert_eq!(flags_to_word(&f), 1u64 << j);
        }
        assert_eq!(flags_to_word(&[1; 64]), !0);
        let f: [u8; 64] = std::array::from_fn(|j| u8::from(j % 3 == 0));
        let expect = (0..64).filter(|j| j % 3 == 0).fold(0u64, |w, j| w | 1 << j);
        assert_eq!(flags_to_word(&f), expect);
    }

    #[test]
    fn decode_table_known_values() {
        assert_eq!(DECODE[0], [-1; 5]);
        assert_eq!(DECODE[usize::from(BASE3_ZERO)], [0; 5]);
        assert_eq!(DECODE[242], [1; 5]);
        // 1 + 3*2 = 7 -> digits [1, 2, 0, 0, 0] -> trits [0, 1, -1, -1, -1]
        assert_eq!(DECODE[7], [0, 1, -1, -1, -1]);
        for b in 0..243u8 {
            let t = DECODE[usize::from(b)];
            assert_eq!(encode5(&t), b);
            let d = t.map(|x| (x + 1) as u8);
            let mut o = [0u8; 1];
            pack_digits(&d, &mut o);
            assert_eq!(o[0], b);
            pack_base3_unchecked(&t, &mut o);
            assert_eq!(o[0], b);
            // A short group is padded with zero trits (digit 1).
            for k in 1..5 {
                pack_digits(&d[..k], &mut o);
                let mut padded = [0i8; 5];
                padded[..k].copy_from_slice(&t[..k]);
                assert_eq!(o[0], encode5(&padded), "{b} {k}");
            }
        }
    }

    #[test]
    fn planes_layout_matches_vsa_core_convention() {
        let mut t = vec![0i8; 70];
        t[0] = 1;
        t[1] = -1;
        t[65] = 1;
        let (mut p, mut m) = (vec![0u64; 2], vec![0u64; 2]);
        pack_planes(&t, &mut p, &mut m).unwrap();
        assert_eq!(p, [1, 2]);
        assert_eq!(m, [2, 0]);
    }

    #[test]
    fn invalid_encodings_are_rejected() {
        assert!(matches!(
            check_planes(3, &[1], &[1]),
            Err(Error::InvalidPacked { .. })
        ));
        assert!(matches!(
            check_planes(3, &[8], &[0]),
            Err(Error::InvalidPacked { index: 0, .. })
        ));
        assert!(check_base3(5, &[243]).is_err());
        // len 3: padding digits must be 1 (trit 0); byte 0 has padding trits -1.
        assert!(check_base3(3, &[0]).is_err());
        assert!(check_base3(3, &[BASE3_ZERO]).is_ok());
        assert_eq!(
            pack_base3(&[0, 2], &mut [0]),
            Err(Error::InvalidTrit { index: 1, value: 2 })
        );
        let mut out = [9i8; 3];
        assert!(unpack_base3(&[0], &mut out).is_err());
        assert_eq!(out, [9; 3]);
    }
}
