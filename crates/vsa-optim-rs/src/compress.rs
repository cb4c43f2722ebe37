//! VSA gradient compression for candle: a thin adapter over [`grad_sketch`].
//!
//! The compressor itself (configuration, the bind-and-bundle sketch, error feedback, the
//! byte format) is the framework-free crate [`grad_sketch`]; see its documentation and
//! `docs/compression.md` for the method, the √ρ quality bound and the measurements. This
//! module keeps the seed crate's names ([`VSAConfig`], [`VSAGradientCompressor`]) and adds
//! what needs candle: gradients as `HashMap<String, Tensor>` (f32, f16 or bf16, checked
//! against the compressor's device) in, f32 tensors with the declared shapes out.
//!
//! # Quick start
//!
//! ```
//! use std::collections::HashMap;
//! use candle_core::{Device, Tensor};
//! use vsa_optim_rs::compress::{VSAConfig, VSAGradientCompressor};
//!
//! # fn main() -> vsa_optim_rs::Result<()> {
//! let device = Device::Cpu;
//! let param_shapes = vec![("w".to_string(), vec![64, 128]), ("b".to_string(), vec![128])];
//! let config = VSAConfig::builder().dimension(8192).compression_ratio(0.1).seed(42).build();
//! let mut compressor = VSAGradientCompressor::new(&param_shapes, config, &device)?;
//!
//! let mut gradients = HashMap::new();
//! let w: Vec<f32> = (0..64 * 128).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
//! gradients.insert("w".to_string(), Tensor::from_vec(w, (64, 128), &device)?);
//! gradients.insert("b".to_string(), Tensor::ones(128, candle_core::DType::F32, &device)?);
//!
//! let compressed = compressor.compress(&gradients)?;
//! assert!(compressed.stats.compression_ratio > 9.0);
//! let bytes = compressed.to_bytes()?;
//! assert_eq!(bytes.len(), compressed.stats.compressed_bytes);
//!
//! let restored = compressor.decompress(&compressed)?;
//! assert_eq!(restored["w"].dims(), &[64, 128]);
//! // Projection reconstruction: cosine ≈ √0.1 ≈ 0.32 on an arbitrary gradient.
//! let (g, r) = (gradients["w"].flatten_all()?, restored["w"].flatten_all()?);
//! let cos = (&g * &r)?.sum_all()?.to_scalar::<f32>()?
//!     / (g.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?
//!         * r.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?);
//! assert!(cos > 0.25 && cos < 0.4, "cos = {cos}");
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
pub use grad_sketch::{
    BundleQuantization, CompressedGradients, CompressedParam, CompressionStats, MIN_SLOTS, Payload,
    Reconstruction, SketchCompressor, SketchConfig as VSAConfig,
    SketchConfigBuilder as VSAConfigBuilder, SketchState,
};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Entry, bad, encode, open};
use crate::error::{Error, Result, config_error};
use crate::params::ParamSet;

/// The format version of the compressor's checkpoint file
/// ([`VSAGradientCompressor::save`]), checked by [`VSAGradientCompressor::load`].
pub const CHECKPOINT_VERSION: u32 = 1;

/// The safetensors metadata key that holds the compressor's JSON header.
pub const METADATA_KEY: &str = "vsa-optim-rs.compressor";

/// The checkpoint file's JSON header: the state without its residuals.
#[derive(Serialize, Deserialize)]
struct Header {
    version: u32,
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    config: VSAConfig,
    step: u64,
}

impl From<grad_sketch::Error> for Error {
    /// Maps the compressor's errors onto the facade's variants of the same meaning.
    fn from(e: grad_sketch::Error) -> Self {
        use grad_sketch::Error as E;
        match e {
            E::InvalidConfig {
                parameter,
                expected,
                actual,
            } => config_error(parameter, expected, actual),
            E::NoParameters => Error::NoParameters,
            E::EmptyParameter { name, shape } => Error::EmptyParameter { name, shape },
            E::DuplicateParameter { name } => Error::DuplicateParameter { name },
            E::UnknownParameter { name } => Error::UnknownParameter { name },
            E::ParameterCount { expected, actual } => {
                config_error("gradients", format!("{expected} parameters"), actual)
            }
            E::ShapeMismatch {
                name,
                expected,
                actual,
            } => Error::ShapeMismatch {
                name,
                expected,
                actual,
            },
            E::NonFiniteGradient { name } => Error::NonFiniteGradient { name },
            e @ (E::FingerprintMismatch { .. } | E::InvalidCompressed { .. }) => Error::Sketch(e),
            E::InvalidState(s) => Error::InvalidState(s),
            // `grad_sketch::Error` is non-exhaustive: a future variant keeps its message.
            other => Error::InvalidState(other.to_string()),
        }
    }
}

/// The VSA gradient compressor for candle tensors: a [`SketchCompressor`] plus the
/// parameters' device. See the [module docs](self) and [`grad_sketch`].
#[derive(Debug)]
pub struct VSAGradientCompressor {
    core: SketchCompressor,
    params: ParamSet,
    device: Device,
}

impl VSAGradientCompressor {
    /// A compressor for the parameters `param_shapes` (`(name, shape)` in any order) on
    /// `device`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for `dimension` 0, a ratio outside `(0, 1]`, error feedback
    /// with a non-contractive reconstruction, or a parameter needing more than `u32::MAX`
    /// slots; [`Error::NoParameters`], [`Error::EmptyParameter`],
    /// [`Error::DuplicateParameter`] for bad shapes.
    pub fn new(
        param_shapes: &[(String, Vec<usize>)],
        config: VSAConfig,
        device: &Device,
    ) -> Result<Self> {
        let core = SketchCompressor::new(param_shapes, config)?;
        let params = ParamSet::new(param_shapes)?;
        Ok(Self {
            core,
            params,
            device: device.clone(),
        })
    }

    /// A compressor for the float variables of `varmap`.
    ///
    /// # Errors
    /// As [`VSAGradientCompressor::new`].
    pub fn from_varmap(varmap: &VarMap, config: VSAConfig, device: &Device) -> Result<Self> {
        Self::new(&ParamSet::varmap_shapes(varmap)?, config, device)
    }

    /// The framework-free compressor underneath.
    pub fn core(&self) -> &SketchCompressor {
        &self.core
    }

    /// The configuration.
    pub fn config(&self) -> &VSAConfig {
        self.core.config()
    }

    /// The declared parameters, sorted by name.
    pub fn params(&self) -> &ParamSet {
        &self.params
    }

    /// The config fingerprint stored in every compressed value.
    pub fn fingerprint(&self) -> u64 {
        self.core.fingerprint()
    }

    /// `(slots, bundles)` of each parameter, in sorted-name order.
    pub fn layout(&self) -> Vec<(usize, usize)> {
        self.core.layout()
    }

    /// Bytes of state (see [`SketchCompressor::memory_bytes`]).
    pub fn memory_bytes(&self) -> usize {
        self.core.memory_bytes()
    }

    /// The error-feedback residual of `name` (`None` when error feedback is off or the name
    /// is unknown).
    pub fn residual(&self, name: &str) -> Option<&[f32]> {
        self.core.residual(name)
    }

    /// Successful compress calls so far: the `step` of the next compressed value.
    pub fn step(&self) -> u64 {
        self.core.step()
    }

    /// Sets the call counter (to resume a run exactly, with [`Self::residual`]s restored by
    /// [`Self::set_residual`]).
    pub fn set_step(&mut self, step: u64) {
        self.core.set_step(step);
    }

    /// Replaces the error-feedback residual of `name`.
    ///
    /// # Errors
    /// [`Error::UnknownParameter`], [`Error::InvalidState`] when error feedback is off,
    /// [`Error::ShapeMismatch`] for a wrong length, [`Error::NonFiniteGradient`].
    pub fn set_residual(&mut self, name: &str, values: &[f32]) -> Result<()> {
        Ok(self.core.set_residual(name, values)?)
    }

    /// Sets every error-feedback residual to zero.
    pub fn reset_error_feedback(&mut self) {
        self.core.reset_error_feedback();
    }

    /// Compresses a gradient map (exactly the declared names, declared shapes, f32/f16/bf16
    /// on this compressor's device, all finite). With error feedback, adds and updates the
    /// residuals.
    ///
    /// # Errors
    /// [`Error::UnknownParameter`], [`Error::MissingParameter`], [`Error::ShapeMismatch`],
    /// [`Error::UnsupportedDtype`], [`Error::DeviceMismatch`], [`Error::NonFiniteGradient`].
    /// On error the residuals are unchanged.
    pub fn compress(&mut self, grads: &HashMap<String, Tensor>) -> Result<CompressedGradients> {
        self.params.check_map(grads)?;
        for s in self.params.specs() {
            let d = grads[&s.name].device();
            if !d.same_device(&self.device) {
                return Err(Error::DeviceMismatch {
                    name: s.name.clone(),
                    expected: format!("{:?}", self.device),
                    actual: format!("{d:?}"),
                });
            }
        }
        let host = self.params.to_host_f32(grads)?;
        self.compress_host(&host)
    }

    /// Compresses host gradients given in sorted-name order (see [`Self::params`]).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] (`gradients`) for a wrong count, [`Error::ShapeMismatch`] for
    /// a wrong length, [`Error::NonFiniteGradient`]. On error the residuals are unchanged.
    pub fn compress_host<G: AsRef<[f32]>>(&mut self, grads: &[G]) -> Result<CompressedGradients> {
        Ok(self.core.compress(grads)?)
    }

    /// Decompresses into f32 tensors with the declared shapes on this compressor's device.
    ///
    /// # Errors
    /// [`Error::Sketch`] holding `grad_sketch::Error::FingerprintMismatch` for a value made
    /// by a compressor with another config, seed or parameter set, or
    /// `grad_sketch::Error::InvalidCompressed` for a malformed value.
    pub fn decompress(&self, compressed: &CompressedGradients) -> Result<HashMap<String, Tensor>> {
        let host = self.decompress_host(compressed)?;
        self.params.from_host_f32(&host, &self.device)
    }

    /// Decompresses into host vectors in sorted-name order.
    ///
    /// # Errors
    /// As [`Self::decompress`].
    pub fn decompress_host(&self, compressed: &CompressedGradients) -> Result<Vec<Vec<f32>>> {
        Ok(self.core.decompress(compressed)?)
    }

    /// Decompresses into caller-provided host buffers in sorted-name order (no allocation for
    /// f32 bundles).
    ///
    /// # Errors
    /// As [`Self::decompress`], plus [`Error::ShapeMismatch`] for a buffer of the wrong length.
    pub fn decompress_host_into<O: AsMut<[f32]>>(
        &self,
        compressed: &CompressedGradients,
        out: &mut [O],
    ) -> Result<()> {
        Ok(self.core.decompress_into(compressed, out)?)
    }

    /// A copy of the state: parameters, config, call counter and error-feedback residuals
    /// (see [`SketchState`] and [`crate::checkpoint`] for the pattern).
    pub fn state(&self) -> SketchState {
        self.core.state()
    }

    /// Builds a compressor on `device` from a state: [`new`](Self::new) with the state's
    /// parameters and config, then [`restore`](Self::restore).
    ///
    /// # Errors
    /// As [`new`](Self::new) and [`restore`](Self::restore).
    pub fn from_state(state: SketchState, device: &Device) -> Result<Self> {
        let shapes = crate::checkpoint::named_shapes("compressor", &state.names, &state.shapes)?;
        let mut c = Self::new(&shapes, state.config, device)?;
        c.restore(&state)?;
        Ok(c)
    }

    /// Puts a state back into this compressor, which must have the same parameters (names,
    /// sorted, and shapes) and config; on error nothing changes. The next
    /// [`compress`](Self::compress) then returns the same bits as the compressor the state
    /// was taken from.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] for other parameters or config, residuals of the wrong number
    /// or lengths, or a non-finite residual.
    pub fn restore(&mut self, state: &SketchState) -> Result<()> {
        self.core
            .restore(state)
            .map_err(|e| bad(format!("compressor state: {e}")))
    }

    /// Writes the state to `path`: one safetensors file whose tensors are the residuals
    /// (`{i}.residual`, `F32`, the parameter's shape, `i` its index in sorted-name order;
    /// none with error feedback off) and whose metadata holds the parameters, the config and
    /// the step as JSON under [`METADATA_KEY`], with a `version`.
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
        let s = self.state();
        let tensors: Vec<Entry> = s
            .residuals
            .iter()
            .zip(&s.shapes)
            .enumerate()
            .filter(|(_, (r, _))| !r.is_empty())
            .map(|(i, (r, shape))| Entry::f32(format!("{i}.residual"), shape.clone(), r))
            .collect();
        let header = Header {
            version: CHECKPOINT_VERSION,
            names: s.names,
            shapes: s.shapes,
            config: s.config,
            step: s.step,
        };
        encode(METADATA_KEY, &header, &tensors)
    }

    /// Reads a state from the bytes of [`state_bytes`](Self::state_bytes), e.g. to build a
    /// compressor with [`from_state`](Self::from_state). Checks the version, and that every
    /// residual is present with the dtype and shape of its parameter; `from_state` and
    /// [`restore`](Self::restore) check the rest.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] for another version, a truncated or malformed file, or a
    /// missing, extra or misshapen tensor.
    pub fn state_from_bytes(bytes: &[u8]) -> Result<SketchState> {
        let (h, mut file) = open::<Header>(bytes, METADATA_KEY, CHECKPOINT_VERSION)?;
        let residuals = h
            .shapes
            .iter()
            .enumerate()
            .map(|(i, shape)| {
                if h.config.error_feedback {
                    file.f32(&format!("{i}.residual"), shape)
                } else {
                    Ok(Vec::new())
                }
            })
            .collect::<Result<Vec<_>>>()?;
        file.finish()?;
        Ok(SketchState {
            names: h.names,
            shapes: h.shapes,
            config: h.config,
            step: h.step,
            residuals,
        })
    }

    /// Restores the state written by [`save`](Self::save) into this compressor (built for
    /// the same parameters and config; see [`restore`](Self::restore)). On error nothing
    /// changes.
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
