//! Data-parallel training over a [`Collective`]: each rank trains on its shard of every
//! global batch, gradients are averaged by [`DataParallel`], and every rank applies the same
//! update. With a [`DeterministicPhaseTrainer`], predicted steps skip the exchange.
//!
//! The same loop runs as the single-process reference ([`reference_run`]): it computes all
//! `N` shard gradients itself and averages them with the same rank-order sum, so its weights
//! must equal an `f32`-mode run on `N` ranks bit for bit.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{Device, Module, Result, Tensor, Var};
use candle_nn::{Optimizer, VarMap};
use serde::{Deserialize, Serialize};
use vsa_optim_rs::distributed::{
    Collective, DataParallel, ExchangeMode, ExchangeStats, GradientCodec, MethodCodec, Reduction,
    SingleProcess, codec_for, reduce,
};
use vsa_optim_rs::grad_sketch::CompressorConfig;
use vsa_optim_rs::{
    AdamW, DeterministicPhaseConfig, DeterministicPhaseTrainer, ParamSet, ParamsAdamW, VSAConfig,
};

pub use crate::harness::weights_hash;
use crate::models::CharLmConfig;
use crate::tasks::{CharLmTask, DigitsTask, Task};
use crate::workloads::best_config;

/// Which model trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DpWorkload {
    /// The digits MLP, full training split every step (the large-batch regime).
    Digits,
    /// The character transformer, `windows` random windows per micro-batch.
    CharLm,
}

/// A configuration every rank must share, except where a test deliberately breaks it.
#[derive(Debug, Clone)]
pub struct DpSettings {
    /// The model.
    pub workload: DpWorkload,
    /// Gradient exchange mode.
    pub mode: ExchangeMode,
    /// How the messages are combined ([`Reduction::Gather`] by default; `Sum` needs a
    /// linear codec, `Allreduce` the f32 mode).
    pub reduction: Reduction,
    /// The method of mode `compressed` (its `seed` is replaced by [`DpSettings::seed`]).
    pub method: CompressorConfig,
    /// `None`: a backward pass and an exchange every step; `Some`: the phase trainer.
    pub trainer: Option<DeterministicPhaseConfig>,
    /// Optimizer steps.
    pub steps: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// Seed for weights, data order and quantization.
    pub seed: u64,
    /// Micro-batches each rank accumulates per step.
    pub micro_per_rank: usize,
    /// Evaluate (rank 0) every this many steps.
    pub eval_every: usize,
    /// VSA compression config (mode `vsa`).
    pub vsa: VSAConfig,
    /// Write a checkpoint every this many steps into `checkpoint_dir`.
    pub checkpoint_every: Option<usize>,
    /// Checkpoint directory.
    pub checkpoint_dir: Option<PathBuf>,
    /// Resume from the latest complete checkpoint in `checkpoint_dir`.
    pub resume: bool,
    /// `(rank, step)`: that rank kills itself with SIGKILL when the step begins.
    pub kill_at: Option<(usize, usize)>,
    /// Test hook: this rank reports parameter shapes with one dimension changed.
    pub corrupt_shapes_on: Option<usize>,
    /// Test hook: `(rank, step)`: that rank's local gradient holds a NaN at that step.
    pub nan_at: Option<(usize, usize)>,
}

impl DpSettings {
    /// Defaults for `workload`: digits full batch, 300 steps at lr 1e-3, trainer with the
    /// best config (lr ×2 as measured in docs/trainer.md); char-LM 8 windows per
    /// micro-batch, 40 steps at lr 2e-3.
    pub fn new(workload: DpWorkload, mode: ExchangeMode) -> Self {
        let (steps, lr, eval_every) = match workload {
            DpWorkload::Digits => (300, 1e-3, 5),
            DpWorkload::CharLm => (40, 2e-3, 4),
        };
        Self {
            workload,
            mode,
            reduction: Reduction::Gather,
            method: CompressorConfig::default(),
            trainer: Some(best_config()),
            steps,
            lr,
            seed: 0,
            micro_per_rank: 1,
            eval_every,
            vsa: VSAConfig {
                compression_ratio: 0.1,
                error_feedback: true,
                ..VSAConfig::default()
            },
            checkpoint_every: None,
            checkpoint_dir: None,
            resume: false,
            kill_at: None,
            corrupt_shapes_on: None,
            nan_at: None,
        }
    }

    fn task(&self, shards: usize) -> Result<Box<dyn Task>> {
        let micro = shards * self.micro_per_rank.max(1);
        Ok(match self.workload {
            DpWorkload::Digits => Box::new(DigitsTask::new(None, micro, &Device::Cpu)?),
            DpWorkload::CharLm => Box::new(CharLmTask::new(
                CharLmConfig::default(),
                8,
                micro,
                32,
                &Device::Cpu,
            )?),
        })
    }

    /// A hash of the settings that every rank must share (the handshake's user field).
    pub fn fingerprint(&self) -> u64 {
        let s = format!(
            "{:?}|{:?}|{}|{}|{}|{}",
            self.workload,
            self.trainer.as_ref().map(|c| format!("{c:?}")),
            self.steps,
            self.lr.to_bits(),
            self.micro_per_rank,
            self.eval_every
        );
        vsa_optim_rs::vsa_core::rng::key_from_name(&s)
    }
}

/// One held-out evaluation.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct DpPoint {
    /// Steps taken.
    pub step: usize,
    /// Training seconds so far (evaluation and checkpoints excluded).
    pub secs: f64,
    /// Held-out loss.
    pub loss: f64,
    /// Held-out metric (test accuracy % or bits/char).
    pub metric: f64,
}

/// What a data-parallel run measured (rank 0's view; the exchange counters are per rank).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DpResult {
    /// Ranks (or emulated shards for the reference).
    pub ranks: usize,
    /// Exchange mode.
    pub mode: String,
    /// How the messages were combined (`gather`, `sum`, `allreduce`).
    #[serde(default)]
    pub reduction: String,
    /// Evaluation curve.
    pub curve: Vec<DpPoint>,
    /// Steps with a backward pass (and an exchange).
    pub backward_steps: usize,
    /// Predicted steps.
    pub predicted_steps: usize,
    /// Collective calls issued during predicted steps (must be 0).
    pub calls_in_predicted_steps: u64,
    /// Collective calls in the whole run (handshake and final checks included).
    pub collective_calls: u64,
    /// Bytes of one gradient frame this rank sent per exchange (header + payload).
    pub frame_bytes: usize,
    /// `4·n`: the raw f32 gradient.
    pub f32_bytes: usize,
    /// Bytes this rank sent over the whole run.
    pub bytes_sent: u64,
    /// Bytes this rank received from the other ranks over the whole run.
    pub bytes_received: u64,
    /// Seconds inside the exchange (encode, transport, decode, sum).
    pub exchange_secs: f64,
    /// Training seconds (evaluation and checkpoints excluded).
    pub secs: f64,
    /// FNV-1a of the final weights (f32 bits, sorted names).
    pub weights_hash: u64,
    /// Digest of the trainer state, where a trainer ran.
    pub trainer_digest: Option<u64>,
    /// The step the run resumed from (0 for a fresh run).
    pub resumed_from: usize,
}

impl DpResult {
    /// Final held-out metric.
    pub fn final_metric(&self) -> f64 {
        self.curve.last().map_or(f64::NAN, |p| p.metric)
    }

    /// Training seconds at which the held-out loss first reached `target`.
    pub fn time_to(&self, target: f64) -> Option<f64> {
        self.curve.iter().find(|p| p.loss <= target).map(|p| p.secs)
    }
}

/// For the exchange's, JSON's and other non-facade errors (the facade's convert with `?`).
fn wrap(e: impl std::error::Error + Send + Sync + 'static) -> candle_core::Error {
    candle_core::Error::wrap(e)
}

/// The mean gradient and loss of shard `shard` of step `step` (its `micro_per_rank`
/// micro-batches, summed in order on the host, then divided).
fn shard_gradient(
    task: &dyn Task,
    model: &dyn Module,
    vars: &[Var],
    s: &DpSettings,
    step: usize,
    shard: usize,
) -> Result<(Vec<Vec<f32>>, f32)> {
    let k = s.micro_per_rank.max(1);
    let mut acc: Vec<Vec<f32>> = Vec::new();
    let mut loss_sum = 0f32;
    for j in 0..k {
        let loss = task.micro_loss(model, step, shard * k + j, s.seed)?;
        let l = loss.to_scalar::<f32>()?;
        let g = loss.backward()?;
        let mut host = Vec::with_capacity(vars.len());
        for v in vars {
            let t = g
                .get(v.as_tensor())
                .ok_or_else(|| candle_core::Error::Msg("a variable has no gradient".into()))?;
            host.push(t.flatten_all()?.to_vec1::<f32>()?);
        }
        if j == 0 {
            acc = host;
            loss_sum = l;
        } else {
            for (a, h) in acc.iter_mut().zip(&host) {
                reduce::add_into(a, h).map_err(wrap)?;
            }
            loss_sum += l;
        }
    }
    for a in &mut acc {
        reduce::divide(a, k);
    }
    Ok((acc, loss_sum / k as f32))
}

fn grad_store(vars: &[Var], host: &[Vec<f32>]) -> Result<GradStore> {
    let mut store = GradStore::default();
    for (v, h) in vars.iter().zip(host) {
        let t = Tensor::from_slice(h.as_slice(), v.shape(), v.device())?;
        store.insert(v.as_tensor(), t);
    }
    Ok(store)
}

#[derive(Serialize, Deserialize)]
struct Meta {
    ranks: usize,
    step: usize,
    curve: Vec<DpPoint>,
    backward_steps: usize,
    predicted_steps: usize,
    secs: f64,
}

fn rank_dir(dir: &Path, step: usize, rank: usize) -> PathBuf {
    dir.join(format!("step-{step:06}"))
        .join(format!("rank-{rank}"))
}

/// How the loop averages: over real ranks, or (reference) over `N` shards computed here.
enum Averager<C: Collective> {
    Ranks(Box<DataParallel<C>>),
    Reference { shards: usize },
}

/// Trains on this rank's shards; every rank of `collective` must call it with the same
/// settings. Returns rank 0's curve and this rank's counters.
///
/// # Errors
/// Candle errors, and the exchange's typed errors (handshake mismatch, non-finite
/// gradients on any rank) wrapped in candle's error.
pub fn run<C: Collective>(collective: C, s: &DpSettings) -> Result<DpResult> {
    let shards = collective.size();
    let rank = collective.rank();
    let task = s.task(shards)?;
    let (mut varmap, model) = task.build(s.seed)?;
    let (set, vars) = ParamSet::from_varmap(&varmap)?;
    let mut shapes: Vec<(String, Vec<usize>)> = set
        .specs()
        .iter()
        .map(|p| (p.name.clone(), p.shape.clone()))
        .collect();
    if s.corrupt_shapes_on == Some(rank) {
        shapes[0].1[0] += 1;
    }
    let codec: Box<dyn GradientCodec + Send> = if s.mode == ExchangeMode::Compressed {
        let method = CompressorConfig {
            seed: s.seed,
            ..s.method
        };
        Box::new(MethodCodec::new(&shapes, method).map_err(vsa_optim_rs::Error::from)?)
    } else {
        codec_for(s.mode, &shapes, s.seed, s.vsa)?
    };
    let dp = DataParallel::with_codec(
        collective,
        codec,
        &shapes,
        s.seed,
        s.reduction,
        s.fingerprint(),
    )?;
    train(
        task.as_ref(),
        &mut varmap,
        model.as_ref(),
        &vars,
        s,
        Averager::Ranks(Box::new(dp)),
    )
}

/// The single-process reference for `shards` ranks in `f32` mode: the same loop, computing
/// every shard's gradient in rank order and averaging with the same rank-order sum.
///
/// # Errors
/// Candle and trainer errors; [`candle_core::Error::Msg`] for a mode other than `f32`.
pub fn reference_run(shards: usize, s: &DpSettings) -> Result<DpResult> {
    if s.mode != ExchangeMode::F32 || shards == 0 {
        return Err(candle_core::Error::Msg(
            "the single-process reference exists for f32 mode and at least one shard".into(),
        ));
    }
    let task = s.task(shards)?;
    let (mut varmap, model) = task.build(s.seed)?;
    let (_, vars) = ParamSet::from_varmap(&varmap)?;
    train::<SingleProcess>(
        task.as_ref(),
        &mut varmap,
        model.as_ref(),
        &vars,
        s,
        Averager::Reference { shards },
    )
}

#[allow(clippy::too_many_lines)]
fn train<C: Collective>(
    task: &dyn Task,
    varmap: &mut VarMap,
    model: &dyn Module,
    vars: &[Var],
    s: &DpSettings,
    mut avg: Averager<C>,
) -> Result<DpResult> {
    let (rank, ranks) = match &avg {
        Averager::Ranks(dp) => (dp.exchange().rank(), dp.exchange().size()),
        Averager::Reference { shards } => (0, *shards),
    };
    let mut opt = AdamW::from_varmap(
        varmap,
        ParamsAdamW {
            lr: s.lr,
            ..ParamsAdamW::default()
        },
    )?;
    let mut trainer = match &s.trainer {
        Some(c) => Some(DeterministicPhaseTrainer::from_varmap(
            varmap,
            c.clone(),
            &Device::Cpu,
        )?),
        None => None,
    };
    let mut meta = Meta {
        ranks,
        step: 0,
        curve: Vec::new(),
        backward_steps: 0,
        predicted_steps: 0,
        secs: 0.0,
    };
    let mut resumed_from = 0;
    if s.resume {
        let dir = s
            .checkpoint_dir
            .as_ref()
            .ok_or_else(|| candle_core::Error::Msg("resume needs a checkpoint dir".into()))?;
        let latest: usize = std::fs::read_to_string(dir.join("LATEST"))?
            .trim()
            .parse()
            .map_err(|e| candle_core::Error::Msg(format!("LATEST: {e}")))?;
        let d = rank_dir(dir, latest, rank);
        varmap.load(d.join("weights.safetensors"))?;
        opt.load(d.join("adamw.safetensors"))?;
        if let Some(t) = trainer.as_mut() {
            t.load(d.join("trainer.safetensors"))?;
        }
        if let Averager::Ranks(dp) = &mut avg {
            let state = std::fs::read(d.join("codec.bin"))?;
            dp.exchange_mut()
                .restore_codec_state(&state)
                .map_err(wrap)?;
        }
        let stored: Meta =
            serde_json::from_slice(&std::fs::read(d.join("meta.json"))?).map_err(wrap)?;
        if stored.ranks != ranks {
            return Err(candle_core::Error::Msg(format!(
                "checkpoint {} was written by {} ranks, this run has {ranks}",
                d.display(),
                stored.ranks
            )));
        }
        meta = stored;
        resumed_from = latest;
    }
    let eval = |step: usize, secs: f64| -> Result<Option<DpPoint>> {
        if rank != 0 {
            return Ok(None);
        }
        let (loss, metric) = task.eval(model)?;
        Ok(Some(DpPoint {
            step,
            secs,
            loss,
            metric,
        }))
    };
    if meta.curve.is_empty()
        && let Some(p) = eval(0, 0.0)?
    {
        meta.curve.push(p);
    }
    let calls = |avg: &Averager<C>| match avg {
        Averager::Ranks(dp) => dp.exchange().collective_calls(),
        Averager::Reference { .. } => 0,
    };
    let mut calls_in_predicted = 0u64;
    for step in meta.step..s.steps {
        if s.kill_at == Some((rank, step)) {
            eprintln!("rank {rank}: killing myself with SIGKILL at step {step} (test hook)");
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &std::process::id().to_string()])
                .status();
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
        let t0 = Instant::now();
        let info = match trainer.as_mut() {
            Some(t) => Some(t.begin_step()?),
            None => None,
        };
        if info.is_none_or(|i| i.needs_backward) {
            let (g, loss) = match &mut avg {
                Averager::Ranks(dp) => {
                    let (mut local, l) = shard_gradient(task, model, vars, s, step, rank)?;
                    if s.nan_at == Some((rank, step)) {
                        local[0][0] = f32::NAN;
                    }
                    let (g, loss) = dp.average_host(step as u64, &local, l)?;
                    (g.to_vec(), loss)
                }
                Averager::Reference { shards } => {
                    let mut parts = Vec::with_capacity(*shards);
                    let mut loss = 0f32;
                    for r in 0..*shards {
                        let (g, l) = shard_gradient(task, model, vars, s, step, r)?;
                        loss = if r == 0 { l } else { loss + l };
                        parts.push(g);
                    }
                    let refs: Vec<&[Vec<f32>]> = parts.iter().map(Vec::as_slice).collect();
                    let mut out = parts[0].clone();
                    reduce::mean_in_rank_order(&refs, &mut out).map_err(wrap)?;
                    (out, loss / *shards as f32)
                }
            };
            opt.step(&grad_store(vars, &g)?)?;
            if let Some(t) = trainer.as_mut() {
                t.record_full_host(&g)?;
                t.end_step(loss)?;
            }
            meta.backward_steps += 1;
        } else {
            let before = calls(&avg);
            let t = trainer.as_mut().expect("predicted steps need a trainer");
            let g = grad_store(vars, t.predicted_host()?)?;
            opt.step(&g)?;
            t.end_step_without_loss()?;
            calls_in_predicted += calls(&avg) - before;
            meta.predicted_steps += 1;
        }
        meta.secs += t0.elapsed().as_secs_f64();
        if ((step + 1) % s.eval_every == 0 || step + 1 == s.steps)
            && let Some(p) = eval(step + 1, meta.secs)?
        {
            meta.curve.push(p);
        }
        if let (Some(every), Some(dir)) = (s.checkpoint_every, &s.checkpoint_dir)
            && (step + 1) % every == 0
        {
            meta.step = step + 1;
            let d = rank_dir(dir, step + 1, rank);
            std::fs::create_dir_all(&d)?;
            varmap.save(d.join("weights.safetensors"))?;
            opt.save(d.join("adamw.safetensors"))?;
            if let Some(t) = &trainer {
                t.save(d.join("trainer.safetensors"))?;
            }
            if let Averager::Ranks(dp) = &mut avg {
                std::fs::write(d.join("codec.bin"), dp.exchange().codec_state())?;
            }
            std::fs::write(
                d.join("meta.json"),
                serde_json::to_vec(&meta).map_err(wrap)?,
            )?;
            // Every rank has written its part before rank 0 marks the checkpoint complete.
            if let Averager::Ranks(dp) = &mut avg {
                dp.exchange_mut()
                    .gather_u64((step + 1) as u64)
                    .map_err(wrap)?;
            }
            if rank == 0 {
                let tmp = dir.join("LATEST.tmp");
                std::fs::write(&tmp, format!("{}\n", step + 1))?;
                std::fs::rename(&tmp, dir.join("LATEST"))?;
            }
        }
    }
    let weights = weights_hash(vars)?;
    let digest = match &trainer {
        Some(t) => Some(t.state_digest()?),
        None => None,
    };
    let (stats, total_calls) = match &mut avg {
        Averager::Ranks(dp) => {
            // Every rank must hold the same weights and the same predictor state.
            dp.exchange_mut()
                .check_agreement("final weights", weights)
                .map_err(wrap)?;
            if let Some(d) = digest {
                dp.exchange_mut()
                    .check_agreement("trainer state (scheduler and predictors)", d)
                    .map_err(wrap)?;
            }
            (dp.exchange().stats(), dp.exchange().collective_calls())
        }
        Averager::Reference { .. } => (ExchangeStats::default(), 0),
    };
    Ok(DpResult {
        ranks,
        mode: s.mode.to_string(),
        reduction: format!("{:?}", s.reduction).to_lowercase(),
        curve: meta.curve,
        backward_steps: meta.backward_steps,
        predicted_steps: meta.predicted_steps,
        calls_in_predicted_steps: calls_in_predicted,
        collective_calls: total_calls,
        frame_bytes: stats.last_frame_bytes,
        f32_bytes: stats.f32_bytes,
        bytes_sent: stats.bytes_sent,
        bytes_received: stats.bytes_received,
        exchange_secs: stats.seconds,
        secs: meta.secs,
        weights_hash: weights,
        trainer_digest: digest,
        resumed_from,
    })
}
