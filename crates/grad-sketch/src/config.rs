//! The VSA sketch's configuration: decoding mode, bundle quantization, sizes, seed.

use crate::error::{Result, config_error};

/// How a bundle is turned back into a gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Reconstruction {
    /// `x̂ = Sᵀ diag(1/m_j) S x`, the exact orthogonal projection onto the row space of `S`.
    /// The minimum-norm estimate consistent with the sketch: `cos ≈ √ρ`, norm ratio
    /// `‖x̂‖/‖x‖ = cos ≈ √ρ`, and `‖x − x̂‖² = ‖x‖² − ‖x̂‖²` (a contraction, as error feedback
    /// needs). The default.
    #[default]
    Projection,
    /// `x̂ = Sᵀ S x`: unbiased over the random keys (`E x̂ = x`), but its norm ratio is
    /// about `1/√ρ` (the variance of an unbiased rank-`m` estimate). Same cosine.
    Unbiased,
    /// The projection rescaled to the true norm, stored as one extra `f32` per parameter:
    /// norm ratio exactly 1, cosine as [`Reconstruction::Projection`]. Not contractive, so
    /// it cannot be combined with error feedback.
    NormMatched,
}

impl Reconstruction {
    /// The wire code (0 projection, 1 unbiased, 2 norm-matched).
    pub fn code(self) -> u8 {
        match self {
            Self::Projection => 0,
            Self::Unbiased => 1,
            Self::NormMatched => 2,
        }
    }

    /// The mode of a wire code.
    pub fn from_code(c: u8) -> Option<Self> {
        [Self::Projection, Self::Unbiased, Self::NormMatched]
            .into_iter()
            .find(|m| m.code() == c)
    }
}

/// How the bundle values are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum BundleQuantization {
    /// Real-valued bundles: 4 bytes per slot. The default.
    #[default]
    F32,
    /// One sign bit per slot plus one `f32` scale per bundle (the weighted-L2-optimal
    /// `α = Σ_j w_j|y_j| / Σ_j w_j`, `w_j = 1/m_j`). 32× fewer payload bytes at the same
    /// ratio; cosine multiplied by `cos(y, α·sign y)` (≈ 0.80 for Gaussian slots).
    Sign,
    /// Trits `{−α, 0, +α}` (2 bits per slot: non-zero and negative masks) plus one `f32`
    /// scale per bundle: threshold `0.7 · mean|y|` (ternary weight networks), then the
    /// weighted-L2-optimal `α` on the support. Cosine multiplied by ≈ 0.9 for Gaussian slots.
    Ternary,
}

impl BundleQuantization {
    /// The wire code (0 f32, 1 sign, 2 ternary).
    pub fn code(self) -> u8 {
        match self {
            Self::F32 => 0,
            Self::Sign => 1,
            Self::Ternary => 2,
        }
    }

    /// The quantization of a wire code.
    pub fn from_code(c: u8) -> Option<Self> {
        [Self::F32, Self::Sign, Self::Ternary]
            .into_iter()
            .find(|m| m.code() == c)
    }
}

/// The VSA sketch's configuration: plain public fields with [`Default`], or the builder.
/// [`validate`](Self::validate) checks it; [`SketchCompressor::new`](crate::SketchCompressor::new)
/// validates.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SketchConfig {
    /// `D`: the maximum number of slots of one bundle (hypervector). Tensors with more than
    /// `D` slots are sketched as several bundles. Must be in `1..=u32::MAX`. Default 8192.
    pub dimension: usize,
    /// `ρ`: slots per gradient element, in `(0, 1]`. A parameter with `n` elements gets
    /// `min(n, max(⌈ρ·n⌉, MIN_SLOTS))` slots; with f32 bundles the bytes shrink by about
    /// `1/ρ`. Default 0.1.
    pub compression_ratio: f64,
    /// Seed of every binding key. Default 0.
    pub seed: u64,
    /// How bundles are decoded. Default [`Reconstruction::Projection`].
    pub reconstruction: Reconstruction,
    /// How bundle values are stored. Default [`BundleQuantization::F32`].
    pub quantization: BundleQuantization,
    /// Keep a per-parameter residual and add it to the next gradient. Default false.
    /// Costs one `f32` per gradient element.
    pub error_feedback: bool,
}

impl Default for SketchConfig {
    fn default() -> Self {
        Self {
            dimension: 8192,
            compression_ratio: 0.1,
            seed: 0,
            reconstruction: Reconstruction::Projection,
            quantization: BundleQuantization::F32,
            error_feedback: false,
        }
    }
}

impl SketchConfig {
    /// A builder starting from [`SketchConfig::default`].
    pub fn builder() -> SketchConfigBuilder {
        SketchConfigBuilder {
            config: Self::default(),
        }
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) for `dimension` 0 or above
    /// `u32::MAX`, a ratio outside `(0, 1]`, or error feedback with a non-contractive
    /// reconstruction.
    pub fn validate(&self) -> Result<()> {
        if self.dimension == 0 || u32::try_from(self.dimension).is_err() {
            return Err(config_error(
                "dimension",
                format!("1 ..= {}", u32::MAX),
                self.dimension,
            ));
        }
        let r = self.compression_ratio;
        if !(r.is_finite() && r > 0.0 && r <= 1.0) {
            return Err(config_error("compression_ratio", "a ratio in (0, 1]", r));
        }
        if self.error_feedback && self.reconstruction != Reconstruction::Projection {
            return Err(config_error(
                "error_feedback",
                "the contractive Reconstruction::Projection (with any other mode the \
                 residual grows: ‖x − x̂‖ > ‖x‖)",
                format!("{:?}", self.reconstruction),
            ));
        }
        Ok(())
    }
}

/// Builder for [`SketchConfig`]; [`build`](Self::build) returns the config itself.
#[derive(Debug, Clone, Copy)]
pub struct SketchConfigBuilder {
    config: SketchConfig,
}

impl SketchConfigBuilder {
    /// Sets [`SketchConfig::dimension`].
    pub fn dimension(mut self, dimension: usize) -> Self {
        self.config.dimension = dimension;
        self
    }

    /// Sets [`SketchConfig::compression_ratio`].
    pub fn compression_ratio(mut self, ratio: f64) -> Self {
        self.config.compression_ratio = ratio;
        self
    }

    /// Sets [`SketchConfig::seed`].
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
    }

    /// Sets [`SketchConfig::reconstruction`].
    pub fn reconstruction(mut self, reconstruction: Reconstruction) -> Self {
        self.config.reconstruction = reconstruction;
        self
    }

    /// Sets [`SketchConfig::quantization`].
    pub fn quantization(mut self, quantization: BundleQuantization) -> Self {
        self.config.quantization = quantization;
        self
    }

    /// Sets [`SketchConfig::error_feedback`].
    pub fn error_feedback(mut self, on: bool) -> Self {
        self.config.error_feedback = on;
        self
    }

    /// The config (not validated: [`SketchConfig::validate`] and the compressor's `new` do).
    pub fn build(self) -> SketchConfig {
        self.config
    }
}
