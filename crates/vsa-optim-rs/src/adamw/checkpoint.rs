//! [`AdamW`]'s checkpoints: [`AdamWState`] and its safetensors file (see the
//! [`adamw`](super) module docs and [`crate::checkpoint`]).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use safetensors::View;
use serde::{Deserialize, Serialize};

use super::{AdamW, ParamsAdamW, validate};
use crate::checkpoint::{Entry, bad, encode, open};
use crate::error::Result;

/// The format version of [`AdamW::save`]'s file, checked by [`AdamW::load`]. Version 1 was
/// two files (moments in safetensors, the rest in `<path>.json`); it is not read.
pub const CHECKPOINT_VERSION: u32 = 2;

/// The safetensors metadata key that holds the optimizer's JSON header.
pub const METADATA_KEY: &str = "vsa-optim-rs.adamw";

/// The moments of one optimised variable, as the little-endian bytes of its dtype (so that
/// every float dtype round-trips exactly).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MomentState {
    /// The variable's name.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its dtype, as candle names it (`f32`, `f16`, `bf16`, `f64`).
    pub dtype: String,
    /// The first moment.
    pub m: Vec<u8>,
    /// The second moment.
    pub v: Vec<u8>,
}

/// The complete state of an [`AdamW`]: the step counter, the hyper-parameters (the learning
/// rate as last set) and every variable's moments, in the optimizer's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdamWState {
    /// Optimizer steps taken.
    pub step: usize,
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// One entry per optimised variable.
    pub moments: Vec<MomentState>,
}

impl AdamWState {
    fn params(&self) -> ParamsAdamW {
        ParamsAdamW {
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
        }
    }
}

/// The file's JSON header: the state without its moments.
#[derive(Serialize, Deserialize)]
struct Header {
    version: u32,
    step: usize,
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    dtypes: Vec<String>,
}

/// The host bytes of a tensor (little-endian, its dtype).
fn host_bytes(t: &Tensor) -> Result<Vec<u8>> {
    // On the CPU, candle's safetensors view of a float tensor is a plain copy.
    Ok(t.to_device(&Device::Cpu)?.data().into_owned())
}

/// Whether the little-endian `bytes` of `dtype` are all finite (and, with `nonneg`, none
/// below zero).
fn floats_ok(dtype: DType, bytes: &[u8], nonneg: bool) -> bool {
    // (sign mask, exponent mask) of each float format, on its bits as an integer.
    let check = |bits: u64, sign: u64, exp: u64| {
        bits & exp != exp && !(nonneg && bits & sign != 0 && bits & !sign != 0)
    };
    match dtype {
        DType::F16 | DType::BF16 => {
            let exp = if dtype == DType::F16 { 0x7c00 } else { 0x7f80 };
            bytes
                .chunks_exact(2)
                .all(|b| check(u64::from(u16::from_le_bytes([b[0], b[1]])), 0x8000, exp))
        }
        DType::F32 => bytes.chunks_exact(4).all(|b| {
            let bits = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            check(u64::from(bits), 0x8000_0000, 0x7f80_0000)
        }),
        DType::F64 => bytes.chunks_exact(8).all(|b| {
            let bits = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
            check(bits, 1 << 63, 0x7ff0_0000_0000_0000)
        }),
        _ => false,
    }
}

impl AdamW {
    /// A copy of the state (see [`AdamWState`] and [`crate::checkpoint`] for the
    /// pattern). The moments are copied to the host.
    ///
    /// # Errors
    /// Candle errors from the copy.
    pub fn state(&self) -> Result<AdamWState> {
        let p = &self.params;
        let moments = self
            .slots
            .iter()
            .map(|s| {
                Ok(MomentState {
                    name: s.name.clone(),
                    shape: s.var.dims().to_vec(),
                    dtype: s.var.dtype().as_str().to_string(),
                    m: host_bytes(s.m.as_tensor())?,
                    v: host_bytes(s.v.as_tensor())?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AdamWState {
            step: self.step_t,
            lr: p.lr,
            beta1: p.beta1,
            beta2: p.beta2,
            eps: p.eps,
            weight_decay: p.weight_decay,
            moments,
        })
    }

    /// Builds an optimizer for the float variables of `varmap` from a state:
    /// [`from_varmap`](Self::from_varmap) with the state's hyper-parameters, then
    /// [`restore`](Self::restore).
    ///
    /// # Errors
    /// As [`from_varmap`](Self::from_varmap) and [`restore`](Self::restore).
    pub fn from_state(state: AdamWState, varmap: &VarMap) -> Result<Self> {
        let mut opt = Self::from_varmap(varmap, state.params())?;
        opt.restore(&state)?;
        Ok(opt)
    }

    /// Puts a state back into this optimizer, which must optimise variables of the same
    /// names, shapes and dtypes, in the same order. The step counter and the
    /// hyper-parameters (the learning rate included) come from the state. Validates
    /// everything first (finite moments, a non-negative second moment, valid
    /// hyper-parameters); on error nothing changes.
    ///
    /// # Errors
    /// [`Error::Checkpoint`](crate::Error::Checkpoint) for other variables or malformed moments,
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) for invalid hyper-parameters, candle errors.
    pub fn restore(&mut self, state: &AdamWState) -> Result<()> {
        let names: Vec<&String> = self.slots.iter().map(|s| &s.name).collect();
        let theirs: Vec<&String> = state.moments.iter().map(|m| &m.name).collect();
        if names != theirs {
            return Err(bad(format!(
                "optimizer parameters differ: the state has {theirs:?}, the optimizer {names:?}"
            )));
        }
        let params = state.params();
        validate(&params)?;
        // Validate and stage everything before touching any state.
        let mut staged: Vec<(Tensor, Tensor)> = Vec::with_capacity(self.slots.len());
        for (s, ms) in self.slots.iter().zip(&state.moments) {
            let (dims, dtype) = (s.var.dims(), s.var.dtype());
            if ms.shape != dims || ms.dtype != dtype.as_str() {
                return Err(bad(format!(
                    "moments of `{}`: expected {dims:?} {}, got {:?} {}",
                    s.name,
                    dtype.as_str(),
                    ms.shape,
                    ms.dtype
                )));
            }
            let want = s.var.elem_count() * dtype.size_in_bytes();
            for (what, bytes, nonneg) in [("m", &ms.m, false), ("v", &ms.v, true)] {
                if bytes.len() != want {
                    return Err(bad(format!(
                        "moment {what} of `{}`: expected {want} bytes, got {}",
                        s.name,
                        bytes.len()
                    )));
                }
                if !floats_ok(dtype, bytes, nonneg) {
                    let wanted = if nonneg { "finite, >= 0" } else { "finite" };
                    return Err(bad(format!(
                        "moment {what} of `{}`: a value is not {wanted}",
                        s.name
                    )));
                }
            }
            let tensor = |b: &[u8]| Tensor::from_raw_buffer(b, dtype, dims, s.var.device());
            staged.push((tensor(&ms.m)?, tensor(&ms.v)?));
        }
        for (s, (m, v)) in self.slots.iter().zip(staged) {
            s.m.set(&m)?;
            s.v.set(&v)?;
        }
        self.step_t = state.step;
        self.params = params;
        Ok(())
    }

    /// Writes the state to `path` as one safetensors file (see the [module docs](super)).
    ///
    /// # Errors
    /// I/O and candle errors.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        std::fs::write(path, self.state_bytes()?)?;
        Ok(())
    }

    /// The bytes [`save`](Self::save) writes.
    ///
    /// # Errors
    /// Candle errors from the copy to the host.
    pub fn state_bytes(&self) -> Result<Vec<u8>> {
        let s = self.state()?;
        let mut tensors = Vec::with_capacity(2 * s.moments.len());
        for (i, ms) in s.moments.iter().enumerate() {
            let dtype: DType = ms
                .dtype
                .parse()
                .map_err(|e| bad(format!("moments of `{}`: {e}", ms.name)))?;
            for (part, bytes) in [("m", &ms.m), ("v", &ms.v)] {
                tensors.push(Entry {
                    name: format!("{i}.{part}"),
                    dtype: dtype.into(),
                    shape: ms.shape.clone(),
                    bytes: bytes.clone(),
                });
            }
        }
        let header = Header {
            version: CHECKPOINT_VERSION,
            step: s.step,
            lr: s.lr,
            beta1: s.beta1,
            beta2: s.beta2,
            eps: s.eps,
            weight_decay: s.weight_decay,
            names: s.moments.iter().map(|m| m.name.clone()).collect(),
            shapes: s.moments.iter().map(|m| m.shape.clone()).collect(),
            dtypes: s.moments.iter().map(|m| m.dtype.clone()).collect(),
        };
        encode(METADATA_KEY, &header, &tensors)
    }

    /// Reads a state from the bytes of [`state_bytes`](Self::state_bytes), e.g. to build an
    /// optimizer with [`from_state`](Self::from_state). Checks the version, and that every
    /// moment is present with its variable's dtype and shape; `from_state` and
    /// [`restore`](Self::restore) check the rest.
    ///
    /// # Errors
    /// [`Error::Checkpoint`](crate::Error::Checkpoint) for another version, a truncated or malformed file, or a
    /// missing, extra or misshapen tensor.
    pub fn state_from_bytes(bytes: &[u8]) -> Result<AdamWState> {
        let (h, mut file) = open::<Header>(bytes, METADATA_KEY, CHECKPOINT_VERSION)?;
        if h.names.len() != h.shapes.len() || h.names.len() != h.dtypes.len() {
            return Err(bad(format!(
                "optimizer header: {} names, {} shapes and {} dtypes (expected equal counts)",
                h.names.len(),
                h.shapes.len(),
                h.dtypes.len()
            )));
        }
        let mut moments = Vec::with_capacity(h.names.len());
        for (i, ((name, shape), dtype)) in
            h.names.into_iter().zip(h.shapes).zip(h.dtypes).enumerate()
        {
            let dt: DType = dtype
                .parse()
                .map_err(|e| bad(format!("moments of `{name}`: {e}")))?;
            let m = file.raw(&format!("{i}.m"), dt.into(), &shape)?.to_vec();
            let v = file.raw(&format!("{i}.v"), dt.into(), &shape)?.to_vec();
            moments.push(MomentState {
                name,
                shape,
                dtype,
                m,
                v,
            });
        }
        file.finish()?;
        Ok(AdamWState {
            step: h.step,
            lr: h.lr,
            beta1: h.beta1,
            beta2: h.beta2,
            eps: h.eps,
            weight_decay: h.weight_decay,
            moments,
        })
    }

    /// Restores the state written by [`save`](Self::save) into this optimizer (built for
    /// the same variables; see [`restore`](Self::restore)). On error nothing changes.
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
