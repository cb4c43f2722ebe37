//! The `ternary_accumulate` benchmark group: accumulator step and mean at the earlier layout
//! (an `f32` scale per 320), the default (an 8-bit scale per 25) and the default at 2 and 5
//! trits, next to a memcpy of the same `f32` bytes.
//!
//! One definition for two benches: this crate's `accumulate` bench and the workspace kernel
//! table (`benches/benches/ternary_bench.rs`) both include this file with `#[path]`; each
//! includer names the crate as `tq` (`ternary_quant` here, `vsa_optim_rs::ternary_quant`
//! there).
use super::tq::{AccumulatorConfig, PackedAccumulator};
use criterion::{BenchmarkId, Criterion, Throughput};
use std::hint::black_box;

/// Runs the group on `x` (its length is the case size).
pub fn accumulate_group(c: &mut Criterion, x: &[f32]) {
    let n = x.len();
    let mut g = c.benchmark_group("ternary_accumulate");
    g.throughput(Throughput::Bytes((4 * n) as u64));
    if n > 1 << 20 {
        g.sample_size(10);
    }
    let mut dst = vec![0f32; n];
    g.bench_with_input(BenchmarkId::new("memcpy", n), x, |b, x| {
        b.iter(|| {
            dst.copy_from_slice(black_box(x));
            black_box(&dst);
        })
    });
    for (name, base, trits) in [
        ("block320_f32", AccumulatorConfig::block320_f32(), 1u8),
        ("default", AccumulatorConfig::default(), 1),
        ("default_2trits", AccumulatorConfig::default(), 2),
        ("default_5trits", AccumulatorConfig::default(), 5),
    ] {
        let cfg = AccumulatorConfig {
            accumulation_steps: usize::MAX,
            trits_per_element: trits,
            ..base
        };
        let mut acc = PackedAccumulator::new(n, cfg).expect("valid config");
        g.bench_with_input(BenchmarkId::new(name, n), x, |b, x| {
            b.iter(|| acc.accumulate(black_box(x)))
        });
        let mut out = vec![0f32; n];
        g.bench_function(BenchmarkId::new(format!("mean_into_{name}"), n), |b| {
            b.iter(|| acc.mean_into(black_box(&mut out)))
        });
    }
    g.finish();
}
