//! [`Rounding::Subtractive`]: unbiasedness (χ²), the error of `docs/ternary.md` §3.3,
//! determinism across threads, checkpoint round trips and bad configs.
//!
//! The χ² method is the one of `stats.rs`: `T = Σ (m̄_i − μ_i)²/(σ̂_i²/N)` over `n`
//! elements is about `χ²_n` (mean `n`, sd `√(2n)`); we assert `|T − n| < 6·√(2n)`.
use crate::common::{normal, rng, student_t3};
use ternary_quant::*;

fn chi2_bound(n: usize) -> f64 {
    6.0 * (2.0 * n as f64).sqrt()
}

/// `k` micro-batch gradients: per-element mean plus heavy-tailed noise, and their exact mean.
fn micro_batches(n: usize, k: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<f64>) {
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

fn dithered(base: AccumulatorConfig) -> AccumulatorConfig {
    AccumulatorConfig {
        rounding: Rounding::SUBTRACTIVE,
        ..base
    }
}

/// Per-element mean and (unbiased) variance of the accumulated mean over `reps` seeds.
fn replicate(cfg: AccumulatorConfig, gs: &[Vec<f32>], reps: usize) -> (Vec<f64>, Vec<f64>) {
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

fn t_stat(mean: &[f64], var: &[f64], target: &[f64], reps: usize) -> (f64, usize) {
    let (mut t, mut dof) = (0f64, 0usize);
    for ((m, v), e) in mean.iter().zip(var).zip(target) {
        if *v > 1e-12 {
            t += (m - e).powi(2) / (v / reps as f64);
            dof += 1;
        }
    }
    (t, dof)
}

#[test]
fn dithered_mean_is_unbiased() {
    // 703 elements (not a multiple of 5): 29 blocks of 25 with 8-bit scales at every trit
    // count, 3 blocks of 320 with f32 scales, and one per-tensor scale.
    let (gs, exact) = micro_batches(703, 8, 21);
    let reps = 800;
    let mut cases: Vec<AccumulatorConfig> = SUPPORTED_TRITS
        .iter()
        .map(|&n| AccumulatorConfig {
            trits_per_element: n,
            ..Default::default()
        })
        .collect();
    cases.push(AccumulatorConfig::block320_f32());
    cases.push(AccumulatorConfig {
        scale_granularity: ScaleGranularity::PerTensor,
        trits_per_element: 2,
        ..Default::default()
    });
    for base in cases {
        let cfg = dithered(AccumulatorConfig {
            accumulation_steps: 8,
            tensor_id: 4,
            ..base
        });
        let tag = format!("{:?}", cfg);
        let (mean, var) = replicate(cfg, &gs, reps);
        // σ̂² from the same N replicas: each term is a squared t statistic, mean ≈ 1.
        let (t, dof) = t_stat(&mean, &var, &exact, reps);
        assert!(dof > 600, "{tag}: dof {dof}");
        assert!(
            (t - dof as f64).abs() < chi2_bound(dof),
            "{tag}: T = {t}, dof = {dof}"
        );
        // Power: the same statistic rejects a 10% multiplicative bias (1% at 5 trits).
        let factor = if cfg.trits_per_element == 5 {
            1.01
        } else {
            1.10
        };
        let biased: Vec<f64> = exact.iter().map(|e| e * factor).collect();
        let (tb, _) = t_stat(&mean, &var, &biased, reps);
        assert!(tb - dof as f64 > chi2_bound(dof), "{tag}: T(biased) = {tb}");
    }
}

/// `docs/ternary.md` §3.3: with `v_k` the value rounded at step `k`, `u = s_{k,b}/L` and
/// `f = frac(v/u)` (signed `v`: the monotone rounding), each step adds the conditional
/// variance `u²·[f(1 − f)(1 − λ_k) + λ_k²/12]`, `λ_k = min(λ, 2L/k)`, and
/// `E‖m̂_K − M_K‖² = Σ_k (k/K)² E[Σ_i that]`. Each replica replays the scheme (f32 scales:
/// `s = max_b |v|` is recomputed from `v_k`, itself from the decoded `m̂_{k−1}` that
/// `mean()` returns) and sums the variances it implies; the mean must match the measured
/// mean squared error.
#[test]
fn dithered_error_matches_the_derivation() {
    let (n, k) = (700usize, 8usize);
    let (gs, exact) = micro_batches(n, k, 5);
    for (trits, lambda) in [(1u8, 1.0f32), (2, 1.0), (2, 0.5), (3, 1.0)] {
        let l = f64::from(max_level(trits));
        let rounding = Rounding::Subtractive { lambda };
        let (mut measured, mut predicted) = (0f64, 0f64);
        let reps = 300;
        for rep in 0..reps {
            let cfg = AccumulatorConfig {
                accumulation_steps: k,
                seed: rep,
                trits_per_element: trits,
                scale_granularity: ScaleGranularity::PerBlock(100),
                scale_format: ScaleFormat::F32,
                rounding,
                ..Default::default()
            };
            let mut acc = PackedAccumulator::new(n, cfg).unwrap();
            for (step, g) in gs.iter().enumerate() {
                let kk = (step + 1) as f64;
                let lam = f64::from(rounding.lambda_at(step + 1, trits));
                let m = acc.mean();
                let v: Vec<f64> = m
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
                            let f = y - y.floor();
                            u * u * (f * (1.0 - f) * (1.0 - lam) + lam * lam / 12.0)
                        })
                        .sum();
                    predicted += (kk / k as f64).powi(2) * var;
                }
                acc.accumulate(g).unwrap();
            }
            measured += acc
                .mean()
                .iter()
                .zip(&exact)
                .map(|(a, b)| (f64::from(*a) - b).powi(2))
                .sum::<f64>();
        }
        let ratio = measured / predicted;
        // 300 replicas of a sum over 700 elements: the ratio's sampling error is ~1%.
        assert!(
            (ratio - 1.0).abs() < 0.05,
            "{trits} trits, lambda {lambda}: measured/predicted = {ratio}"
        );
    }
}

/// At two trits the dithered decode has a smaller error than stochastic rounding (the
/// derivation: `1/12` against `p(1 − p)`, about `1/6` on average), averaged over 20 seeds.
#[test]
fn dither_beats_stochastic_rounding_at_two_trits() {
    let (gs, exact) = micro_batches(2000, 8, 9);
    let mse = |rounding: Rounding| {
        let cfg = AccumulatorConfig {
            trits_per_element: 2,
            rounding,
            ..Default::default()
        };
        let (mut total, mut acc) = (0f64, PackedAccumulator::new(2000, cfg).unwrap());
        for seed in 0..20 {
            acc.reset_with_seed(seed);
            for g in &gs {
                acc.accumulate(g).unwrap();
            }
            total += acc
                .mean()
                .iter()
                .zip(&exact)
                .map(|(a, b)| (f64::from(*a) - b).powi(2))
                .sum::<f64>();
        }
        total
    };
    let (sr, sd) = (mse(Rounding::Stochastic), mse(Rounding::SUBTRACTIVE));
    assert!(sd < 0.8 * sr, "dithered {sd} vs stochastic {sr}");
}

/// Bit-identical states from 4 threads at once, at every trit count.
#[test]
fn dithered_accumulator_is_thread_independent() {
    let (gs, _) = micro_batches(5003, 4, 3);
    for n in SUPPORTED_TRITS {
        let cfg = dithered(AccumulatorConfig {
            accumulation_steps: 4,
            seed: 5,
            trits_per_element: n,
            ..Default::default()
        });
        let run = || {
            let mut a = PackedAccumulator::new(5003, cfg).unwrap();
            for x in &gs {
                a.accumulate(x).unwrap();
            }
            (a.state(), a.mean())
        };
        let single = run();
        let all: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4).map(|_| s.spawn(run)).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(all.iter().all(|st| *st == single), "{n} trits");
    }
}

/// A checkpoint taken mid-window resumes to the bit-identical mean (the count keys the
/// draws the decode regenerates), in a new accumulator and in place; a state of the other
/// rounding is rejected with the accumulator unchanged.
#[test]
fn dithered_checkpoint_round_trip() {
    let (gs, _) = micro_batches(1003, 6, 17);
    for n in SUPPORTED_TRITS {
        let cfg = dithered(AccumulatorConfig {
            accumulation_steps: 6,
            seed: 12,
            trits_per_element: n,
            ..Default::default()
        });
        let mut a = PackedAccumulator::new(1003, cfg).unwrap();
        for g in &gs[..3] {
            a.accumulate(g).unwrap();
        }
        let snap = a.state();
        let mut b = PackedAccumulator::from_state(snap.clone()).unwrap();
        assert_eq!(b.mean(), a.mean(), "{n} trits: mean after restore");
        let mut c = PackedAccumulator::new(1003, cfg).unwrap();
        c.restore(&snap).unwrap();
        for g in &gs[3..] {
            a.accumulate(g).unwrap();
            b.accumulate(g).unwrap();
            c.accumulate(g).unwrap();
        }
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.mean(), b.mean());
        // Restoring a stochastic state into a dithered accumulator is a config mismatch.
        let mut plain = PackedAccumulator::new(
            1003,
            AccumulatorConfig {
                rounding: Rounding::Stochastic,
                ..cfg
            },
        )
        .unwrap();
        plain.accumulate(&gs[0]).unwrap();
        let before = a.clone();
        assert!(matches!(
            a.restore(&plain.state()),
            Err(Error::InvalidParameter {
                param: "config",
                ..
            })
        ));
        assert_eq!(a, before);
    }
}

/// Bad configs are typed errors naming `rounding`; bad input to a dithered accumulator
/// leaves it unchanged (snapshot compare).
#[test]
fn dithered_bad_input_is_a_typed_error_with_state_unchanged() {
    for rounding in [
        Rounding::Subtractive { lambda: -0.5 },
        Rounding::Subtractive { lambda: 2.5 },
        Rounding::Subtractive { lambda: f32::NAN },
    ] {
        let cfg = AccumulatorConfig {
            rounding,
            ..Default::default()
        };
        assert!(matches!(
            PackedAccumulator::new(10, cfg),
            Err(Error::InvalidParameter {
                param: "rounding",
                ..
            })
        ));
    }
    let det = AccumulatorConfig {
        stochastic: false,
        rounding: Rounding::SUBTRACTIVE,
        ..Default::default()
    };
    assert!(matches!(
        det.validate(),
        Err(Error::InvalidParameter {
            param: "rounding",
            ..
        })
    ));
    let cfg = dithered(AccumulatorConfig {
        accumulation_steps: 2,
        ..Default::default()
    });
    let mut acc = PackedAccumulator::new(30, cfg).unwrap();
    acc.accumulate(&[0.7; 30]).unwrap();
    let before = acc.clone();
    let mut bad = vec![0.1f32; 30];
    bad[17] = f32::INFINITY;
    assert!(matches!(
        acc.accumulate(&bad),
        Err(Error::NonFinite { index: 17, .. })
    ));
    assert!(matches!(
        acc.accumulate(&[0.0; 29]),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(acc.mean_into(&mut [0.0; 31]).is_err());
    // A state whose config is invalid is rejected by `from_state` before anything is built.
    let mut st = acc.state();
    st.config.rounding = Rounding::Subtractive { lambda: 3.0 };
    assert!(PackedAccumulator::from_state(st).is_err());
    assert_eq!(acc, before);
    acc.accumulate(&[0.1; 30]).unwrap();
    let full = acc.clone();
    assert!(matches!(
        acc.accumulate(&[0.1; 30]),
        Err(Error::AccumulationFull { .. })
    ));
    assert_eq!(acc, full);
}

/// A zero tensor stays exactly zero: zero blocks have scale 0, so the dither term
/// (a multiple of the level unit) vanishes.
#[test]
fn dithered_zero_tensor_stays_zero() {
    let cfg = dithered(AccumulatorConfig {
        accumulation_steps: 3,
        ..Default::default()
    });
    let mut acc = PackedAccumulator::new(50, cfg).unwrap();
    for _ in 0..3 {
        acc.accumulate(&[0.0; 50]).unwrap();
    }
    // A zero block has scale 0: the decode is 0 whatever the dither.
    assert_eq!(acc.mean(), vec![0.0; 50]);
}
