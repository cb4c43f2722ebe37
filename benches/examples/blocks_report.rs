//! Per-block skipping of backward work (issue 16), printed as markdown and, with `--write`,
//! placed between the `blocks` markers of `docs/benchmarks.md`:
//!
//! ```text
//! cargo run --release -p vsa-optim-bench --example blocks_report -- \
//!     [--steps 200] [--accumulated-steps STEPS/2] [--seeds 3] \
//!     [--regime minibatch|accumulated|both] [--write] [--from-runs] [--retime R]
//! ```
//!
//! The accumulated regime takes 4 micro-batches of 8 windows per step (twice the windows of
//! a minibatch step), so by default it runs half the steps: both regimes see the same
//! tokens. `--from-runs` re-tabulates the runs saved under `target/` by the last full
//! invocation; `--retime R` reruns every method's tuned configuration `R` more times per
//! seed, interleaved, and takes the median time of each evaluation point (the losses are
//! deterministic and checked).
//!
//! The char-LM transformer deepened to 4 blocks (d_model 64), every method's learning rate
//! tuned on one grid; see `vsa_optim_bench::blocks` for the methods and the FLOPs count.

use vsa_optim_bench::blocks::{self, Regime};

const LRS: [f64; 3] = [1.5e-3, 3e-3, 6e-3];
const BEGIN: &str = "<!-- blocks:begin (cargo run --release -p vsa-optim-bench --example blocks_report -- --write) -->";
const END: &str = "<!-- blocks:end -->";

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> candle_core::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let steps = arg(&args, "--steps", 200usize);
    let accumulated_steps = arg(&args, "--accumulated-steps", steps / 2);
    let n_seeds = arg(&args, "--seeds", 3u64);
    let which = arg(&args, "--regime", String::from("both"));
    let write = args.iter().any(|a| a == "--write");
    // Re-tabulate the runs the last full invocation saved (target/blocks-runs-*.json)
    // instead of training again: the losses and schedules are deterministic, the timings
    // are those of that invocation.
    let retime_reps = arg(&args, "--retime", 0usize);
    let from_runs = args.iter().any(|a| a == "--from-runs");
    let regimes = [
        Regime {
            name: "minibatch",
            batch: 16,
            micro: 1,
        },
        Regime {
            name: "accumulated large batch",
            batch: 8,
            micro: 4,
        },
    ];
    let seeds: Vec<u64> = (0..n_seeds).collect();
    let t0 = std::time::Instant::now();
    let mut body = String::new();
    for regime in regimes
        .iter()
        .filter(|r| which == "both" || (which == "minibatch") == (r.name == "minibatch"))
    {
        let json = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
            "../target/blocks-runs-{}.json",
            regime.name.replace(' ', "-")
        ));
        let mut runs: Vec<blocks::BlockRun> = Vec::new();
        if from_runs {
            let text = std::fs::read_to_string(&json).map_err(candle_core::Error::wrap)?;
            runs = serde_json::from_str(&text).map_err(candle_core::Error::wrap)?;
            for r in &mut runs {
                // Recomputed, so that a fix to the accounting applies to saved runs.
                let flops = blocks::BackwardFlops::of(&blocks::model_config());
                r.flops_fraction = flops.fraction(&r.result, blocks::model_config().layers);
                r.skip_rate = blocks::block_skip_rate(&r.result);
            }
        }
        let task = blocks::task(regime, 64)?;
        let steps = if regime.micro > 1 {
            accumulated_steps
        } else {
            steps
        };
        for &seed in seeds.iter().filter(|_| !from_runs) {
            runs.extend(blocks::run_seed(&task, &LRS, steps, seed, |r| {
                let p = r.result.last();
                eprintln!(
                    "[{:>6.0} s] {} seed {} lr {:.1e}: val loss {:.4}, {:.1} s, FLOPs {:.1}%, \
                     blocks skipped {:.1}%{}",
                    t0.elapsed().as_secs_f64(),
                    r.label,
                    r.seed,
                    r.result.lr,
                    p.loss,
                    r.result.secs,
                    100.0 * r.flops_fraction,
                    100.0 * r.skip_rate,
                    r.result
                        .stats
                        .as_ref()
                        .map(|s| format!(" [{s}]"))
                        .unwrap_or_default()
                );
            })?);
        }
        if !from_runs {
            // The first runs as measured, for `--from-runs` and for reading the curves.
            let text = serde_json::to_string(&runs).map_err(candle_core::Error::wrap)?;
            std::fs::write(&json, text).map_err(candle_core::Error::wrap)?;
        }
        if retime_reps > 0 {
            blocks::retime(
                &task,
                &mut runs,
                &seeds,
                steps,
                retime_reps,
                |label, seed, rep, secs| {
                    eprintln!(
                        "[{:>6.0} s] {} repetition {}: {label}, seed {seed}: {secs:.1} s",
                        t0.elapsed().as_secs_f64(),
                        regime.name,
                        rep + 1
                    );
                },
            )?;
        }
        let rows = blocks::summarise(&runs, &seeds);
        body.push_str(&blocks::markdown(regime, &rows, steps, seeds.len()));
        body.push('\n');
    }
    let section = format!(
        "{BEGIN}\n## Per-block skipping of backward work (char-LM, 4 blocks)\n\nRegenerated by \
         `cargo run --release -p vsa-optim-bench --example blocks_report -- --steps {steps} \
         --seeds {n_seeds}{} --write` (the accumulated regime: {accumulated_steps} steps){} — do not edit by hand. Model: the char-LM \
         transformer with 4 blocks, d_model 64, context 64; AdamW; learning rates {:?}, each \
         method at its best mean final validation loss. \"backward FLOPs\": the backward \
         matrix-product FLOPs computed, as a fraction of plain training (`blocks::BackwardFlops`); \
         \"time to target\": the tuned plain run's sustained time to its own final loss + 1%, \
         divided by the method's (> 1 is sooner; wall-clock, evaluation excluded, measured on a \
         shared 2-core machine, so ±25% noise). Method in docs/trainer.md.\n\n{body}{END}",
        if retime_reps > 0 {
            format!(" --retime {retime_reps}")
        } else {
            String::new()
        },
        if retime_reps > 0 {
            format!(
                " ({:.0} s{}): every method's tuned configuration \
                 run {retime_reps} more times per seed, interleaved, each timing the median of \
                 the {} runs (the weights of every repetition checked equal to the first's)",
                t0.elapsed().as_secs_f64(),
                if from_runs {
                    ", first runs read back with `--from-runs`"
                } else {
                    ""
                },
                retime_reps + 1
            )
        } else if from_runs {
            " (this table re-tabulated with `--from-runs` from the runs that command saved under \
             target/)"
                .to_string()
        } else {
            format!(" in {:.0} s", t0.elapsed().as_secs_f64())
        },
        LRS
    );
    println!("{section}");
    if write {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks.md");
        let doc = std::fs::read_to_string(&path).map_err(candle_core::Error::wrap)?;
        let new = match (doc.find(BEGIN), doc.find(END)) {
            (Some(a), Some(b)) if b > a => {
                format!("{}{section}{}", &doc[..a], &doc[b + END.len()..])
            }
            _ => format!("{}\n\n{section}\n", doc.trim_end()),
        };
        std::fs::write(&path, new).map_err(candle_core::Error::wrap)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
