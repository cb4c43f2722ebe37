//! Criterion benchmarks for every kernel, each next to a memcpy of the same bytes.
use criterion::{criterion_group, criterion_main};

mod compress_bench;
mod predict_bench;
mod ternary_bench;
mod trainer_bench;
mod vsa_core_bench;

criterion_group!(
    benches,
    vsa_core_bench::benches,
    ternary_bench::benches,
    predict_bench::benches,
    trainer_bench::benches,
    compress_bench::benches,
    compress_bench::method_benches
);
criterion_main!(benches);
