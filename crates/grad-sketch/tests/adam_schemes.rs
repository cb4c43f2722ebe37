//! The optimizer-side schemes under AdamW: [`MomentumCompressor`] (error feedback on the
//! momentum, variance frozen after an exact warm-up) and [`FetchSgd`] (momentum and error
//! in a fixed-key count sketch). Error-feedback bookkeeping, linearity of the sketch-space
//! accumulators, determinism, checkpoints, and bad input with unchanged state.

use grad_sketch::{
    AdamConfig, CompressorConfig, Error, FetchSgd, FetchSgdConfig, Message, Method,
    MomentumCompressor, MomentumConfig, Part,
};

/// Deterministic pseudo-random values in `[-0.5, 0.5)` with a heavy tail on every 17th
/// element (a few large coordinates, as real gradients have).
fn values(n: usize, seed: u64) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
                ^ seed.wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x ^= x >> 31;
            x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^= x >> 29;
            let u = (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            if i % 17 == 3 { 8.0 * u } else { u }
        })
        .collect()
}

fn shapes() -> Vec<(String, Vec<usize>)> {
    vec![("w".into(), vec![24, 40]), ("b".into(), vec![40])]
}

/// Gradients in sorted-name order ("b", then "w") for step `t` and rank `rank`.
fn grads(t: u64, rank: u64) -> Vec<Vec<f32>> {
    vec![values(40, 100 * t + rank), values(960, 100 * t + rank + 7)]
}

fn zeros() -> Vec<Vec<f32>> {
    vec![vec![0f32; 40], vec![0f32; 960]]
}

fn momentum_config(method: Method, warmup: u64) -> MomentumConfig {
    MomentumConfig {
        compressor: CompressorConfig {
            method,
            seed: 3,
            error_feedback: true,
            dense_warmup_steps: warmup,
        },
        adam: AdamConfig::default(),
    }
}

fn fetch_config(zero_recovered: bool, warmup: u64) -> FetchSgdConfig {
    FetchSgdConfig {
        rows: 3,
        ratio: 0.3,
        k_fraction: 0.05,
        seed: 9,
        warmup_steps: warmup,
        zero_recovered,
        sketch_preconditioned: true,
        adam: AdamConfig::default(),
    }
}

/// Plain AdamW's direction for the same gradients, in f32 as the schemes compute it.
fn reference_adam(gs: &[Vec<f32>], steps: u64) -> Vec<f32> {
    let a = AdamConfig::default();
    let (b1, b2, eps) = (a.beta1 as f32, a.beta2 as f32, a.eps as f32);
    let n = gs[0].len();
    let (mut m, mut v, mut d) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
    for (t, g) in gs.iter().enumerate().take(steps as usize) {
        let t = t as f64 + 1.0;
        let sm = (1.0 / (1.0 - a.beta1.powf(t))) as f32;
        let sv = (1.0 / (1.0 - a.beta2.powf(t))) as f32;
        for j in 0..n {
            m[j] = b1 * m[j] + (1.0 - b1) * g[j];
            v[j] = b2 * v[j] + (1.0 - b2) * g[j] * g[j];
            d[j] = (m[j] * sm) / ((v[j] * sv).sqrt() + eps);
        }
    }
    d
}

#[test]
fn warmup_steps_are_exact_adamw() {
    let mut mc = MomentumCompressor::new(
        &shapes(),
        momentum_config(Method::TopK { k_fraction: 0.1 }, 4),
    )
    .unwrap();
    let mut fs = FetchSgd::new(&shapes(), fetch_config(true, 4)).unwrap();
    let (mut o1, mut o2) = (zeros(), zeros());
    let mut history = Vec::new();
    for t in 0..4 {
        let g = grads(t, 0);
        history.push(g[1].clone());
        let m = mc.compress(&g).unwrap();
        assert!(m.parts.iter().all(|p| matches!(p, Part::Dense(_))));
        mc.apply(&[m], &mut o1).unwrap();
        let m = fs.compress(&g).unwrap();
        fs.apply(&[m], &mut o2).unwrap();
        let want = reference_adam(&history, t + 1);
        assert_eq!(o1[1], want, "momentum scheme, warm-up step {t}");
        assert_eq!(o2[1], want, "FetchSGD, warm-up step {t}");
    }
    assert!(!mc.in_warmup() && !fs.in_warmup());
}

#[test]
fn momentum_error_feedback_bookkeeping_and_frozen_variance() {
    let cfg = momentum_config(Method::TopK { k_fraction: 0.05 }, 2);
    let mut mc = MomentumCompressor::new(&shapes(), cfg).unwrap();
    let mut out = zeros();
    let mut applied_steps = 0;
    for t in 0..8 {
        let g = grads(t, 0);
        let m_before: Vec<Vec<f32>> = ["b", "w"]
            .iter()
            .map(|n| mc.momentum(n).unwrap().to_vec())
            .collect();
        let r_before: Vec<Vec<f32>> = ["b", "w"]
            .iter()
            .map(|n| mc.compressor().residual(n).unwrap().to_vec())
            .collect();
        let v_before: Vec<Vec<f32>> = ["b", "w"]
            .iter()
            .map(|n| mc.variance(n).unwrap().to_vec())
            .collect();
        let warm = mc.in_warmup();
        let msg = mc.compress(&g).unwrap();
        let decoded = mc.compressor().decompress(&msg).unwrap();
        mc.apply(std::slice::from_ref(&msg), &mut out).unwrap();
        applied_steps += 1;
        for (i, name) in ["b", "w"].iter().enumerate() {
            let r_after = mc.compressor().residual(name).unwrap();
            if warm {
                assert!(
                    r_after.iter().all(|&r| r == 0.0),
                    "dense warm-up leaves no residual"
                );
                continue;
            }
            // applied + residual = input + previous residual, element by element.
            let b1 = cfg.adam.beta1 as f32;
            for j in 0..g[i].len() {
                let input = b1 * m_before[i][j] + (1.0 - b1) * g[i][j];
                assert_eq!(
                    decoded[i][j] + r_after[j],
                    input + r_before[i][j],
                    "{name}[{j}] step {t}"
                );
            }
            // The exchanged momentum replaces the local one; the variance stays frozen.
            assert_eq!(mc.momentum(name).unwrap(), &decoded[i][..]);
            assert_eq!(mc.variance(name).unwrap(), &v_before[i][..]);
            let kept = decoded[i].iter().filter(|&&x| x != 0.0).count();
            assert!(kept <= (0.05 * g[i].len() as f64).ceil() as usize);
        }
    }
    assert_eq!(mc.step(), applied_steps);
}

#[test]
fn fetch_sketch_is_linear_and_accumulators_match_the_mean_gradient() {
    let cfg = fetch_config(true, 2);
    let mut two = FetchSgd::new(&shapes(), cfg).unwrap();
    let mut one = FetchSgd::new(&shapes(), cfg).unwrap();
    let (mut o2, mut o1) = (zeros(), zeros());
    for t in 0..6 {
        let (g0, g1) = (grads(t, 0), grads(t, 1));
        let mean: Vec<Vec<f32>> = g0
            .iter()
            .zip(&g1)
            .map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x + y) * 0.5).collect())
            .collect();
        let (m0, m1) = (two.compress(&g0).unwrap(), two.compress(&g1).unwrap());
        let mm = one.compress(&mean).unwrap();
        // Sum of sketches = sketch of the sum, up to f32 rounding of the bucket sums.
        for ((a, b), c) in m0.parts.iter().zip(&m1.parts).zip(&mm.parts) {
            let (Part::Dense(a) | Part::Values(a)) = a else {
                panic!("kind")
            };
            let (Part::Dense(b) | Part::Values(b)) = b else {
                panic!("kind")
            };
            let (Part::Dense(c) | Part::Values(c)) = c else {
                panic!("kind")
            };
            let scale = c.iter().fold(1e-3f32, |s, x| s.max(x.abs()));
            for ((a, b), c) in a.iter().zip(b).zip(c) {
                assert!(
                    ((a + b) * 0.5 - c).abs() <= 1e-5 * scale,
                    "{a} + {b} vs 2·{c}"
                );
            }
        }
        two.apply(&[m0, m1], &mut o2).unwrap();
        one.apply(&[mm], &mut o1).unwrap();
        for name in ["b", "w"] {
            for (what, x, y) in [
                (
                    "S_u",
                    two.momentum_sketch(name).unwrap(),
                    one.momentum_sketch(name).unwrap(),
                ),
                (
                    "S_e",
                    two.error_sketch(name).unwrap(),
                    one.error_sketch(name).unwrap(),
                ),
            ] {
                let scale = y.iter().fold(1e-3f32, |s, v| s.max(v.abs()));
                for (a, b) in x.iter().zip(y) {
                    assert!(
                        (a - b).abs() <= 1e-4 * scale,
                        "{what} of {name} at step {t}: {a} vs {b}"
                    );
                }
            }
        }
    }
    // The sketch of a sum is the sum of the sketches (exact for small integers).
    let x: Vec<f32> = (0..960).map(|i| (i % 7) as f32 - 3.0).collect();
    let y: Vec<f32> = (0..960).map(|i| (i % 5) as f32).collect();
    let xy: Vec<f32> = x.iter().zip(&y).map(|(a, b)| a + b).collect();
    let (sx, sy, sxy) = (
        one.sketch_of("w", &x).unwrap(),
        one.sketch_of("w", &y).unwrap(),
        one.sketch_of("w", &xy).unwrap(),
    );
    assert!(sx.iter().zip(&sy).zip(&sxy).all(|((a, b), c)| a + b == *c));
}

#[test]
fn fetch_error_feedback_bookkeeping_in_sketch_space() {
    for zero in [false, true] {
        let cfg = fetch_config(zero, 1);
        let mut f = FetchSgd::new(&shapes(), cfg).unwrap();
        let mut out = zeros();
        let m = f.compress(&grads(0, 0)).unwrap();
        f.apply(&[m], &mut out).unwrap();
        for t in 1..6 {
            let snap = f.state();
            let msg = f.compress(&grads(t, 0)).unwrap();
            f.apply(std::slice::from_ref(&msg), &mut out).unwrap();
            let b1 = cfg.adam.beta1 as f32;
            let sm = (1.0 / (1.0 - cfg.adam.beta1.powf(t as f64 + 1.0))) as f32;
            for (i, name) in ["b", "w"].iter().enumerate() {
                let Part::Values(s) = &msg.parts[i] else {
                    panic!("a sketch after the warm-up")
                };
                let u: Vec<f32> = snap.momentum_sketch[i]
                    .iter()
                    .zip(s)
                    .map(|(u, s)| b1 * u + (1.0 - b1) * s)
                    .collect();
                let input: Vec<f32> = snap.error_sketch[i]
                    .iter()
                    .zip(&u)
                    .map(|(e, u)| e + u)
                    .collect();
                let (su, se) = (
                    f.momentum_sketch(name).unwrap(),
                    f.error_sketch(name).unwrap(),
                );
                let recovered = out[i].iter().filter(|&&x| x != 0.0).count();
                assert!(recovered > 0 && recovered <= (0.05 * out[i].len() as f64).ceil() as usize);
                if zero {
                    // Buckets of recovered coordinates are zeroed in both sketches; every
                    // other bucket keeps momentum and error exactly.
                    let mut zeroed = 0;
                    for b in 0..se.len() {
                        if se[b] == 0.0 && su[b] == 0.0 && input[b] != 0.0 {
                            zeroed += 1;
                        } else {
                            assert_eq!((su[b], se[b]), (u[b], input[b]), "{name} bucket {b}");
                        }
                    }
                    assert!(zeroed > 0);
                } else {
                    // applied + residual = input + previous residual, in sketch space:
                    // S_e' + S(Δ) = S_e + S_u'.
                    let delta: Vec<f32> = out[i].iter().map(|d| d / sm).collect();
                    let sd = f.sketch_of(name, &delta).unwrap();
                    let scale = input.iter().fold(1e-3f32, |s, x| s.max(x.abs()));
                    for b in 0..se.len() {
                        assert_eq!(su[b], u[b]);
                        assert!(
                            (se[b] + sd[b] - input[b]).abs() <= 1e-5 * scale,
                            "{name} bucket {b}"
                        );
                    }
                }
            }
        }
    }
}

/// Runs `steps` steps of both schemes; returns their outputs and final states.
fn run_both(
    steps: u64,
) -> (
    Vec<Vec<f32>>,
    grad_sketch::MomentumState,
    grad_sketch::FetchSgdState,
) {
    let mut mc = MomentumCompressor::new(
        &shapes(),
        momentum_config(Method::RandomK { ratio: 0.2 }, 2),
    )
    .unwrap();
    let mut fs = FetchSgd::new(&shapes(), fetch_config(true, 2)).unwrap();
    let mut outs = Vec::new();
    for t in 0..steps {
        let g = grads(t, 0);
        let (mut a, mut b) = (zeros(), zeros());
        let m = Message::from_bytes(&mc.compress(&g).unwrap().to_bytes().unwrap()).unwrap();
        mc.apply(&[m], &mut a).unwrap();
        let m = Message::from_bytes(&fs.compress(&g).unwrap().to_bytes().unwrap()).unwrap();
        fs.apply(&[m], &mut b).unwrap();
        outs.push(a.concat());
        outs.push(b.concat());
    }
    (outs, mc.state(), fs.state())
}

#[test]
fn deterministic_and_checkpoints_resume_bit_for_bit() {
    let (a, sa, fa) = run_both(7);
    let (b, sb, fb) = run_both(7);
    assert_eq!(a, b);
    assert_eq!((sa, fa), (sb, fb));
    // Stop after 4 steps, rebuild from the states, continue: the same bits as a straight run.
    let (_, s4, f4) = run_both(4);
    let mut mc = MomentumCompressor::from_state(s4).unwrap();
    let mut fs = FetchSgd::from_state(f4).unwrap();
    for t in 4..7 {
        let g = grads(t, 0);
        let (mut x, mut y) = (zeros(), zeros());
        let m = mc.compress(&g).unwrap();
        mc.apply(&[m], &mut x).unwrap();
        let m = fs.compress(&g).unwrap();
        fs.apply(&[m], &mut y).unwrap();
        assert_eq!(x.concat(), a[2 * t as usize]);
        assert_eq!(y.concat(), a[2 * t as usize + 1]);
    }
}

#[test]
fn bad_configs_are_typed_errors() {
    let bad_fetch = [
        FetchSgdConfig {
            rows: 0,
            ..fetch_config(true, 2)
        },
        FetchSgdConfig {
            rows: 33,
            ..fetch_config(true, 2)
        },
        FetchSgdConfig {
            ratio: 0.0,
            ..fetch_config(true, 2)
        },
        FetchSgdConfig {
            k_fraction: 0.0,
            ..fetch_config(true, 2)
        },
        FetchSgdConfig {
            k_fraction: 1.5,
            ..fetch_config(true, 2)
        },
        FetchSgdConfig {
            warmup_steps: 0,
            ..fetch_config(true, 2)
        },
        FetchSgdConfig {
            adam: AdamConfig {
                beta1: 1.0,
                ..AdamConfig::default()
            },
            ..fetch_config(true, 2)
        },
        FetchSgdConfig {
            adam: AdamConfig {
                eps: 0.0,
                ..AdamConfig::default()
            },
            ..fetch_config(true, 2)
        },
        FetchSgdConfig {
            adam: AdamConfig {
                frozen_floor: 2.0,
                ..AdamConfig::default()
            },
            ..fetch_config(true, 2)
        },
    ];
    for c in bad_fetch {
        assert!(
            matches!(
                FetchSgd::new(&shapes(), c),
                Err(Error::InvalidConfig { .. })
            ),
            "{c:?}"
        );
    }
    let bad_momentum = [
        momentum_config(Method::TopK { k_fraction: 0.1 }, 0),
        momentum_config(Method::TopK { k_fraction: 0.0 }, 2),
        momentum_config(
            Method::CountSketch {
                rows: 0,
                ratio: 0.1,
                k_fraction: 0.1,
            },
            2,
        ),
    ];
    for c in bad_momentum {
        assert!(
            matches!(
                MomentumCompressor::new(&shapes(), c),
                Err(Error::InvalidConfig { .. })
            ),
            "{c:?}"
        );
    }
    assert!(matches!(
        fetch_config(true, 10).validate_for_run(10),
        Err(Error::InvalidConfig {
            parameter: "warmup_steps",
            ..
        })
    ));
    fetch_config(true, 9).validate_for_run(10).unwrap();
    let m = momentum_config(Method::TopK { k_fraction: 0.1 }, 10);
    assert!(matches!(
        m.validate_for_run(10),
        Err(Error::InvalidConfig {
            parameter: "warmup_steps",
            ..
        })
    ));
}

#[test]
fn bad_input_changes_no_state() {
    let mut mc = MomentumCompressor::new(
        &shapes(),
        momentum_config(Method::TopK { k_fraction: 0.1 }, 1),
    )
    .unwrap();
    let mut fs = FetchSgd::new(&shapes(), fetch_config(true, 1)).unwrap();
    let other = FetchSgd::new(
        &shapes(),
        FetchSgdConfig {
            seed: 1,
            ..fetch_config(true, 1)
        },
    )
    .unwrap();
    let mut out = zeros();
    for t in 0..3 {
        let m = mc.compress(&grads(t, 0)).unwrap();
        mc.apply(&[m], &mut out).unwrap();
        let m = fs.compress(&grads(t, 0)).unwrap();
        fs.apply(&[m], &mut out).unwrap();
    }
    let (ms, fsn) = (mc.state(), fs.state());
    let out_before = out.clone();

    // Gradients: wrong count, wrong length, non-finite.
    let mut nan = grads(3, 0);
    nan[1][5] = f32::NAN;
    for g in [
        vec![vec![0f32; 40]],
        vec![vec![0f32; 40], vec![0f32; 9]],
        nan,
    ] {
        assert!(mc.compress(&g).is_err());
        assert!(fs.compress(&g).is_err());
    }
    assert_eq!(mc.state(), ms);

    // Messages: none, another config, another step, wrong output buffers.
    let good = fs.compress(&grads(3, 0)).unwrap();
    let foreign = other.compress(&grads(3, 0)).unwrap();
    let mut stale = good.clone();
    stale.step -= 1;
    let mut short = good.clone();
    if let Part::Values(v) = &mut short.parts[1] {
        v.pop();
    }
    assert!(matches!(
        fs.apply(&[], &mut out),
        Err(Error::InvalidCompressed { .. })
    ));
    assert!(matches!(
        fs.apply(&[foreign], &mut out),
        Err(Error::FingerprintMismatch { .. })
    ));
    assert!(matches!(
        fs.apply(&[stale], &mut out),
        Err(Error::InvalidCompressed { .. })
    ));
    assert!(matches!(
        fs.apply(&[short], &mut out),
        Err(Error::InvalidCompressed { .. })
    ));
    let mut wrong = vec![vec![0f32; 40]];
    assert!(matches!(
        fs.apply(std::slice::from_ref(&good), &mut wrong),
        Err(Error::ParameterCount { .. })
    ));
    assert_eq!(fs.state(), fsn);
    assert_eq!(out, out_before);

    // The momentum scheme: compress twice without apply; a stale message.
    let msg = mc.compress(&grads(3, 0)).unwrap();
    let after_compress = mc.state();
    assert!(matches!(
        mc.compress(&grads(3, 0)),
        Err(Error::InvalidState(_))
    ));
    let mut stale = msg.clone();
    stale.step += 1;
    assert!(mc.apply(&[stale], &mut out).is_err());
    assert_eq!(mc.state(), after_compress);
    assert_eq!(out, out_before);
    mc.apply(&[msg], &mut out).unwrap();

    // States of other parameters, configs, lengths, non-finite values.
    let mut s = fs.state();
    let before = fs.state();
    s.error_sketch[0].push(0.0);
    assert!(matches!(fs.restore(&s), Err(Error::InvalidState(_))));
    let mut s = before.clone();
    s.moments.variance[1][0] = f32::INFINITY;
    assert!(matches!(fs.restore(&s), Err(Error::InvalidState(_))));
    let mut s = before.clone();
    s.config = Some(FetchSgdConfig {
        seed: 1,
        ..fetch_config(true, 1)
    });
    assert!(matches!(fs.restore(&s), Err(Error::InvalidState(_))));
    assert_eq!(fs.state(), before);
    let before = mc.state();
    let mut s = mc.state();
    s.compressor.step += 5;
    assert!(matches!(mc.restore(&s), Err(Error::InvalidState(_))));
    let mut s = before.clone();
    s.moments.momentum.pop();
    assert!(matches!(mc.restore(&s), Err(Error::InvalidState(_))));
    assert_eq!(mc.state(), before);
    assert!(matches!(
        MomentumCompressor::from_state(grad_sketch::MomentumState::default()),
        Err(Error::InvalidState(_))
    ));
}

#[test]
fn momentum_default_is_the_measured_100x_configuration() {
    let c = MomentumConfig::default();
    c.validate_for_run(600).unwrap();
    assert_eq!(c.compressor.method, Method::TopK { k_fraction: 0.002 });
    assert!(c.compressor.error_feedback);
    assert_eq!(c.compressor.dense_warmup_steps, 2);
    assert_eq!(c.adam, AdamConfig::default());
}
