//! Cleanup memory: the nearest codebook vector to a noisy query.

use crate::binary::BinaryVector;
use crate::error::{Error, Result, check_len};
use crate::real::RealVector;
use crate::ternary::TernaryVector;

/// What an [`ItemMemory`] needs from a hypervector type.
pub trait Hypervector {
    /// Dimension `D`.
    fn dim(&self) -> usize;
    /// Cosine similarity with a vector of the same dimension.
    fn similarity(&self, other: &Self) -> Result<f64>;
}

impl Hypervector for BinaryVector {
    fn dim(&self) -> usize {
        self.len()
    }
    fn similarity(&self, other: &Self) -> Result<f64> {
        self.cosine(other)
    }
}

impl Hypervector for TernaryVector {
    fn dim(&self) -> usize {
        self.len()
    }
    fn similarity(&self, other: &Self) -> Result<f64> {
        self.cosine(other)
    }
}

impl Hypervector for RealVector {
    fn dim(&self) -> usize {
        self.len()
    }
    fn similarity(&self, other: &Self) -> Result<f64> {
        self.cosine(other)
    }
}

/// A non-empty codebook of same-dimension vectors, queried for the nearest item by cosine
/// similarity. Ties go to the lowest index, so the answer is deterministic.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemMemory<V> {
    items: Vec<V>,
}

impl<V: Hypervector> ItemMemory<V> {
    /// Builds the memory. An empty codebook is `EmptyCodebook`; a vector whose dimension
    /// differs from vector 0 is `MixedCodebook`.
    pub fn new(items: Vec<V>) -> Result<Self> {
        let first = items.first().ok_or(Error::EmptyCodebook)?;
        let d = first.dim();
        if let Some((index, v)) = items.iter().enumerate().find(|(_, v)| v.dim() != d) {
            return Err(Error::MixedCodebook {
                index,
                expected: d,
                actual: v.dim(),
            });
        }
        Ok(Self { items })
    }

    /// Appends an item and returns its index; a wrong dimension is `MixedCodebook`.
    pub fn push(&mut self, v: V) -> Result<usize> {
        let d = self.dim();
        if v.dim() != d {
            return Err(Error::MixedCodebook {
                index: self.items.len(),
                expected: d,
                actual: v.dim(),
            });
        }
        self.items.push(v);
        Ok(self.items.len() - 1)
    }

    /// The common dimension.
    pub fn dim(&self) -> usize {
        self.items[0].dim()
    }

    /// Number of items (at least 1).
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Always `false`: the codebook is never empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Item `i`.
    pub fn get(&self, i: usize) -> Option<&V> {
        self.items.get(i)
    }

    /// All items, in insertion order.
    pub fn items(&self) -> &[V] {
        &self.items
    }

    /// `(index, cosine)` of the item most similar to `query`, lowest index on ties.
    pub fn nearest(&self, query: &V) -> Result<(usize, f64)> {
        check_len("query", self.dim(), query.dim())?;
        let mut best = (0, f64::NEG_INFINITY);
        for (i, v) in self.items.iter().enumerate() {
            let s = v.similarity(query)?;
            if s > best.1 {
                best = (i, s);
            }
        }
        Ok(best)
    }
}
