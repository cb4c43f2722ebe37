//! AdamW's moments on host slices, shared by the optimizer-side schemes
//! ([`MomentumCompressor`](super::MomentumCompressor), [`FetchSgd`](super::FetchSgd)).
//!
//! Both schemes return the AdamW *direction* `d` and leave the parameter update to the
//! caller: `θ ← θ·(1 − lr·wd) − lr·d`, the order of candle's `AdamW::step`.

use crate::error::{Error, Result, config_error};
use crate::params::Params;
use crate::state::{check_buffers, declared};

/// AdamW's moment settings (the learning rate and weight decay stay with the caller).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct AdamConfig {
    /// First-moment (momentum) decay `β₁` in `[0, 1)`.
    pub beta1: f64,
    /// Second-moment (variance) decay `β₂` in `[0, 1)`.
    pub beta2: f64,
    /// `ε > 0` added to `√v̂`.
    pub eps: f64,
    /// Floor of the frozen preconditioner, in `[0, 1]`: after the warm-up each coordinate's
    /// `√v̂` is at least `frozen_floor ×` the mean `√v̂` of its parameter. A coordinate
    /// whose gradient was zero throughout the warm-up (a pixel that is blank in those
    /// batches) would otherwise be scaled by `1/ε` forever. `0` turns the floor off.
    pub frozen_floor: f64,
}

impl Default for AdamConfig {
    /// candle's `ParamsAdamW` defaults: `β₁ = 0.9`, `β₂ = 0.999`, `ε = 1e-8`; a frozen
    /// floor of `0.1`.
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            frozen_floor: 0.1,
        }
    }
}

impl AdamConfig {
    /// Checks the ranges.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) for `β` outside `[0, 1)` or
    /// `ε ≤ 0` (or non-finite values).
    pub fn validate(&self) -> Result<()> {
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(b.is_finite() && (0.0..1.0).contains(&b)) {
                return Err(config_error(name, "a value in [0, 1)", b));
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(config_error("eps", "a finite value > 0", self.eps));
        }
        if !(self.frozen_floor.is_finite() && (0.0..=1.0).contains(&self.frozen_floor)) {
            return Err(config_error(
                "frozen_floor",
                "a value in [0, 1]",
                self.frozen_floor,
            ));
        }
        Ok(())
    }

    /// `1 / (1 − β₁ᵗ)` for the `t`-th step (1-based).
    pub(crate) fn m_scale(&self, t: u64) -> f64 {
        1.0 / (1.0 - self.beta1.powf(t as f64))
    }

    /// `1 / (1 − β₂ᵗ)` for the `t`-th step (1-based).
    pub(crate) fn v_scale(&self, t: u64) -> f64 {
        1.0 / (1.0 - self.beta2.powf(t as f64))
    }

    /// One exact AdamW moment update: `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`, and the
    /// direction `d = m·s_m / (√(v·s_v) + ε)` for step `t` (1-based).
    pub(crate) fn exact(&self, t: u64, g: &[f32], m: &mut [f32], v: &mut [f32], d: &mut [f32]) {
        let (b1, b2) = (self.beta1 as f32, self.beta2 as f32);
        let (sm, sv, eps) = (
            self.m_scale(t) as f32,
            self.v_scale(t) as f32,
            self.eps as f32,
        );
        for (((&g, m), v), d) in g.iter().zip(m.iter_mut()).zip(v.iter_mut()).zip(d) {
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            *d = (*m * sm) / ((*v * sv).sqrt() + eps);
        }
    }

    /// The frozen preconditioner `1 / (max(√v̂, f·mean √v̂) + ε)` of one parameter, with
    /// the variance of the last warm-up step `w` (1-based) and `f = frozen_floor`.
    pub(crate) fn frozen_inverse(&self, w: u64, v: &[f32], out: &mut [f32]) {
        let (sv, eps) = (self.v_scale(w) as f32, self.eps as f32);
        let sum: f64 = v.iter().map(|&v| f64::from((v * sv).sqrt())).sum();
        let floor = (self.frozen_floor * sum / v.len().max(1) as f64) as f32;
        for (o, &v) in out.iter_mut().zip(v) {
            *o = 1.0 / ((v * sv).sqrt().max(floor) + eps);
        }
    }
}

/// Checks a warm-up length: at least one exact step (the variance is frozen after it).
pub(crate) fn check_warmup(warmup_steps: u64) -> Result<()> {
    if warmup_steps == 0 {
        return Err(config_error(
            "warmup_steps",
            "at least 1 exact AdamW step (the variance is frozen after the warm-up)",
            warmup_steps,
        ));
    }
    Ok(())
}

/// Checks that a warm-up is shorter than a run.
pub(crate) fn check_run(warmup_steps: u64, total_steps: u64) -> Result<()> {
    if warmup_steps >= total_steps {
        return Err(config_error(
            "warmup_steps",
            format!("fewer than the run's {total_steps} steps"),
            warmup_steps,
        ));
    }
    Ok(())
}

/// AdamW's moments per parameter (sorted-name order) and the applied steps: the state
/// that [`MomentumCompressor`](super::MomentumCompressor) and [`FetchSgd`](super::FetchSgd)
/// share, and the `moments` of their checkpoints.
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct AdamMoments {
    /// Applied steps.
    pub step: u64,
    /// The momentum `m` per parameter.
    pub momentum: Vec<Vec<f32>>,
    /// The variance `v` per parameter (frozen after the warm-up).
    pub variance: Vec<Vec<f32>>,
}

impl AdamMoments {
    /// Zero moments at step 0 for `params`.
    pub(crate) fn zeros(params: &Params) -> Self {
        let zeros: Vec<Vec<f32>> = params
            .list()
            .iter()
            .map(|p| vec![0f32; p.numel()])
            .collect();
        Self {
            step: 0,
            momentum: zeros.clone(),
            variance: zeros,
        }
    }

    /// Checks that `state` has this value's buffer lengths and only finite values.
    pub(crate) fn check(&self, state: &Self) -> Result<()> {
        let lengths: Vec<usize> = self.momentum.iter().map(Vec::len).collect();
        check_buffers("momentum", &state.momentum, &lengths)?;
        check_buffers("variance", &state.variance, &lengths)
    }

    /// Bytes of the two moments.
    pub(crate) fn memory_bytes(&self) -> usize {
        4 * self
            .momentum
            .iter()
            .chain(&self.variance)
            .map(Vec::len)
            .sum::<usize>()
    }
}

/// The first half of an AdamW scheme's `from_state`: the config (an error when the state has
/// none) and the declared parameters, passed to the scheme's `new`.
pub(crate) fn new_from_state<C: Copy, S>(
    config: Option<C>,
    names: &[String],
    shapes: &[Vec<usize>],
    new: impl FnOnce(&[(String, Vec<usize>)], C) -> Result<S>,
) -> Result<S> {
    let config = config.ok_or_else(|| Error::InvalidState("state without a config".into()))?;
    new(&declared(names, shapes)?, config)
}
