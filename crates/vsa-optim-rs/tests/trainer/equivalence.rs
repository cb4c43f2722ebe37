//! The device path against the framework-free reference: for every model × history mode ×
//! storage precision (and f32 / bf16 / f16 gradients), the trainer's predictions equal those
//! of one `grad_predict::GradientPredictor` per parameter, and its Correct-step quality is
//! within the bound derived in `docs/trainer.md`. Golden values are pinned on this
//! arithmetic (fixed gradients in, predictions out), not on candle's gemm.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use vsa_optim_rs::grad_predict::{self, GradientPredictor};
use vsa_optim_rs::{
    DeterministicPhase, DeterministicPhaseConfig, DeterministicPhaseTrainer, Error, HistoryMode,
    PredictorModel, StatPrecision,
};

/// The device the tests put the trainer's history on: the first CUDA device with
/// `--features cuda` and `VSA_TEST_DEVICE=cuda` (`cargo xtask gpu`), else the CPU.
fn device() -> Device {
    #[cfg(feature = "cuda")]
    if std::env::var("VSA_TEST_DEVICE").as_deref() == Ok("cuda") {
        return Device::new_cuda(0).expect("VSA_TEST_DEVICE=cuda needs a CUDA device");
    }
    Device::Cpu
}

const SHAPES: [(&str, &[usize]); 2] = [("layer.weight", &[9, 37]), ("layer.bias", &[37])];

fn shapes() -> Vec<(String, Vec<usize>)> {
    SHAPES
        .iter()
        .map(|(n, s)| (n.to_string(), s.to_vec()))
        .collect()
}

/// A fixed gradient for parameter `p` at step `t`: a drifting signal plus hashed noise, all
/// in exact integer and f32 arithmetic (no libm), so it is the same on every machine.
fn gradient(p: usize, t: u64, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let h = vsa_optim_rs::vsa_core::rng::splitmix64(
                (p as u64) << 48 ^ t << 24 ^ i as u64 ^ 0x5eed,
            );
            let noise = (h >> 40) as f32 / (1u32 << 24) as f32 - 0.5;
            let base = ((i % 11) as f32 - 5.0) * 0.1;
            base + 0.02 * t as f32 * base + 0.3 * noise
        })
        .collect()
}

fn config(
    model: PredictorModel,
    history: HistoryMode,
    precision: StatPrecision,
) -> DeterministicPhaseConfig {
    DeterministicPhaseConfig {
        history_precision: precision,
        ..super::fixed_schedule(4, model, history)
    }
}

fn host_map(values: &[Vec<f32>], dtype: DType) -> HashMap<String, Tensor> {
    let mut set: Vec<(String, Vec<usize>)> = shapes();
    set.sort();
    set.iter()
        .zip(values)
        .map(|((name, shape), v)| {
            let t = Tensor::from_slice(v.as_slice(), shape.as_slice(), &device())
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            (name.clone(), t)
        })
        .collect()
}

/// f32 values of `v` after a round trip through `dtype` (what the trainer sees).
fn through(v: &[f32], dtype: DType) -> Vec<f32> {
    Tensor::from_slice(v, v.len(), &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1()
        .unwrap()
}

struct Outcome {
    /// Every predicted value, in order.
    predictions: Vec<f32>,
    /// (trainer, reference) cosine and relative error at each Correct step.
    qualities: Vec<((f32, f32), (f32, f32))>,
    /// Largest parameter size (for the bound).
    n: usize,
}

/// Runs the trainer and the reference side by side on the same fixed gradients and checks
/// that every prediction is equal.
fn run(cfg: DeterministicPhaseConfig, dtype: DType, steps: u64) -> Outcome {
    let mut trainer = DeterministicPhaseTrainer::new(&shapes(), cfg.clone(), &device()).unwrap();
    let sizes: Vec<usize> = trainer.params().specs().iter().map(|s| s.numel()).collect();
    let mut reference: Vec<GradientPredictor> = sizes
        .iter()
        .map(|&n| GradientPredictor::new(n, cfg.predictor()).unwrap())
        .collect();
    let mut out = Outcome {
        predictions: Vec::new(),
        qualities: Vec::new(),
        n: *sizes.iter().max().unwrap(),
    };
    for _ in 0..steps {
        let info = trainer.begin_step().unwrap();
        let t = info.step;
        if info.needs_backward {
            let g: Vec<Vec<f32>> = sizes
                .iter()
                .enumerate()
                .map(|(p, &n)| through(&gradient(p, t, n), dtype))
                .collect();
            trainer.record_full_gradients(&host_map(&g, dtype)).unwrap();
            if info.phase == DeterministicPhase::Correct && reference[0].samples() > 0 {
                let mut pred = Vec::new();
                for (r, gp) in reference.iter_mut().zip(&g) {
                    pred.extend(r.predict(t).unwrap());
                    r.record_correction(t, gp).unwrap();
                }
                let truth: Vec<f32> = g.concat();
                let q = grad_predict::quality(&pred, &truth).unwrap();
                let s = trainer.get_stats();
                out.qualities.push((
                    (s.last_cosine.unwrap(), s.last_relative_error.unwrap()),
                    (q.cosine, q.relative_error),
                ));
            } else {
                for (r, gp) in reference.iter_mut().zip(&g) {
                    r.record(t, gp).unwrap();
                }
            }
            trainer.end_step(1.0).unwrap();
        } else {
            let got = trainer.get_predicted_gradients().unwrap();
            for (spec, r) in trainer.params().specs().iter().zip(&reference) {
                let dev: Vec<f32> = got[&spec.name].flatten_all().unwrap().to_vec1().unwrap();
                let want = r.predict(t).unwrap();
                assert_eq!(dev, want, "{cfg:?} {dtype:?} step {t} {}", spec.name);
                out.predictions.extend(dev);
            }
            trainer.end_step_without_loss().unwrap();
        }
    }
    assert!(!out.predictions.is_empty() && !out.qualities.is_empty());
    out
}

/// The bound of `docs/trainer.md`: both implementations form the same f32 products and
/// differ only in summation order, so each sum of n terms is within γₙ = n·u/(1 − n·u)
/// (u = 2⁻²⁴) of the exact one relative to Σ|terms|, which gives |Δcos| ≤ 4γₙ and
/// |Δrel| ≤ 2γₙ·rel (plus one f32 rounding of the result each).
fn check_quality(o: &Outcome) {
    let u = f64::from(f32::EPSILON) / 2.0;
    let n = o.n as f64;
    let gamma = n * u / (1.0 - n * u);
    for &((c, r), (rc, rr)) in &o.qualities {
        let dc = f64::from((c - rc).abs());
        let dr = f64::from((r - rr).abs());
        assert!(dc <= 4.0 * gamma + 2.0 * u, "cosine {c} vs {rc}");
        assert!(
            dr <= (2.0 * gamma + 2.0 * u) * f64::from(rr.abs()) + f64::from(f32::MIN_POSITIVE),
            "relative error {r} vs {rr}"
        );
    }
}

#[test]
fn device_path_equals_grad_predict_for_every_model_and_history() {
    for model in [
        PredictorModel::LastGradient,
        PredictorModel::DecayedMean,
        PredictorModel::LinearWls,
    ] {
        for history in [HistoryMode::Streaming, HistoryMode::Window(4)] {
            for precision in [StatPrecision::F32, StatPrecision::Bf16, StatPrecision::F16] {
                let o = run(config(model, history, precision), DType::F32, 30);
                check_quality(&o);
            }
        }
    }
}

#[test]
fn half_precision_gradients_are_accepted_and_match() {
    for dtype in [DType::BF16, DType::F16] {
        for model in [PredictorModel::LastGradient, PredictorModel::LinearWls] {
            let o = run(
                config(model, HistoryMode::Streaming, StatPrecision::F32),
                dtype,
                30,
            );
            check_quality(&o);
        }
    }
}

fn fnv(values: &[f32]) -> u64 {
    let bytes: Vec<u8> = values
        .iter()
        .flat_map(|v| v.to_bits().to_le_bytes())
        .collect();
    vsa_optim_rs::vsa_core::rng::fnv1a(bytes)
}

/// Golden values on our own arithmetic: fixed gradients in, predictions out. `run` has
/// already checked that they equal grad-predict's, value for value.
#[test]
fn golden_predictions_on_fixed_gradients() {
    let cases = [
        (
            PredictorModel::LastGradient,
            HistoryMode::Streaming,
            GOLDEN_LAST,
        ),
        (
            PredictorModel::LinearWls,
            HistoryMode::Streaming,
            GOLDEN_WLS,
        ),
        (
            PredictorModel::LinearWls,
            HistoryMode::Window(4),
            GOLDEN_WINDOW,
        ),
    ];
    for (model, history, golden) in cases {
        let cfg = DeterministicPhaseConfig {
            // Residual off: predictions depend on element-wise arithmetic only.
            residual_threshold: 1e30,
            ..config(model, history, StatPrecision::F32)
        };
        let o = run(cfg, DType::F32, 40);
        assert_eq!(
            format!("{:016x}", fnv(&o.predictions)),
            golden,
            "{model:?} {history:?}"
        );
    }
}

// Printed by the first run of this test (the values are equal to grad-predict's, see `run`).
const GOLDEN_LAST: &str = "b6e8beb447c4ae0d";
const GOLDEN_WLS: &str = "57d154fd2a33555d";
const GOLDEN_WINDOW: &str = "5ca8aa932f218de5";

fn trainer_at_predict(
    model: PredictorModel,
) -> (DeterministicPhaseTrainer, HashMap<String, Tensor>) {
    let cfg = config(model, HistoryMode::Streaming, StatPrecision::F32);
    let mut t = DeterministicPhaseTrainer::new(&shapes(), cfg, &device()).unwrap();
    let sizes: Vec<usize> = t.params().specs().iter().map(|s| s.numel()).collect();
    let mut last = HashMap::new();
    loop {
        let info = t.peek();
        if info.phase == DeterministicPhase::Predict {
            return (t, last);
        }
        let info = t.begin_step().unwrap();
        let g: Vec<Vec<f32>> = sizes
            .iter()
            .enumerate()
            .map(|(p, &n)| gradient(p, info.step, n))
            .collect();
        last = host_map(&g, DType::F32);
        t.record_full_gradients(&last).unwrap();
        t.end_step(1.0).unwrap();
    }
}

#[test]
fn last_gradient_is_a_reference_and_predicted_steps_move_nothing() {
    let (mut t, last) = trainer_at_predict(PredictorModel::LastGradient);
    let before = t.transfers();
    t.begin_step().unwrap();
    let p1 = t.get_predicted_gradients().unwrap();
    let p2 = t.get_predicted_gradients().unwrap();
    for (name, g) in &last {
        // The prediction is the recorded tensor itself, and it is formed once per step.
        assert_eq!(p1[name].id(), g.id(), "{name}");
        assert_eq!(p2[name].id(), p1[name].id(), "{name}");
    }
    t.end_step_without_loss().unwrap();
    assert_eq!(t.transfers(), before, "a predicted step moved data");
    // Backward steps read back one small vector each.
    let info = t.begin_step().unwrap();
    assert!(info.needs_backward || info.phase == DeterministicPhase::Predict);
}

#[test]
fn f16_history_refuses_out_of_range_gradients_and_changes_nothing() {
    let cfg = config(
        PredictorModel::LinearWls,
        HistoryMode::Streaming,
        StatPrecision::F16,
    );
    let mut t = DeterministicPhaseTrainer::new(&shapes(), cfg, &device()).unwrap();
    let sizes: Vec<usize> = t.params().specs().iter().map(|s| s.numel()).collect();
    t.begin_step().unwrap();
    let ok: Vec<Vec<f32>> = sizes
        .iter()
        .enumerate()
        .map(|(p, &n)| gradient(p, 0, n))
        .collect();
    t.record_full_gradients(&host_map(&ok, DType::F32)).unwrap();
    t.end_step(1.0).unwrap();
    let before = t.state_bytes().unwrap();
    t.begin_step().unwrap();
    let mut big = ok.clone();
    big[1][5] = 70000.0;
    let err = t
        .record_full_gradients(&host_map(&big, DType::F32))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Predict(grad_predict::Error::OutOfRange { index: 5, .. })
        ),
        "{err:?}"
    );
    let mut nan = ok.clone();
    nan[0][3] = f32::NAN;
    assert!(matches!(
        t.record_full_gradients(&host_map(&nan, DType::F32)),
        Err(Error::NonFiniteGradient { .. })
    ));
    t.record_full_gradients(&host_map(&ok, DType::F32)).unwrap();
    t.end_step(1.0).unwrap();
    // The failed calls changed nothing: a fresh trainer fed only the good calls agrees.
    let cfg = config(
        PredictorModel::LinearWls,
        HistoryMode::Streaming,
        StatPrecision::F16,
    );
    let mut u = DeterministicPhaseTrainer::new(&shapes(), cfg, &device()).unwrap();
    for _ in 0..2 {
        u.begin_step().unwrap();
        u.record_full_gradients(&host_map(&ok, DType::F32)).unwrap();
        u.end_step(1.0).unwrap();
    }
    assert_eq!(t.state_bytes().unwrap(), u.state_bytes().unwrap());
    assert_ne!(before, t.state_bytes().unwrap());
}

#[test]
fn checkpoint_version_and_config_are_checked() {
    let (t, _) = trainer_at_predict(PredictorModel::LinearWls);
    let bytes = t.state_bytes().unwrap();
    let mut u = DeterministicPhaseTrainer::new(
        &shapes(),
        config(
            PredictorModel::LinearWls,
            HistoryMode::Streaming,
            StatPrecision::F32,
        ),
        &device(),
    )
    .unwrap();
    let fresh = u.state_bytes().unwrap();
    let pattern = br#"{\"version\":2,"#;
    let at = bytes
        .windows(pattern.len())
        .position(|w| w == pattern)
        .expect("version in the header");
    let mut tampered = bytes.clone();
    tampered[at + pattern.len() - 2] = b'7';
    let err = u.load_bytes(&tampered).unwrap_err();
    assert!(
        matches!(&err, Error::Checkpoint(m) if m.contains("version")),
        "{err:?}"
    );
    assert_eq!(
        u.state_bytes().unwrap(),
        fresh,
        "a failed load changed the trainer"
    );
    // Another config is refused too.
    let mut w = DeterministicPhaseTrainer::new(
        &shapes(),
        config(
            PredictorModel::DecayedMean,
            HistoryMode::Streaming,
            StatPrecision::F32,
        ),
        &device(),
    )
    .unwrap();
    assert!(matches!(w.load_bytes(&bytes), Err(Error::Checkpoint(_))));
    u.load_bytes(&bytes).unwrap();
    assert_eq!(u.state_bytes().unwrap(), bytes);
}

/// A gradient on another device than the trainer's is a typed error and changes nothing
/// (needs a CUDA device: built with `--features cuda`, run by `cargo xtask gpu`).
#[cfg(feature = "cuda")]
#[test]
fn gradient_on_another_device_is_refused() {
    let cuda = Device::new_cuda(0).expect("a CUDA device");
    let cfg = config(
        PredictorModel::LinearWls,
        HistoryMode::Streaming,
        StatPrecision::F32,
    );
    let mut t = DeterministicPhaseTrainer::new(&shapes(), cfg, &cuda).unwrap();
    let sizes: Vec<usize> = t.params().specs().iter().map(|s| s.numel()).collect();
    let g: Vec<Vec<f32>> = sizes
        .iter()
        .enumerate()
        .map(|(p, &n)| gradient(p, 0, n))
        .collect();
    let before = t.state_bytes().unwrap();
    t.begin_step().unwrap();
    let mut set: Vec<(String, Vec<usize>)> = shapes();
    set.sort();
    let on_cpu: HashMap<String, Tensor> = set
        .iter()
        .zip(&g)
        .map(|((n, s), v)| {
            (
                n.clone(),
                Tensor::from_slice(v.as_slice(), s.as_slice(), &Device::Cpu).unwrap(),
            )
        })
        .collect();
    assert!(matches!(
        t.record_full_gradients(&on_cpu),
        Err(Error::DeviceMismatch { .. })
    ));
    let on_gpu: HashMap<String, Tensor> = on_cpu
        .iter()
        .map(|(k, v)| (k.clone(), v.to_device(&cuda).unwrap()))
        .collect();
    t.record_full_gradients(&on_gpu).unwrap();
    t.end_step(1.0).unwrap();
    assert_ne!(t.state_bytes().unwrap(), before);
}
