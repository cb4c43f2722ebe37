//! Data-parallel training over MPI: `mpirun -np N mpi_train [options]`.
//!
//! Every rank trains on its shard of each global batch; gradients are exchanged in the
//! chosen mode (`f32`, `bf16`, `ternary`, `vsa`, `compressed`) and reduction (`gather`,
//! `sum`, `allreduce`), and with the phase trainer, predicted steps do not
//! communicate. Rank 0 prints the results (and writes them as JSON with `--out`).
//! `--reference N` runs the single-process reference for N ranks without MPI.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use vsa_optim_bench::distributed::{DpResult, DpSettings, DpWorkload, reference_run, run};
use vsa_optim_rs::DeterministicPhaseConfig;
use vsa_optim_rs::distributed::{Collective, ExchangeMode, MpiWorld, Reduction};
use vsa_optim_rs::grad_sketch::{CompressorConfig, Method};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Workload {
    Digits,
    Charlm,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    F32,
    Bf16,
    Ternary,
    Vsa,
    /// A grad-sketch method (`--method`, `--ratio`).
    Compressed,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ReductionChoice {
    /// All-gather every message, decode each, sum in rank order (every mode).
    Gather,
    /// Sum the messages before decoding (linear modes: f32, bf16, count-sketch, random-k).
    Sum,
    /// The native MPI_Allreduce (f32; bf16 through a user-defined operation; reproducible
    /// for a fixed rank count and MPI build).
    Allreduce,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum MethodChoice {
    /// Random-k with a shared-seed mask (unbiased without error feedback).
    RandomK,
    /// A 1-row count sketch with a dense decode.
    CountSketch,
    /// Top-k with error feedback (not linear: gather only).
    TopK,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TrainerChoice {
    /// A backward pass and an exchange every step.
    None,
    /// The best configuration measured (F1 P1 C1).
    Best,
    /// The defaults of vsa-optim-rs 0.1.1.
    Defaults,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mismatch {
    Seed,
    Mode,
    Shape,
}

/// Data-parallel training of the digits MLP or the char-LM over MPI.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Model and data.
    #[arg(long, value_enum, default_value = "digits")]
    workload: Workload,
    /// Gradient exchange mode.
    #[arg(long, value_enum, default_value = "f32")]
    mode: Mode,
    /// How the messages are combined.
    #[arg(long, value_enum, default_value = "gather")]
    reduction: ReductionChoice,
    /// The method of `--mode compressed`.
    #[arg(long, value_enum, default_value = "random-k")]
    method: MethodChoice,
    /// The method's fraction of elements sent (random-k ratio, sketch ratio, top-k fraction).
    #[arg(long, default_value_t = 0.1)]
    ratio: f64,
    /// Error feedback for random-k and the count sketch (top-k always has it). With it,
    /// random-k sends its values unscaled, so summed and gathered runs give the same bits.
    #[arg(long)]
    error_feedback: bool,
    /// Phase trainer configuration.
    #[arg(long, value_enum, default_value = "best")]
    trainer: TrainerChoice,
    /// Optimizer steps (default: 300 digits, 40 char-LM).
    #[arg(long)]
    steps: Option<usize>,
    /// Learning rate (default: 2e-3 digits with the trainer, 1e-3 without; 2e-3 char-LM).
    #[arg(long)]
    lr: Option<f64>,
    /// Seed for weights, data order and quantization.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Micro-batches each rank accumulates per step.
    #[arg(long, default_value_t = 1)]
    micro: usize,
    /// Write a checkpoint every this many steps (needs --checkpoint-dir).
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Checkpoint directory (shared by all ranks).
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
    /// Resume every rank from the latest complete checkpoint.
    #[arg(long)]
    resume: bool,
    /// Test hook: this rank kills itself with SIGKILL at --kill-step.
    #[arg(long)]
    kill_rank: Option<usize>,
    /// Test hook: the step at which --kill-rank dies.
    #[arg(long)]
    kill_step: Option<usize>,
    /// Test hook: this rank's gradient holds a NaN at --nan-step.
    #[arg(long)]
    nan_rank: Option<usize>,
    /// Test hook: the step of --nan-rank's NaN.
    #[arg(long)]
    nan_step: Option<usize>,
    /// Test hook: this rank's transport takes messages of at most --limit-bytes.
    #[arg(long)]
    limit_rank: Option<usize>,
    /// Test hook: --limit-rank's message limit in bytes (MPI's own is 2^31 - 1).
    #[arg(long)]
    limit_bytes: Option<u64>,
    /// Test hook: rank 1 starts with a different seed, mode or parameter shape.
    #[arg(long, value_enum)]
    mismatch: Option<Mismatch>,
    /// Run the single-process reference for this many ranks instead (f32 only; no MPI).
    #[arg(long)]
    reference: Option<usize>,
    /// Rank 0 writes the result here as JSON.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn settings(a: &Args, rank: usize) -> DpSettings {
    let workload = match a.workload {
        Workload::Digits => DpWorkload::Digits,
        Workload::Charlm => DpWorkload::CharLm,
    };
    let mut mode = match a.mode {
        Mode::F32 => ExchangeMode::F32,
        Mode::Bf16 => ExchangeMode::Bf16,
        Mode::Ternary => ExchangeMode::Ternary,
        Mode::Vsa => ExchangeMode::Vsa,
        Mode::Compressed => ExchangeMode::Compressed,
    };
    let mut s = DpSettings::new(workload, mode);
    s.reduction = match a.reduction {
        ReductionChoice::Gather => Reduction::Gather,
        ReductionChoice::Sum => Reduction::Sum,
        ReductionChoice::Allreduce => Reduction::Allreduce,
    };
    let (method, error_feedback) = match a.method {
        MethodChoice::RandomK => (Method::RandomK { ratio: a.ratio }, a.error_feedback),
        MethodChoice::CountSketch => (
            Method::CountSketch {
                rows: 1,
                ratio: a.ratio,
                k_fraction: 1.0,
            },
            a.error_feedback,
        ),
        MethodChoice::TopK => (
            Method::TopK {
                k_fraction: a.ratio,
            },
            true,
        ),
    };
    s.method = CompressorConfig {
        method,
        seed: a.seed,
        error_feedback,
        dense_warmup_steps: 0,
    };
    s.trainer = match a.trainer {
        TrainerChoice::None => None,
        TrainerChoice::Best => Some(vsa_optim_bench::workloads::best_config()),
        TrainerChoice::Defaults => Some(DeterministicPhaseConfig::default()),
    };
    if workload == DpWorkload::Digits && s.trainer.is_some() {
        // The best config was measured at twice the tuned learning rate (docs/trainer.md).
        s.lr = 2e-3;
    }
    if let Some(v) = a.steps {
        s.steps = v;
    }
    if let Some(v) = a.lr {
        s.lr = v;
    }
    s.seed = a.seed;
    s.micro_per_rank = a.micro;
    s.checkpoint_every = a.checkpoint_every;
    s.checkpoint_dir.clone_from(&a.checkpoint_dir);
    s.resume = a.resume;
    s.kill_at = a.kill_rank.zip(a.kill_step);
    s.nan_at = a.nan_rank.zip(a.nan_step);
    if rank == 1 {
        match a.mismatch {
            Some(Mismatch::Seed) => s.seed += 1,
            Some(Mismatch::Mode) => {
                mode = if mode == ExchangeMode::F32 {
                    ExchangeMode::Ternary
                } else {
                    ExchangeMode::F32
                };
                s.mode = mode;
            }
            Some(Mismatch::Shape) => s.corrupt_shapes_on = Some(1),
            None => {}
        }
    }
    s
}

fn report(r: &DpResult, a: &Args) -> std::io::Result<()> {
    let last = r.curve.last().copied();
    println!(
        "data-parallel {:?} on {} rank(s), mode {} ({}): {} steps ({} backward + exchange, {} predicted)",
        a.workload,
        r.ranks,
        r.mode,
        r.reduction,
        r.backward_steps + r.predicted_steps,
        r.backward_steps,
        r.predicted_steps
    );
    if let Some(p) = last {
        println!(
            "  final held-out loss {:.4}, metric {:.3}; {:.2} s training ({:.2} ms/step), {:.2} s in the exchange",
            p.loss,
            p.metric,
            r.secs,
            1e3 * r.secs / (r.backward_steps + r.predicted_steps).max(1) as f64,
            r.exchange_secs
        );
    }
    if r.f32_bytes > 0 {
        println!(
            "  bytes sent per exchange {} ({:.2}x less than f32's {}); collective calls {} in total, {} during predicted steps",
            r.frame_bytes,
            (r.f32_bytes + 24) as f64 / r.frame_bytes.max(1) as f64,
            r.f32_bytes + 24,
            r.collective_calls,
            r.calls_in_predicted_steps
        );
    }
    println!(
        "  final weights hash {:016x}{}",
        r.weights_hash,
        r.trainer_digest
            .map(|d| format!(", trainer digest {d:016x}"))
            .unwrap_or_default()
    );
    if let Some(path) = &a.out {
        std::fs::write(path, serde_json::to_vec_pretty(r)?)?;
    }
    Ok(())
}

/// Prints the error's first line (no backtrace) as one short write, so that the lines of
/// different ranks stay whole when mpirun merges their output.
fn report_error(rank: usize, e: &dyn std::fmt::Display) {
    use std::io::Write;
    let msg = e.to_string();
    let first = msg.lines().next().unwrap_or("");
    let _ = std::io::stderr().write_all(format!("rank {rank}: error: {first}\n").as_bytes());
    let _ = std::io::stderr().flush();
}

fn main() {
    let args = Args::parse();
    if let Some(n) = args.reference {
        let s = settings(&args, 0);
        match reference_run(n, &s) {
            Ok(r) => {
                if let Err(e) = report(&r, &args) {
                    eprintln!("error: {e}");
                    std::process::exit(2);
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
        }
        return;
    }
    let world = match MpiWorld::init() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let mut world = world;
    let rank = world.rank();
    if let Some(bytes) = args.limit_bytes.filter(|_| args.limit_rank == Some(rank)) {
        world.set_limit(bytes);
    }
    let s = settings(&args, rank);
    match run(&mut world, &s) {
        Ok(r) => {
            if rank == 0
                && let Err(e) = report(&r, &args)
            {
                eprintln!("rank 0: error: {e}");
                std::process::exit(2);
            }
        }
        Err(e) => {
            report_error(rank, &e);
            // Errors of the exchange (handshake, a rank's NaN) reach every rank: wait until
            // all have reported before exiting, since mpirun stops the job at the first
            // non-zero exit. A rank-local error ends the wait after a few seconds.
            world.barrier_with_timeout(std::time::Duration::from_secs(5));
            std::process::exit(2);
        }
    }
}
