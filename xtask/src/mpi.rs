//! `cargo xtask mpi`: the data-parallel table over 1, 2 and 4 ranks (and, with
//! `--rate-limited`, [`crate::rate`]), and the helpers that build and run `mpi_train`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::*;

/// One data-parallel run's configuration.
struct MpiRun {
    workload: &'static str,
    ranks: usize,
    /// The exchange's name in the table (`f32`, `random-k 10%`, …).
    mode: &'static str,
    /// `mpi_train`'s flags that select it (`--mode`, `--method`, `--ratio`, …).
    mode_flags: &'static [&'static str],
    /// `gather`, `sum` or `allreduce`.
    reduction: &'static str,
    trainer: &'static str,
    steps: usize,
    micro: usize,
    seed: u64,
    lr: f64,
}

pub(crate) fn mpirun_prefix(ranks: usize) -> Command {
    let mut c = Command::new("mpirun");
    if sh("id -u") == "0" {
        c.arg("--allow-run-as-root");
    }
    let cores: usize = sh("nproc").parse().unwrap_or(1);
    let threads = (cores / ranks).max(1);
    c.args(["--oversubscribe", "--bind-to", "none", "-x"]);
    c.arg(format!("RAYON_NUM_THREADS={threads}"));
    c.args(["-np", &ranks.to_string()]);
    c
}

pub(crate) fn mpi_train_exe() -> PathBuf {
    root().join("target").join("release").join("mpi_train")
}

fn run_json(mut c: Command, out: &Path) -> Result<serde_json::Value, String> {
    c.arg("--out").arg(out);
    let shown = format!("{c:?}");
    output_json(c, &shown, out)
}

/// Runs `c` (shown in errors as `shown`), echoes its standard output and reads the JSON that
/// it wrote to `out`.
pub(crate) fn output_json(
    mut c: Command,
    shown: &str,
    out: &Path,
) -> Result<serde_json::Value, String> {
    let o = c.output().map_err(|e| format!("{shown}: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "{shown} failed with {}:\n{}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    print!("{}", String::from_utf8_lossy(&o.stdout));
    let text = std::fs::read_to_string(out).map_err(|e| format!("{}: {e}", out.display()))?;
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

/// `mpi_train`'s arguments for the run `r` (its workload, mode, trainer, steps, micro-batches,
/// seed and learning rate); the caller supplies the program (mpirun or the reference).
fn train_args(c: &mut Command, r: &MpiRun) {
    c.args(["--workload", r.workload]);
    c.args(r.mode_flags);
    c.args(["--reduction", r.reduction, "--trainer", r.trainer]);
    c.args([
        "--steps",
        &r.steps.to_string(),
        "--micro",
        &r.micro.to_string(),
    ]);
    c.args(["--seed", &r.seed.to_string()]);
    c.args(["--lr", &r.lr.to_string()]);
}

/// One row of the table: the exchange's name, `mpi_train`'s flags for it, the reduction
/// and the trainer.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Row {
    mode: &'static str,
    flags: &'static [&'static str],
    reduction: &'static str,
    trainer: &'static str,
}

const F32: &[&str] = &["--mode", "f32"];
const BF16: &[&str] = &["--mode", "bf16"];
const RANDOM_K: &[&str] = &[
    "--mode",
    "compressed",
    "--method",
    "random-k",
    "--ratio",
    "0.1",
];
const COUNT_SKETCH: &[&str] = &[
    "--mode",
    "compressed",
    "--method",
    "count-sketch",
    "--ratio",
    "0.1",
];
const TOP_K: &[&str] = &[
    "--mode",
    "compressed",
    "--method",
    "top-k",
    "--ratio",
    "0.1",
];

const fn row(
    mode: &'static str,
    flags: &'static [&'static str],
    reduction: &'static str,
    trainer: &'static str,
) -> Row {
    Row {
        mode,
        flags,
        reduction,
        trainer,
    }
}

/// Every row of both workloads, in table order. The first four also run on 1 rank (where
/// the reduction makes no difference); the rest only on 2 and 4 ranks.
const ROWS: [Row; 14] = [
    row("f32", F32, "gather", "none"),
    row("f32", F32, "gather", "best"),
    row("ternary", &["--mode", "ternary"], "gather", "none"),
    row("vsa", &["--mode", "vsa"], "gather", "none"),
    row("f32", F32, "sum", "none"),
    row("f32", F32, "allreduce", "none"),
    row("bf16", BF16, "gather", "none"),
    row("bf16", BF16, "sum", "none"),
    row("bf16", BF16, "allreduce", "none"),
    row("random-k 10%", RANDOM_K, "gather", "none"),
    row("random-k 10%", RANDOM_K, "sum", "none"),
    row("count-sketch 10%", COUNT_SKETCH, "gather", "none"),
    row("count-sketch 10%", COUNT_SKETCH, "sum", "none"),
    row("top-k 10% + EF", TOP_K, "gather", "none"),
];

/// The rows that run on `ranks` ranks of `workload`: on 1 rank only the first four (the
/// char-LM only f32, as the single-rank baseline).
fn rows_for(workload: &str, ranks: usize) -> impl Iterator<Item = Row> {
    let single = ranks == 1;
    let charlm = workload == "charlm";
    ROWS.into_iter()
        .take(if single { 4 } else { ROWS.len() })
        .filter(move |r| !(single && charlm && r.mode != "f32"))
}

/// What the *f32 check* column says for a run: the f32 gather and sum runs must equal the
/// single-process reference (anything else is an error); the all-reduced f32 run is
/// compared and reported either way (MPI's summation order); other modes are not checked.
fn check_label(r: &MpiRun, same_as_reference: Option<bool>) -> Result<&'static str, String> {
    match (same_as_reference, r.reduction) {
        (None, _) => Ok("—"),
        (Some(true), _) => Ok("bit-identical"),
        (Some(false), "allreduce") => Ok("differs (MPI's order)"),
        (Some(false), _) => Err(format!(
            "f32 {} on {} ranks differs from the single-process reference",
            r.reduction, r.ranks
        )),
    }
}

pub(crate) fn f(v: &serde_json::Value, k: &str) -> f64 {
    v.get(k)
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(f64::NAN)
}

/// Builds the release `mpi_train` with the `mpi` feature.
fn build_mpi_train() -> Result<(), String> {
    let mut b = cargo();
    b.args([
        "build",
        "--release",
        "-p",
        "vsa-optim-bench",
        "--features",
        "mpi",
        "--bin",
        "mpi_train",
    ]);
    run(b)
}

/// `cargo xtask mpi --rate-limited [RATE]`: builds `mpi_train` and runs [`rate::rate_limited`].
fn rate_limited_task(rate: &str) -> Result<(), String> {
    build_mpi_train()?;
    rate::rate_limited(rate)
}

pub(crate) fn mpi(args: &[String]) -> Result<(), String> {
    let quick = match args {
        [] => false,
        [q] if q == "--quick" => true,
        [r] if r == "--rate-limited" => return rate_limited_task("100mbit"),
        [r, rate] if r == "--rate-limited" => return rate_limited_task(rate),
        _ => {
            return Err(format!(
                "unknown mpi flags {args:?} (expected --quick or --rate-limited [RATE])"
            ));
        }
    };
    if sh("command -v mpirun") == "unknown" {
        return Err("mpirun not found: install OpenMPI (apt-get install -y \
                    --no-install-recommends libopenmpi-dev openmpi-bin libclang-dev clang)"
            .into());
    }
    build_mpi_train()?;
    let load_before = crate::rate::load_average();
    let out_dir = root().join("target").join("bench-mpi");
    std::fs::create_dir_all(&out_dir).map_err(|e| e.to_string())?;
    let mut runs = Vec::new();
    let (digits_steps, lm_steps) = if quick { (150, 8) } else { (300, 150) };
    // The f32 baseline's learning rate is tuned: a grid on 2 ranks, lowest final held-out
    // loss wins. Every run without the trainer uses it; the trainer's best config runs at
    // twice the base rate, where it did best in the sweep (docs/trainer.md).
    let mut grid_md = String::from(
        "\n### Learning-rate grid for the f32 baseline (2 ranks, no trainer)\n\n\
         | workload | lr | held-out loss | metric |\n|---|---|---|---|\n",
    );
    let mut tuned = BTreeMap::new();
    for (workload, base, steps, micro) in [
        ("digits", 1e-3, digits_steps, 1),
        ("charlm", 2e-3, lm_steps, 2),
    ] {
        let mut best = (f64::INFINITY, base);
        for mult in [0.25, 0.5, 1.0, 2.0, 4.0] {
            let lr = base * mult;
            let r = MpiRun {
                workload,
                ranks: 2,
                mode: "f32",
                mode_flags: F32,
                reduction: "gather",
                trainer: "none",
                steps,
                micro,
                seed: 0,
                lr,
            };
            println!("== lr grid: {workload} lr={lr}");
            let mut c = mpirun_prefix(2);
            c.arg(mpi_train_exe());
            train_args(&mut c, &r);
            let v = run_json(c, &out_dir.join(format!("grid-{workload}-{lr}.json")))?;
            let last = v["curve"]
                .as_array()
                .and_then(|c| c.last())
                .cloned()
                .unwrap_or_default();
            let loss = f(&last, "loss");
            grid_md.push_str(&format!(
                "| {workload} | {lr} | {loss:.4} | {:.2} |\n",
                f(&last, "metric")
            ));
            if loss < best.0 {
                best = (loss, lr);
            }
        }
        tuned.insert(workload, (best.1, 2.0 * base));
    }
    let lr_for = |workload: &str, trainer: &str| -> f64 {
        let (none, best) = tuned[workload];
        if trainer == "none" { none } else { best }
    };

    // Digits: the full 1500-row training split every step, split over the ranks.
    // Char-LM: a global batch of 4 micro-batches of 8 windows, split over the ranks.
    for (workload, steps, micro) in [("digits", digits_steps, 0), ("charlm", lm_steps, 4)] {
        for ranks in [1, 2, 4] {
            for row in rows_for(workload, ranks) {
                runs.push(MpiRun {
                    workload,
                    ranks,
                    mode: row.mode,
                    mode_flags: row.flags,
                    reduction: row.reduction,
                    trainer: row.trainer,
                    steps,
                    micro: if micro == 0 { 1 } else { micro / ranks },
                    seed: 0,
                    lr: lr_for(workload, row.trainer),
                });
            }
        }
    }
    let mut results = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        println!(
            "== {} ranks={} mode={} reduction={} trainer={}",
            r.workload, r.ranks, r.mode, r.reduction, r.trainer
        );
        let mut c = mpirun_prefix(r.ranks);
        c.arg(mpi_train_exe());
        train_args(&mut c, r);
        let v = run_json(c, &out_dir.join(format!("run-{i}.json")))?;
        // f32 runs are checked against the single-process reference for the same ranks.
        let same = if r.mode == "f32" && (r.workload == "digits" || r.trainer == "none") {
            let mut c = Command::new(mpi_train_exe());
            train_args(&mut c, r);
            c.args(["--reference", &r.ranks.to_string()]);
            let rv = run_json(c, &out_dir.join(format!("ref-{i}.json")))?;
            Some(rv.get("weights_hash") == v.get("weights_hash"))
        } else {
            None
        };
        let reference = check_label(r, same)?;
        results.push((r, v, reference));
    }
    let mut md = format!(
        "{MPI_BEGIN}\n## Data-parallel training (MPI)\n\n\
         Regenerated by `cargo xtask mpi{q}` — do not edit by hand. {date}; {mpi}; {cpu}, {cores} \
         cores; 1-minute load average {load_before} before the runs and {load_after} after them \
         (`/proc/loadavg`; above the core count, other work shared the machine and the times are \
         noisy). Ranks run with `--bind-to none` and `RAYON_NUM_THREADS = \
         max(1, cores / ranks)`, so 4 ranks oversubscribe 2 cores: their wall times measure \
         contention, not scaling. The global batch is the same at every rank count (digits: \
         the full 1500-row training split; char-LM: 4 micro-batches of 8 windows of 64 \
         characters); each rank computes its shard. *Mode*: `f32`, `bf16` (every element \
         rounded to nearest even), `ternary` (unbiased trits, 320-element blocks), `vsa` (the \
         VSA sketch with error feedback), `random-k 10%` (a shared-seed mask, the kept values \
         scaled by 10: unbiased, no error feedback), `count-sketch 10%` (one row, dense \
         decode, no error feedback), `top-k 10% + EF` (the largest 10% with indices, error \
         feedback). *Reduction* (docs/distributed.md §11): `gather` all-gathers every \
         rank's message and decodes each; `sum` sums the linear messages by a rank-order \
         reduce-scatter and all-gather before one decode (the bits of `gather` for f32 and \
         the error-fed methods); `allreduce` is `MPI_Allreduce` (f32: MPI's sum; bf16: a \
         user-defined operation adding each pair in f32 and rounding to bf16), reproducible \
         only for a fixed rank count and MPI build. *Bytes / exchange* is the frame a rank \
         contributes to the all-gather (24-byte header + payload; for `sum` and `allreduce` \
         a 40-byte header frame plus the linear message). *Sent / step* and *received / \
         step* are what the exchange counted on rank 0 over the whole run (handshake, \
         headers and agreement checks included) divided by the steps, predicted steps \
         (which send nothing) included: an all-gather counts the own frame sent and the \
         `N − 1` other frames received, the summed reduce-scatter and all-gather the chunks \
         each way (about `2(N − 1)/N` of the message, not growing with `N`), the all-reduce \
         the nominal `2(N − 1)/N` of the message each way (MPI picks the algorithm). *ms / step* is training \
         wall time per step (evaluation excluded) on rank 0; *exch ms* the part inside the \
         exchange (encode, transport, decode, sum). *exch ms* includes the time a rank waits in the collective for the slowest rank to finish \
         its backward pass, so it measures load imbalance as well as transfer. Runs without the trainer use the learning rate \
         that the grid below found best for f32 (also for the compressed modes: not tuned per codec here; \
         `docs/compression.md` has per-codec tuning on one machine); the trainer's best config runs at twice the \
         base rate (docs/trainer.md). *Target* is the \
         final held-out loss of the 1-rank f32 run without the trainer, +1 %; *to target* the \
         training seconds until the held-out loss first reaches it (— = not reached). *f32 check*: the weights of the \
         f32 run equal those of the single-process reference that computes the same shards \
         in the same order.\n",
        q = if quick { " --quick" } else { "" },
        date = sh("date -u '+%Y-%m-%d %H:%M UTC'"),
        mpi = sh("mpirun --version | head -1"),
        cpu = sh("lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1"),
        cores = sh("nproc"),
        load_after = crate::rate::load_average(),
    );
    for (workload, title) in [
        ("digits", "Digits MLP, full batch"),
        ("charlm", "Char-LM (Shakespeare)"),
    ] {
        let rows: Vec<_> = results
            .iter()
            .filter(|(r, _, _)| r.workload == workload)
            .collect();
        let Some((first, _, _)) = rows.first() else {
            continue;
        };
        let target = rows
            .iter()
            .find(|(r, _, _)| r.ranks == 1 && r.mode == "f32" && r.trainer == "none")
            .and_then(|(_, v, _)| v["curve"].as_array()?.last()?.get("loss")?.as_f64())
            .map_or(f64::NAN, |l| 1.01 * l);
        let metric = if workload == "digits" {
            "test acc %"
        } else {
            "val bits/char"
        };
        md.push_str(&format!(
            "\n### {title}, {} steps, seed 0 (target held-out loss {target:.4})\n\n\
             | ranks | mode | reduction | trainer | bytes / exchange | vs f32 | sent / step | received / step | exchanges | predicted (calls) | ms / step | exch ms / step | {metric} | held-out loss | to target (s) | f32 check |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
            first.steps
        ));
        for (r, v, check) in rows {
            let steps = (f(v, "backward_steps") + f(v, "predicted_steps")).max(1.0);
            let frame = f(v, "frame_bytes");
            let f32b = f(v, "f32_bytes") + 24.0;

            let last = v["curve"]
                .as_array()
                .and_then(|c| c.last())
                .cloned()
                .unwrap_or_default();
            let to_target = v["curve"]
                .as_array()
                .and_then(|c| c.iter().find(|p| f(p, "loss") <= target))
                .map_or_else(|| "—".to_string(), |p| format!("{:.2}", f(p, "secs")));
            md.push_str(&format!(
                "| {} | {} | {} | {} | {:.0} | {:.1}× less | {:.0} | {:.0} | {:.0} | {:.0} ({:.0}) | {:.1} | {:.2} | {:.2} | {:.4} | {} | {} |\n",
                r.ranks,
                r.mode,
                r.reduction,
                r.trainer,
                frame,
                f32b / frame,
                f(v, "bytes_sent") / steps,
                f(v, "bytes_received") / steps,
                f(v, "backward_steps"),
                f(v, "predicted_steps"),
                f(v, "calls_in_predicted_steps"),
                1e3 * f(v, "secs") / steps,
                1e3 * f(v, "exchange_secs") / steps,
                f(&last, "metric"),
                f(&last, "loss"),
                to_target,
                check,
            ));
        }
    }
    md.push_str(&grid_md);
    // Accuracy over seeds: digits on 2 ranks.
    let seeds: Vec<u64> = if quick { vec![0] } else { vec![0, 1, 2] };
    const TERNARY: &[&str] = &["--mode", "ternary"];
    let combos = [
        ("f32", F32, "none"),
        ("f32", F32, "best"),
        ("ternary", TERNARY, "none"),
        ("ternary", TERNARY, "best"),
        ("vsa", &["--mode", "vsa"], "none"),
    ];
    md.push_str(&format!(
        "\n### Digits MLP on 2 ranks over seeds ({digits_steps} steps): final test accuracy %\n\n\
         | mode | trainer | {} | mean | vs f32 / none |\n|---|---|{}---|---|\n",
        seeds
            .iter()
            .map(|s| format!("seed {s}"))
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(seeds.len())
    ));
    let mut base_mean = f64::NAN;
    for (k, &(mode, mode_flags, trainer)) in combos.iter().enumerate() {
        let mut accs = Vec::new();
        for &seed in &seeds {
            let r = MpiRun {
                workload: "digits",
                ranks: 2,
                mode,
                mode_flags,
                reduction: "gather",
                trainer,
                steps: digits_steps,
                micro: 1,
                seed,
                lr: lr_for("digits", trainer),
            };
            println!("== seeds: digits ranks=2 mode={mode} trainer={trainer} seed={seed}");
            let mut c = mpirun_prefix(2);
            c.arg(mpi_train_exe());
            train_args(&mut c, &r);
            let v = run_json(
                c,
                &out_dir.join(format!("seed-{mode}-{trainer}-{seed}.json")),
            )?;
            let last = v["curve"]
                .as_array()
                .and_then(|c| c.last())
                .cloned()
                .unwrap_or_default();
            accs.push(f(&last, "metric"));
        }
        let mean = accs.iter().sum::<f64>() / accs.len() as f64;
        if k == 0 {
            base_mean = mean;
        }
        md.push_str(&format!(
            "| {mode} | {trainer} | {} | {mean:.2} | {:+.2} |\n",
            accs.iter()
                .map(|a| format!("{a:.2}"))
                .collect::<Vec<_>>()
                .join(" | "),
            mean - base_mean
        ));
    }
    md.push_str(&format!("\nRaw results: `target/bench-mpi/*.json`. Method and limits: `docs/distributed.md`.\n{MPI_END}"));
    let path = root().join("docs").join("benchmarks.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Measured results\n".into());
    let new = crate::replace_section(&doc, MPI_BEGIN, MPI_END, &md);
    std::fs::write(&path, new).map_err(|e| e.to_string())?;
    println!("wrote {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reduction_of_the_new_modes_runs_on_2_and_4_ranks_only() {
        let rows: Vec<Row> = rows_for("digits", 2).collect();
        assert_eq!(rows.len(), ROWS.len());
        for (mode, reductions) in [
            ("f32", &["gather", "sum", "allreduce"][..]),
            ("bf16", &["gather", "sum", "allreduce"]),
            ("random-k 10%", &["gather", "sum"]),
            ("count-sketch 10%", &["gather", "sum"]),
            ("top-k 10% + EF", &["gather"]),
        ] {
            let got: Vec<&str> = rows
                .iter()
                .filter(|r| r.mode == mode && r.trainer == "none")
                .map(|r| r.reduction)
                .collect();
            assert_eq!(got, reductions, "{mode}");
        }
        assert_eq!(
            rows_for("charlm", 4).collect::<Vec<_>>(),
            rows,
            "both workloads"
        );
        // One rank: the four original rows for digits, f32 only for the char-LM.
        let one: Vec<(&str, &str)> = rows_for("digits", 1).map(|r| (r.mode, r.trainer)).collect();
        assert_eq!(
            one,
            [
                ("f32", "none"),
                ("f32", "best"),
                ("ternary", "none"),
                ("vsa", "none")
            ]
        );
        assert!(
            rows_for("charlm", 1).all(|r| r.mode == "f32" && r.reduction == "gather"),
            "char-LM on 1 rank"
        );
        // Every row's flags name its mode; top-k is error-fed by mpi_train itself.
        for r in ROWS {
            assert_eq!(r.flags[0], "--mode");
            assert!(
                !r.flags.contains(&"--reduction"),
                "the reduction is its own column"
            );
        }
    }

    #[test]
    fn the_f32_check_fails_the_run_only_for_gather_and_sum() {
        let run = |reduction| MpiRun {
            workload: "digits",
            ranks: 4,
            mode: "f32",
            mode_flags: F32,
            reduction,
            trainer: "none",
            steps: 1,
            micro: 1,
            seed: 0,
            lr: 1e-3,
        };
        assert_eq!(check_label(&run("gather"), None), Ok("—"));
        assert_eq!(check_label(&run("sum"), Some(true)), Ok("bit-identical"));
        assert_eq!(
            check_label(&run("allreduce"), Some(false)),
            Ok("differs (MPI's order)")
        );
        for reduction in ["gather", "sum"] {
            let e = check_label(&run(reduction), Some(false)).unwrap_err();
            assert!(e.contains(reduction) && e.contains("4 ranks"), "{e}");
        }
    }

    #[test]
    fn train_args_put_the_mode_flags_before_the_reduction() {
        let r = MpiRun {
            workload: "charlm",
            ranks: 2,
            mode: "top-k 10% + EF",
            mode_flags: TOP_K,
            reduction: "gather",
            trainer: "none",
            steps: 8,
            micro: 2,
            seed: 1,
            lr: 0.002,
        };
        let mut c = Command::new("mpi_train");
        train_args(&mut c, &r);
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let expected = "--workload charlm --mode compressed --method top-k --ratio 0.1 \
                        --reduction gather --trainer none --steps 8 --micro 2 --seed 1 --lr 0.002";
        assert_eq!(args.join(" "), expected);
    }
}
