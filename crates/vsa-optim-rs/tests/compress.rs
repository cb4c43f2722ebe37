//! Integration tests of the candle adapter over `grad-sketch`: the seed's names, gradient
//! maps (names, shapes, dtypes, devices), error mapping with unchanged state, the pinned
//! bytes through tensors, serde. The compressor's own laws (the √ρ bound, unbiasedness,
//! quantization, error feedback's bookkeeping, byte-format corruption) are tested in
//! `crates/grad-sketch/tests`, and so are the builder and the defaults: `VSAConfig` is
//! `grad_sketch::SketchConfig` under the seed's name. Both suites draw their inputs and
//! the refused configurations from `grad_sketch::test_support`.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use vsa_optim_rs::Error;
use vsa_optim_rs::compress::{
    BundleQuantization, CompressedGradients, Payload, Reconstruction, VSAConfig,
    VSAGradientCompressor,
};
use vsa_optim_rs::grad_sketch::test_support::{config, fnv, gauss, invalid_configs, norm, shapes};

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

#[test]
fn invalid_configs_are_typed_errors() {
    let dev = Device::Cpu;
    let bad = |c: VSAConfig, field: &str| match VSAGradientCompressor::new(&shapes(), c, &dev) {
        Err(Error::InvalidConfig { parameter, .. }) => assert_eq!(parameter, field),
        other => panic!("expected InvalidConfig({field}), got {other:?}"),
    };
    for (c, field) in invalid_configs() {
        bad(c, field);
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
    let snapshot = |c: &VSAGradientCompressor| -> (Vec<Vec<f32>>, u64) {
        let r = shapes()
            .iter()
            .map(|(n, _)| c.residual(n).unwrap().to_vec())
            .collect();
        (r, c.step())
    };
    let before = snapshot(&c);
    assert!(before.0.iter().any(|r| norm(r) > 0.0));

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
    let mut g = grads(2);
    g.insert(
        "layer.bias".into(),
        Tensor::zeros(50, DType::U32, &dev).unwrap(),
    );
    assert!(matches!(
        c.compress(&g),
        Err(Error::UnsupportedDtype { .. })
    ));
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
    assert!(matches!(
        c.compress_host(&host),
        Err(Error::InvalidConfig {
            parameter: "gradients",
            ..
        })
    ));
    let host: Vec<Vec<f32>> = vec![vec![0.0; 50], vec![0.0; 2001], vec![0.0; 231]];
    assert!(matches!(
        c.compress_host(&host),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        c.set_residual("layer.bias", &[f32::NAN; 50]),
        Err(Error::NonFiniteGradient { .. })
    ));
    assert!(matches!(
        c.set_residual("nope", &[0.0]),
        Err(Error::UnknownParameter { .. })
    ));
    assert_eq!(snapshot(&c), before);
}

#[test]
fn decompress_maps_other_configs_and_malformed_values_to_typed_errors() {
    let dev = Device::Cpu;
    let mut a = VSAGradientCompressor::new(&shapes(), config(0.1), &dev).unwrap();
    let ca = a.compress(&grads(1)).unwrap();
    let b = VSAGradientCompressor::new(
        &shapes(),
        VSAConfig {
            seed: 43,
            ..config(0.1)
        },
        &dev,
    )
    .unwrap();
    assert!(matches!(
        b.decompress(&ca),
        Err(Error::Sketch(vsa_optim_rs::grad_sketch::Error::FingerprintMismatch { expected, actual }))
            if expected == b.fingerprint() && actual == a.fingerprint()
    ));
    let mut t = ca.clone();
    if let Payload::F32(v) = &mut t.params[0].payload {
        v.pop();
    }
    assert!(matches!(
        a.decompress(&t),
        Err(Error::Sketch(
            vsa_optim_rs::grad_sketch::Error::InvalidCompressed { .. }
        ))
    ));
    let bytes = ca.to_bytes().unwrap();
    let e: Error = CompressedGradients::from_bytes(&bytes[..27])
        .unwrap_err()
        .into();
    assert!(matches!(
        e,
        Error::Sketch(vsa_optim_rs::grad_sketch::Error::InvalidCompressed { .. })
    ));
    let mut out = vec![vec![0f32; 50], vec![0f32; 2000], vec![0f32; 230]];
    assert!(matches!(
        a.decompress_host_into(&ca, &mut out),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(a.decompress(&ca).is_ok());
}

/// The same hashes are pinned on the host path in `grad-sketch` (`sketch_bytes.rs`): the
/// bytes did not change when the compressor moved out of the facade.
const GOLDEN: u64 = 0xd7cc_a230_b9f8_aa19;
const GOLDEN_SIGN: u64 = 0xd008_f9ef_ec8b_54fe;

#[test]
fn bytes_are_independent_of_map_order_and_pinned() {
    let dev = Device::Cpu;
    let g = grads(9);
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
    let ba = a.compress(&fwd).unwrap().to_bytes().unwrap();
    let bb = b.compress(&rev).unwrap().to_bytes().unwrap();
    assert_eq!(ba, bb);
    assert_eq!(fnv(&ba), GOLDEN, "got {:#018x}", fnv(&ba));
    let cfg = VSAConfig {
        quantization: BundleQuantization::Sign,
        ..config(0.1)
    };
    let mut s = VSAGradientCompressor::new(&shapes(), cfg, &dev).unwrap();
    let bs = s.compress(&g).unwrap().to_bytes().unwrap();
    assert_eq!(fnv(&bs), GOLDEN_SIGN, "got {:#018x}", fnv(&bs));
}

#[test]
fn tensor_path_equals_the_host_path() {
    let dev = Device::Cpu;
    let cfg = VSAConfig {
        error_feedback: true,
        ..config(0.25)
    };
    let mut t = VSAGradientCompressor::new(&shapes(), cfg, &dev).unwrap();
    let mut h = vsa_optim_rs::grad_sketch::SketchCompressor::new(&shapes(), cfg).unwrap();
    for s in 0..3 {
        let g = grads(s);
        let host = t.params().to_host_f32(&g).unwrap();
        let zt = t.compress(&g).unwrap();
        let zh = h.compress(&host).unwrap();
        assert_eq!(zt, zh);
        let out = t.decompress(&zt).unwrap();
        let back = h.decompress(&zh).unwrap();
        for (spec, v) in t.params().specs().iter().zip(&back) {
            let o = out[&spec.name].flatten_all().unwrap().to_vec1::<f32>();
            assert_eq!(&o.unwrap(), v);
        }
    }
    assert_eq!(t.core().residual("out.weight"), h.residual("out.weight"));
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

#[test]
fn serde_round_trips_configs_and_values() {
    let cfg = VSAConfig {
        quantization: BundleQuantization::Ternary,
        reconstruction: Reconstruction::NormMatched,
        ..config(0.2)
    };
    let json = serde_json::to_string(&cfg).unwrap();
    assert_eq!(serde_json::from_str::<VSAConfig>(&json).unwrap(), cfg);
    let mut c = VSAGradientCompressor::new(&shapes(), cfg, &Device::Cpu).unwrap();
    let z = c.compress(&grads(4)).unwrap();
    let json = serde_json::to_string(&z).unwrap();
    let back: CompressedGradients = serde_json::from_str(&json).unwrap();
    assert_eq!(back, z);
}
