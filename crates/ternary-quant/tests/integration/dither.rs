//! [`Rounding::Subtractive`]: unbiasedness (χ²), the error of `docs/ternary.md` §3.3,
//! determinism across threads, checkpoint round trips and bad configs.
//!
//! The χ² method is the one of `stats.rs`: `T = Σ (m̄_i − μ_i)²/(σ̂_i²/N)` over `n`
//! elements is about `χ²_n` (mean `n`, sd `√(2n)`); we assert `|T − n| < 6·√(2n)`.
use crate::accstats::{assert_unbiased, error_ratio, micro_batches};
use ternary_quant::*;

fn dithered(base: AccumulatorConfig) -> AccumulatorConfig {
    AccumulatorConfig {
        rounding: Rounding::SUBTRACTIVE,
        ..base
    }
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
        assert_unbiased(cfg, &gs, &exact, reps, &tag);
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
    let (gs, exact) = micro_batches(700, 8, 5);
    for (trits, lambda) in [(1u8, 1.0f32), (2, 1.0), (2, 0.5), (3, 1.0)] {
        let rounding = Rounding::Subtractive { lambda };
        let cfg = AccumulatorConfig {
            trits_per_element: trits,
            rounding,
            ..Default::default()
        };
        let ratio = error_ratio(cfg, &gs, &exact, 300, |f, k| {
            let lam = f64::from(rounding.lambda_at(k, trits));
            f * (1.0 - f) * (1.0 - lam) + lam * lam / 12.0
        });
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
