//! Integration tests of the VSA gradient compressor: validation, byte round trips,
//! determinism, the √ρ quality law, the three reconstruction modes, quantized bundles and
//! error feedback.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use proptest::prelude::*;
use rand_core::RngCore;
use vsa_optim_rs::Error;
use vsa_optim_rs::compress::{
    BundleQuantization, CompressedGradients, Payload, Reconstruction, VSAConfig,
    VSAGradientCompressor,
};
use vsa_optim_rs::vsa_core::rng::chacha_stream;

/// Approximately Gaussian values (sum of 4 uniforms, centred), seeded.
fn gauss(n: usize, seed: u64) -> Vec<f32> {
    let mut r = chacha_stream(seed, 7);
    (0..n)
        .map(|_| {
            (0..4)
                .map(|_| (r.next_u32() >> 8) as f32 / (1u32 << 24) as f32 - 0.5)
                .sum::<f32>()
        })
        .collect()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum()
}

fn norm(a: &[f32]) -> f64 {
    dot(a, a).sqrt()
}

fn cos(a: &[f32], b: &[f32]) -> f64 {
    dot(a, b) / (norm(a) * norm(b))
}

fn shapes() -> Vec<(String, Vec<usize>)> {
    vec![
        ("layer.weight".into(), vec![40, 50]),
        ("layer.bias".into(), vec![50]),
        ("out.weight".into(), vec![3, 7, 11]),
    ]
}

fn grads(seed: u64) -> HashMap<String, Tensor> {
    shapes()
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let n = shape.iter().product();
            let t = Tensor::from_vec(gauss(n, seed + i as u64), shape, &Device::Cpu).unwrap();
            (name, t)
        })
        .collect()
}

fn config(ratio: f64) -> VSAConfig {
    VSAConfig::builder()
        .dimension(64)
        .compression_ratio(ratio)
        .seed(42)
        .build()
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

#[test]
fn builder_sets_every_field_and_defaults_are_documented() {
    let c = VSAConfig::builder()
        .dimension(8192)
        .compression_ratio(0.1)
        .seed(42)
        .build();
    assert_eq!((c.dimension, c.compression_ratio, c.seed), (8192, 0.1, 42));
    assert_eq!(c.reconstruction, Reconstruction::Projection);
    assert_eq!(c.quantization, BundleQuantization::F32);
    assert!(!c.error_feedback);
    let d = VSAConfig::default();
    assert_eq!((d.dimension, d.compression_ratio, d.seed), (8192, 0.1, 0));
}

#[test]
fn invalid_configs_are_typed_errors() {
    let dev = Device::Cpu;
    let bad = |c: VSAConfig, field: &str| match VSAGradientCompressor::new(&shapes(), c, &dev) {
        Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
        other => panic!("expected InvalidConfig({field}), got {other:?}"),
    };
    bad(VSAConfig::builder().dimension(0).build(), "dimension");
    for r in [0.0, -0.1, 1.0001, f64::NAN, f64::INFINITY] {
        bad(
            VSAConfig::builder().compression_ratio(r).build(),
            "compression_ratio",
        );
    }
    for m in [Reconstruction::Unbiased, Reconstruction::NormMatched] {
        let c = VSAConfig::builder()
            .reconstruction(m)
            .error_feedback(true)
            .build();
        bad(c, "error_feedback");
    }
    assert!(matches!(
        VSAGradientCompressor::new(&[], VSAConfig::default(), &dev),
        Err(Error::NoParameters)
    ));
    let empty = vec![("w".to_string(), vec![0usize, 3])];
    assert!(matches!(
        VSAGradientCompressor::new(&empty, VSAConfig::default(), &dev),
        Err(Error::EmptyParameter { .. })
    ));
    // Ratio exactly 1 is allowed.
    assert!(
        VSAGradientCompressor::new(
            &shapes(),
            VSAConfig::builder().compression_ratio(1.0).build(),
            &dev
        )
        .is_ok()
    );
}

#[test]
fn bad_gradients_are_typed_errors_and_leave_residuals_unchanged() {
    let dev = Device::Cpu;
    let cfg = VSAConfig {
        error_feedback: true,
        ..config(0.1)
    };
    let mut c = VSAGradientCompressor::new(&shapes(), cfg, &dev).unwrap();
    c.compress(&grads(1)).unwrap();
    let before: Vec<Vec<f32>> = shapes()
        .iter()
        .map(|(n, _)| c.residual(n).unwrap().to_vec())
        .collect();
    assert!(before.iter().any(|r| norm(r) > 0.0));

    let mut g = grads(2);
    g.insert("extra".into(), Tensor::zeros(3, DType::F32, &dev).unwrap());
    assert!(matches!(c.compress(&g), Err(Error::UnknownParameter { name }) if name == "extra"));
    let mut g = grads(2);
    g.remove("layer.bias");
    assert!(
        matches!(c.compress(&g), Err(Error::MissingParameter { name }) if name == "layer.bias")
    );
    let mut g = grads(2);
    g.insert(
        "out.weight".into(),
        Tensor::zeros((7, 33), DType::F32, &dev).unwrap(),
    );
    assert!(
        matches!(c.compress(&g), Err(Error::ShapeMismatch { name, .. }) if name == "out.weight")
    );
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut g = grads(2);
        let mut v = gauss(2000, 3);
        v[1234] = bad;
        g.insert(
            "layer.weight".into(),
            Tensor::from_vec(v, (40, 50), &dev).unwrap(),
        );
        assert!(matches!(
            c.compress(&g),
            Err(Error::NonFiniteGradient { name }) if name == "layer.weight"
        ));
    }
    // Host path: wrong count and wrong length.
    let host: Vec<Vec<f32>> = vec![vec![0.0; 50]];
    assert!(c.compress_host(&host).is_err());
    let host: Vec<Vec<f32>> = vec![vec![0.0; 50], vec![0.0; 2001], vec![0.0; 231]];
    assert!(matches!(
        c.compress_host(&host),
        Err(Error::ShapeMismatch { .. })
    ));

    let after: Vec<Vec<f32>> = shapes()
        .iter()
        .map(|(n, _)| c.residual(n).unwrap().to_vec())
        .collect();
    assert_eq!(before, after);
}

#[test]
fn decompress_rejects_other_configs_and_malformed_values() {
    let dev = Device::Cpu;
    let mut a = VSAGradientCompressor::new(&shapes(), config(0.1), &dev).unwrap();
    let ca = a.compress(&grads(1)).unwrap();
    let others = [
        VSAConfig {
            seed: 43,
            ..config(0.1)
        },
        config(0.2),
        VSAConfig {
            dimension: 65,
            ..config(0.1)
        },
        VSAConfig {
            reconstruction: Reconstruction::Unbiased,
            ..config(0.1)
        },
    ];
    for cfg in others {
        let b = VSAGradientCompressor::new(&shapes(), cfg, &dev).unwrap();
        assert_ne!(b.fingerprint(), a.fingerprint());
        assert!(matches!(
            b.decompress(&ca),
            Err(Error::FingerprintMismatch { expected, actual })
                if expected == b.fingerprint() && actual == a.fingerprint()
        ));
    }
    // Same config, other parameter names or shapes.
    let mut renamed = shapes();
    renamed[0].0 = "layer.w".into();
    let mut reshaped = shapes();
    reshaped[2].1 = vec![7, 3, 11];
    for s in [renamed, reshaped] {
        let b = VSAGradientCompressor::new(&s, config(0.1), &dev).unwrap();
        assert!(matches!(
            b.decompress(&ca),
            Err(Error::FingerprintMismatch { .. })
        ));
    }
    // Tampered payloads.
    let mut t = ca.clone();
    if let Payload::F32(v) = &mut t.params[0].payload {
        v.pop();
    }
    assert!(matches!(
        a.decompress(&t),
        Err(Error::InvalidCompressed { .. })
    ));
    let mut t = ca.clone();
    if let Payload::F32(v) = &mut t.params[1].payload {
        v[0] = f32::NAN;
    }
    assert!(matches!(
        a.decompress(&t),
        Err(Error::InvalidCompressed { .. })
    ));
    let mut t = ca.clone();
    t.params.pop();
    assert!(matches!(
        a.decompress(&t),
        Err(Error::InvalidCompressed { .. })
    ));
    // Byte-level corruption.
    let bytes = ca.to_bytes();
    for cut in [0, 3, 27, bytes.len() - 1] {
        assert!(matches!(
            CompressedGradients::from_bytes(&bytes[..cut]),
            Err(Error::InvalidCompressed { .. })
        ));
    }
    let mut long = bytes.clone();
    long.push(0);
    assert!(CompressedGradients::from_bytes(&long).is_err());
    for (at, val) in [(0, b'X'), (4, 2), (5, 9), (6, 9), (7, 1)] {
        let mut b = bytes.clone();
        b[at] = val;
        assert!(CompressedGradients::from_bytes(&b).is_err(), "byte {at}");
    }
    // A NaN value in the bytes.
    let mut b = bytes.clone();
    let first_value = 36 + 8;
    b[first_value..first_value + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    assert!(CompressedGradients::from_bytes(&b).is_err());
    // And a decompress buffer of the wrong length.
    let mut out = vec![vec![0f32; 50], vec![0f32; 2000], vec![0f32; 230]];
    assert!(matches!(
        a.decompress_host_into(&ca, &mut out),
        Err(Error::ShapeMismatch { .. })
    ));
    // Untampered still works.
    assert!(a.decompress(&ca).is_ok());
    let _ = &mut a;
}

#[test]
fn stats_count_every_serialised_byte() {
    let dev = Device::Cpu;
    for q in [
        BundleQuantization::F32,
        BundleQuantization::Sign,
        BundleQuantization::Ternary,
    ] {
        for m in [
            Reconstruction::Projection,
            Reconstruction::Unbiased,
            Reconstruction::NormMatched,
        ] {
            let cfg = VSAConfig {
                quantization: q,
                reconstruction: m,
                ..config(0.1)
            };
            let mut c = VSAGradientCompressor::new(&shapes(), cfg, &dev).unwrap();
            let z = c.compress(&grads(5)).unwrap();
            let bytes = z.to_bytes();
            assert_eq!(bytes.len(), z.stats.compressed_bytes);
            assert_eq!(z.stats.original_bytes, 4 * (2000 + 50 + 231));
            // Slots: ceil(0.1 n) = 200, 5 → MIN_SLOTS = 8, 24: 232; bundles of ≤ 64: 1 + 4 + 1.
            assert_eq!(c.layout(), vec![(8, 1), (200, 4), (24, 1)]);
            let norms = if m == Reconstruction::NormMatched {
                12
            } else {
                0
            };
            let payload = match q {
                BundleQuantization::F32 => 4 * 232,
                BundleQuantization::Sign => 4 * 6 + (1 + 25 + 3),
                BundleQuantization::Ternary => 4 * 6 + 2 * (1 + 25 + 3),
            };
            assert_eq!(bytes.len(), 36 + 3 * 8 + norms + payload, "{q:?} {m:?}");
            let back = CompressedGradients::from_bytes(&bytes).unwrap();
            assert_eq!(back, z);
            assert_eq!(c.decompress(&back).unwrap().len(), 3);
        }
    }
}

#[test]
fn bytes_are_independent_of_map_order_and_pinned() {
    let dev = Device::Cpu;
    let g = grads(9);
    // The same tensors inserted in two different orders.
    let mut fwd = HashMap::new();
    let mut rev = HashMap::new();
    let mut names: Vec<&String> = g.keys().collect();
    names.sort();
    for n in &names {
        fwd.insert((*n).clone(), g[*n].clone());
    }
    for n in names.iter().rev() {
        rev.insert((*n).clone(), g[*n].clone());
    }
    let mut shapes_rev = shapes();
    shapes_rev.reverse();
    let mut a = VSAGradientCompressor::new(&shapes(), config(0.1), &dev).unwrap();
    let mut b = VSAGradientCompressor::new(&shapes_rev, config(0.1), &dev).unwrap();
    let ba = a.compress(&fwd).unwrap().to_bytes();
    let bb = b.compress(&rev).unwrap().to_bytes();
    assert_eq!(ba, bb);
    // Golden value: FNV-1a-64 of the bytes, printed by this test on first run (seeded
    // inputs `gauss`, seed 42, ratio 0.1, D = 64). A change means the format, the keys or the
    // projection changed.
    assert_eq!(fnv(&ba), GOLDEN, "got {:#018x}", fnv(&ba));
    // Sign-quantized bytes too.
    let cfg = VSAConfig {
        quantization: BundleQuantization::Sign,
        ..config(0.1)
    };
    let mut s = VSAGradientCompressor::new(&shapes(), cfg, &dev).unwrap();
    let bs = s.compress(&g).unwrap().to_bytes();
    assert_eq!(fnv(&bs), GOLDEN_SIGN, "got {:#018x}", fnv(&bs));
}

const GOLDEN: u64 = 0xd7cc_a230_b9f8_aa19;
const GOLDEN_SIGN: u64 = 0xd008_f9ef_ec8b_54fe;

#[test]
fn keys_are_fresh_every_call_and_old_values_still_decode() {
    let dev = Device::Cpu;
    let g = grads(12);
    let mut c = VSAGradientCompressor::new(&shapes(), config(0.1), &dev).unwrap();
    let z0 = c.compress(&g).unwrap();
    let h0 = c.decompress_host(&z0).unwrap();
    let z1 = c.compress(&g).unwrap();
    assert_eq!((z0.step, z1.step, c.step()), (0, 1, 2));
    assert_ne!(z0.params, z1.params);
    // A value from step 0 decodes the same after the compressor moved on, and on a fresh
    // compressor that never compressed anything (the receiver).
    assert_eq!(c.decompress_host(&z0).unwrap(), h0);
    let rx = VSAGradientCompressor::new(&shapes(), config(0.1), &dev).unwrap();
    assert_eq!(rx.decompress_host(&z0).unwrap(), h0);
    // set_step replays a call exactly.
    c.set_step(1);
    assert_eq!(c.compress(&g).unwrap(), z1);
}

#[test]
fn residual_state_can_be_restored() {
    let dev = Device::Cpu;
    let cfg = VSAConfig {
        error_feedback: true,
        ..config(0.1)
    };
    let mut a = VSAGradientCompressor::new(&shapes(), cfg, &dev).unwrap();
    a.compress(&grads(1)).unwrap();
    let mut b = VSAGradientCompressor::new(&shapes(), cfg, &dev).unwrap();
    for (name, _) in shapes() {
        b.set_residual(&name, a.residual(&name).unwrap()).unwrap();
    }
    b.set_step(a.step());
    assert_eq!(
        a.compress(&grads(2)).unwrap(),
        b.compress(&grads(2)).unwrap()
    );
    assert!(matches!(
        b.set_residual("nope", &[0.0]),
        Err(Error::UnknownParameter { .. })
    ));
    assert!(matches!(
        b.set_residual("layer.bias", &[0.0; 3]),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        b.set_residual("layer.bias", &[f32::NAN; 50]),
        Err(Error::NonFiniteGradient { .. })
    ));
    let mut off = VSAGradientCompressor::new(&shapes(), config(0.1), &dev).unwrap();
    assert!(off.residual("layer.bias").is_none());
    assert!(matches!(
        off.set_residual("layer.bias", &[0.0; 50]),
        Err(Error::InvalidState(_))
    ));
}

#[test]
fn results_do_not_depend_on_threads() {
    let dev = Device::Cpu;
    let g = grads(11);
    let mut a = VSAGradientCompressor::new(&shapes(), config(0.25), &dev).unwrap();
    let here = a.compress(&g).unwrap().to_bytes();
    let there: Vec<Vec<u8>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|_| {
                let g = g.clone();
                s.spawn(move || {
                    let mut c =
                        VSAGradientCompressor::new(&shapes(), config(0.25), &Device::Cpu).unwrap();
                    c.compress(&g).unwrap().to_bytes()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for t in there {
        assert_eq!(t, here);
    }
}

/// One host vector through a single-parameter compressor.
fn roundtrip(x: &[f32], cfg: VSAConfig) -> Vec<f32> {
    let shapes = vec![("g".to_string(), vec![x.len()])];
    let mut c = VSAGradientCompressor::new(&shapes, cfg, &Device::Cpu).unwrap();
    let z = c.compress_host(&[x]).unwrap();
    c.decompress_host(&z).unwrap().remove(0)
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
            let cfg = VSAConfig::builder()
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
        let cfg = VSAConfig::builder()
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
        let cfg = VSAConfig::builder()
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
    // receives lags the true sum by one bounded residual.
    let dev = Device::Cpu;
    for q in [BundleQuantization::F32, BundleQuantization::Sign] {
        let cfg = VSAConfig {
            error_feedback: true,
            quantization: q,
            ..config(0.1)
        };
        let mut c = VSAGradientCompressor::new(&shapes(), cfg, &dev).unwrap();
        assert_eq!(c.memory_bytes() % 4, 0);
        assert!(c.memory_bytes() >= 4 * 2281);
        let steps = 30;
        let mut sum_g = vec![vec![0f64; 0]; 3];
        let mut sum_h = vec![vec![0f64; 0]; 3];
        let mut max_res = 0f64;
        for t in 0..steps {
            let g = grads(100 + t);
            let host = c.params().to_host_f32(&g).unwrap();
            let z = c.compress(&g).unwrap();
            let h = c.decompress_host(&z).unwrap();
            for i in 0..3 {
                if sum_g[i].is_empty() {
                    sum_g[i] = vec![0.0; host[i].len()];
                    sum_h[i] = vec![0.0; host[i].len()];
                }
                for j in 0..host[i].len() {
                    sum_g[i][j] += f64::from(host[i][j]);
                    sum_h[i][j] += f64::from(h[i][j]);
                }
            }
            let r = c.residual("layer.weight").unwrap();
            max_res = max_res.max(norm(r) / norm(&host[1]));
        }
        for (i, (name, _)) in {
            let mut s = shapes();
            s.sort();
            s
        }
        .iter()
        .enumerate()
        {
            let e = c.residual(name).unwrap();
            for j in 0..e.len() {
                let lhs = sum_h[i][j] + f64::from(e[j]);
                assert!(
                    (lhs - sum_g[i][j]).abs() < 1e-3,
                    "{name}[{j}]: {lhs} vs {}",
                    sum_g[i][j]
                );
            }
        }
        // Fresh keys every call: E‖(I − Pₜ)v‖² = (1 − ρ)‖v‖² for any fixed v, so for
        // independent zero-mean gradients E‖e‖² → (1−ρ)/ρ·‖g‖² in steady state, ‖e‖ ≈ 3‖g‖
        // at ρ = 0.1 (sign quantization loses a little more). With a fixed projection the
        // null-space part would instead grow like √t.
        assert!(max_res < 4.0, "{q:?}: residual grew to {max_res}×‖g‖");
        c.reset_error_feedback();
        assert_eq!(norm(c.residual("layer.bias").unwrap()), 0.0);
    }
}

#[test]
fn tiny_tensors_get_min_slots_and_are_exact_when_fully_kept() {
    use vsa_optim_rs::compress::MIN_SLOTS;
    let dev = Device::Cpu;
    let shapes = vec![("a".to_string(), vec![10]), ("b".to_string(), vec![5])];
    let cfg = VSAConfig::builder().compression_ratio(0.01).build();
    let mut c = VSAGradientCompressor::new(&shapes, cfg, &dev).unwrap();
    assert_eq!(c.layout(), vec![(MIN_SLOTS, 1), (5, 1)]);
    // m = n: one chunk, S = diag(±1), so P = I and the round trip is exact.
    let (a, b) = (gauss(10, 1), gauss(5, 2));
    let z = c.compress_host(&[&a[..], &b[..]]).unwrap();
    let out = c.decompress_host(&z).unwrap();
    assert_eq!(out[1], b);
}

#[test]
fn dimension_splits_large_tensors_without_losing_quality() {
    // 200 000 elements at ρ = 0.1 and D = 1000: 20 bundles of 1000 slots.
    let n = 200_000;
    let x = gauss(n, 6);
    let cfg = VSAConfig::builder()
        .dimension(1000)
        .compression_ratio(0.1)
        .seed(7)
        .build();
    let shapes = vec![("g".to_string(), vec![n])];
    let mut c = VSAGradientCompressor::new(&shapes, cfg, &Device::Cpu).unwrap();
    assert_eq!(c.layout(), vec![(20_000, 20)]);
    let z = c.compress_host(&[&x[..]]).unwrap();
    assert!((z.stats.compression_ratio - 10.0).abs() < 0.01);
    let xh = c.decompress_host(&z).unwrap().remove(0);
    // m = 20 000 slots: 6σ relative band 3·√(2/m) = 0.03.
    let c0 = cos(&x, &xh);
    assert!((c0 / 0.1f64.sqrt() - 1.0).abs() < 0.03, "{c0}");
}

#[test]
fn tensor_api_keeps_shapes_device_and_accepts_half_precision() {
    let dev = Device::Cpu;
    let mut c = VSAGradientCompressor::new(&shapes(), config(0.5), &dev).unwrap();
    let g: HashMap<String, Tensor> = grads(3)
        .into_iter()
        .map(|(k, v)| (k, v.to_dtype(DType::BF16).unwrap()))
        .collect();
    let z = c.compress(&g).unwrap();
    let out = c.decompress(&z).unwrap();
    for (name, shape) in shapes() {
        assert_eq!(out[&name].dims(), shape.as_slice());
        assert_eq!(out[&name].dtype(), DType::F32);
        assert!(out[&name].device().same_device(&dev));
    }
}

fn any_cfg() -> impl Strategy<Value = VSAConfig> {
    (1usize..40, 0.01f64..=1.0, any::<u64>(), 0u8..3, 0u8..3).prop_map(|(d, r, seed, m, q)| {
        VSAConfig {
            dimension: d,
            compression_ratio: r,
            seed,
            reconstruction: [
                Reconstruction::Projection,
                Reconstruction::Unbiased,
                Reconstruction::NormMatched,
            ][m as usize],
            quantization: [
                BundleQuantization::F32,
                BundleQuantization::Sign,
                BundleQuantization::Ternary,
            ][q as usize],
            error_feedback: false,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Bytes round trip exactly, and decoding the parsed value equals decoding the original.
    #[test]
    fn bytes_round_trip(cfg in any_cfg(), n in 1usize..300, seed in any::<u64>()) {
        let x = gauss(n, seed);
        let shapes = vec![("a".to_string(), vec![n]), ("b".to_string(), vec![1 + n / 3])];
        let y = gauss(1 + n / 3, seed ^ 1);
        let mut c = VSAGradientCompressor::new(&shapes, cfg, &Device::Cpu).unwrap();
        let z = c.compress_host(&[&x[..], &y[..]]).unwrap();
        let bytes = z.to_bytes();
        prop_assert_eq!(bytes.len(), z.stats.compressed_bytes);
        let back = CompressedGradients::from_bytes(&bytes).unwrap();
        prop_assert_eq!(&back, &z);
        prop_assert_eq!(c.decompress_host(&back).unwrap(), c.decompress_host(&z).unwrap());
        // serde JSON round trip too.
        let json = serde_json::to_string(&z).unwrap();
        let from_json: CompressedGradients = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(from_json, z);
    }

    /// Projection reconstruction is an orthogonal projector: P(Px) = Px, and
    /// ‖x − Px‖² = ‖x‖² − ‖Px‖² (so error feedback's residual never grows).
    #[test]
    fn projection_is_idempotent_and_contractive(
        n in 1usize..2000, rho in 0.01f64..=1.0, d in 1usize..500, seed in any::<u64>()
    ) {
        let x = gauss(n, seed);
        let cfg = VSAConfig::builder().dimension(d).compression_ratio(rho).seed(seed).build();
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
        let cfg = VSAConfig::builder().dimension(d).compression_ratio(rho).seed(seed)
            .quantization(q).build();
        let xh = roundtrip(&x, cfg);
        let err: Vec<f32> = x.iter().zip(&xh).map(|(a, b)| a - b).collect();
        prop_assert!(dot(&err, &err) <= dot(&x, &x) * (1.0 + 1e-5));
    }
}
