//! Alternative compressors with one encode/decode shape ([`Compressor`]): the heavy-hitter
//! count sketch, random-k with a shared-seed mask, top-k, and PowerSGD, each with optional
//! error feedback and a dense warm-up.
//!
//! Two optimizer-side schemes own AdamW's moments and return its direction instead of a
//! gradient: [`MomentumCompressor`] (error feedback on the momentum, the variance frozen
//! after an exact warm-up, after 1-bit Adam) and [`FetchSgd`] (momentum and error kept in
//! a fixed-key count sketch). `docs/compression.md` §12.5 compares the placements.
//!
//! ```
//! use grad_sketch::{Compressor, CompressorConfig, Message, Method};
//!
//! let shapes = vec![("w".to_string(), vec![16, 32])];
//! let config = CompressorConfig { method: Method::TopK { k_fraction: 0.05 }, ..Default::default() };
//! assert_eq!(config, CompressorConfig::default());
//! let mut c = Compressor::new(&shapes, config)?;
//! let g: Vec<f32> = (0..512).map(|i| (i as f32 * 0.1).sin()).collect();
//! let bytes = c.compress(&[&g[..]])?.to_bytes()?;
//! let decoded = c.decompress(&Message::from_bytes(&bytes)?)?;
//! assert_eq!(decoded[0].iter().filter(|&&x| x != 0.0).count(), 26); // ⌈0.05 · 512⌉
//! // Error feedback keeps the rest: applied + residual = gradient.
//! let r = c.residual("w").unwrap();
//! assert!(g.iter().zip(&decoded[0]).zip(r).all(|((g, d), r)| d + r == *g));
//! # Ok::<(), grad_sketch::Error>(())
//! ```

mod adam;
mod compressor;
mod fetch;
mod kernels;
mod message;
mod momentum;
mod packed;
mod state;

pub use adam::{AdamConfig, AdamMoments};
pub use compressor::Compressor;
pub use fetch::{FETCH_SGD_CODE, FetchSgd, FetchSgdConfig, FetchSgdState};
pub use message::{Message, Part};
pub use momentum::{MomentumCompressor, MomentumConfig, MomentumState};
pub use packed::{PackedValues, ValueCoding};
pub use state::CompressorState;

use crate::error::{Result, config_error};

/// The most rows a count sketch may have (the median is taken on the stack).
pub const MAX_ROWS: usize = 32;

/// The compression method of a [`Compressor`]. Every method keys its randomness by
/// `(seed, parameter name, step, row or column, element)`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Method {
    /// A count sketch of `rows` rows of `⌈ratio·n / rows⌉` buckets each. Coordinate `j`
    /// goes to bucket `h_r(j)` of row `r` with sign `s_r(j)`; the estimate of `x_j` is the
    /// median over rows of `s_r(j)·T[r][h_r(j)]`. The sketch is linear in `x`, so sketches
    /// from different ranks with the same keys can be summed before decoding.
    CountSketch {
        /// `r ≥ 1` rows (at most [`MAX_ROWS`]).
        rows: usize,
        /// Sketch values per gradient element, in `(0, 1]`.
        ratio: f64,
        /// The decoder applies the `k = ⌈k_fraction·n⌉` largest estimates (heavy hitters)
        /// and nothing else; `k_fraction` in `(0, 1]`. `1.0` is the dense median decode.
        k_fraction: f64,
    },
    /// Random-k: the coordinates whose keyed uniform `u(seed, name, step, j) < ratio` (the
    /// same mask on every rank, so no indices are sent). Without error feedback the values
    /// are scaled by `1/ratio` (unbiased); with error feedback they are sent as they are.
    RandomK {
        /// Selection probability in `(0, 1]`.
        ratio: f64,
    },
    /// Top-k: the `k = ⌈k_fraction·n⌉` largest `|v_j|` with their `u32` indices (8 bytes
    /// per kept element). Ties go to the lower index.
    TopK {
        /// `k / n` in `(0, 1]`.
        k_fraction: f64,
    },
    /// PowerSGD (Vogels et al. 2019), one power iteration per step with warm start: the
    /// gradient of a parameter with shape `[a, rest…]` is viewed as an `a × b` matrix `M`;
    /// `P = orth(M Q)`, `Q ← Mᵀ P`, and the decoded gradient is `P Qᵀ`. Vectors, and
    /// matrices where `rank·(a + b) ≥ a·b`, are sent dense.
    PowerSgd {
        /// `r ≥ 1`.
        rank: usize,
    },
    /// Top-k on the compact wire: the same `k = ⌈k_fraction·n⌉` coordinates as
    /// [`TopK`](Self::TopK), the indices as Rice-coded gaps (at most `log₂(n/k) + 3` bits
    /// each) and the values coded by `values`; with [`ValueCoding::Sign`] about
    /// `(log₂(n/k) + 4)/8` bytes per kept coordinate instead of 8. Error feedback keeps
    /// what the value coding loses. The wire format is derived in the `packed` module docs
    /// and `docs/compression.md`.
    TopKPacked {
        /// `k / n` in `(0, 1]`.
        k_fraction: f64,
        /// How the kept values are sent.
        values: ValueCoding,
    },
    /// Random-k ([`RandomK`](Self::RandomK)'s shared-seed mask, no indices) with the values
    /// coded by `values`: with [`ValueCoding::Sign`], 1 bit per kept coordinate plus one
    /// scale per parameter. Without error feedback the decoded values are scaled by
    /// `1/ratio`.
    RandomKPacked {
        /// Selection probability in `(0, 1]`.
        ratio: f64,
        /// How the kept values are sent.
        values: ValueCoding,
    },
}

impl Method {
    /// The wire code.
    pub fn code(&self) -> u8 {
        match self {
            Self::CountSketch { .. } => 1,
            Self::RandomK { .. } => 2,
            Self::TopK { .. } => 3,
            Self::PowerSgd { .. } => 4,
            // 5 is FetchSGD's.
            Self::TopKPacked { .. } => 6,
            Self::RandomKPacked { .. } => 7,
        }
    }

    /// A short label for tables (`count-sketch r=5 ρ=0.1 k=0.01`, ...).
    pub fn label(&self) -> String {
        match self {
            Self::CountSketch {
                rows,
                ratio,
                k_fraction,
            } => format!("count sketch r={rows} ρ={ratio} k/n={k_fraction}"),
            Self::RandomK { ratio } => format!("random-k ρ={ratio}"),
            Self::TopK { k_fraction } => format!("top-k k/n={k_fraction}"),
            Self::PowerSgd { rank } => format!("PowerSGD rank {rank}"),
            Self::TopKPacked { k_fraction, values } => {
                format!(
                    "top-k k/n={k_fraction} packed (Rice gaps, {})",
                    values.label()
                )
            }
            Self::RandomKPacked { ratio, values } => {
                format!("random-k ρ={ratio} packed ({})", values.label())
            }
        }
    }
}

/// A [`Compressor`]'s configuration: plain public fields.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CompressorConfig {
    /// The method.
    pub method: Method,
    /// Seed of every key.
    pub seed: u64,
    /// Keep a residual per parameter (one `f32` per element): compress `v = g + e`, apply
    /// `d = decode(encode(v))`, keep `e ← v − d`.
    pub error_feedback: bool,
    /// Calls `0 .. dense_warmup_steps` send the dense `f32` gradient (plus the residual),
    /// as PowerSGD's `start_powerSGD_iter`.
    pub dense_warmup_steps: u64,
}

impl Default for CompressorConfig {
    /// Top-k at 5% with error feedback and no warm-up: ≈ 10× fewer bytes than f32 with its
    /// indices, and the most accurate error-feedback method of the learning-rate-tuned
    /// digits table in `docs/benchmarks.md` (within 0.3 points of exact there).
    fn default() -> Self {
        Self {
            method: Method::TopK { k_fraction: 0.05 },
            seed: 0,
            error_feedback: true,
            dense_warmup_steps: 0,
        }
    }
}

fn check_fraction(parameter: &'static str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 && v <= 1.0 {
        Ok(())
    } else {
        Err(config_error(parameter, "a fraction in (0, 1]", v))
    }
}

impl CompressorConfig {
    /// Checks every field.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig): `rows` 0 or above
    /// [`MAX_ROWS`], `rank` 0, a ratio or `k_fraction` outside `(0, 1]` (so `k = 0` and
    /// `k > n` cannot happen).
    pub fn validate(&self) -> Result<()> {
        match self.method {
            Method::CountSketch {
                rows,
                ratio,
                k_fraction,
            } => {
                if rows == 0 || rows > MAX_ROWS {
                    return Err(config_error("rows", format!("1 ..= {MAX_ROWS}"), rows));
                }
                check_fraction("ratio", ratio)?;
                check_fraction("k_fraction", k_fraction)?;
            }
            Method::RandomK { ratio } => check_fraction("ratio", ratio)?,
            Method::TopK { k_fraction } | Method::TopKPacked { k_fraction, .. } => {
                check_fraction("k_fraction", k_fraction)?;
            }
            Method::RandomKPacked { ratio, .. } => check_fraction("ratio", ratio)?,
            Method::PowerSgd { rank } => {
                if rank == 0 || u32::try_from(rank).is_err() {
                    return Err(config_error("rank", format!("1 ..= {}", u32::MAX), rank));
                }
            }
        }
        Ok(())
    }

    /// [`validate`](Self::validate), plus: the dense warm-up must be shorter than a run of
    /// `total_steps` (otherwise nothing is ever compressed).
    ///
    /// # Errors
    /// As [`Self::validate`], and `dense_warmup_steps ≥ total_steps`.
    pub fn validate_for_run(&self, total_steps: u64) -> Result<()> {
        self.validate()?;
        if self.dense_warmup_steps >= total_steps {
            return Err(config_error(
                "dense_warmup_steps",
                format!("fewer than the run's {total_steps} steps"),
                self.dense_warmup_steps,
            ));
        }
        Ok(())
    }
}
