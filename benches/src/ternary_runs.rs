//! Digits-MLP training with ternary gradient accumulation, against exact `f32` accumulation,
//! and the error of the ternary mean on real gradients.
//!
//! * [`train_digits`] trains the 64-128-10 MLP with AdamW; each optimizer step is built from
//!   the task's micro-batches, averaged either exactly ([`ExactAccumulator`], an `f32` sum) or
//!   by [`TernaryGradientAccumulator`]. Same seed, same data order, same steps.
//! * [`gradient_errors`] trains with exact accumulation and, at chosen steps, feeds the same
//!   micro-batch gradients to ternary accumulators of several configurations, reporting the
//!   relative L2 error of their mean against the exact mean.
//!
//! The numbers in `docs/ternary.md` come from `benches/examples/ternary_report.rs`.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{Device, Result, Tensor, Var};
use candle_nn::Optimizer;
use vsa_optim_rs::ternary::{TernaryConfig, TernaryGradientAccumulator};
use vsa_optim_rs::{AdamW, ParamSet, ParamsAdamW};

use crate::harness::{Point, full_gradient, grad_map};
use crate::tasks::{DigitsTask, Task};

/// How micro-batch gradients are averaged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Accumulation {
    /// Exact: an `f32` running sum per element (4 bytes/element), divided by the count.
    ExactF32,
    /// A `bf16` running sum per element (2 bytes/element, round to nearest even after every
    /// add), divided by the count.
    Bf16,
    /// [`TernaryGradientAccumulator`] with this configuration (its `accumulation_steps` is set
    /// to the task's micro-batch count, and its `seed` to the run seed).
    Ternary(TernaryConfig),
}

impl Accumulation {
    /// A short label for tables.
    pub fn label(&self) -> String {
        match self {
            Self::ExactF32 => "exact f32".into(),
            Self::Bf16 => "bf16 sum".into(),
            Self::Ternary(c) => config_label(c),
        }
    }
}

/// A short label for a ternary configuration, e.g. `ternary stochastic, block 320`
/// (with `, 8-bit scales` and `, 2 trits` where they apply).
pub fn config_label(c: &TernaryConfig) -> String {
    let kind = if c.use_stochastic_rounding {
        "stochastic"
    } else {
        "absmean (det.)"
    };
    let g = match c.scale_granularity {
        vsa_optim_rs::ternary_quant::ScaleGranularity::PerTensor => "per tensor".to_string(),
        vsa_optim_rs::ternary_quant::ScaleGranularity::PerBlock(b) => format!("block {b}"),
    };
    let f = match c.scale_format {
        vsa_optim_rs::ternary_quant::ScaleFormat::F32 => "",
        vsa_optim_rs::ternary_quant::ScaleFormat::Log8 => ", 8-bit scales",
    };
    let t = if c.trits_per_element == 1 {
        String::new()
    } else {
        format!(", {} trits", c.trits_per_element)
    };
    let d = match c.rounding {
        vsa_optim_rs::ternary_quant::Rounding::Stochastic => "",
        vsa_optim_rs::ternary_quant::Rounding::Subtractive { .. } => ", subtractive dither",
    };
    format!("ternary {kind}, {g}{f}{t}{d}")
}

/// `x` rounded to the nearest `bf16` (ties to even), as its 16 bits (finite `x`).
pub fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// The `f32` value of `bf16` bits.
pub fn bf16_value(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// A `bf16` running sum per element (2 bytes/element), rounded after every add.
#[derive(Debug)]
pub struct Bf16Accumulator {
    params: ParamSet,
    sums: Vec<Vec<u16>>,
    count: usize,
}

impl Bf16Accumulator {
    /// Zero sums for `params`.
    pub fn new(params: ParamSet) -> Self {
        let sums = params
            .specs()
            .iter()
            .map(|s| vec![0u16; s.numel()])
            .collect();
        Self {
            params,
            sums,
            count: 0,
        }
    }

    /// Adds one micro-batch of host vectors (one per parameter, sorted by name).
    pub fn accumulate_host(&mut self, host: &[Vec<f32>]) {
        for (s, g) in self.sums.iter_mut().zip(host) {
            for (a, &b) in s.iter_mut().zip(g) {
                *a = bf16_bits(bf16_value(*a) + b);
            }
        }
        self.count += 1;
    }

    /// Adds one micro-batch (validated like the facade).
    ///
    /// # Errors
    /// Facade validation errors.
    pub fn accumulate(&mut self, grads: &HashMap<String, Tensor>) -> vsa_optim_rs::Result<()> {
        let host = self.params.to_host_f32(grads)?;
        self.accumulate_host(&host);
        Ok(())
    }

    /// The mean per parameter, sorted by name.
    pub fn mean_host(&self) -> Vec<Vec<f32>> {
        let k = self.count.max(1) as f32;
        self.sums
            .iter()
            .map(|s| s.iter().map(|&x| bf16_value(x) / k).collect())
            .collect()
    }

    /// Zeroes the sums.
    pub fn reset(&mut self) {
        self.count = 0;
        for s in &mut self.sums {
            s.fill(0);
        }
    }

    /// Bytes held: the sums' capacities (2 bytes/element) plus their `Vec` headers.
    pub fn memory_bytes(&self) -> usize {
        self.sums
            .iter()
            .map(|s| s.capacity() * 2 + std::mem::size_of::<Vec<u16>>())
            .sum()
    }

    /// `8 · memory_bytes() / elements`.
    pub fn bits_per_element(&self) -> f64 {
        (self.memory_bytes() * 8) as f64 / self.params.total_numel() as f64
    }
}

/// The reference accumulator: one `f32` sum per element, on the host (the same conversion
/// path as the ternary accumulator, so that timings compare the accumulators only).
#[derive(Debug)]
pub struct ExactAccumulator {
    params: ParamSet,
    sums: Vec<Vec<f32>>,
    count: usize,
}

impl ExactAccumulator {
    /// Zero sums for `params`.
    pub fn new(params: ParamSet) -> Self {
        let sums = params
            .specs()
            .iter()
            .map(|s| vec![0.0; s.numel()])
            .collect();
        Self {
            params,
            sums,
            count: 0,
        }
    }

    /// Adds one micro-batch (validated like the facade: names, shapes, dtype, finiteness).
    ///
    /// # Errors
    /// Facade validation errors.
    pub fn accumulate(&mut self, grads: &HashMap<String, Tensor>) -> vsa_optim_rs::Result<()> {
        let host = self.params.to_host_f32(grads)?;
        for (s, g) in self.sums.iter_mut().zip(&host) {
            for (a, b) in s.iter_mut().zip(g) {
                *a += b;
            }
        }
        self.count += 1;
        Ok(())
    }

    /// The mean per parameter, sorted by name (zeros before the first micro-batch).
    pub fn mean_host(&self) -> Vec<Vec<f32>> {
        let k = self.count.max(1) as f32;
        self.sums
            .iter()
            .map(|s| s.iter().map(|x| x / k).collect())
            .collect()
    }

    /// Zeroes the sums.
    pub fn reset(&mut self) {
        self.count = 0;
        for s in &mut self.sums {
            s.fill(0.0);
        }
    }

    /// Bytes held: the sums' capacities (4 bytes/element) plus their `Vec` headers.
    pub fn memory_bytes(&self) -> usize {
        self.sums
            .iter()
            .map(|s| s.capacity() * 4 + std::mem::size_of::<Vec<f32>>())
            .sum()
    }

    /// `8 · memory_bytes() / elements`.
    pub fn bits_per_element(&self) -> f64 {
        (self.memory_bytes() * 8) as f64 / self.params.total_numel() as f64
    }
}

/// Settings of a digits run (or of any [`train_task`] run).
#[derive(Debug, Clone, Copy)]
pub struct DigitsRunSettings {
    /// Optimizer steps.
    pub steps: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// Seed of the initial weights, the data order and the ternary randomness.
    pub seed: u64,
}

/// The result of one digits run.
#[derive(Debug, Clone)]
pub struct AccRunResult {
    /// [`Accumulation::label`].
    pub label: String,
    /// Run seed.
    pub seed: u64,
    /// Final test accuracy in percent (297 held-out digits).
    pub test_accuracy: f64,
    /// Final test cross-entropy.
    pub test_loss: f64,
    /// Bytes held by the accumulator (measured by its `memory_bytes`).
    pub accumulator_bytes: usize,
    /// `8 · accumulator_bytes / parameters`.
    pub bits_per_element: f64,
    /// Wall-clock seconds of the training loop (forward, backward, accumulation, optimizer;
    /// evaluation excluded).
    pub train_secs: f64,
    /// Of which inside the accumulator (accumulate, mean, reset).
    pub accumulator_secs: f64,
}

enum Acc {
    Exact(ExactAccumulator),
    Bf16(Bf16Accumulator),
    Ternary(Box<TernaryGradientAccumulator>),
}

fn store_from_host(vars: &[Var], host: &[Vec<f32>]) -> Result<GradStore> {
    let mut store = GradStore::default();
    for (v, h) in vars.iter().zip(host) {
        store.insert(
            v.as_tensor(),
            Tensor::from_slice(h.as_slice(), v.dims(), v.device())?,
        );
    }
    Ok(store)
}

/// The result of one accumulated run of any [`Task`] ([`train_task`]).
#[derive(Debug, Clone)]
pub struct TaskRunResult {
    /// [`Accumulation::label`].
    pub label: String,
    /// Run seed.
    pub seed: u64,
    /// AdamW learning rate.
    pub lr: f64,
    /// Micro-batches per optimizer step (the accumulation length).
    pub micro_batches: usize,
    /// Evaluation curve (step 0, every `eval_every` steps, and the final state last); the
    /// `loss` is the task's held-out loss, the `metric` its held-out metric
    /// ([`Task::metric_name`]: digits test accuracy %, char-LM validation bits/char).
    pub curve: Vec<Point>,
    /// Bytes held by the accumulator (measured by its `memory_bytes`).
    pub accumulator_bytes: usize,
    /// Bytes held by the AdamW moments (`AdamW::memory_bytes`).
    pub optimizer_bytes: usize,
    /// `8 · accumulator_bytes / parameters`.
    pub bits_per_element: f64,
    /// Wall-clock seconds of the training loop (forward, backward, accumulation, optimizer;
    /// evaluation excluded).
    pub train_secs: f64,
    /// Of which inside the accumulator (accumulate, mean, reset).
    pub accumulator_secs: f64,
}

impl TaskRunResult {
    /// The final evaluation point.
    pub fn last(&self) -> Point {
        *self
            .curve
            .last()
            .expect("a run has at least its final point")
    }
}

/// Trains the digits MLP of `task` (whose micro-batch count is the accumulation length) with
/// AdamW and the given accumulation, and evaluates it on the test split.
///
/// # Errors
/// Candle and accumulator errors.
pub fn train_digits(
    task: &DigitsTask,
    acc: Accumulation,
    s: DigitsRunSettings,
) -> Result<AccRunResult> {
    let r = train_task(task, acc, s, 0)?;
    let last = r.last();
    Ok(AccRunResult {
        label: r.label,
        seed: r.seed,
        test_accuracy: last.metric,
        test_loss: last.loss,
        accumulator_bytes: r.accumulator_bytes,
        bits_per_element: r.bits_per_element,
        train_secs: r.train_secs,
        accumulator_secs: r.accumulator_secs,
    })
}

/// Trains any [`Task`] with AdamW, each optimizer step built from the task's micro-batches
/// averaged by `acc` (same seed, data order and steps for every accumulation), evaluating
/// the held-out set at step 0, every `eval_every` steps (`0`: only at the end) and at the
/// end. [`DigitsRunSettings`] serves any task: steps, learning rate, seed.
///
/// # Errors
/// Candle and accumulator errors.
pub fn train_task(
    task: &dyn Task,
    acc: Accumulation,
    s: DigitsRunSettings,
    eval_every: usize,
) -> Result<TaskRunResult> {
    let k = task.micro_batches();
    let (varmap, model) = task.build(s.seed)?;
    let (set, vars) = ParamSet::from_varmap(&varmap)?;
    let params = ParamsAdamW {
        lr: s.lr,
        ..ParamsAdamW::default()
    };
    let mut opt = AdamW::from_varmap(&varmap, params)?;
    let mut a = match acc {
        Accumulation::ExactF32 => Acc::Exact(ExactAccumulator::new(set)),
        Accumulation::Bf16 => Acc::Bf16(Bf16Accumulator::new(set)),
        Accumulation::Ternary(c) => {
            let c = TernaryConfig {
                accumulation_steps: k,
                seed: s.seed,
                ..c
            };
            Acc::Ternary(Box::new(TernaryGradientAccumulator::from_varmap(
                &varmap,
                c,
                &Device::Cpu,
            )?))
        }
    };
    let (mut train_secs, mut acc_secs) = (0f64, 0f64);
    let point = |step: usize, secs: f64, model: &dyn candle_core::Module| -> Result<Point> {
        let (loss, metric) = task.eval(model)?;
        Ok(Point {
            step,
            backward: step * k,
            secs,
            loss,
            metric,
        })
    };
    let mut curve = Vec::new();
    if eval_every > 0 {
        curve.push(point(0, 0.0, model.as_ref())?);
    }
    for step in 0..s.steps {
        let t0 = Instant::now();
        for j in 0..k {
            let loss = task.micro_loss(model.as_ref(), step, j, s.seed)?;
            let g = loss.backward()?;
            let t1 = Instant::now();
            match &mut a {
                Acc::Exact(e) => e.accumulate(&grad_map(&varmap, &g)?)?,
                Acc::Bf16(e) => e.accumulate(&grad_map(&varmap, &g)?)?,
                Acc::Ternary(t) => t.accumulate_grad_store(&varmap, &g)?,
            }
            acc_secs += t1.elapsed().as_secs_f64();
        }
        let t1 = Instant::now();
        let store = match &mut a {
            Acc::Exact(e) => {
                let st = store_from_host(&vars, &e.mean_host())?;
                e.reset();
                st
            }
            Acc::Bf16(e) => {
                let st = store_from_host(&vars, &e.mean_host())?;
                e.reset();
                st
            }
            Acc::Ternary(t) => {
                let st = t.accumulated_grad_store(&varmap)?;
                t.reset()?;
                st
            }
        };
        acc_secs += t1.elapsed().as_secs_f64();
        opt.step(&store)?;
        train_secs += t0.elapsed().as_secs_f64();
        let done = step + 1;
        if done == s.steps || (eval_every > 0 && done.is_multiple_of(eval_every)) {
            curve.push(point(done, train_secs, model.as_ref())?);
        }
    }
    if curve.is_empty() {
        curve.push(point(0, 0.0, model.as_ref())?);
    }
    let (accumulator_bytes, bits_per_element) = match &a {
        Acc::Exact(e) => (e.memory_bytes(), e.bits_per_element()),
        Acc::Bf16(e) => (e.memory_bytes(), e.bits_per_element()),
        Acc::Ternary(t) => (t.memory_bytes(), t.bits_per_element()),
    };
    Ok(TaskRunResult {
        label: acc.label(),
        seed: s.seed,
        lr: s.lr,
        micro_batches: k,
        curve,
        accumulator_bytes,
        optimizer_bytes: opt.memory_bytes(),
        bits_per_element,
        train_secs,
        accumulator_secs: acc_secs,
    })
}

/// Relative L2 error `‖a − b‖ / ‖b‖` over all parameters (in f64).
pub fn relative_l2(a: &[Vec<f32>], b: &[Vec<f64>]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        for (&p, &q) in x.iter().zip(y) {
            num += (f64::from(p) - q).powi(2);
            den += q * q;
        }
    }
    (num / den).sqrt()
}

/// One row of [`gradient_errors`]: a configuration's error at one training step.
#[derive(Debug, Clone)]
pub struct ErrorRow {
    /// Optimizer step of the exact-accumulation run at which the micro-batches were taken.
    pub step: usize,
    /// [`config_label`], or a reference label.
    pub label: String,
    /// Mean over repetitions (independent accumulation windows) of `‖m̂ − M‖/‖M‖`, with `M`
    /// the exact mean of the micro-batch gradients.
    pub rel_l2: f64,
    /// Smallest and largest of the repetitions.
    pub range: (f64, f64),
    /// `‖mean over repetitions of m̂ − M‖/‖M‖`: what is left after averaging the
    /// repetitions (→ 0 like `1/√reps` for an unbiased scheme, stays for a biased one).
    pub rel_l2_of_average: f64,
}

/// Reference magnitudes at one step of [`gradient_errors`].
#[derive(Debug, Clone)]
pub struct StepReference {
    /// Optimizer step.
    pub step: usize,
    /// `‖M − G‖/‖G‖`, with `G` the full-training-set gradient at the same weights: the
    /// sampling noise of the accumulated mini-batch itself.
    pub minibatch_noise: f64,
    /// Mean over micro-batches of `‖g_k − M‖/‖M‖`: how much one micro-batch differs from
    /// the mean.
    pub micro_spread: f64,
}

/// Trains with exact `f32` accumulation for `max(at_steps)` steps; at each step in `at_steps`
/// (before the optimizer step) runs every configuration `reps` times (independent windows) on
/// the same micro-batch gradients and measures its error against the exact mean. Also returns
/// the sampling-noise references of each step, using `full` (a full-batch digits task) for the
/// full-data gradient.
///
/// # Errors
/// Candle and accumulator errors.
pub fn gradient_errors(
    task: &DigitsTask,
    full: &DigitsTask,
    s: DigitsRunSettings,
    at_steps: &[usize],
    configs: &[TernaryConfig],
    reps: usize,
) -> Result<(Vec<ErrorRow>, Vec<StepReference>)> {
    let k = task.micro_batches();
    let (varmap, model) = task.build(s.seed)?;
    let (set, vars) = ParamSet::from_varmap(&varmap)?;
    let shapes: Vec<(String, Vec<usize>)> = set
        .specs()
        .iter()
        .map(|p| (p.name.clone(), p.shape.clone()))
        .collect();
    let params = ParamsAdamW {
        lr: s.lr,
        ..ParamsAdamW::default()
    };
    let mut opt = AdamW::from_varmap(&varmap, params)?;
    let mut exact = ExactAccumulator::new(set.clone());
    let last = at_steps.iter().copied().max().unwrap_or(0);
    let (mut rows, mut refs) = (Vec::new(), Vec::new());
    for step in 0..=last {
        let mut micro = Vec::with_capacity(k);
        for j in 0..k {
            let loss = task.micro_loss(model.as_ref(), step, j, s.seed)?;
            let g = grad_map(&varmap, &loss.backward()?)?;
            exact.accumulate(&g)?;
            if at_steps.contains(&step) {
                micro.push(g);
            }
        }
        if at_steps.contains(&step) {
            let host: Vec<Vec<Vec<f32>>> = micro
                .iter()
                .map(|g| set.to_host_f32(g))
                .collect::<vsa_optim_rs::Result<_>>()?;
            let m: Vec<Vec<f64>> = (0..set.len())
                .map(|p| {
                    (0..host[0][p].len())
                        .map(|i| host.iter().map(|g| f64::from(g[p][i])).sum::<f64>() / k as f64)
                        .collect()
                })
                .collect();
            let (gfull, _) = full_gradient(full, model.as_ref(), &vars, 0, s.seed)?;
            let gfull = set.to_host_f32(&grad_map(&varmap, &gfull)?)?;
            let m32: Vec<Vec<f32>> = m
                .iter()
                .map(|v| v.iter().map(|&x| x as f32).collect())
                .collect();
            let gfull64: Vec<Vec<f64>> = gfull
                .iter()
                .map(|v| v.iter().map(|&x| f64::from(x)).collect())
                .collect();
            refs.push(StepReference {
                step,
                minibatch_noise: relative_l2(&m32, &gfull64),
                micro_spread: host.iter().map(|g| relative_l2(g, &m)).sum::<f64>() / k as f64,
            });
            // The exact mean as tensors, for the "one quantization of the exact mean" rows.
            let mean_map = set.from_host_f32(&m32, &Device::Cpu)?;
            for c in configs {
                let c = TernaryConfig {
                    accumulation_steps: k,
                    seed: s.seed,
                    ..*c
                };
                let mut acc = TernaryGradientAccumulator::new(&shapes, c, &Device::Cpu)?;
                let row = measure(&mut acc, &micro, &m, reps, step, config_label(&c))?;
                rows.push(row);
                let one = TernaryConfig {
                    accumulation_steps: 1,
                    ..c
                };
                let mut acc1 = TernaryGradientAccumulator::new(&shapes, one, &Device::Cpu)?;
                let label = format!("  ref: one quantization of M, {}", config_label(&c));
                rows.push(measure(
                    &mut acc1,
                    std::slice::from_ref(&mean_map),
                    &m,
                    reps,
                    step,
                    label,
                )?);
            }
        }
        let store = store_from_host(&vars, &exact.mean_host())?;
        exact.reset();
        opt.step(&store)?;
    }
    Ok((rows, refs))
}

fn measure(
    acc: &mut TernaryGradientAccumulator,
    micro: &[HashMap<String, Tensor>],
    m: &[Vec<f64>],
    reps: usize,
    step: usize,
    label: String,
) -> Result<ErrorRow> {
    let mut errs = Vec::with_capacity(reps);
    let mut avg: Vec<Vec<f64>> = m.iter().map(|v| vec![0.0; v.len()]).collect();
    for _ in 0..reps {
        for g in micro {
            acc.accumulate(g)?;
        }
        let out = acc.get_accumulated_host()?;
        errs.push(relative_l2(&out, m));
        for (a, o) in avg.iter_mut().zip(&out) {
            for (x, &y) in a.iter_mut().zip(o) {
                *x += f64::from(y) / reps as f64;
            }
        }
        acc.reset()?;
    }
    let avg32: Vec<Vec<f32>> = avg
        .iter()
        .map(|v| v.iter().map(|&x| x as f32).collect())
        .collect();
    let lo = errs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = errs.iter().copied().fold(0f64, f64::max);
    Ok(ErrorRow {
        step,
        label,
        rel_l2: errs.iter().sum::<f64>() / reps as f64,
        range: (lo, hi),
        rel_l2_of_average: relative_l2(&avg32, m),
    })
}

/// Helper for reports: `(mean, sample standard deviation)` of `xs`.
pub fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}
