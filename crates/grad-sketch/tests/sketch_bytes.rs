//! The VSA sketch's contract: validation, typed errors with unchanged state, the byte
//! format, golden bytes, determinism.

use grad_sketch::{
    BundleQuantization, CompressedGradients, Error, Payload, Reconstruction, SketchCompressor,
    SketchConfig,
};
use proptest::prelude::*;

use grad_sketch::test_support::{config, fnv, gauss, grads, invalid_configs, norm, shapes};

#[test]
fn builder_sets_every_field_and_defaults_are_documented() {
    let c = SketchConfig::builder()
        .dimension(8192)
        .compression_ratio(0.1)
        .seed(42)
        .build();
    assert_eq!((c.dimension, c.compression_ratio, c.seed), (8192, 0.1, 42));
    assert_eq!(c.reconstruction, Reconstruction::Projection);
    assert_eq!(c.quantization, BundleQuantization::F32);
    assert!(!c.error_feedback);
    let d = SketchConfig::default();
    assert_eq!((d.dimension, d.compression_ratio, d.seed), (8192, 0.1, 0));
    assert_eq!(d.validate(), Ok(()));
}

#[test]
fn invalid_configs_are_typed_errors() {
    let bad = |c: SketchConfig, field: &str| {
        match c.validate() {
            Err(Error::InvalidConfig { parameter, .. }) => assert_eq!(parameter, field),
            other => panic!("expected InvalidConfig({field}), got {other:?}"),
        }
        assert!(matches!(
            SketchCompressor::new(&shapes(), c),
            Err(Error::InvalidConfig { parameter, .. }) if parameter == field
        ));
    };
    for (c, field) in invalid_configs() {
        bad(c, field);
    }
    // The message names the parameter, the expected and the actual value.
    let e = SketchConfig::builder()
        .compression_ratio(2.0)
        .build()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(e.contains("compression_ratio") && e.contains("(0, 1]") && e.contains('2'));
    assert_eq!(
        SketchCompressor::new(&[], SketchConfig::default()).unwrap_err(),
        Error::NoParameters
    );
    let empty = vec![("w".to_string(), vec![0usize, 3])];
    assert!(matches!(
        SketchCompressor::new(&empty, SketchConfig::default()),
        Err(Error::EmptyParameter { .. })
    ));
    let dup = vec![("w".to_string(), vec![3]), ("w".to_string(), vec![2])];
    assert!(matches!(
        SketchCompressor::new(&dup, SketchConfig::default()),
        Err(Error::DuplicateParameter { .. })
    ));
    // Ratio exactly 1 is allowed.
    assert!(
        SketchCompressor::new(
            &shapes(),
            SketchConfig::builder().compression_ratio(1.0).build()
        )
        .is_ok()
    );
}

fn residuals(c: &SketchCompressor) -> Vec<Vec<f32>> {
    c.params()
        .list()
        .iter()
        .map(|p| c.residual(&p.name).unwrap().to_vec())
        .collect()
}

#[test]
fn bad_gradients_are_typed_errors_and_leave_state_unchanged() {
    let cfg = SketchConfig {
        error_feedback: true,
        ..config(0.1)
    };
    let mut c = SketchCompressor::new(&shapes(), cfg).unwrap();
    c.compress(&grads(1)).unwrap();
    let (before, step) = (residuals(&c), c.step());
    assert!(before.iter().any(|r| norm(r) > 0.0));

    assert_eq!(
        c.compress(&[vec![0.0f32; 50]]).unwrap_err(),
        Error::ParameterCount {
            expected: 3,
            actual: 1
        }
    );
    let host: Vec<Vec<f32>> = vec![vec![0.0; 50], vec![0.0; 2001], vec![0.0; 231]];
    assert!(matches!(
        c.compress(&host),
        Err(Error::ShapeMismatch { name, .. }) if name == "layer.weight"
    ));
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut g = grads(2);
        g[1][1234] = bad;
        assert!(matches!(
            c.compress(&g),
            Err(Error::NonFiniteGradient { name }) if name == "layer.weight"
        ));
    }
    // g + e overflows f32 in the last parameter: refused after the first two were encoded,
    // and still nothing changed.
    let mut g = grads(2);
    c.set_residual("out.weight", &vec![f32::MAX; 231]).unwrap();
    let mid = residuals(&c);
    g[2].iter_mut().for_each(|x| *x = f32::MAX);
    assert!(matches!(
        c.compress(&g),
        Err(Error::NonFiniteGradient { name }) if name == "out.weight"
    ));
    assert_eq!(residuals(&c), mid);
    assert_eq!(c.step(), step);
    c.set_residual("out.weight", &before[2]).unwrap();
    assert_eq!(residuals(&c), before);
}

#[test]
fn decompress_rejects_other_configs_and_malformed_values() {
    let mut a = SketchCompressor::new(&shapes(), config(0.1)).unwrap();
    let ca = a.compress(&grads(1)).unwrap();
    let others = [
        SketchConfig {
            seed: 43,
            ..config(0.1)
        },
        config(0.2),
        SketchConfig {
            dimension: 65,
            ..config(0.1)
        },
        SketchConfig {
            reconstruction: Reconstruction::Unbiased,
            ..config(0.1)
        },
    ];
    for cfg in others {
        let b = SketchCompressor::new(&shapes(), cfg).unwrap();
        assert_ne!(b.fingerprint(), a.fingerprint());
        assert_eq!(
            b.decompress(&ca).unwrap_err(),
            Error::FingerprintMismatch {
                expected: b.fingerprint(),
                actual: a.fingerprint()
            }
        );
    }
    // Same config, other parameter names or shapes.
    let mut renamed = shapes();
    renamed[0].0 = "layer.w".into();
    let mut reshaped = shapes();
    reshaped[2].1 = vec![7, 3, 11];
    for s in [renamed, reshaped] {
        let b = SketchCompressor::new(&s, config(0.1)).unwrap();
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
    assert!(matches!(t.to_bytes(), Err(Error::InvalidCompressed { .. })));
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
    let bytes = ca.to_bytes().unwrap();
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
    // Decompress buffers of the wrong length or count, untouched on error.
    let mut out = vec![vec![7f32; 50], vec![7f32; 2000], vec![7f32; 230]];
    assert!(matches!(
        a.decompress_into(&ca, &mut out),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(out.iter().flatten().all(|&x| x == 7.0));
    let mut two = vec![vec![0f32; 50], vec![0f32; 2000]];
    assert!(matches!(
        a.decompress_into(&ca, &mut two),
        Err(Error::ParameterCount { .. })
    ));
    assert!(a.decompress(&ca).is_ok());
    let _ = &mut a;
}

#[test]
fn to_bytes_refuses_hand_made_values_instead_of_truncating() {
    let mut c = SketchCompressor::new(&shapes(), config(0.1)).unwrap();
    let z = c.compress(&grads(1)).unwrap();
    // Slots above u32::MAX would have been truncated by an `as u32`.
    let mut t = z.clone();
    t.params[0].slots = (1usize << 32) + 8;
    let mut out = vec![1u8, 2, 3];
    assert!(matches!(
        t.write_bytes(&mut out),
        Err(Error::InvalidCompressed { .. })
    ));
    assert_eq!(
        out,
        vec![1, 2, 3],
        "a failed write leaves the buffer as it was"
    );
    // A payload kind that does not match the header, a norm in projection mode.
    let mut t = z.clone();
    t.quantization = BundleQuantization::Sign;
    assert!(t.to_bytes().is_err());
    let mut t = z.clone();
    t.params[0].norm = Some(1.0);
    assert!(t.to_bytes().is_err());
    // Bundles > slots.
    let mut t = z;
    t.params[0].bundles = t.params[0].slots + 1;
    assert!(t.to_bytes().is_err());
}

#[test]
fn stats_count_every_serialised_byte() {
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
            let cfg = SketchConfig {
                quantization: q,
                reconstruction: m,
                ..config(0.1)
            };
            let mut c = SketchCompressor::new(&shapes(), cfg).unwrap();
            let z = c.compress(&grads(5)).unwrap();
            let bytes = z.to_bytes().unwrap();
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

/// The facade's `bytes_are_independent_of_map_order_and_pinned` pins the same hashes
/// through candle tensors: the wire format did not change when the core moved here.
pub const GOLDEN: u64 = 0xd7cc_a230_b9f8_aa19;
/// Sign-quantized bytes of the same input.
pub const GOLDEN_SIGN: u64 = 0xd008_f9ef_ec8b_54fe;

#[test]
fn bytes_are_independent_of_declaration_order_and_pinned() {
    let mut shapes_rev = shapes();
    shapes_rev.reverse();
    let mut a = SketchCompressor::new(&shapes(), config(0.1)).unwrap();
    let mut b = SketchCompressor::new(&shapes_rev, config(0.1)).unwrap();
    let ba = a.compress(&grads(9)).unwrap().to_bytes().unwrap();
    let bb = b.compress(&grads(9)).unwrap().to_bytes().unwrap();
    assert_eq!(ba, bb);
    // FNV-1a-64 of the bytes (seeded inputs `gauss`, seed 42, ratio 0.1, D = 64). A change
    // means the format, the keys or the projection changed.
    assert_eq!(fnv(&ba), GOLDEN, "got {:#018x}", fnv(&ba));
    let cfg = SketchConfig {
        quantization: BundleQuantization::Sign,
        ..config(0.1)
    };
    let mut s = SketchCompressor::new(&shapes(), cfg).unwrap();
    let bs = s.compress(&grads(9)).unwrap().to_bytes().unwrap();
    assert_eq!(fnv(&bs), GOLDEN_SIGN, "got {:#018x}", fnv(&bs));
}

#[test]
fn keys_are_fresh_every_call_and_old_values_still_decode() {
    let g = grads(12);
    let mut c = SketchCompressor::new(&shapes(), config(0.1)).unwrap();
    let z0 = c.compress(&g).unwrap();
    let h0 = c.decompress(&z0).unwrap();
    let z1 = c.compress(&g).unwrap();
    assert_eq!((z0.step, z1.step, c.step()), (0, 1, 2));
    assert_ne!(z0.params, z1.params);
    assert_eq!(c.decompress(&z0).unwrap(), h0);
    let rx = SketchCompressor::new(&shapes(), config(0.1)).unwrap();
    assert_eq!(rx.decompress(&z0).unwrap(), h0);
    c.set_step(1);
    assert_eq!(c.compress(&g).unwrap(), z1);
}

#[test]
fn residual_state_can_be_restored() {
    let cfg = SketchConfig {
        error_feedback: true,
        ..config(0.1)
    };
    let mut a = SketchCompressor::new(&shapes(), cfg).unwrap();
    a.compress(&grads(1)).unwrap();
    let mut b = SketchCompressor::new(&shapes(), cfg).unwrap();
    for (name, _) in shapes() {
        b.set_residual(&name, a.residual(&name).unwrap()).unwrap();
    }
    b.set_step(a.step());
    assert_eq!(
        a.compress(&grads(2)).unwrap(),
        b.compress(&grads(2)).unwrap()
    );
    let before = residuals(&b);
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
    assert_eq!(residuals(&b), before);
    let mut off = SketchCompressor::new(&shapes(), config(0.1)).unwrap();
    assert!(off.residual("layer.bias").is_none());
    assert!(matches!(
        off.set_residual("layer.bias", &[0.0; 50]),
        Err(Error::InvalidState(_))
    ));
}

#[test]
fn results_do_not_depend_on_threads() {
    let g = grads(11);
    let mut a = SketchCompressor::new(&shapes(), config(0.25)).unwrap();
    let here = a.compress(&g).unwrap().to_bytes().unwrap();
    let there: Vec<Vec<u8>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|_| {
                let g = g.clone();
                s.spawn(move || {
                    let mut c = SketchCompressor::new(&shapes(), config(0.25)).unwrap();
                    c.compress(&g).unwrap().to_bytes().unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for t in there {
        assert_eq!(t, here);
    }
}

fn any_cfg() -> impl Strategy<Value = SketchConfig> {
    (1usize..40, 0.01f64..=1.0, any::<u64>(), 0u8..3, 0u8..3).prop_map(|(d, r, seed, m, q)| {
        SketchConfig {
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
        let mut c = SketchCompressor::new(&shapes, cfg).unwrap();
        let z = c.compress(&[&x[..], &y[..]]).unwrap();
        let bytes = z.to_bytes().unwrap();
        prop_assert_eq!(bytes.len(), z.stats.compressed_bytes);
        let back = CompressedGradients::from_bytes(&bytes).unwrap();
        prop_assert_eq!(&back, &z);
        prop_assert_eq!(c.decompress(&back).unwrap(), c.decompress(&z).unwrap());
    }
}
