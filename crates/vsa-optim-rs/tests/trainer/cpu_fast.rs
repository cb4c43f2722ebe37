//! The CPU fast path against the generic tensor path: two CPU trainers, one forced onto the
//! tensor path (`set_force_tensor_path`, a test-only switch), fed the same gradients (one of
//! them non-contiguous), give bit-identical predictions for every model × history mode, the
//! same checkpoints apart from the quality sums' summation order, and each loads the other's
//! checkpoint.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use vsa_optim_rs::{
    DeterministicPhaseConfig, DeterministicPhaseTrainer, Error, HistoryMode, PredictorModel,
};

fn shapes() -> Vec<(String, Vec<usize>)> {
    vec![("b".into(), vec![1500]), ("w".into(), vec![7, 300])]
}

fn value(p: u64, t: u64, i: u64) -> f32 {
    let h = vsa_optim_rs::vsa_core::rng::splitmix64(p << 48 ^ t << 24 ^ i ^ 0xfa57);
    let noise = (h >> 40) as f32 / (1u32 << 24) as f32 - 0.5;
    let base = ((i % 13) as f32 - 6.0) * 0.1;
    base * (1.0 + 0.03 * t as f32) + 0.2 * noise
}

/// The step's gradients; `w` is the transpose of a (300, 7) tensor, so not contiguous.
fn grads(t: u64) -> HashMap<String, Tensor> {
    let b: Vec<f32> = (0..1500).map(|i| value(0, t, i)).collect();
    let w: Vec<f32> = (0..2100).map(|i| value(1, t, i)).collect();
    let w = Tensor::from_vec(w, (300, 7), &Device::Cpu)
        .unwrap()
        .t()
        .unwrap();
    assert!(!w.is_contiguous());
    HashMap::from([
        (
            "b".to_string(),
            Tensor::from_vec(b, 1500, &Device::Cpu).unwrap(),
        ),
        ("w".to_string(), w),
    ])
}

fn config(model: PredictorModel, history: HistoryMode) -> DeterministicPhaseConfig {
    DeterministicPhaseConfig {
        // A low threshold so that residuals are applied on some steps.
        residual_threshold: 0.01,
        ..super::fixed_schedule(3, model, history)
    }
}

fn bits(t: &Tensor) -> Vec<u32> {
    let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn cpu_fast_path_equals_tensor_path_for_every_model_and_history() {
    for model in [
        PredictorModel::LastGradient,
        PredictorModel::DecayedMean,
        PredictorModel::LinearWls,
    ] {
        for history in [HistoryMode::Streaming, HistoryMode::Window(3)] {
            let cfg = config(model, history);
            let mut fast =
                DeterministicPhaseTrainer::new(&shapes(), cfg.clone(), &Device::Cpu).unwrap();
            let mut slow = DeterministicPhaseTrainer::new(&shapes(), cfg, &Device::Cpu).unwrap();
            slow.set_force_tensor_path(true);
            let (mut predicted, mut corrected) = (0, 0);
            for _ in 0..26 {
                let info = fast.begin_step().unwrap();
                assert_eq!(slow.begin_step().unwrap(), info);
                if info.needs_backward {
                    let g = grads(info.step);
                    fast.record_full_gradients(&g).unwrap();
                    slow.record_full_gradients(&g).unwrap();
                    let (f, s) = (fast.get_stats(), slow.get_stats());
                    if let (Some(fc), Some(sc)) = (f.last_cosine, s.last_cosine) {
                        // Same products, other summation order (bound: docs/trainer.md).
                        assert!((fc - sc).abs() <= 1e-5, "{model:?} {history:?}");
                        let (fr, sr) = (f.last_relative_error.unwrap(), s.last_relative_error);
                        assert!((fr - sr.unwrap()).abs() <= 1e-5 * sr.unwrap().max(1.0));
                        corrected += 1;
                    }
                    fast.end_step(1.0).unwrap();
                    slow.end_step(1.0).unwrap();
                } else {
                    let (pf, ps) = (
                        fast.get_predicted_gradients().unwrap(),
                        slow.get_predicted_gradients().unwrap(),
                    );
                    for (name, p) in &pf {
                        assert_eq!(p.dims(), ps[name].dims());
                        assert_eq!(bits(p), bits(&ps[name]), "{model:?} {history:?} {name}");
                    }
                    predicted += 1;
                    fast.end_step_without_loss().unwrap();
                    slow.end_step_without_loss().unwrap();
                }
            }
            assert!(predicted > 3 && corrected > 2, "{model:?} {history:?}");
            assert_eq!(fast.memory_bytes(), slow.memory_bytes());
            // Checkpoints are interchangeable: the tensor path resumes from the fast path's.
            let mut resumed =
                DeterministicPhaseTrainer::new(&shapes(), config(model, history), &Device::Cpu)
                    .unwrap();
            resumed.set_force_tensor_path(true);
            resumed.load_bytes(&fast.state_bytes().unwrap()).unwrap();
            assert_eq!(
                resumed.state_digest().unwrap(),
                fast.state_digest().unwrap()
            );
        }
    }
}

#[test]
fn cpu_fast_path_refuses_non_finite_gradients_and_changes_nothing() {
    let cfg = config(PredictorModel::LinearWls, HistoryMode::Streaming);
    let mut t = DeterministicPhaseTrainer::new(&shapes(), cfg.clone(), &Device::Cpu).unwrap();
    // A twin that never sees a bad call: states must stay equal (a failed call changes
    // nothing; the state can only be read between steps).
    let mut twin = DeterministicPhaseTrainer::new(&shapes(), cfg, &Device::Cpu).unwrap();
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MAX] {
        let info = t.begin_step().unwrap();
        assert_eq!(twin.begin_step().unwrap(), info);
        assert!(info.needs_backward);
        let mut g = grads(info.step);
        let mut b: Vec<f32> = g["b"].to_vec1().unwrap();
        b[700] = bad;
        g.insert("b".into(), Tensor::from_vec(b, 1500, &Device::Cpu).unwrap());
        let r = t.record_full_gradients(&g);
        if bad.is_finite() {
            // f32::MAX overflows the f32 sums but is finite: accepted.
            r.unwrap();
            twin.record_full_gradients(&g).unwrap();
        } else {
            assert!(
                matches!(r, Err(Error::NonFiniteGradient { ref name }) if name == "b"),
                "{r:?}"
            );
            t.record_full_gradients(&grads(info.step)).unwrap();
            twin.record_full_gradients(&grads(info.step)).unwrap();
        }
        t.end_step(1.0).unwrap();
        twin.end_step(1.0).unwrap();
        assert_eq!(t.state_bytes().unwrap(), twin.state_bytes().unwrap());
    }
}
