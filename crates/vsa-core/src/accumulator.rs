//! Streaming majority vote with integer counters.

use crate::binary::{BinaryVector, tie_word};
use crate::bits;
use crate::error::{Error, Result, check_len, check_nonzero};
use crate::ternary::TernaryVector;

/// `1` if bit `j` of `half` is set, else `0`; written as a compare so that it vectorises.
#[inline(always)]
fn bit(half: u32, j: usize) -> i32 {
    if half & (1u32 << j) != 0 { 1 } else { 0 }
}

/// `sums[i] += plus_i − minus_i` where `plus_i`/`minus_i` are bit `i` of the planes.
/// A bipolar vector is `plus = !bits`, `minus = bits`; pass `plus = None` for that case.
#[inline]
fn add_planes(sums: &mut [i32], plus: Option<&[u64]>, minus: &[u64]) {
    let base = sums.len() - sums.len() % 32;
    let mut sc = sums.chunks_exact_mut(32);
    for (i, s) in (&mut sc).enumerate() {
        let shift = 32 * (i % 2);
        let m = (minus[i / 2] >> shift) as u32;
        let p = plus.map_or(!m, |p| (p[i / 2] >> shift) as u32);
        for (j, sj) in s.iter_mut().enumerate() {
            *sj += bit(p, j) - bit(m, j);
        }
    }
    for (i, s) in sums[base..].iter_mut().enumerate() {
        let k = base + i;
        let m = ((minus[k / 64] >> (k % 64)) & 1) as i32;
        let p = plus.map_or(1 - m, |p| ((p[k / 64] >> (k % 64)) & 1) as i32);
        *s += p - m;
    }
}

/// An integer accumulator for bundling a stream of vectors: per element, the sum of the
/// bipolar or ternary values added so far. Finish with [`to_binary`](Self::to_binary)
/// (majority, same tie-break as [`BinaryVector::bundle`]) or [`to_ternary`](Self::to_ternary)
/// (`sign`, 0 at ties, same as [`TernaryVector::bundle`]).
///
/// Order independent (integer sums) and exact for up to `i32::MAX` added vectors; adding more
/// is an `Overflow` error.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "RawAccumulator"))]
pub struct BundleAccumulator {
    sums: Vec<i32>,
    count: u64,
}

#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
struct RawAccumulator {
    sums: Vec<i32>,
    count: u64,
}

#[cfg(feature = "serde")]
impl TryFrom<RawAccumulator> for BundleAccumulator {
    type Error = Error;
    fn try_from(r: RawAccumulator) -> Result<Self> {
        check_nonzero("sums.len()", r.sums.len())?;
        if r.count > i32::MAX as u64 {
            return Err(Error::Overflow {
                what: "BundleAccumulator::count",
                limit: i32::MAX as u64,
            });
        }
        Ok(Self {
            sums: r.sums,
            count: r.count,
        })
    }
}

impl BundleAccumulator {
    /// An empty accumulator for dimension `len`.
    pub fn new(len: usize) -> Result<Self> {
        check_nonzero("len", len)?;
        Ok(Self {
            sums: vec![0; len],
            count: 0,
        })
    }

    /// Dimension `D`.
    pub fn len(&self) -> usize {
        self.sums.len()
    }

    /// Always `false`: accumulators have `D ≥ 1`.
    pub fn is_empty(&self) -> bool {
        self.sums.is_empty()
    }

    /// How many vectors were added since the last reset.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The per-element sums.
    pub fn sums(&self) -> &[i32] {
        &self.sums
    }

    /// Forgets everything added.
    pub fn reset(&mut self) {
        self.sums.fill(0);
        self.count = 0;
    }

    fn check_add(&self, len: usize) -> Result<()> {
        check_len("v", self.len(), len)?;
        if self.count >= i32::MAX as u64 {
            return Err(Error::Overflow {
                what: "BundleAccumulator::count",
                limit: i32::MAX as u64,
            });
        }
        Ok(())
    }

    /// Adds a bipolar vector (+1 or −1 per element).
    pub fn add_binary(&mut self, v: &BinaryVector) -> Result<()> {
        self.check_add(v.len())?;
        add_planes(&mut self.sums, None, v.words());
        self.count += 1;
        Ok(())
    }

    /// Adds a ternary vector (−1, 0 or +1 per element).
    pub fn add_ternary(&mut self, v: &TernaryVector) -> Result<()> {
        self.check_add(v.len())?;
        let (p, m) = v.planes();
        add_planes(&mut self.sums, Some(p), m);
        self.count += 1;
        Ok(())
    }

    /// Majority as a bipolar vector: −1 where the sum is negative, +1 where positive, the
    /// fixed tie-break bit where it is zero (as in [`BinaryVector::bundle`]).
    pub fn to_binary(&self) -> BinaryVector {
        let mut words = vec![0u64; bits::words_for(self.len())];
        for (i, (w, chunk)) in words.iter_mut().zip(self.sums.chunks(64)).enumerate() {
            let t = tie_word(i);
            for (j, &s) in chunk.iter().enumerate() {
                let b = match s.signum() {
                    -1 => 1,
                    1 => 0,
                    _ => (t >> j) & 1,
                };
                *w |= b << j;
            }
        }
        BinaryVector::from_words_unchecked(self.len(), words)
    }

    /// `sign` of the sums as a ternary vector (0 where the sum is zero).
    pub fn to_ternary(&self) -> TernaryVector {
        let n = bits::words_for(self.len());
        let (mut plus, mut minus) = (vec![0u64; n], vec![0u64; n]);
        for (i, chunk) in self.sums.chunks(64).enumerate() {
            for (j, &s) in chunk.iter().enumerate() {
                plus[i] |= u64::from(s > 0) << j;
                minus[i] |= u64::from(s < 0) << j;
            }
        }
        TernaryVector::from_planes_unchecked(self.len(), plus, minus)
    }
}
