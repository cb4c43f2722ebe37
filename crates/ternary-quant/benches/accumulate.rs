//! Accumulator step and mean next to a memcpy of the same f32 gradient, at 1M and 16M
//! elements: `cargo bench -p ternary-quant --bench accumulate`. (The workspace-wide kernel
//! table comes from `benches/benches/ternary_bench.rs`, which runs the same cases.)
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use ternary_quant::{AccumulatorConfig, PackedAccumulator};

fn input(n: usize) -> Vec<f32> {
    // Deterministic, gradient-like: a sine with per-64-element magnitudes over 8 octaves.
    (0..n)
        .map(|i| (i as f32 * 0.618).sin() * 2f32.powi((i / 64 % 8) as i32 - 4))
        .collect()
}

fn bench(c: &mut Criterion) {
    for n in [1usize << 20, 1 << 24] {
        let x = input(n);
        let mut g = c.benchmark_group("ternary_accumulate");
        g.throughput(Throughput::Bytes((4 * n) as u64));
        g.sample_size(10);
        let mut dst = vec![0f32; n];
        g.bench_with_input(BenchmarkId::new("memcpy", n), &x, |b, x| {
            b.iter(|| {
                dst.copy_from_slice(black_box(x));
                black_box(&dst);
            })
        });
        for (name, base, trits) in [
            ("block320_f32_1trit", AccumulatorConfig::block320_f32(), 1u8),
            ("default_1trit", AccumulatorConfig::default(), 1),
            ("default_2trits", AccumulatorConfig::default(), 2),
            ("default_5trits", AccumulatorConfig::default(), 5),
        ] {
            let cfg = AccumulatorConfig {
                accumulation_steps: usize::MAX,
                trits_per_element: trits,
                ..base
            };
            let mut acc = PackedAccumulator::new(n, cfg).expect("valid config");
            g.bench_with_input(BenchmarkId::new(name, n), &x, |b, x| {
                b.iter(|| acc.accumulate(black_box(x)))
            });
            let mut out = vec![0f32; n];
            g.bench_function(BenchmarkId::new(format!("mean_into_{name}"), n), |b| {
                b.iter(|| acc.mean_into(black_box(&mut out)))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
