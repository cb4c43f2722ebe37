//! Real-valued hypervectors (the MAP model: Multiply, Add, Permute).

use crate::binary::BinaryVector;
use crate::error::{Result, bundle_len, check_bundle, check_len, check_nonzero};

const SIGN: u32 = 0x8000_0000;

/// The sign mask (`0` or `0x8000_0000`) of bit `j` of `half`; written as a compare so that it
/// vectorises without variable shifts.
#[inline(always)]
fn sign_mask(half: u32, j: usize) -> u32 {
    if half & (1u32 << j) != 0 { SIGN } else { 0 }
}

/// `out[i] = x[i] · s(i)` where `s(i) = −1` if bit `i` of `signs` is set, else `+1`, done by
/// XOR on the IEEE sign bit (exact, also for zeros, infinities and NaN payloads).
/// Requires `out.len() == x.len()` and `signs.len() * 64 >= x.len()`.
#[inline]
pub(crate) fn xor_signs_into(x: &[f32], signs: &[u64], out: &mut [f32]) {
    let xc = x.chunks_exact(32);
    let xr = xc.remainder();
    let mut oc = out.chunks_exact_mut(32);
    for (i, (xs, os)) in xc.zip(&mut oc).enumerate() {
        let half = (signs[i / 2] >> (32 * (i % 2))) as u32;
        for j in 0..32 {
            os[j] = f32::from_bits(xs[j].to_bits() ^ sign_mask(half, j));
        }
    }
    let base = x.len() - xr.len();
    for (j, (o, &v)) in oc.into_remainder().iter_mut().zip(xr).enumerate() {
        let bit = (signs[(base + j) / 64] >> ((base + j) % 64)) & 1;
        *o = f32::from_bits(v.to_bits() ^ ((bit as u32) << 31));
    }
}

/// `acc[i] += x[i] · s(i)` with the sign convention of [`xor_signs_into`].
#[inline]
pub(crate) fn xor_signs_add(x: &[f32], signs: &[u64], acc: &mut [f32]) {
    let xc = x.chunks_exact(32);
    let xr = xc.remainder();
    let mut ac = acc.chunks_exact_mut(32);
    for (i, (xs, a)) in xc.zip(&mut ac).enumerate() {
        let half = (signs[i / 2] >> (32 * (i % 2))) as u32;
        for j in 0..32 {
            a[j] += f32::from_bits(xs[j].to_bits() ^ sign_mask(half, j));
        }
    }
    let base = x.len() - xr.len();
    for (j, (a, &v)) in ac.into_remainder().iter_mut().zip(xr).enumerate() {
        let bit = (signs[(base + j) / 64] >> ((base + j) % 64)) & 1;
        *a += f32::from_bits(v.to_bits() ^ ((bit as u32) << 31));
    }
}

/// Dot product of two equal-length slices: 16 `f32` lanes, then a fixed-order `f64` sum
/// (deterministic; independent of thread count).
#[inline]
pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f64 {
    const L: usize = 16;
    let mut acc = [0f32; L];
    let ca = a.chunks_exact(L);
    let cb = b.chunks_exact(L);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..L {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s: f64 = acc.iter().map(|&v| f64::from(v)).sum();
    for (&x, &y) in ra.iter().zip(rb) {
        s += f64::from(x) * f64::from(y);
    }
    s
}

/// A real hypervector in `ℝ^D` (`f32`), the MAP model.
///
/// Algebra:
/// * bind = elementwise product with a **±1 key** (a [`BinaryVector`]), implemented by XOR on
///   the IEEE sign bit; `unbind = bind` and `(x ⊗ k) ⊗ k = x` exactly, bit for bit.
///   [`mul`](Self::mul) is the general elementwise product (exactly invertible only by ±1).
/// * bundle = elementwise sum (superposition); its sign is the majority vote.
/// * `ρ^k` = cyclic rotation, `ρ^k(x ⊗ k) = ρ^k(x) ⊗ ρ^k(k)`.
/// * For independent random ±1 vectors `E cos = 0`, `sd cos = 1/√D`.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "RawReal"))]
pub struct RealVector {
    data: Vec<f32>,
}

#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
struct RawReal {
    data: Vec<f32>,
}

#[cfg(feature = "serde")]
impl TryFrom<RawReal> for RealVector {
    type Error = crate::Error;
    fn try_from(r: RawReal) -> Result<Self> {
        Self::from_vec(r.data)
    }
}

impl RealVector {
    /// Wraps a non-empty `Vec<f32>`.
    pub fn from_vec(data: Vec<f32>) -> Result<Self> {
        check_nonzero("data.len()", data.len())?;
        Ok(Self { data })
    }

    pub(crate) fn from_vec_unchecked(data: Vec<f32>) -> Self {
        debug_assert!(!data.is_empty());
        Self { data }
    }

    /// The zero vector.
    pub fn zeros(len: usize) -> Result<Self> {
        check_nonzero("len", len)?;
        Ok(Self {
            data: vec![0.0; len],
        })
    }

    /// The random ±1 vector for `key` under `seed`: exactly
    /// `BinaryVector::random(len, seed, key).to_real()` (same stream, same bits).
    pub fn random(len: usize, seed: u64, key: u64) -> Result<Self> {
        Ok(BinaryVector::random(len, seed, key)?.to_real())
    }

    /// The elements.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// The elements, mutably (the length cannot change).
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Unwraps the elements.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }

    /// Dimension `D`.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Always `false`: vectors have `D ≥ 1`.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Element `i`, or `None` when `i >= len`.
    pub fn get(&self, i: usize) -> Option<f32> {
        self.data.get(i).copied()
    }

    /// Bind with a ±1 key: `x ⊙ k`, by flipping sign bits where the key is −1.
    pub fn bind(&self, key: &BinaryVector) -> Result<Self> {
        let mut out = self.clone();
        self.bind_into(key, &mut out)?;
        Ok(out)
    }

    /// [`bind`](Self::bind) into a preallocated output.
    pub fn bind_into(&self, key: &BinaryVector, out: &mut Self) -> Result<()> {
        check_len("key", self.len(), key.len())?;
        check_len("out", self.len(), out.len())?;
        xor_signs_into(&self.data, key.words(), &mut out.data);
        Ok(())
    }

    /// Unbind with a ±1 key; the same as [`bind`](Self::bind) because `k² = 1`.
    pub fn unbind(&self, key: &BinaryVector) -> Result<Self> {
        self.bind(key)
    }

    /// General elementwise product `x ⊙ y` (MAP multiplication).
    pub fn mul(&self, other: &Self) -> Result<Self> {
        check_len("other", self.len(), other.len())?;
        let data = self
            .data
            .iter()
            .zip(&other.data)
            .map(|(a, b)| a * b)
            .collect();
        Ok(Self { data })
    }

    /// Sum of two vectors (MAP bundling of 2).
    pub fn bundle2(&self, other: &Self) -> Result<Self> {
        Self::bundle(&[self, other])
    }

    /// Elementwise sum of `m ≥ 1` vectors, added in the given order (deterministic).
    pub fn bundle(vs: &[&Self]) -> Result<Self> {
        let mut out = Self::zeros(bundle_len(vs.iter().map(|v| v.len()))?)?;
        Self::bundle_into(vs, &mut out)?;
        Ok(out)
    }

    /// [`bundle`](Self::bundle) into a preallocated output (overwritten).
    pub fn bundle_into(vs: &[&Self], out: &mut Self) -> Result<()> {
        check_bundle(vs.iter().map(|v| v.len()), out.len())?;
        out.data.copy_from_slice(&vs[0].data);
        for v in &vs[1..] {
            for (o, &x) in out.data.iter_mut().zip(&v.data) {
                *o += x;
            }
        }
        Ok(())
    }

    /// The sign pattern as a bipolar vector (`x < 0` → −1, otherwise +1, so `-0.0` and NaN
    /// with the sign bit set map to −1: the rule is "sign bit set").
    pub fn sign(&self) -> BinaryVector {
        let mut words = vec![0u64; self.len().div_ceil(64)];
        for (w, chunk) in words.iter_mut().zip(self.data.chunks(64)) {
            for (j, x) in chunk.iter().enumerate() {
                *w |= u64::from(x.to_bits() >> 31) << j;
            }
        }
        BinaryVector::from_words_unchecked(self.len(), words)
    }

    /// Cyclic rotation: element `i` moves to `(i + k) mod D`.
    pub fn permute(&self, k: usize) -> Self {
        let mut out = self.clone();
        self.rotate_to(k, &mut out.data);
        out
    }

    /// [`permute`](Self::permute) into a preallocated output.
    pub fn permute_into(&self, k: usize, out: &mut Self) -> Result<()> {
        check_len("out", self.len(), out.len())?;
        self.rotate_to(k, &mut out.data);
        Ok(())
    }

    fn rotate_to(&self, k: usize, out: &mut [f32]) {
        let n = self.len();
        let k = k % n;
        out[k..].copy_from_slice(&self.data[..n - k]);
        out[..k].copy_from_slice(&self.data[n - k..]);
    }

    /// Inverse rotation: `inverse_permute(permute(x, k), k) = x`.
    pub fn inverse_permute(&self, k: usize) -> Self {
        self.permute(self.len() - k % self.len())
    }

    /// Dot product (16 `f32` lanes, fixed-order `f64` reduction).
    pub fn dot(&self, other: &Self) -> Result<f64> {
        check_len("other", self.len(), other.len())?;
        Ok(dot_f32(&self.data, &other.data))
    }

    /// Euclidean norm.
    pub fn norm(&self) -> f64 {
        dot_f32(&self.data, &self.data).sqrt()
    }

    /// Cosine similarity; 0 when either vector is zero.
    pub fn cosine(&self, other: &Self) -> Result<f64> {
        let dot = self.dot(other)?;
        let den = self.norm() * other.norm();
        Ok(if den == 0.0 { 0.0 } else { dot / den })
    }
}
