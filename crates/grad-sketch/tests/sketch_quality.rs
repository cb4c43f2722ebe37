//! The VSA sketch's quality laws: the √ρ cosine bound, unbiasedness, quantization loss,
//! error feedback's telescoping sum, projection idempotence and contraction.

use grad_sketch::{BundleQuantization, MIN_SLOTS, Reconstruction, SketchCompressor, SketchConfig};
use proptest::prelude::*;

use grad_sketch::test_support::{config, cos, dot, gauss, grads, norm, shapes};

/// One host vector through a single-parameter compressor.
fn roundtrip(x: &[f32], cfg: SketchConfig) -> Vec<f32> {
    let shapes = vec![("g".to_string(), vec![x.len()])];
    let mut c = SketchCompressor::new(&shapes, cfg).unwrap();
    let z = c.compress(&[x]).unwrap();
    c.decompress(&z).unwrap().remove(0)
}

#[test]
fn cosine_meets_the_sqrt_rho_bound_in_every_mode() {
    // n = 40_000 Gaussian entries, D = 8192 (so ρ = 0.5 uses 3 bundles). For an orthogonal
    // projection of rank m, cos² = ‖Px‖²/‖x‖² has mean m/n and relative standard deviation
    // about √(2/m) (docs/vsa-core.md §4), so cos has relative sd ≈ √(2/m)/2; we allow 6σ.
    let n = 40_000;
    let x = gauss(n, 1);
    for rho in [0.5, 0.25, 0.1, 0.01] {
        let m = (rho * n as f64).ceil();
        let bound = (m / n as f64).sqrt();
        let tol = 3.0 * (2.0 / m).sqrt();
        let mut cosines = Vec::new();
        for mode in [
            Reconstruction::Projection,
            Reconstruction::Unbiased,
            Reconstruction::NormMatched,
        ] {
            let cfg = SketchConfig::builder()
                .compression_ratio(rho)
                .seed(3)
                .reconstruction(mode)
                .build();
            let xh = roundtrip(&x, cfg);
            let c = cos(&x, &xh);
            let ratio = norm(&xh) / norm(&x);
            assert!(
                (c / bound - 1.0).abs() < tol,
                "{mode:?} ρ={rho}: cos {c}, bound {bound}"
            );
            match mode {
                // Orthogonal projector: ⟨x, Px⟩ = ‖Px‖², so norm ratio == cosine.
                Reconstruction::Projection => assert!((ratio - c).abs() < 1e-4, "{ratio} {c}"),
                // Sᵀ S = k·P when every slot is reached by k chunks: ratio ≈ k·cos ≈ 1/√ρ.
                Reconstruction::Unbiased => {
                    assert!((ratio * bound - 1.0).abs() < 2.0 * tol, "ρ={rho}: {ratio}")
                }
                Reconstruction::NormMatched => assert!((ratio - 1.0).abs() < 1e-5, "{ratio}"),
            }
            cosines.push(c);
        }
        // All three modes point the same way when slot counts are uniform.
        assert!((cosines[0] - cosines[2]).abs() < 1e-5);
    }
}

#[test]
fn unbiased_mode_averages_to_the_gradient() {
    // E[Sᵀ S x] = x over the keys: the mean of K = 400 seeds has relative error
    // ≈ √((1/ρ − 1)/K) = √(3/400) ≈ 0.087 at ρ = 0.25, so cos ≥ 0.98 and the norm
    // ratio lies within 1 ± 0.05 (mean of 400 independent estimates of ‖x‖², sd ≈ 0.087²
    // plus the cross term's sd 2·0.087/√n ≪ 0.05).
    let n = 4000;
    let x = gauss(n, 2);
    let k = 400;
    let mut mean = vec![0f32; n];
    for s in 0..k {
        let cfg = SketchConfig::builder()
            .compression_ratio(0.25)
            .seed(s)
            .reconstruction(Reconstruction::Unbiased)
            .build();
        for (m, v) in mean.iter_mut().zip(roundtrip(&x, cfg)) {
            *m += v / k as f32;
        }
    }
    assert!(cos(&x, &mean) > 0.98, "{}", cos(&x, &mean));
    let r = norm(&mean) / norm(&x);
    assert!((r - 1.0).abs() < 0.05, "{r}");
}

#[test]
fn quantized_bundles_lose_what_the_scalar_quantizer_loses() {
    // cos(x, x̂) = cos_w(y, q(y)) · cos(x, Px): ≈ √(2/π) ≈ 0.80 for sign, ≈ 0.9 for the
    // 0.7·mean threshold ternary on Gaussian slots (exact values for a Gaussian: 0.798 and
    // 0.894). m = 4000 slots → the sample cos of the quantizer has sd ≲ 0.01; allow ±0.05.
    let n = 40_000;
    let x = gauss(n, 4);
    let bound = 0.1f64.sqrt();
    for (q, factor) in [
        (BundleQuantization::Sign, 0.798),
        (BundleQuantization::Ternary, 0.894),
    ] {
        let cfg = SketchConfig::builder()
            .compression_ratio(0.1)
            .seed(5)
            .quantization(q)
            .build();
        let xh = roundtrip(&x, cfg);
        let c = cos(&x, &xh);
        assert!((c / (bound * factor) - 1.0).abs() < 0.08, "{q:?}: {c}");
        // Contraction (needed by error feedback): ‖x − x̂‖ < ‖x‖.
        let err: Vec<f32> = x.iter().zip(&xh).map(|(a, b)| a - b).collect();
        assert!(norm(&err) < norm(&x));
    }
}

#[test]
fn error_feedback_telescopes() {
    // With e₀ = 0: Σₜ x̂ₜ = Σₜ gₜ − e_T exactly (up to f32 rounding), so what the optimizer
    // receives lags the true sum by one bounded residual. Per step the bookkeeping is
    // applied + residual = input + previous residual, to one f32 rounding of each term.
    for q in [BundleQuantization::F32, BundleQuantization::Sign] {
        let cfg = SketchConfig {
            error_feedback: true,
            quantization: q,
            ..config(0.1)
        };
        let mut c = SketchCompressor::new(&shapes(), cfg).unwrap();
        assert_eq!(c.memory_bytes() % 4, 0);
        assert!(c.memory_bytes() >= 4 * 2281);
        let steps = 30;
        let mut sum_g = vec![vec![0f64; 0]; 3];
        let mut sum_h = vec![vec![0f64; 0]; 3];
        let mut max_res = 0f64;
        for t in 0..steps {
            let host = grads(100 + t);
            let prev: Vec<Vec<f32>> = c
                .params()
                .list()
                .iter()
                .map(|p| c.residual(&p.name).unwrap().to_vec())
                .collect();
            let z = c.compress(&host).unwrap();
            let h = c.decompress(&z).unwrap();
            for i in 0..3 {
                if sum_g[i].is_empty() {
                    sum_g[i] = vec![0.0; host[i].len()];
                    sum_h[i] = vec![0.0; host[i].len()];
                }
                let e = c.residual(&c.params().list()[i].name).unwrap();
                for j in 0..host[i].len() {
                    sum_g[i][j] += f64::from(host[i][j]);
                    sum_h[i][j] += f64::from(h[i][j]);
                    // e_new = (g + e_old) − h in f32: exact up to two roundings.
                    let v = host[i][j] + prev[i][j];
                    assert_eq!(e[j], v - h[i][j]);
                }
            }
            let r = c.residual("layer.weight").unwrap();
            max_res = max_res.max(norm(r) / norm(&host[1]));
        }
        for (i, p) in c.params().list().iter().enumerate() {
            let e = c.residual(&p.name).unwrap();
            for j in 0..e.len() {
                let lhs = sum_h[i][j] + f64::from(e[j]);
                assert!(
                    (lhs - sum_g[i][j]).abs() < 1e-3,
                    "{}[{j}]: {lhs} vs {}",
                    p.name,
                    sum_g[i][j]
                );
            }
        }
        // Fresh keys every call: E‖(I − Pₜ)v‖² = (1 − ρ)‖v‖² for any fixed v, so for
        // independent zero-mean gradients E‖e‖² → (1−ρ)/ρ·‖g‖² in steady state, ‖e‖ ≈ 3‖g‖
        // at ρ = 0.1 (sign quantization loses a little more).
        assert!(max_res < 4.0, "{q:?}: residual grew to {max_res}×‖g‖");
        c.reset_error_feedback();
        assert_eq!(norm(c.residual("layer.bias").unwrap()), 0.0);
    }
}

#[test]
fn tiny_tensors_get_min_slots_and_are_exact_when_fully_kept() {
    let shapes = vec![("a".to_string(), vec![10]), ("b".to_string(), vec![5])];
    let cfg = SketchConfig::builder().compression_ratio(0.01).build();
    let mut c = SketchCompressor::new(&shapes, cfg).unwrap();
    assert_eq!(c.layout(), vec![(MIN_SLOTS, 1), (5, 1)]);
    // m = n: one chunk, S = diag(±1), so P = I and the round trip is exact.
    let (a, b) = (gauss(10, 1), gauss(5, 2));
    let z = c.compress(&[&a[..], &b[..]]).unwrap();
    let out = c.decompress(&z).unwrap();
    assert_eq!(out[1], b);
}

#[test]
fn dimension_splits_large_tensors_without_losing_quality() {
    // 200 000 elements at ρ = 0.1 and D = 1000: 20 bundles of 1000 slots.
    let n = 200_000;
    let x = gauss(n, 6);
    let cfg = SketchConfig::builder()
        .dimension(1000)
        .compression_ratio(0.1)
        .seed(7)
        .build();
    let shapes = vec![("g".to_string(), vec![n])];
    let mut c = SketchCompressor::new(&shapes, cfg).unwrap();
    assert_eq!(c.layout(), vec![(20_000, 20)]);
    let z = c.compress(&[&x[..]]).unwrap();
    assert!((z.stats.compression_ratio - 10.0).abs() < 0.01);
    let xh = c.decompress(&z).unwrap().remove(0);
    // m = 20 000 slots: 6σ relative band 3·√(2/m) = 0.03.
    let c0 = cos(&x, &xh);
    assert!((c0 / 0.1f64.sqrt() - 1.0).abs() < 0.03, "{c0}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Projection reconstruction is an orthogonal projector: P(Px) = Px, and
    /// ‖x − Px‖² = ‖x‖² − ‖Px‖² (so error feedback's residual never grows).
    #[test]
    fn projection_is_idempotent_and_contractive(
        n in 1usize..2000, rho in 0.01f64..=1.0, d in 1usize..500, seed in any::<u64>()
    ) {
        let x = gauss(n, seed);
        let cfg = SketchConfig::builder().dimension(d).compression_ratio(rho).seed(seed).build();
        let px = roundtrip(&x, cfg);
        let ppx = roundtrip(&px, cfg);
        let scale = norm(&x).max(1e-6);
        for (a, b) in px.iter().zip(&ppx) {
            prop_assert!((f64::from(*a) - f64::from(*b)).abs() < 1e-5 * scale);
        }
        let err: Vec<f32> = x.iter().zip(&px).map(|(a, b)| a - b).collect();
        let lhs = dot(&err, &err);
        let rhs = dot(&x, &x) - dot(&px, &px);
        prop_assert!((lhs - rhs).abs() < 1e-4 * dot(&x, &x).max(1e-6));
    }

    /// Quantized bundles with projection decoding stay contractive: ‖x − x̂‖ ≤ ‖x‖.
    #[test]
    fn quantized_projection_is_contractive(
        n in 1usize..2000, rho in 0.01f64..=1.0, d in 1usize..500, seed in any::<u64>(), t in any::<bool>()
    ) {
        let x = gauss(n, seed);
        let q = if t { BundleQuantization::Ternary } else { BundleQuantization::Sign };
        let cfg = SketchConfig::builder().dimension(d).compression_ratio(rho).seed(seed)
            .quantization(q).build();
        let xh = roundtrip(&x, cfg);
        let err: Vec<f32> = x.iter().zip(&xh).map(|(a, b)| a - b).collect();
        prop_assert!(dot(&err, &err) <= dot(&x, &x) * (1.0 + 1e-5));
    }
}
