//! Bipolar hypervectors packed one bit per element.

use crate::bits::{self, BLK, SlicedCounter};
use crate::error::{Error, Result, bundle_len, check_bundle, check_len, check_nonzero};
use crate::real::RealVector;
use crate::rng::{GOLDEN_GAMMA, chacha_stream, domain, mix, splitmix64};

/// A bipolar hypervector in `{-1, +1}^D`, packed one bit per element in `u64` words.
///
/// **Encoding:** element `i` lives in word `i / 64` at bit `i % 64` (LSB first); a **0 bit
/// means +1 and a 1 bit means −1**. With this choice the product of two elements is the XOR of
/// their bits (`(-1)^a · (-1)^b = (-1)^(a ⊕ b)`), so binding is XOR and the all-zero vector is
/// the identity. Bits past `len` are always zero.
///
/// Algebra (`⊗` = bind, `ρ^k` = permute):
/// * `a ⊗ b = b ⊗ a`, `a ⊗ a = 1`, so `unbind = bind` and `(a ⊗ k) ⊗ k = a` exactly.
/// * `ρ^k(a ⊗ b) = ρ^k(a) ⊗ ρ^k(b)`, `ρ^{-k}(ρ^k(a)) = a`.
/// * `dot(a, b) = D − 2·hamming(a, b)`, `cos(a, b) = dot / D`.
/// * For independent random `a, b`: `E cos = 0`, `sd cos = 1/√D`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "RawBinary"))]
pub struct BinaryVector {
    len: usize,
    words: Vec<u64>,
}

#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
struct RawBinary {
    len: usize,
    words: Vec<u64>,
}

#[cfg(feature = "serde")]
impl TryFrom<RawBinary> for BinaryVector {
    type Error = Error;
    fn try_from(r: RawBinary) -> Result<Self> {
        Self::from_words(r.len, r.words)
    }
}

/// Word `w` of the fixed tie-break vector: `splitmix64(TIE + w·GOLDEN_GAMMA)`, i.e. the
/// SplitMix64 sequence started at the constant `TIE`. Stateless (random access by word), the
/// same for every dimension and every seed, and cheap enough to compute inline.
#[inline]
pub(crate) fn tie_word(w: usize) -> u64 {
    splitmix64(domain::TIE.wrapping_add((w as u64).wrapping_mul(GOLDEN_GAMMA)))
}

impl BinaryVector {
    /// The all-`+1` vector (all bits zero), the identity of bind.
    pub fn ones(len: usize) -> Result<Self> {
        check_nonzero("len", len)?;
        Ok(Self {
            len,
            words: vec![0; bits::words_for(len)],
        })
    }

    /// The random vector for `key` under `seed`: uniform, independent ±1 elements.
    ///
    /// Counter-based: its words are the first `ceil(len/64)` outputs (`next_u64`) of
    /// `chacha_stream(mix(seed, BIPOLAR), key)`, so vector `key` is the same whatever was
    /// generated before it and on whichever thread. Derive `key` from a name with
    /// [`crate::rng::key_from_name`].
    pub fn random(len: usize, seed: u64, key: u64) -> Result<Self> {
        check_nonzero("len", len)?;
        let mut rng = chacha_stream(mix(seed, domain::BIPOLAR), key);
        let mut words = vec![0; bits::words_for(len)];
        bits::fill_words(&mut rng, &mut words);
        bits::clear_padding(&mut words, len);
        Ok(Self { len, words })
    }

    /// The fixed tie-break vector used when an even number of vectors is bundled: word `w` is
    /// `splitmix64(TIE + w·GOLDEN_GAMMA)` with the constant `TIE = 0x7469652D62726B00`
    /// ("tie-brk"), independent of any user seed, so the tie-break of a dimension-`D` vector
    /// is a prefix of the one for any larger `D`. It is pseudo-random, so ties resolve to ±1
    /// with equal frequency and bundles stay balanced.
    pub fn tie_breaker(len: usize) -> Result<Self> {
        check_nonzero("len", len)?;
        let mut words: Vec<u64> = (0..bits::words_for(len)).map(tie_word).collect();
        bits::clear_padding(&mut words, len);
        Ok(Self { len, words })
    }

    /// Builds a vector from packed words (layout in the type docs). Errors on `len == 0`, a
    /// word count other than `ceil(len/64)`, or set bits past `len`.
    pub fn from_words(len: usize, words: Vec<u64>) -> Result<Self> {
        check_nonzero("len", len)?;
        check_len("words", bits::words_for(len), words.len())?;
        let last = words.len() - 1;
        if words[last] & !bits::last_mask(len) != 0 {
            return Err(Error::BadPlanes {
                reason: "bits set past len",
                word: last,
            });
        }
        Ok(Self { len, words })
    }

    pub(crate) fn from_words_unchecked(len: usize, words: Vec<u64>) -> Self {
        debug_assert!(len > 0 && words.len() == bits::words_for(len));
        Self { len, words }
    }

    /// Builds a vector from `±1` values. Any other value is an `InvalidValue` error.
    pub fn from_bipolar(values: &[i8]) -> Result<Self> {
        check_nonzero("values.len()", values.len())?;
        let mut words = vec![0u64; bits::words_for(values.len())];
        for (i, &v) in values.iter().enumerate() {
            match v {
                1 => {}
                -1 => words[i / 64] |= 1 << (i % 64),
                _ => {
                    return Err(Error::InvalidValue {
                        what: "values",
                        index: i,
                        value: i64::from(v),
                        expected: "-1 or +1",
                    });
                }
            }
        }
        Ok(Self {
            len: values.len(),
            words,
        })
    }

    /// The elements as `±1`.
    pub fn to_bipolar(&self) -> Vec<i8> {
        (0..self.len)
            .map(|i| 1 - 2 * ((self.words[i / 64] >> (i % 64)) & 1) as i8)
            .collect()
    }

    /// The elements as an `f32` vector of `±1` (the MAP expansion).
    pub fn to_real(&self) -> RealVector {
        let mut out = vec![0f32; self.len];
        for (chunk, &w) in out.chunks_mut(64).zip(&self.words) {
            for (j, x) in chunk.iter_mut().enumerate() {
                *x = f32::from_bits(1f32.to_bits() | (((w >> j) & 1) as u32) << 31);
            }
        }
        RealVector::from_vec_unchecked(out)
    }

    /// The packed words (layout in the type docs).
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Dimension `D`.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always `false`: vectors have `D ≥ 1`.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Element `i` as `±1`, or `None` when `i >= len`.
    pub fn get(&self, i: usize) -> Option<i8> {
        (i < self.len).then(|| 1 - 2 * ((self.words[i / 64] >> (i % 64)) & 1) as i8)
    }

    /// Bind (elementwise product = XOR of the bits).
    pub fn bind(&self, other: &Self) -> Result<Self> {
        let mut out = self.clone();
        out.bind_assign(other)?;
        Ok(out)
    }

    /// `out = self ⊗ other` without allocating.
    pub fn bind_into(&self, other: &Self, out: &mut Self) -> Result<()> {
        check_len("other", self.len, other.len)?;
        check_len("out", self.len, out.len)?;
        for ((o, &a), &b) in out.words.iter_mut().zip(&self.words).zip(&other.words) {
            *o = a ^ b;
        }
        Ok(())
    }

    /// `self = self ⊗ other` in place.
    pub fn bind_assign(&mut self, other: &Self) -> Result<()> {
        check_len("other", self.len, other.len)?;
        for (a, &b) in self.words.iter_mut().zip(&other.words) {
            *a ^= b;
        }
        Ok(())
    }

    /// Unbind; identical to [`bind`](Self::bind) because XOR is self-inverse.
    pub fn unbind(&self, key: &Self) -> Result<Self> {
        self.bind(key)
    }

    /// Majority of two vectors: where they agree the common value, where they differ the bit
    /// of the fixed [`tie_breaker`](Self::tie_breaker). Commutative; each input agrees with
    /// the result on about 3/4 of the elements (`E cos = 1/2`).
    pub fn bundle2(&self, other: &Self) -> Result<Self> {
        Self::bundle(&[self, other])
    }

    /// Majority vote of `m ≥ 1` vectors. Element `i` is −1 when more than `m/2` inputs are −1,
    /// +1 when fewer, and for even `m` with an exact tie it is the element of the fixed
    /// [`tie_breaker`](Self::tie_breaker). Deterministic and independent of input order.
    pub fn bundle(vs: &[&Self]) -> Result<Self> {
        let mut out = Self::ones(bundle_len(vs.iter().map(|v| v.len))?)?;
        Self::bundle_into(vs, &mut out)?;
        Ok(out)
    }

    /// [`bundle`](Self::bundle) into a preallocated output. Bit-sliced counters: O(m·D/64·log m)
    /// word operations, no allocation.
    pub fn bundle_into(vs: &[&Self], out: &mut Self) -> Result<()> {
        check_bundle(vs.iter().map(|v| v.len), out.len)?;
        let m = vs.len();
        let width = bits::bit_width(m);
        let half = m / 2;
        let even = m.is_multiple_of(2);
        let mut c = SlicedCounter::new();
        let nw = out.words.len();
        for o in (0..nw).step_by(BLK) {
            c.reset(width);
            for (i, v) in vs.iter().enumerate() {
                c.add(&bits::load_block(&v.words, o), bits::bit_width(i + 1));
            }
            // Compare the count with `half`, from the most significant plane down.
            let mut gt = [0u64; BLK];
            let mut eq = [u64::MAX; BLK];
            for k in (0..width).rev() {
                let h = 0u64.wrapping_sub(((half >> k) & 1) as u64);
                let p = &c.planes[k];
                for l in 0..BLK {
                    gt[l] |= eq[l] & p[l] & !h;
                    eq[l] &= !(p[l] ^ h);
                }
            }
            if even {
                for l in 0..BLK {
                    gt[l] |= eq[l] & tie_word(o + l);
                }
            }
            bits::store_block(&mut out.words, o, &gt);
        }
        bits::clear_padding(&mut out.words, out.len);
        Ok(())
    }

    /// Cyclic rotation: element `i` moves to position `(i + k) mod D`.
    pub fn permute(&self, k: usize) -> Self {
        let mut out = self.clone();
        bits::rotate_into(&self.words, self.len, k, &mut out.words);
        out
    }

    /// [`permute`](Self::permute) into a preallocated output.
    pub fn permute_into(&self, k: usize, out: &mut Self) -> Result<()> {
        check_len("out", self.len, out.len)?;
        bits::rotate_into(&self.words, self.len, k, &mut out.words);
        Ok(())
    }

    /// Inverse rotation: element `i` moves to `(i − k) mod D`; `inverse_permute(permute(a, k), k) = a`.
    pub fn inverse_permute(&self, k: usize) -> Self {
        self.permute(self.len - k % self.len)
    }

    /// Number of differing elements (popcount of the XOR, whole words).
    pub fn hamming(&self, other: &Self) -> Result<u64> {
        check_len("other", self.len, other.len)?;
        Ok(bits::hamming_words(&self.words, &other.words))
    }

    /// Bipolar dot product `Σ aᵢbᵢ = D − 2·hamming`.
    pub fn dot(&self, other: &Self) -> Result<i64> {
        Ok(self.len as i64 - 2 * self.hamming(other)? as i64)
    }

    /// Cosine similarity `dot / D`, in `[-1, 1]`.
    pub fn cosine(&self, other: &Self) -> Result<f64> {
        Ok(self.dot(other)? as f64 / self.len as f64)
    }
}
