//! [`DeterministicPhaseTrainer`]: the seed's training loop on candle.
//!
//! Each step the trainer asks its [`PhaseScheduler`] whether to run a backward pass. On
//! Warmup, Full and Correct steps the caller computes true gradients and records them; on
//! Predict steps the caller takes the predicted gradients instead (and may skip the forward
//! pass too). At Correct steps the trainer measures the prediction it would have made against
//! the truth (cosine and relative error over all parameters) and reports it to the scheduler,
//! which lengthens, shortens or abandons predict phases accordingly.
//!
//! Parameter identity is the sorted list of names; nothing depends on `HashMap` order.
//! On the CPU the per-element work runs in the `grad-predict` slice kernels.

use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use grad_predict::{GradientPredictor, PredictorConfig};
use phase_scheduler::{
    DeterministicPhase, DeterministicPhaseConfig, PhaseScheduler, PhaseStats, QualityReport,
    StepInfo,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::params::ParamSet;

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

/// The predictor configuration implied by a phase configuration.
pub fn predictor_config(config: &DeterministicPhaseConfig) -> PredictorConfig {
    PredictorConfig {
        model: config.predictor_model,
        history: match config.history_mode {
            grad_predict::HistoryMode::Window(_) => {
                grad_predict::HistoryMode::Window(config.history_window)
            }
            m => m,
        },
        decay: config.history_decay,
        residual_threshold: config.residual_threshold,
        ..PredictorConfig::default()
    }
}

/// Predicts gradients on Predict steps so that their backward passes can be skipped.
#[derive(Debug)]
pub struct DeterministicPhaseTrainer {
    params: ParamSet,
    device: Device,
    scheduler: PhaseScheduler,
    predictors: Vec<GradientPredictor>,
    scratch: Vec<Vec<f32>>,
    current: Option<StepInfo>,
    recorded: bool,
    last_quality: Option<(f32, f32)>,
}

impl DeterministicPhaseTrainer {
    /// A trainer for the parameters `shapes` (`(name, shape)` in any order).
    ///
    /// # Errors
    /// An invalid config ([`Error::InvalidConfig`] via the scheduler and predictor), no
    /// parameters, duplicate names or empty shapes.
    pub fn new(
        shapes: &[(String, Vec<usize>)],
        config: DeterministicPhaseConfig,
        device: &Device,
    ) -> Result<Self> {
        let params = ParamSet::new(shapes)?;
        let pconf = predictor_config(&config);
        let scheduler = PhaseScheduler::new(config).map_err(scheduler_error)?;
        let predictors = params
            .specs()
            .iter()
            .map(|s| GradientPredictor::new(s.numel(), pconf).map_err(predict_error))
            .collect::<Result<Vec<_>>>()?;
        let scratch = params
            .specs()
            .iter()
            .map(|s| vec![0.0; s.numel()])
            .collect();
        Ok(Self {
            params,
            device: device.clone(),
            scheduler,
            predictors,
            scratch,
            current: None,
            recorded: false,
            last_quality: None,
        })
    }

    /// A trainer for the float variables of `varmap` (identified by sorted name).
    ///
    /// # Errors
    /// As [`DeterministicPhaseTrainer::new`].
    pub fn from_varmap(
        varmap: &VarMap,
        config: DeterministicPhaseConfig,
        device: &Device,
    ) -> Result<Self> {
        Self::new(&ParamSet::varmap_shapes(varmap)?, config, device)
    }

    /// The declared parameters, sorted by name.
    pub fn params(&self) -> &ParamSet {
        &self.params
    }

    /// The configuration.
    pub fn config(&self) -> &DeterministicPhaseConfig {
        self.scheduler.config()
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
        let info = self.scheduler.begin_step().map_err(scheduler_error)?;
        self.current = Some(info);
        self.recorded = false;
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

    /// Records the true gradients of a Warmup, Full or Correct step. At a Correct step this
    /// also measures the prediction against the truth and reports it to the scheduler.
    ///
    /// # Errors
    /// [`Error::InvalidState`] outside a backward step or when called twice in a step; map
    /// validation errors (unknown, missing, shape, dtype) and [`Error::NonFiniteGradient`].
    /// On error nothing changes.
    pub fn record_full_gradients(&mut self, gradients: &HashMap<String, Tensor>) -> Result<()> {
        let info = self.current()?;
        if !info.needs_backward {
            return Err(Error::InvalidState(format!(
                "record_full_gradients in a {:?} step: this step uses predicted gradients",
                info.phase
            )));
        }
        if self.recorded {
            return Err(Error::InvalidState(
                "gradients were already recorded in this step".into(),
            ));
        }
        let host = self.params.to_host_f32(gradients)?;
        self.record_host(info, &host)
    }

    /// Records the true gradients held in a `GradStore` for the variables of `varmap`.
    ///
    /// # Errors
    /// As [`DeterministicPhaseTrainer::record_full_gradients`]; a variable without a gradient
    /// is [`Error::MissingParameter`].
    pub fn record_grad_store(&mut self, varmap: &VarMap, grads: &GradStore) -> Result<()> {
        let (map, _) = self.params.grad_store_map(varmap, grads)?;
        self.record_full_gradients(&map)
    }

    /// Records true gradients given on the host, one `Vec<f32>` per parameter in sorted-name
    /// order (see [`DeterministicPhaseTrainer::params`]): the form a data-parallel exchange
    /// returns. Same rules as [`DeterministicPhaseTrainer::record_full_gradients`].
    ///
    /// # Errors
    /// [`Error::InvalidState`] outside a backward step or when called twice in a step;
    /// [`Error::ShapeMismatch`] for a wrong count or length; [`Error::NonFiniteGradient`].
    /// On error nothing changes.
    pub fn record_full_host(&mut self, gradients: &[Vec<f32>]) -> Result<()> {
        let info = self.current()?;
        if !info.needs_backward {
            return Err(Error::InvalidState(format!(
                "record_full_host in a {:?} step: this step uses predicted gradients",
                info.phase
            )));
        }
        if self.recorded {
            return Err(Error::InvalidState(
                "gradients were already recorded in this step".into(),
            ));
        }
        let specs = self.params.specs();
        if gradients.len() != specs.len() {
            return Err(Error::ShapeMismatch {
                name: "<parameter list>".into(),
                expected: vec![specs.len()],
                actual: vec![gradients.len()],
            });
        }
        for (s, g) in specs.iter().zip(gradients) {
            if g.len() != s.numel() {
                return Err(Error::ShapeMismatch {
                    name: s.name.clone(),
                    expected: s.shape.clone(),
                    actual: vec![g.len()],
                });
            }
            if !g.iter().all(|x| x.is_finite()) {
                return Err(Error::NonFiniteGradient {
                    name: s.name.clone(),
                });
            }
        }
        self.record_host(info, gradients)
    }

    /// The predicted gradients of this Predict step on the host, in sorted-name order.
    ///
    /// # Errors
    /// [`Error::InvalidState`] outside a Predict step.
    pub fn predicted_host(&mut self) -> Result<&[Vec<f32>]> {
        self.predict_host()?;
        Ok(&self.scratch)
    }

    fn record_host(&mut self, info: StepInfo, host: &[Vec<f32>]) -> Result<()> {
        let step = info.step;
        if info.phase == DeterministicPhase::Correct && self.predictors[0].samples() > 0 {
            let (mut dot, mut pp, mut gg, mut ee) = (0f64, 0f64, 0f64, 0f64);
            for ((p, buf), g) in self.predictors.iter().zip(&mut self.scratch).zip(host) {
                p.predict_into(step, buf).map_err(predict_error)?;
                for (&a, &b) in buf.iter().zip(g) {
                    let (a, b) = (f64::from(a), f64::from(b));
                    dot += a * b;
                    pp += a * a;
                    gg += b * b;
                    ee += (a - b) * (a - b);
                }
            }
            let cosine = if pp > 0.0 && gg > 0.0 {
                (dot / (pp.sqrt() * gg.sqrt())) as f32
            } else if pp == 0.0 && gg == 0.0 {
                1.0
            } else {
                0.0
            };
            let relative_error = if gg > 0.0 {
                (ee / gg).sqrt() as f32
            } else if ee == 0.0 {
                0.0
            } else {
                f32::MAX
            };
            for (p, g) in self.predictors.iter_mut().zip(host) {
                p.record_correction(step, g).map_err(predict_error)?;
            }
            self.scheduler
                .report_quality(QualityReport {
                    cosine,
                    relative_error,
                })
                .map_err(scheduler_error)?;
            self.last_quality = Some((cosine, relative_error));
        } else {
            for (p, g) in self.predictors.iter_mut().zip(host) {
                p.record(step, g).map_err(predict_error)?;
            }
        }
        self.recorded = true;
        Ok(())
    }

    fn predict_host(&mut self) -> Result<()> {
        let info = self.current()?;
        if info.phase != DeterministicPhase::Predict {
            return Err(Error::InvalidState(format!(
                "predicted gradients asked for in a {:?} step",
                info.phase
            )));
        }
        for (p, buf) in self.predictors.iter().zip(&mut self.scratch) {
            p.predict_into(info.step, buf).map_err(predict_error)?;
        }
        Ok(())
    }

    /// The predicted gradients for this Predict step, as f32 tensors on the trainer's device.
    ///
    /// # Errors
    /// [`Error::InvalidState`] outside a Predict step.
    pub fn get_predicted_gradients(&mut self) -> Result<HashMap<String, Tensor>> {
        self.predict_host()?;
        self.params.from_host_f32(&self.scratch, &self.device)
    }

    /// The predicted gradients as a `GradStore` keyed by the variables of `varmap`, ready for
    /// any `candle_nn::Optimizer::step`.
    ///
    /// # Errors
    /// [`Error::InvalidState`] outside a Predict step; [`Error::UnknownParameter`] /
    /// [`Error::MissingParameter`] / [`Error::ShapeMismatch`] when `varmap` does not hold
    /// exactly the trainer's parameters.
    pub fn predicted_grad_store(&mut self, varmap: &VarMap) -> Result<GradStore> {
        let vars = self.params.vars_matching(varmap)?;
        self.predict_host()?;
        let mut store = GradStore::default();
        for ((spec, var), buf) in self.params.specs().iter().zip(&vars).zip(&self.scratch) {
            let t = Tensor::from_slice(buf.as_slice(), spec.shape.as_slice(), &self.device)?
                .to_dtype(var.dtype())?;
            store.insert(var.as_tensor(), t);
        }
        Ok(store)
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
        self.scheduler.end_step(loss).map_err(scheduler_error)?;
        self.current = None;
        Ok(())
    }

    /// Ends a Predict step whose forward pass was skipped, so it has no loss.
    ///
    /// # Errors
    /// [`Error::InvalidState`] without a step in progress or outside a Predict step.
    pub fn end_step_without_loss(&mut self) -> Result<()> {
        let info = self.current()?;
        if info.needs_backward {
            return Err(Error::InvalidState(format!(
                "end_step_without_loss in a {:?} step, which needs its loss",
                info.phase
            )));
        }
        self.scheduler
            .end_step_without_loss()
            .map_err(scheduler_error)?;
        self.current = None;
        Ok(())
    }

    /// Statistics so far.
    pub fn get_stats(&self) -> TrainerStats {
        let p = self.scheduler.stats().clone();
        TrainerStats {
            total_steps: p.total_steps,
            full_steps: p.full_steps,
            predicted_steps: p.predicted_steps,
            speedup: p.speedup(),
            last_cosine: self.last_quality.map(|q| q.0),
            last_relative_error: self.last_quality.map(|q| q.1),
            phases: p,
        }
    }

    /// Bytes held by the predictors' histories.
    pub fn memory_bytes(&self) -> usize {
        self.predictors.iter().map(|p| p.memory_bytes()).sum()
    }

    /// Writes the whole trainer state to `path` (JSON: scheduler, counters, predictor
    /// histories). Call it between steps.
    ///
    /// # Errors
    /// [`Error::InvalidState`] during a step; I/O errors.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        std::fs::write(path, self.state_bytes()?)?;
        Ok(())
    }

    /// The bytes [`DeterministicPhaseTrainer::save`] writes (JSON).
    ///
    /// # Errors
    /// [`Error::InvalidState`] during a step.
    pub fn state_bytes(&self) -> Result<Vec<u8>> {
        if self.current.is_some() {
            return Err(Error::InvalidState(
                "save called during a step: call it between end_step and begin_step".into(),
            ));
        }
        let state = Checkpoint {
            version: 1,
            names: self.params.specs().iter().map(|s| s.name.clone()).collect(),
            shapes: self
                .params
                .specs()
                .iter()
                .map(|s| s.shape.clone())
                .collect(),
            scheduler: serde_json::to_value(&self.scheduler)?,
            predictors: self.predictors.clone(),
            last_quality: self.last_quality,
        };
        Ok(serde_json::to_vec(&state)?)
    }

    /// A 64-bit FNV-1a digest of [`DeterministicPhaseTrainer::state_bytes`]: equal digests
    /// mean equal scheduler and predictor states (used to check that data-parallel ranks
    /// stay identical).
    ///
    /// # Errors
    /// As [`DeterministicPhaseTrainer::state_bytes`].
    pub fn state_digest(&self) -> Result<u64> {
        Ok(vsa_core::rng::fnv1a(self.state_bytes()?))
    }

    /// Restores a state written by [`DeterministicPhaseTrainer::save`] into a trainer built
    /// for the same parameters. On error nothing changes.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] when the parameters differ; I/O and JSON errors.
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let state: Checkpoint = serde_json::from_slice(&std::fs::read(path)?)?;
        let names: Vec<String> = self.params.specs().iter().map(|s| s.name.clone()).collect();
        let shapes: Vec<Vec<usize>> = self
            .params
            .specs()
            .iter()
            .map(|s| s.shape.clone())
            .collect();
        if state.names != names || state.shapes != shapes {
            return Err(Error::Checkpoint(format!(
                "checkpoint parameters {:?} {:?} differ from the trainer's {:?} {:?}",
                state.names, state.shapes, names, shapes
            )));
        }
        let scheduler: PhaseScheduler = serde_json::from_value(state.scheduler)?;
        let mut predictors = Vec::with_capacity(self.predictors.len());
        if state.predictors.len() != self.predictors.len() {
            return Err(Error::Checkpoint(format!(
                "checkpoint holds {} predictors, the trainer {}",
                state.predictors.len(),
                self.predictors.len()
            )));
        }
        for (p, q) in self.predictors.iter().zip(state.predictors) {
            q.check_state().map_err(predict_error)?;
            if q.len() != p.len() || q.config() != p.config() {
                return Err(Error::Checkpoint(
                    "a predictor's length or config differs from the trainer's".into(),
                ));
            }
            predictors.push(q);
        }
        self.scheduler = scheduler;
        self.predictors = predictors;
        self.last_quality = state.last_quality;
        self.current = None;
        self.recorded = false;
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct Checkpoint {
    version: u32,
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    scheduler: serde_json::Value,
    predictors: Vec<GradientPredictor>,
    last_quality: Option<(f32, f32)>,
}

fn scheduler_error(e: phase_scheduler::Error) -> Error {
    Error::Scheduler(e)
}

fn predict_error(e: grad_predict::Error) -> Error {
    Error::Predict(e)
}
