//! Statistical tests of unbiasedness and of the stated variances.
//!
//! Method (used throughout): for fixed data, draw `N` independent replicas by changing the
//! seed or step. For each element `i` with per-replica variance `v_i`, the replica mean
//! `m̄_i` has variance `v_i / N`, and by the CLT `(m̄_i − μ_i)² / (v_i/N)` is close to a χ²₁
//! variable. Summing over `n` independent elements gives `T ~ χ²_n`: mean `n`, standard
//! deviation `sqrt(2n)`. We assert `|T − n| < 6·sqrt(2n)` (a false alarm has probability
//! below 1e-6 even allowing for the CLT's heavier tails). The test fails both for a bias
//! (which adds `N·b_i²/v_i` per element) and for a wrong variance (which scales `T`).
use crate::accstats::{assert_unbiased, chi2_bound, error_ratio, micro_batches, replicate};
use crate::common::{rng, student_t3};
use ternary_quant::*;

fn test_vector(n: usize, seed: u64) -> Vec<f32> {
    let mut r = rng(seed);
    let mut x: Vec<f32> = (0..n).map(|_| student_t3(&mut r) as f32).collect();
    // Exact zeros and an element at the max: both must be reproduced exactly.
    x[0] = 0.0;
    x[1] = -0.0;
    x
}

#[test]
fn stochastic_quantizer_is_unbiased_with_stated_variance() {
    let n = 2048;
    let reps = 2000usize;
    let x = test_vector(n, 11);
    for scale_factor in [1.0f32, 2.5] {
        let s = max_abs(&x).unwrap() * scale_factor;
        let mut sum = vec![0f64; n];
        let mut q = vec![0i8; n];
        for rep in 0..reps {
            quantize_stochastic_into(&x, s, RngKey::new(3, rep as u64, 1), 0, &mut q).unwrap();
            for (a, &t) in sum.iter_mut().zip(&q) {
                *a += f64::from(s) * f64::from(t);
            }
        }
        let (mut t_stat, mut dof, mut z_num, mut z_var) = (0f64, 0usize, 0f64, 0f64);
        for (i, &xi) in x.iter().enumerate() {
            let xi = f64::from(xi);
            let mean = sum[i] / reps as f64;
            // Stated variance of s·q: s|x| − x².
            let v = f64::from(s) * xi.abs() - xi * xi;
            if v <= 1e-12 {
                assert_eq!(mean, xi, "deterministic element {i} must be exact");
                continue;
            }
            t_stat += (mean - xi).powi(2) / (v / reps as f64);
            z_num += mean - xi;
            z_var += v / reps as f64;
            dof += 1;
        }
        // Sum of the errors: Normal(0, sum v_i / N); |z| < 5.
        let z = z_num / z_var.sqrt();
        assert!(z.abs() < 5.0, "s factor {scale_factor}: z = {z}");
        assert!(
            (t_stat - dof as f64).abs() < chi2_bound(dof),
            "s factor {scale_factor}: T = {t_stat}, dof = {dof}"
        );
    }
}

#[test]
fn deterministic_quantizers_have_zero_variance() {
    // Variance 0: output independent of anything but x (no key); repeated calls identical.
    let x = test_vector(999, 5);
    let mut a = vec![0i8; x.len()];
    let mut b = vec![0i8; x.len()];
    let ga = quantize_absmean_into(&x, &mut a).unwrap();
    let gb = quantize_absmean_into(&x, &mut b).unwrap();
    assert_eq!((ga, &a), (gb, &b));
    // ...and biased: the absmean reconstruction of a heavy-tailed vector has a large bias
    // on the largest element (clipped to γ), which the stochastic quantizer does not have.
    let imax = (0..x.len())
        .max_by(|&i, &j| x[i].abs().total_cmp(&x[j].abs()))
        .unwrap();
    assert!((x[imax] - ga * f32::from(a[imax])).abs() > 2.0 * ga);
}

#[test]
fn accumulator_mean_is_unbiased() {
    // 703 elements: three blocks of 320 (the last partial, len not a multiple of 5), or 29
    // blocks of 25. Every trit count, both scale formats, and per-tensor scales.
    let (gs, exact) = micro_batches(703, 8, 21);
    let reps = 1000;
    let f32_320 = AccumulatorConfig::block320_f32();
    let mut cases = vec![
        (f32_320, "block 320, f32"),
        (
            AccumulatorConfig {
                scale_granularity: ScaleGranularity::PerTensor,
                ..f32_320
            },
            "per tensor, f32",
        ),
        (
            AccumulatorConfig {
                scale_granularity: ScaleGranularity::PerTensor,
                ..Default::default()
            },
            "per tensor, log8",
        ),
    ];
    for n in SUPPORTED_TRITS {
        cases.push((
            AccumulatorConfig {
                trits_per_element: n,
                ..Default::default()
            },
            "block 25, log8",
        ));
    }
    cases.push((
        AccumulatorConfig {
            trits_per_element: 2,
            ..f32_320
        },
        "block 320, f32",
    ));
    for (base, name) in cases {
        let cfg = AccumulatorConfig {
            accumulation_steps: 8,
            tensor_id: 4,
            ..base
        };
        let tag = format!("{name}, {} trits", cfg.trits_per_element);
        assert_unbiased(cfg, &gs, &exact, reps, &tag);
    }
}

/// The error formula of `docs/ternary.md` §3: with `v_k` the value requantized at step `k`,
/// `u_{k,b} = s_{k,b}/L` its block's level unit and `f = frac(v/u)` (`f(1 − f)` is even in `v`),
/// `E‖m_K − M_K‖² = Σ_k (k/K)² E[Σ_i u²·f(1 − f)]`. Each replica replays the scheme
/// (f32 scales, so `s_{k,b} = max_b |v_k|` is recomputed from `v_k`) and sums the conditional
/// variances it implies; their mean must match the measured mean squared error.
#[test]
fn accumulator_error_matches_the_derivation() {
    let (gs, exact) = micro_batches(700, 8, 5);
    for trits in [1u8, 2] {
        let cfg = AccumulatorConfig {
            trits_per_element: trits,
            ..Default::default()
        };
        let ratio = error_ratio(cfg, &gs, &exact, 300, |f, _| f * (1.0 - f));
        // 300 replicas of a sum over 700 elements: the ratio's sampling error is ~1%.
        assert!(
            (ratio - 1.0).abs() < 0.05,
            "{trits} trits: measured/predicted = {ratio}"
        );
    }
}

#[test]
fn deterministic_accumulator_is_biased() {
    // The absmean variant has zero variance across seeds and a mean error far above what
    // the stochastic variant shows: documents why stochastic is the default.
    let (gs, exact) = micro_batches(703, 8, 21);
    let cfg = AccumulatorConfig {
        stochastic: false,
        ..Default::default()
    };
    let (mean, var) = replicate(cfg, &gs, 3);
    assert!(var.iter().all(|&v| v.abs() < 1e-9));
    let err: f64 = mean
        .iter()
        .zip(&exact)
        .map(|(m, e)| (m - e).powi(2))
        .sum::<f64>();
    let norm: f64 = exact.iter().map(|e| e * e).sum::<f64>();
    assert!(
        (err / norm).sqrt() > 0.3,
        "relative bias {}",
        (err / norm).sqrt()
    );
}

#[test]
fn per_block_scales_beat_per_tensor_on_heavy_tails() {
    // The scheme choice in docs/ternary.md, as a test: relative L2 error of one accumulation
    // of 8 heavy-tailed micro-batches, averaged over 4 seeds.
    let n = 20_000;
    let (gs, exact) = micro_batches(n, 8, 77);
    let norm = exact.iter().map(|e| e * e).sum::<f64>().sqrt();
    let rel = |g: ScaleGranularity| {
        let mut total = 0.0;
        for seed in 0..4 {
            let cfg = AccumulatorConfig {
                seed,
                scale_granularity: g,
                ..Default::default()
            };
            let mut acc = PackedAccumulator::new(n, cfg).unwrap();
            for g in &gs {
                acc.accumulate(g).unwrap();
            }
            let m = acc.mean();
            let e: f64 = m
                .iter()
                .zip(&exact)
                .map(|(a, b)| (f64::from(*a) - b).powi(2))
                .sum();
            total += e.sqrt() / norm;
        }
        total / 4.0
    };
    let per_block = rel(ScaleGranularity::PerBlock(DEFAULT_SCALE_BLOCK));
    let per_tensor = rel(ScaleGranularity::PerTensor);
    assert!(
        per_block < 0.7 * per_tensor,
        "block {per_block} vs tensor {per_tensor}"
    );
}
