//! The alternative methods (`grad_sketch::methods`): linearity of the sketches, heavy-hitter
//! recovery, error-feedback bookkeeping, PowerSGD on low-rank input, unbiased random-k,
//! warm-up, determinism, and bad input with state snapshots.

use grad_sketch::methods::MAX_ROWS;
use grad_sketch::{Compressor, Error, Message, Method, PackedValues, Part};

use grad_sketch::test_support::{cos, gauss, grads, method_config as cfg, packed_methods, shapes};

/// Every method of the shared table plus the compact-wire ones.
fn all_methods() -> Vec<Method> {
    let mut m = grad_sketch::test_support::all_methods();
    m.extend(packed_methods());
    m
}

/// Everything a failed call must leave alone.
fn snapshot(c: &Compressor) -> (u64, Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let names: Vec<String> = c.params().list().iter().map(|p| p.name.clone()).collect();
    let res = names
        .iter()
        .map(|n| c.residual(n).map(<[f32]>::to_vec).unwrap_or_default())
        .collect();
    let q = names
        .iter()
        .map(|n| c.warm_start(n).map(<[f32]>::to_vec).unwrap_or_default())
        .collect();
    (c.step(), res, q)
}

#[test]
fn sketches_are_linear_sum_of_sketches_is_sketch_of_sum() {
    // Small integers: every partial sum is an integer below 2^24, so f32 addition is exact
    // in any order and the equality is exact. For general floats each bucket's two
    // summation orders differ by at most γ_m·Σ|x_j| (m elements, γ_m ≈ m·2⁻²⁴), checked
    // below with the whole parameter's ℓ₁ norm as the (looser) bound.
    let ints = |seed: u64| -> Vec<Vec<f32>> {
        grads(seed)
            .into_iter()
            .map(|v| v.into_iter().map(|x| (x * 8.0).round()).collect())
            .collect()
    };
    for method in [
        Method::CountSketch {
            rows: 3,
            ratio: 0.1,
            k_fraction: 0.01,
        },
        Method::RandomK { ratio: 0.3 },
    ] {
        for (a, b, exact) in [(ints(1), ints(2), true), (grads(3), grads(4), false)] {
            let sum: Vec<Vec<f32>> = a
                .iter()
                .zip(&b)
                .map(|(x, y)| x.iter().zip(y).map(|(x, y)| x + y).collect())
                .collect();
            let mk = || Compressor::new(&shapes(), cfg(method, false)).unwrap();
            let (mut ca, mut cb, mut cs) = (mk(), mk(), mk());
            let mut ma = ca.compress(&a).unwrap();
            let mb = cb.compress(&b).unwrap();
            let ms = cs.compress(&sum).unwrap();
            ca.accumulate(&mut ma, &mb).unwrap();
            for (i, (pa, ps)) in ma.parts.iter().zip(&ms.parts).enumerate() {
                let (Part::Values(x), Part::Values(y)) = (pa, ps) else {
                    panic!("linear methods send values")
                };
                let l1: f64 = a[i].iter().chain(&b[i]).map(|v| f64::from(v.abs())).sum();
                let bound = (a[i].len() + 2) as f64 * f64::from(f32::EPSILON) * l1;
                for (x, y) in x.iter().zip(y) {
                    if exact {
                        assert_eq!(x, y, "{method:?}");
                    } else {
                        assert!(f64::from((x - y).abs()) <= bound, "{method:?}: {x} {y}");
                    }
                }
            }
            // And the summed message decodes like the message of the sum.
            if exact {
                assert_eq!(ca.decompress(&ma).unwrap(), cs.decompress(&ms).unwrap());
            }
        }
    }
    // Non-linear methods refuse to be summed, and the sum is untouched.
    let mut c = Compressor::new(&shapes(), cfg(Method::TopK { k_fraction: 0.1 }, false)).unwrap();
    let mut m = c.compress(&grads(1)).unwrap();
    let keep = m.clone();
    let mut d = Compressor::new(&shapes(), cfg(Method::TopK { k_fraction: 0.1 }, false)).unwrap();
    let other = d.compress(&grads(2)).unwrap();
    assert!(matches!(
        c.accumulate(&mut m, &other),
        Err(Error::InvalidCompressed { .. })
    ));
    assert_eq!(m, keep);
}

#[test]
fn count_sketch_recovers_planted_heavy_hitters() {
    // n = 10 000 elements of noise (sd 0.02·√(1/3) ≈ 0.012) plus 20 planted ±10 spikes.
    // 5 rows × 1000 buckets (2× fewer values than n): a bucket holds ≈ 10 noise elements
    // (sd ≈ 0.04), and any element shares a bucket with some spike in a given row with
    // probability ≈ 20/1000 = 2%. A false heavy hitter needs ≥ 3 of 5 such rows with
    // agreeing signs: ≈ 10·(0.02)³/4 per element, 0.2 expected false elements among
    // 10 000; a spike's own estimate is off by more than 0.5 only if it meets another spike
    // in ≥ 3 rows (≈ 10·(0.02)³ per spike). With 100 buckets per row (the 10× budget),
    // the same input gives dozens of false heavy hitters: the sketch must be wide relative
    // to the number of heavy hitters (the count-sketch bound w = O(k/ε)).
    let n = 10_000;
    let mut x: Vec<f32> = gauss(n, 5).into_iter().map(|v| 0.02 * v).collect();
    let planted: Vec<usize> = (0..20).map(|i| (i * 7919 + 13) % n).collect();
    for (t, &j) in planted.iter().enumerate() {
        x[j] = if t % 2 == 0 { 10.0 } else { -10.0 };
    }
    let shapes = vec![("g".to_string(), vec![n])];
    let m = Method::CountSketch {
        rows: 5,
        ratio: 0.5,
        k_fraction: 0.002,
    };
    let mut c = Compressor::new(&shapes, cfg(m, true)).unwrap();
    let msg = c.compress(&[&x[..]]).unwrap();
    assert_eq!(msg.byte_len(), 36 + 1 + 4 + 4 * 5000);
    let d = c.decompress(&msg).unwrap().remove(0);
    let mut found: Vec<usize> = (0..n).filter(|&j| d[j] != 0.0).collect();
    found.sort_unstable();
    let mut want = planted.clone();
    want.sort_unstable();
    assert_eq!(found, want);
    for &j in &planted {
        assert!(
            (d[j] - x[j]).abs() < 0.5,
            "x[{j}] = {}, estimate {}",
            x[j],
            d[j]
        );
    }
    // Error feedback keeps exactly what was not applied.
    let r = c.residual("g").unwrap();
    for j in 0..n {
        assert_eq!(r[j], x[j] - d[j]);
    }
    // Top-k on the same input sends the spikes exactly, with their indices.
    let mut t = Compressor::new(&shapes, cfg(Method::TopK { k_fraction: 0.002 }, false)).unwrap();
    let msg = t.compress(&[&x[..]]).unwrap();
    let Part::Sparse { indices, values } = &msg.parts[0] else {
        panic!("top-k sends a sparse part")
    };
    assert_eq!(
        indices.iter().map(|&j| j as usize).collect::<Vec<_>>(),
        want
    );
    assert!(values.iter().all(|v| v.abs() == 10.0));
}

#[test]
fn error_feedback_bookkeeping_applied_plus_residual_is_input_plus_previous() {
    for method in all_methods() {
        let mut c = Compressor::new(&shapes(), cfg(method, true)).unwrap();
        let (mut sum_g, mut sum_d) = (vec![0f64; 2281], vec![0f64; 2281]);
        for t in 0..6 {
            let g = grads(30 + t);
            let prev = snapshot(&c).1;
            let m = c.compress(&g).unwrap();
            let d = c.decompress(&m).unwrap();
            let now = snapshot(&c).1;
            let mut k = 0;
            for i in 0..3 {
                for j in 0..g[i].len() {
                    // e_new = (g + e_old) − d, each side one f32 rounding: the identity
                    // applied + residual = input + previous residual holds to 1 ulp.
                    let v = g[i][j] + prev[i][j];
                    assert_eq!(now[i][j], v - d[i][j], "{method:?}");
                    let lhs = f64::from(d[i][j]) + f64::from(now[i][j]);
                    let rounding = f64::from((v - d[i][j]).abs()) * f64::from(f32::EPSILON) / 2.0;
                    assert!((lhs - f64::from(v)).abs() <= rounding, "{method:?}");
                    sum_g[k] += f64::from(g[i][j]);
                    sum_d[k] += f64::from(d[i][j]);
                    k += 1;
                }
            }
        }
        // Telescoped: Σ applied + e_T = Σ g.
        let e: Vec<f32> = snapshot(&c).1.concat();
        for k in 0..e.len() {
            assert!(
                (sum_d[k] + f64::from(e[k]) - sum_g[k]).abs() < 1e-4,
                "{method:?}"
            );
        }
    }
}

#[test]
fn powersgd_recovers_a_low_rank_gradient_and_warm_starts() {
    // M = u vᵀ (rank 1): P = orth(M Q) = ±u/‖u‖ and Q = Mᵀ P = ±v‖u‖, so P Qᵀ = M up to
    // rounding, from the first call.
    let (a, b) = (40, 30);
    let u = gauss(a, 1);
    let v = gauss(b, 2);
    let m: Vec<f32> = (0..a * b).map(|k| u[k / b] * v[k % b]).collect();
    let shapes = vec![("w".to_string(), vec![a, b]), ("bias".to_string(), vec![b])];
    let mut c = Compressor::new(&shapes, cfg(Method::PowerSgd { rank: 1 }, true)).unwrap();
    let bias = gauss(b, 3);
    let msg = c.compress(&[&bias[..], &m[..]]).unwrap();
    assert!(matches!(msg.parts[0], Part::Dense(_)), "vectors go dense");
    let Part::LowRank { q, .. } = &msg.parts[1] else {
        panic!("matrices go low rank")
    };
    assert_eq!(
        c.warm_start("w").unwrap(),
        q.as_slice(),
        "Q is kept for the next call"
    );
    let d = c.decompress(&msg).unwrap();
    assert_eq!(d[0], bias);
    let err: f64 = d[1]
        .iter()
        .zip(&m)
        .map(|(x, y)| f64::from(x - y).powi(2))
        .sum();
    let norm: f64 = m.iter().map(|x| f64::from(*x).powi(2)).sum();
    assert!(
        (err / norm).sqrt() < 1e-5,
        "relative error {}",
        (err / norm).sqrt()
    );
    // Bytes: rank·(a + b) values instead of a·b.
    assert_eq!(msg.parts[1].byte_len(), 1 + 8 + 4 * (a + b));
    // A square 8×8 at rank 4 would not save anything: sent dense.
    let small = vec![("s".to_string(), vec![8, 8])];
    let mut s = Compressor::new(&small, cfg(Method::PowerSgd { rank: 4 }, false)).unwrap();
    assert!(matches!(
        s.compress(&[vec![1f32; 64]]).unwrap().parts[0],
        Part::Dense(_)
    ));
}

#[test]
fn random_k_without_error_feedback_is_unbiased() {
    // Each call keeps a fresh keyed mask with p = 0.25 and scales by 1/p: E[x̂] = x. The mean
    // of K = 200 calls has relative error √((1/p − 1)/K) = √(3/200) ≈ 0.12, so
    // cos ≈ 1/√(1 + 0.015) ≈ 0.99; allow 0.97.
    let x = gauss(2000, 8);
    let shapes = vec![("g".to_string(), vec![2000])];
    let mut c = Compressor::new(&shapes, cfg(Method::RandomK { ratio: 0.25 }, false)).unwrap();
    let mut mean = vec![0f32; 2000];
    let mut kept = 0usize;
    for _ in 0..200 {
        let m = c.compress(&[&x[..]]).unwrap();
        if let Part::Values(v) = &m.parts[0] {
            kept += v.len();
        }
        for (a, d) in mean.iter_mut().zip(&c.decompress(&m).unwrap()[0]) {
            *a += d / 200.0;
        }
    }
    assert!(cos(&x, &mean) > 0.97, "{}", cos(&x, &mean));
    // Kept count: binomial(400 000, 0.25): mean 100 000, sd ≈ 274; allow 5 sd.
    assert!((kept as f64 - 100_000.0).abs() < 1400.0, "{kept}");
}

#[test]
fn dense_warmup_sends_everything_and_empties_the_residual() {
    let mut config = cfg(Method::TopK { k_fraction: 0.01 }, true);
    config.dense_warmup_steps = 2;
    let mut c = Compressor::new(&shapes(), config).unwrap();
    for t in 0..3 {
        let g = grads(t);
        let m = c.compress(&g).unwrap();
        let d = c.decompress(&m).unwrap();
        if t < 2 {
            assert!(m.parts.iter().all(|p| matches!(p, Part::Dense(_))));
            assert_eq!(d, g);
            assert!(snapshot(&c).1.iter().flatten().all(|&e| e == 0.0));
        } else {
            assert!(m.parts.iter().all(|p| matches!(p, Part::Sparse { .. })));
        }
    }
    assert!(config.validate_for_run(3).is_ok());
    assert!(matches!(
        config.validate_for_run(2),
        Err(Error::InvalidConfig {
            parameter: "dense_warmup_steps",
            ..
        })
    ));
}

#[test]
fn bytes_round_trip_and_results_are_deterministic() {
    for method in all_methods() {
        let mut a = Compressor::new(&shapes(), cfg(method, true)).unwrap();
        let mut shapes_rev = shapes();
        shapes_rev.reverse();
        let mut b = Compressor::new(&shapes_rev, cfg(method, true)).unwrap();
        for t in 0..3 {
            let (ma, mb) = (
                a.compress(&grads(t)).unwrap(),
                b.compress(&grads(t)).unwrap(),
            );
            let bytes = ma.to_bytes().unwrap();
            assert_eq!(bytes, mb.to_bytes().unwrap(), "{method:?}");
            assert_eq!(bytes.len(), ma.byte_len());
            let back = Message::from_bytes(&bytes).unwrap();
            assert_eq!(back, ma);
            for cut in [0, 10, 35, bytes.len() - 1] {
                assert!(Message::from_bytes(&bytes[..cut]).is_err());
            }
            let mut long = bytes.clone();
            long.push(0);
            assert!(Message::from_bytes(&long).is_err());
        }
    }
}

#[test]
fn bad_input_is_a_typed_error_and_changes_nothing() {
    let bad = |m: Method, parameter: &str| {
        let c = cfg(m, true);
        match c.validate() {
            Err(Error::InvalidConfig { parameter: p, .. }) => assert_eq!(p, parameter),
            other => panic!("{m:?}: expected InvalidConfig({parameter}), got {other:?}"),
        }
        assert!(Compressor::new(&shapes(), c).is_err());
    };
    // k = 0 and k > n cannot be expressed: the fraction must lie in (0, 1].
    for k in [0.0, -0.5, 1.5, f64::NAN] {
        bad(Method::TopK { k_fraction: k }, "k_fraction");
        bad(
            Method::CountSketch {
                rows: 3,
                ratio: 0.1,
                k_fraction: k,
            },
            "k_fraction",
        );
        bad(Method::RandomK { ratio: k }, "ratio");
    }
    for rows in [0, MAX_ROWS + 1] {
        bad(
            Method::CountSketch {
                rows,
                ratio: 0.1,
                k_fraction: 0.1,
            },
            "rows",
        );
    }
    bad(Method::PowerSgd { rank: 0 }, "rank");

    for method in all_methods() {
        let mut c = Compressor::new(&shapes(), cfg(method, true)).unwrap();
        c.compress(&grads(1)).unwrap();
        let before = snapshot(&c);
        let mut g = grads(2);
        g[1][5] = f32::NAN;
        assert!(matches!(
            c.compress(&g),
            Err(Error::NonFiniteGradient { .. })
        ));
        assert!(matches!(
            c.compress(&grads(2)[..2]),
            Err(Error::ParameterCount { .. })
        ));
        let mut g = grads(2);
        g[0].pop();
        assert!(matches!(c.compress(&g), Err(Error::ShapeMismatch { .. })));
        assert_eq!(
            snapshot(&c),
            before,
            "{method:?}: a failed call changed the state"
        );
        // A message from another config (seed, method, warm-up) is refused.
        let mut other_cfg = cfg(method, true);
        other_cfg.seed = 12;
        let mut o = Compressor::new(&shapes(), other_cfg).unwrap();
        let foreign = o.compress(&grads(3)).unwrap();
        assert!(matches!(
            c.decompress(&foreign),
            Err(Error::FingerprintMismatch { .. })
        ));
        // A tampered message is refused, and the output buffers are untouched.
        let mut m = c.compress(&grads(3)).unwrap();
        let after = snapshot(&c);
        match &mut m.parts[1] {
            Part::Dense(v) | Part::Values(v) => {
                v.pop();
            }
            Part::Sparse { indices, .. } => indices.swap(0, 1),
            Part::LowRank { p, .. } => {
                p.pop();
            }
            Part::PackedSparse { indices, .. } => indices.swap(0, 1),
            Part::PackedValues(v) => {
                *v = match v {
                    PackedValues::Sign { scale, .. } => PackedValues::F32(vec![*scale]),
                    _ => PackedValues::Sign {
                        scale: 1.0,
                        negative: vec![false; v.len()],
                    },
                }
            }
        }
        let mut out = vec![vec![7f32; 50], vec![7f32; 2000], vec![7f32; 231]];
        assert!(matches!(
            c.decompress_into(&m, &mut out),
            Err(Error::InvalidCompressed { .. })
        ));
        assert!(out.iter().flatten().all(|&x| x == 7.0));
        assert_eq!(snapshot(&c), after);
    }
}
