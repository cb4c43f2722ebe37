//! Checkpoints: one pattern for every object that carries state between steps.
//!
//! | call | what it does |
//! | --- | --- |
//! | `state(&self) -> XState` | a snapshot: a plain, serde-able value that names its parameters and config |
//! | `X::from_state(state, …) -> Result<X>` | **builds** a new object from a snapshot (the `…` is what a snapshot cannot hold: the device, the variables) |
//! | `restore(&mut self, &XState) -> Result<()>` | puts a snapshot **back into** an existing object of the same parameters and config |
//! | `save(&self, path)` / `load(&mut self, path)` | `state` / `restore` through a file (load goes into `self`, like `restore`) |
//! | `state_bytes(&self)` / `load_bytes(&mut self, &[u8])` | the same through the file's bytes |
//! | `X::state_from_bytes(&[u8]) -> Result<XState>` | a file's bytes back to a snapshot (then `from_state` builds from a file) |
//!
//! `from_…` always constructs and `restore`/`load` always write into an existing object, on
//! every type, in this crate and in the micro-crates (`ternary_quant::PackedAccumulator`,
//! `grad_sketch::SketchCompressor`, `grad_sketch::Compressor`, whose states are
//! framework-free; the micro-crates have no files). The types:
//!
//! | type | state | file (metadata key) |
//! | --- | --- | --- |
//! | [`TernaryGradientAccumulator`](crate::TernaryGradientAccumulator) | [`TernaryAccumulatorState`](crate::TernaryAccumulatorState) | `vsa-optim-rs.ternary` |
//! | [`VSAGradientCompressor`](crate::VSAGradientCompressor) | [`SketchState`](crate::SketchState) | `vsa-optim-rs.compressor` |
//! | [`AdamW`](crate::AdamW) | [`AdamWState`](crate::AdamWState) (`state()` returns a `Result`: it copies the moments to the host) | `vsa-optim-rs.adamw` |
//! | [`DeterministicPhaseTrainer`](crate::DeterministicPhaseTrainer) | [`TrainerState`](crate::TrainerState) (the file's bytes: the history is device tensors; `state()` returns a `Result`) | `vsa-optim-rs.trainer` |
//!
//! **The file** is one safetensors file. Large buffers are its tensors (packed trits and
//! codes as `U8`, scales, residuals and warm starts as `F32`, optimizer moments in their
//! own dtype); everything else is a small JSON header stored in the safetensors metadata
//! under the type's key, with a `version` that `load` checks before reading anything else.
//!
//! **Failures.** `from_state`, `restore`, `load` and `load_bytes` validate everything (the
//! version, the parameters, the config, every tensor's presence, dtype and shape, every
//! value) before they write anything: an error is typed ([`Error::Checkpoint`] for the
//! file and the header, the micro-crates' errors for invalid values) and leaves the object
//! exactly as it was.
//!
//! **What must match.** `restore` and `load` need an object built for the same parameters
//! (names and shapes) and config as the snapshot; the object's device is kept. To build an
//! object from a file instead, read its state with `X::state_from_bytes(&bytes)` (e.g.
//! [`TernaryGradientAccumulator::state_from_bytes`](crate::TernaryGradientAccumulator::state_from_bytes))
//! and call `from_state`.

use std::collections::{BTreeSet, HashMap};

use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

pub(crate) fn bad(reason: impl Into<String>) -> Error {
    Error::Checkpoint(reason.into())
}

/// One tensor to write: name, dtype, shape and little-endian bytes.
pub(crate) struct Entry {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl Entry {
    pub fn u8(name: String, data: &[u8]) -> Self {
        Self {
            name,
            dtype: Dtype::U8,
            shape: vec![data.len()],
            bytes: data.to_vec(),
        }
    }

    pub fn f32(name: String, shape: Vec<usize>, data: &[f32]) -> Self {
        Self {
            name,
            dtype: Dtype::F32,
            shape,
            bytes: data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

/// A safetensors file: `tensors`, and `header` as JSON under the metadata key `key`.
pub(crate) fn encode(key: &str, header: &impl Serialize, tensors: &[Entry]) -> Result<Vec<u8>> {
    let json = serde_json::to_string(header)?;
    let views = tensors
        .iter()
        .map(|e| {
            TensorView::new(e.dtype, e.shape.clone(), &e.bytes)
                .map(|v| (e.name.as_str(), v))
                .map_err(|err| bad(format!("tensor `{}`: {err}", e.name)))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta = HashMap::from([(key.to_string(), json)]);
    safetensors::tensor::serialize(views, Some(meta)).map_err(|e| bad(format!("safetensors: {e}")))
}

/// `(name, shape)` pairs from a snapshot's parallel lists, after checking their counts.
pub(crate) fn named_shapes(
    what: &str,
    names: &[String],
    shapes: &[Vec<usize>],
) -> Result<Vec<(String, Vec<usize>)>> {
    if names.len() != shapes.len() {
        return Err(bad(format!(
            "{what} state: {} names and {} shapes (expected equal counts)",
            names.len(),
            shapes.len()
        )));
    }
    Ok(names.iter().cloned().zip(shapes.iter().cloned()).collect())
}

/// Whether `bytes` are a JSON document rather than a safetensors file (whose header length
/// could start with the byte `{`, so the safetensors reading is tried first).
pub(crate) fn is_json(bytes: &[u8]) -> bool {
    SafeTensors::read_metadata(bytes).is_err() && bytes.trim_ascii_start().first() == Some(&b'{')
}

/// Reads the tensors of a file opened by [`open`], and checks that none is left over.
pub(crate) struct Reader<'a> {
    file: SafeTensors<'a>,
    taken: BTreeSet<String>,
}

/// Opens a file written by [`encode`]: checks the key and the `version` (before parsing
/// the rest of the header) and the safetensors layout.
pub(crate) fn open<'a, H: DeserializeOwned>(
    bytes: &'a [u8],
    key: &str,
    version: u32,
) -> Result<(H, Reader<'a>)> {
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(key))
        .ok_or_else(|| bad(format!("no `{key}` metadata: not this type's checkpoint")))?;
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| bad(format!("`{key}` header: {e}")))?;
    match value.get("version").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(version) => {}
        v => {
            return Err(bad(format!(
                "`{key}` checkpoint version {v:?}, expected {version}"
            )));
        }
    }
    let header = serde_json::from_value(value).map_err(|e| bad(format!("`{key}` header: {e}")))?;
    let file =
        SafeTensors::deserialize(bytes).map_err(|e| bad(format!("safetensors layout: {e}")))?;
    Ok((
        header,
        Reader {
            file,
            taken: BTreeSet::new(),
        },
    ))
}

impl<'a> Reader<'a> {
    /// The bytes of tensor `name`, which must have `dtype` and `shape`.
    pub fn raw(&mut self, name: &str, dtype: Dtype, shape: &[usize]) -> Result<&'a [u8]> {
        let t = self
            .file
            .tensor(name)
            .map_err(|_| bad(format!("missing tensor `{name}`")))?;
        if t.dtype() != dtype || t.shape() != shape {
            return Err(bad(format!(
                "tensor `{name}`: expected {dtype:?} {shape:?}, got {:?} {:?}",
                t.dtype(),
                t.shape()
            )));
        }
        self.taken.insert(name.to_string());
        Ok(t.data())
    }

    /// A `U8` tensor of `len` elements (absent when `len` is 0).
    pub fn u8(&mut self, name: &str, len: usize) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        Ok(self.raw(name, Dtype::U8, &[len])?.to_vec())
    }

    /// An `F32` tensor of shape `shape` (absent when it has no elements).
    pub fn f32(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        match shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) {
            Some(0) => return Ok(Vec::new()),
            Some(_) => {}
            None => return Err(bad(format!("tensor `{name}`: shape {shape:?} overflows"))),
        }
        Ok(self
            .raw(name, Dtype::F32, shape)?
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    /// Fails on a tensor that no call read.
    pub fn finish(self) -> Result<()> {
        let mut names = self.file.names();
        names.sort_unstable();
        match names.into_iter().find(|n| !self.taken.contains(*n)) {
            Some(extra) => Err(bad(format!("unexpected tensor `{extra}`"))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
