//! Measurements of the VSA gradient compressor for `docs/compression.md`.
//!
//! ```text
//! cargo run --release -p vsa-optim-bench --example compress_report -- quality
//! cargo run --release -p vsa-optim-bench --example compress_report -- train [steps, default 600]
//! cargo run --release -p vsa-optim-bench --example compress_report -- memory
//! cargo run -p vsa-optim-bench --example compress_report -- methods [steps, default 600] [--write] [--only=TEXT]
//! cargo run --release -p vsa-optim-bench --example compress_report -- charlm [steps, default 150] [--write] [--only=TEXT]… [--seeds=N] [--lrs=A,B,…] [--cache [--fill-seed=S]] [--cached-only]
//! ```
//!
//! `charlm` is the same side-by-side on the demo's char-LM (mini regime: batch 16, 150
//! steps), tuned for the lowest validation loss; `--write` replaces its own section.
//! `--cache` keeps every run's result under `target/compress_report_cache/charlm/` and
//! reuses it, so several processes (each with its own `--only=`) can share the grid and a
//! last `charlm --write --cache` assembles the table; `--fill-seed=S` (with `--cache`)
//! measures only seed `S`, to spread one codec's seeds over processes (never writes);
//! `--cached-only` measures nothing and builds the table from the cached runs alone.
//!
//! `methods` is the learning-rate-tuned side-by-side of every codec (issue 14); `--write`
//! replaces the compression section of `docs/benchmarks.md` with its tables.
//!
//! `memory` should run alone in its process: it reports the process's peak resident memory.

use candle_core::{Device, Tensor};
use std::collections::HashMap;
use vsa_optim_bench::compress_runs::{
    Codec, CodecRun, GradientPath, HostGradient, Objective, TunedRow, peak_rss_kib, quality,
    rss_kib, task_gradients, train_digits, train_task_codec, tuned_table, tuned_table_with,
};
use vsa_optim_bench::models::CharLmConfig;
use vsa_optim_bench::tasks::{CharLmTask, DigitsTask};
use vsa_optim_rs::compress::{
    BundleQuantization as Q, Reconstruction as R, VSAConfig, VSAGradientCompressor,
};
use vsa_optim_rs::grad_sketch::{
    AdamConfig, CompressorConfig, FetchSgdConfig, Method, MomentumConfig, ValueCoding as V,
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
        Some("methods") => {
            let args: Vec<String> = std::env::args().skip(2).collect();
            let steps = args.iter().find_map(|a| a.parse().ok()).unwrap_or(600);
            let only = args.iter().find_map(|a| a.strip_prefix("--only="));
            methods_main(steps, args.iter().any(|a| a == "--write"), only);
        }
        Some("charlm") => {
            let args: Vec<String> = std::env::args().skip(2).collect();
            let steps = args.iter().find_map(|a| a.parse().ok()).unwrap_or(150);
            let only: Vec<&str> = args
                .iter()
                .filter_map(|a| a.strip_prefix("--only="))
                .collect();
            let seeds = args
                .iter()
                .find_map(|a| a.strip_prefix("--seeds=")?.parse().ok())
                .unwrap_or(3);
            let lrs: Vec<f64> = args
                .iter()
                .find_map(|a| a.strip_prefix("--lrs="))
                .map_or(CHARLM_LRS.to_vec(), |l| {
                    l.split(',').filter_map(|x| x.parse().ok()).collect()
                });
            if args.iter().any(|a| a == "--cached-only") {
                charlm_from_cache(
                    steps,
                    args.iter().any(|a| a == "--write"),
                    &only,
                    seeds,
                    &lrs,
                );
                return;
            }
            charlm_main(
                steps,
                args.iter().any(|a| a == "--write"),
                &only,
                seeds,
                &lrs,
                args.iter().any(|a| a == "--cache"),
                args.iter()
                    .find_map(|a| a.strip_prefix("--fill-seed=")?.parse().ok()),
            );
        }
        _ => eprintln!("usage: compress_report quality|train|memory|methods|charlm"),
    }
}

/// The learning-rate grid every codec is tuned on.
const LRS: [f64; 5] = [5e-4, 1e-3, 2e-3, 4e-3, 8e-3];

/// The char-LM's grid: every codec's best rate at 150 steps lies inside it.
const CHARLM_LRS: [f64; 3] = [1e-3, 2e-3, 4e-3];

fn method(method: Method, error_feedback: bool, dense_warmup_steps: u64) -> Codec {
    Codec::Method(CompressorConfig {
        method,
        seed: 0,
        error_feedback,
        dense_warmup_steps,
    })
}

/// Error feedback on the momentum (1-bit-Adam style) after `warmup` exact AdamW steps.
fn momentum(method: Method, error_feedback: bool, warmup: u64) -> Codec {
    Codec::Momentum(MomentumConfig {
        compressor: CompressorConfig {
            method,
            seed: 0,
            error_feedback,
            dense_warmup_steps: warmup,
        },
        adam: AdamConfig::default(),
    })
}

/// FetchSGD with `rows × ⌈ratio·n/rows⌉` sketches after `warmup` exact AdamW steps.
fn fetch(
    rows: usize,
    ratio: f64,
    k_fraction: f64,
    warmup: u64,
    zero_recovered: bool,
    sketch_preconditioned: bool,
) -> Codec {
    Codec::FetchSgd(FetchSgdConfig {
        sketch_preconditioned,
        rows,
        ratio,
        k_fraction,
        seed: 0,
        warmup_steps: warmup,
        zero_recovered,
        adam: AdamConfig::default(),
    })
}

/// Where error feedback and momentum sit under AdamW (issue 14, item 2): (b) on the
/// momentum with a frozen variance, (c) FetchSGD in sketch space. (a), error feedback on
/// the gradient, is the `Method` rows of [`codecs`].
fn adam_codecs() -> Vec<(&'static str, Codec)> {
    let topk = |k_fraction| Method::TopK { k_fraction };
    vec![
        // The variance freeze alone: the momentum sent whole (random-k with ρ = 1).
        ("other", momentum(Method::RandomK { ratio: 1.0 }, false, 3)),
        ("≈10×", momentum(topk(0.025), true, 30)),
        ("≈10×", fetch(3, 0.05, 0.01, 30, true, true)),
        ("≈10×", fetch(5, 0.05, 0.002, 30, true, true)),
        ("≈10×", fetch(3, 0.05, 0.01, 30, true, false)),
        ("≈100×", momentum(topk(0.002), true, 3)),
        ("≈100×", momentum(topk(0.002), true, 2)),
        ("≈100×", momentum(topk(0.0012), true, 3)),
        ("≈100×", momentum(Method::RandomK { ratio: 0.005 }, true, 3)),
        ("≈100×", fetch(3, 0.004, 0.001, 3, true, true)),
        ("≈100×", fetch(1, 0.004, 0.002, 3, true, true)),
        ("≈100×", fetch(1, 0.004, 0.002, 3, false, true)),
        ("≈100×", fetch(1, 0.004, 0.0002, 2, true, true)),
        ("≈100×", fetch(3, 0.004, 0.001, 3, true, false)),
        ("other", momentum(topk(0.004), true, 60)),
        ("other", fetch(3, 0.01, 0.002, 60, true, true)),
    ]
}

fn codecs() -> Vec<(&'static str, Codec)> {
    let sketch = |ratio, error_feedback| Codec::DenseSketch {
        ratio,
        error_feedback,
    };
    let cs = |rows, ratio, k_fraction| Method::CountSketch {
        rows,
        ratio,
        k_fraction,
    };
    vec![
        ("1×", Codec::Exact),
        ("≈10×", sketch(0.1, true)),
        ("≈10×", sketch(0.1, false)),
        ("≈10×", method(cs(3, 0.1, 0.01), true, 0)),
        ("other", method(cs(3, 0.1, 0.01), true, 60)),
        ("≈10×", method(cs(1, 0.1, 0.02), true, 0)),
        ("≈10×", method(cs(3, 0.1, 1.0), false, 0)),
        ("≈10×", method(Method::RandomK { ratio: 0.1 }, false, 0)),
        ("≈10×", method(Method::RandomK { ratio: 0.1 }, true, 0)),
        ("≈10×", method(Method::TopK { k_fraction: 0.05 }, true, 0)),
        ("≈10×", method(Method::PowerSgd { rank: 2 }, true, 0)),
        ("other", method(Method::PowerSgd { rank: 1 }, true, 0)),
        ("other", method(Method::PowerSgd { rank: 4 }, true, 0)),
        ("≈100×", sketch(0.006, true)),
        ("≈100×", sketch(0.006, false)),
        ("≈100×", method(cs(3, 0.008, 1.0), false, 0)),
        ("≈100×", method(cs(3, 0.008, 0.001), true, 0)),
        ("≈100×", method(Method::RandomK { ratio: 0.0085 }, false, 0)),
        ("≈100×", method(Method::RandomK { ratio: 0.0085 }, true, 0)),
        ("≈100×", method(Method::TopK { k_fraction: 0.004 }, true, 0)),
        (
            "other",
            method(Method::TopK { k_fraction: 0.004 }, true, 60),
        ),
    ]
    .into_iter()
    .chain(adam_codecs())
    .collect()
}

fn methods_markdown(rows: &[TunedRow], steps: usize, seeds: u64, secs: f64) -> String {
    let mut s = String::new();
    let exact = rows
        .iter()
        .find(|r| r.budget == "1×")
        .map_or(f64::NAN, TunedRow::mean_accuracy);
    s.push_str(&format!(
        "Digits MLP 64-128-10, batch 64, AdamW, {steps} steps, seeds 0..{seeds} (weights, data \
         order and compressor keys); test accuracy on the 297 held-out digits. Every codec is \
         tuned on the same learning-rate grid {LRS:?}: the table shows the rate with the best \
         mean accuracy. Every compressed step runs `compress → to_bytes → from_bytes → \
         decompress` on the host. *Fewer bytes* is 38,440 (the f32 gradient) ÷ the mean \
         serialised bytes per step, headers and warm-up steps included. *Δ* is against exact. \
         A run whose gradient becomes non-finite stops there (*diverged*) and is scored with \
         the accuracy of its weights at that point. Whole run: {secs:.0} s on a loaded 2-core machine.\n\n"
    ));
    s.push_str(
        "| budget | codec | fewer bytes | best lr | test acc % (mean) | min | max | Δ vs exact | test loss | acc % at each lr of the grid | diverged runs |\n",
    );
    s.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let min = r.accuracies.iter().copied().fold(f64::MAX, f64::min);
        let max = r.accuracies.iter().copied().fold(f64::MIN, f64::max);
        let grid: Vec<String> = r.grid.iter().map(|a| format!("{a:.2}")).collect();
        s.push_str(&format!(
            "| {} | {} | {:.1}× | {} | {:.2} | {:.2} | {:.2} | {:+.2} | {:.3} | {} | {}/{} |\n",
            r.budget,
            r.label,
            r.fewer_bytes,
            r.best_lr,
            r.mean_accuracy(),
            min,
            max,
            r.mean_accuracy() - exact,
            r.test_loss,
            grid.join(" / "),
            r.diverged,
            r.runs
        ));
    }
    s
}

const BEGIN: &str = "<!-- compress-methods:begin (cargo run -p vsa-optim-bench --example compress_report -- methods --write) -->";
const END: &str = "<!-- compress-methods:end -->";
const LM_BEGIN: &str = "<!-- compress-charlm:begin (cargo run --release -p vsa-optim-bench --example compress_report -- charlm --write) -->";
const LM_END: &str = "<!-- compress-charlm:end -->";

fn write_section(body: &str) -> std::io::Result<()> {
    write_named_section(
        BEGIN,
        END,
        "Gradient compression: accuracy at equal bytes",
        "cargo run -p vsa-optim-bench --example compress_report -- methods --write",
        body,
    )
}

fn write_named_section(
    begin: &str,
    end: &str,
    title: &str,
    command: &str,
    body: &str,
) -> std::io::Result<()> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks.md");
    let doc = std::fs::read_to_string(&path)?;
    let section = format!(
        "{begin}\n## {title}\n\nRegenerated by `{command}` — do not edit by hand. See \
         docs/compression.md for the methods.\n\n{body}{end}"
    );
    let new = match (doc.find(begin), doc.find(end)) {
        (Some(a), Some(b)) if b > a => format!("{}{section}{}", &doc[..a], &doc[b + end.len()..]),
        // A new section goes right after the digits one (or at the end).
        _ => match doc.find(END) {
            Some(b) if begin != BEGIN => {
                let at = b + END.len();
                format!("{}\n\n{section}{}", &doc[..at], &doc[at..])
            }
            _ => format!("{}\n{section}\n", doc.trim_end()),
        },
    };
    std::fs::write(path, new)
}

/// The char-LM side-by-side: exact, error feedback on the gradient, and on the momentum
/// (1-bit-Adam style), at ≈10× and ≈100× fewer bytes (warm-up steps counted); at ≈100× the
/// momentum with the 8-byte top-k wire and with the compact wires (top-k with sign or bf16
/// values, random-k with sign values), each sized for ≈100× with its one exact step.
fn charlm_codecs() -> Vec<(&'static str, Codec)> {
    let topk = |k_fraction| Method::TopK { k_fraction };
    let packed = |k_fraction, values| Method::TopKPacked { k_fraction, values };
    let rk_packed = |ratio, values| Method::RandomKPacked { ratio, values };
    vec![
        ("1×", Codec::Exact),
        ("≈10×", method(topk(0.05), true, 0)),
        ("≈10×", momentum(topk(0.025), true, 5)),
        ("≈100×", method(topk(0.004), true, 0)),
        ("≈100×", momentum(topk(0.001), true, 1)),
        ("≈100×", method(Method::RandomK { ratio: 0.01 }, false, 0)),
        ("≈100×", momentum(packed(0.009, V::Sign), true, 1)),
        ("≈100×", momentum(packed(0.0035, V::Bf16), true, 1)),
        ("≈100×", momentum(rk_packed(0.09, V::Sign), true, 1)),
    ]
}

fn charlm_markdown(
    rows: &[TunedRow],
    steps: usize,
    seeds: u64,
    lrs: &[f64],
    secs: f64,
    partial: bool,
    cached: usize,
) -> String {
    let mut s = String::new();
    let exact = rows
        .iter()
        .find(|r| r.budget == "1×")
        .map_or(f64::NAN, |r| r.test_loss);
    let runs: usize = rows.iter().map(|r| r.runs).sum();
    s.push_str(&format!(
        "The demo's char-LM (`CharLmConfig::default()`: 2 blocks, width 128, context 64; \
         Shakespeare, batch 16, the demo's mini regime), AdamW, {steps} steps, seeds \
         0..{seeds} (weights, data order and compressor keys); validation loss on the demo's \
         32 held-out windows after the last step. Every codec is tuned on the learning-rate \
         grid {lrs:?} for the lowest mean validation loss. *Fewer bytes*: the f32 gradient ÷ \
         the mean serialised bytes per step, warm-up steps included. *Δ*: relative to exact. \
         {runs} runs, {secs:.0} s of training in all on a shared 2-core machine{}.{}\n\n",
        if cached > 0 {
            format!(
                " ({cached} of them measured by earlier processes of this command with \
                 `--cache`, read back from `target/compress_report_cache/charlm/`)"
            )
        } else {
            String::new()
        },
        if partial {
            format!(
                " **Partial:** only the codecs, seeds and learning rates listed were measured \
                 in this run. The full table ({} codecs, 3 seeds, the grid {CHARLM_LRS:?}) is \
                 `cargo run --release -p vsa-optim-bench --example compress_report -- charlm \
                 --write`.",
                charlm_codecs().len()
            )
        } else {
            String::new()
        }
    ));
    s.push_str("| budget | codec | fewer bytes | best lr | val loss (mean) | min | max | Δ vs exact | val loss at each lr of the grid | diverged runs |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let min = r.losses.iter().copied().fold(f64::MAX, f64::min);
        let max = r.losses.iter().copied().fold(f64::MIN, f64::max);
        let grid: Vec<String> = r.grid.iter().map(|a| format!("{a:.3}")).collect();
        s.push_str(&format!(
            "| {} | {} | {:.1}× | {} | {:.4} | {:.4} | {:.4} | {:+.2}% | {} | {}/{} |\n",
            r.budget,
            r.label,
            r.fewer_bytes,
            r.best_lr,
            r.test_loss,
            min,
            max,
            100.0 * (r.test_loss / exact - 1.0),
            grid.join(" / "),
            r.diverged,
            r.runs
        ));
    }
    s
}

/// `charlm --cached-only`: the table from the runs in the cache alone, measuring nothing.
/// Each (codec, learning rate) is averaged over the seeds `0..seeds` found in the cache; a
/// codec's best rate is the one with the lowest such mean among the rates measured on the
/// most seeds, and the row says over how many seeds (a codec or rate with none is left
/// out).
fn charlm_from_cache(steps: usize, write: bool, only: &[&str], seeds: u64, lrs: &[f64]) {
    let mut s = String::new();
    let mut lines = Vec::new();
    let (mut runs, mut secs, mut longest) = (0usize, 0f64, 0f64);
    // Exact's loss per seed at its best rate: each row's Δ is over the same seeds.
    let mut exact: Vec<Option<f64>> = vec![None; seeds as usize];
    for (budget, c) in charlm_codecs() {
        if !(only.is_empty() || only.iter().any(|o| c.label().contains(o))) {
            continue;
        }
        let mut best: Option<(f64, Vec<(u64, CodecRun)>)> = None;
        let mut grid = Vec::new();
        for &lr in lrs {
            let found: Vec<(u64, CodecRun)> = (0..seeds)
                .filter_map(|seed| {
                    let r = cache_read(&cache_path(&c.label(), lr, seed, steps), &c.label())?;
                    Some((seed, r))
                })
                .collect();
            if found.is_empty() {
                grid.push("—".to_string());
                continue;
            }
            runs += found.len();
            secs += found.iter().map(|(_, r)| r.train_secs).sum::<f64>();
            longest = found
                .iter()
                .map(|(_, r)| r.train_secs)
                .fold(longest, f64::max);
            let mean = found.iter().map(|(_, r)| r.test_loss).sum::<f64>() / found.len() as f64;
            grid.push(format!("{mean:.3} ({})", found.len()));
            // Only rates measured on the most seeds compete (a mean over fewer seeds is not
            // comparable), then the lowest mean wins.
            if best.as_ref().is_none_or(|b| {
                let b_mean = b.1.iter().map(|(_, r)| r.test_loss).sum::<f64>() / b.1.len() as f64;
                (found.len(), -mean) > (b.1.len(), -b_mean)
            }) {
                best = Some((lr, found));
            }
        }
        let Some((lr, found)) = best else { continue };
        let k = found.len() as f64;
        let loss = found.iter().map(|(_, r)| r.test_loss).sum::<f64>() / k;
        let bytes = found.iter().map(|(_, r)| r.mean_bytes).sum::<f64>() / k;
        let diverged = found.iter().filter(|(_, r)| r.diverged).count();
        let min = found
            .iter()
            .map(|(_, r)| r.test_loss)
            .fold(f64::MAX, f64::min);
        let max = found
            .iter()
            .map(|(_, r)| r.test_loss)
            .fold(f64::MIN, f64::max);
        if budget == "1×" {
            for (seed, r) in &found {
                exact[*seed as usize] = Some(r.test_loss);
            }
        }
        let same: Option<f64> = found.iter().map(|(seed, _)| exact[*seed as usize]).sum();
        let delta = same.map_or(f64::NAN, |e| 100.0 * (loss / (e / k) - 1.0));
        lines.push((
            budget,
            c.label(),
            found[0].1.f32_bytes as f64 / bytes,
            lr,
            loss,
            min,
            max,
            grid,
            found.len(),
            diverged,
            delta,
        ));
    }
    s.push_str(&format!(
        "The demo's char-LM (`CharLmConfig::default()`: 2 blocks, width 128, context 64; \
         Shakespeare, batch 16, the demo's mini regime), AdamW, {steps} steps; seeds from \
         0..{seeds} (weights, data order and compressor keys); validation loss on the demo's \
         32 held-out windows after the last step. Grid {lrs:?}; each cell of *val loss at \
         each lr* is the mean over the seeds measured at that rate (their number in \
         parentheses, — for none); a codec's best rate is the lowest such mean among \
         the rates measured on the most seeds. *Fewer \
         bytes*: the f32 gradient ÷ the mean serialised bytes per step, warm-up steps \
         included. *Δ*: relative to exact's mean over the same seeds, at exact's best rate. **Partial:** the machine (2 \
         cores shared with other jobs; one 150-step run took up to {:.0} min of wall time \
         here) did not allow every codec 3 seeds × 3 rates, so the table is assembled with \
         `charlm --cached-only --write` from the {runs} runs ({secs:.0} s of training in \
         all) that parallel `charlm --cache` processes measured; rows with fewer than 3 \
         seeds or a single rate are not tuned. The full table is `cargo run --release -p vsa-optim-bench --example \
         compress_report -- charlm --write`.\n\n",
        longest / 60.0
    ));
    s.push_str("| budget | codec | fewer bytes | best lr | seeds | val loss (mean) | min | max | Δ vs exact | val loss at each lr of the grid | diverged runs |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (budget, label, fewer, lr, loss, min, max, grid, n, diverged, delta) in lines {
        s.push_str(&format!(
            "| {budget} | {label} | {fewer:.1}× | {lr} | {n} | {loss:.4} | {min:.4} | {max:.4} | {delta:+.2}% | {} | {diverged}/{n} |\n",
            grid.join(" / "),
        ));
    }
    println!("{s}");
    if write {
        write_named_section(
            LM_BEGIN,
            LM_END,
            "Gradient compression on the char-LM: validation loss at equal bytes",
            "cargo run --release -p vsa-optim-bench --example compress_report -- charlm --write",
            &s,
        )
        .expect("write docs/benchmarks.md");
        eprintln!("wrote docs/benchmarks.md");
    }
}

/// Where `--cache` keeps one file per char-LM run (codec label, lr, seed, steps), so that
/// several processes of this command can share the grid and a last `--write` assembles the
/// table from what they measured. Delete the folder to measure everything again.
fn cache_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/compress_report_cache/charlm")
}

fn cache_path(label: &str, lr: f64, seed: u64, steps: usize) -> std::path::PathBuf {
    let key = format!("{label}|{lr:e}|{seed}|{steps}");
    // FNV-1a.
    let h = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    cache_dir().join(format!("{h:016x}.txt"))
}

fn cache_read(path: &std::path::Path, label: &str) -> Option<CodecRun> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    if lines.next()? != label {
        return None;
    }
    let w: Vec<u64> = lines
        .next()?
        .split(' ')
        .map(|x| u64::from_str_radix(x, 16).ok())
        .collect::<Option<_>>()?;
    let [acc, loss, bytes, last, secs, f32_bytes, diverged] = w[..] else {
        return None;
    };
    Some(CodecRun {
        test_accuracy: f64::from_bits(acc),
        test_loss: f64::from_bits(loss),
        mean_bytes: f64::from_bits(bytes),
        last_bytes: usize::try_from(last).ok()?,
        train_secs: f64::from_bits(secs),
        f32_bytes: usize::try_from(f32_bytes).ok()?,
        diverged: diverged != 0,
    })
}

fn cache_write(path: &std::path::Path, label: &str, r: &CodecRun) -> std::io::Result<()> {
    std::fs::create_dir_all(cache_dir())?;
    let words = [
        r.test_accuracy.to_bits(),
        r.test_loss.to_bits(),
        r.mean_bytes.to_bits(),
        r.last_bytes as u64,
        r.train_secs.to_bits(),
        r.f32_bytes as u64,
        u64::from(r.diverged),
    ];
    let w: Vec<String> = words.iter().map(|x| format!("{x:x}")).collect();
    std::fs::write(path, format!("{label}\n{}\n", w.join(" ")))
}

fn charlm_main(
    steps: usize,
    write: bool,
    only: &[&str],
    seeds: u64,
    lrs: &[f64],
    cache: bool,
    fill_seed: Option<u64>,
) {
    // `--fill-seed=S` only measures seed `S` into the cache: its table is not meaningful.
    let write = write && fill_seed.is_none();
    let task = CharLmTask::new(CharLmConfig::default(), 16, 1, 32, &Device::Cpu).expect("char lm");
    // `--only=TEXT`: the codecs whose label contains TEXT (`--only=exact` for exact).
    let list: Vec<_> = charlm_codecs()
        .into_iter()
        .filter(|(_, c)| only.is_empty() || only.iter().any(|o| c.label().contains(o)))
        .collect();
    let partial = list.len() < charlm_codecs().len() || seeds < 3 || lrs != CHARLM_LRS;
    let (mut rows, mut secs, mut cached) = (Vec::new(), 0f64, 0usize);
    // One codec at a time; with --write the section is rewritten after each, so a run cut
    // short still leaves what it measured.
    for codec in &list {
        let row = tuned_table_with(
            std::slice::from_ref(codec),
            lrs,
            seeds,
            Objective::Loss,
            |c, lr, seed| {
                let path = cache_path(&c.label(), lr, seed, steps);
                if cache && let Some(r) = cache_read(&path, &c.label()) {
                    cached += 1;
                    return Ok(r);
                }
                if fill_seed.is_some_and(|s| s != seed) {
                    // Not this process's seed: a placeholder, never written or cached.
                    return Ok(CodecRun {
                        test_accuracy: f64::NAN,
                        test_loss: f64::NAN,
                        mean_bytes: f64::NAN,
                        last_bytes: 0,
                        train_secs: 0.0,
                        f32_bytes: 0,
                        diverged: false,
                    });
                }
                let r = train_task_codec(&task, c, steps, lr, seed)?;
                if cache {
                    cache_write(&path, &c.label(), &r).expect("write the run cache");
                }
                Ok(r)
            },
            |label, lr, seed, r| {
                secs += r.train_secs;
                eprintln!(
                    "{label} lr {lr} seed {seed}: val loss {:.4} bytes {:.0} ({:.1} s){}",
                    r.test_loss,
                    r.mean_bytes,
                    r.train_secs,
                    if r.diverged { " DIVERGED" } else { "" }
                );
            },
        )
        .expect("runs");
        rows.extend(row);
        let md = charlm_markdown(&rows, steps, seeds, lrs, secs, partial, cached);
        println!("{md}");
        if write {
            write_named_section(
                LM_BEGIN,
                LM_END,
                "Gradient compression on the char-LM: validation loss at equal bytes",
                "cargo run --release -p vsa-optim-bench --example compress_report -- charlm --write",
                &md,
            )
            .expect("write docs/benchmarks.md");
            eprintln!("wrote docs/benchmarks.md");
        }
    }
}
fn methods_main(steps: usize, write: bool, only: Option<&str>) {
    let seeds = 3;
    let t0 = std::time::Instant::now();
    // `--only=TEXT`: exact plus the codecs whose label contains TEXT (never written).
    let list: Vec<_> = codecs()
        .into_iter()
        .filter(|(b, c)| *b == "1×" || only.is_none_or(|o| c.label().contains(o)))
        .collect();
    let write = write && only.is_none();
    let rows = tuned_table(&list, &LRS, seeds, steps, |label, lr, seed, r| {
        eprintln!(
            "{label} lr {lr} seed {seed}: acc {:.2} loss {:.4} bytes {:.0} ({:.1} s){}",
            r.test_accuracy,
            r.test_loss,
            r.mean_bytes,
            r.train_secs,
            if r.diverged { " DIVERGED" } else { "" }
        );
    })
    .expect("runs");
    let md = methods_markdown(&rows, steps, seeds, t0.elapsed().as_secs_f64());
    println!("{md}");
    if write {
        write_section(&md).expect("write docs/benchmarks.md");
        eprintln!("wrote docs/benchmarks.md");
    }
}
