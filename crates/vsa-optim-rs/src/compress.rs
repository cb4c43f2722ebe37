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

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
pub use grad_sketch::{
    BundleQuantization, CompressedGradients, CompressedParam, CompressionStats, MIN_SLOTS, Payload,
    Reconstruction, SketchCompressor, SketchConfig as VSAConfig,
    SketchConfigBuilder as VSAConfigBuilder,
};

use crate::error::{Error, Result, config_error};
use crate::params::ParamSet;

impl From<grad_sketch::Error> for Error {
    /// Maps the compressor's errors onto the facade's variants of the same meaning.
    fn from(e: grad_sketch::Error) -> Self {
        use grad_sketch::Error as E;
        match e {
            E::InvalidConfig {
                parameter,
                expected,
                actual,
            } => Error::InvalidConfig {
                parameter,
                expected,
                actual,
            },
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
            E::FingerprintMismatch { expected, actual } => {
                Error::FingerprintMismatch { expected, actual }
            }
            E::InvalidCompressed { reason } => Error::InvalidCompressed { reason },
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
    /// [`Error::FingerprintMismatch`] for a value made by a compressor with another config,
    /// seed or parameter set; [`Error::InvalidCompressed`] for a malformed value.
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
}
