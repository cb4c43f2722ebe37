//! Shared statistics of the accumulator tests (`stats.rs`, `dither.rs`): seeded micro-batch
//! gradients, replicated windows, the χ² statistic and the replayed error derivation.
use crate::common::{normal, rng, student_t3};
use ternary_quant::*;

/// The χ² acceptance half-width: `T` over `n` elements is about `χ²_n` (mean `n`, sd
/// `√(2n)`); the tests assert `|T − n| < 6·√(2n)`.
pub fn chi2_bound(n: usize) -> f64 {
    6.0 * (2.0 * n as f64).sqrt()
}

/// `k` micro-batch gradients: per-element mean plus heavy-tailed noise, and their exact mean.
pub fn micro_batches(n: usize, k: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<f64>) {
    let mut r = rng(seed);
    let mu: Vec<f64> = (0..n).map(|_| 0.3 * normal(&mut r)).collect();
    let gs: Vec<Vec<f32>> = (0..k)
        .map(|_| mu.iter().map(|m| (m + student_t3(&mut r)) as f32).collect())
        .collect();
    let exact = (0..n)
        .map(|i| gs.iter().map(|g| f64::from(g[i])).sum::<f64>() / k as f64)
        .collect();
    (gs, exact)
}

/// Per-element mean and (unbiased) variance of the accumulated mean over `reps` seeds.
pub fn replicate(cfg: AccumulatorConfig, gs: &[Vec<f32>], reps: usize) -> (Vec<f64>, Vec<f64>) {
    let n = gs[0].len();
    let (mut s1, mut s2) = (vec![0f64; n], vec![0f64; n]);
    let mut acc = PackedAccumulator::new(n, cfg).unwrap();
    let mut out = vec![0f32; n];
    for rep in 0..reps {
        acc.reset_with_seed(rep as u64);
        for g in gs {
            acc.accumulate(g).unwrap();
        }
        acc.mean_into(&mut out).unwrap();
        for ((a, b), &m) in s1.iter_mut().zip(s2.iter_mut()).zip(&out) {
            *a += f64::from(m);
            *b += f64::from(m) * f64::from(m);
        }
    }
    let mean: Vec<f64> = s1.iter().map(|a| a / reps as f64).collect();
    let var = s2
        .iter()
        .zip(&mean)
        .map(|(b, m)| (b / reps as f64 - m * m) * reps as f64 / (reps - 1) as f64)
        .collect();
    (mean, var)
}

/// `T = Σ (m̄_i − target_i)² / (σ̂_i²/N)` over elements with non-zero spread, and its dof.
pub fn t_stat(mean: &[f64], var: &[f64], target: &[f64], reps: usize) -> (f64, usize) {
    let (mut t, mut dof) = (0f64, 0usize);
    for ((m, v), e) in mean.iter().zip(var).zip(target) {
        if *v > 1e-12 {
            t += (m - e).powi(2) / (v / reps as f64);
            dof += 1;
        }
    }
    (t, dof)
}

/// The χ² check of `cfg`'s accumulated mean over `reps` seeded windows of `gs`: `T` against
/// the exact mean within [`chi2_bound`] (σ̂² from the same replicas: each term is a squared
/// t statistic with mean (N−1)/(N−3) ≈ 1, so `T` keeps mean ≈ n), over more than 600
/// elements; and its power: the same statistic rejects a 10% multiplicative bias (1% at 5
/// trits, whose variance is small enough).
pub fn assert_unbiased(
    cfg: AccumulatorConfig,
    gs: &[Vec<f32>],
    exact: &[f64],
    reps: usize,
    tag: &str,
) {
    let (mean, var) = replicate(cfg, gs, reps);
    let (t, dof) = t_stat(&mean, &var, exact, reps);
    assert!(dof > 600, "{tag}: dof {dof}");
    assert!(
        (t - dof as f64).abs() < chi2_bound(dof),
        "{tag}: T = {t}, dof = {dof}"
    );
    let factor = if cfg.trits_per_element == 5 {
        1.01
    } else {
        1.10
    };
    let biased: Vec<f64> = exact.iter().map(|e| e * factor).collect();
    let (tb, _) = t_stat(&mean, &var, &biased, reps);
    assert!(tb - dof as f64 > chi2_bound(dof), "{tag}: T(biased) = {tb}");
}

/// Measured ÷ predicted mean squared error of the accumulated mean, over `reps` seeded
/// windows of `cfg` (f32 scales per 100-element block) on `gs`. Each replica replays the
/// scheme: with `v_k` the value rounded at step `k` (from the decoded mean that `mean()`
/// returns), `u = max_b |v_k| / L` its block's level unit and `f = frac(v/u)`, step `k`
/// (1-based) adds `u²·unit_var(f, k)` per element, weighted `(k/K)²` in the final mean.
pub fn error_ratio(
    cfg: AccumulatorConfig,
    gs: &[Vec<f32>],
    exact: &[f64],
    reps: u64,
    unit_var: impl Fn(f64, usize) -> f64,
) -> f64 {
    let (n, k) = (exact.len(), gs.len());
    let cfg = AccumulatorConfig {
        accumulation_steps: k,
        scale_granularity: ScaleGranularity::PerBlock(100),
        scale_format: ScaleFormat::F32,
        ..cfg
    };
    let l = f64::from(max_level(cfg.trits_per_element));
    let (mut measured, mut predicted) = (0f64, 0f64);
    let mut acc = PackedAccumulator::new(n, cfg).unwrap();
    for rep in 0..reps {
        acc.reset_with_seed(rep);
        for (step, g) in gs.iter().enumerate() {
            let kk = (step + 1) as f64;
            let v: Vec<f64> = acc
                .mean()
                .iter()
                .zip(g)
                .map(|(&a, &b)| (kk - 1.0) / kk * f64::from(a) + f64::from(b) / kk)
                .collect();
            for blk in v.chunks(100) {
                let u = blk.iter().fold(0f64, |x, y| x.max(y.abs())) / l;
                if u == 0.0 {
                    continue;
                }
                let var: f64 = blk
                    .iter()
                    .map(|x| {
                        let y = x / u;
                        u * u * unit_var(y - y.floor(), step + 1)
                    })
                    .sum();
                predicted += (kk / k as f64).powi(2) * var;
            }
            acc.accumulate(g).unwrap();
        }
        measured += acc
            .mean()
            .iter()
            .zip(exact)
            .map(|(a, b)| (f64::from(*a) - b).powi(2))
            .sum::<f64>();
    }
    measured / predicted
}
