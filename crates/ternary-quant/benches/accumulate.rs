//! Accumulator step and mean next to a memcpy of the same f32 gradient, at 1M and 16M
//! elements: `cargo bench -p ternary-quant --bench accumulate`. The group itself is
//! `shared/accumulate_group.rs`, shared with the workspace kernel table
//! (`benches/benches/ternary_bench.rs`), so both run the same cases.
use criterion::{Criterion, criterion_group, criterion_main};
use ternary_quant as tq;

#[path = "shared/accumulate_group.rs"]
mod group;

fn input(n: usize) -> Vec<f32> {
    // Deterministic, gradient-like: a sine with per-64-element magnitudes over 8 octaves.
    (0..n)
        .map(|i| (i as f32 * 0.618).sin() * 2f32.powi((i / 64 % 8) as i32 - 4))
        .collect()
}

fn bench(c: &mut Criterion) {
    for n in [1usize << 20, 1 << 24] {
        group::accumulate_group(c, &input(n));
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
