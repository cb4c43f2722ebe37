//! Ternary hypervectors `{-1, 0, +1}^D` in two bit planes.

use crate::bits::{self, BLK, SlicedCounter};
use crate::error::{Error, Result, bundle_len, check_bundle, check_len, check_nonzero};
use crate::rng::{chacha_stream, domain, mix};

/// A ternary hypervector in `{-1, 0, +1}^D`, stored as two bit planes (2 bits per element).
///
/// **Layout (fixed; `ternary-quant` packs into it):** element `i` lives in word `i / 64` at
/// bit `i % 64` (LSB first) of both planes. A set bit in `plus` means +1, a set bit in `minus`
/// means −1, neither means 0; never both. Bits past `len` are always zero in both planes.
///
/// Algebra (`⊗` = bind = elementwise product):
/// * `a ⊗ b = b ⊗ a`; the all-`+1` vector is the identity.
/// * `unbind(a ⊗ k, k) = a ⊙ |k|`: where the key is ±1 the element is recovered exactly
///   (`k² = 1`); **where the key is 0 the information is lost and unbind returns 0**.
/// * `ρ^k(a ⊗ b) = ρ^k(a) ⊗ ρ^k(b)`.
/// * `bundle` = `sign(Σ vᵢ)` elementwise, with `sign(0) = 0`: the tie-break is the natural
///   zero of the ternary alphabet, so it is deterministic and order independent.
/// * `dot = #(same sign) − #(opposite sign)`; `cos = dot / √(nnz(a)·nnz(b))`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "RawTernary"))]
pub struct TernaryVector {
    len: usize,
    plus: Vec<u64>,
    minus: Vec<u64>,
}

#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
struct RawTernary {
    len: usize,
    plus: Vec<u64>,
    minus: Vec<u64>,
}

#[cfg(feature = "serde")]
impl TryFrom<RawTernary> for TernaryVector {
    type Error = Error;
    fn try_from(r: RawTernary) -> Result<Self> {
        Self::from_planes(r.len, r.plus, r.minus)
    }
}

impl TernaryVector {
    /// The all-zero vector of dimension `len`.
    pub fn zeros(len: usize) -> Result<Self> {
        check_nonzero("len", len)?;
        let n = bits::words_for(len);
        Ok(Self {
            len,
            plus: vec![0; n],
            minus: vec![0; n],
        })
    }

    /// The all-`+1` vector, the identity of bind.
    pub fn ones(len: usize) -> Result<Self> {
        let mut v = Self::zeros(len)?;
        v.plus.fill(u64::MAX);
        bits::clear_padding(&mut v.plus, len);
        Ok(v)
    }

    /// The random vector for `key` under `seed`: each element is +1 or −1 with probability
    /// 1/4 and 0 with probability 1/2, independently.
    ///
    /// Counter-based: for word `w` the generator `chacha_stream(mix(seed, TERNARY), key)`
    /// yields a sign word `s` then a support word `z` (`next_u64` twice) and
    /// `plus = z & !s`, `minus = z & s`. Vector `key` does not depend on what else was made.
    pub fn random(len: usize, seed: u64, key: u64) -> Result<Self> {
        let mut v = Self::zeros(len)?;
        let mut rng = chacha_stream(mix(seed, domain::TERNARY), key);
        for (p, m) in v.plus.iter_mut().zip(v.minus.iter_mut()) {
            let s = rand_core::RngCore::next_u64(&mut rng);
            let z = rand_core::RngCore::next_u64(&mut rng);
            *p = z & !s;
            *m = z & s;
        }
        bits::clear_padding(&mut v.plus, len);
        bits::clear_padding(&mut v.minus, len);
        Ok(v)
    }

    /// Builds a vector from its planes, validating everything: `len ≥ 1`, both planes hold
    /// `ceil(len/64)` words, no element is set in both planes, no bit is set past `len`.
    pub fn from_planes(len: usize, plus: Vec<u64>, minus: Vec<u64>) -> Result<Self> {
        check_nonzero("len", len)?;
        let n = bits::words_for(len);
        check_len("plus", n, plus.len())?;
        check_len("minus", n, minus.len())?;
        if let Some(word) = plus.iter().zip(&minus).position(|(p, m)| p & m != 0) {
            return Err(Error::BadPlanes {
                reason: "an element is set in both plus and minus",
                word,
            });
        }
        let pad = !bits::last_mask(len);
        if (plus[n - 1] | minus[n - 1]) & pad != 0 {
            return Err(Error::BadPlanes {
                reason: "bits set past len",
                word: n - 1,
            });
        }
        Ok(Self { len, plus, minus })
    }

    pub(crate) fn from_planes_unchecked(len: usize, plus: Vec<u64>, minus: Vec<u64>) -> Self {
        debug_assert!(Self::from_planes(len, plus.clone(), minus.clone()).is_ok());
        Self { len, plus, minus }
    }

    /// The `(plus, minus)` planes.
    pub fn planes(&self) -> (&[u64], &[u64]) {
        (&self.plus, &self.minus)
    }

    /// Consumes the vector and returns `(len, plus, minus)`.
    pub fn into_planes(self) -> (usize, Vec<u64>, Vec<u64>) {
        (self.len, self.plus, self.minus)
    }

    /// Builds a vector from trits in `{-1, 0, 1}`; anything else is an `InvalidValue` error.
    pub fn from_trits(trits: &[i8]) -> Result<Self> {
        let mut v = Self::zeros(trits.len())?;
        for (i, &t) in trits.iter().enumerate() {
            match t {
                0 => {}
                1 => v.plus[i / 64] |= 1 << (i % 64),
                -1 => v.minus[i / 64] |= 1 << (i % 64),
                _ => {
                    return Err(Error::InvalidValue {
                        what: "trits",
                        index: i,
                        value: i64::from(t),
                        expected: "-1, 0 or +1",
                    });
                }
            }
        }
        Ok(v)
    }

    /// The elements as trits.
    pub fn to_trits(&self) -> Vec<i8> {
        (0..self.len).map(|i| self.trit(i)).collect()
    }

    #[inline]
    fn trit(&self, i: usize) -> i8 {
        let (w, b) = (i / 64, i % 64);
        ((self.plus[w] >> b) & 1) as i8 - ((self.minus[w] >> b) & 1) as i8
    }

    /// Dimension `D`.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always `false`: vectors have `D ≥ 1`.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Element `i`, or `None` when `i >= len`.
    pub fn get(&self, i: usize) -> Option<i8> {
        (i < self.len).then(|| self.trit(i))
    }

    /// Number of non-zero elements (`‖a‖²`).
    pub fn nnz(&self) -> u64 {
        bits::popcount_zip(&self.plus, &self.minus, |p, m| p | m)
    }

    /// `out = f(self, other)` word by word on the `(plus, minus)` planes; lengths are checked
    /// by the caller.
    #[inline]
    fn zip_planes(
        &self,
        other: &Self,
        out: &mut Self,
        f: impl Fn((u64, u64), (u64, u64)) -> (u64, u64),
    ) {
        let planes = out.plus.iter_mut().zip(out.minus.iter_mut());
        let inputs = self.plus.iter().zip(&self.minus);
        let others = other.plus.iter().zip(&other.minus);
        for (((op, om), (&ap, &am)), (&bp, &bm)) in planes.zip(inputs).zip(others) {
            (*op, *om) = f((ap, am), (bp, bm));
        }
    }

    /// Bind: elementwise product.
    pub fn bind(&self, other: &Self) -> Result<Self> {
        let mut out = self.clone();
        self.bind_into(other, &mut out)?;
        Ok(out)
    }

    /// `out = self ⊗ other` without allocating:
    /// `plus = (a⁺∧b⁺) ∨ (a⁻∧b⁻)`, `minus = (a⁺∧b⁻) ∨ (a⁻∧b⁺)`.
    pub fn bind_into(&self, other: &Self, out: &mut Self) -> Result<()> {
        check_len("other", self.len, other.len)?;
        check_len("out", self.len, out.len)?;
        self.zip_planes(other, out, |(ap, am), (bp, bm)| {
            ((ap & bp) | (am & bm), (ap & bm) | (am & bp))
        });
        Ok(())
    }

    /// Unbind: the same product. Recovers `a` exactly where the key is ±1 and gives 0 where
    /// the key is 0 (`unbind(a ⊗ k, k) = a ⊙ |k|`).
    pub fn unbind(&self, key: &Self) -> Result<Self> {
        self.bind(key)
    }

    /// `sign(a + b)`: the common value where both agree, the non-zero one where one is 0, and
    /// 0 where they are opposite.
    pub fn bundle2(&self, other: &Self) -> Result<Self> {
        check_len("other", self.len, other.len)?;
        let mut out = self.clone();
        self.zip_planes(other, &mut out, |(ap, am), (bp, bm)| {
            ((ap & !bm) | (!am & bp), (am & !bp) | (!ap & bm))
        });
        Ok(out)
    }

    /// `sign(Σ vᵢ)` elementwise over `m ≥ 1` vectors, 0 at ties.
    pub fn bundle(vs: &[&Self]) -> Result<Self> {
        let mut out = Self::zeros(bundle_len(vs.iter().map(|v| v.len))?)?;
        Self::bundle_into(vs, &mut out)?;
        Ok(out)
    }

    /// [`bundle`](Self::bundle) into a preallocated output: bit-sliced counters of the +1 and
    /// −1 planes compared plane by plane, O(m·D/64·log m) word operations, no allocation.
    pub fn bundle_into(vs: &[&Self], out: &mut Self) -> Result<()> {
        check_bundle(vs.iter().map(|v| v.len), out.len)?;
        match bits::bit_width(vs.len()) {
            1 => bundle_fixed::<1>(vs, out),
            2 => bundle_fixed::<2>(vs, out),
            3 => bundle_fixed::<3>(vs, out),
            4 => bundle_fixed::<4>(vs, out),
            5 => bundle_fixed::<5>(vs, out),
            6 => bundle_fixed::<6>(vs, out),
            w => bundle_general(vs, out, w),
        }
        Ok(())
    }

    /// Cyclic rotation: element `i` moves to position `(i + k) mod D`.
    pub fn permute(&self, k: usize) -> Self {
        let mut out = self.clone();
        bits::rotate_into(&self.plus, self.len, k, &mut out.plus);
        bits::rotate_into(&self.minus, self.len, k, &mut out.minus);
        out
    }

    /// [`permute`](Self::permute) into a preallocated output.
    pub fn permute_into(&self, k: usize, out: &mut Self) -> Result<()> {
        check_len("out", self.len, out.len)?;
        bits::rotate_into(&self.plus, self.len, k, &mut out.plus);
        bits::rotate_into(&self.minus, self.len, k, &mut out.minus);
        Ok(())
    }

    /// Inverse rotation: `inverse_permute(permute(a, k), k) = a`.
    pub fn inverse_permute(&self, k: usize) -> Self {
        self.permute(self.len - k % self.len)
    }

    /// Dot product `#(same sign) − #(opposite sign)`, popcount on whole words.
    pub fn dot(&self, other: &Self) -> Result<i64> {
        check_len("other", self.len, other.len)?;
        Ok(bits::ternary_dot(
            &self.plus,
            &self.minus,
            &other.plus,
            &other.minus,
        ))
    }

    /// Cosine `dot / √(nnz(a)·nnz(b))`; 0 when either vector is all zero.
    pub fn cosine(&self, other: &Self) -> Result<f64> {
        let dot = self.dot(other)?;
        let den = (self.nnz() as f64 * other.nnz() as f64).sqrt();
        Ok(if den == 0.0 { 0.0 } else { dot as f64 / den })
    }

    /// Number of positions whose trits differ.
    pub fn hamming(&self, other: &Self) -> Result<u64> {
        check_len("other", self.len, other.len)?;
        let n = self.plus.len();
        let mut total = 0u64;
        for i in 0..n {
            total += u64::from(
                ((self.plus[i] ^ other.plus[i]) | (self.minus[i] ^ other.minus[i])).count_ones(),
            );
        }
        Ok(total)
    }
}

/// Ternary bundle with `W` counter planes held in fixed arrays (`m < 2^W`).
fn bundle_fixed<const W: usize>(vs: &[&TernaryVector], out: &mut TernaryVector) {
    let nw = out.plus.len();
    for o in (0..nw).step_by(BLK) {
        let mut cp = [[0u64; BLK]; W];
        let mut cm = [[0u64; BLK]; W];
        for v in vs {
            bits::ripple(&mut cp, &bits::load_block(&v.plus, o));
            bits::ripple(&mut cm, &bits::load_block(&v.minus, o));
        }
        let (gt, lt, _) = bits::compare::<W>(&cp, &cm);
        bits::store_block(&mut out.plus, o, &gt);
        bits::store_block(&mut out.minus, o, &lt);
    }
}

/// Ternary bundle for any `m`, with counters of `width` planes.
fn bundle_general(vs: &[&TernaryVector], out: &mut TernaryVector, width: usize) {
    let mut cp = SlicedCounter::new();
    let mut cm = SlicedCounter::new();
    let nw = out.plus.len();
    for o in (0..nw).step_by(BLK) {
        cp.reset(width);
        cm.reset(width);
        for (i, v) in vs.iter().enumerate() {
            let depth = bits::bit_width(i + 1);
            cp.add(&bits::load_block(&v.plus, o), depth);
            cm.add(&bits::load_block(&v.minus, o), depth);
        }
        let mut gt = [0u64; BLK];
        let mut lt = [0u64; BLK];
        let mut eq = [u64::MAX; BLK];
        for k in (0..width).rev() {
            let (p, q) = (&cp.planes[k], &cm.planes[k]);
            for l in 0..BLK {
                gt[l] |= eq[l] & p[l] & !q[l];
                lt[l] |= eq[l] & !p[l] & q[l];
                eq[l] &= !(p[l] ^ q[l]);
            }
        }
        bits::store_block(&mut out.plus, o, &gt);
        bits::store_block(&mut out.minus, o, &lt);
    }
}
