//! Shared helpers: the f64 reference solver, error bounds and a seeded generator.

use grad_predict::{
    GradientPredictor, HistoryMode, PredictorConfig, PredictorModel, StatPrecision,
};
use proptest::prelude::Rng;
use proptest::test_runner::{RngAlgorithm, TestRng};

/// f32 machine epsilon (2⁻²³).
pub const EPS: f64 = f32::EPSILON as f64;

/// A recorded history: (step, gradient).
pub type History = Vec<(u64, Vec<f32>)>;

/// The straightforward f64 weighted-least-squares solve, written independently of the crate:
/// relative times τᵢ = tᵢ − T (T the last step), weights wᵢ = decayᵃᵍᵉ, the raw normal
/// equations [A B; B C][b; v] = [S0; S1] solved by Cramer's rule. One sample (det = 0): the
/// sample itself (v = 0). `linear = false` gives the decayed mean (b alone).
pub struct Reference {
    /// Per-element predictions.
    pub pred: Vec<f64>,
    /// The coefficient cᵢ of each sample in ĝ = Σ cᵢ gᵢ.
    pub coef: Vec<f64>,
    /// γ = (h − μ)·A·μ / M₂ (0 without velocity): the streaming form's amplification.
    pub gamma: f64,
}

pub fn reference(hist: &[(u64, Vec<f32>)], decay: f64, step: u64, linear: bool) -> Reference {
    let last = hist.last().unwrap().0;
    let h = (step - last) as f64;
    let n = hist[0].1.len();
    let (mut a, mut b, mut c) = (0.0f64, 0.0f64, 0.0f64);
    let mut w = Vec::new();
    for (t, _) in hist {
        let tau = *t as f64 - last as f64;
        let wi = decay.powf(-tau);
        w.push((wi, tau));
        a += wi;
        b += wi * tau;
        c += wi * tau * tau;
    }
    let det = a * c - b * b;
    let use_v = linear && hist.len() > 1 && det > 1e-12 * a * c;
    let coef: Vec<f64> = w
        .iter()
        .map(|&(wi, tau)| {
            if use_v {
                // b + v·h = [(C − B·h)·S0 + (A·h − B)·S1] / det
                wi * ((c - b * h) + (a * h - b) * tau) / det
            } else {
                wi / a
            }
        })
        .collect();
    let pred = (0..n)
        .map(|e| {
            hist.iter()
                .zip(&coef)
                .map(|((_, g), ci)| ci * f64::from(g[e]))
                .sum()
        })
        .collect();
    let gamma = if use_v {
        let mu = b / a;
        let m2 = c - b * b / a;
        (h - mu) * a * mu / m2
    } else {
        0.0
    };
    Reference { pred, coef, gamma }
}

/// Largest |g| in a history.
pub fn max_abs(hist: &[(u64, Vec<f32>)]) -> f64 {
    hist.iter()
        .flat_map(|(_, g)| g.iter())
        .fold(0.0f64, |m, &x| m.max(f64::from(x).abs()))
}

/// Error bound of Window mode. ĝ = Σ fl(cᵢ)·gᵢ summed in f32 over ≤ W terms: each cᵢ is
/// rounded once to f32 (relative ε/2) and a W-term f32 sum errs by at most W·(ε/2)·Σ|cᵢgᵢ|
/// (standard γ_W bound), so |ĝ − ref| ≤ (W + 1)·ε·Σ|cᵢ|·max|g|. One extra ε covers the f64
/// arithmetic of the coefficients; `unit` replaces ε/2 by the storage rounding when the
/// history is stored in 16 bits.
pub fn window_bound(r: &Reference, maxg: f64, unit_store: f64) -> f64 {
    let w = r.coef.len() as f64;
    let s: f64 = r.coef.iter().map(|c| c.abs()).sum();
    ((w + 2.0) * EPS + unit_store) * s * maxg
}

/// Error bound of Streaming mode after n samples. M₀ and N₁ are updated by convex
/// combinations x ← a·x + b·y; each update adds at most 2ε·max|g| (two products, one sum, two
/// rounded coefficients, each ε/2 relative, of terms bounded by max|g|) and previous errors
/// are not amplified (a + b = 1), so each holds ≤ 2(n+1)ε·max|g|, plus `unit_store`·max|g| per
/// update when stored in 16 bits. The prediction M₀ + γ(N₁ − M₀) multiplies those errors by at
/// most 1 + 2|γ| and adds ≤ 3ε(1 + 2|γ|)·max|g| of its own.
pub fn streaming_bound(r: &Reference, n: usize, maxg: f64, unit_store: f64) -> f64 {
    let amp = 1.0 + 2.0 * r.gamma.abs();
    amp * ((2.0 * n as f64 + 5.0) * EPS + (n as f64 + 1.0) * unit_store) * maxg
}

pub fn config(model: PredictorModel, history: HistoryMode, decay: f32) -> PredictorConfig {
    PredictorConfig {
        model,
        history,
        decay,
        precision: StatPrecision::F32,
        ..PredictorConfig::default()
    }
}

pub fn feed(p: &mut GradientPredictor, hist: &[(u64, Vec<f32>)]) {
    for (t, g) in hist {
        p.record(*t, g).unwrap();
    }
}

/// A seeded ChaCha stream (proptest's `TestRng`), keyed by `seed`.
pub fn rng(seed: u8) -> TestRng {
    TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32])
}

/// Uniform in [−1, 1).
pub fn uniform(rng: &mut TestRng) -> f32 {
    (rng.next_u32() >> 8) as f32 / (1u32 << 23) as f32 - 1.0
}
