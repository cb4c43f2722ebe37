//! Storage precision: memory per element and the measured effect of bf16/f16 statistics.

use crate::common::*;
use grad_predict::{
    GradientPredictor, HistoryMode, PredictorConfig, PredictorModel, StatPrecision,
};

const PRECISIONS: [StatPrecision; 3] =
    [StatPrecision::F32, StatPrecision::Bf16, StatPrecision::F16];

#[test]
fn memory_per_element() {
    let n = 4096;
    let cases = [
        (PredictorModel::LinearWls, HistoryMode::Streaming, 2),
        (PredictorModel::DecayedMean, HistoryMode::Streaming, 1),
        (PredictorModel::LastGradient, HistoryMode::Streaming, 1),
        (PredictorModel::LastGradient, HistoryMode::Window(8), 1),
        (PredictorModel::LinearWls, HistoryMode::Window(8), 8),
        (PredictorModel::DecayedMean, HistoryMode::Window(3), 3),
    ];
    for (model, mode, values) in cases {
        for prec in PRECISIONS {
            let cfg = PredictorConfig {
                model,
                history: mode,
                precision: prec,
                ..PredictorConfig::default()
            };
            let p = GradientPredictor::new(n, cfg).unwrap();
            // Window mode adds 24 bytes of per-slot metadata (step, p, q), independent of n.
            let meta = match (model, mode) {
                (PredictorModel::LastGradient, _) | (_, HistoryMode::Streaming) => 0,
                (_, HistoryMode::Window(w)) => 24 * w,
            };
            assert_eq!(
                p.memory_bytes(),
                values * prec.bytes() * n + meta,
                "{model:?} {mode:?} {prec:?}"
            );
        }
    }
}

/// Smooth per-element trajectories g_e(t) = sin(ω_e·t + φ_e) + 0.5 (amplitudes ~1, well inside
/// f16's normal range), 100 unit steps.
fn smooth_history(n: usize, steps: u64) -> History {
    let mut rng = rng(21);
    let params: Vec<(f32, f32)> = (0..n)
        .map(|_| {
            (
                0.05 + 0.05 * uniform(&mut rng).abs(),
                3.0 * uniform(&mut rng),
            )
        })
        .collect();
    (0..steps)
        .map(|t| {
            (
                t,
                params
                    .iter()
                    .map(|(w, ph)| (w * t as f32 + ph).sin() + 0.5)
                    .collect(),
            )
        })
        .collect()
}

/// Relative RMS distance ‖ĝ − ref‖/‖ref‖ of each precision's prediction to the f64 solve.
/// Bounds: storage rounding u (2⁻⁹ bf16, 2⁻¹² f16) enters `window_bound`/`streaming_bound` as
/// an extra relative error per stored value (see `common`), element-wise. Printed values are
/// the ones quoted in docs/grad-predict.md (run with `--nocapture`).
#[test]
fn precision_effect_measured() {
    let n = 2048;
    let hist = smooth_history(n, 100);
    let last = hist.last().unwrap().0;
    for mode in [HistoryMode::Streaming, HistoryMode::Window(8)] {
        for h in [1u64, 5] {
            let held = match mode {
                HistoryMode::Window(w) => &hist[hist.len() - w..],
                HistoryMode::Streaming => &hist[..],
            };
            let r = reference(held, 0.95, last + h, true);
            let norm = r.pred.iter().map(|x| x * x).sum::<f64>().sqrt();
            let mut errs = Vec::new();
            for prec in PRECISIONS {
                let cfg = PredictorConfig {
                    history: mode,
                    precision: prec,
                    decay: 0.95,
                    ..PredictorConfig::default()
                };
                let mut p = GradientPredictor::new(n, cfg).unwrap();
                feed(&mut p, &hist);
                let out = p.predict(last + h).unwrap();
                let unit = match prec {
                    StatPrecision::F32 => 0.0,
                    StatPrecision::Bf16 => 2f64.powi(-9),
                    StatPrecision::F16 => 2f64.powi(-12),
                };
                let bound = match mode {
                    HistoryMode::Streaming => streaming_bound(&r, held.len(), max_abs(held), unit),
                    HistoryMode::Window(_) => window_bound(&r, max_abs(held), unit),
                };
                let mut se = 0.0;
                for (o, e) in out.iter().zip(&r.pred) {
                    let d = f64::from(*o) - e;
                    assert!(
                        d.abs() <= bound,
                        "{mode:?} {prec:?} h={h}: {o} vs {e} ({bound:e})"
                    );
                    se += d * d;
                }
                let rel = se.sqrt() / norm;
                eprintln!("precision {prec:?} {mode:?} h={h}: relative RMS error {rel:.2e}");
                errs.push(rel);
            }
            // The effect is visible and ordered: f32 < f16 < bf16.
            assert!(
                errs[0] < errs[2] && errs[2] < errs[1],
                "{mode:?} h={h}: {errs:?}"
            );
        }
    }
}
