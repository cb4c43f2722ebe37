//! Side-by-side training runs with measured wall-clock time.
//!
//! Every method trains the same [`Task`] from the same initial weights with the same data
//! order and the same optimizer ([`vsa_optim_rs::AdamW`], bit-identical to candle-nn's).
//! Time is measured per step with `Instant` and excludes evaluation, which runs every
//! `eval_every` steps on the held-out set.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{Module, Result, Tensor};
use candle_nn::{Optimizer, VarMap};
use serde::{Deserialize, Serialize};
use vsa_optim_rs::{
    AdamW, BackwardPlan, DeterministicPhaseConfig, DeterministicPhaseTrainer, ParamSet, ParamsAdamW,
};

use crate::tasks::Task;

/// What a run feeds the optimizer.
#[derive(Debug, Clone)]
pub enum Method {
    /// A backward pass every step.
    Plain,
    /// `DeterministicPhaseTrainer`; predicted steps skip forward and backward.
    Trainer(Box<DeterministicPhaseConfig>),
    /// `DeterministicPhaseTrainer`, but predicted steps still run the forward pass (to report
    /// their loss to the scheduler); measures what forward skipping is worth.
    TrainerWithForward(Box<DeterministicPhaseConfig>),
    /// Control: exactly the schedule of a finished trainer run (`true` = backward pass at
    /// that step), with a zero gradient on its predicted steps (AdamW coasts on its momentum).
    ZeroOnSchedule(Vec<bool>),
    /// Control for per-block skipping (DropBP-style): at step `t`, the groups `groups[i]`
    /// with `plan[t][i] == false` are detached in the forward pass and get a zero gradient;
    /// the remainder group `""` gets its true gradient whenever any backward pass runs.
    ZeroOnBlockSchedule {
        /// The group names (sorted, as the trainer's `groups()`).
        groups: Arc<[String]>,
        /// Per step, per group: whether its true gradient is computed.
        plan: Vec<Vec<bool>>,
    },
}

/// One evaluation point of a run.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Point {
    /// Optimizer steps taken.
    pub step: usize,
    /// Micro-batch backward passes so far.
    pub backward: usize,
    /// Training seconds so far (evaluation excluded).
    pub secs: f64,
    /// Held-out loss.
    pub loss: f64,
    /// Held-out metric.
    pub metric: f64,
}

/// The result of one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// Label.
    pub name: String,
    /// Learning rate used.
    pub lr: f64,
    /// Evaluation curve, the last point being the final state.
    pub curve: Vec<Point>,
    /// Micro-batch backward passes.
    pub backward: usize,
    /// Micro-batch forward passes.
    pub forward: usize,
    /// Training seconds (evaluation excluded).
    pub secs: f64,
    /// Trainer statistics line, where a trainer ran.
    pub stats: Option<String>,
    /// Bytes held by the method's own state (optimizer moments + predictor history).
    pub state_bytes: usize,
    /// A hash of the final weights (FNV-1a over the f32 bits in sorted-name order).
    pub weights_hash: u64,
    /// Whether each step ran a backward pass (the schedule a control can replay).
    pub schedule: Vec<bool>,
    /// Parameter groups of a per-block method (`[""]` otherwise).
    pub groups: Vec<String>,
    /// Per step, per group: whether that group's true gradient was computed.
    pub block_schedule: Vec<Vec<bool>>,
}

impl RunResult {
    /// The final point.
    pub fn last(&self) -> Point {
        *self
            .curve
            .last()
            .expect("a run has at least its final point")
    }

    /// First training time at which the held-out loss is at or below `target`.
    pub fn first_hit(&self, target: f64) -> Option<f64> {
        self.curve.iter().find(|p| p.loss <= target).map(|p| p.secs)
    }

    /// Training time from which the held-out loss stays at or below `target` to the end.
    pub fn sustained_hit(&self, target: f64) -> Option<f64> {
        let mut t = None;
        for p in &self.curve {
            if p.loss <= target {
                t.get_or_insert(p.secs);
            } else {
                t = None;
            }
        }
        t
    }

    /// The point at which at most `backward` backward passes had run (the compute-matched
    /// prefix of a plain run).
    pub fn at_backward(&self, backward: usize) -> Point {
        let mut best = self.curve[0];
        for p in &self.curve {
            if p.backward <= backward {
                best = *p;
            }
        }
        best
    }
}

/// Run settings shared by every method of a comparison.
#[derive(Debug, Clone, Copy)]
pub struct RunSettings {
    /// Optimizer steps.
    pub steps: usize,
    /// Base learning rate.
    pub lr: f64,
    /// Seed for weights and data order.
    pub seed: u64,
    /// Evaluate every this many steps.
    pub eval_every: usize,
}

/// True gradient of one optimizer step: the mean over the task's micro-batches.
/// Returns the gradients and the mean loss.
pub fn full_gradient(
    task: &dyn Task,
    model: &dyn Module,
    vars: &[candle_core::Var],
    step: usize,
    seed: u64,
) -> Result<(GradStore, f32)> {
    let k = task.micro_batches();
    if k == 1 {
        let loss = task.micro_loss(model, step, 0, seed)?;
        let l = loss.to_scalar::<f32>()?;
        return Ok((loss.backward()?, l));
    }
    let mut sums: Vec<Option<Tensor>> = vec![None; vars.len()];
    let mut total = 0f32;
    for j in 0..k {
        let loss = task.micro_loss(model, step, j, seed)?;
        total += loss.to_scalar::<f32>()?;
        let g = loss.backward()?;
        for (s, v) in sums.iter_mut().zip(vars) {
            if let Some(gv) = g.get(v.as_tensor()) {
                *s = Some(match s.take() {
                    None => gv.clone(),
                    Some(acc) => (acc + gv)?,
                });
            }
        }
    }
    let mut store = GradStore::default();
    for (s, v) in sums.into_iter().zip(vars) {
        if let Some(s) = s {
            store.insert(v.as_tensor(), (s / k as f64)?);
        }
    }
    Ok((store, total / k as f32))
}

/// FNV-1a over the f32 bits of `vars`, in order (the runs' final-weights fingerprint).
///
/// # Errors
/// Candle errors.
pub fn weights_hash(vars: &[candle_core::Var]) -> Result<u64> {
    let mut bytes = Vec::new();
    for v in vars {
        for x in v.as_tensor().flatten_all()?.to_vec1::<f32>()? {
            bytes.extend_from_slice(&x.to_bits().to_le_bytes());
        }
    }
    Ok(vsa_optim_rs::vsa_core::rng::fnv1a(bytes))
}

/// Trains `task` with `method` and returns its measured result.
///
/// # Errors
/// Candle and trainer errors.
pub fn run(
    task: &dyn Task,
    method: &Method,
    name: &str,
    lr: f64,
    s: RunSettings,
    mut progress: impl FnMut(usize),
) -> Result<RunResult> {
    let (varmap, model) = task.build(s.seed)?;
    let (_, vars) = ParamSet::from_varmap(&varmap)?;
    let params = ParamsAdamW {
        lr,
        ..ParamsAdamW::default()
    };
    let mut opt = AdamW::from_varmap(&varmap, params)?;
    let k = task.micro_batches();
    let config = match method {
        Method::Plain | Method::ZeroOnSchedule(_) | Method::ZeroOnBlockSchedule { .. } => None,
        Method::Trainer(c) | Method::TrainerWithForward(c) => Some((**c).clone()),
    };
    let mut trainer = match &config {
        Some(c) => Some(DeterministicPhaseTrainer::from_varmap(
            &varmap,
            c.clone(),
            &candle_core::Device::Cpu,
        )?),
        None => None,
    };
    let mut schedule = Vec::with_capacity(s.steps);
    let mut block_schedule = Vec::with_capacity(s.steps);
    let groups: Vec<String> = match (&trainer, method) {
        (Some(t), _) => t.groups().to_vec(),
        (None, Method::ZeroOnBlockSchedule { groups, .. }) => groups.to_vec(),
        _ => vec![String::new()],
    };
    let (mut backward, mut forward) = (0usize, 0usize);
    let mut secs = 0f64;
    let mut curve = Vec::new();
    let eval_point = |step, backward, secs, model: &dyn Module| -> Result<Point> {
        let (loss, metric) = task.eval(model)?;
        Ok(Point {
            step,
            backward,
            secs,
            loss,
            metric,
        })
    };
    curve.push(eval_point(0, 0, 0.0, model.as_ref())?);
    for step in 0..s.steps {
        let t0 = Instant::now();
        match (trainer.as_mut(), method) {
            (
                None,
                Method::ZeroOnBlockSchedule {
                    groups: names,
                    plan,
                },
            ) => {
                let mut flags = plan
                    .get(step)
                    .cloned()
                    .unwrap_or_else(|| vec![true; names.len()]);
                let any = flags.iter().any(|&f| f);
                for (f, n) in flags.iter_mut().zip(names.iter()) {
                    if n.is_empty() {
                        *f = any;
                    }
                }
                schedule.push(any);
                let mut g = GradStore::default();
                if any {
                    task.set_backward_plan(BackwardPlan::new(names.clone(), flags.clone())?)?;
                    let r = full_gradient(task, model.as_ref(), &vars, step, s.seed);
                    task.set_backward_plan(BackwardPlan::all())?;
                    g = r?.0;
                    backward += k;
                    forward += k;
                }
                block_schedule.push(flags);
                for v in &vars {
                    if g.get(v.as_tensor()).is_none() {
                        g.insert(v.as_tensor(), v.as_tensor().zeros_like()?);
                    }
                }
                opt.step(&g)?;
            }
            (None, _) => {
                let backward_step = match method {
                    Method::ZeroOnSchedule(plan) => plan.get(step).copied().unwrap_or(true),
                    _ => true,
                };
                schedule.push(backward_step);
                block_schedule.push(vec![backward_step]);
                if backward_step {
                    let (g, _) = full_gradient(task, model.as_ref(), &vars, step, s.seed)?;
                    backward += k;
                    forward += k;
                    opt.step(&g)?;
                } else {
                    let mut g = GradStore::default();
                    for v in &vars {
                        g.insert(v.as_tensor(), v.as_tensor().zeros_like()?);
                    }
                    opt.step(&g)?;
                }
            }
            (Some(tr), _) => {
                let info = tr.begin_step()?;
                let plan = tr.backward_plan();
                schedule.push(info.needs_backward);
                block_schedule.push(plan.flags().to_vec());
                if info.needs_backward {
                    // With per-group phases the predicting blocks' branches are detached, so
                    // backward skips them; their gradients come from the trainer.
                    let grouped = !plan.computes_all();
                    if grouped {
                        task.set_backward_plan(plan)?;
                    }
                    let r = full_gradient(task, model.as_ref(), &vars, step, s.seed);
                    if grouped {
                        task.set_backward_plan(BackwardPlan::all())?;
                    }
                    let (mut g, loss) = r?;
                    backward += k;
                    forward += k;
                    tr.record_grad_store(&varmap, &g)?;
                    tr.fill_predicted_grad_store(&varmap, &mut g)?;
                    opt.step(&g)?;
                    tr.end_step(loss)?;
                } else {
                    let mut loss = None;
                    match method {
                        Method::Trainer(_) => {
                            let g = tr.predicted_grad_store(&varmap)?;
                            opt.step(&g)?;
                        }
                        Method::TrainerWithForward(_) => {
                            let mut total = 0f32;
                            for j in 0..k {
                                total += task
                                    .micro_loss(model.as_ref(), step, j, s.seed)?
                                    .to_scalar::<f32>()?;
                            }
                            forward += k;
                            loss = Some(total / k as f32);
                            let g = tr.predicted_grad_store(&varmap)?;
                            opt.step(&g)?;
                        }
                        Method::Plain
                        | Method::ZeroOnSchedule(_)
                        | Method::ZeroOnBlockSchedule { .. } => {
                            return Err(candle_core::Error::Msg(
                                "internal: a trainer ran for a method without one".into(),
                            ));
                        }
                    }
                    match loss {
                        Some(l) => tr.end_step(l)?,
                        None => tr.end_step_without_loss()?,
                    }
                }
            }
        }
        secs += t0.elapsed().as_secs_f64();
        progress(step + 1);
        if (step + 1) % s.eval_every == 0 || step + 1 == s.steps {
            curve.push(eval_point(step + 1, backward, secs, model.as_ref())?);
        }
    }
    let state_bytes = opt.memory_bytes() + trainer.as_ref().map_or(0, |t| t.memory_bytes());
    Ok(RunResult {
        name: name.to_string(),
        lr,
        curve,
        backward,
        forward,
        secs,
        stats: trainer.as_ref().map(|t| t.get_stats().to_string()),
        state_bytes,
        weights_hash: weights_hash(&vars)?,
        schedule,
        groups,
        block_schedule,
    })
}

/// Convenience: the gradients of a `GradStore` as a name → tensor map for `varmap`.
///
/// # Errors
/// Candle errors, or a variable without a gradient.
pub fn grad_map(varmap: &VarMap, g: &GradStore) -> Result<HashMap<String, Tensor>> {
    let (set, vars) = ParamSet::from_varmap(varmap)?;
    let mut m = HashMap::new();
    for (spec, v) in set.specs().iter().zip(&vars) {
        let t = g
            .get(v.as_tensor())
            .ok_or_else(|| candle_core::Error::Msg(format!("no gradient for {}", spec.name)))?;
        m.insert(spec.name.clone(), t.clone());
    }
    Ok(m)
}
