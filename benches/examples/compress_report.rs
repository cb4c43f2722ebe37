//! Measurements of the VSA gradient compressor for `docs/compression.md`.
//!
//! ```text
//! cargo run --release -p vsa-optim-bench --example compress_report -- quality
//! cargo run --release -p vsa-optim-bench --example compress_report -- train [steps, default 600]
//! cargo run --release -p vsa-optim-bench --example compress_report -- memory
//! ```
//!
//! `memory` should run alone in its process: it reports the process's peak resident memory.

use candle_core::{Device, Tensor};
use std::collections::HashMap;
use vsa_optim_bench::compress_runs::{
    GradientPath, HostGradient, peak_rss_kib, quality, rss_kib, task_gradients, train_digits,
};
use vsa_optim_bench::models::CharLmConfig;
use vsa_optim_bench::tasks::{CharLmTask, DigitsTask};
use vsa_optim_rs::compress::{
    BundleQuantization as Q, Reconstruction as R, VSAConfig, VSAGradientCompressor,
};

fn quality_tables(name: &str, grads: &[HostGradient], seeds: u64) {
    let ratios = [0.5, 0.25, 0.1, 0.05, 0.01];
    let mut configs = Vec::new();
    for r in ratios {
        for m in [R::Projection, R::Unbiased, R::NormMatched] {
            configs.push((r, m, Q::F32));
        }
        for q in [Q::Sign, Q::Ternary] {
            configs.push((r, R::Projection, q));
        }
    }
    let rows = quality(grads, &configs, seeds).expect("quality");
    println!("\n### {name}: reconstruction quality (mean over {seeds} seeds, D = 8192)\n");
    println!(
        "| ρ | mode | bundle | param | n | m | cos (mean) | cos (min) | √(m/n) | cos/√(m/n) | ‖x̂‖/‖x‖ | set bytes | set ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:?} | {:?} | {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.2} | {:.3} | {} | {:.1}× |",
            r.ratio,
            r.reconstruction,
            r.quantization,
            r.param,
            r.numel,
            r.slots,
            r.cosine,
            r.cosine_min,
            r.bound,
            r.cosine / r.bound,
            r.norm_ratio,
            r.set_bytes,
            r.set_compression
        );
    }
    let worst = rows
        .iter()
        .filter(|r| r.quantization == Q::F32)
        .map(|r| r.cosine_min / r.ratio.sqrt())
        .fold(f64::MAX, f64::min);
    println!("\nworst f32 per-tensor min-over-seeds cos / √ρ: {worst:.3}");
}

fn quality_main() {
    let dev = Device::Cpu;
    let digits = DigitsTask::new(Some(64), 1, &dev).expect("digits");
    let g = task_gradients(&digits, 0, 50).expect("digits grads");
    quality_tables("digits MLP (batch 64, after 50 AdamW steps)", &g, 20);
    let lm = CharLmTask::new(CharLmConfig::default(), 16, 1, 8, &dev).expect("char lm");
    let g = task_gradients(&lm, 0, 0).expect("lm grads");
    quality_tables(
        "char-LM (default config, batch 16, initial weights)",
        &g,
        20,
    );
}

fn train_main(steps: usize) {
    let paths = [
        GradientPath::Uncompressed,
        GradientPath::Compressed {
            ratio: 0.1,
            error_feedback: true,
            quantization: Q::F32,
        },
        GradientPath::Compressed {
            ratio: 0.1,
            error_feedback: false,
            quantization: Q::F32,
        },
        GradientPath::Compressed {
            ratio: 0.01,
            error_feedback: true,
            quantization: Q::F32,
        },
        GradientPath::Compressed {
            ratio: 1.0,
            error_feedback: true,
            quantization: Q::Sign,
        },
        GradientPath::Compressed {
            ratio: 0.1,
            error_feedback: true,
            quantization: Q::Sign,
        },
    ];
    println!("\n### digits MLP, batch 64, AdamW lr 1e-3, {steps} steps\n");
    println!(
        "| gradients | seed | test acc % | test loss | bytes/step | train s | of which compress s | EF state bytes |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut summary = Vec::new();
    for p in paths {
        let mut accs = Vec::new();
        for seed in 0..3 {
            let r = train_digits(p, steps, 1e-3, seed).expect("run");
            println!(
                "| {} | {} | {:.2} | {:.4} | {} | {:.2} | {:.2} | {} |",
                r.label,
                r.seed,
                r.test_accuracy,
                r.test_loss,
                r.bytes_per_step,
                r.train_secs,
                r.compress_secs,
                r.compressor_bytes
            );
            accs.push((r.test_accuracy, r.bytes_per_step, r.train_secs));
        }
        summary.push((p.label(), accs));
    }
    println!("\n| gradients | mean test acc % | min | max | bytes/step | mean train s |");
    println!("|---|---|---|---|---|---|");
    for (label, accs) in summary {
        let mean = accs.iter().map(|a| a.0).sum::<f64>() / 3.0;
        let min = accs.iter().map(|a| a.0).fold(f64::MAX, f64::min);
        let max = accs.iter().map(|a| a.0).fold(f64::MIN, f64::max);
        let secs = accs.iter().map(|a| a.2).sum::<f64>() / 3.0;
        println!(
            "| {label} | {mean:.2} | {min:.2} | {max:.2} | {} | {secs:.2} |",
            accs[0].1
        );
    }
}

fn memory_main() {
    let dev = Device::Cpu;
    let shape = vec![768usize, 3072];
    let n: usize = shape.iter().product();
    let base = peak_rss_kib().unwrap_or(0);
    let values: Vec<f32> = (0..n)
        .map(|i| ((i.wrapping_mul(2_654_435_761) % 2001) as f32 - 1000.0) * 1e-3)
        .collect();
    let g = Tensor::from_vec(values, shape.clone(), &dev).expect("tensor");
    let with_grad = rss_kib().unwrap_or(0);
    let cfg = VSAConfig::builder()
        .dimension(8192)
        .compression_ratio(0.1)
        .seed(42)
        .build();
    let shapes = vec![("w".to_string(), shape)];
    let t0 = std::time::Instant::now();
    let mut c = VSAGradientCompressor::new(&shapes, cfg, &dev).expect("new");
    let mut map = HashMap::new();
    map.insert("w".to_string(), g);
    let z = c.compress(&map).expect("compress");
    let first = t0.elapsed();
    let t1 = std::time::Instant::now();
    let out = c.decompress(&z).expect("decompress");
    let dec = t1.elapsed();
    assert_eq!(out["w"].dims(), &[768, 3072]);
    let peak = peak_rss_kib().unwrap_or(0);
    println!(
        "768×3072 gradient ({n} elements, {} MiB as f32), D = 8192, ρ = 0.1",
        (4 * n) >> 20
    );
    println!("  layout (slots, bundles): {:?}", c.layout());
    println!(
        "  compressed bytes: {} ({:.2}×)",
        z.stats.compressed_bytes, z.stats.compression_ratio
    );
    println!("  compressor state: {} bytes", c.memory_bytes());
    println!(
        "  first compress (incl. new): {:.2} ms, decompress {:.2} ms",
        first.as_secs_f64() * 1e3,
        dec.as_secs_f64() * 1e3
    );
    println!(
        "  peak RSS: start {base} KiB, after building the gradient {with_grad} KiB, peak {peak} KiB"
    );
    println!(
        "  peak above the process with its gradient: {} KiB",
        peak.saturating_sub(with_grad)
    );
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("quality") => quality_main(),
        Some("train") => train_main(
            std::env::args()
                .nth(2)
                .and_then(|s| s.parse().ok())
                .unwrap_or(600),
        ),
        Some("memory") => memory_main(),
        _ => eprintln!("usage: compress_report quality|train|memory"),
    }
}
