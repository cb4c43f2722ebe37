//! Measures the relative L2 error of the packed accumulator against the exact f32 mean of 8
//! micro-batches on synthetic data, for several scale granularities, and the bits held.
//!
//! `cargo run --release -p ternary-quant --example accumulator_error`
//!
//! Prints a Markdown table (pasted into docs/ternary.md).
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use ternary_quant::{AccumulatorConfig, PackedAccumulator, RngKey, ScaleGranularity};

fn uniform(r: &mut ChaCha8Rng) -> f64 {
    ((r.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}
fn normal(r: &mut ChaCha8Rng) -> f64 {
    let (u, v) = (uniform(r), uniform(r));
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}
fn student_t3(r: &mut ChaCha8Rng) -> f64 {
    let z = normal(r);
    let c: f64 = (0..3).map(|_| normal(r).powi(2)).sum();
    z / (c / 3.0).sqrt()
}

/// `K` micro-batches `g_k = c ⊙ (μ + ε_k)` with per-element mean `μ = 0.3·z`.
fn data(kind: &str, n: usize, k: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let c: Vec<f64> = (0..n)
        .map(|_| {
            if kind == "lognormal-scale" {
                (1.5 * normal(&mut r)).exp()
            } else {
                1.0
            }
        })
        .collect();
    let mu: Vec<f64> = (0..n).map(|_| 0.3 * normal(&mut r)).collect();
    (0..k)
        .map(|_| {
            (0..n)
                .map(|i| {
                    let e = if kind == "gaussian" {
                        normal(&mut r)
                    } else {
                        student_t3(&mut r)
                    };
                    (c[i] * (mu[i] + e)) as f32
                })
                .collect()
        })
        .collect()
}

fn rel_err(a: &[f32], exact: &[f64]) -> f64 {
    let e: f64 = a
        .iter()
        .zip(exact)
        .map(|(x, y)| (f64::from(*x) - y).powi(2))
        .sum();
    let n: f64 = exact.iter().map(|y| y * y).sum();
    (e / n).sqrt()
}

fn main() -> ternary_quant::Result<()> {
    let n = 1 << 18;
    let k = 8;
    let seeds = 4u64;
    use ternary_quant::ScaleFormat::{F32, Log8};
    let schemes: Vec<(String, ScaleGranularity, bool, ternary_quant::ScaleFormat)> = vec![
        (
            "per-tensor, f32 scale".into(),
            ScaleGranularity::PerTensor,
            true,
            F32,
        ),
        (
            "block 1280, f32 scales".into(),
            ScaleGranularity::PerBlock(1280),
            true,
            F32,
        ),
        (
            "block 320, f32 scales (earlier default)".into(),
            ScaleGranularity::PerBlock(320),
            true,
            F32,
        ),
        (
            "block 80, f32 scales".into(),
            ScaleGranularity::PerBlock(80),
            true,
            F32,
        ),
        (
            "block 40, 8-bit log scales".into(),
            ScaleGranularity::PerBlock(40),
            true,
            Log8,
        ),
        (
            "block 25, 8-bit log scales (default)".into(),
            ScaleGranularity::PerBlock(25),
            true,
            Log8,
        ),
        (
            "block 20, 8-bit log scales".into(),
            ScaleGranularity::PerBlock(20),
            true,
            Log8,
        ),
        (
            "block 320, absmean (biased)".into(),
            ScaleGranularity::PerBlock(320),
            false,
            F32,
        ),
    ];
    let kinds = ["gaussian", "student-t3", "lognormal-scale"];
    println!(
        "| scheme | bits/elem held | {} |",
        kinds.map(|k| format!("rel. L2 err, {k}")).join(" | ")
    );
    println!("|---|---|{}", "---|".repeat(kinds.len()));
    let datasets: Vec<(Vec<Vec<f32>>, Vec<f64>)> = kinds
        .iter()
        .map(|kind| {
            let gs = data(kind, n, k, 2024);
            let exact: Vec<f64> = (0..n)
                .map(|i| gs.iter().map(|g| f64::from(g[i])).sum::<f64>() / k as f64)
                .collect();
            (gs, exact)
        })
        .collect();
    let mut out = vec![0f32; n];
    for (name, gran, stochastic, fmt) in &schemes {
        let mut cells = Vec::new();
        let mut bits = 0.0;
        for (gs, exact) in &datasets {
            let mut total = 0.0;
            for seed in 0..seeds {
                let cfg = AccumulatorConfig {
                    accumulation_steps: k,
                    stochastic: *stochastic,
                    seed,
                    tensor_id: 0,
                    scale_granularity: *gran,
                    trits_per_element: 1,
                    scale_format: *fmt,
                    rounding: ternary_quant::Rounding::Stochastic,
                };
                let mut acc = PackedAccumulator::new(n, cfg)?;
                for g in gs {
                    acc.accumulate(g)?;
                }
                acc.mean_into(&mut out)?;
                total += rel_err(&out, exact);
                bits = acc.bits_per_element();
            }
            cells.push(format!("{:.3}", total / seeds as f64));
        }
        println!("| {name} | {bits:.4} | {} |", cells.join(" | "));
    }
    // Reference: one stochastic quantization of the exact mean (the floor for one requantization),
    // per 320-element block.
    let mut cells = Vec::new();
    for (_, exact) in &datasets {
        let m: Vec<f32> = exact.iter().map(|&v| v as f32).collect();
        let mut total = 0.0;
        for seed in 0..seeds {
            for (i, (mc, oc)) in m.chunks(320).zip(out.chunks_mut(320)).enumerate() {
                let s = ternary_quant::max_abs(mc)?;
                let mut q = vec![0i8; mc.len()];
                ternary_quant::quantize_stochastic_into(
                    mc,
                    s,
                    RngKey::new(seed, 0, 0),
                    (i * 320) as u64,
                    &mut q,
                )?;
                ternary_quant::dequantize_into(&q, s, oc)?;
            }
            total += rel_err(&out, exact);
        }
        cells.push(format!("{:.3}", total / seeds as f64));
    }
    println!(
        "| reference: one stochastic quantization of the exact mean, block 320 | 1.7 | {} |",
        cells.join(" | ")
    );
    Ok(())
}
