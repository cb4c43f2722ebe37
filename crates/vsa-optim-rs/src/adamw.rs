//! A checkpointable AdamW that matches `candle_nn::AdamW` bit for bit.
//!
//! candle-nn 0.11's `AdamW` keeps its moment tensors private, so a run that uses it cannot
//! be saved and resumed exactly. This one performs the same tensor operations in the same
//! order (so it is bit-identical, which `tests::matches_candle_nn_bit_for_bit` checks) and
//! exposes its state ([`AdamWState`], the crate's checkpoint pattern:
//! [`crate::checkpoint`]): one safetensors file whose tensors are the moments `{i}.m` and
//! `{i}.v` (in each variable's dtype; `i` its index) and whose metadata holds the step
//! counter, the hyper-parameters, names, shapes and dtypes as JSON under [`METADATA_KEY`],
//! with a `version`.

use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Optimizer, VarMap};
use safetensors::View;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Entry, bad, encode, open};
use crate::error::{Result, config_error};
use crate::params::ParamSet;

pub use candle_nn::ParamsAdamW;

/// The format version of [`AdamW::save`]'s file, checked by [`AdamW::load`]. Version 1 was
/// two files (moments in safetensors, the rest in `<path>.json`); it is not read.
pub const CHECKPOINT_VERSION: u32 = 2;

/// The safetensors metadata key that holds the optimizer's JSON header.
pub const METADATA_KEY: &str = "vsa-optim-rs.adamw";

#[derive(Debug)]
struct Slot {
    name: String,
    var: Var,
    m: Var,
    v: Var,
}

/// AdamW with explicit, serialisable state. Implements [`candle_nn::Optimizer`].
#[derive(Debug)]
pub struct AdamW {
    slots: Vec<Slot>,
    step_t: usize,
    params: ParamsAdamW,
}

/// The moments of one optimised variable, as the little-endian bytes of its dtype (so that
/// every float dtype round-trips exactly).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MomentState {
    /// The variable's name.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its dtype, as candle names it (`f32`, `f16`, `bf16`, `f64`).
    pub dtype: String,
    /// The first moment.
    pub m: Vec<u8>,
    /// The second moment.
    pub v: Vec<u8>,
}

/// The complete state of an [`AdamW`]: the step counter, the hyper-parameters (the learning
/// rate as last set) and every variable's moments, in the optimizer's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdamWState {
    /// Optimizer steps taken.
    pub step: usize,
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// One entry per optimised variable.
    pub moments: Vec<MomentState>,
}

impl AdamWState {
    fn params(&self) -> ParamsAdamW {
        ParamsAdamW {
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
        }
    }
}

/// The file's JSON header: the state without its moments.
#[derive(Serialize, Deserialize)]
struct Header {
    version: u32,
    step: usize,
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    dtypes: Vec<String>,
}

/// The host bytes of a tensor (little-endian, its dtype).
fn host_bytes(t: &Tensor) -> Result<Vec<u8>> {
    // On the CPU, candle's safetensors view of a float tensor is a plain copy.
    Ok(t.to_device(&Device::Cpu)?.data().into_owned())
}

/// Whether the little-endian `bytes` of `dtype` are all finite (and, with `nonneg`, none
/// below zero).
fn floats_ok(dtype: DType, bytes: &[u8], nonneg: bool) -> bool {
    // (sign mask, exponent mask) of each float format, on its bits as an integer.
    let check = |bits: u64, sign: u64, exp: u64| {
        bits & exp != exp && !(nonneg && bits & sign != 0 && bits & !sign != 0)
    };
    match dtype {
        DType::F16 | DType::BF16 => {
            let exp = if dtype == DType::F16 { 0x7c00 } else { 0x7f80 };
            bytes
                .chunks_exact(2)
                .all(|b| check(u64::from(u16::from_le_bytes([b[0], b[1]])), 0x8000, exp))
        }
        DType::F32 => bytes.chunks_exact(4).all(|b| {
            let bits = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            check(u64::from(bits), 0x8000_0000, 0x7f80_0000)
        }),
        DType::F64 => bytes.chunks_exact(8).all(|b| {
            let bits = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
            check(bits, 1 << 63, 0x7ff0_0000_0000_0000)
        }),
        _ => false,
    }
}

impl AdamW {
    /// Optimises the float variables of `varmap`, identified by their sorted names.
    ///
    /// # Errors
    /// As [`ParamSet::from_varmap`], and for invalid hyper-parameters.
    pub fn from_varmap(varmap: &VarMap, params: ParamsAdamW) -> Result<Self> {
        let (set, vars) = ParamSet::from_varmap(varmap)?;
        let names = set.specs().iter().map(|s| s.name.clone()).collect();
        Self::with_names(names, vars, params)
    }

    /// Optimises `vars`, naming them `names` (the names key the checkpoint).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) for a non-finite or negative learning rate, betas outside
    /// `[0, 1)`, `eps <= 0`, or a name count that differs from the variable count.
    pub fn with_names(names: Vec<String>, vars: Vec<Var>, params: ParamsAdamW) -> Result<Self> {
        validate(&params)?;
        if names.len() != vars.len() {
            return Err(config_error(
                "names",
                format!("one name per variable ({})", vars.len()),
                format!("{} names", names.len()),
            ));
        }
        let mut slots = Vec::with_capacity(vars.len());
        for (name, var) in names.into_iter().zip(vars) {
            if !var.dtype().is_float() {
                continue;
            }
            let m = Var::zeros(var.shape(), var.dtype(), var.device())?;
            let v = Var::zeros(var.shape(), var.dtype(), var.device())?;
            slots.push(Slot { name, var, m, v });
        }
        Ok(Self {
            slots,
            step_t: 0,
            params,
        })
    }

    /// The hyper-parameters.
    pub fn params(&self) -> &ParamsAdamW {
        &self.params
    }

    /// Number of optimizer steps taken.
    pub fn step_count(&self) -> usize {
        self.step_t
    }

    /// Bytes held by the moment tensors.
    pub fn memory_bytes(&self) -> usize {
        self.slots
            .iter()
            .map(|s| 2 * s.m.elem_count() * s.m.dtype().size_in_bytes())
            .sum()
    }

    /// A copy of the state (see [`AdamWState`] and [`crate::checkpoint`] for the
    /// pattern). The moments are copied to the host.
    ///
    /// # Errors
    /// Candle errors from the copy.
    pub fn state(&self) -> Result<AdamWState> {
        let p = &self.params;
        let moments = self
            .slots
            .iter()
            .map(|s| {
                Ok(MomentState {
                    name: s.name.clone(),
                    shape: s.var.dims().to_vec(),
                    dtype: s.var.dtype().as_str().to_string(),
                    m: host_bytes(s.m.as_tensor())?,
                    v: host_bytes(s.v.as_tensor())?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AdamWState {
            step: self.step_t,
            lr: p.lr,
            beta1: p.beta1,
            beta2: p.beta2,
            eps: p.eps,
            weight_decay: p.weight_decay,
            moments,
        })
    }

    /// Builds an optimizer for the float variables of `varmap` from a state:
    /// [`from_varmap`](Self::from_varmap) with the state's hyper-parameters, then
    /// [`restore`](Self::restore).
    ///
    /// # Errors
    /// As [`from_varmap`](Self::from_varmap) and [`restore`](Self::restore).
    pub fn from_state(state: AdamWState, varmap: &VarMap) -> Result<Self> {
        let mut opt = Self::from_varmap(varmap, state.params())?;
        opt.restore(&state)?;
        Ok(opt)
    }

    /// Puts a state back into this optimizer, which must optimise variables of the same
    /// names, shapes and dtypes, in the same order. The step counter and the
    /// hyper-parameters (the learning rate included) come from the state. Validates
    /// everything first (finite moments, a non-negative second moment, valid
    /// hyper-parameters); on error nothing changes.
    ///
    /// # Errors
    /// [`Error::Checkpoint`](crate::Error::Checkpoint) for other variables or malformed moments,
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) for invalid hyper-parameters, candle errors.
    pub fn restore(&mut self, state: &AdamWState) -> Result<()> {
        let names: Vec<&String> = self.slots.iter().map(|s| &s.name).collect();
        let theirs: Vec<&String> = state.moments.iter().map(|m| &m.name).collect();
        if names != theirs {
            return Err(bad(format!(
                "optimizer parameters differ: the state has {theirs:?}, the optimizer {names:?}"
            )));
        }
        let params = state.params();
        validate(&params)?;
        // Validate and stage everything before touching any state.
        let mut staged: Vec<(Tensor, Tensor)> = Vec::with_capacity(self.slots.len());
        for (s, ms) in self.slots.iter().zip(&state.moments) {
            let (dims, dtype) = (s.var.dims(), s.var.dtype());
            if ms.shape != dims || ms.dtype != dtype.as_str() {
                return Err(bad(format!(
                    "moments of `{}`: expected {dims:?} {}, got {:?} {}",
                    s.name,
                    dtype.as_str(),
                    ms.shape,
                    ms.dtype
                )));
            }
            let want = s.var.elem_count() * dtype.size_in_bytes();
            for (what, bytes, nonneg) in [("m", &ms.m, false), ("v", &ms.v, true)] {
                if bytes.len() != want {
                    return Err(bad(format!(
                        "moment {what} of `{}`: expected {want} bytes, got {}",
                        s.name,
                        bytes.len()
                    )));
                }
                if !floats_ok(dtype, bytes, nonneg) {
                    let wanted = if nonneg { "finite, >= 0" } else { "finite" };
                    return Err(bad(format!(
                        "moment {what} of `{}`: a value is not {wanted}",
                        s.name
                    )));
                }
            }
            let tensor = |b: &[u8]| Tensor::from_raw_buffer(b, dtype, dims, s.var.device());
            staged.push((tensor(&ms.m)?, tensor(&ms.v)?));
        }
        for (s, (m, v)) in self.slots.iter().zip(staged) {
            s.m.set(&m)?;
            s.v.set(&v)?;
        }
        self.step_t = state.step;
        self.params = params;
        Ok(())
    }

    /// Writes the state to `path` as one safetensors file (see the [module docs](self)).
    ///
    /// # Errors
    /// I/O and candle errors.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        std::fs::write(path, self.state_bytes()?)?;
        Ok(())
    }

    /// The bytes [`save`](Self::save) writes.
    ///
    /// # Errors
    /// Candle errors from the copy to the host.
    pub fn state_bytes(&self) -> Result<Vec<u8>> {
        let s = self.state()?;
        let mut tensors = Vec::with_capacity(2 * s.moments.len());
        for (i, ms) in s.moments.iter().enumerate() {
            let dtype: DType = ms
                .dtype
                .parse()
                .map_err(|e| bad(format!("moments of `{}`: {e}", ms.name)))?;
            for (part, bytes) in [("m", &ms.m), ("v", &ms.v)] {
                tensors.push(Entry {
                    name: format!("{i}.{part}"),
                    dtype: dtype.into(),
                    shape: ms.shape.clone(),
                    bytes: bytes.clone(),
                });
            }
        }
        let header = Header {
            version: CHECKPOINT_VERSION,
            step: s.step,
            lr: s.lr,
            beta1: s.beta1,
            beta2: s.beta2,
            eps: s.eps,
            weight_decay: s.weight_decay,
            names: s.moments.iter().map(|m| m.name.clone()).collect(),
            shapes: s.moments.iter().map(|m| m.shape.clone()).collect(),
            dtypes: s.moments.iter().map(|m| m.dtype.clone()).collect(),
        };
        encode(METADATA_KEY, &header, &tensors)
    }

    /// Reads a state from the bytes of [`state_bytes`](Self::state_bytes), e.g. to build an
    /// optimizer with [`from_state`](Self::from_state). Checks the version, and that every
    /// moment is present with its variable's dtype and shape; `from_state` and
    /// [`restore`](Self::restore) check the rest.
    ///
    /// # Errors
    /// [`Error::Checkpoint`](crate::Error::Checkpoint) for another version, a truncated or malformed file, or a
    /// missing, extra or misshapen tensor.
    pub fn state_from_bytes(bytes: &[u8]) -> Result<AdamWState> {
        let (h, mut file) = open::<Header>(bytes, METADATA_KEY, CHECKPOINT_VERSION)?;
        if h.names.len() != h.shapes.len() || h.names.len() != h.dtypes.len() {
            return Err(bad(format!(
                "optimizer header: {} names, {} shapes and {} dtypes (expected equal counts)",
                h.names.len(),
                h.shapes.len(),
                h.dtypes.len()
            )));
        }
        let mut moments = Vec::with_capacity(h.names.len());
        for (i, ((name, shape), dtype)) in
            h.names.into_iter().zip(h.shapes).zip(h.dtypes).enumerate()
        {
            let dt: DType = dtype
                .parse()
                .map_err(|e| bad(format!("moments of `{name}`: {e}")))?;
            let m = file.raw(&format!("{i}.m"), dt.into(), &shape)?.to_vec();
            let v = file.raw(&format!("{i}.v"), dt.into(), &shape)?.to_vec();
            moments.push(MomentState {
                name,
                shape,
                dtype,
                m,
                v,
            });
        }
        file.finish()?;
        Ok(AdamWState {
            step: h.step,
            lr: h.lr,
            beta1: h.beta1,
            beta2: h.beta2,
            eps: h.eps,
            weight_decay: h.weight_decay,
            moments,
        })
    }

    /// Restores the state written by [`save`](Self::save) into this optimizer (built for
    /// the same variables; see [`restore`](Self::restore)). On error nothing changes.
    ///
    /// # Errors
    /// I/O errors; as [`state_from_bytes`](Self::state_from_bytes) and
    /// [`restore`](Self::restore).
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<()> {
        self.load_bytes(&std::fs::read(path)?)
    }

    /// [`load`](Self::load) from the bytes of [`state_bytes`](Self::state_bytes).
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub fn load_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        self.restore(&Self::state_from_bytes(bytes)?)
    }
}

fn validate(p: &ParamsAdamW) -> Result<()> {
    let bad = |field: &'static str, v: f64, want: &str| config_error(field, want, v);
    if !(p.lr.is_finite() && p.lr >= 0.0) {
        return Err(bad("lr", p.lr, "a finite value >= 0"));
    }
    if !(0.0..1.0).contains(&p.beta1) {
        return Err(bad("beta1", p.beta1, "a value in [0, 1)"));
    }
    if !(0.0..1.0).contains(&p.beta2) {
        return Err(bad("beta2", p.beta2, "a value in [0, 1)"));
    }
    if !(p.eps.is_finite() && p.eps > 0.0) {
        return Err(bad("eps", p.eps, "a finite value > 0"));
    }
    if !(p.weight_decay.is_finite() && p.weight_decay >= 0.0) {
        return Err(bad("weight_decay", p.weight_decay, "a finite value >= 0"));
    }
    Ok(())
}

impl Optimizer for AdamW {
    type Config = ParamsAdamW;

    fn new(vars: Vec<Var>, params: ParamsAdamW) -> candle_core::Result<Self> {
        let names = (0..vars.len()).map(|i| format!("param{i}")).collect();
        Self::with_names(names, vars, params).map_err(candle_core::Error::wrap)
    }

    fn learning_rate(&self) -> f64 {
        self.params.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.params.lr = lr;
    }

    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        // The same operations, in the same order, as candle-nn 0.11.1's AdamW::step.
        self.step_t += 1;
        let lr = self.params.lr;
        let lr_lambda = lr * self.params.weight_decay;
        let beta1 = self.params.beta1;
        let beta2 = self.params.beta2;
        let scale_m = 1f64 / (1f64 - beta1.powi(self.step_t as i32));
        let scale_v = 1f64 / (1f64 - beta2.powi(self.step_t as i32));
        for s in &self.slots {
            let theta = &s.var;
            if let Some(g) = grads.get(theta) {
                let next_m = ((s.m.as_tensor() * beta1)? + (g * (1.0 - beta1))?)?;
                let next_v = ((s.v.as_tensor() * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;
                let m_hat = (&next_m * scale_m)?;
                let v_hat = (&next_v * scale_v)?;
                let next_theta = (theta.as_tensor() * (1f64 - lr_lambda))?;
                let adjusted = (m_hat / (v_hat.sqrt()? + self.params.eps)?)?;
                let next_theta = (next_theta - (adjusted * lr)?)?;
                s.m.set(&next_m)?;
                s.v.set(&next_v)?;
                theta.set(&next_theta)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use candle_core::{DType, Device, Module};

    /// A linear layer whose initial weights are fixed (candle's own init is unseeded).
    fn model(vm: &VarMap) -> candle_nn::Linear {
        let vb = candle_nn::VarBuilder::from_varmap(vm, DType::F32, &Device::Cpu);
        let lin = candle_nn::linear(4, 3, vb.pp("l")).unwrap();
        let (_, vars) = ParamSet::from_varmap(vm).unwrap();
        for v in vars {
            let n = v.elem_count();
            let t = Tensor::arange(0f32, n as f32, &Device::Cpu)
                .unwrap()
                .affine(0.37, -1.1)
                .unwrap()
                .sin()
                .unwrap()
                .reshape(v.shape())
                .unwrap();
            v.set(&t).unwrap();
        }
        lin
    }

    fn losses(steps: usize, ours: bool) -> Vec<Vec<f32>> {
        let vm = VarMap::new();
        let lin = model(&vm);
        let x = Tensor::arange(0f32, 20f32, &Device::Cpu)
            .unwrap()
            .reshape((5, 4))
            .unwrap()
            .affine(0.1, -1.0)
            .unwrap();
        let p = ParamsAdamW {
            lr: 0.05,
            ..Default::default()
        };
        let mut a = AdamW::from_varmap(&vm, p.clone()).unwrap();
        let (_, vars) = ParamSet::from_varmap(&vm).unwrap();
        let mut b = candle_nn::AdamW::new(vars, p).unwrap();
        for _ in 0..steps {
            let loss = lin.forward(&x).unwrap().sqr().unwrap().mean_all().unwrap();
            let g = loss.backward().unwrap();
            if ours {
                a.step(&g).unwrap();
            } else {
                b.step(&g).unwrap();
            }
        }
        let (_, vars) = ParamSet::from_varmap(&vm).unwrap();
        vars.iter()
            .map(|v| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
            .collect()
    }

    #[test]
    fn matches_candle_nn_bit_for_bit() {
        let ours = losses(25, true);
        let theirs = losses(25, false);
        for (a, b) in ours.iter().zip(&theirs) {
            let a: Vec<u32> = a.iter().map(|x| x.to_bits()).collect();
            let b: Vec<u32> = b.iter().map(|x| x.to_bits()).collect();
            assert_eq!(a, b);
        }
    }

    #[test]
    fn save_load_resumes_exactly() {
        let dir = std::env::temp_dir().join(format!("adamw-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("opt.safetensors");
        let x = Tensor::ones((2, 4), DType::F32, &Device::Cpu).unwrap();
        let run = |split: Option<usize>| -> Vec<f32> {
            let vm = VarMap::new();
            let lin = model(&vm);
            let mut opt = AdamW::from_varmap(&vm, ParamsAdamW::default()).unwrap();
            for i in 0..10 {
                if split == Some(i) {
                    opt.save(&path).unwrap();
                    let mut fresh = AdamW::from_varmap(&vm, ParamsAdamW::default()).unwrap();
                    fresh.load(&path).unwrap();
                    assert_eq!(fresh.step_count(), i);
                    opt = fresh;
                }
                let loss = lin.forward(&x).unwrap().sum_all().unwrap();
                opt.backward_step(&loss).unwrap();
            }
            lin.weight().flatten_all().unwrap().to_vec1().unwrap()
        };
        assert_eq!(run(None), run(Some(4)));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn invalid_params_are_errors() {
        let vm = VarMap::new();
        let _ = model(&vm);
        for p in [
            ParamsAdamW {
                lr: f64::NAN,
                ..Default::default()
            },
            ParamsAdamW {
                beta1: 1.0,
                ..Default::default()
            },
            ParamsAdamW {
                eps: 0.0,
                ..Default::default()
            },
        ] {
            assert!(matches!(
                AdamW::from_varmap(&vm, p),
                Err(Error::InvalidConfig { .. })
            ));
        }
    }
}
