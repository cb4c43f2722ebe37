//! Criterion benchmarks for every kernel, each next to a memcpy of the same bytes.
use std::hint::black_box;

use criterion::{Bencher, criterion_group, criterion_main};

mod compress_bench;
mod predict_bench;
mod ternary_bench;
mod trainer_bench;
mod vsa_core_bench;

/// The routine of a group's memcpy baseline: each iteration copies `src` into a buffer of
/// the same length (allocated here, outside the timing), so `memcpy time / kernel time` is
/// the kernel's fraction of copy bandwidth.
fn memcpy<T: Copy + Default>(src: &[T]) -> impl FnMut(&mut Bencher<'_>) + '_ {
    let mut dst = vec![T::default(); src.len()];
    move |b| {
        b.iter(|| {
            dst.copy_from_slice(black_box(src));
            black_box(&mut dst);
        })
    }
}

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
