//! Shared helpers: seeded Gaussian-ish inputs, dot products, a three-parameter layout.

use grad_sketch::SketchConfig;
use rand_core::RngCore;
use vsa_core::rng::chacha_stream;

/// Approximately Gaussian values (sum of 4 uniforms, centred), seeded.
pub fn gauss(n: usize, seed: u64) -> Vec<f32> {
    let mut r = chacha_stream(seed, 7);
    (0..n)
        .map(|_| {
            (0..4)
                .map(|_| (r.next_u32() >> 8) as f32 / (1u32 << 24) as f32 - 0.5)
                .sum::<f32>()
        })
        .collect()
}

pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum()
}

pub fn norm(a: &[f32]) -> f64 {
    dot(a, a).sqrt()
}

pub fn cos(a: &[f32], b: &[f32]) -> f64 {
    dot(a, b) / (norm(a) * norm(b))
}

/// Declared in an unsorted order on purpose.
pub fn shapes() -> Vec<(String, Vec<usize>)> {
    vec![
        ("layer.weight".into(), vec![40, 50]),
        ("layer.bias".into(), vec![50]),
        ("out.weight".into(), vec![3, 7, 11]),
    ]
}

/// Gradients in sorted-name order (`layer.bias`, `layer.weight`, `out.weight`); parameter
/// `i` of [`shapes`] draws `gauss(n, seed + i)`, as the facade's tensor tests do.
pub fn grads(seed: u64) -> Vec<Vec<f32>> {
    vec![gauss(50, seed + 1), gauss(2000, seed), gauss(231, seed + 2)]
}

pub fn config(ratio: f64) -> SketchConfig {
    SketchConfig::builder()
        .dimension(64)
        .compression_ratio(ratio)
        .seed(42)
        .build()
}

pub fn fnv(bytes: &[u8]) -> u64 {
    vsa_core::rng::fnv1a(bytes.iter().copied())
}
