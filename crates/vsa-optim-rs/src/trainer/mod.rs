//! [`DeterministicPhaseTrainer`]: the training loop of vsa-optim-rs 0.1.1 on candle, with
//! the predictor's history kept as tensors on the parameters' device.
//!
//! Each step the trainer asks its [`phase_scheduler::PhaseScheduler`] whether to run a backward pass. On
//! Warmup, Full and Correct steps the caller computes true gradients and records them; on
//! Predict steps the caller takes the predicted gradients instead (and may skip the forward
//! pass too). At Correct steps the trainer measures the prediction it would have made against
//! the truth (cosine and relative error over all parameters) and reports it to the scheduler,
//! which lengthens, shortens or abandons predict phases accordingly.
//!
//! **Where the work happens.** `grad-predict` stays the reference: a zero-length
//! [`GradientPredictor`] solves the scalars (history weights, fit, window coefficients) once
//! per step, and the trainer applies them to per-parameter tensors on the parameters' device
//! (see `device.rs`). With the default `LastGradient` model the history *is* the recorded
//! gradient tensor (a reference-counted clone), and a prediction is that tensor again.
//! Predicted steps move nothing between host and device; a backward step reads back one small
//! vector (a finiteness check per parameter, and at Correct steps the quality sums). On
//! `Device::Cpu` with f32 storage a fast path (`host.rs`) works on the tensors' slices in
//! single passes instead of chaining candle ops, and reads nothing back.
//!
//! **Per-group phases.** With `config.groups` (a [`phase_scheduler::GroupRule`]) the
//! parameters split into groups, each with its own scheduler and scalar fit (one per residual
//! block with `GroupRule::blocks("layers.")`). A step needs a backward pass when any group
//! needs its true gradient; [`BackwardPlan`] tells the model which branches to detach, the
//! computed groups' gradients are recorded, and
//! [`fill_predicted_grad_store`](DeterministicPhaseTrainer::fill_predicted_grad_store)
//! supplies the others. Correct steps measure each group's quality on its own parameters, so a
//! poorly predicted block goes back to Full alone. With one group (the default) everything is
//! as before, bit for bit, checkpoints included.
//!
//! Parameter identity is the sorted list of names; nothing depends on `HashMap` order.

mod checkpoint;
mod config;
mod device;
mod groups;
mod host;
mod record;

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use grad_predict::{GradientPredictor, PredictCoefficients, StatPrecision};
use phase_scheduler::{DeterministicPhase, GroupedScheduler, PhaseStats, StepInfo};
use serde::{Deserialize, Serialize};

pub use checkpoint::TrainerState;
pub use config::{DeterministicPhaseConfig, DeterministicPhaseConfigBuilder};
pub use groups::{BackwardPlan, GroupStats};

use crate::error::{Error, Result};
use crate::params::{ParamSet, check_tensor};
use device::History;

/// Statistics of a training run: the scheduler's counters plus the last measured
/// prediction quality. `speedup` is `total_steps / full_steps`: fewer backward passes, not
/// measured time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerStats {
    /// Steps begun and ended.
    pub total_steps: u64,
    /// Steps that ran a backward pass (warmup + full + correct).
    pub full_steps: u64,
    /// Steps that used a predicted gradient.
    pub predicted_steps: u64,
    /// `total_steps / full_steps` (1 when nothing has run): the reduction in backward passes.
    pub speedup: f64,
    /// Cosine between prediction and truth at the last Correct step, over all parameters.
    pub last_cosine: Option<f32>,
    /// Relative error `‖ĝ − g‖ / ‖g‖` at the last Correct step, over all parameters.
    pub last_relative_error: Option<f32>,
    /// The scheduler's full statistics.
    pub phases: PhaseStats,
}

impl std::fmt::Display for TrainerStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.phases)?;
        if let Some(c) = self.last_cosine {
            write!(f, "; last prediction cosine {c:.3}")?;
        }
        Ok(())
    }
}

/// Counters of the data the trainer moved between device and host, to show that predicted
/// steps move none (issue: "zero host transfers on predicted steps").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferStats {
    /// Read-backs of scalars (one small vector per backward step; none on the CPU fast
    /// path).
    pub scalar_readbacks: u64,
    /// Elements read back (the length of those vectors).
    pub scalar_elements: u64,
    /// Whole gradients copied between host and device (the `_host` API only).
    pub host_gradient_copies: u64,
}

/// Predicts gradients on Predict steps so that their backward passes can be skipped.
#[derive(Debug)]
pub struct DeterministicPhaseTrainer {
    params: ParamSet,
    device: Device,
    config: DeterministicPhaseConfig,
    /// One phase state per parameter group (one group unless `config.groups` splits them).
    scheduler: GroupedScheduler,
    /// The group index of each parameter (sorted-name order).
    member: Vec<usize>,
    /// The scalar reference of each group: a zero-length predictor with the trainer's
    /// predictor config, recording the steps at which that group's true gradient was taken.
    fits: Vec<GradientPredictor>,
    /// The group names, shared with every [`BackwardPlan`].
    group_names: std::sync::Arc<[String]>,
    history: Vec<History>,
    /// The variables of the `VarMap` the trainer serves, resolved once.
    vars: Option<Vec<Var>>,
    current: Option<StepInfo>,
    recorded: bool,
    /// This step's predictions (f32, on the device) for the parameters of the groups that
    /// predict, formed once per step.
    predicted: Option<Vec<Option<Tensor>>>,
    host_scratch: Vec<Vec<f32>>,
    /// Each group's last measured quality.
    last_quality: Vec<Option<(f32, f32)>>,
    /// The last quality measured in any group.
    last_reported: Option<(f32, f32)>,
    transfers: TransferStats,
    /// Test switch: use the tensor path even on the CPU.
    force_tensor_path: bool,
}

impl DeterministicPhaseTrainer {
    /// A trainer for the parameters `shapes` (`(name, shape)` in any order), keeping its
    /// history on `device`.
    ///
    /// # Errors
    /// An invalid config (see [`DeterministicPhaseConfig::validate`]), no parameters,
    /// duplicate names or empty shapes.
    pub fn new(
        shapes: &[(String, Vec<usize>)],
        config: DeterministicPhaseConfig,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let params = ParamSet::new(shapes)?;
        let names: Vec<String> = params.names();
        let groups = config.groups.assign(&names)?;
        let scheduler = GroupedScheduler::new(config.schedule(), groups.names())?;
        let fit = GradientPredictor::new(0, config.predictor())?;
        let fits = vec![fit; groups.len()];
        let window = match config.history_mode {
            grad_predict::HistoryMode::Window(w)
                if config.predictor_model != grad_predict::PredictorModel::LastGradient =>
            {
                w
            }
            _ => 0,
        };
        let history = (0..params.len()).map(|_| History::new(window)).collect();
        Ok(Self {
            params,
            device: device.clone(),
            config,
            scheduler,
            member: groups.members().to_vec(),
            group_names: groups.names().to_vec().into(),
            last_quality: vec![None; fits.len()],
            fits,
            history,
            vars: None,
            current: None,
            recorded: false,
            predicted: None,
            host_scratch: Vec::new(),
            last_reported: None,
            transfers: TransferStats::default(),
            force_tensor_path: false,
        })
    }

    /// A trainer for the float variables of `varmap` (identified by sorted name). The
    /// variables are resolved once; later calls that take a `VarMap` must pass this one
    /// (a changed `VarMap` is [`Error::VarMapChanged`]).
    ///
    /// # Errors
    /// As [`DeterministicPhaseTrainer::new`].
    pub fn from_varmap(
        varmap: &VarMap,
        config: DeterministicPhaseConfig,
        device: &Device,
    ) -> Result<Self> {
        let (set, vars) = ParamSet::from_varmap(varmap)?;
        let shapes: Vec<(String, Vec<usize>)> = set
            .specs()
            .iter()
            .map(|s| (s.name.clone(), s.shape.clone()))
            .collect();
        let mut t = Self::new(&shapes, config, device)?;
        t.vars = Some(vars);
        Ok(t)
    }

    /// The declared parameters, sorted by name.
    pub fn params(&self) -> &ParamSet {
        &self.params
    }

    /// The configuration.
    pub fn config(&self) -> &DeterministicPhaseConfig {
        &self.config
    }

    /// The device the history lives on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Testing only, not part of the stable API: `true` makes a CPU trainer use the generic
    /// tensor path instead of its CPU fast path (to check that both give the same results).
    #[doc(hidden)]
    pub fn set_force_tensor_path(&mut self, on: bool) {
        self.force_tensor_path = on;
    }

    /// Whether this trainer uses the CPU fast path (`host.rs`): a CPU device with f32
    /// history storage.
    fn cpu_fast(&self) -> bool {
        !self.force_tensor_path
            && self.device.is_cpu()
            && self.config.history_precision == StatPrecision::F32
    }

    /// Data moved between device and host so far.
    pub fn transfers(&self) -> TransferStats {
        self.transfers
    }

    /// Starts a step and says which phase it is in and whether it needs a backward pass.
    ///
    /// # Errors
    /// [`Error::InvalidState`] when the previous step was not ended.
    pub fn begin_step(&mut self) -> Result<StepInfo> {
        if self.current.is_some() {
            return Err(Error::InvalidState(
                "begin_step called twice without end_step".into(),
            ));
        }
        let info = self.scheduler.begin_step()?;
        self.current = Some(info);
        self.recorded = false;
        self.predicted = None;
        Ok(info)
    }

    /// What the next [`begin_step`](Self::begin_step) will return, without starting it.
    pub fn peek(&self) -> StepInfo {
        self.scheduler.peek()
    }

    fn current(&self) -> Result<StepInfo> {
        self.current
            .ok_or_else(|| Error::InvalidState("no step in progress: call begin_step".into()))
    }

    fn backward_step(&self, what: &str) -> Result<StepInfo> {
        let info = self.current()?;
        if !info.needs_backward {
            return Err(Error::InvalidState(format!(
                "{what} in a {:?} step: this step uses predicted gradients",
                info.phase
            )));
        }
        if self.recorded {
            return Err(Error::InvalidState(
                "gradients were already recorded in this step".into(),
            ));
        }
        Ok(info)
    }

    /// Resolves the variables of `varmap` on first use (cached), and checks on every later
    /// use, without sorting or cloning, that `varmap` still holds exactly those variables.
    fn bind(&mut self, varmap: &VarMap) -> Result<()> {
        if self.vars.is_none() {
            self.vars = Some(self.params.vars_matching(varmap)?);
        }
        let vars = self.vars.as_deref().unwrap_or_default();
        let data = varmap
            .data()
            .lock()
            .map_err(|_| Error::InvalidState("VarMap mutex is poisoned".into()))?;
        for (spec, var) in self.params.specs().iter().zip(vars) {
            match data.get(&spec.name) {
                Some(v) if v.as_tensor().id() == var.as_tensor().id() => {}
                _ => {
                    return Err(Error::VarMapChanged {
                        name: spec.name.clone(),
                    });
                }
            }
        }
        let floats = data.values().filter(|v| v.dtype().is_float()).count();
        if floats != vars.len() {
            let extra = data
                .iter()
                .filter(|(k, v)| v.dtype().is_float() && self.params.position(k).is_none())
                .map(|(k, _)| k.clone())
                .min()
                .unwrap_or_default();
            return Err(Error::VarMapChanged { name: extra });
        }
        Ok(())
    }

    /// Whether parameter `i` (sorted order) gets its true gradient in the step in progress.
    fn computed(&self, i: usize) -> bool {
        self.scheduler.needs_backward(self.member[i])
    }

    /// Records the true gradients of a Warmup, Full or Correct step. At a Correct step this
    /// also measures the prediction against the truth and reports it to the scheduler.
    /// Gradients may be f32, bf16 or f16, on the trainer's device.
    ///
    /// With several parameter groups (`config.groups`), the map must hold the gradients of
    /// every group that [`backward_plan`](Self::backward_plan) computes this step; gradients
    /// of the groups that predict may be present (they are checked and ignored) or absent.
    ///
    /// # Errors
    /// [`Error::InvalidState`] outside a backward step or when called twice in a step; map
    /// validation errors (unknown, missing, shape, dtype), [`Error::DeviceMismatch`],
    /// [`Error::NonFiniteGradient`]. On error nothing changes.
    pub fn record_full_gradients(&mut self, gradients: &HashMap<String, Tensor>) -> Result<()> {
        let info = self.backward_step("record_full_gradients")?;
        let mut unknown: Vec<&String> = gradients
            .keys()
            .filter(|k| self.params.position(k).is_none())
            .collect();
        unknown.sort();
        if let Some(name) = unknown.first() {
            return Err(Error::UnknownParameter {
                name: (*name).clone(),
            });
        }
        let mut grads = Vec::with_capacity(self.params.len());
        for (i, spec) in self.params.specs().iter().enumerate() {
            match gradients.get(&spec.name) {
                Some(t) => check_tensor(spec, t)?,
                None if self.computed(i) => {
                    return Err(Error::MissingParameter {
                        name: spec.name.clone(),
                    });
                }
                None => {}
            }
            grads.push(
                gradients
                    .get(&spec.name)
                    .filter(|_| self.computed(i))
                    .cloned(),
            );
        }
        self.record_tensors(info, &grads)
    }

    /// Records the true gradients held in a `GradStore` for the variables of `varmap`.
    /// With several groups, only the variables of the groups computed this step need a
    /// gradient (the others' entries, if any, are ignored).
    ///
    /// # Errors
    /// As [`DeterministicPhaseTrainer::record_full_gradients`]; a variable without a gradient
    /// is [`Error::MissingParameter`]; a `VarMap` other than the one first used is
    /// [`Error::VarMapChanged`].
    pub fn record_grad_store(&mut self, varmap: &VarMap, grads: &GradStore) -> Result<()> {
        let info = self.backward_step("record_grad_store")?;
        self.bind(varmap)?;
        let vars = self.vars.as_deref().unwrap_or_default();
        let mut list = Vec::with_capacity(vars.len());
        for (i, (spec, var)) in self.params.specs().iter().zip(vars).enumerate() {
            if !self.computed(i) {
                list.push(None);
                continue;
            }
            let g = grads
                .get(var.as_tensor())
                .ok_or_else(|| Error::MissingParameter {
                    name: spec.name.clone(),
                })?;
            check_tensor(spec, g)?;
            list.push(Some(g.clone()));
        }
        self.record_tensors(info, &list)
    }

    /// Records true gradients given on the host, one `Vec<f32>` per parameter in sorted-name
    /// order (see [`DeterministicPhaseTrainer::params`]): the form a data-parallel exchange
    /// returns. They are copied to the device once. Same rules as
    /// [`DeterministicPhaseTrainer::record_full_gradients`]; with several groups the vectors
    /// of the groups that predict this step are ignored.
    ///
    /// # Errors
    /// [`Error::InvalidState`] outside a backward step or when called twice in a step;
    /// [`Error::ShapeMismatch`] for a wrong count or length; [`Error::NonFiniteGradient`].
    /// On error nothing changes.
    pub fn record_full_host(&mut self, gradients: &[Vec<f32>]) -> Result<()> {
        let info = self.backward_step("record_full_host")?;
        let map = self.params.from_host_f32(gradients, &self.device)?;
        let list: Vec<Option<Tensor>> = self
            .params
            .specs()
            .iter()
            .enumerate()
            .map(|(i, s)| self.computed(i).then(|| map[&s.name].clone()))
            .collect();
        self.transfers.host_gradient_copies += 1;
        self.record_tensors(info, &list)
    }

    /// This step's predictions (f32, on the device) for the parameters whose group predicts,
    /// formed once. `whole`: the step must be a Predict step for every group.
    fn predictions(&mut self, whole: bool) -> Result<&[Option<Tensor>]> {
        let info = self.current()?;
        if whole && info.phase != DeterministicPhase::Predict {
            return Err(Error::InvalidState(format!(
                "predicted gradients asked for in a {:?} step",
                info.phase
            )));
        }
        if self.predicted.is_none() {
            let coeffs = self
                .scheduler
                .group_steps()
                .iter()
                .zip(&self.fits)
                .map(|(st, fit)| {
                    (st.phase == DeterministicPhase::Predict)
                        .then(|| fit.predict_coefficients(info.step))
                        .transpose()
                })
                .collect::<std::result::Result<Vec<Option<PredictCoefficients>>, _>>()?;
            let fast = self.cpu_fast();
            let p = self
                .history
                .iter()
                .zip(&self.member)
                .map(|(h, &g)| {
                    coeffs[g]
                        .as_ref()
                        .map(|c| {
                            if fast {
                                h.prediction_cpu(c)
                            } else {
                                h.prediction(c)
                            }
                        })
                        .transpose()
                })
                .collect::<Result<Vec<_>>>()?;
            self.predicted = Some(p);
        }
        Ok(self.predicted.as_deref().unwrap_or_default())
    }

    /// The predicted gradients of this Predict step copied to the host, in sorted-name order.
    ///
    /// # Errors
    /// [`Error::InvalidState`] outside a Predict step (of every group).
    pub fn predicted_host(&mut self) -> Result<&[Vec<f32>]> {
        let host = self
            .predictions(true)?
            .iter()
            .flatten()
            .map(|t| Ok(t.flatten_all()?.to_vec1::<f32>()?))
            .collect::<Result<Vec<_>>>()?;
        self.transfers.host_gradient_copies += 1;
        self.host_scratch = host;
        Ok(&self.host_scratch)
    }

    /// The predicted gradients for this Predict step, as f32 tensors on the trainer's device.
    ///
    /// # Errors
    /// [`Error::InvalidState`] outside a Predict step (of every group).
    pub fn get_predicted_gradients(&mut self) -> Result<HashMap<String, Tensor>> {
        let mut map = HashMap::with_capacity(self.params.len());
        self.fill_predicted_gradients_inner(&mut map, true)?;
        Ok(map)
    }

    /// Inserts into `gradients` the predicted gradient of every parameter whose group
    /// predicts in the step in progress (replacing what is there), and leaves the others: with
    /// per-group phases, the true gradients of the computed groups plus these form the full
    /// update. In a step where no group predicts it inserts nothing.
    ///
    /// # Errors
    /// [`Error::InvalidState`] without a step in progress. On error `gradients` is unchanged.
    pub fn fill_predicted_gradients(
        &mut self,
        gradients: &mut HashMap<String, Tensor>,
    ) -> Result<()> {
        self.fill_predicted_gradients_inner(gradients, false)
    }

    fn fill_predicted_gradients_inner(
        &mut self,
        gradients: &mut HashMap<String, Tensor>,
        whole: bool,
    ) -> Result<()> {
        let p = self.predictions(whole)?.to_vec();
        for (s, t) in self.params.specs().iter().zip(p) {
            if let Some(t) = t {
                gradients.insert(s.name.clone(), t);
            }
        }
        Ok(())
    }

    /// The predicted gradients as a `GradStore` keyed by the variables of `varmap`, ready for
    /// any `candle_nn::Optimizer::step`: device tensors in each variable's dtype.
    ///
    /// # Errors
    /// [`Error::InvalidState`] outside a Predict step (of every group);
    /// [`Error::UnknownParameter`] / [`Error::MissingParameter`] / [`Error::ShapeMismatch`]
    /// when `varmap` does not hold exactly the trainer's parameters; [`Error::VarMapChanged`]
    /// for a `VarMap` other than the one first used.
    pub fn predicted_grad_store(&mut self, varmap: &VarMap) -> Result<GradStore> {
        let mut store = GradStore::default();
        self.fill_store(varmap, &mut store, true)?;
        Ok(store)
    }

    /// Inserts into `grads` the predicted gradient of every variable whose group predicts in
    /// the step in progress (in the variable's dtype, replacing what is there): after
    /// `loss.backward()` with the predicting groups' branches detached (see
    /// [`BackwardPlan`]), this completes the store for `opt.step(&grads)`. In a step where no
    /// group predicts it inserts nothing.
    ///
    /// # Errors
    /// [`Error::InvalidState`] without a step in progress; `VarMap` errors as
    /// [`predicted_grad_store`](Self::predicted_grad_store). On error `grads` is unchanged.
    pub fn fill_predicted_grad_store(
        &mut self,
        varmap: &VarMap,
        grads: &mut GradStore,
    ) -> Result<()> {
        self.fill_store(varmap, grads, false)
    }

    fn fill_store(&mut self, varmap: &VarMap, store: &mut GradStore, whole: bool) -> Result<()> {
        self.bind(varmap)?;
        let vars = self.vars.clone().unwrap_or_default();
        let preds = self.predictions(whole)?;
        let mut typed = Vec::with_capacity(vars.len());
        for (var, p) in vars.iter().zip(preds) {
            if let Some(p) = p {
                typed.push((var, p.to_dtype(var.dtype())?));
            }
        }
        for (var, p) in typed {
            store.insert(var.as_tensor(), p);
        }
        Ok(())
    }

    /// Ends the step with its loss. A NaN or Inf loss is recorded by the scheduler, which
    /// switches to Full steps at once (see `phase-scheduler`); it is never averaged.
    ///
    /// # Errors
    /// [`Error::InvalidState`] without a step in progress, or when a backward step ends
    /// without recorded gradients.
    pub fn end_step(&mut self, loss: f32) -> Result<()> {
        let info = self.current()?;
        if info.needs_backward && !self.recorded {
            return Err(Error::InvalidState(format!(
                "a {:?} step must record its gradients before end_step",
                info.phase
            )));
        }
        self.scheduler.end_step(loss)?;
        self.current = None;
        self.predicted = None;
        Ok(())
    }

    /// Ends a Predict step whose forward pass was skipped, so it has no loss.
    ///
    /// # Errors
    /// [`Error::InvalidState`] without a step in progress or outside a Predict step (of
    /// every group).
    pub fn end_step_without_loss(&mut self) -> Result<()> {
        let info = self.current()?;
        if info.needs_backward {
            return Err(Error::InvalidState(format!(
                "end_step_without_loss in a {:?} step, which needs its loss",
                info.phase
            )));
        }
        self.scheduler.end_step_without_loss()?;
        self.current = None;
        self.predicted = None;
        Ok(())
    }

    /// Statistics so far. With several groups, `full_steps` counts the steps in which any
    /// group ran backward, `predicted_steps` those in which every group predicted, the last
    /// quality is the last one measured in any group, and `phases` holds the first group's
    /// statistics (see [`group_stats`](Self::group_stats) for every group's).
    pub fn get_stats(&self) -> TrainerStats {
        let p = self.scheduler.stats().clone();
        let (full, predicted) = (
            self.scheduler.backward_steps(),
            self.scheduler.predicted_steps(),
        );
        let total = full + predicted;
        TrainerStats {
            total_steps: total,
            full_steps: full,
            predicted_steps: predicted,
            speedup: if full == 0 {
                1.0
            } else {
                total as f64 / full as f64
            },
            last_cosine: self.last_reported.map(|q| q.0),
            last_relative_error: self.last_reported.map(|q| q.1),
            phases: p,
        }
    }

    /// Bytes held by the predictor's history tensors (including a recorded gradient that
    /// the history shares with the caller).
    pub fn memory_bytes(&self) -> usize {
        self.history.iter().map(History::bytes).sum()
    }
}
