//! The declared parameters: names and shapes, sorted by name.

use crate::error::{Error, Result};

/// One declared parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// The name (keys the sketch: see the crate docs).
    pub name: String,
    /// The shape, row-major.
    pub shape: Vec<usize>,
}

impl Param {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Declared parameters sorted by name: the order of every gradient list in this crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    params: Vec<Param>,
}

impl Params {
    /// Builds the list from `(name, shape)` pairs in any order.
    ///
    /// # Errors
    /// [`Error::NoParameters`], [`Error::EmptyParameter`], [`Error::DuplicateParameter`].
    pub fn new(shapes: &[(String, Vec<usize>)]) -> Result<Self> {
        if shapes.is_empty() {
            return Err(Error::NoParameters);
        }
        let mut params: Vec<Param> = shapes
            .iter()
            .map(|(name, shape)| Param {
                name: name.clone(),
                shape: shape.clone(),
            })
            .collect();
        params.sort_by(|a, b| a.name.cmp(&b.name));
        for (i, p) in params.iter().enumerate() {
            if p.numel() == 0 {
                return Err(Error::EmptyParameter {
                    name: p.name.clone(),
                    shape: p.shape.clone(),
                });
            }
            if i > 0 && params[i - 1].name == p.name {
                return Err(Error::DuplicateParameter {
                    name: p.name.clone(),
                });
            }
        }
        Ok(Self { params })
    }

    /// The parameters, sorted by name.
    pub fn list(&self) -> &[Param] {
        &self.params
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// Always false (a list is never empty), for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// Total elements.
    pub fn total_numel(&self) -> usize {
        self.params.iter().map(Param::numel).sum()
    }

    /// Index of `name` in the sorted order.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.params
            .binary_search_by(|p| p.name.as_str().cmp(name))
            .ok()
    }

    /// Index of `name` in the sorted order, or [`Error::UnknownParameter`].
    ///
    /// # Errors
    /// [`Error::UnknownParameter`] when no parameter is called `name`.
    pub fn require(&self, name: &str) -> Result<usize> {
        self.position(name).ok_or_else(|| Error::UnknownParameter {
            name: name.to_string(),
        })
    }

    /// Checks that `count` buffers with lengths `len(i)` match the declared parameters.
    ///
    /// # Errors
    /// [`Error::ParameterCount`], [`Error::ShapeMismatch`].
    pub fn check_lengths(&self, count: usize, mut len: impl FnMut(usize) -> usize) -> Result<()> {
        if count != self.params.len() {
            return Err(Error::ParameterCount {
                expected: self.params.len(),
                actual: count,
            });
        }
        for (i, p) in self.params.iter().enumerate() {
            let n = len(i);
            if n != p.numel() {
                return Err(Error::ShapeMismatch {
                    name: p.name.clone(),
                    expected: p.shape.clone(),
                    actual: vec![n],
                });
            }
        }
        Ok(())
    }

    /// Checks lengths and that every value is finite.
    ///
    /// # Errors
    /// As [`Self::check_lengths`], plus [`Error::NonFiniteGradient`].
    pub fn check_grads<G: AsRef<[f32]>>(&self, grads: &[G]) -> Result<()> {
        self.check_lengths(grads.len(), |i| grads[i].as_ref().len())?;
        for (p, g) in self.params.iter().zip(grads) {
            if !g.as_ref().iter().all(|x| x.is_finite()) {
                return Err(Error::NonFiniteGradient {
                    name: p.name.clone(),
                });
            }
        }
        Ok(())
    }

    /// The fingerprint bytes of the names and shapes (lengths as little-endian `u64`).
    pub(crate) fn hash_into(&self, bytes: &mut Vec<u8>) {
        bytes.extend_from_slice(&(self.params.len() as u64).to_le_bytes());
        for p in &self.params {
            bytes.extend_from_slice(&(p.name.len() as u64).to_le_bytes());
            bytes.extend_from_slice(p.name.as_bytes());
            bytes.extend_from_slice(&(p.shape.len() as u64).to_le_bytes());
            for &d in &p.shape {
                bytes.extend_from_slice(&(d as u64).to_le_bytes());
            }
        }
    }
}
