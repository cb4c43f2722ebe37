//! [`SketchCompressor`]: the VSA sketch over a declared parameter set, with error feedback.

use vsa_core::rng::{fnv1a, key_from_name, mix, splitmix64};

use crate::config::SketchConfig;
use crate::error::{Error, Result, config_error, invalid};
use crate::params::Params;
use crate::sketch::{self, Layout, MIN_SLOTS};
use crate::wire::{CompressedGradients, CompressionStats, check_kind, check_param_values};

/// The VSA gradient compressor over host `f32` slices. See the [crate docs](crate).
#[derive(Debug, Clone)]
pub struct SketchCompressor {
    config: SketchConfig,
    params: Params,
    layouts: Vec<Layout>,
    fingerprint: u64,
    /// Error-feedback residuals in sorted order (empty vectors when off).
    residuals: Vec<Vec<f32>>,
    /// One parameter's `g + e`, then its decoded value (reused by every call).
    work: Vec<f32>,
    /// Dequantized slots of one bundle (reused).
    scratch: Vec<f32>,
    /// Calls to compress so far (keys are fresh per call).
    step: u64,
}

impl SketchCompressor {
    /// A compressor for the parameters `shapes` (`(name, shape)` in any order).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] from [`SketchConfig::validate`], or for a parameter needing
    /// more than `u32::MAX` slots; [`Error::NoParameters`], [`Error::EmptyParameter`],
    /// [`Error::DuplicateParameter`].
    pub fn new(shapes: &[(String, Vec<usize>)], config: SketchConfig) -> Result<Self> {
        config.validate()?;
        let params = Params::new(shapes)?;
        let mut layouts = Vec::with_capacity(params.len());
        for p in params.list() {
            let numel = p.numel();
            let slots = ((config.compression_ratio * numel as f64).ceil() as usize)
                .max(MIN_SLOTS)
                .min(numel);
            if u32::try_from(slots).is_err() {
                return Err(config_error(
                    "compression_ratio",
                    format!("at most {} slots per parameter", u32::MAX),
                    format!("{slots} slots for `{}`", p.name),
                ));
            }
            layouts.push(Layout {
                numel,
                slots,
                bundles: slots.div_ceil(config.dimension),
                key: mix(config.seed, key_from_name(&p.name)),
            });
        }
        let fingerprint = Self::fingerprint_of(&config, &params);
        let residuals = if config.error_feedback {
            layouts.iter().map(|l| vec![0f32; l.numel]).collect()
        } else {
            vec![Vec::new(); layouts.len()]
        };
        let widest = layouts.iter().map(|l| l.numel).max().unwrap_or(0);
        Ok(Self {
            config,
            params,
            layouts,
            fingerprint,
            residuals,
            work: if config.error_feedback {
                vec![0f32; widest]
            } else {
                Vec::new()
            },
            scratch: Vec::new(),
            step: 0,
        })
    }

    fn fingerprint_of(config: &SketchConfig, params: &Params) -> u64 {
        let mut b = Vec::new();
        b.extend_from_slice(b"vsa-optim-rs/compress/1");
        b.extend_from_slice(&(config.dimension as u64).to_le_bytes());
        b.extend_from_slice(&config.compression_ratio.to_bits().to_le_bytes());
        b.extend_from_slice(&config.seed.to_le_bytes());
        b.extend_from_slice(&[config.reconstruction.code(), config.quantization.code()]);
        params.hash_into(&mut b);
        splitmix64(fnv1a(b))
    }

    /// The configuration.
    pub fn config(&self) -> &SketchConfig {
        &self.config
    }

    /// The declared parameters, sorted by name.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The config fingerprint stored in every compressed value.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// `(slots, bundles)` of each parameter, in sorted-name order.
    pub fn layout(&self) -> Vec<(usize, usize)> {
        self.layouts.iter().map(|l| (l.slots, l.bundles)).collect()
    }

    /// Bytes of state: the error-feedback residuals (4 per element when on), the reused
    /// work buffer (4 per element of the largest parameter when on) and the layout (a few
    /// words per parameter). Never O(n·D).
    pub fn memory_bytes(&self) -> usize {
        self.residuals.iter().map(|r| 4 * r.len()).sum::<usize>()
            + 4 * self.work.len()
            + self.layouts.len() * std::mem::size_of::<Layout>()
    }

    /// The error-feedback residual of `name` (`None` when error feedback is off or the name
    /// is unknown).
    pub fn residual(&self, name: &str) -> Option<&[f32]> {
        let i = self.params.position(name)?;
        let r = &self.residuals[i];
        (!r.is_empty()).then_some(r.as_slice())
    }

    /// Successful compress calls so far: the `step` of the next compressed value.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Sets the call counter (to resume a run exactly, with [`Self::residual`]s restored by
    /// [`Self::set_residual`]).
    pub fn set_step(&mut self, step: u64) {
        self.step = step;
    }

    /// Replaces the error-feedback residual of `name`.
    ///
    /// # Errors
    /// [`Error::UnknownParameter`], [`Error::InvalidState`] when error feedback is off,
    /// [`Error::ShapeMismatch`] for a wrong length, [`Error::NonFiniteGradient`].
    pub fn set_residual(&mut self, name: &str, values: &[f32]) -> Result<()> {
        let i = self.params.require(name)?;
        if !self.config.error_feedback {
            return Err(Error::InvalidState(
                "error feedback is off: there is no residual to set".into(),
            ));
        }
        let p = &self.params.list()[i];
        if values.len() != p.numel() {
            return Err(Error::ShapeMismatch {
                name: p.name.clone(),
                expected: p.shape.clone(),
                actual: vec![values.len()],
            });
        }
        if !values.iter().all(|v| v.is_finite()) {
            return Err(Error::NonFiniteGradient {
                name: p.name.clone(),
            });
        }
        self.residuals[i].copy_from_slice(values);
        Ok(())
    }

    /// Sets every error-feedback residual to zero.
    pub fn reset_error_feedback(&mut self) {
        self.residuals.iter_mut().for_each(|r| r.fill(0.0));
    }

    /// Compresses host gradients given in sorted-name order (see [`Self::params`]). With
    /// error feedback, compresses `v = g + e` and sets `e ← v − decompress(compress(v))` in
    /// place (no allocation beyond the returned value).
    ///
    /// # Errors
    /// [`Error::ParameterCount`], [`Error::ShapeMismatch`], [`Error::NonFiniteGradient`]
    /// (also when `g + e` overflows). On error the residuals and the step are unchanged.
    pub fn compress<G: AsRef<[f32]>>(&mut self, grads: &[G]) -> Result<CompressedGradients> {
        self.params.check_grads(grads)?;
        let ef = self.config.error_feedback;
        let (rec, q) = (self.config.reconstruction, self.config.quantization);
        let mut params = Vec::with_capacity(self.layouts.len());
        // Pass 1: encode every parameter; nothing is mutated, so an overflow leaves no trace.
        for (i, (l, g)) in self.layouts.iter().zip(grads).enumerate() {
            let g = g.as_ref();
            let p = if ef {
                let x = &mut self.work[..l.numel];
                x.iter_mut()
                    .zip(g.iter().zip(&self.residuals[i]))
                    .for_each(|(x, (a, b))| *x = a + b);
                sketch::encode(l, x, self.step, rec, q)
            } else {
                sketch::encode(l, g, self.step, rec, q)
            };
            if check_param_values(&p, "").is_err() {
                // Only reachable when g + e (or a bundle sum) overflows f32.
                return Err(Error::NonFiniteGradient {
                    name: self.params.list()[i].name.clone(),
                });
            }
            params.push(p);
        }
        // Pass 2: e ← (g + e) − decode, in place.
        if ef {
            for (i, ((l, g), p)) in self.layouts.iter().zip(grads).zip(&params).enumerate() {
                let d = &mut self.work[..l.numel];
                sketch::decode(l, p, self.step, rec, d, &mut self.scratch);
                for ((r, &a), &d) in self.residuals[i].iter_mut().zip(g.as_ref()).zip(&*d) {
                    *r = (a + *r) - d;
                }
            }
        }
        let step = self.step;
        self.step += 1;
        let elements = self.params.total_numel() as u64;
        let mut c = CompressedGradients {
            fingerprint: self.fingerprint,
            step,
            reconstruction: rec,
            quantization: q,
            elements,
            params,
            stats: CompressionStats::new(elements, 0),
        };
        c.stats = CompressionStats::new(elements, c.byte_len());
        Ok(c)
    }

    /// Checks that `c` was made by a compressor with this config and parameters and that
    /// its payload sizes match.
    fn check_compressed(&self, c: &CompressedGradients) -> Result<()> {
        if c.fingerprint != self.fingerprint {
            return Err(Error::FingerprintMismatch {
                expected: self.fingerprint,
                actual: c.fingerprint,
            });
        }
        let cfg = &self.config;
        if c.reconstruction != cfg.reconstruction || c.quantization != cfg.quantization {
            return Err(invalid(format!(
                "modes: expected {:?}/{:?}, got {:?}/{:?}",
                cfg.reconstruction, cfg.quantization, c.reconstruction, c.quantization
            )));
        }
        if c.params.len() != self.layouts.len() {
            return Err(invalid(format!(
                "parameter count: expected {}, got {}",
                self.layouts.len(),
                c.params.len()
            )));
        }
        for ((s, l), p) in self.params.list().iter().zip(&self.layouts).zip(&c.params) {
            let who = format!("parameter `{}`", s.name);
            if (p.slots, p.bundles) != (l.slots, l.bundles) {
                return Err(invalid(format!(
                    "{who}: expected {} slots in {} bundles, got {} in {}",
                    l.slots, l.bundles, p.slots, p.bundles
                )));
            }
            if p.norm.is_some() != (cfg.reconstruction == crate::Reconstruction::NormMatched) {
                return Err(invalid(format!(
                    "{who}: norm presence does not match the mode"
                )));
            }
            check_kind(p, cfg.quantization, &who)?;
            check_param_values(p, &who)?;
        }
        Ok(())
    }

    /// Decompresses into new host vectors in sorted-name order.
    ///
    /// # Errors
    /// [`Error::FingerprintMismatch`] for a value made by a compressor with another config,
    /// seed or parameter set; [`Error::InvalidCompressed`] for a malformed value.
    pub fn decompress(&self, compressed: &CompressedGradients) -> Result<Vec<Vec<f32>>> {
        let mut out: Vec<Vec<f32>> = self.layouts.iter().map(|l| vec![0f32; l.numel]).collect();
        self.decompress_into(compressed, &mut out)?;
        Ok(out)
    }

    /// Decompresses into caller-provided host buffers in sorted-name order (no allocation
    /// for f32 bundles). On error `out` is untouched.
    ///
    /// # Errors
    /// As [`Self::decompress`], plus [`Error::ParameterCount`] / [`Error::ShapeMismatch`]
    /// for buffers of the wrong number or length.
    pub fn decompress_into<O: AsMut<[f32]>>(
        &self,
        compressed: &CompressedGradients,
        out: &mut [O],
    ) -> Result<()> {
        self.check_compressed(compressed)?;
        self.params
            .check_lengths(out.len(), |i| out[i].as_mut().len())?;
        let mut scratch = Vec::new();
        let rec = self.config.reconstruction;
        for ((l, p), o) in self.layouts.iter().zip(&compressed.params).zip(out) {
            sketch::decode(l, p, compressed.step, rec, o.as_mut(), &mut scratch);
        }
        Ok(())
    }
}
