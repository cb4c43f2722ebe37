//! Ternary gradient accumulation for candle: [`TernaryGradientAccumulator`] averages
//! micro-batch gradients while holding 1.92 bits per element by default (one trit per element
//! plus a one-byte scale per 25 elements) instead of a 32-bit `f32` sum.
//!
//! Each parameter (in sorted-name order; its index is its tensor id) gets one
//! [`ternary_quant::PackedAccumulator`], which holds the running mean as base-3 packed
//! balanced trits (1, 2, 3 or 5 per element: [`TernaryConfigBuilder::trits_per_element`]) and
//! one scale per block, and requantizes it stochastically after every micro-batch so that
//! [`get_accumulated`](TernaryGradientAccumulator::get_accumulated) is an **unbiased**
//! estimate of the exact mean (see `docs/ternary.md` for the derivation, the error at each
//! trit count and the digits-MLP measurements). The earlier default (one `f32` scale per 320
//! elements, 1.7 bits) stays available through
//! [`TernaryConfigBuilder::scale_format`] and [`TernaryConfigBuilder::scale_block`].
//!
//! **Randomness.** Micro-batch `k` of accumulation window `w` (the number of
//! [`reset`](TernaryGradientAccumulator::reset)s so far, i.e. the optimizer step when the
//! accumulator is reset once per step) draws element `i` of parameter `p` from the ChaCha8
//! stream keyed by `(window_seed(seed, w), k, p)` at word `i`, where
//! [`window_seed`] mixes the run seed with `w`. Consecutive windows therefore use fresh,
//! independent randomness, and the whole position is the explicit, checkpointable pair
//! `(window, count)` ([`TernaryGradientAccumulator::state`]).
//!
//! **Bad input** (unknown or missing names, shapes, dtypes other than f32/f16/bf16, another
//! device, NaN/Inf, too many micro-batches) is rejected with a typed [`Error`] before any
//! accumulator is touched, so an error never changes the state.
//!
//! # Quick start
//!
//! ```
//! use std::collections::HashMap;
//! use candle_core::{Device, Tensor};
//! use vsa_optim_rs::ternary::{TernaryConfig, TernaryGradientAccumulator};
//!
//! let device = Device::Cpu;
//! let param_shapes = vec![("w".to_string(), vec![1024, 64]), ("b".to_string(), vec![64])];
//! let config = TernaryConfig::builder()
//!     .accumulation_steps(4)
//!     .use_stochastic_rounding(true)
//!     .trits_per_element(1) // 1, 2, 3 or 5 trits: 3, 9, 27 or 243 levels
//!     .build();
//! let mut acc = TernaryGradientAccumulator::new(&param_shapes, config, &device)?;
//! for k in 0..4 {
//!     let mut gradients = HashMap::new();
//!     gradients.insert("w".to_string(), Tensor::full(1.0f32 + k as f32, (1024, 64), &device)?);
//!     gradients.insert("b".to_string(), Tensor::zeros(64, candle_core::DType::F32, &device)?);
//!     acc.accumulate(&gradients)?;
//! }
//! assert!(acc.ready());
//! let g = acc.get_accumulated()?;
//! // A constant block is represented exactly: the mean of 1, 2, 3, 4 is 2.5.
//! assert_eq!(g["w"].flatten_all()?.to_vec1::<f32>()?, vec![2.5; 1024 * 64]);
//! assert_eq!(g["b"].flatten_all()?.to_vec1::<f32>()?, vec![0.0; 64]);
//! // 65 600 elements held in under 2 bits each, struct overheads included (an f32 sum: 32).
//! assert!(acc.memory_bytes() * 8 < 2 * 65_600);
//! // Two trits per element: 9 levels, 3.2 bits + scales; an unsupported count is a typed error.
//! let two = TernaryConfig::builder().accumulation_steps(4).trits_per_element(2).build();
//! assert!(TernaryGradientAccumulator::new(&param_shapes, two, &device)?.bits_per_element() < 3.6);
//! let four = TernaryConfig::builder().trits_per_element(4).build();
//! assert!(TernaryGradientAccumulator::new(&param_shapes, four, &device).is_err());
//! acc.reset()?;
//! assert_eq!(acc.count(), 0);
//! # Ok::<(), vsa_optim_rs::Error>(())
//! ```

mod checkpoint;
mod config;

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use ternary_quant::PackedAccumulator;

pub use checkpoint::{CHECKPOINT_VERSION, METADATA_KEY, TernaryAccumulatorState};
pub use config::{TernaryConfig, TernaryConfigBuilder};

use crate::error::{Error, Result};
use crate::params::ParamSet;

/// Domain tag ("tgacc\0\0\0") mixed into the run seed, so that the accumulator's window seeds
/// are independent of other objects seeded with the same run seed.
const WINDOW_DOMAIN: u64 = 0x7467_6163_6300_0000;

/// The seed of accumulation window `window` under run seed `seed`:
/// `mix(mix(seed, DOMAIN), window)` with `vsa_core::rng::mix` (a bijection in `window`, so
/// distinct windows never share streams).
pub fn window_seed(seed: u64, window: u64) -> u64 {
    vsa_core::rng::mix(vsa_core::rng::mix(seed, WINDOW_DOMAIN), window)
}

/// Averages micro-batch gradients of candle models in packed ternary form (1.92 bits per
/// element with the default config); see the [module docs](self).
#[derive(Debug, Clone)]
pub struct TernaryGradientAccumulator {
    params: ParamSet,
    device: Device,
    config: TernaryConfig,
    window: u64,
    accs: Vec<PackedAccumulator>,
}

impl TernaryGradientAccumulator {
    /// An empty accumulator for the parameters `param_shapes` (`(name, shape)` in any order),
    /// producing tensors on `device`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] (see [`TernaryConfig::validate`]), [`Error::NoParameters`],
    /// [`Error::DuplicateParameter`], [`Error::EmptyParameter`].
    pub fn new(
        param_shapes: &[(String, Vec<usize>)],
        config: TernaryConfig,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let params = ParamSet::new(param_shapes)?;
        let accs = params
            .specs()
            .iter()
            .enumerate()
            .map(|(i, s)| PackedAccumulator::new(s.numel(), config.tensor_config(0, i)))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Self {
            params,
            device: device.clone(),
            config,
            window: 0,
            accs,
        })
    }

    /// An accumulator for the float variables of `varmap` (identified by sorted name).
    ///
    /// # Errors
    /// As [`TernaryGradientAccumulator::new`].
    pub fn from_varmap(varmap: &VarMap, config: TernaryConfig, device: &Device) -> Result<Self> {
        Self::new(&ParamSet::varmap_shapes(varmap)?, config, device)
    }

    /// The declared parameters, sorted by name.
    pub fn params(&self) -> &ParamSet {
        &self.params
    }

    /// The configuration.
    pub fn config(&self) -> &TernaryConfig {
        &self.config
    }

    /// The device gradients must be on, and results are put on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Micro-batches accumulated since the last reset.
    pub fn count(&self) -> usize {
        self.accs[0].count()
    }

    /// `true` once `accumulation_steps` micro-batches are in.
    pub fn ready(&self) -> bool {
        self.count() >= self.config.accumulation_steps
    }

    /// Accumulation windows completed: the number of [`reset`](Self::reset)s (plus any
    /// [`set_window`](Self::set_window)). Part of the random-stream key.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// Moves to window `window` (e.g. the optimizer step of a run resumed without the
    /// accumulator's own state). Only allowed with no micro-batch accumulated.
    ///
    /// # Errors
    /// [`Error::InvalidState`] when `count() > 0`; nothing changes then.
    pub fn set_window(&mut self, window: u64) -> Result<()> {
        if self.count() > 0 {
            return Err(Error::InvalidState(format!(
                "set_window with {} micro-batches accumulated: expected 0 (call reset first)",
                self.count()
            )));
        }
        self.window = window;
        let seed = window_seed(self.config.seed, window);
        for a in &mut self.accs {
            a.reset_with_seed(seed);
        }
        Ok(())
    }

    /// Adds one micro-batch of gradients (`name → tensor`, exactly the declared names and
    /// shapes; f32, f16 or bf16 on the accumulator's device).
    ///
    /// # Errors
    /// With the state unchanged: [`Error::Ternary`]`(AccumulationFull)` after
    /// `accumulation_steps` micro-batches without [`reset`](Self::reset);
    /// [`Error::UnknownParameter`], [`Error::MissingParameter`], [`Error::ShapeMismatch`],
    /// [`Error::UnsupportedDtype`], [`Error::DeviceMismatch`], [`Error::NonFiniteGradient`].
    pub fn accumulate(&mut self, gradients: &HashMap<String, Tensor>) -> Result<()> {
        if self.ready() {
            return Err(Error::Ternary(ternary_quant::Error::AccumulationFull {
                accumulation_steps: self.config.accumulation_steps,
            }));
        }
        self.params.check_map(gradients)?;
        for s in self.params.specs() {
            let t = &gradients[&s.name];
            if !t.device().same_device(&self.device) {
                return Err(Error::DeviceMismatch {
                    name: s.name.clone(),
                    expected: format!("{:?}", self.device.location()),
                    actual: format!("{:?}", t.device().location()),
                });
            }
        }
        // Validates names, shapes, dtypes and finiteness of every gradient before we touch
        // any accumulator.
        let host = self.params.to_host_f32(gradients)?;
        self.accumulate_validated(&host)
    }

    /// `host` holds one finite vector of the declared size per parameter, and the window is
    /// not full: then no `PackedAccumulator::accumulate` can fail (all share one count).
    fn accumulate_validated(&mut self, host: &[Vec<f32>]) -> Result<()> {
        for (a, g) in self.accs.iter_mut().zip(host) {
            a.accumulate(g)?;
        }
        Ok(())
    }

    /// Adds one micro-batch from a `GradStore` (e.g. `loss.backward()?`) for the float
    /// variables of `varmap`, which must be exactly the declared parameters.
    ///
    /// # Errors
    /// As [`accumulate`](Self::accumulate); a variable without a gradient is
    /// [`Error::MissingParameter`]. On error nothing changes.
    pub fn accumulate_grad_store(&mut self, varmap: &VarMap, grads: &GradStore) -> Result<()> {
        let (map, _) = self.params.grad_store_map(varmap, grads)?;
        self.accumulate(&map)
    }

    /// The accumulated mean as host vectors, one per parameter in sorted-name order.
    ///
    /// # Errors
    /// [`Error::InvalidState`] before the first micro-batch of the window.
    pub fn get_accumulated_host(&self) -> Result<Vec<Vec<f32>>> {
        self.check_nonempty()?;
        Ok(self.accs.iter().map(PackedAccumulator::mean).collect())
    }

    /// The accumulated mean of the micro-batches since the last reset (of fewer than
    /// `accumulation_steps` if not [`ready`](Self::ready)), as f32 tensors with the declared
    /// shapes on the accumulator's device. Unbiased with stochastic rounding.
    ///
    /// # Errors
    /// [`Error::InvalidState`] before the first micro-batch of the window (a mean of nothing
    /// would silently feed a zero gradient).
    pub fn get_accumulated(&self) -> Result<HashMap<String, Tensor>> {
        self.check_nonempty()?;
        let mut out = HashMap::with_capacity(self.accs.len());
        for (s, a) in self.params.specs().iter().zip(&self.accs) {
            let t = Tensor::from_vec(a.mean(), s.shape.as_slice(), &self.device)?;
            out.insert(s.name.clone(), t);
        }
        Ok(out)
    }

    /// The accumulated mean as a `GradStore` keyed by the variables of `varmap` (converted to
    /// each variable's dtype), ready for any `candle_nn::Optimizer::step`.
    ///
    /// # Errors
    /// As [`get_accumulated`](Self::get_accumulated); [`Error::UnknownParameter`] /
    /// [`Error::MissingParameter`] / [`Error::ShapeMismatch`] when `varmap` does not hold
    /// exactly the declared parameters.
    pub fn accumulated_grad_store(&self, varmap: &VarMap) -> Result<GradStore> {
        let vars = self.params.vars_matching(varmap)?;
        self.check_nonempty()?;
        let mut store = GradStore::default();
        for ((s, a), var) in self.params.specs().iter().zip(&self.accs).zip(&vars) {
            let t = Tensor::from_vec(a.mean(), s.shape.as_slice(), &self.device)?
                .to_dtype(var.dtype())?;
            store.insert(var.as_tensor(), t);
        }
        Ok(store)
    }

    /// Starts the next accumulation window: count 0, mean 0, and fresh random streams
    /// (`window` + 1). Keeps the buffers (no allocation).
    ///
    /// # Errors
    /// None today; `Result` keeps the seed's signature.
    pub fn reset(&mut self) -> Result<()> {
        self.window = self.window.wrapping_add(1);
        let seed = window_seed(self.config.seed, self.window);
        for a in &mut self.accs {
            a.reset_with_seed(seed);
        }
        Ok(())
    }

    /// Bytes actually held by the accumulator state: for every parameter its
    /// `PackedAccumulator` (struct, packed trits and scales, by buffer capacity). Excludes the
    /// parameter names and shapes, which any accumulator needs.
    pub fn memory_bytes(&self) -> usize {
        self.accs.iter().map(PackedAccumulator::memory_bytes).sum()
    }

    /// `8 · memory_bytes() / total elements`.
    pub fn bits_per_element(&self) -> f64 {
        (self.memory_bytes() * 8) as f64 / self.params.total_numel() as f64
    }

    fn check_nonempty(&self) -> Result<()> {
        if self.count() == 0 {
            return Err(Error::InvalidState(
                "get_accumulated before any micro-batch: expected at least 1 accumulated, got 0"
                    .into(),
            ));
        }
        Ok(())
    }
}
