//! VSA gradient compression (`vsa_optim_rs::compress`): compress, decompress and the round
//! trip of one 1M- and one 16M-element gradient at ρ = 0.1, D = 8192, next to a memcpy of the
//! gradient (4·n bytes) in the same group. Throughput is the gradient's f32 bytes, so
//! elements/s = bytes/s ÷ 4.
use std::collections::HashMap;
use std::hint::black_box;

use candle_core::{Device, Tensor};
use criterion::{Criterion, Throughput};
use vsa_optim_rs::compress::{BundleQuantization, VSAConfig, VSAGradientCompressor};

const SIZES: [usize; 2] = [1 << 20, 1 << 24];

fn gradient(n: usize) -> Vec<f32> {
    // Fixed, seed-free pseudo-random values in [-1, 1] (a multiplicative hash of the index).
    (0..n)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 8) as f32 / (1 << 23) as f32 - 1.0)
        .collect()
}

fn compressor(n: usize, quantization: BundleQuantization, ef: bool) -> VSAGradientCompressor {
    let cfg = VSAConfig {
        dimension: 8192,
        compression_ratio: 0.1,
        seed: 42,
        quantization,
        error_feedback: ef,
        ..VSAConfig::default()
    };
    VSAGradientCompressor::new(&[("g".to_string(), vec![n])], cfg, &Device::Cpu).unwrap()
}

/// The compression benchmarks.
pub fn benches(c: &mut Criterion) {
    for n in SIZES {
        let x = gradient(n);
        let label = if n == 1 << 20 { "1M" } else { "16M" };
        let mut g = c.benchmark_group(format!("compress/n={label}"));
        g.throughput(Throughput::Bytes(4 * n as u64));
        if n > 1 << 20 {
            g.sample_size(10);
        }
        g.bench_function("memcpy", crate::memcpy(&x));
        let mut comp = compressor(n, BundleQuantization::F32, false);
        let z = comp.compress_host(&[&x[..]]).unwrap();
        let mut out = vec![vec![0f32; n]];
        g.bench_function("compress", |b| {
            b.iter(|| black_box(comp.compress_host(&[black_box(&x[..])]).unwrap()))
        });
        g.bench_function("decompress", |b| {
            b.iter(|| comp.decompress_host_into(black_box(&z), &mut out).unwrap())
        });
        g.bench_function("compress+decompress", |b| {
            b.iter(|| {
                let z = comp.compress_host(&[black_box(&x[..])]).unwrap();
                comp.decompress_host_into(&z, &mut out).unwrap();
            })
        });
        let mut ef = compressor(n, BundleQuantization::F32, true);
        g.bench_function("compress_error_feedback", |b| {
            b.iter(|| black_box(ef.compress_host(&[black_box(&x[..])]).unwrap()))
        });
        let mut sign = compressor(n, BundleQuantization::Sign, false);
        let zs = sign.compress_host(&[&x[..]]).unwrap();
        g.bench_function("compress_sign", |b| {
            b.iter(|| black_box(sign.compress_host(&[black_box(&x[..])]).unwrap()))
        });
        g.bench_function("decompress_sign", |b| {
            b.iter(|| sign.decompress_host_into(black_box(&zs), &mut out).unwrap())
        });
        if n == 1 << 20 {
            let t = Tensor::from_slice(&x, n, &Device::Cpu).unwrap();
            let map: HashMap<String, Tensor> = [("g".to_string(), t)].into_iter().collect();
            g.bench_function("tensor_compress+decompress", |b| {
                b.iter(|| {
                    let z = comp.compress(black_box(&map)).unwrap();
                    black_box(comp.decompress(&z).unwrap());
                })
            });
        }
        g.finish();
    }
}

/// `grad_sketch::Compressor` methods: one compress + decompress of a 16M-element gradient
/// (a 4096 × 4096 matrix), next to a memcpy of its bytes. Throughput is the gradient's f32
/// bytes (elements/s = bytes/s ÷ 4).
pub fn method_benches(c: &mut Criterion) {
    use vsa_optim_rs::grad_sketch::{Compressor, CompressorConfig, Method};
    let n = 1usize << 24;
    let x = gradient(n);
    let shapes = vec![("g".to_string(), vec![4096, 4096])];
    let mut g = c.benchmark_group("compress_methods/n=16M");
    g.throughput(Throughput::Bytes(4 * n as u64));
    g.sample_size(10);
    g.bench_function("memcpy", crate::memcpy(&x));
    let methods = [
        ("top-k 5% + EF", Method::TopK { k_fraction: 0.05 }, true),
        ("random-k 10%", Method::RandomK { ratio: 0.1 }, false),
        (
            "count sketch r=3 ρ=0.1 dense median",
            Method::CountSketch {
                rows: 3,
                ratio: 0.1,
                k_fraction: 1.0,
            },
            false,
        ),
        (
            "count sketch r=3 ρ=0.1 top-1% + EF",
            Method::CountSketch {
                rows: 3,
                ratio: 0.1,
                k_fraction: 0.01,
            },
            true,
        ),
        ("PowerSGD rank 2 + EF", Method::PowerSgd { rank: 2 }, true),
    ];
    let mut out = vec![vec![0f32; n]];
    for (name, method, error_feedback) in methods {
        let cfg = CompressorConfig {
            method,
            seed: 42,
            error_feedback,
            dense_warmup_steps: 0,
        };
        let mut comp = Compressor::new(&shapes, cfg).unwrap();
        g.bench_function(format!("{name}: compress+decompress"), |b| {
            b.iter(|| {
                let m = comp.compress(&[black_box(&x[..])]).unwrap();
                comp.decompress_into(&m, &mut out).unwrap();
            })
        });
    }
    g.finish();
}
