//! Test support, not part of the API: the seeded inputs and the table of refused
//! configurations that this crate's tests and the facade's candle-adapter tests
//! (`vsa-optim-rs/tests/compress.rs`) share, so both pin the same bytes on the same data.
//! Hidden from the docs; it may change in any release.

use rand_core::RngCore;
use vsa_core::rng::chacha_stream;

use crate::{CompressorConfig, Method, Reconstruction, SketchConfig};

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

/// `⟨a, b⟩` in f64.
pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum()
}

/// `‖a‖` in f64.
pub fn norm(a: &[f32]) -> f64 {
    dot(a, a).sqrt()
}

/// The cosine of `a` and `b` in f64.
pub fn cos(a: &[f32], b: &[f32]) -> f64 {
    dot(a, b) / (norm(a) * norm(b))
}

/// Three parameters, declared in an unsorted order on purpose.
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

/// Dimension 64, seed 42, the given compression ratio, defaults otherwise.
pub fn config(ratio: f64) -> SketchConfig {
    SketchConfig::builder()
        .dimension(64)
        .compression_ratio(ratio)
        .seed(42)
        .build()
}

/// Configurations that [`SketchConfig::validate`] refuses, each with the parameter its
/// `InvalidConfig` error names: dimension 0, ratios outside `(0, 1]` (NaN and ∞
/// included), and error feedback with a non-contractive reconstruction.
pub fn invalid_configs() -> Vec<(SketchConfig, &'static str)> {
    let mut bad = vec![(SketchConfig::builder().dimension(0).build(), "dimension")];
    for r in [0.0, -0.1, 1.0001, f64::NAN, f64::INFINITY] {
        let c = SketchConfig::builder().compression_ratio(r).build();
        bad.push((c, "compression_ratio"));
    }
    for m in [Reconstruction::Unbiased, Reconstruction::NormMatched] {
        let c = SketchConfig::builder()
            .reconstruction(m)
            .error_feedback(true)
            .build();
        bad.push((c, "error_feedback"));
    }
    bad
}

/// One configuration of every method, for tests that must hold for each: the count sketch
/// with heavy-hitter selection (2%) and dense (`k_fraction` 1), random-k, top-k, PowerSGD.
pub fn all_methods() -> Vec<Method> {
    vec![
        Method::CountSketch {
            rows: 5,
            ratio: 0.2,
            k_fraction: 0.02,
        },
        Method::CountSketch {
            rows: 4,
            ratio: 0.2,
            k_fraction: 1.0,
        },
        Method::RandomK { ratio: 0.1 },
        Method::TopK { k_fraction: 0.05 },
        Method::PowerSgd { rank: 2 },
    ]
}

/// The alternative methods' test configuration: `method` with seed 11, error feedback as
/// given and no dense warm-up.
pub fn method_config(method: Method, error_feedback: bool) -> CompressorConfig {
    CompressorConfig {
        method,
        seed: 11,
        error_feedback,
        dense_warmup_steps: 0,
    }
}

/// One configuration of each compact-wire method ([`Method::TopKPacked`] with every value
/// coding, [`Method::RandomKPacked`] with sign values), for the same per-method tests.
pub fn packed_methods() -> Vec<Method> {
    use crate::ValueCoding as V;
    vec![
        Method::TopKPacked {
            k_fraction: 0.05,
            values: V::Sign,
        },
        Method::TopKPacked {
            k_fraction: 0.05,
            values: V::Bf16,
        },
        Method::TopKPacked {
            k_fraction: 0.03,
            values: V::F32,
        },
        Method::RandomKPacked {
            ratio: 0.1,
            values: V::Sign,
        },
    ]
}

/// FNV-1a of `bytes` (`vsa_core::rng::fnv1a`), for golden hashes.
pub fn fnv(bytes: &[u8]) -> u64 {
    vsa_core::rng::fnv1a(bytes.iter().copied())
}

/// Smooth, deterministic gradients for step `t` of the two-parameter layout `b: [40]`,
/// `w: [30, 50]`, in sorted-name order: element `i` of parameter `k` (b: 1, w: 2) is
/// `0.1·sin(0.37 i + 1.3 k + 0.71 t)`. The exchange tests of the facade and of
/// `vsa-optim-mpi` use them.
pub fn wave_grads(t: u64) -> Vec<Vec<f32>> {
    let f = |n: usize, k: u64| -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 * 0.37 + k as f32 * 1.3 + t as f32 * 0.71).sin()) * 0.1)
            .collect()
    };
    vec![f(40, 1), f(1500, 2)]
}

/// The sketch config of the exchange tests: ratio 0.1, error feedback, seed 9.
pub fn wave_config() -> SketchConfig {
    SketchConfig {
        compression_ratio: 0.1,
        error_feedback: true,
        seed: 9,
        ..SketchConfig::default()
    }
}
