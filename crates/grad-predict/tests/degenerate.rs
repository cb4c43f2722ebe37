//! Degenerate and ill-conditioned cases.

use crate::common::*;
use grad_predict::{
    GradientPredictor, HistoryMode, PredictorConfig, PredictorModel, StatPrecision,
};
use half::bf16;

const MODELS: [PredictorModel; 3] = [
    PredictorModel::LastGradient,
    PredictorModel::DecayedMean,
    PredictorModel::LinearWls,
];
const MODES: [HistoryMode; 3] = [
    HistoryMode::Streaming,
    HistoryMode::Window(1),
    HistoryMode::Window(5),
];

/// One sample: det = 0, so v = 0 and the prediction is the sample itself, bit for bit, at
/// every horizon (the weighted mean of one value is that value: w·g/w).
#[test]
fn one_sample_predicts_that_sample() {
    let g = [0.1f32, -3.5, 1e-20, 7e30, 0.0, -0.0, 123.456];
    for model in MODELS {
        for mode in MODES {
            for decay in [0.01f32, 0.5, 0.95, 1.0] {
                let mut p = GradientPredictor::new(g.len(), config(model, mode, decay)).unwrap();
                p.record(42, &g).unwrap();
                for h in [0u64, 1, 10, 1_000_000] {
                    let out = p.predict(42 + h).unwrap();
                    for (o, x) in out.iter().zip(&g) {
                        assert_eq!(o, x, "{model:?} {mode:?} decay={decay} h={h}");
                    }
                }
            }
        }
    }
    // 16-bit storage: the sample rounded to bf16, exactly.
    let cfg = PredictorConfig {
        precision: StatPrecision::Bf16,
        history: HistoryMode::Streaming,
        ..PredictorConfig::default()
    };
    let mut p = GradientPredictor::new(g.len(), cfg).unwrap();
    p.record(0, &g).unwrap();
    for (o, x) in p.predict(3).unwrap().iter().zip(&g) {
        assert_eq!(*o, bf16::from_f32(*x).to_f32());
    }
}

/// A decay so small that old weights are tiny but representable (1e-30): the WLS line passes
/// through the last two samples, ĝ(h) = g₁ + h·(g₁ − g₀)/Δ. Cramer's determinant is ~1e-30,
/// yet the relative-time form loses nothing: both terms scale with the same weight.
#[test]
fn tiny_decay_gives_two_point_line() {
    let hist: History = vec![(10, vec![1.0, -2.0, 5.0]), (12, vec![2.0, 0.0, 5.0])];
    for mode in [HistoryMode::Streaming, HistoryMode::Window(4)] {
        let mut p =
            GradientPredictor::new(3, config(PredictorModel::LinearWls, mode, 1e-15)).unwrap();
        feed(&mut p, &hist);
        for h in [0u64, 1, 2, 8] {
            let hf = h as f64;
            let want = [2.0 + hf * 0.5, 0.0 + hf * 1.0, 5.0];
            let r = reference(&hist, 1e-15f32 as f64, 12 + h, true);
            let bound = window_bound(&r, 5.0, 0.0).max(streaming_bound(&r, 2, 5.0, 0.0));
            for (g, w) in p.predict(12 + h).unwrap().iter().zip(want) {
                assert!(
                    (f64::from(*g) - w).abs() <= bound,
                    "{mode:?} h={h}: {g} vs {w}"
                );
            }
        }
    }
}

/// Weights that underflow f64 (decay^Δ = 1e-600): the history is effectively one sample, so
/// the prediction is the last gradient exactly, never NaN. The next sample then fits the line
/// through the last two again.
#[test]
fn underflowing_weights_fall_back_to_last_sample() {
    for model in [PredictorModel::LinearWls, PredictorModel::DecayedMean] {
        for mode in [HistoryMode::Streaming, HistoryMode::Window(3)] {
            let mut p = GradientPredictor::new(2, config(model, mode, 1e-30)).unwrap();
            p.record(0, &[1.0, 2.0]).unwrap();
            p.record(20, &[3.0, -4.0]).unwrap();
            assert_eq!(
                p.predict(25).unwrap(),
                vec![3.0, -4.0],
                "{model:?} {mode:?}"
            );
            p.record(21, &[4.0, -4.0]).unwrap();
            let out = p.predict(23).unwrap();
            if model == PredictorModel::LinearWls {
                // Line through (20, 3) and (21, 4), weight of the older 1e-30: 6 at step 23.
                assert!(
                    (out[0] - 6.0).abs() < 1e-5 && (out[1] + 4.0).abs() < 1e-5,
                    "{out:?}"
                );
            } else {
                assert!((out[0] - 4.0).abs() < 1e-5, "{out:?}");
            }
        }
    }
}

/// Decay near 1 (1 − 1e-6 in f32) over 20 000 unit steps of linear data with t starting in
/// the millions: within the streaming bound of the f64 solve, and the velocity is kept.
#[test]
fn decay_near_one_long_run() {
    let decay = 1.0f32 - 1e-6;
    let t0 = 3_000_000u64;
    let hist: History = (0..20_000u64)
        .map(|i| (t0 + i, vec![1.0 + 1e-3 * i as f32, -2.0 + 1e-4 * i as f32]))
        .collect();
    for mode in [HistoryMode::Streaming, HistoryMode::Window(64)] {
        let mut p =
            GradientPredictor::new(2, config(PredictorModel::LinearWls, mode, decay)).unwrap();
        feed(&mut p, &hist);
        let last = hist.last().unwrap().0;
        let held = match mode {
            HistoryMode::Window(w) => &hist[hist.len() - w..],
            HistoryMode::Streaming => &hist[..],
        };
        for h in [1u64, 10, 100] {
            let r = reference(held, f64::from(decay), last + h, true);
            let bound = match mode {
                HistoryMode::Streaming => streaming_bound(&r, held.len(), max_abs(held), 0.0),
                HistoryMode::Window(_) => window_bound(&r, max_abs(held), 0.0),
            };
            for (g, e) in p.predict(last + h).unwrap().iter().zip(&r.pred) {
                assert!(
                    (f64::from(*g) - e).abs() <= bound,
                    "{mode:?} h={h}: {g} vs {e} ({bound:e})"
                );
            }
        }
        // The slope survives: predictions 100 steps apart differ by 100 × 1e-3 = 0.1, to within
        // the f32 resolution of the accumulated statistics (±2e-3 here, from the bound above).
        let d = p.predict(last + 100).unwrap()[0] - p.predict(last).unwrap()[0];
        assert!((d - 0.1).abs() < 2e-3, "{mode:?}: slope·100 = {d}");
    }
}

/// Two samples a million steps apart with decay near 1: a well-conditioned two-point line.
#[test]
fn huge_gap_two_points() {
    let hist: History = vec![(5, vec![1.0]), (1_000_005, vec![3.0])];
    for mode in [HistoryMode::Streaming, HistoryMode::Window(2)] {
        let mut p =
            GradientPredictor::new(1, config(PredictorModel::LinearWls, mode, 0.999_999)).unwrap();
        feed(&mut p, &hist);
        let out = p.predict(2_000_005).unwrap()[0];
        assert!((out - 5.0).abs() < 1e-5, "{mode:?}: {out}");
    }
}
