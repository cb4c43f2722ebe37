//! `cargo xtask demo`: real training runs, side by side, with a printed comparison table and
//! loss curves written as SVG.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use vsa_optim_bench::compare::{Comparison, NoHarm, Row, compare, no_harm};
use vsa_optim_bench::harness::{Point, RunSettings};
use vsa_optim_bench::models::CharLmConfig;
use vsa_optim_bench::plot::{Axis, curves};
use vsa_optim_bench::tasks::{CharLmTask, DigitsTask, Task};
use vsa_optim_bench::ternary_runs::{Accumulation, DigitsRunSettings, train_task};
use vsa_optim_bench::workloads::{Regime, Workload, trainer_configs, workload_settings};
use vsa_optim_rs::ternary::TernaryConfig;

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum WorkloadArg {
    /// The digits MLP (seconds).
    Digits,
    /// The character-level transformer on Shakespeare (minutes).
    Charlm,
    /// Both.
    All,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum RegimeArg {
    /// Minibatches (digits: 64 rows; char-LM: 16 windows).
    Mini,
    /// A large effective batch (digits: the full 1500 rows; char-LM: 8 accumulated micro-batches).
    Large,
    /// Both.
    Both,
}

/// Trains real models with plain AdamW, the LR-tuned and compute-matched baselines, the
/// two controls and DeterministicPhaseTrainer, and prints what each cost and reached.
#[derive(Debug, Parser)]
#[command(name = "demo", version)]
struct Args {
    /// Which workload to run. The default, the digits MLP, prints its tables within minutes;
    /// `--workload all` adds the char-LM (what `cargo xtask bench` runs, over 3 seeds).
    #[arg(long, value_enum, default_value = "digits")]
    workload: WorkloadArg,
    /// Which batch regime to run.
    #[arg(long, value_enum, default_value = "both")]
    regime: RegimeArg,
    /// Optimizer steps per run (default: per workload and regime).
    #[arg(long)]
    steps: Option<usize>,
    /// Seeds to run (0..seeds); more than one prints the median and spread of the speedup.
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// Learning-rate multipliers of the tuning grid (must include 1).
    #[arg(long, value_delimiter = ',', default_value = "0.5,1,2,4")]
    lr_grid: Vec<f64>,
    /// Shorter runs, for a quick check of the pipeline.
    #[arg(long)]
    quick: bool,
    /// Where to write curves (SVG), tables (Markdown) and raw results (JSON).
    #[arg(long, default_value = "target/demo")]
    out: PathBuf,
    /// Interleaved repetitions of the no-harm measurement (plain vs the trainer with
    /// prediction off, same backward passes) per workload and regime; 0 skips it.
    #[arg(long, default_value_t = 3)]
    no_harm_reps: usize,
    /// Skip the accumulator rows of the large-batch regime (exact f32 accumulation and the
    /// ternary accumulator at 1 and 2 trits over the regime's micro-batches).
    #[arg(long)]
    no_accumulators: bool,
    /// Hide the progress bars.
    #[arg(long)]
    no_progress: bool,
}

/// Micro-batches the digits full batch is split into for the accumulator rows (the digits
/// large-batch regime is one full batch; the char-LM one already accumulates 8).
const DIGITS_ACCUMULATED_MICRO: usize = 8;

/// The accumulator rows: exact `f32` accumulation and the ternary accumulator at 1 trit
/// (the default) and 2 trits.
fn accumulations() -> [Accumulation; 3] {
    [
        Accumulation::ExactF32,
        Accumulation::Ternary(TernaryConfig::default()),
        Accumulation::Ternary(TernaryConfig {
            trits_per_element: 2,
            ..TernaryConfig::default()
        }),
    ]
}

/// First time at which the held-out loss is at or below `target`.
fn first_hit(curve: &[Point], target: f64) -> Option<f64> {
    curve.iter().find(|p| p.loss <= target).map(|p| p.secs)
}

/// Time from which the held-out loss stays at or below `target` to the end.
fn sustained_hit(curve: &[Point], target: f64) -> Option<f64> {
    let mut t = None;
    for p in curve {
        if p.loss <= target {
            t.get_or_insert(p.secs);
        } else {
            t = None;
        }
    }
    t
}

/// Trains the large-batch regime's task with each accumulator (same seed, steps, data and
/// base learning rate as the baseline row) and appends one row per accumulator to `cmp`:
/// wall clock, final loss and metric against the comparison's target, and bytes held
/// (AdamW moments + the accumulator; the accumulator alone in the label).
fn accumulator_rows(
    task: &dyn Task,
    settings: RunSettings,
    cmp: &mut Comparison,
) -> Result<(), String> {
    let base_secs = cmp.rows.first().map_or(f64::NAN, |r| r.secs);
    for acc in accumulations() {
        eprintln!("accumulator row: {} on {}", acc.label(), task.name());
        let r = train_task(
            task,
            acc,
            DigitsRunSettings {
                steps: settings.steps,
                lr: settings.lr,
                seed: settings.seed,
            },
            settings.eval_every,
        )
        .map_err(|e| e.to_string())?;
        let last = r.last();
        let label = match acc {
            Accumulation::ExactF32 => "exact f32".to_string(),
            Accumulation::Ternary(c) if c.trits_per_element == 1 => "ternary, 1 trit".into(),
            Accumulation::Ternary(c) => format!("ternary, {} trits", c.trits_per_element),
            Accumulation::Bf16 => "bf16".into(),
        };
        cmp.rows.push(Row {
            label: format!(
                "accumulated ×{}: {label} ({} B, {:.2} bits/elem)",
                r.micro_batches, r.accumulator_bytes, r.bits_per_element
            ),
            lr: r.lr,
            loss: last.loss,
            metric: last.metric,
            backward: last.backward,
            secs: r.train_secs,
            time_ratio: r.train_secs / base_secs,
            first_hit: first_hit(&r.curve, cmp.target),
            sustained: sustained_hit(&r.curve, cmp.target),
            state_bytes: r.optimizer_bytes + r.accumulator_bytes,
            stats: Some(format!(
                "{}: accumulator holds {} bytes ({:.2} bits/element); {:.2} s of {:.2} s training \
                 inside it",
                r.label, r.accumulator_bytes, r.bits_per_element, r.accumulator_secs, r.train_secs
            )),
        });
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match real_main(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(args: &Args) -> Result<(), String> {
    if !args.lr_grid.contains(&1.0) {
        return Err("--lr-grid must contain 1 (the baseline)".into());
    }
    if args.lr_grid.iter().any(|m| !(m.is_finite() && *m > 0.0)) {
        return Err("--lr-grid values must be finite and > 0".into());
    }
    if args.seeds == 0 {
        return Err("--seeds must be at least 1".into());
    }
    if args.steps == Some(0) {
        return Err("--steps must be at least 1".into());
    }
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("creating {}: {e}", args.out.display()))?;
    let workloads: Vec<Workload> = match args.workload {
        WorkloadArg::Digits => vec![Workload::Digits],
        WorkloadArg::Charlm => vec![Workload::CharLm],
        WorkloadArg::All => vec![Workload::Digits, Workload::CharLm],
    };
    let regimes: Vec<Regime> = match args.regime {
        RegimeArg::Mini => vec![Regime::Mini],
        RegimeArg::Large => vec![Regime::Large],
        RegimeArg::Both => vec![Regime::Mini, Regime::Large],
    };
    let device = candle_core::Device::Cpu;
    let mut report = String::new();
    let mut harm: Vec<NoHarm> = Vec::new();
    for &w in &workloads {
        for &r in &regimes {
            let ws = workload_settings(w, r, args.quick);
            let task: Box<dyn Task> = match w {
                Workload::Digits => Box::new(
                    DigitsTask::new(ws.batch, ws.micro, &device).map_err(|e| e.to_string())?,
                ),
                Workload::CharLm => Box::new(
                    CharLmTask::new(
                        CharLmConfig::default(),
                        ws.batch.unwrap_or(16),
                        ws.micro,
                        ws.eval_windows,
                        &device,
                    )
                    .map_err(|e| e.to_string())?,
                ),
            };
            // The accumulator rows need micro-batches: the digits full batch is split into
            // DIGITS_ACCUMULATED_MICRO of them (the same rows per step as the baseline).
            let acc_task: Option<Box<dyn Task>> = match (w, r) {
                (Workload::Digits, Regime::Large) if ws.micro == 1 && !args.no_accumulators => {
                    Some(Box::new(
                        DigitsTask::new(ws.batch, DIGITS_ACCUMULATED_MICRO, &device)
                            .map_err(|e| e.to_string())?,
                    ))
                }
                _ => None,
            };
            let steps = args.steps.unwrap_or(ws.steps);
            let mut results: Vec<Comparison> = Vec::new();
            for seed in 0..args.seeds {
                let settings = RunSettings {
                    steps,
                    lr: ws.lr,
                    seed,
                    eval_every: ws.eval_every.min(steps),
                };
                let configs = trainer_configs();
                let runs_total = args.lr_grid.len() + configs.len() + 4;
                let bar = if args.no_progress {
                    ProgressBar::hidden()
                } else {
                    ProgressBar::new((steps * runs_total) as u64)
                };
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix:>28} [{bar:40}] {pos}/{len} steps, {elapsed_precise} {msg}",
                    )
                    .map_err(|e| e.to_string())?
                    .progress_chars("=> "),
                );
                bar.set_prefix(format!("{} seed {seed}", task.name()));
                let mut done = 0u64;
                let mut last_name = String::new();
                let cmp = compare(
                    task.as_ref(),
                    settings,
                    &args.lr_grid,
                    &configs,
                    |name, i| {
                        if name != last_name {
                            if !last_name.is_empty() {
                                done += steps as u64;
                            }
                            last_name = name.to_string();
                            bar.set_message(name.to_string());
                        }
                        bar.set_position(done + i as u64);
                    },
                )
                .map_err(|e| e.to_string())?;
                bar.finish_and_clear();
                let mut cmp = cmp;
                if r == Regime::Large && !args.no_accumulators {
                    match &acc_task {
                        Some(t) => accumulator_rows(t.as_ref(), settings, &mut cmp)?,
                        None => accumulator_rows(task.as_ref(), settings, &mut cmp)?,
                    }
                }
                let table = cmp.markdown();
                println!("\n{}\n", table);
                report.push_str(&format!("### {} (seed {seed})\n\n{table}\n", cmp.task));
                let stem = format!("{}-{}-seed{seed}", w.slug(), r.slug());
                for (axis, suffix) in [(Axis::Time, "loss-vs-time"), (Axis::Step, "loss-vs-step")] {
                    let path = args.out.join(format!("{stem}-{suffix}.svg"));
                    curves(&cmp, axis, &path)?;
                }
                let json = serde_json::to_string_pretty(&cmp).map_err(|e| e.to_string())?;
                std::fs::write(args.out.join(format!("{stem}.json")), json)
                    .map_err(|e| e.to_string())?;
                results.push(cmp);
            }
            if results.len() > 1 {
                let summary = vsa_optim_bench::workloads::summarize(&results);
                println!("{summary}");
                report.push_str(&summary);
            }
            if args.no_harm_reps > 0 {
                let settings = RunSettings {
                    steps,
                    lr: ws.lr,
                    seed: 0,
                    eval_every: ws.eval_every.min(steps),
                };
                eprintln!(
                    "no-harm: {} × (plain, trainer with prediction off) on {}",
                    args.no_harm_reps,
                    task.name()
                );
                let h = no_harm(task.as_ref(), settings, args.no_harm_reps)
                    .map_err(|e| e.to_string())?;
                harm.push(h);
            }
        }
    }
    if !harm.is_empty() {
        let mut t = String::from(
            "**No harm when backed off: trainer with prediction off ÷ plain AdamW, training \
             seconds, same backward passes, interleaved repetitions**\n\n\
             | workload | reps | fastest ÷ fastest | median [min, max] of pair ratios |\n\
             |---|---|---|---|\n",
        );
        for h in &harm {
            t.push_str(&h.markdown_row());
            t.push('\n');
        }
        println!("\n{t}");
        report.push_str(&format!("\n{t}\n"));
    }
    let path = args.out.join("report.md");
    std::fs::write(&path, &report).map_err(|e| format!("writing {}: {e}", path.display()))?;
    println!(
        "curves, tables and raw results written to {}; the full grid (both workloads, 3 seeds, \
         kernels) is `cargo xtask bench`, its numbers in docs/benchmarks.md",
        args.out.display()
    );
    Ok(())
}
