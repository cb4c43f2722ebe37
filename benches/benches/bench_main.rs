//! Criterion benchmarks for every kernel, each next to a memcpy of the same bytes.
use criterion::{criterion_group, criterion_main};

mod vsa_core_bench;

criterion_group!(benches, vsa_core_bench::benches);
criterion_main!(benches);
