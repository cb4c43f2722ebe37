//! Checkpoints of a [`TernaryGradientAccumulator`] (the crate's pattern:
//! [`crate::checkpoint`]): [`TernaryAccumulatorState`], and its file, one safetensors file
//! whose tensors are each parameter's packed levels (`{i}.trits`, `U8`), scales
//! (`{i}.scales`, `F32`) and 8-bit scale codes (`{i}.codes`, `U8`, absent with `f32`
//! scales), `i` the parameter's index in sorted-name order. The names, shapes, configs,
//! window and counts are JSON in the metadata under [`METADATA_KEY`], with a `version`
//! ([`CHECKPOINT_VERSION`]) that is checked first.

use std::path::Path;

use candle_core::Device;
use serde::{Deserialize, Serialize};
use ternary_quant::{AccumulatorConfig, AccumulatorState, PackedAccumulator};

use super::{TernaryConfig, TernaryGradientAccumulator};
use crate::checkpoint::{Entry, bad, encode, is_json, open};
use crate::error::{Error, Result};

/// The file format version that [`TernaryGradientAccumulator::load`] reads. Files of the
/// earlier JSON format (a serialised [`TernaryAccumulatorState`]) are read too.
pub const CHECKPOINT_VERSION: u32 = 1;

/// The safetensors metadata key that holds the accumulator's JSON header.
pub const METADATA_KEY: &str = "vsa-optim-rs.ternary";

/// The layout of [`TernaryAccumulatorState`] that [`TernaryGradientAccumulator::state`]
/// writes.
const STATE_VERSION: u32 = 2;

/// The complete, serialisable state of a [`TernaryGradientAccumulator`]: the parameters, the
/// config, the window counter and every packed accumulator. `(window, count)` fixes all future
/// random draws, so a run restored from it continues bit-identically.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TernaryAccumulatorState {
    /// Layout version of this value: 2 (1 = written before trit counts and 8-bit scales;
    /// still read).
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

/// The file's JSON header: the state without its buffers.
#[derive(Serialize, Deserialize)]
struct Header {
    version: u32,
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    config: TernaryConfig,
    window: u64,
    accumulators: Vec<Slot>,
}

#[derive(Serialize, Deserialize)]
struct Slot {
    len: usize,
    config: AccumulatorConfig,
    count: usize,
}

impl TernaryAccumulatorState {
    /// The state as a checkpoint file's bytes (see [`TernaryGradientAccumulator::save`]).
    fn to_bytes(&self) -> Result<Vec<u8>> {
        let header = Header {
            version: CHECKPOINT_VERSION,
            names: self.names.clone(),
            shapes: self.shapes.clone(),
            config: self.config,
            window: self.window,
            accumulators: self
                .accumulators
                .iter()
                .map(|a| Slot {
                    len: a.len,
                    config: a.config,
                    count: a.count,
                })
                .collect(),
        };
        let mut tensors = Vec::with_capacity(3 * self.accumulators.len());
        for (i, a) in self.accumulators.iter().enumerate() {
            tensors.push(Entry::u8(format!("{i}.trits"), &a.trits));
            if !a.scales.is_empty() {
                tensors.push(Entry::f32(
                    format!("{i}.scales"),
                    vec![a.scales.len()],
                    &a.scales,
                ));
            }
            if !a.codes.is_empty() {
                tensors.push(Entry::u8(format!("{i}.codes"), &a.codes));
            }
        }
        encode(METADATA_KEY, &header, &tensors)
    }

    /// Reads the bytes of [`to_bytes`](Self::to_bytes) (or of the earlier JSON format).
    fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if is_json(bytes) {
            return serde_json::from_slice(bytes)
                .map_err(|e| bad(format!("ternary accumulator JSON state: {e}")));
        }
        let (header, mut file) = open::<Header>(bytes, METADATA_KEY, CHECKPOINT_VERSION)?;
        let mut accumulators = Vec::with_capacity(header.accumulators.len());
        for (i, s) in header.accumulators.into_iter().enumerate() {
            let (trits, scales, codes) = AccumulatorState::buffer_lens(s.len, &s.config)?;
            accumulators.push(AccumulatorState {
                len: s.len,
                config: s.config,
                count: s.count,
                trits: file.u8(&format!("{i}.trits"), trits)?,
                scales: file.f32(&format!("{i}.scales"), &[scales])?,
                codes: file.u8(&format!("{i}.codes"), codes)?,
            });
        }
        file.finish()?;
        Ok(Self {
            version: STATE_VERSION,
            names: header.names,
            shapes: header.shapes,
            config: header.config,
            window: header.window,
            accumulators,
        })
    }

    /// Checks the version and that there is one name, shape and accumulator per parameter.
    fn check_counts(&self) -> Result<()> {
        if !(1..=STATE_VERSION).contains(&self.version) {
            return Err(Error::Checkpoint(format!(
                "ternary accumulator state version: expected 1 or 2, got {}",
                self.version
            )));
        }
        if self.names.len() != self.shapes.len() || self.names.len() != self.accumulators.len() {
            return Err(Error::Checkpoint(format!(
                "ternary accumulator state: {} names, {} shapes and {} accumulators (expected equal counts)",
                self.names.len(),
                self.shapes.len(),
                self.accumulators.len()
            )));
        }
        Ok(())
    }
}

impl TernaryGradientAccumulator {
    /// A copy of the full state, for checkpointing (serde, or
    /// [`save`](Self::save)). See [`crate::checkpoint`] for the pattern.
    pub fn state(&self) -> TernaryAccumulatorState {
        TernaryAccumulatorState {
            version: STATE_VERSION,
            names: self.params.names(),
            shapes: self.params.shapes(),
            config: self.config,
            window: self.window,
            accumulators: self.accs.iter().map(PackedAccumulator::state).collect(),
        }
    }

    /// Builds an accumulator on `device` from [`state`](Self::state):
    /// [`new`](Self::new) with the state's parameters and config, then
    /// [`restore`](Self::restore).
    ///
    /// # Errors
    /// As [`new`](Self::new) and [`restore`](Self::restore).
    pub fn from_state(state: TernaryAccumulatorState, device: &Device) -> Result<Self> {
        state.check_counts()?;
        let shapes =
            crate::checkpoint::named_shapes("ternary accumulator", &state.names, &state.shapes)?;
        let mut acc = Self::new(&shapes, state.config, device)?;
        acc.restore(&state)?;
        Ok(acc)
    }

    /// Puts a state back into this accumulator, which must have the same parameters (names,
    /// sorted, and shapes) and config. Validates everything first (the version, and that
    /// each packed accumulator matches its parameter, the config, the window's seed, its
    /// tensor id and a common count); on error nothing changes. Keeps the device.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] for another version, other parameters or config, or an
    /// inconsistent state; [`Error::Ternary`] for an invalid packed state.
    pub fn restore(&mut self, state: &TernaryAccumulatorState) -> Result<()> {
        state.check_counts()?;
        let same_params = self.params.specs().len() == state.names.len()
            && self
                .params
                .specs()
                .iter()
                .zip(state.names.iter().zip(&state.shapes))
                .all(|(s, (n, shape))| &s.name == n && &s.shape == shape);
        if !same_params {
            return Err(Error::Checkpoint(format!(
                "ternary accumulator state for parameters {:?} {:?} (names must be sorted): this accumulator has {:?}",
                state.names,
                state.shapes,
                self.params
                    .specs()
                    .iter()
                    .map(|s| (&s.name, &s.shape))
                    .collect::<Vec<_>>()
            )));
        }
        if state.config != self.config {
            return Err(Error::Checkpoint(format!(
                "ternary accumulator state config {:?} differs from this accumulator's {:?}",
                state.config, self.config
            )));
        }
        let count = state.accumulators[0].count;
        let mut accs = self.accs.clone();
        for (i, ((s, a), st)) in self
            .params
            .specs()
            .iter()
            .zip(&mut accs)
            .zip(&state.accumulators)
            .enumerate()
        {
            let expected = self.config.tensor_config(state.window, i);
            if st.len != s.numel() || st.config != expected || st.count != count {
                return Err(Error::Checkpoint(format!(
                    "ternary accumulator state for `{}`: expected len {}, config {:?} and count {}, got len {}, config {:?} and count {}",
                    s.name,
                    s.numel(),
                    expected,
                    count,
                    st.len,
                    st.config,
                    st.count
                )));
            }
            a.restore(st)?;
        }
        self.accs = accs;
        self.window = state.window;
        Ok(())
    }

    /// Writes the state to `path` as one safetensors file: each parameter's packed levels
    /// (`{i}.trits`, `U8`), scales (`{i}.scales`, `F32`) and 8-bit scale codes
    /// (`{i}.codes`, `U8`, absent with `f32` scales), `i` its index in sorted-name order;
    /// the names, shapes, configs, window and counts as JSON in the metadata under
    /// [`METADATA_KEY`], with a `version` ([`CHECKPOINT_VERSION`]). See
    /// [`crate::checkpoint`].
    ///
    /// # Errors
    /// I/O errors; as [`state_bytes`](Self::state_bytes).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        std::fs::write(path, self.state_bytes()?)?;
        Ok(())
    }

    /// The bytes [`save`](Self::save) writes.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] for a buffer the safetensors format cannot hold.
    pub fn state_bytes(&self) -> Result<Vec<u8>> {
        self.state().to_bytes()
    }

    /// Reads a state from the bytes of [`state_bytes`](Self::state_bytes) (or of the
    /// earlier JSON format), e.g. to build an accumulator with
    /// [`from_state`](Self::from_state). Checks the version, and that every tensor is
    /// present with the dtype and length its config implies; `from_state` and
    /// [`restore`](Self::restore) check the rest.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] for another version, a truncated or malformed file, a missing,
    /// extra or misshapen tensor; [`Error::Ternary`] for an invalid accumulator config.
    pub fn state_from_bytes(bytes: &[u8]) -> Result<TernaryAccumulatorState> {
        TernaryAccumulatorState::from_bytes(bytes)
    }

    /// Restores the state written by [`save`](Self::save) into this accumulator (built for
    /// the same parameters and config; see [`restore`](Self::restore)). On error nothing
    /// changes. To build a new accumulator from a file instead, use
    /// [`state_from_bytes`](Self::state_from_bytes) and [`from_state`](Self::from_state).
    ///
    /// # Errors
    /// I/O errors; as [`state_from_bytes`](Self::state_from_bytes) and
    /// [`restore`](Self::restore).
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<()> {
        self.load_bytes(&std::fs::read(path)?)
    }

    /// [`load`](Self::load) from the bytes of [`state_bytes`](Self::state_bytes).
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub fn load_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        self.restore(&Self::state_from_bytes(bytes)?)
    }
}
