//! Fit algebra: the scalars of the weighted least-squares normal equations, shared by every
//! element, and the prediction plan they imply.

use crate::kernels::{Layout, PredictPlan, WindowMeta};

/// The velocity term is dropped (the fit falls back to the weighted mean, v = 0) when the
/// weighted variance of the sample times, M₂/A, is at or below this floor. With distinct
/// integer steps that happens only when there is one sample, or when every older sample's
/// weight has fallen below about 1e-200 of the newest one.
pub(crate) const VAR_FLOOR: f64 = 1e-200;

/// Scalars shared by every element: total weight A = Σw, weighted mean time μ = Σwτ/A and
/// weighted second central moment M₂ = Σw(τ−μ)², all in time τ relative to the last sample
/// (τ = step − last_step ≤ 0). The normal-equation determinant is A·M₂.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(crate) struct Fit {
    pub(crate) a: f64,
    pub(crate) mu: f64,
    pub(crate) m2: f64,
}

impl Fit {
    pub(crate) fn velocity_ok(&self) -> bool {
        self.m2 > VAR_FLOOR * self.a
    }

    /// The streaming update for a sample at `step` after one at `last` (or the first
    /// sample): the new scalars and the coefficients `[a0, b0, c1, c2]` of
    /// M₀ ← a0·M₀ + b0·g and N₁ ← c1·N₁ + c2·M₀.
    pub(crate) fn stream_step(&self, last: Option<u64>, step: u64, decay: f64) -> (Fit, [f32; 4]) {
        let Some(last) = last else {
            let first = Fit {
                a: 1.0,
                mu: 0.0,
                m2: 0.0,
            };
            return (first, [0.0, 1.0, 0.0, 0.0]);
        };
        let delta = (step - last) as f64;
        let Fit { a, mu, m2 } = *self;
        // Relative time: the old samples move Δ further into the past, their weights shrink
        // by k = decay^Δ, and the new sample sits at τ = 0 with weight 1 (a weighted Welford
        // step).
        let k = decay.powf(delta);
        let ka = k * a;
        let a_new = ka + 1.0;
        let a0 = ka / a_new;
        let d = mu - delta;
        // B̄ = Σw|τ| = −A·μ; N₁ coefficients with k factored out.
        let bbar = -a * mu;
        let da = delta * a;
        let denom = bbar + da;
        let fit = Fit {
            a: a_new,
            mu: a0 * d,
            m2: k * m2 + a0 * d * d,
        };
        let c = [a0, 1.0 / a_new, bbar / denom, da / denom];
        (fit, c.map(|x| x as f32))
    }
}

/// How recording a true gradient g updates the per-element history, as returned by
/// [`GradientPredictor::record_coefficients`](crate::GradientPredictor::record_coefficients).
/// Arithmetic is f32, element by element, in the order written; 16-bit histories are read
/// as f32 and rounded to nearest-even when stored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RecordCoefficients {
    /// The history is g itself (`LastGradient`).
    Replace,
    /// M₀ ← a0·M₀ + b0·g (streaming `DecayedMean`).
    Mean {
        /// Weight of the old mean.
        a0: f32,
        /// Weight of the new gradient.
        b0: f32,
    },
    /// N₁ ← c1·N₁ + c2·M₀ (with the old M₀), then M₀ ← a0·M₀ + b0·g (streaming `LinearWls`).
    Line {
        /// Weight of the old mean.
        a0: f32,
        /// Weight of the new gradient.
        b0: f32,
        /// Weight of the old N₁.
        c1: f32,
        /// Weight of the old M₀ in N₁.
        c2: f32,
    },
    /// Ring slot `slot` ← g (`Window(W)`).
    Slot {
        /// The slot, in `0..W`.
        slot: usize,
    },
}

/// How a prediction is formed from the history, as returned by
/// [`GradientPredictor::predict_coefficients`](crate::GradientPredictor::predict_coefficients).
#[derive(Debug, Clone, PartialEq)]
pub enum PredictCoefficients {
    /// ĝ = the history's first buffer (the last gradient, or M₀).
    Copy,
    /// ĝ = M₀ + γ·(N₁ − M₀), computed as `m + gamma * (n - m)` in f32.
    Line {
        /// γ.
        gamma: f32,
    },
    /// ĝ = Σ c·slot over `(slot, c)` in this order: `out = c₀·x₀`, then `out += cⱼ·xⱼ`.
    Window {
        /// `(slot, coefficient)`, oldest sample first.
        terms: Vec<(usize, f32)>,
    },
}

/// The prediction plan at horizon `h` for the current scalars.
pub(crate) fn plan_for<'a>(
    layout: Layout,
    fit: &Fit,
    window: &'a WindowMeta,
    h: f64,
) -> PredictPlan<'a> {
    match layout {
        Layout::Last | Layout::StreamMean => PredictPlan::Copy,
        // ĝ(h) = M₀ + γ·(N₁ − M₀) with γ = (h − μ)·A·μ / M₂ (see the docs' derivation).
        Layout::StreamLine if fit.velocity_ok() => PredictPlan::Line {
            gamma: ((h - fit.mu) * fit.a * fit.mu / fit.m2) as f32,
        },
        Layout::StreamLine => PredictPlan::Copy,
        Layout::Window(_) => PredictPlan::Window {
            meta: window,
            hm: h - fit.mu,
        },
    }
}
