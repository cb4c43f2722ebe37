//! Parameter sets: declared names and shapes in one canonical (sorted) order, and the
//! validation every facade object applies to incoming gradient maps.
//!
//! Parameter identity always comes from the sorted names, never from `HashMap` iteration
//! order, so every output is independent of the order in which maps were built.

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;

use crate::error::{Error, Result};

/// One declared parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    /// The parameter's name (as in the `VarMap`).
    pub name: String,
    /// The parameter's shape.
    pub shape: Vec<usize>,
}

impl ParamSpec {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Declared parameters, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSet {
    specs: Vec<ParamSpec>,
    index: BTreeMap<String, usize>,
}

impl ParamSet {
    /// Builds a set from `(name, shape)` pairs in any order.
    ///
    /// # Errors
    /// [`Error::NoParameters`] for an empty list, [`Error::DuplicateParameter`] for a repeated
    /// name, [`Error::EmptyParameter`] for a shape with no elements.
    pub fn new(shapes: &[(String, Vec<usize>)]) -> Result<Self> {
        if shapes.is_empty() {
            return Err(Error::NoParameters);
        }
        let mut specs: Vec<ParamSpec> = shapes
            .iter()
            .map(|(name, shape)| ParamSpec {
                name: name.clone(),
                shape: shape.clone(),
            })
            .collect();
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        let mut index = BTreeMap::new();
        for (i, s) in specs.iter().enumerate() {
            if s.numel() == 0 {
                return Err(Error::EmptyParameter {
                    name: s.name.clone(),
                    shape: s.shape.clone(),
                });
            }
            if index.insert(s.name.clone(), i).is_some() {
                return Err(Error::DuplicateParameter {
                    name: s.name.clone(),
                });
            }
        }
        Ok(Self { specs, index })
    }

    /// The float variables of a `VarMap`, sorted by name, with their set.
    ///
    /// # Errors
    /// As [`ParamSet::new`].
    pub fn from_varmap(varmap: &VarMap) -> Result<(Self, Vec<Var>)> {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| Error::InvalidState("VarMap mutex is poisoned".into()))?;
        let mut named: Vec<(String, Var)> = data
            .iter()
            .filter(|(_, v)| v.dtype().is_float())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        drop(data);
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let shapes: Vec<(String, Vec<usize>)> = named
            .iter()
            .map(|(k, v)| (k.clone(), v.dims().to_vec()))
            .collect();
        let set = Self::new(&shapes)?;
        Ok((set, named.into_iter().map(|(_, v)| v).collect()))
    }

    /// The float variables of `varmap` in this set's order, after checking that `varmap`
    /// holds exactly these names with these shapes.
    ///
    /// # Errors
    /// [`Error::UnknownParameter`], [`Error::MissingParameter`], [`Error::ShapeMismatch`].
    pub fn vars_matching(&self, varmap: &VarMap) -> Result<Vec<Var>> {
        let (set, vars) = Self::from_varmap(varmap)?;
        for s in set.specs() {
            match self.position(&s.name) {
                None => {
                    return Err(Error::UnknownParameter {
                        name: s.name.clone(),
                    });
                }
                Some(i) if self.specs[i].shape != s.shape => {
                    return Err(Error::ShapeMismatch {
                        name: s.name.clone(),
                        expected: self.specs[i].shape.clone(),
                        actual: s.shape.clone(),
                    });
                }
                Some(_) => {}
            }
        }
        for s in &self.specs {
            if set.position(&s.name).is_none() {
                return Err(Error::MissingParameter {
                    name: s.name.clone(),
                });
            }
        }
        Ok(vars)
    }

    /// The gradients of `grads` for the variables of `varmap` (which must hold exactly this
    /// set's parameters) as a name → tensor map, and the variables in this set's order.
    ///
    /// # Errors
    /// As [`ParamSet::vars_matching`]; a variable without a gradient is
    /// [`Error::MissingParameter`].
    pub fn grad_store_map(
        &self,
        varmap: &VarMap,
        grads: &candle_core::backprop::GradStore,
    ) -> Result<(HashMap<String, Tensor>, Vec<Var>)> {
        let vars = self.vars_matching(varmap)?;
        let mut map = HashMap::with_capacity(vars.len());
        for (spec, var) in self.specs.iter().zip(&vars) {
            let g = grads
                .get(var.as_tensor())
                .ok_or_else(|| Error::MissingParameter {
                    name: spec.name.clone(),
                })?;
            map.insert(spec.name.clone(), g.clone());
        }
        Ok((map, vars))
    }

    /// The `(name, shape)` pairs of the float variables of `varmap`, sorted by name: the
    /// declaration every `from_varmap` constructor passes to its `new`.
    ///
    /// # Errors
    /// As [`ParamSet::from_varmap`].
    pub fn varmap_shapes(varmap: &VarMap) -> Result<Vec<(String, Vec<usize>)>> {
        let (set, _) = Self::from_varmap(varmap)?;
        Ok(set.specs.into_iter().map(|s| (s.name, s.shape)).collect())
    }

    /// The specs, sorted by name.
    pub fn specs(&self) -> &[ParamSpec] {
        &self.specs
    }

    /// The names, sorted (the parameter identity every checkpoint records).
    pub fn names(&self) -> Vec<String> {
        self.specs.iter().map(|s| s.name.clone()).collect()
    }

    /// The shapes, in sorted-name order.
    pub fn shapes(&self) -> Vec<Vec<usize>> {
        self.specs.iter().map(|s| s.shape.clone()).collect()
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.specs.len()
    }

    /// Always false: a set holds at least one parameter.
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// Total number of elements over all parameters.
    pub fn total_numel(&self) -> usize {
        self.specs.iter().map(ParamSpec::numel).sum()
    }

    /// Position of `name` in sorted order.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Checks that `grads` holds exactly the declared names, with the declared shapes and a
    /// supported float dtype. Does not look at the values.
    ///
    /// # Errors
    /// [`Error::UnknownParameter`], [`Error::MissingParameter`], [`Error::ShapeMismatch`],
    /// [`Error::UnsupportedDtype`].
    pub fn check_map(&self, grads: &HashMap<String, Tensor>) -> Result<()> {
        // Report problems in sorted-name order so the error is deterministic too.
        let mut extra: Vec<&String> = grads
            .keys()
            .filter(|k| !self.index.contains_key(*k))
            .collect();
        extra.sort();
        if let Some(name) = extra.first() {
            return Err(Error::UnknownParameter {
                name: (*name).clone(),
            });
        }
        for s in &self.specs {
            let t = grads.get(&s.name).ok_or_else(|| Error::MissingParameter {
                name: s.name.clone(),
            })?;
            check_tensor(s, t)?;
        }
        Ok(())
    }

    /// Validates `grads` (see [`ParamSet::check_map`]) and copies each gradient to a host
    /// `Vec<f32>` in sorted order, rejecting NaN and Inf.
    ///
    /// # Errors
    /// As [`ParamSet::check_map`], plus [`Error::NonFiniteGradient`].
    pub fn to_host_f32(&self, grads: &HashMap<String, Tensor>) -> Result<Vec<Vec<f32>>> {
        self.check_map(grads)?;
        let mut out = Vec::with_capacity(self.specs.len());
        for s in &self.specs {
            let v = tensor_to_f32(&grads[&s.name])?;
            if !v.iter().all(|x| x.is_finite()) {
                return Err(Error::NonFiniteGradient {
                    name: s.name.clone(),
                });
            }
            out.push(v);
        }
        Ok(out)
    }

    /// Builds f32 tensors with the declared shapes from host vectors in sorted order.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when the number of vectors differs from the number of
    /// parameters (named `<parameter list>`, shapes `[count]`) or a vector's length differs
    /// from the declared size.
    pub fn from_host_f32(
        &self,
        values: &[Vec<f32>],
        device: &Device,
    ) -> Result<HashMap<String, Tensor>> {
        if values.len() != self.specs.len() {
            return Err(Error::ShapeMismatch {
                name: "<parameter list>".into(),
                expected: vec![self.specs.len()],
                actual: vec![values.len()],
            });
        }
        let mut map = HashMap::with_capacity(self.specs.len());
        for (s, v) in self.specs.iter().zip(values) {
            if v.len() != s.numel() {
                return Err(Error::ShapeMismatch {
                    name: s.name.clone(),
                    expected: s.shape.clone(),
                    actual: vec![v.len()],
                });
            }
            let t = Tensor::from_slice(v.as_slice(), s.shape.as_slice(), device)?;
            map.insert(s.name.clone(), t);
        }
        Ok(map)
    }
}

/// Checks one tensor against its spec: shape and a supported float dtype.
pub(crate) fn check_tensor(spec: &ParamSpec, t: &Tensor) -> Result<()> {
    if t.dims() != spec.shape.as_slice() {
        return Err(Error::ShapeMismatch {
            name: spec.name.clone(),
            expected: spec.shape.clone(),
            actual: t.dims().to_vec(),
        });
    }
    match t.dtype() {
        DType::F32 | DType::F16 | DType::BF16 => Ok(()),
        dtype => Err(Error::UnsupportedDtype {
            name: spec.name.clone(),
            dtype,
        }),
    }
}

/// Copies a float tensor to a flat host `Vec<f32>`, converting f16 and bf16.
pub(crate) fn tensor_to_f32(t: &Tensor) -> Result<Vec<f32>> {
    let t = if t.dtype() == DType::F32 {
        t.flatten_all()?
    } else {
        t.to_dtype(DType::F32)?.flatten_all()?
    };
    Ok(t.to_vec1::<f32>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shapes() -> Vec<(String, Vec<usize>)> {
        vec![("b".into(), vec![3]), ("a".into(), vec![2, 2])]
    }

    #[test]
    fn sorted_and_indexed() {
        let s = ParamSet::new(&shapes()).unwrap();
        assert_eq!(s.specs()[0].name, "a");
        assert_eq!(s.position("b"), Some(1));
        assert_eq!(s.total_numel(), 7);
    }

    #[test]
    fn bad_declarations() {
        assert!(matches!(ParamSet::new(&[]), Err(Error::NoParameters)));
        let dup = vec![("a".into(), vec![1]), ("a".into(), vec![2])];
        assert!(matches!(
            ParamSet::new(&dup),
            Err(Error::DuplicateParameter { .. })
        ));
        let empty = vec![("a".into(), vec![0, 3])];
        assert!(matches!(
            ParamSet::new(&empty),
            Err(Error::EmptyParameter { .. })
        ));
    }

    #[test]
    fn map_validation() {
        let s = ParamSet::new(&shapes()).unwrap();
        let d = Device::Cpu;
        let mut m = HashMap::new();
        m.insert(
            "a".to_string(),
            Tensor::zeros((2, 2), DType::F32, &d).unwrap(),
        );
        assert!(matches!(
            s.check_map(&m),
            Err(Error::MissingParameter { name }) if name == "b"
        ));
        m.insert("b".to_string(), Tensor::zeros(4, DType::F32, &d).unwrap());
        assert!(matches!(
            s.check_map(&m),
            Err(Error::ShapeMismatch { name, .. }) if name == "b"
        ));
        m.insert("b".to_string(), Tensor::zeros(3, DType::U32, &d).unwrap());
        assert!(matches!(
            s.check_map(&m),
            Err(Error::UnsupportedDtype { .. })
        ));
        m.insert("b".to_string(), Tensor::zeros(3, DType::BF16, &d).unwrap());
        assert!(s.check_map(&m).is_ok());
        m.insert("zz".to_string(), Tensor::zeros(3, DType::F32, &d).unwrap());
        assert!(matches!(
            s.check_map(&m),
            Err(Error::UnknownParameter { name }) if name == "zz"
        ));
    }

    #[test]
    fn host_copies_check_finiteness_and_counts() {
        let d = Device::Cpu;
        let s = ParamSet::new(&[("w".into(), vec![3])]).unwrap();
        let mut m = HashMap::new();
        m.insert(
            "w".to_string(),
            Tensor::new(&[1.0f32, f32::NAN, 0.0], &d).unwrap(),
        );
        assert!(matches!(
            s.to_host_f32(&m),
            Err(Error::NonFiniteGradient { .. })
        ));
        // A short (or long) list of host vectors is refused, never truncated.
        let two = ParamSet::new(&shapes()).unwrap();
        for values in [
            vec![vec![0.0f32; 4]],
            vec![vec![0.0; 4], vec![0.0; 3], vec![0.0; 1]],
        ] {
            assert!(matches!(
                two.from_host_f32(&values, &d),
                Err(Error::ShapeMismatch { name, .. }) if name == "<parameter list>"
            ));
        }
        assert_eq!(
            two.from_host_f32(&[vec![0.0; 4], vec![0.0; 3]], &d)
                .unwrap()
                .len(),
            2
        );
    }
}
