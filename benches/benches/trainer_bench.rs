//! The facade trainer's per-call overhead on one 1M-element parameter, next to a memcpy of
//! the same bytes (group `trainer_overhead`). Each entry is a whole trainer step without the
//! model: `record` = begin + record the gradient + end (a Warmup step of
//! `DeterministicPhaseConfig::prediction_off()`, which includes the finiteness check and its
//! one scalar read-back); `predict` = begin + `get_predicted_gradients` + end (a trainer
//! parked in a predict block that never ends). `LastGradient` holds the recorded tensor
//! itself; streaming `LinearWls` updates two statistics tensors (traffic 20 B/element for
//! record, 12 for predict; the memcpy entries move 4 MB, the gradient's bytes).
//!
//! `VSA_BENCH_DEVICE=cuda` (with `--features cuda`) runs the group on the first CUDA device,
//! synchronising after every call (`cargo xtask gpu`).
use std::collections::HashMap;
use std::hint::black_box;

use candle_core::{DType, Device, Tensor};
use criterion::{BenchmarkId, Criterion, Throughput};
use vsa_optim_rs::phase_scheduler::MAX_PHASE_LEN;
use vsa_optim_rs::{
    DeterministicPhase, DeterministicPhaseConfig, DeterministicPhaseTrainer, HistoryMode,
    PredictorModel,
};

const N: usize = 1 << 20;

fn device() -> Device {
    #[cfg(feature = "cuda")]
    if std::env::var("VSA_BENCH_DEVICE").as_deref() == Ok("cuda") {
        return Device::new_cuda(0).expect("VSA_BENCH_DEVICE=cuda needs a CUDA device");
    }
    Device::Cpu
}

fn gradient(device: &Device) -> HashMap<String, Tensor> {
    let g = Tensor::arange(0f32, N as f32, &Device::Cpu)
        .and_then(|t| t.affine(1.0 / N as f64, -0.5))
        .and_then(|t| t.to_device(device))
        .expect("gradient");
    HashMap::from([("w".to_string(), g)])
}

fn trainer(model: PredictorModel, predicting: bool, device: &Device) -> DeterministicPhaseTrainer {
    let base = DeterministicPhaseConfig {
        predictor_model: model,
        history_mode: HistoryMode::Streaming,
        ..DeterministicPhaseConfig::default()
    };
    let config = if predicting {
        // Two true gradients, then predicted steps for ~4·10⁹ steps.
        DeterministicPhaseConfig {
            warmup_steps: 2,
            full_steps: 1,
            min_full_steps: 1,
            predict_steps: MAX_PHASE_LEN,
            max_predict_steps: MAX_PHASE_LEN,
            correct_every: MAX_PHASE_LEN,
            adaptive_phases: false,
            ..base
        }
    } else {
        DeterministicPhaseConfig {
            warmup_steps: MAX_PHASE_LEN,
            ..base
        }
    };
    let shapes = vec![("w".to_string(), vec![N])];
    let mut t = DeterministicPhaseTrainer::new(&shapes, config, device).expect("trainer");
    let g = gradient(device);
    while t.peek().phase != DeterministicPhase::Predict && predicting {
        t.begin_step().expect("begin");
        t.record_full_gradients(&g).expect("record");
        t.end_step(1.0).expect("end");
    }
    t
}

/// Registers the `trainer_overhead` group.
pub fn benches(c: &mut Criterion) {
    let device = device();
    let mut group = c.benchmark_group("trainer_overhead");
    group.throughput(Throughput::Bytes((4 * N) as u64));
    let g = gradient(&device);
    for (model, name) in [
        (PredictorModel::LastGradient, "last_gradient"),
        (PredictorModel::LinearWls, "linear_wls_streaming"),
    ] {
        let mut t = trainer(model, false, &device);
        group.bench_function(BenchmarkId::new("record", name), |b| {
            b.iter(|| {
                t.begin_step().expect("begin");
                t.record_full_gradients(black_box(&g)).expect("record");
                t.end_step(1.0).expect("end");
                device.synchronize().expect("sync");
            })
        });
        let mut t = trainer(model, true, &device);
        group.bench_function(BenchmarkId::new("predict", name), |b| {
            b.iter(|| {
                t.begin_step().expect("begin");
                let p = t.get_predicted_gradients().expect("predict");
                black_box(&p);
                t.end_step_without_loss().expect("end");
                device.synchronize().expect("sync");
            })
        });
    }
    let src = vec![1f32; N];
    group.bench_function(BenchmarkId::new("memcpy", "4MB"), crate::memcpy(&src));
    let t = Tensor::zeros(N, DType::F32, &device).expect("tensor");
    group.bench_function(BenchmarkId::new("tensor_copy", "4MB"), |b| {
        b.iter(|| {
            black_box(t.copy().expect("copy"));
            device.synchronize().expect("sync");
        })
    });
    group.finish();
}
