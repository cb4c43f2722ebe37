//! The residual rule and the quality measured at Correct steps.

use crate::common::*;
use grad_predict::{GradientPredictor, HistoryMode, PredictorConfig, PredictorModel, quality};

/// The quality returned by `record_correction` is bit-identical to `quality()` applied to what
/// `predict_into` returned just before, with and without an active residual.
#[test]
fn correction_quality_equals_separate_pass() {
    let mut rng = rng(11);
    let n = 3000; // several blocks plus a tail
    for mode in [HistoryMode::Streaming, HistoryMode::Window(4)] {
        let cfg = PredictorConfig {
            history: mode,
            residual_threshold: 0.0,
            ..PredictorConfig::default()
        };
        let mut p = GradientPredictor::new(n, cfg).unwrap();
        let mut step = 0;
        for round in 0..6 {
            let g: Vec<f32> = (0..n).map(|_| uniform(&mut rng)).collect();
            step += 1 + round % 2;
            if p.samples() < 2 {
                p.record(step, &g).unwrap();
                continue;
            }
            let pred = p.predict(step).unwrap();
            let want = quality(&pred, &g).unwrap();
            let got = p.record_correction(step, &g).unwrap();
            assert_eq!(got, want, "{mode:?} round {round}");
            assert!(got.cosine.abs() <= 1.0 && got.relative_error >= 0.0);
        }
        assert!(p.residual_active());
    }
}

/// r = ρ·(g − ĝ₀) after the first correction, exactly as computed in f32; it is applied iff
/// ‖r‖/‖g‖ exceeds the threshold, and ĝ then equals the model's prediction plus r.
#[test]
fn residual_rule_and_threshold() {
    let g0 = [1.0f32, 2.0, -1.0];
    let g1 = [2.0f32, 2.0, -3.0];
    // ‖r‖/‖g₁‖ = 0.5·‖(1, 0, −2)‖ / ‖(2, 2, −3)‖ = 0.5·√5/√17 ≈ 0.2712.
    let ratio = 0.5 * 5f64.sqrt() / 17f64.sqrt();
    for (threshold, active) in [(0.0f32, true), (0.27, true), (0.28, false), (10.0, false)] {
        let cfg = PredictorConfig {
            model: PredictorModel::LastGradient,
            residual_threshold: threshold,
            residual_rate: 0.5,
            ..PredictorConfig::default()
        };
        let mut p = GradientPredictor::new(3, cfg).unwrap();
        p.record(0, &g0).unwrap();
        let q = p.record_correction(1, &g1).unwrap();
        // The prediction was g₀: cosine ⟨g₀,g₁⟩/(‖g₀‖‖g₁‖) = 9/(√6·√17).
        assert!((f64::from(q.cosine) - 9.0 / (6f64.sqrt() * 17f64.sqrt())).abs() < 1e-6);
        assert!((f64::from(q.relative_error) - 5f64.sqrt() / 17f64.sqrt()).abs() < 1e-6);
        assert!((f64::from(p.residual_ratio()) - ratio).abs() < 1e-6);
        assert_eq!(p.residual_active(), active, "threshold {threshold}");
        let out = p.predict(2).unwrap();
        for i in 0..3 {
            let r = 0.5f32 * 0.0 + 0.5 * (g1[i] - g0[i]);
            let want = if active { g1[i] + r } else { g1[i] };
            assert_eq!(out[i], want);
        }
    }
}

/// The threshold is relative: scaling every gradient by 2¹⁰ changes neither the ratio (bit for
/// bit, since power-of-two scaling is exact) nor the decision.
#[test]
fn threshold_is_scale_free() {
    let run = |scale: f32| {
        let cfg = PredictorConfig {
            history: HistoryMode::Streaming,
            residual_threshold: 0.05,
            ..PredictorConfig::default()
        };
        let mut p = GradientPredictor::new(4, cfg).unwrap();
        for t in 0..4u64 {
            let tf = t as f32;
            p.record(t, &[scale * tf, scale * tf * tf, -scale, scale * 0.5])
                .unwrap();
        }
        p.record_correction(6, &[scale * 6.0, scale * 36.0, -scale, scale * 0.5])
            .unwrap();
        (p.residual_ratio(), p.residual_active())
    };
    let (r1, a1) = run(1.0);
    let (r2, a2) = run(1024.0);
    let (r3, a3) = run(1.0 / 1024.0);
    assert_eq!((r1, a1), (r2, a2));
    assert_eq!((r1, a1), (r3, a3));
    assert!(r1 > 0.05 && a1);
}

/// A model with a constant lag (the decayed mean of a ramp lags by a fixed amount) is fixed by
/// the residual: the lag at h = 1 with decay 0.5 is 2 (mean at t − 1, truth at t + 1), and
/// r → 2 geometrically with ρ = 0.5, so after 30 corrections the error is ≤ 2·0.5³⁰·scale.
#[test]
fn residual_removes_constant_lag() {
    let cfg = PredictorConfig {
        model: PredictorModel::DecayedMean,
        history: HistoryMode::Streaming,
        decay: 0.5,
        residual_threshold: 0.0,
        residual_rate: 0.5,
        ..PredictorConfig::default()
    };
    let mut p = GradientPredictor::new(2, cfg).unwrap();
    for t in 0..40u64 {
        p.record(t, &[t as f32, 1.0]).unwrap();
    }
    let first = p.record_correction(40, &[40.0, 1.0]).unwrap();
    let mut last = first;
    for t in 41..70u64 {
        last = p.record_correction(t, &[t as f32, 1.0]).unwrap();
    }
    assert!(first.relative_error > 0.02, "{first:?}");
    assert!(last.relative_error < 1e-5, "{last:?}");
    let out = p.predict(70).unwrap();
    assert!((out[0] - 70.0).abs() < 1e-3, "{out:?}");
}

/// r is allocated at the first correction (one f32 per element) and kept by `reset`.
#[test]
fn residual_memory_and_reset() {
    let n = 1000;
    let mut p = GradientPredictor::new(
        n,
        config(PredictorModel::LinearWls, HistoryMode::Streaming, 0.9),
    )
    .unwrap();
    assert_eq!(p.memory_bytes(), 2 * 4 * n);
    p.record(0, &vec![1.0; n]).unwrap();
    p.record_correction(1, &vec![2.0; n]).unwrap();
    assert_eq!(p.memory_bytes(), 3 * 4 * n);
    for t in 1..50u64 {
        p.record_correction(2 * t, &vec![t as f32; n]).unwrap();
        p.record(2 * t + 1, &vec![1.0; n]).unwrap();
    }
    assert_eq!(p.memory_bytes(), 3 * 4 * n, "no growth in steady state");
    p.reset();
    assert_eq!(p.memory_bytes(), 3 * 4 * n);
    assert_eq!(p.samples(), 0);
    assert!(!p.residual_active());
    assert!(p.predict(5).is_err());
    p.record(0, &vec![3.0; n]).unwrap();
    assert_eq!(
        p.predict(9).unwrap(),
        vec![3.0; n],
        "reset left no residual or history"
    );
}
