//! Training runs and quality measurements with VSA-compressed gradients
//! ([`vsa_optim_rs::compress`]).
//!
//! - [`task_gradients`] / [`quality`]: per-tensor reconstruction cosine and norm ratio of
//!   real gradients (digits MLP, character LM) against the `√(m/n)` bound.
//! - [`train_digits`]: the digits MLP trained with uncompressed gradients, or with gradients
//!   compressed, serialised to bytes, parsed and decompressed before every AdamW step (with or
//!   without error feedback), as they would travel between workers.
//! - [`tuned_table`] / [`train_digits_codec`]: the learning-rate-tuned side-by-side of every
//!   codec (exact, the dense VSA sketch, `grad_sketch`'s methods) at equal bytes.
//! - [`peak_rss_kib`]: the process's peak resident memory (`VmHWM`), for memory reports run in
//!   their own process.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{Device, Result};
use candle_nn::Optimizer;
use vsa_optim_rs::compress::{
    BundleQuantization, CompressedGradients, Reconstruction, VSAConfig, VSAGradientCompressor,
};
use vsa_optim_rs::{AdamW, ParamSet, ParamsAdamW};

mod codecs;

pub use codecs::{
    Codec, CodecRun, Objective, TunedRow, train_digits_codec, train_task_codec, tuned_table,
    tuned_table_with,
};

use crate::harness::full_gradient;
use crate::tasks::{DigitsTask, Task};

/// The digits MLP (batch 64) built from `seed`, its parameters and AdamW with `lr`: the
/// common start of the compressed training runs.
pub(crate) struct DigitsRun {
    pub(crate) task: DigitsTask,
    pub(crate) varmap: candle_nn::VarMap,
    pub(crate) model: Box<dyn candle_nn::Module>,
    pub(crate) set: ParamSet,
    pub(crate) vars: Vec<candle_core::Var>,
    pub(crate) opt: AdamW,
}

impl DigitsRun {
    pub(crate) fn new(lr: f64, seed: u64) -> Result<Self> {
        let task = DigitsTask::new(Some(64), 1, &Device::Cpu)?;
        let (varmap, model) = task.build(seed)?;
        let (set, vars) = ParamSet::from_varmap(&varmap)?;
        let opt = AdamW::from_varmap(
            &varmap,
            ParamsAdamW {
                lr,
                ..ParamsAdamW::default()
            },
        )?;
        Ok(Self {
            task,
            varmap,
            model,
            set,
            vars,
            opt,
        })
    }
}

/// For grad-sketch's errors, which have no direct `From` into candle's error (the facade's
/// own errors convert with `?`).
pub(crate) fn wrap(e: impl Into<vsa_optim_rs::Error>) -> candle_core::Error {
    candle_core::Error::wrap(e.into())
}

/// One parameter's gradient on the host.
#[derive(Debug, Clone)]
pub struct HostGradient {
    /// Parameter name.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub values: Vec<f32>,
}

/// The true gradient of `task` at its initial weights for `seed`, after `warm_steps` plain
/// AdamW steps (lr 1e-3), sorted by name.
///
/// # Errors
/// Candle errors.
pub fn task_gradients(task: &dyn Task, seed: u64, warm_steps: usize) -> Result<Vec<HostGradient>> {
    let (varmap, model) = task.build(seed)?;
    let (set, vars) = ParamSet::from_varmap(&varmap)?;
    let mut opt = AdamW::from_varmap(
        &varmap,
        ParamsAdamW {
            lr: 1e-3,
            ..ParamsAdamW::default()
        },
    )?;
    for step in 0..warm_steps {
        let (g, _) = full_gradient(task, model.as_ref(), &vars, step, seed)?;
        opt.step(&g)?;
    }
    let (g, _) = full_gradient(task, model.as_ref(), &vars, warm_steps, seed)?;
    let mut out = Vec::new();
    for (spec, v) in set.specs().iter().zip(&vars) {
        let t = g
            .get(v.as_tensor())
            .ok_or_else(|| candle_core::Error::Msg(format!("no gradient for {}", spec.name)))?;
        out.push(HostGradient {
            name: spec.name.clone(),
            shape: spec.shape.clone(),
            values: t.flatten_all()?.to_vec1::<f32>()?,
        });
    }
    Ok(out)
}

/// One row of the quality table.
#[derive(Debug, Clone)]
pub struct QualityRow {
    /// Parameter name, or `"all"` for the concatenation of every parameter.
    pub param: String,
    /// Elements `n`.
    pub numel: usize,
    /// `ρ`.
    pub ratio: f64,
    /// Reconstruction mode.
    pub reconstruction: Reconstruction,
    /// Bundle quantization.
    pub quantization: BundleQuantization,
    /// Slots `m`.
    pub slots: usize,
    /// `cos(x, x̂)`, mean over the seeds.
    pub cosine: f64,
    /// Smallest cosine over the seeds.
    pub cosine_min: f64,
    /// `‖x̂‖ / ‖x‖`, mean over the seeds.
    pub norm_ratio: f64,
    /// The bound `√(m/n)` (≈ `√ρ`).
    pub bound: f64,
    /// Compressed bytes of the whole gradient set for this configuration.
    pub set_bytes: usize,
    /// `4 ×` elements of the whole set ÷ `set_bytes`.
    pub set_compression: f64,
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum()
}

/// `(cosine, norm ratio)` of `xh` against `x` (`(0, 0)` when either is zero).
pub fn cosine_and_norm_ratio(x: &[f32], xh: &[f32]) -> (f64, f64) {
    let (nx, nh) = (dot(x, x).sqrt(), dot(xh, xh).sqrt());
    if nx == 0.0 || nh == 0.0 {
        return (0.0, nh / nx.max(f64::MIN_POSITIVE));
    }
    (dot(x, xh) / (nx * nh), nh / nx)
}

/// Compresses and decompresses `grads` with each `(ratio, reconstruction, quantization)` for
/// `seeds` compressor seeds (dimension 8192) and reports per-tensor and overall quality.
///
/// # Errors
/// Compressor errors.
pub fn quality(
    grads: &[HostGradient],
    configs: &[(f64, Reconstruction, BundleQuantization)],
    seeds: u64,
) -> vsa_optim_rs::Result<Vec<QualityRow>> {
    let shapes: Vec<(String, Vec<usize>)> = grads
        .iter()
        .map(|g| (g.name.clone(), g.shape.clone()))
        .collect();
    let host: Vec<&[f32]> = grads.iter().map(|g| g.values.as_slice()).collect();
    let all: Vec<f32> = grads
        .iter()
        .flat_map(|g| g.values.iter().copied())
        .collect();
    let mut rows = Vec::new();
    for &(ratio, reconstruction, quantization) in configs {
        let k = grads.len() + 1;
        let (mut cs, mut mins, mut ns) = (vec![0.0; k], vec![f64::MAX; k], vec![0.0; k]);
        let (mut set_bytes, mut layout) = (0, Vec::new());
        for seed in 0..seeds {
            let cfg = VSAConfig {
                dimension: 8192,
                compression_ratio: ratio,
                seed,
                reconstruction,
                quantization,
                error_feedback: false,
            };
            let mut c = VSAGradientCompressor::new(&shapes, cfg, &Device::Cpu)?;
            layout = c.layout();
            let z = c.compress_host(&host)?;
            set_bytes = z.stats.compressed_bytes;
            let out = c.decompress_host(&z)?;
            let all_h: Vec<f32> = out.iter().flat_map(|v| v.iter().copied()).collect();
            let per = grads
                .iter()
                .zip(&out)
                .map(|(g, h)| cosine_and_norm_ratio(&g.values, h))
                .chain(std::iter::once(cosine_and_norm_ratio(&all, &all_h)));
            for (i, (c, n)) in per.enumerate() {
                cs[i] += c / seeds as f64;
                ns[i] += n / seeds as f64;
                mins[i] = f64::min(mins[i], c);
            }
        }
        let total: usize = grads.iter().map(|g| g.values.len()).sum();
        let total_slots: usize = layout.iter().map(|l| l.0).sum();
        for i in 0..k {
            let (param, numel, slots) = if i < grads.len() {
                (grads[i].name.clone(), grads[i].values.len(), layout[i].0)
            } else {
                ("all".to_string(), total, total_slots)
            };
            rows.push(QualityRow {
                param,
                numel,
                ratio,
                reconstruction,
                quantization,
                slots,
                cosine: cs[i],
                cosine_min: mins[i],
                norm_ratio: ns[i],
                bound: (slots as f64 / numel as f64).sqrt(),
                set_bytes,
                set_compression: (4 * total) as f64 / set_bytes as f64,
            });
        }
    }
    Ok(rows)
}

/// How gradients reach the optimizer in [`train_digits`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GradientPath {
    /// Straight from backward.
    Uncompressed,
    /// Compressed with `ratio`, serialised to bytes, parsed and decompressed.
    Compressed {
        /// `ρ`.
        ratio: f64,
        /// Error feedback on or off.
        error_feedback: bool,
        /// Bundle quantization.
        quantization: BundleQuantization,
    },
}

impl GradientPath {
    /// A short label for tables.
    pub fn label(&self) -> String {
        match self {
            Self::Uncompressed => "uncompressed".into(),
            Self::Compressed {
                ratio,
                error_feedback,
                quantization,
            } => format!(
                "ρ={ratio} {:?}{}",
                quantization,
                if *error_feedback { " + EF" } else { ", no EF" }
            ),
        }
    }
}

/// The result of one digits run.
#[derive(Debug, Clone)]
pub struct CompressedRun {
    /// [`GradientPath::label`].
    pub label: String,
    /// Run seed (weights, data order, compressor keys).
    pub seed: u64,
    /// Final test accuracy in percent on the 297 held-out digits.
    pub test_accuracy: f64,
    /// Final test cross-entropy.
    pub test_loss: f64,
    /// Gradient bytes sent per step (`to_bytes().len()`, or `4 ×` parameters uncompressed).
    pub bytes_per_step: usize,
    /// Wall-clock seconds of the training loop (evaluation excluded).
    pub train_secs: f64,
    /// Of which compressing, serialising, parsing and decompressing.
    pub compress_secs: f64,
    /// Compressor state bytes (error-feedback residuals).
    pub compressor_bytes: usize,
}

/// Trains the digits MLP (batch 64, AdamW lr `lr`) for `steps` steps with `path`.
///
/// # Errors
/// Candle and compressor errors.
pub fn train_digits(path: GradientPath, steps: usize, lr: f64, seed: u64) -> Result<CompressedRun> {
    let device = Device::Cpu;
    let DigitsRun {
        task,
        varmap,
        model,
        set,
        vars,
        mut opt,
    } = DigitsRun::new(lr, seed)?;
    let mut comp = match path {
        GradientPath::Uncompressed => None,
        GradientPath::Compressed {
            ratio,
            error_feedback,
            quantization,
        } => {
            let cfg = VSAConfig {
                compression_ratio: ratio,
                seed,
                error_feedback,
                quantization,
                ..VSAConfig::default()
            };
            Some(VSAGradientCompressor::from_varmap(&varmap, cfg, &device)?)
        }
    };
    let (mut secs, mut csecs) = (0f64, 0f64);
    let mut bytes_per_step = 4 * set.total_numel();
    for step in 0..steps {
        let t0 = Instant::now();
        let (g, _) = full_gradient(&task, model.as_ref(), &vars, step, seed)?;
        match comp.as_mut() {
            None => opt.step(&g)?,
            Some(c) => {
                let t1 = Instant::now();
                let mut map = HashMap::with_capacity(vars.len());
                for (spec, v) in set.specs().iter().zip(&vars) {
                    let t = g.get(v.as_tensor()).ok_or_else(|| {
                        candle_core::Error::Msg(format!("no gradient for {}", spec.name))
                    })?;
                    map.insert(spec.name.clone(), t.clone());
                }
                let bytes = c.compress(&map)?.to_bytes().map_err(wrap)?;
                bytes_per_step = bytes.len();
                let received = CompressedGradients::from_bytes(&bytes).map_err(wrap)?;
                let restored = c.decompress(&received)?;
                let mut store = GradStore::default();
                for (spec, v) in set.specs().iter().zip(&vars) {
                    store.insert(v.as_tensor(), restored[&spec.name].clone());
                }
                csecs += t1.elapsed().as_secs_f64();
                opt.step(&store)?;
            }
        }
        secs += t0.elapsed().as_secs_f64();
    }
    let (test_loss, test_accuracy) = task.eval(model.as_ref())?;
    Ok(CompressedRun {
        label: path.label(),
        seed,
        test_accuracy,
        test_loss,
        bytes_per_step,
        train_secs: secs,
        compress_secs: csecs,
        compressor_bytes: comp.as_ref().map_or(0, |c| c.memory_bytes()),
    })
}

/// Peak resident set size of this process in KiB (`VmHWM` from `/proc/self/status`), or
/// `None` where that file does not exist.
pub fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Current resident set size in KiB (`VmRSS`), or `None`.
pub fn rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
