//! The learning-rate-tuned side-by-side of gradient codecs on the digits MLP (issue 14).

use std::collections::HashMap;
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{Device, Result};
use candle_nn::Optimizer;
use vsa_optim_rs::compress::{CompressedGradients, VSAConfig};
use vsa_optim_rs::grad_sketch;

use super::{DigitsRun, wrap};
use crate::harness::full_gradient;
use crate::tasks::Task;

/// A gradient codec of the side-by-side accuracy table (issue 14): exact, today's dense VSA
/// sketch, or one of `grad_sketch`'s methods.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Codec {
    /// Uncompressed f32.
    Exact,
    /// The VSA sketch with projection decoding
    /// ([`VSAGradientCompressor`](vsa_optim_rs::compress::VSAGradientCompressor)).
    DenseSketch {
        /// `ρ`.
        ratio: f64,
        /// Error feedback.
        error_feedback: bool,
    },
    /// A [`grad_sketch::Compressor`] method.
    Method(grad_sketch::CompressorConfig),
    /// Error feedback on the momentum with a frozen variance after an exact AdamW warm-up
    /// ([`grad_sketch::MomentumCompressor`], after 1-bit Adam); replaces AdamW.
    Momentum(grad_sketch::MomentumConfig),
    /// Momentum and error accumulation in a count sketch ([`grad_sketch::FetchSgd`]) on
    /// AdamW's frozen-variance preconditioned gradient; replaces AdamW.
    FetchSgd(grad_sketch::FetchSgdConfig),
}

impl Codec {
    /// A short label for tables.
    pub fn label(&self) -> String {
        match self {
            Self::Exact => "exact (f32)".into(),
            Self::DenseSketch {
                ratio,
                error_feedback,
            } => format!(
                "VSA dense sketch ρ={ratio}{}",
                if *error_feedback { " + EF" } else { "" }
            ),
            Self::Method(c) => {
                let mut s = c.method.label();
                if c.error_feedback {
                    s.push_str(" + EF");
                }
                if c.dense_warmup_steps > 0 {
                    s.push_str(&format!(", {} dense warm-up steps", c.dense_warmup_steps));
                }
                s
            }
            Self::Momentum(c) => format!(
                "momentum EF (1-bit-Adam style): {}{}, {} exact AdamW steps then v frozen",
                c.compressor.method.label(),
                if c.compressor.error_feedback {
                    " + EF"
                } else {
                    ""
                },
                c.compressor.dense_warmup_steps
            ),
            Self::FetchSgd(c) => format!(
                "{}, {} exact AdamW steps then v frozen",
                c.label(),
                c.warmup_steps
            ),
        }
    }
}

/// The result of one digits run with a [`Codec`].
#[derive(Debug, Clone)]
pub struct CodecRun {
    /// Final test accuracy in percent on the 297 held-out digits.
    pub test_accuracy: f64,
    /// Final test cross-entropy.
    pub test_loss: f64,
    /// Mean serialised bytes per step sent (warm-up steps included).
    pub mean_bytes: f64,
    /// Serialised bytes of the last step.
    pub last_bytes: usize,
    /// Training seconds (evaluation excluded), compression included.
    pub train_secs: f64,
    /// Bytes of the f32 gradient (`4 ×` parameters).
    pub f32_bytes: usize,
    /// The gradient became non-finite (training diverged) and the run stopped there; the
    /// accuracy is that of the weights at that point.
    pub diverged: bool,
}

/// Trains the digits MLP (batch 64, AdamW lr `lr`) for `steps` steps, every gradient going
/// through `codec`: `compress → to_bytes → from_bytes → decompress` on the host, as between
/// workers.
///
/// # Errors
/// Candle and compressor errors.
pub fn train_digits_codec(codec: Codec, steps: usize, lr: f64, seed: u64) -> Result<CodecRun> {
    let run = DigitsRun::new(lr, seed)?;
    let DigitsRun {
        task,
        model,
        set,
        vars,
        opt,
        ..
    } = run;
    train_codec(&task, model, set, vars, opt, codec, steps, lr, seed)
}

/// As [`train_digits_codec`], for any task: the model built from `seed`, AdamW with `lr`
/// (candle's defaults otherwise). The result's `test_loss` / `test_accuracy` are the
/// task's [`Task::eval`] pair (for the char-LM: validation loss and its second metric).
///
/// # Errors
/// Candle and compressor errors.
pub fn train_task_codec(
    task: &dyn Task,
    codec: Codec,
    steps: usize,
    lr: f64,
    seed: u64,
) -> Result<CodecRun> {
    let (varmap, model) = task.build(seed)?;
    let (set, vars) = vsa_optim_rs::ParamSet::from_varmap(&varmap)?;
    let opt = vsa_optim_rs::AdamW::from_varmap(
        &varmap,
        vsa_optim_rs::ParamsAdamW {
            lr,
            ..vsa_optim_rs::ParamsAdamW::default()
        },
    )?;
    train_codec(task, model, set, vars, opt, codec, steps, lr, seed)
}

#[allow(clippy::too_many_arguments)]
fn train_codec(
    task: &dyn Task,
    model: Box<dyn candle_nn::Module>,
    set: vsa_optim_rs::ParamSet,
    vars: Vec<candle_core::Var>,
    mut opt: vsa_optim_rs::AdamW,
    codec: Codec,
    steps: usize,
    lr: f64,
    seed: u64,
) -> Result<CodecRun> {
    let device = Device::Cpu;
    let shapes: Vec<(String, Vec<usize>)> = set
        .specs()
        .iter()
        .map(|s| (s.name.clone(), s.shape.clone()))
        .collect();
    enum State {
        Exact,
        Sketch(grad_sketch::SketchCompressor),
        Method(grad_sketch::Compressor),
        Momentum(grad_sketch::MomentumCompressor),
        Fetch(grad_sketch::FetchSgd),
    }
    let mut state = match codec {
        Codec::Exact => State::Exact,
        Codec::DenseSketch {
            ratio,
            error_feedback,
        } => {
            let cfg = VSAConfig {
                compression_ratio: ratio,
                seed,
                error_feedback,
                ..VSAConfig::default()
            };
            State::Sketch(grad_sketch::SketchCompressor::new(&shapes, cfg).map_err(wrap)?)
        }
        Codec::Method(c) => State::Method(
            grad_sketch::Compressor::new(&shapes, grad_sketch::CompressorConfig { seed, ..c })
                .map_err(wrap)?,
        ),
        Codec::Momentum(c) => {
            let compressor = grad_sketch::CompressorConfig {
                seed,
                ..c.compressor
            };
            State::Momentum(
                grad_sketch::MomentumCompressor::new(
                    &shapes,
                    grad_sketch::MomentumConfig { compressor, ..c },
                )
                .map_err(wrap)?,
            )
        }
        Codec::FetchSgd(c) => State::Fetch(
            grad_sketch::FetchSgd::new(&shapes, grad_sketch::FetchSgdConfig { seed, ..c })
                .map_err(wrap)?,
        ),
    };
    let weight_decay = vsa_optim_rs::ParamsAdamW::default().weight_decay;
    let (mut secs, mut total_bytes, mut last_bytes) = (0f64, 0usize, 4 * set.total_numel());
    let mut out: Vec<Vec<f32>> = set.specs().iter().map(|s| vec![0f32; s.numel()]).collect();
    let (mut diverged, mut taken) = (false, 0usize);
    for step in 0..steps {
        taken = step + 1;
        let t0 = Instant::now();
        let (g, _) = full_gradient(task, model.as_ref(), &vars, step, seed)?;
        if let State::Exact = state {
            opt.step(&g)?;
            total_bytes += last_bytes;
            secs += t0.elapsed().as_secs_f64();
            continue;
        }
        let mut map = HashMap::with_capacity(vars.len());
        for (spec, v) in set.specs().iter().zip(&vars) {
            let t = g
                .get(v.as_tensor())
                .ok_or_else(|| candle_core::Error::Msg(format!("no gradient for {}", spec.name)))?;
            map.insert(spec.name.clone(), t.clone());
        }
        let host = match set.to_host_f32(&map) {
            Ok(h) => h,
            Err(vsa_optim_rs::Error::NonFiniteGradient { .. }) => {
                diverged = true;
                break;
            }
            Err(e) => return Err(wrap(e)),
        };
        let sent: std::result::Result<usize, grad_sketch::Error> = match &mut state {
            State::Exact => unreachable!("handled above"),
            State::Sketch(c) => c.compress(&host).and_then(|z| {
                let bytes = z.to_bytes()?;
                let z = CompressedGradients::from_bytes(&bytes)?;
                c.decompress_into(&z, &mut out)?;
                Ok(bytes.len())
            }),
            State::Method(c) => c.compress(&host).and_then(|m| {
                let bytes = m.to_bytes()?;
                let m = grad_sketch::Message::from_bytes(&bytes)?;
                c.decompress_into(&m, &mut out)?;
                Ok(bytes.len())
            }),
            State::Momentum(c) => c.compress(&host).and_then(|m| {
                let bytes = m.to_bytes()?;
                c.apply(&[grad_sketch::Message::from_bytes(&bytes)?], &mut out)?;
                Ok(bytes.len())
            }),
            State::Fetch(c) => c.compress(&host).and_then(|m| {
                let bytes = m.to_bytes()?;
                c.apply(&[grad_sketch::Message::from_bytes(&bytes)?], &mut out)?;
                Ok(bytes.len())
            }),
        };
        let bytes = match sent {
            Ok(b) => b,
            // The error-feedback residual (or a sketch sum) overflowed f32.
            Err(grad_sketch::Error::NonFiniteGradient { .. }) => {
                diverged = true;
                break;
            }
            Err(e) => return Err(wrap(e)),
        };
        total_bytes += bytes;
        last_bytes = bytes;
        let restored = set.from_host_f32(&out, &device)?;
        if matches!(state, State::Momentum(_) | State::Fetch(_)) {
            // `out` is the AdamW direction d: θ ← θ·(1 − lr·wd) − lr·d, as AdamW::step.
            for (spec, v) in set.specs().iter().zip(&vars) {
                let next =
                    ((v.as_tensor() * (1.0 - lr * weight_decay))? - (&restored[&spec.name] * lr)?)?;
                v.set(&next)?;
            }
            secs += t0.elapsed().as_secs_f64();
            continue;
        }
        let mut store = GradStore::default();
        for (spec, v) in set.specs().iter().zip(&vars) {
            store.insert(v.as_tensor(), restored[&spec.name].clone());
        }
        opt.step(&store)?;
        secs += t0.elapsed().as_secs_f64();
    }
    let (test_loss, test_accuracy) = task.eval(model.as_ref())?;
    Ok(CodecRun {
        test_accuracy,
        test_loss,
        // Steps that sent something (a diverged run stops before sending its last step).
        mean_bytes: total_bytes as f64 / (taken - usize::from(diverged)).max(1) as f64,
        last_bytes,
        train_secs: secs,
        f32_bytes: 4 * set.total_numel(),
        diverged,
    })
}

/// One row of the learning-rate-tuned side-by-side table.
#[derive(Debug, Clone)]
pub struct TunedRow {
    /// [`Codec::label`].
    pub label: String,
    /// The budget group ("1×", "≈10×", "≈100×").
    pub budget: &'static str,
    /// The learning rate with the best mean test accuracy over the seeds.
    pub best_lr: f64,
    /// Per-seed test accuracies at `best_lr`.
    pub accuracies: Vec<f64>,
    /// Per-seed test (validation) losses at `best_lr`.
    pub losses: Vec<f64>,
    /// Mean test loss at `best_lr`.
    pub test_loss: f64,
    /// `4 × parameters ÷` mean bytes per step.
    pub fewer_bytes: f64,
    /// Bytes of the last step.
    pub last_bytes: usize,
    /// Mean training seconds per run at `best_lr`.
    pub train_secs: f64,
    /// The objective's mean (accuracy, or loss for [`Objective::Loss`]) at every grid
    /// point, in grid order.
    pub grid: Vec<f64>,
    /// Runs (of all seeds and learning rates) that diverged.
    pub diverged: usize,
    /// Runs in all.
    pub runs: usize,
}

impl TunedRow {
    /// Mean test accuracy over the seeds at the best learning rate.
    pub fn mean_accuracy(&self) -> f64 {
        self.accuracies.iter().sum::<f64>() / self.accuracies.len().max(1) as f64
    }
}

/// What [`tuned_table_with`] tunes the learning rate for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    /// The best mean test accuracy (ties: lower mean loss).
    Accuracy,
    /// The lowest mean test (validation) loss.
    Loss,
}

/// Runs every codec at every learning rate of `lrs` for `seeds` seeds on the digits MLP
/// and keeps, per codec, the learning rate with the best mean test accuracy (ties: lower
/// mean loss). `progress` is called after each run.
///
/// # Errors
/// Candle and compressor errors.
pub fn tuned_table(
    codecs: &[(&'static str, Codec)],
    lrs: &[f64],
    seeds: u64,
    steps: usize,
    progress: impl FnMut(&str, f64, u64, &CodecRun),
) -> Result<Vec<TunedRow>> {
    tuned_table_with(
        codecs,
        lrs,
        seeds,
        Objective::Accuracy,
        |c, lr, seed| train_digits_codec(c, steps, lr, seed),
        progress,
    )
}

/// [`tuned_table`] with any run function (`run(codec, lr, seed)`) and objective.
///
/// # Errors
/// The run function's errors.
pub fn tuned_table_with(
    codecs: &[(&'static str, Codec)],
    lrs: &[f64],
    seeds: u64,
    objective: Objective,
    mut run: impl FnMut(Codec, f64, u64) -> Result<CodecRun>,
    mut progress: impl FnMut(&str, f64, u64, &CodecRun),
) -> Result<Vec<TunedRow>> {
    let mut rows = Vec::new();
    for &(budget, codec) in codecs {
        let mut best: Option<TunedRow> = None;
        let mut grid = Vec::new();
        let (mut diverged, mut total) = (0, 0);
        for &lr in lrs {
            let mut runs = Vec::new();
            for seed in 0..seeds {
                let r = run(codec, lr, seed)?;
                progress(&codec.label(), lr, seed, &r);
                diverged += usize::from(r.diverged);
                total += 1;
                runs.push(r);
            }
            let k = runs.len() as f64;
            let row = TunedRow {
                label: codec.label(),
                budget,
                best_lr: lr,
                accuracies: runs.iter().map(|r| r.test_accuracy).collect(),
                losses: runs.iter().map(|r| r.test_loss).collect(),
                test_loss: runs.iter().map(|r| r.test_loss).sum::<f64>() / k,
                fewer_bytes: runs[0].f32_bytes as f64
                    / (runs.iter().map(|r| r.mean_bytes).sum::<f64>() / k),
                last_bytes: runs[0].last_bytes,
                train_secs: runs.iter().map(|r| r.train_secs).sum::<f64>() / k,
                grid: Vec::new(),
                diverged: 0,
                runs: 0,
            };
            grid.push(match objective {
                Objective::Accuracy => row.mean_accuracy(),
                Objective::Loss => row.test_loss,
            });
            // A NaN loss (a diverged run) never wins.
            let better = best.as_ref().is_none_or(|b| match objective {
                Objective::Accuracy => {
                    (row.mean_accuracy(), -row.test_loss) > (b.mean_accuracy(), -b.test_loss)
                }
                Objective::Loss => row.test_loss < b.test_loss || b.test_loss.is_nan(),
            });
            if better {
                best = Some(row);
            }
        }
        if let Some(mut b) = best {
            b.grid = grid;
            b.diverged = diverged;
            b.runs = total;
            rows.push(b);
        }
    }
    Ok(rows)
}
