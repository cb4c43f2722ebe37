//! Streaming equals Window(W) once decay^W is negligible.

use crate::common::*;
use grad_predict::{GradientPredictor, HistoryMode, PredictorModel};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// With decay ≤ 0.8 and W = 200, samples beyond the window weigh ≤ 0.8²⁰⁰ ≈ 4e-20 of the
    /// newest, far below f32 resolution, so the two modes fit the same problem. Each is within
    /// its own rounding bound of the f64 solve over the full history (see `common`); the
    /// dropped tail contributes ≤ Σ_dropped |cᵢ|·max|g| ≈ 1e-17·max|g|, so the tolerance is the
    /// sum of both bounds plus 1e-12·max|g|.
    #[test]
    fn streaming_equals_long_window(
        n in 1usize..=300, decay in 0.3f32..=0.8, h in 0u64..=10, seed in any::<u8>(), linear in any::<bool>(),
    ) {
        let mut rng = rng(seed);
        let mut t = 0u64;
        let hist: History = (0..n).map(|_| {
            t += 1 + u64::from(rng.next_u32() % 3);
            (t, (0..3).map(|_| 4.0 * uniform(&mut rng)).collect())
        }).collect();
        let model = if linear { PredictorModel::LinearWls } else { PredictorModel::DecayedMean };
        let mut s = GradientPredictor::new(3, config(model, HistoryMode::Streaming, decay)).unwrap();
        let mut w = GradientPredictor::new(3, config(model, HistoryMode::Window(200), decay)).unwrap();
        feed(&mut s, &hist);
        feed(&mut w, &hist);
        let last = hist.last().unwrap().0;
        let r_full = reference(&hist, f64::from(decay), last + h, linear);
        let held = &hist[hist.len().saturating_sub(200)..];
        let r_win = reference(held, f64::from(decay), last + h, linear);
        let maxg = max_abs(&hist);
        let tol = streaming_bound(&r_full, n, maxg, 0.0) + window_bound(&r_win, maxg, 0.0) + 1e-12 * maxg;
        for (a, b) in s.predict(last + h).unwrap().iter().zip(&w.predict(last + h).unwrap()) {
            prop_assert!((f64::from(*a) - f64::from(*b)).abs() <= tol, "{a} vs {b}, tol {tol:e}");
        }
    }
}
