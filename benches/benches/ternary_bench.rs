//! ternary-quant kernels: quantize+pack, unpack+dequantize and accumulate, each next to a
//! memcpy of the same f32 bytes.
use criterion::{BenchmarkId, Criterion, Throughput};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use std::hint::black_box;
use vsa_optim_rs::ternary_quant::{self as tq, RngKey};

/// `ternary_accumulate`: the same file as `cargo bench -p ternary-quant --bench accumulate`.
#[path = "../../crates/ternary-quant/benches/shared/accumulate_group.rs"]
mod accumulate_group;

/// Fixed-seed gradient-like input: uniform in [-1, 1) times a per-64-element scale in
/// [2^-4, 2^4), so scales vary across blocks as they do in real gradients.
fn input(n: usize) -> Vec<f32> {
    let mut r = ChaCha8Rng::seed_from_u64(0x7E57);
    let mut out = Vec::with_capacity(n);
    let mut scale = 1.0f32;
    for i in 0..n {
        if i % 64 == 0 {
            scale = 2f32.powi((r.next_u32() % 8) as i32 - 4);
        }
        out.push(((r.next_u32() >> 8) as f32 / 8_388_608.0 - 1.0) * scale);
    }
    out
}

fn memcpy_ref<M: criterion::measurement::Measurement>(
    g: &mut criterion::BenchmarkGroup<'_, M>,
    n: usize,
    x: &[f32],
) {
    let mut dst = vec![0f32; n];
    g.bench_with_input(BenchmarkId::new("memcpy", n), x, |b, x| {
        b.iter(|| {
            dst.copy_from_slice(black_box(x));
            black_box(&dst);
        })
    });
}

/// Registers the ternary-quant benchmark groups.
pub fn benches(c: &mut Criterion) {
    for n in [1usize << 20, 1 << 24] {
        let x = input(n);
        let words = tq::plane_words(n);
        let (mut plus, mut minus) = (vec![0u64; words], vec![0u64; words]);
        let mut bytes = vec![0u8; tq::base3_bytes(n)];
        let key = RngKey::new(1, 0, 0);

        let mut g = c.benchmark_group("ternary_quantize_pack");
        g.throughput(Throughput::Bytes((4 * n) as u64));
        if n > 1 << 20 {
            g.sample_size(10);
        }
        memcpy_ref(&mut g, n, &x);
        g.bench_with_input(BenchmarkId::new("stochastic_planes", n), &x, |b, x| {
            b.iter(|| tq::quantize_stochastic_planes_into(black_box(x), key, &mut plus, &mut minus))
        });
        g.bench_with_input(BenchmarkId::new("stochastic_base3", n), &x, |b, x| {
            b.iter(|| tq::quantize_stochastic_base3_into(black_box(x), key, &mut bytes))
        });
        g.bench_with_input(BenchmarkId::new("absmean_planes", n), &x, |b, x| {
            b.iter(|| tq::quantize_absmean_planes_into(black_box(x), &mut plus, &mut minus))
        });
        g.bench_with_input(BenchmarkId::new("absmean_base3", n), &x, |b, x| {
            b.iter(|| tq::quantize_absmean_base3_into(black_box(x), &mut bytes))
        });
        g.finish();

        // Valid packed inputs for the decode side.
        let s = tq::quantize_stochastic_planes_into(&x, key, &mut plus, &mut minus).unwrap();
        tq::quantize_stochastic_base3_into(&x, key, &mut bytes).unwrap();
        let mut out = vec![0f32; n];
        let mut g = c.benchmark_group("ternary_unpack_dequantize");
        g.throughput(Throughput::Bytes((4 * n) as u64));
        if n > 1 << 20 {
            g.sample_size(10);
        }
        memcpy_ref(&mut g, n, &x);
        g.bench_function(BenchmarkId::new("planes", n), |b| {
            b.iter(|| tq::dequantize_planes_into(black_box(&plus), &minus, s, &mut out))
        });
        g.bench_function(BenchmarkId::new("base3", n), |b| {
            b.iter(|| tq::dequantize_base3_into(black_box(&bytes), s, &mut out))
        });
        g.finish();
    }

    // ternary-quant's own accumulate group (the `accumulate_group` module above).
    for n in [1usize << 20, 1 << 24] {
        accumulate_group::accumulate_group(c, &input(n));
    }
}
