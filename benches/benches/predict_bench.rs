//! grad-predict kernels: record (update) and predict on 1M and 16M f32 elements, Streaming
//! and Window(8), each next to a memcpy that moves the same number of bytes.
//!
//! Throughput is the kernel's minimal memory traffic (bytes read + bytes written, f32 storage,
//! LinearWls, no residual):
//! - Streaming record: read g, M₀, N₁, write M₀, N₁ = 20 B/element;
//! - Streaming predict: read M₀, N₁, write out = 12 B/element;
//! - Window(8) record: read g, write one slot = 8 B/element;
//! - Window(8) predict: read 8 slots, write out = 36 B/element.
//!
//! The `memcpy` entry of each group copies traffic/2 bytes (so it also moves `traffic` bytes),
//! and the ratio of the two GiB/s figures is the fraction of memcpy bandwidth.
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use vsa_optim_rs::grad_predict::{GradientPredictor, HistoryMode, PredictorConfig, PredictorModel};

const SIZES: [(usize, &str); 2] = [(1 << 20, "1M"), (1 << 24, "16M")];

/// Gradient `index` of a fixed-seed stream: uniform in [−1, 1).
fn gradient(n: usize, index: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(0x6772_6164);
    rng.set_stream(index);
    (0..n)
        .map(|_| (rng.next_u32() >> 8) as f32 / (1u32 << 23) as f32 - 1.0)
        .collect()
}

fn predictor(n: usize, history: HistoryMode) -> GradientPredictor {
    let cfg = PredictorConfig {
        model: PredictorModel::LinearWls,
        history,
        decay: 0.95,
        ..PredictorConfig::default()
    };
    let mut p = GradientPredictor::new(n, cfg).expect("valid config");
    // Fill the history (8 samples: the ring is full, the streaming fit has velocity).
    for t in 0..8u64 {
        p.record(t, &gradient(n, t)).expect("finite gradient");
    }
    p
}

fn memcpy_entry(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    label: &str,
    traffic: usize,
) {
    let src = gradient(traffic / 8, 99);
    group.bench_function(BenchmarkId::new("memcpy", label), crate::memcpy(&src));
}

/// Registers the grad-predict benchmark groups.
pub fn benches(c: &mut Criterion) {
    for (mode, name, rec_b, pred_b) in [
        (HistoryMode::Streaming, "streaming", 20usize, 12usize),
        (HistoryMode::Window(8), "window8", 8, 36),
    ] {
        let mut group = c.benchmark_group(format!("grad_predict_record_{name}"));
        for (n, label) in SIZES {
            if n > 1 << 20 {
                group.sample_size(10);
            }
            group.throughput(Throughput::Bytes((rec_b * n) as u64));
            let mut p = predictor(n, mode);
            let g = gradient(n, 1000);
            let mut step = 100u64;
            group.bench_function(BenchmarkId::new("record", label), |b| {
                b.iter(|| {
                    step += 1;
                    p.record(step, black_box(&g)).expect("valid");
                })
            });
            drop(p);
            memcpy_entry(&mut group, label, rec_b * n);
        }
        group.finish();

        let mut group = c.benchmark_group(format!("grad_predict_predict_{name}"));
        for (n, label) in SIZES {
            if n > 1 << 20 {
                group.sample_size(10);
            }
            group.throughput(Throughput::Bytes((pred_b * n) as u64));
            let p = predictor(n, mode);
            let mut out = vec![0f32; n];
            group.bench_function(BenchmarkId::new("predict", label), |b| {
                b.iter(|| {
                    p.predict_into(black_box(10), &mut out).expect("valid");
                    black_box(&mut out);
                })
            });
            drop(p);
            memcpy_entry(&mut group, label, pred_b * n);
        }
        group.finish();
    }
}
