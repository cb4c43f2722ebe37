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

use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};
use ternary_quant::{
    AccumulatorConfig, AccumulatorState, DEFAULT_COMPACT_BLOCK, PackedAccumulator, ScaleFormat,
    ScaleGranularity,
};

use crate::error::{Error, Result, config_error};
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

/// Configuration of a [`TernaryGradientAccumulator`]: plain public fields with
/// [`Default`], or [`TernaryConfig::builder`]. Validated by
/// [`TernaryGradientAccumulator::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TernaryConfig {
    /// Micro-batches per optimizer step (`>= 1`, default 8); `accumulate` fails past it until
    /// `reset`.
    pub accumulation_steps: usize,
    /// `true` (default): unbiased stochastic requantization. `false`: deterministic absmean
    /// requantization (no randomness, smaller error per step but biased).
    pub use_stochastic_rounding: bool,
    /// Run seed (default 0).
    pub seed: u64,
    /// Elements sharing one scale (default `PerBlock(25)`; `PerBlock(n)` needs `n` a positive
    /// multiple of 5; `PerTensor` holds one scale per tensor).
    pub scale_granularity: ScaleGranularity,
    /// Balanced trits held per element: 1 (default), 2, 3 or 5 (3, 9, 27 or 243 levels;
    /// 1.6, 3.2, 4.8 or 8 bits per element before scales).
    #[serde(default = "one_trit")]
    pub trits_per_element: u8,
    /// How block scales are held (default [`ScaleFormat::Log8`], one byte per block;
    /// [`ScaleFormat::F32`] is the earlier 32-bit scale).
    #[serde(default = "f32_scales")]
    pub scale_format: ScaleFormat,
}

fn one_trit() -> u8 {
    1
}

/// Checkpoints written before `scale_format` existed held `f32` scales.
fn f32_scales() -> ScaleFormat {
    ScaleFormat::F32
}

impl Default for TernaryConfig {
    fn default() -> Self {
        Self {
            accumulation_steps: 8,
            use_stochastic_rounding: true,
            seed: 0,
            scale_granularity: ScaleGranularity::PerBlock(DEFAULT_COMPACT_BLOCK),
            trits_per_element: 1,
            scale_format: ScaleFormat::Log8,
        }
    }
}

impl TernaryConfig {
    /// A builder starting from [`TernaryConfig::default`].
    pub fn builder() -> TernaryConfigBuilder {
        TernaryConfigBuilder {
            config: Self::default(),
        }
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the field: `accumulation_steps = 0`, a
    /// `PerBlock(n)` scale block that is not a positive multiple of 5, or
    /// `trits_per_element` outside {1, 2, 3, 5}.
    pub fn validate(&self) -> Result<()> {
        if self.accumulation_steps == 0 {
            return Err(config_error("accumulation_steps", "at least 1", 0));
        }
        if let ScaleGranularity::PerBlock(b) = self.scale_granularity
            && (b == 0 || !b.is_multiple_of(5))
        {
            return Err(config_error(
                "scale_granularity",
                "PerBlock(n) with n a positive multiple of 5",
                b,
            ));
        }
        if !ternary_quant::SUPPORTED_TRITS.contains(&self.trits_per_element) {
            return Err(config_error(
                "trits_per_element",
                "1, 2, 3 or 5",
                self.trits_per_element,
            ));
        }
        Ok(())
    }

    fn tensor_config(&self, window: u64, tensor_id: usize) -> AccumulatorConfig {
        AccumulatorConfig {
            accumulation_steps: self.accumulation_steps,
            stochastic: self.use_stochastic_rounding,
            seed: window_seed(self.seed, window),
            tensor_id: tensor_id as u64,
            scale_granularity: self.scale_granularity,
            trits_per_element: self.trits_per_element,
            scale_format: self.scale_format,
        }
    }
}

/// Builder for [`TernaryConfig`]; [`build`](TernaryConfigBuilder::build) returns the config
/// itself (validation happens in [`TernaryGradientAccumulator::new`]).
#[derive(Debug, Clone, Copy)]
pub struct TernaryConfigBuilder {
    config: TernaryConfig,
}

impl TernaryConfigBuilder {
    /// Sets [`TernaryConfig::accumulation_steps`].
    pub fn accumulation_steps(mut self, steps: usize) -> Self {
        self.config.accumulation_steps = steps;
        self
    }

    /// Sets [`TernaryConfig::use_stochastic_rounding`].
    pub fn use_stochastic_rounding(mut self, yes: bool) -> Self {
        self.config.use_stochastic_rounding = yes;
        self
    }

    /// Sets [`TernaryConfig::seed`].
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
    }

    /// Sets [`TernaryConfig::scale_granularity`].
    pub fn scale_granularity(mut self, g: ScaleGranularity) -> Self {
        self.config.scale_granularity = g;
        self
    }

    /// Sets [`TernaryConfig::trits_per_element`] (1, 2, 3 or 5; checked by
    /// [`TernaryConfig::validate`]).
    pub fn trits_per_element(mut self, n: u8) -> Self {
        self.config.trits_per_element = n;
        self
    }

    /// Sets [`TernaryConfig::scale_format`].
    pub fn scale_format(mut self, f: ScaleFormat) -> Self {
        self.config.scale_format = f;
        self
    }

    /// Shorthand for `scale_granularity(ScaleGranularity::PerBlock(block))`.
    pub fn scale_block(self, block: usize) -> Self {
        self.scale_granularity(ScaleGranularity::PerBlock(block))
    }

    /// The configuration.
    pub fn build(self) -> TernaryConfig {
        self.config
    }
}

/// The complete, serialisable state of a [`TernaryGradientAccumulator`]: the parameters, the
/// config, the window counter and every packed accumulator. `(window, count)` fixes all future
/// random draws, so a run restored from it continues bit-identically.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TernaryAccumulatorState {
    /// Format version: 2 (1 = written before trit counts and 8-bit scales; still read).
    pub version: u32,
    /// Parameter names, sorted.
    pub names: Vec<String>,
    /// Parameter shapes, in the order of `names`.
    pub shapes: Vec<Vec<usize>>,
    /// The configuration.
    pub config: TernaryConfig,
    /// Accumulation windows completed (resets so far).
    pub window: u64,
    /// One packed accumulator per parameter, in the order of `names`.
    pub accumulators: Vec<AccumulatorState>,
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

    /// A copy of the full state, for checkpointing (serde).
    pub fn state(&self) -> TernaryAccumulatorState {
        TernaryAccumulatorState {
            version: 2,
            names: self.params.specs().iter().map(|s| s.name.clone()).collect(),
            shapes: self
                .params
                .specs()
                .iter()
                .map(|s| s.shape.clone())
                .collect(),
            config: self.config,
            window: self.window,
            accumulators: self.accs.iter().map(PackedAccumulator::state).collect(),
        }
    }

    /// Rebuilds an accumulator from [`state`](Self::state), validating everything: version,
    /// names and shapes, config, and that each packed accumulator matches its parameter, the
    /// config, the window's seed, its tensor id and a common count.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] for any inconsistency, [`Error::InvalidConfig`],
    /// [`Error::Ternary`] for an invalid packed state.
    pub fn from_state(state: TernaryAccumulatorState, device: &Device) -> Result<Self> {
        if !(1..=2).contains(&state.version) {
            return Err(Error::Checkpoint(format!(
                "ternary accumulator state version: expected 1 or 2, got {}",
                state.version
            )));
        }
        if state.names.len() != state.shapes.len() || state.names.len() != state.accumulators.len()
        {
            return Err(Error::Checkpoint(format!(
                "ternary accumulator state: {} names, {} shapes and {} accumulators (expected equal counts)",
                state.names.len(),
                state.shapes.len(),
                state.accumulators.len()
            )));
        }
        let shapes: Vec<(String, Vec<usize>)> = state
            .names
            .iter()
            .cloned()
            .zip(state.shapes.iter().cloned())
            .collect();
        let mut acc = Self::new(&shapes, state.config, device)?;
        let sorted: Vec<&String> = acc.params.specs().iter().map(|s| &s.name).collect();
        if sorted != state.names.iter().collect::<Vec<_>>() {
            return Err(Error::Checkpoint(
                "ternary accumulator state: names are not sorted".into(),
            ));
        }
        let count = state.accumulators[0].count;
        let mut accs = Vec::with_capacity(state.accumulators.len());
        for (i, (s, a)) in acc
            .params
            .specs()
            .iter()
            .zip(state.accumulators)
            .enumerate()
        {
            let expected = state.config.tensor_config(state.window, i);
            if a.len != s.numel() || a.config != expected || a.count != count {
                return Err(Error::Checkpoint(format!(
                    "ternary accumulator state for `{}`: expected len {}, config {:?} and count {}, got len {}, config {:?} and count {}",
                    s.name,
                    s.numel(),
                    expected,
                    count,
                    a.len,
                    a.config,
                    a.count
                )));
            }
            accs.push(PackedAccumulator::from_state(a)?);
        }
        acc.accs = accs;
        acc.window = state.window;
        Ok(acc)
    }

    /// Writes [`state`](Self::state) to `path` as JSON.
    ///
    /// # Errors
    /// I/O and JSON errors.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        std::fs::write(path, serde_json::to_vec(&self.state())?)?;
        Ok(())
    }

    /// Reads a state written by [`save`](Self::save) (on `device`).
    ///
    /// # Errors
    /// I/O and JSON errors, and as [`from_state`](Self::from_state).
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let state: TernaryAccumulatorState = serde_json::from_slice(&std::fs::read(path)?)?;
        Self::from_state(state, device)
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
