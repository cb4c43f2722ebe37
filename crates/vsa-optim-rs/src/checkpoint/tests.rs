//! The checkpoint pattern on every facade type but the trainer (tested in `tests/trainer`):
//! save → load gives the same state and the same next outputs, bit for bit; a bad file
//! (another version, truncated, a tensor missing, extra or misshapen, another type's file)
//! or a state for other parameters or another config is a typed error that changes nothing.

use std::collections::HashMap;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use safetensors::{Dtype, SafeTensors};

use super::{Entry, encode};
use crate::adamw::{AdamW, AdamWState, ParamsAdamW};
use crate::compress::{SketchState, VSAConfig, VSAGradientCompressor};
use crate::error::Error;
use crate::ternary::{TernaryAccumulatorState, TernaryConfig, TernaryGradientAccumulator};
use ternary_quant::ScaleFormat;

fn shapes() -> Vec<(String, Vec<usize>)> {
    vec![("w".into(), vec![12, 9]), ("b".into(), vec![9])]
}

/// Deterministic gradients: a smooth pattern that differs per parameter and per `k`.
fn grads(k: u64) -> HashMap<String, Tensor> {
    shapes()
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n)
                .map(|j| ((j as f32 * 0.37 + k as f32 * 1.3 + i as f32).sin()) * 2.0)
                .collect();
            (name, Tensor::from_vec(v, shape, &Device::Cpu).unwrap())
        })
        .collect()
}

fn bits(v: &[Vec<f32>]) -> Vec<Vec<u32>> {
    v.iter()
        .map(|x| x.iter().map(|f| f.to_bits()).collect())
        .collect()
}

/// A file's tensors, and its one metadata entry (key, JSON).
type Parts = (Vec<Entry>, String, serde_json::Value);

fn parts(bytes: &[u8]) -> Parts {
    let file = SafeTensors::deserialize(bytes).unwrap();
    let (_, meta) = SafeTensors::read_metadata(bytes).unwrap();
    let (key, json) = meta.metadata().as_ref().unwrap().iter().next().unwrap();
    let mut tensors: Vec<Entry> = file
        .tensors()
        .into_iter()
        .map(|(name, t)| Entry {
            name,
            dtype: t.dtype(),
            shape: t.shape().to_vec(),
            bytes: t.data().to_vec(),
        })
        .collect();
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    (tensors, key.clone(), serde_json::from_str(json).unwrap())
}

/// The file `bytes` after `edit` (a changed header or changed tensors).
fn rewrite(bytes: &[u8], edit: impl FnOnce(&mut Vec<Entry>, &mut serde_json::Value)) -> Vec<u8> {
    let (mut tensors, key, mut header) = parts(bytes);
    edit(&mut tensors, &mut header);
    encode(&key, &header, &tensors).unwrap()
}

/// Every corruption of a valid file that `load_bytes` must reject with
/// [`Error::Checkpoint`]: (what, bytes). `tensor` is one of the file's tensors.
fn corruptions(good: &[u8], tensor: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![
        (
            "version + 1".to_string(),
            rewrite(good, |_, h| {
                h["version"] = (h["version"].as_u64().unwrap() + 1).into();
            }),
        ),
        (
            "no version".into(),
            rewrite(good, |_, h| {
                h.as_object_mut().unwrap().remove("version");
            }),
        ),
        (
            format!("{tensor} missing"),
            rewrite(good, |t, _| t.retain(|e| e.name != tensor)),
        ),
        (
            format!("{tensor} one element short"),
            rewrite(good, |t, _| {
                let e = t.iter_mut().find(|e| e.name == tensor).unwrap();
                let size = e.bytes.len() / e.shape.iter().product::<usize>();
                e.bytes.truncate(e.bytes.len() - size);
                e.shape = vec![e.bytes.len() / size];
            }),
        ),
        (
            format!("{tensor} as 2-D"),
            rewrite(good, |t, _| {
                let e = t.iter_mut().find(|e| e.name == tensor).unwrap();
                let n: usize = e.shape.iter().product();
                e.shape = vec![1, n];
            }),
        ),
        (
            format!("{tensor} as I8"),
            rewrite(good, |t, _| {
                let e = t.iter_mut().find(|e| e.name == tensor).unwrap();
                let n: usize = e.shape.iter().product();
                e.dtype = Dtype::I8;
                e.bytes.truncate(n);
                e.shape = vec![n];
            }),
        ),
        (
            "an extra tensor".into(),
            rewrite(good, |t, _| t.push(Entry::u8("extra".into(), &[1, 2, 3]))),
        ),
        (
            "another type's key".into(),
            encode("vsa-optim-rs.other", &parts(good).2, &parts(good).0).unwrap(),
        ),
        ("empty".into(), Vec::new()),
        ("not safetensors".into(), b"hello, world".to_vec()),
    ];
    for cut in [7, 8, 20, good.len() / 2, good.len() - 1] {
        out.push((format!("truncated to {cut} bytes"), good[..cut].to_vec()));
    }
    out
}

fn tmp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("vsa-ckpt-{}-{name}", std::process::id()))
}

// ---------------------------------------------------------------- ternary accumulator

fn ternary(config: TernaryConfig) -> TernaryGradientAccumulator {
    TernaryGradientAccumulator::new(&shapes(), config, &Device::Cpu).unwrap()
}

fn ternary_config(format: ScaleFormat) -> TernaryConfig {
    TernaryConfig::builder()
        .accumulation_steps(3)
        .seed(11)
        .trits_per_element(2)
        .scale_format(format)
        .build()
}

/// A ternary accumulator in its second window, two micro-batches in.
fn ternary_run(config: TernaryConfig) -> TernaryGradientAccumulator {
    let mut a = ternary(config);
    for k in 0..3 {
        a.accumulate(&grads(k)).unwrap();
    }
    a.reset().unwrap();
    a.accumulate(&grads(3)).unwrap();
    a.accumulate(&grads(4)).unwrap();
    a
}

#[test]
fn ternary_save_load_resumes_bit_for_bit() {
    for format in [ScaleFormat::Log8, ScaleFormat::F32] {
        let config = ternary_config(format);
        let mut a = ternary_run(config);
        let path = tmp(&format!("ternary-{format:?}"));
        a.save(&path).unwrap();
        let mut b = ternary(config);
        b.load(&path).unwrap();
        std::fs::remove_file(&path).ok();
        assert_eq!(b.state(), a.state());
        // Built from the file instead of loaded into an accumulator: the same.
        let bytes = a.state_bytes().unwrap();
        let state = TernaryGradientAccumulator::state_from_bytes(&bytes).unwrap();
        let mut c = TernaryGradientAccumulator::from_state(state, &Device::Cpu).unwrap();
        assert_eq!(c.state(), a.state());
        for acc in [&mut a, &mut b, &mut c] {
            acc.accumulate(&grads(5)).unwrap();
            acc.reset().unwrap();
            acc.accumulate(&grads(6)).unwrap();
        }
        let next = bits(&a.get_accumulated_host().unwrap());
        assert_eq!(bits(&b.get_accumulated_host().unwrap()), next);
        assert_eq!(bits(&c.get_accumulated_host().unwrap()), next);
        assert_eq!(b.state(), a.state());
        // The big buffers are tensors, not JSON: the header holds no trits.
        let (tensors, key, header) = parts(&bytes);
        assert_eq!(key, crate::ternary::METADATA_KEY);
        assert_eq!(header["version"], crate::ternary::CHECKPOINT_VERSION);
        assert!(header.get("trits").is_none() && header["accumulators"][0].get("trits").is_none());
        let names: Vec<&str> = tensors.iter().map(|e| e.name.as_str()).collect();
        let expected: &[&str] = match format {
            ScaleFormat::Log8 => &[
                "0.codes", "0.scales", "0.trits", "1.codes", "1.scales", "1.trits",
            ],
            ScaleFormat::F32 => &["0.scales", "0.trits", "1.scales", "1.trits"],
        };
        assert_eq!(names, expected);
        assert!(tensors.iter().all(|e| e.dtype
            == if e.name.ends_with("scales") {
                Dtype::F32
            } else {
                Dtype::U8
            }));
    }
}

#[test]
fn ternary_bad_files_and_states_are_typed_errors_that_change_nothing() {
    let config = ternary_config(ScaleFormat::Log8);
    let good = ternary_run(config).state_bytes().unwrap();
    let mut b = ternary(config);
    b.accumulate(&grads(9)).unwrap();
    let before = b.state();
    for (what, bytes) in corruptions(&good, "1.codes") {
        let r = b.load_bytes(&bytes);
        assert!(matches!(r, Err(Error::Checkpoint(_))), "{what}: {r:?}");
        assert_eq!(b.state(), before, "{what}");
    }
    // A length whose buffers would overflow: refused before anything is allocated.
    let huge = rewrite(&good, |_, h| {
        h["accumulators"][0]["len"] = usize::MAX.into();
    });
    assert!(matches!(b.load_bytes(&huge), Err(Error::Ternary(_))));
    // A count beyond accumulation_steps: read, then rejected by restore.
    let count = rewrite(&good, |_, h| {
        for a in h["accumulators"].as_array_mut().unwrap() {
            a["count"] = 4.into();
        }
    });
    assert!(b.load_bytes(&count).is_err());
    // Non-canonical level bytes: the packed accumulator's own error.
    let levels = rewrite(&good, |t, _| {
        t.iter_mut().find(|e| e.name == "0.trits").unwrap().bytes[0] = 250;
    });
    assert!(matches!(b.load_bytes(&levels), Err(Error::Ternary(_))));
    // Another config or other parameters: rejected by load and by restore.
    let other_seed = ternary(TernaryConfig { seed: 12, ..config });
    let other_params = TernaryGradientAccumulator::new(
        &[("w".into(), vec![12, 9]), ("c".into(), vec![9])],
        config,
        &Device::Cpu,
    )
    .unwrap();
    for other in [other_seed, other_params] {
        let bytes = other.state_bytes().unwrap();
        assert!(matches!(b.load_bytes(&bytes), Err(Error::Checkpoint(_))));
        assert!(matches!(
            b.restore(&other.state()),
            Err(Error::Checkpoint(_))
        ));
    }
    // A missing file is an I/O error.
    assert!(matches!(b.load(tmp("does-not-exist")), Err(Error::Io(_))));
    assert_eq!(b.state(), before);
    // The accumulator still works.
    b.accumulate(&grads(10)).unwrap();
}

#[test]
fn ternary_json_files_of_the_earlier_format_still_load() {
    let config = ternary_config(ScaleFormat::Log8);
    let a = ternary_run(config);
    let json = serde_json::to_vec(&a.state()).unwrap();
    let mut b = ternary(config);
    b.load_bytes(&json).unwrap();
    assert_eq!(b.state(), a.state());
    let broken = &json[..json.len() / 2];
    assert!(matches!(b.load_bytes(broken), Err(Error::Checkpoint(_))));
    assert_eq!(b.state(), a.state());
    let state: TernaryAccumulatorState = serde_json::from_slice(&json).unwrap();
    assert_eq!(state, a.state());
}

// ---------------------------------------------------------------- VSA compressor

fn compressor(config: VSAConfig) -> VSAGradientCompressor {
    VSAGradientCompressor::new(&shapes(), config, &Device::Cpu).unwrap()
}

fn vsa_config(error_feedback: bool) -> VSAConfig {
    VSAConfig {
        error_feedback,
        ..VSAConfig::builder()
            .dimension(16)
            .compression_ratio(0.3) // not exact in binary: the JSON header must round-trip it
            .seed(5)
            .build()
    }
}

#[test]
fn compressor_save_load_resumes_bit_for_bit() {
    for ef in [true, false] {
        let config = vsa_config(ef);
        let mut a = compressor(config);
        for k in 0..3 {
            a.compress(&grads(k)).unwrap();
        }
        let path = tmp(&format!("compressor-{ef}"));
        a.save(&path).unwrap();
        let mut b = compressor(config);
        b.load(&path).unwrap();
        std::fs::remove_file(&path).ok();
        assert_eq!(b.state(), a.state());
        let bytes = a.state_bytes().unwrap();
        let state = VSAGradientCompressor::state_from_bytes(&bytes).unwrap();
        let mut c = VSAGradientCompressor::from_state(state, &Device::Cpu).unwrap();
        let next = a.compress(&grads(3)).unwrap();
        assert_eq!(b.compress(&grads(3)).unwrap(), next);
        assert_eq!(c.compress(&grads(3)).unwrap(), next);
        assert_eq!(b.state(), a.state());
        let (tensors, key, header) = parts(&bytes);
        assert_eq!(key, crate::compress::METADATA_KEY);
        assert_eq!(header["step"], 3);
        let names: Vec<&str> = tensors.iter().map(|e| e.name.as_str()).collect();
        if ef {
            // Residuals as F32 tensors with the parameters' shapes (sorted: "b", "w").
            assert_eq!(names, ["0.residual", "1.residual"]);
            assert_eq!(tensors[1].shape, [12, 9]);
            assert!(tensors.iter().all(|e| e.dtype == Dtype::F32));
        } else {
            assert!(names.is_empty());
        }
    }
}

#[test]
fn compressor_bad_files_and_states_are_typed_errors_that_change_nothing() {
    let config = vsa_config(true);
    let mut a = compressor(config);
    a.compress(&grads(0)).unwrap();
    let good = a.state_bytes().unwrap();
    let mut b = compressor(config);
    b.compress(&grads(7)).unwrap();
    let before = b.state();
    for (what, bytes) in corruptions(&good, "1.residual") {
        let r = b.load_bytes(&bytes);
        assert!(matches!(r, Err(Error::Checkpoint(_))), "{what}: {r:?}");
        assert_eq!(b.state(), before, "{what}");
    }
    let huge = rewrite(&good, |_, h| {
        h["shapes"][1] = serde_json::json!([usize::MAX, 2]);
    });
    assert!(matches!(b.load_bytes(&huge), Err(Error::Checkpoint(_))));
    let nan = rewrite(&good, |t, _| {
        t[0].bytes[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    });
    assert!(matches!(b.load_bytes(&nan), Err(Error::Checkpoint(_))));
    let other_seed = compressor(VSAConfig { seed: 6, ..config });
    let no_ef = compressor(vsa_config(false));
    for other in [other_seed, no_ef] {
        let bytes = other.state_bytes().unwrap();
        assert!(matches!(b.load_bytes(&bytes), Err(Error::Checkpoint(_))));
        assert!(matches!(
            b.restore(&other.state()),
            Err(Error::Checkpoint(_))
        ));
    }
    let mut short: SketchState = a.state();
    short.residuals[0].pop();
    assert!(matches!(b.restore(&short), Err(Error::Checkpoint(_))));
    assert!(matches!(
        VSAGradientCompressor::from_state(short, &Device::Cpu),
        Err(Error::Checkpoint(_))
    ));
    assert_eq!(b.state(), before);
}

// ---------------------------------------------------------------- AdamW

/// A linear layer with fixed initial weights, and inputs.
fn model(vm: &VarMap, dtype: DType) -> (candle_nn::Linear, Tensor) {
    let vb = VarBuilder::from_varmap(vm, dtype, &Device::Cpu);
    let lin = candle_nn::linear(4, 3, vb.pp("l")).unwrap();
    crate::init::deterministic_init(vm, 3).unwrap();
    let x = Tensor::arange(0f32, 20f32, &Device::Cpu)
        .unwrap()
        .reshape((5, 4))
        .unwrap()
        .affine(0.1, -1.0)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    (lin, x)
}

fn adamw_step(opt: &mut AdamW, lin: &candle_nn::Linear, x: &Tensor) {
    let loss = lin.forward(x).unwrap().sqr().unwrap().mean_all().unwrap();
    opt.backward_step(&loss).unwrap();
}

fn weights(vm: &VarMap) -> Vec<Vec<u8>> {
    let (_, vars) = crate::params::ParamSet::from_varmap(vm).unwrap();
    vars.iter()
        .map(|v| {
            let t = v.as_tensor().to_dtype(DType::F64).unwrap();
            let t = t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            t.iter().flat_map(|x| x.to_le_bytes()).collect()
        })
        .collect()
}

#[test]
fn adamw_save_load_resumes_bit_for_bit_in_every_float_dtype() {
    for dtype in [DType::F32, DType::F16, DType::BF16, DType::F64] {
        // eps = 1e-8 is 0 in f16, and an element whose gradient is 0 would then update by
        // 0/0 (as in candle-nn's AdamW): a NaN that `restore` rightly refuses.
        let params = ParamsAdamW {
            lr: 0.01,
            eps: 1e-3,
            ..Default::default()
        };
        let run = |split: Option<usize>| -> Vec<Vec<u8>> {
            let vm = VarMap::new();
            let (lin, x) = model(&vm, dtype);
            let mut opt = AdamW::from_varmap(&vm, params.clone()).unwrap();
            for i in 0..8 {
                if i == 4 {
                    opt.set_learning_rate(0.02); // the learning rate travels in the state
                }
                if split == Some(i) {
                    let path = tmp(&format!("adamw-{}", dtype.as_str()));
                    opt.save(&path).unwrap();
                    let mut fresh = AdamW::from_varmap(&vm, params.clone()).unwrap();
                    fresh.load(&path).unwrap();
                    std::fs::remove_file(&path).ok();
                    assert_eq!(fresh.state().unwrap(), opt.state().unwrap());
                    assert_eq!(fresh.learning_rate(), 0.02);
                    let state = AdamW::state_from_bytes(&opt.state_bytes().unwrap()).unwrap();
                    assert_eq!(AdamW::from_state(state, &vm).unwrap().step_count(), i);
                    opt = fresh;
                }
                adamw_step(&mut opt, &lin, &x);
            }
            weights(&vm)
        };
        assert_eq!(run(Some(4)), run(None), "{dtype:?}");
    }
}

#[test]
fn adamw_bad_files_and_states_are_typed_errors_that_change_nothing() {
    let vm = VarMap::new();
    let (lin, x) = model(&vm, DType::F32);
    let mut a = AdamW::from_varmap(&vm, ParamsAdamW::default()).unwrap();
    adamw_step(&mut a, &lin, &x);
    let good = a.state_bytes().unwrap();
    adamw_step(&mut a, &lin, &x);
    let before: AdamWState = a.state().unwrap();
    for (what, bytes) in corruptions(&good, "1.v") {
        let r = a.load_bytes(&bytes);
        assert!(matches!(r, Err(Error::Checkpoint(_))), "{what}: {r:?}");
        assert_eq!(a.state().unwrap(), before, "{what}");
    }
    // Moments that are not finite, a negative second moment, bad hyper-parameters.
    let mut bad = before.clone();
    bad.moments[0].m[..4].copy_from_slice(&f32::INFINITY.to_le_bytes());
    assert!(matches!(a.restore(&bad), Err(Error::Checkpoint(_))));
    let mut bad = before.clone();
    bad.moments[1].v[4..8].copy_from_slice(&(-1.0f32).to_le_bytes());
    assert!(matches!(a.restore(&bad), Err(Error::Checkpoint(_))));
    let mut bad = before.clone();
    bad.beta2 = 1.0;
    assert!(matches!(a.restore(&bad), Err(Error::InvalidConfig { .. })));
    let mut bad = before.clone();
    bad.moments[0].dtype = "f16".into();
    assert!(matches!(a.restore(&bad), Err(Error::Checkpoint(_))));
    // Another model: other names, other shapes.
    for (name, (i, o)) in [("k", (4, 3)), ("l", (5, 3))] {
        let other = VarMap::new();
        let vb = VarBuilder::from_varmap(&other, DType::F32, &Device::Cpu);
        candle_nn::linear(i, o, vb.pp(name)).unwrap();
        let o = AdamW::from_varmap(&other, ParamsAdamW::default()).unwrap();
        let r = a.load_bytes(&o.state_bytes().unwrap());
        assert!(matches!(r, Err(Error::Checkpoint(_))), "{name}: {r:?}");
    }
    assert_eq!(a.state().unwrap(), before);
}
