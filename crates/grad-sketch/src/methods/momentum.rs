//! [`MomentumCompressor`]: error feedback on the momentum under AdamW, after 1-bit Adam.

use super::CompressorConfig;
use super::adam::{AdamConfig, AdamMoments, check_run, check_warmup, new_from_state};
use super::compressor::Compressor;
use super::message::Message;
use super::state::CompressorState;
use crate::error::{Error, Result, invalid};
use crate::params::Params;
use crate::state::check_same;

/// A [`MomentumCompressor`]'s configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MomentumConfig {
    /// The compressor of the momentum. Its `dense_warmup_steps` (at least 1) is the exact
    /// AdamW warm-up after which the variance is frozen; its `error_feedback` keeps the
    /// residual of the compressed momentum.
    pub compressor: CompressorConfig,
    /// AdamW's moment settings.
    pub adam: AdamConfig,
}

impl Default for MomentumConfig {
    /// Top-k 0.2% of the momentum with error feedback after 2 exact AdamW steps: the most
    /// accurate configuration at ≥ 100× fewer bytes in the learning-rate-tuned digits table
    /// of `docs/benchmarks.md` (106.9× with the warm-up counted, 0.34 points below exact
    /// AdamW at 600 steps). The warm-up is counted in steps: scale it with the run.
    fn default() -> Self {
        Self {
            compressor: CompressorConfig {
                method: super::Method::TopK { k_fraction: 0.002 },
                seed: 0,
                error_feedback: true,
                dense_warmup_steps: 2,
            },
            adam: AdamConfig::default(),
        }
    }
}

impl MomentumConfig {
    /// Checks every field.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`]: the compressor's and the moments' errors, and a warm-up of
    /// 0 steps.
    pub fn validate(&self) -> Result<()> {
        self.compressor.validate()?;
        self.adam.validate()?;
        check_warmup(self.compressor.dense_warmup_steps)
    }

    /// [`validate`](Self::validate), plus a warm-up shorter than a run of `total_steps`.
    ///
    /// # Errors
    /// As [`Self::validate`], and `dense_warmup_steps ≥ total_steps`.
    pub fn validate_for_run(&self, total_steps: u64) -> Result<()> {
        self.validate()?;
        check_run(self.compressor.dense_warmup_steps, total_steps)
    }
}

/// Error feedback on the momentum under AdamW, after 1-bit Adam
/// (Tang et al. 2021): an exact AdamW warm-up, then the variance is frozen and only the
/// compressed momentum is exchanged.
///
/// Per step `t` (1-based) on every rank, with `W` = the compressor's `dense_warmup_steps`:
///
/// ```text
/// t ≤ W:  send g (dense);      ḡ = mean over ranks
///         m ← β₁m + (1−β₁)ḡ,  v ← β₂v + (1−β₂)ḡ²,  d = m̂ / (√v̂ + ε)      (exact AdamW)
/// t > W:  send C(β₁m + (1−β₁)g + e),  e ← (β₁m + (1−β₁)g + e) − C(…)      (error feedback)
///         m ← mean over ranks of C(…)  (the exchanged momentum replaces the local one)
///         d = m·(1/(1−β₁ᵗ)) / (√(v_W/(1−β₂ᵂ)) + ε)                      (v frozen at W)
/// ```
///
/// The caller applies `θ ← θ·(1 − lr·wd) − lr·d`.
#[derive(Debug, Clone)]
pub struct MomentumCompressor {
    config: MomentumConfig,
    inner: Compressor,
    moments: AdamMoments,
}

/// A [`MomentumCompressor`]'s state; restoring it resumes a run bit for bit.
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MomentumState {
    /// Parameter names, sorted.
    pub names: Vec<String>,
    /// Parameter shapes, in the order of `names`.
    pub shapes: Vec<Vec<usize>>,
    /// The configuration (`None` only in a default value).
    pub config: Option<MomentumConfig>,
    /// The applied steps and AdamW's moments.
    pub moments: AdamMoments,
    /// The momentum compressor's state (its residuals and step).
    pub compressor: CompressorState,
}

impl MomentumCompressor {
    /// A scheme for the parameters `shapes` (`(name, shape)` in any order).
    ///
    /// # Errors
    /// [`MomentumConfig::validate`]'s errors and [`Compressor::new`]'s.
    pub fn new(shapes: &[(String, Vec<usize>)], config: MomentumConfig) -> Result<Self> {
        config.validate()?;
        let inner = Compressor::new(shapes, config.compressor)?;
        Ok(Self {
            config,
            moments: AdamMoments::zeros(&inner.params),
            inner,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &MomentumConfig {
        &self.config
    }

    /// The declared parameters, sorted by name.
    pub fn params(&self) -> &Params {
        &self.inner.params
    }

    /// The momentum compressor (its residuals, fingerprint and `check`).
    pub fn compressor(&self) -> &Compressor {
        &self.inner
    }

    /// Applied steps.
    pub fn step(&self) -> u64 {
        self.moments.step
    }

    /// Whether step `step()` is still an exact warm-up step.
    pub fn in_warmup(&self) -> bool {
        self.step() < self.config.compressor.dense_warmup_steps
    }

    /// The momentum of `name`.
    pub fn momentum(&self, name: &str) -> Option<&[f32]> {
        Some(&self.moments.momentum[self.params().position(name)?])
    }

    /// The variance of `name`.
    pub fn variance(&self, name: &str) -> Option<&[f32]> {
        Some(&self.moments.variance[self.params().position(name)?])
    }

    /// The local half of a step: the dense gradient during the warm-up, afterwards the
    /// compressed `β₁m + (1−β₁)g` with error feedback.
    ///
    /// # Errors
    /// [`Error::InvalidState`] when this step was already compressed (call
    /// [`apply`](Self::apply) first); the momentum compressor's errors
    /// ([`Error::ParameterCount`], [`Error::ShapeMismatch`], [`Error::NonFiniteGradient`]).
    /// On error nothing changes.
    pub fn compress<G: AsRef<[f32]>>(&mut self, grads: &[G]) -> Result<Message> {
        if self.inner.step() != self.step() {
            return Err(Error::InvalidState(format!(
                "step {} was already compressed: apply it first",
                self.step()
            )));
        }
        self.params().check_grads(grads)?;
        if self.in_warmup() {
            return self.inner.compress(grads);
        }
        let b1 = self.config.adam.beta1 as f32;
        let local: Vec<Vec<f32>> = grads
            .iter()
            .zip(&self.moments.momentum)
            .map(|(g, m)| {
                g.as_ref()
                    .iter()
                    .zip(m)
                    .map(|(&g, &m)| b1 * m + (1.0 - b1) * g)
                    .collect()
            })
            .collect();
        self.inner.compress(&local)
    }

    /// Checks the messages of one step (one per rank).
    fn check_received(&self, received: &[Message]) -> Result<()> {
        if received.is_empty() {
            return Err(invalid("no messages to apply"));
        }
        for m in received {
            self.inner.check(m)?;
            if m.step != self.step() {
                return Err(invalid(format!(
                    "message of step {}: this scheme applies step {}",
                    m.step,
                    self.step()
                )));
            }
        }
        Ok(())
    }

    /// The shared half of a step: decodes the messages of every rank (one each, averaged in
    /// the order given, so a fixed order gives the same bits), updates the moments and
    /// writes the AdamW direction `d` into `out` (sorted-name order).
    ///
    /// # Errors
    /// [`Error::InvalidCompressed`] / [`Error::FingerprintMismatch`] for no message, a
    /// message of another config or step; [`Error::ParameterCount`] /
    /// [`Error::ShapeMismatch`] for `out`; [`Error::NonFiniteGradient`] when the moments
    /// overflow. On error nothing changes (`out` included).
    pub fn apply<O: AsMut<[f32]>>(&mut self, received: &[Message], out: &mut [O]) -> Result<()> {
        self.check_received(received)?;
        self.params()
            .check_lengths(out.len(), |i| out[i].as_mut().len())?;
        let mut mean: Vec<Vec<f32>> = self
            .moments
            .momentum
            .iter()
            .map(|m| vec![0f32; m.len()])
            .collect();
        let mut buf = mean.clone();
        for msg in received {
            self.inner.decompress_into(msg, &mut buf)?;
            for (a, b) in mean.iter_mut().zip(&buf) {
                a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
            }
        }
        if received.len() > 1 {
            let s = 1.0 / received.len() as f32;
            mean.iter_mut().flatten().for_each(|x| *x *= s);
        }
        let t = self.step() + 1;
        let adam = self.config.adam;
        let (mut m, mut v) = (self.moments.momentum.clone(), self.moments.variance.clone());
        let mut d: Vec<Vec<f32>> = mean.iter().map(|x| vec![0f32; x.len()]).collect();
        if self.in_warmup() {
            for i in 0..m.len() {
                adam.exact(t, &mean[i], &mut m[i], &mut v[i], &mut d[i]);
            }
        } else {
            let w = self.config.compressor.dense_warmup_steps;
            let sm = adam.m_scale(t) as f32;
            for i in 0..m.len() {
                adam.frozen_inverse(w, &v[i], &mut d[i]);
                for ((d, m), &x) in d[i].iter_mut().zip(m[i].iter_mut()).zip(&mean[i]) {
                    *m = x;
                    *d *= x * sm;
                }
            }
        }
        for (i, (m, d)) in m.iter().zip(&d).enumerate() {
            if !m.iter().chain(d).all(|x| x.is_finite()) {
                return Err(Error::NonFiniteGradient {
                    name: self.params().list()[i].name.clone(),
                });
            }
        }
        for (o, d) in out.iter_mut().zip(&d) {
            o.as_mut().copy_from_slice(d);
        }
        self.moments = AdamMoments {
            step: t,
            momentum: m,
            variance: v,
        };
        Ok(())
    }

    /// The state (see [`MomentumState`]).
    pub fn state(&self) -> MomentumState {
        let c = self.inner.state();
        MomentumState {
            names: c.names.clone(),
            shapes: c.shapes.clone(),
            config: Some(self.config),
            moments: self.moments.clone(),
            compressor: c,
        }
    }

    /// Builds a scheme from a state: [`new`](Self::new), then [`restore`](Self::restore).
    ///
    /// # Errors
    /// As [`new`](Self::new) and [`restore`](Self::restore); [`Error::InvalidState`] for a
    /// state without a config.
    pub fn from_state(state: MomentumState) -> Result<Self> {
        let mut s = new_from_state(state.config, &state.names, &state.shapes, Self::new)?;
        s.restore(&state)?;
        Ok(s)
    }

    /// Puts a state back; the parameters and config must be this scheme's.
    ///
    /// # Errors
    /// [`Error::InvalidState`] for other parameters or config, moments of the wrong number,
    /// lengths or non-finite values, a compressor step that is neither `step` nor
    /// `step + 1`, or the compressor state's own errors. Nothing changes on error.
    pub fn restore(&mut self, state: &MomentumState) -> Result<()> {
        check_same(
            self.params(),
            &Some(self.config),
            &state.names,
            &state.shapes,
            &state.config,
        )?;
        self.moments.check(&state.moments)?;
        let (cs, step) = (state.compressor.step, state.moments.step);
        if cs != step && cs != step + 1 {
            return Err(Error::InvalidState(format!(
                "compressor step {cs} with scheme step {step}: expected equal or one ahead"
            )));
        }
        // Validates fully before it writes; ours below cannot fail.
        self.inner.restore(&state.compressor)?;
        self.moments.clone_from(&state.moments);
        Ok(())
    }
}
