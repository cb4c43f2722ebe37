//! Trainer checkpoints: one safetensors file. The history tensors are its tensors (named
//! `{parameter index}.a`, `.b`, `.slot{j}`, `.r`); the scheduler, the scalar fit, the config
//! and the counters are JSON in the header's metadata (key [`METADATA_KEY`]), with a
//! `version` that [`DeterministicPhaseTrainer::load`] checks.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use grad_predict::GradientPredictor;
use phase_scheduler::{GroupedScheduler, PhaseScheduler};
use serde::{Deserialize, Serialize};

use super::device::{History, store_dtype};
use super::{DeterministicPhaseConfig, DeterministicPhaseTrainer};
use crate::error::{Error, Result};

/// The current checkpoint format. Version 1 was JSON with per-parameter predictors.
pub const CHECKPOINT_VERSION: u32 = 2;

/// The safetensors metadata key that holds the trainer's JSON header.
pub const METADATA_KEY: &str = "vsa-optim-rs.trainer";

#[derive(Serialize, Deserialize)]
struct Header {
    version: u32,
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    config: DeterministicPhaseConfig,
    scheduler: PhaseScheduler,
    fit: GradientPredictor,
    /// Per parameter: (residual active, residual ratio).
    residual: Vec<(bool, f32)>,
    last_quality: Option<(f32, f32)>,
    /// With several parameter groups: every group's state (`scheduler`, `fit` and
    /// `last_quality` above then hold the first group's). Absent with one group, so that a
    /// one-group checkpoint is unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    groups: Option<GroupsHeader>,
}

#[derive(Serialize, Deserialize)]
struct GroupsHeader {
    scheduler: GroupedScheduler,
    fits: Vec<GradientPredictor>,
    last_quality: Vec<Option<(f32, f32)>>,
    last_reported: Option<(f32, f32)>,
}

fn bad(reason: impl Into<String>) -> Error {
    Error::Checkpoint(reason.into())
}

/// A trainer snapshot ([`DeterministicPhaseTrainer::state`]): the bytes of the checkpoint
/// file, held in memory. The history lives as tensors on the trainer's device, in its
/// storage dtype, so the snapshot is the safetensors file itself (its tensors are the
/// history, its header the scheduler, the scalar fits, the config and the parameter names
/// and shapes); it serialises as those bytes. See [`crate::checkpoint`] for the pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainerState {
    bytes: Vec<u8>,
}

impl TrainerState {
    /// The checkpoint file's bytes (what [`DeterministicPhaseTrainer::save`] writes).
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// A snapshot from a checkpoint file's bytes. Checks the key, the format version and
    /// the layout now; the rest is checked by [`DeterministicPhaseTrainer::from_state`] or
    /// [`DeterministicPhaseTrainer::restore`].
    ///
    /// # Errors
    /// [`Error::Checkpoint`] for bytes that are not a trainer checkpoint of this version.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        let _: (Header, _) = crate::checkpoint::open(&bytes, METADATA_KEY, CHECKPOINT_VERSION)?;
        Ok(Self { bytes })
    }
}

impl DeterministicPhaseTrainer {
    /// A snapshot of the whole trainer state (see [`TrainerState`]). Call it between steps.
    ///
    /// # Errors
    /// As [`state_bytes`](Self::state_bytes).
    pub fn state(&self) -> Result<TrainerState> {
        Ok(TrainerState {
            bytes: self.state_bytes()?,
        })
    }

    /// Builds a trainer on `device` from a snapshot: [`new`](Self::new) with the snapshot's
    /// parameters and config, then [`restore`](Self::restore).
    ///
    /// # Errors
    /// As [`new`](Self::new) and [`restore`](Self::restore).
    pub fn from_state(state: &TrainerState, device: &Device) -> Result<Self> {
        let (header, _): (Header, _) =
            crate::checkpoint::open(&state.bytes, METADATA_KEY, CHECKPOINT_VERSION)?;
        let shapes = crate::checkpoint::named_shapes("trainer", &header.names, &header.shapes)?;
        let mut trainer = Self::new(&shapes, header.config, device)?;
        trainer.restore(state)?;
        Ok(trainer)
    }

    /// Puts a snapshot back into this trainer, which must have the same parameters and
    /// config ([`load_bytes`](Self::load_bytes) of the snapshot's bytes). On error nothing
    /// changes.
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub fn restore(&mut self, state: &TrainerState) -> Result<()> {
        self.load_bytes(&state.bytes)
    }
}

impl DeterministicPhaseTrainer {
    /// Writes the whole trainer state to `path` (see [`state_bytes`](Self::state_bytes)).
    /// Call it between steps.
    ///
    /// # Errors
    /// [`Error::InvalidState`] during a step; I/O errors.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        std::fs::write(path, self.state_bytes()?)?;
        Ok(())
    }

    /// The bytes [`save`](Self::save) writes: a safetensors file whose tensors are the
    /// history (copied to the host) and whose metadata holds the rest as JSON.
    ///
    /// # Errors
    /// [`Error::InvalidState`] during a step.
    pub fn state_bytes(&self) -> Result<Vec<u8>> {
        if self.current.is_some() {
            return Err(Error::InvalidState(
                "save called during a step: call it between end_step and begin_step".into(),
            ));
        }
        let header = Header {
            version: CHECKPOINT_VERSION,
            names: self.params.names(),
            shapes: self.params.shapes(),
            config: self.config.clone(),
            scheduler: self
                .scheduler
                .group(0)
                .cloned()
                .ok_or_else(|| bad("a trainer without groups"))?,
            fit: self.fits[0].clone(),
            residual: self
                .history
                .iter()
                .map(|h| (h.residual_active, h.residual_ratio))
                .collect(),
            last_quality: self.last_quality[0],
            groups: (self.fits.len() > 1).then(|| GroupsHeader {
                scheduler: self.scheduler.clone(),
                fits: self.fits.clone(),
                last_quality: self.last_quality.clone(),
                last_reported: self.last_reported,
            }),
        };
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        for (i, h) in self.history.iter().enumerate() {
            let mut put = |name: String, t: &Option<Tensor>| -> Result<()> {
                if let Some(t) = t {
                    tensors.push((name, t.to_device(&Device::Cpu)?));
                }
                Ok(())
            };
            put(format!("{i}.a"), &h.a)?;
            put(format!("{i}.b"), &h.b)?;
            put(format!("{i}.r"), &h.residual)?;
            for (j, s) in h.slots.iter().enumerate() {
                put(format!("{i}.slot{j}"), s)?;
            }
        }
        let meta = HashMap::from([(METADATA_KEY.to_string(), serde_json::to_string(&header)?)]);
        safetensors::tensor::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(meta))
            .map_err(|e| bad(format!("safetensors: {e}")))
    }

    /// A 64-bit FNV-1a digest of [`state_bytes`](Self::state_bytes): equal digests mean
    /// equal scheduler and predictor states (used to check that data-parallel ranks stay
    /// identical).
    ///
    /// # Errors
    /// As [`state_bytes`](Self::state_bytes).
    pub fn state_digest(&self) -> Result<u64> {
        Ok(vsa_core::rng::fnv1a(self.state_bytes()?))
    }

    /// Restores a state written by [`save`](Self::save) into a trainer built for the same
    /// parameters and config; the tensors go to the trainer's device. On error nothing
    /// changes.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] for another format version, other parameters or config, or an
    /// inconsistent history; I/O and JSON errors.
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<()> {
        self.load_bytes(&std::fs::read(path)?)
    }

    /// [`load`](Self::load) from the bytes of [`state_bytes`](Self::state_bytes).
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub fn load_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        // The key, the version (checked before the rest of the header is parsed) and the
        // layout, as every checkpoint in this crate; the tensors are read by candle below.
        let (header, _): (Header, _) =
            crate::checkpoint::open(bytes, METADATA_KEY, CHECKPOINT_VERSION)?;
        let names: Vec<String> = self.params.names();
        let shapes: Vec<Vec<usize>> = self.params.shapes();
        if header.names != names || header.shapes != shapes {
            return Err(bad(format!(
                "checkpoint parameters {:?} {:?} differ from the trainer's {:?} {:?}",
                header.names, header.shapes, names, shapes
            )));
        }
        if header.config != self.config {
            return Err(bad("the checkpoint's config differs from the trainer's"));
        }
        let (scheduler, fits, last_quality, last_reported) = match header.groups {
            None => (
                GroupedScheduler::from_scheduler(self.groups()[0].clone(), header.scheduler)?,
                vec![header.fit],
                vec![header.last_quality],
                header.last_quality,
            ),
            Some(g) => (g.scheduler, g.fits, g.last_quality, g.last_reported),
        };
        if scheduler.names() != self.groups()
            || fits.len() != scheduler.len()
            || last_quality.len() != scheduler.len()
        {
            return Err(bad(format!(
                "checkpoint groups {:?} differ from the trainer's {:?}",
                scheduler.names(),
                self.groups()
            )));
        }
        for fit in &fits {
            fit.check_state()?;
            if !fit.is_empty() || fit.config() != &self.config.predictor() {
                return Err(bad("the checkpoint's scalar fit does not match the config"));
            }
        }
        if header.residual.len() != names.len() {
            return Err(bad("residual flags: one per parameter expected"));
        }
        let mut tensors = candle_core::safetensors::load_buffer(bytes, &self.device)?;
        let window = self.history.first().map_or(0, |h| h.slots.len());
        let stored = store_dtype(self.config.history_precision);
        let mut history = Vec::with_capacity(names.len());
        for (i, (spec, &(active, ratio))) in
            self.params.specs().iter().zip(&header.residual).enumerate()
        {
            let mut take = |part: &str, raw_ok: bool| -> Result<Option<Tensor>> {
                let Some(t) = tensors.remove(&format!("{i}.{part}")) else {
                    return Ok(None);
                };
                let dtype_ok = t.dtype() == stored || (raw_ok && t.dtype().is_float());
                if t.dims() != spec.shape.as_slice() || !dtype_ok {
                    return Err(bad(format!(
                        "tensor {i}.{part} ({}): shape {:?} dtype {:?}",
                        spec.name,
                        t.dims(),
                        t.dtype()
                    )));
                }
                Ok(Some(t))
            };
            let mut h = History::new(window);
            h.a = take("a", true)?;
            h.b = take("b", false)?;
            h.residual = take("r", false)?;
            if h.residual
                .as_ref()
                .is_some_and(|r| r.dtype() != candle_core::DType::F32)
            {
                return Err(bad(format!("residual of {} is not f32", spec.name)));
            }
            for j in 0..window {
                h.slots[j] = take(&format!("slot{j}"), true)?;
            }
            if active && h.residual.is_none() {
                return Err(bad(format!("{}: active residual without data", spec.name)));
            }
            h.residual_active = active;
            h.residual_ratio = ratio;
            // Every buffer the next prediction reads must be there.
            let fit = &fits[self.member[i]];
            if let Some(last) = fit.last_step() {
                let coeffs = fit.predict_coefficients(last + 1)?;
                h.model_prediction(&coeffs)?;
            }
            history.push(h);
        }
        if let Some(extra) = tensors.keys().min() {
            return Err(bad(format!("unexpected tensor `{extra}`")));
        }
        self.scheduler = scheduler;
        self.fits = fits;
        self.history = history;
        self.last_quality = last_quality;
        self.last_reported = last_reported;
        self.current = None;
        self.recorded = false;
        self.predicted = None;
        Ok(())
    }
}
