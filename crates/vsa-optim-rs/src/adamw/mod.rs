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

mod checkpoint;

use candle_core::Var;
use candle_core::backprop::GradStore;
use candle_nn::{Optimizer, VarMap};

pub use checkpoint::{AdamWState, CHECKPOINT_VERSION, METADATA_KEY, MomentState};

use crate::error::{Result, config_error};
use crate::params::ParamSet;

pub use candle_nn::ParamsAdamW;

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

impl AdamW {
    /// Optimises the float variables of `varmap`, identified by their sorted names.
    ///
    /// # Errors
    /// As [`ParamSet::from_varmap`], and for invalid hyper-parameters.
    pub fn from_varmap(varmap: &VarMap, params: ParamsAdamW) -> Result<Self> {
        let (set, vars) = ParamSet::from_varmap(varmap)?;
        let names = set.names();
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
    use candle_core::{DType, Device, Module, Tensor};

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
