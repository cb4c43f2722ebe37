//! Fused quantize+pack and unpack+dequantize kernels into caller-owned buffers.
//!
//! None of these allocate: randomness and trits go through fixed stack tiles of
//! 320 elements (5 plane words, 64 base-3 bytes). Each kernel validates everything (lengths,
//! finiteness, scale) before it writes, so on `Err` the outputs are untouched.

use crate::error::{Result, check_len};
use crate::pack::{
    BITS_F32, DECODE_F32, base3_bytes, check_base3, check_planes, flags_to_word,
    pack_base3_unchecked, plane_words,
};
use crate::quant::{
    RAND_TILE, check_scale, checked_max_abs, fill_words, mean_abs_unchecked, prescale,
    stochastic_trit, threshold_trits,
};
use crate::rng::{RngKey, unit};

/// Stochastic quantization of `x` with `scale = max|x|` straight into bitplanes; returns the
/// scale. Same trits as [`crate::quantize_stochastic_into`] with `start_index = 0`.
pub fn quantize_stochastic_planes_into(
    x: &[f32],
    key: RngKey,
    plus: &mut [u64],
    minus: &mut [u64],
) -> Result<f32> {
    let m = checked_max_abs("x", x)?;
    quantize_stochastic_planes_with_scale_into(x, m, key, 0, plus, minus)?;
    Ok(m)
}

/// Chunkable form of [`quantize_stochastic_planes_into`]: `x` is the slice of a tensor that
/// starts at plane word `start_word` (element `64·start_word`), quantized with a given
/// `scale >= max|x|` (normally the whole tensor's max). `plus`/`minus` are the chunk's words.
pub fn quantize_stochastic_planes_with_scale_into(
    x: &[f32],
    scale: f32,
    key: RngKey,
    start_word: u64,
    plus: &mut [u64],
    minus: &mut [u64],
) -> Result<()> {
    let words = plane_words(x.len());
    check_len("plus", words, plus.len())?;
    check_len("minus", words, minus.len())?;
    let m = checked_max_abs("x", x)?;
    check_scale(scale, m)?;
    if scale == 0.0 {
        plus.fill(0);
        minus.fill(0);
        return Ok(());
    }
    let (pre, inv) = prescale(scale);
    let mut rng = key.stream_at(start_word * 64);
    let mut bytes = [0u8; 4 * RAND_TILE];
    let mut rand = [0u32; RAND_TILE];
    let tile_words = RAND_TILE / 64;
    for ((xc, pc), mc) in x
        .chunks(RAND_TILE)
        .zip(plus.chunks_mut(tile_words))
        .zip(minus.chunks_mut(tile_words))
    {
        let r = &mut rand[..xc.len()];
        fill_words(&mut rng, &mut bytes, r);
        for (((x64, r64), p), mo) in xc.chunks(64).zip(r.chunks(64)).zip(pc).zip(mc) {
            let (mut fp, mut fm) = ([0u8; 64], [0u8; 64]);
            for (((a, b), &v), &rw) in fp.iter_mut().zip(fm.iter_mut()).zip(x64).zip(r64) {
                let keep = unit(rw) < (v.abs() * pre) * inv;
                *a = u8::from(keep & (v > 0.0));
                *b = u8::from(keep & (v < 0.0));
            }
            *p = flags_to_word(&fp);
            *mo = flags_to_word(&fm);
        }
    }
    Ok(())
}

/// Deterministic absmean (BitNet b1.58) quantization straight into bitplanes; returns `γ`.
pub fn quantize_absmean_planes_into(x: &[f32], plus: &mut [u64], minus: &mut [u64]) -> Result<f32> {
    let words = plane_words(x.len());
    check_len("plus", words, plus.len())?;
    check_len("minus", words, minus.len())?;
    checked_max_abs("x", x)?;
    let gamma = mean_abs_unchecked(x);
    for ((x64, p), m) in x.chunks(64).zip(plus.iter_mut()).zip(minus.iter_mut()) {
        let (mut fp, mut fm) = ([0u8; 64], [0u8; 64]);
        for ((a, b), &v) in fp.iter_mut().zip(fm.iter_mut()).zip(x64) {
            let keep = 2.0 * v.abs() > gamma;
            *a = u8::from(keep & (v > 0.0));
            *b = u8::from(keep & (v < 0.0));
        }
        *p = flags_to_word(&fp);
        *m = flags_to_word(&fm);
    }
    Ok(gamma)
}

/// `out_i = scale · q_i` from bitplanes of `out.len()` trits (validated first).
pub fn dequantize_planes_into(
    plus: &[u64],
    minus: &[u64],
    scale: f32,
    out: &mut [f32],
) -> Result<()> {
    check_planes(out.len(), plus, minus)?;
    for ((c, &p), &m) in out.chunks_mut(64).zip(plus).zip(minus) {
        let (pb, mb) = (p.to_le_bytes(), m.to_le_bytes());
        for ((o8, &a), &b) in c.chunks_mut(8).zip(&pb).zip(&mb) {
            let (tp, tm) = (&BITS_F32[usize::from(a)], &BITS_F32[usize::from(b)]);
            for ((o, &x), &y) in o8.iter_mut().zip(tp).zip(tm) {
                *o = scale * (x - y);
            }
        }
    }
    Ok(())
}

/// Stochastic quantization of `x` with `scale = max|x|` straight into base-3 bytes; returns
/// the scale. Same trits as [`crate::quantize_stochastic_into`] with `start_index = 0`.
pub fn quantize_stochastic_base3_into(x: &[f32], key: RngKey, out: &mut [u8]) -> Result<f32> {
    let m = checked_max_abs("x", x)?;
    quantize_stochastic_base3_with_scale_into(x, m, key, 0, out)?;
    Ok(m)
}

/// Chunkable form of [`quantize_stochastic_base3_into`]: `x` starts at byte `start_byte`
/// (element `5·start_byte`) of the tensor and is quantized with `scale >= max|x|`.
pub fn quantize_stochastic_base3_with_scale_into(
    x: &[f32],
    scale: f32,
    key: RngKey,
    start_byte: u64,
    out: &mut [u8],
) -> Result<()> {
    check_len("out", base3_bytes(x.len()), out.len())?;
    let m = checked_max_abs("x", x)?;
    check_scale(scale, m)?;
    if scale == 0.0 {
        out.fill(crate::pack::BASE3_ZERO);
        return Ok(());
    }
    let (pre, inv) = prescale(scale);
    let mut rng = key.stream_at(start_byte * 5);
    let mut bytes = [0u8; 4 * RAND_TILE];
    let mut rand = [0u32; RAND_TILE];
    let mut trits = [0i8; RAND_TILE];
    for (xc, oc) in x.chunks(RAND_TILE).zip(out.chunks_mut(RAND_TILE / 5)) {
        let n = xc.len();
        let r = &mut rand[..n];
        fill_words(&mut rng, &mut bytes, r);
        for ((t, &v), &rw) in trits[..n].iter_mut().zip(xc).zip(r.iter()) {
            *t = stochastic_trit(v, rw, pre, inv);
        }
        pack_base3_unchecked(&trits[..n], oc);
    }
    Ok(())
}

/// Deterministic absmean quantization straight into base-3 bytes; returns `γ`.
pub fn quantize_absmean_base3_into(x: &[f32], out: &mut [u8]) -> Result<f32> {
    check_len("out", base3_bytes(x.len()), out.len())?;
    checked_max_abs("x", x)?;
    let gamma = mean_abs_unchecked(x);
    let mut trits = [0i8; RAND_TILE];
    for (xc, oc) in x.chunks(RAND_TILE).zip(out.chunks_mut(RAND_TILE / 5)) {
        let t = &mut trits[..xc.len()];
        threshold_trits(xc, gamma, 2.0, t);
        pack_base3_unchecked(t, oc);
    }
    Ok(gamma)
}

/// `out_i = scale · q_i` from base-3 bytes of `out.len()` trits (validated first; the decode
/// is a 243-entry `[f32; 5]` table lookup per byte).
pub fn dequantize_base3_into(bytes: &[u8], scale: f32, out: &mut [f32]) -> Result<()> {
    check_base3(out.len(), bytes)?;
    dequantize_base3_unchecked(bytes, scale, out);
    Ok(())
}

#[inline(always)]
pub(crate) fn dequantize_base3_unchecked(bytes: &[u8], scale: f32, out: &mut [f32]) {
    let (chunks, rem) = out.as_chunks_mut::<5>();
    for (c, &b) in chunks.iter_mut().zip(bytes) {
        let d = &DECODE_F32[usize::from(b)];
        // Four lanes and one: a single vector multiply on SSE2.
        let (lo, hi) = (&mut c[..4], &d[..4]);
        for (o, &t) in lo.iter_mut().zip(hi) {
            *o = scale * t;
        }
        c[4] = scale * d[4];
    }
    if let (false, Some(&b)) = (rem.is_empty(), bytes.last()) {
        for (o, &t) in rem.iter_mut().zip(&DECODE_F32[usize::from(b)]) {
            *o = scale * t;
        }
    }
}
