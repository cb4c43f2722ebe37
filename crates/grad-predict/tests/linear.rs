//! Exactly linear gradients are predicted exactly (to f32 rounding) at every horizon.

use crate::common::*;
use grad_predict::{GradientPredictor, HistoryMode, PredictorModel};

/// g_e(t) = a_e + s_e·(t − t0) with small integers, so every recorded value is exact in f32
/// and the truth at any horizon is an integer.
fn linear_history(t0: u64, steps: &[u64]) -> History {
    let a = [3.0f32, -2.0, 0.0, 7.0];
    let s = [1.0f32, -0.5, 0.25, 0.0];
    steps
        .iter()
        .map(|&t| {
            let dt = (t - t0) as f32;
            (t, a.iter().zip(&s).map(|(a, s)| a + s * dt).collect())
        })
        .collect()
}

fn truth(t0: u64, t: u64) -> Vec<f64> {
    let a = [3.0f64, -2.0, 0.0, 7.0];
    let s = [1.0f64, -0.5, 0.25, 0.0];
    let dt = (t - t0) as f64;
    a.iter().zip(&s).map(|(a, s)| a + s * dt).collect()
}

#[test]
fn exact_on_linear_data_every_horizon() {
    // Irregular gaps, so Δ > 1 updates are exercised too.
    for t0 in [0u64, 1_000_000, 5_000_000_000] {
        let steps: Vec<u64> = [0u64, 1, 2, 4, 5, 8, 9, 10, 13, 14, 15, 16]
            .iter()
            .map(|d| t0 + d)
            .collect();
        let hist = linear_history(t0, &steps);
        for decay in [0.5f32, 0.9, 0.95, 0.999, 1.0] {
            for mode in [
                HistoryMode::Streaming,
                HistoryMode::Window(8),
                HistoryMode::Window(2),
            ] {
                let mut p =
                    GradientPredictor::new(4, config(PredictorModel::LinearWls, mode, decay))
                        .unwrap();
                feed(&mut p, &hist);
                let last = *steps.last().unwrap();
                for h in 0..=64u64 {
                    let want = truth(t0, last + h);
                    let held = match mode {
                        HistoryMode::Window(w) => &hist[hist.len() - w..],
                        HistoryMode::Streaming => &hist[..],
                    };
                    let r = reference(held, f64::from(decay), last + h, true);
                    let bound = match mode {
                        HistoryMode::Streaming => {
                            streaming_bound(&r, held.len(), max_abs(held), 0.0)
                        }
                        HistoryMode::Window(_) => window_bound(&r, max_abs(held), 0.0),
                    };
                    let got = p.predict(last + h).unwrap();
                    for (g, w) in got.iter().zip(&want) {
                        assert!(
                            (f64::from(*g) - w).abs() <= bound,
                            "t0={t0} decay={decay} {mode:?} h={h}: {g} vs {w} (bound {bound:e})"
                        );
                    }
                }
            }
        }
    }
}

/// Relative time: shifting every step by 10¹² changes no prediction by a single bit, so long
/// runs (t in the millions and far beyond) suffer no cancellation at all.
#[test]
fn translation_invariant_bitwise() {
    let mut rng = rng(3);
    let base: Vec<(u64, Vec<f32>)> = (0..50u64)
        .map(|i| (i * 3 + (i % 3), (0..8).map(|_| uniform(&mut rng)).collect()))
        .collect();
    let shifted: History = base
        .iter()
        .map(|(t, g)| (t + 1_000_000_000_000, g.clone()))
        .collect();
    for model in [PredictorModel::LinearWls, PredictorModel::DecayedMean] {
        for mode in [HistoryMode::Streaming, HistoryMode::Window(8)] {
            let mut a = GradientPredictor::new(8, config(model, mode, 0.9)).unwrap();
            let mut b = a.clone();
            feed(&mut a, &base);
            feed(&mut b, &shifted);
            for h in [0u64, 1, 3, 17] {
                let (la, lb) = (base.last().unwrap().0, shifted.last().unwrap().0);
                assert_eq!(a.predict(la + h).unwrap(), b.predict(lb + h).unwrap());
            }
        }
    }
}
