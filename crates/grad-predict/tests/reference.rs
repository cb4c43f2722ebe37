//! Property tests against the f64 Cramer reference on random histories, decays and horizons.

use crate::common::*;
use grad_predict::{GradientPredictor, HistoryMode, PredictorModel};
use proptest::prelude::*;

/// A random history: 1..=12 samples of 1..=5 elements in [−10, 10], gaps 1..=4 from a random
/// start step.
fn history() -> impl Strategy<Value = History> {
    (1usize..=12, 1usize..=5, 0u64..1_000_000)
        .prop_flat_map(|(n, len, start)| {
            (
                prop::collection::vec(1u64..=4, n),
                prop::collection::vec(-10.0f32..10.0, n * len),
                Just((len, start)),
            )
        })
        .prop_map(|(gaps, vals, (len, start))| {
            let mut t = start;
            gaps.iter()
                .enumerate()
                .map(|(i, gap)| {
                    t += gap;
                    (t, vals[i * len..(i + 1) * len].to_vec())
                })
                .collect()
        })
}

fn model() -> impl Strategy<Value = PredictorModel> {
    prop_oneof![
        Just(PredictorModel::LinearWls),
        Just(PredictorModel::DecayedMean)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Window(W): prediction within `window_bound` of the f64 solve over the last W samples.
    #[test]
    fn window_matches_reference(
        hist in history(), decay in 0.3f32..=1.0, w in 1usize..=14, h in 0u64..=20, model in model(),
    ) {
        let len = hist[0].1.len();
        let mut p = GradientPredictor::new(len, config(model, HistoryMode::Window(w), decay)).unwrap();
        feed(&mut p, &hist);
        let last = hist.last().unwrap().0;
        let held = &hist[hist.len().saturating_sub(w)..];
        let r = reference(held, f64::from(decay), last + h, model == PredictorModel::LinearWls);
        let bound = window_bound(&r, max_abs(held), 0.0);
        let got = p.predict(last + h).unwrap();
        for (g, e) in got.iter().zip(&r.pred) {
            prop_assert!((f64::from(*g) - e).abs() <= bound, "got {g}, want {e}, bound {bound}");
        }
    }

    /// Streaming: prediction within `streaming_bound` of the f64 solve over all samples.
    #[test]
    fn streaming_matches_reference(
        hist in history(), decay in 0.3f32..=1.0, h in 0u64..=20, model in model(),
    ) {
        let len = hist[0].1.len();
        let mut p = GradientPredictor::new(len, config(model, HistoryMode::Streaming, decay)).unwrap();
        feed(&mut p, &hist);
        let last = hist.last().unwrap().0;
        let r = reference(&hist, f64::from(decay), last + h, model == PredictorModel::LinearWls);
        let bound = streaming_bound(&r, hist.len(), max_abs(&hist), 0.0);
        let got = p.predict(last + h).unwrap();
        for (g, e) in got.iter().zip(&r.pred) {
            prop_assert!((f64::from(*g) - e).abs() <= bound, "got {g}, want {e}, bound {bound}");
        }
    }

    /// LastGradient returns the last sample bit for bit, at every horizon, in every mode.
    #[test]
    fn last_gradient_is_last_sample(hist in history(), h in 0u64..=20, streaming in any::<bool>()) {
        let len = hist[0].1.len();
        let mode = if streaming { HistoryMode::Streaming } else { HistoryMode::Window(3) };
        let mut p = GradientPredictor::new(len, config(PredictorModel::LastGradient, mode, 0.9)).unwrap();
        feed(&mut p, &hist);
        let (last, g) = hist.last().unwrap();
        prop_assert_eq!(&p.predict(last + h).unwrap(), g);
    }
}

/// decay = 1 exactly (plain least squares) in both modes, against the reference.
#[test]
fn decay_one_matches_reference() {
    let mut rng = rng(7);
    let hist: History = (0..40u64)
        .map(|t| (3 * t + 1, (0..4).map(|_| 5.0 * uniform(&mut rng)).collect()))
        .collect();
    for mode in [HistoryMode::Streaming, HistoryMode::Window(40)] {
        let mut p =
            GradientPredictor::new(4, config(PredictorModel::LinearWls, mode, 1.0)).unwrap();
        feed(&mut p, &hist);
        for h in [0u64, 1, 5, 30] {
            let last = hist.last().unwrap().0;
            let r = reference(&hist, 1.0, last + h, true);
            let bound = match mode {
                HistoryMode::Streaming => streaming_bound(&r, hist.len(), max_abs(&hist), 0.0),
                HistoryMode::Window(_) => window_bound(&r, max_abs(&hist), 0.0),
            };
            for (g, e) in p.predict(last + h).unwrap().iter().zip(&r.pred) {
                assert!(
                    (f64::from(*g) - e).abs() <= bound,
                    "{mode:?} h={h}: {g} vs {e} (bound {bound})"
                );
            }
        }
    }
}
