//! The ternary accumulator's precision frontier (issue 15), printed as markdown and, with
//! `--write`, placed between the `ternary-frontier` markers of `docs/benchmarks.md`:
//!
//! ```text
//! cargo run -p vsa-optim-bench --example ternary_report -- [--quick] [--write docs/benchmarks.md]
//! ```
//!
//! Rows: exact f32 sums, bf16 sums, and 1, 2, 3 and 5 trits per element with the earlier
//! scheme (one f32 scale per 320 elements) and the new default (one 8-bit scale per 25).
//! 1. The README quick-start case: 8 micro-batches `g_k = μ + ε_k` (cosine and norm ratio to
//!    the exact mean).
//! 2. Real digits-MLP micro-batch gradients (8 rows each, k = 4, 8, 16) at steps 0, 300 and
//!    600 of an exact run: relative L2 error and cosine to the exact mean, and the floor
//!    (one quantization of the exact mean with the same configuration).
//! 3. Digits test accuracy after 600 steps of 8 micro-batches of 8, 3 seeds, the AdamW
//!    learning rate tuned per row on one shared grid (best mean over the seeds).
//!
//! With `--long` instead ([`long::long_columns`]): the 2400-step digits and the char-LM
//! training columns, and with `--parts chargrads` table 2 on char-LM micro-batch gradients
//! ([`grads::chargrad_section`]), each in its own section.

use candle_core::{Device, Result};
use candle_nn::Optimizer;
use vsa_optim_bench::harness::grad_map;
use vsa_optim_bench::models::CharLmConfig;
use vsa_optim_bench::tasks::{CharLmTask, DigitsTask, Task};
use vsa_optim_bench::ternary_runs::{
    Accumulation, DigitsRunSettings, bf16_bits, bf16_value, train_task,
};
use vsa_optim_bench::workloads::{Regime, Workload, workload_settings};
use vsa_optim_rs::ternary::TernaryConfig;
use vsa_optim_rs::ternary_quant::{AccumulatorConfig, PackedAccumulator, Rounding};
use vsa_optim_rs::{AdamW, ParamSet, ParamsAdamW};

#[path = "ternary_report/grads.rs"]
mod grads;
#[path = "ternary_report/long.rs"]
mod long;
#[path = "ternary_report/table.rs"]
mod table;
use grads::{gradient_table, real_gradients};
use long::{long_columns, rows_flag};
use table::{Column, Metric, RowResult, Table};

/// Micro-batch gradients: micro-batches × parameters × elements.
type Micro = Vec<Vec<Vec<f32>>>;

/// One row of the frontier.
#[derive(Clone, Copy)]
enum Row {
    F32,
    Bf16,
    Ternary {
        trits: u8,
        new: bool,
    },
    /// The new default blocks with the subtractive-dither decode (`docs/ternary.md` §3.3).
    Dither {
        trits: u8,
    },
}

impl Row {
    /// All rows, in table order.
    fn all() -> Vec<Row> {
        let mut rows = vec![Row::F32, Row::Bf16];
        for trits in [1u8, 2, 3, 5] {
            for new in [false, true] {
                rows.push(Row::Ternary { trits, new });
            }
            rows.push(Row::Dither { trits });
        }
        rows
    }

    /// The short id of `--rows`: `f32`, `bf16`, or the trit count and `e` (earlier) or `n`
    /// (new) or `s` (new blocks, subtractive dither), e.g. `2n`, `2s`.
    fn id(self) -> String {
        match self {
            Self::F32 => "f32".into(),
            Self::Bf16 => "bf16".into(),
            Self::Ternary { trits, new } => format!("{trits}{}", if new { 'n' } else { 'e' }),
            Self::Dither { trits } => format!("{trits}s"),
        }
    }

    fn label(self) -> String {
        match self {
            Self::F32 => "f32 sum (exact)".into(),
            Self::Bf16 => "bf16 sum".into(),
            Self::Ternary { trits, new: false } => {
                format!("{trits} trit(s), f32 scale per 320 (earlier)")
            }
            Self::Ternary { trits, new: true } => {
                format!("{trits} trit(s), 8-bit scale per 25 (new)")
            }
            Self::Dither { trits } => {
                format!("{trits} trit(s), 8-bit scale per 25, subtractive dither")
            }
        }
    }

    fn config(self) -> Option<AccumulatorConfig> {
        match self {
            Self::Ternary { trits, new } => {
                let base = if new {
                    AccumulatorConfig::default()
                } else {
                    AccumulatorConfig::block320_f32()
                };
                Some(AccumulatorConfig {
                    trits_per_element: trits,
                    ..base
                })
            }
            Self::Dither { trits } => Some(AccumulatorConfig {
                trits_per_element: trits,
                rounding: Rounding::SUBTRACTIVE,
                ..AccumulatorConfig::default()
            }),
            _ => None,
        }
    }

    fn accumulation(self) -> Accumulation {
        match self {
            Self::F32 => Accumulation::ExactF32,
            Self::Bf16 => Accumulation::Bf16,
            Self::Ternary { .. } | Self::Dither { .. } => {
                let c = self.config().unwrap_or_default();
                Accumulation::Ternary(TernaryConfig {
                    scale_granularity: c.scale_granularity,
                    scale_format: c.scale_format,
                    trits_per_element: c.trits_per_element,
                    rounding: c.rounding,
                    ..TernaryConfig::default()
                })
            }
        }
    }

    /// Bits held per element at 2^20 elements (one tensor), measured.
    fn bits(self) -> f64 {
        match self {
            Self::F32 => 32.0,
            Self::Bf16 => 16.0,
            Self::Ternary { .. } | Self::Dither { .. } => self
                .config()
                .and_then(|c| PackedAccumulator::new(1 << 20, c).ok())
                .map_or(f64::NAN, |a| a.bits_per_element()),
        }
    }
}

/// The mean of `micro` (micro-batches × parameters × elements) as the row accumulates it,
/// with `seed` selecting the window's randomness.
fn row_mean(row: Row, micro: &[Vec<Vec<f32>>], seed: u64) -> Vec<Vec<f32>> {
    row_mean_with(row, micro, seed, None)
}

/// [`row_mean`], with the row's rounding replaced by `rounding` where given.
fn row_mean_with(
    row: Row,
    micro: &[Vec<Vec<f32>>],
    seed: u64,
    rounding: Option<Rounding>,
) -> Vec<Vec<f32>> {
    let k = micro.len();
    match row {
        Row::F32 => (0..micro[0].len())
            .map(|p| {
                let mut s = vec![0f32; micro[0][p].len()];
                for g in micro {
                    for (a, b) in s.iter_mut().zip(&g[p]) {
                        *a += b;
                    }
                }
                s.iter().map(|x| x / k as f32).collect()
            })
            .collect(),
        Row::Bf16 => (0..micro[0].len())
            .map(|p| {
                let mut s = vec![0u16; micro[0][p].len()];
                for g in micro {
                    for (a, &b) in s.iter_mut().zip(&g[p]) {
                        *a = bf16_bits(bf16_value(*a) + b);
                    }
                }
                s.iter().map(|&x| bf16_value(x) / k as f32).collect()
            })
            .collect(),
        Row::Ternary { .. } | Row::Dither { .. } => {
            let base = row.config().unwrap_or_default();
            let base = AccumulatorConfig {
                rounding: rounding.unwrap_or(base.rounding),
                ..base
            };
            (0..micro[0].len())
                .map(|p| {
                    let cfg = AccumulatorConfig {
                        accumulation_steps: k,
                        seed,
                        tensor_id: p as u64,
                        ..base
                    };
                    let n = micro[0][p].len();
                    let mut acc = PackedAccumulator::new(n, cfg).expect("valid config");
                    for g in micro {
                        acc.accumulate(&g[p]).expect("finite gradients");
                    }
                    acc.mean()
                })
                .collect()
        }
    }
}

/// `(‖a − m‖/‖m‖, cos(a, m), ‖a‖/‖m‖)` over all parameters.
fn compare(a: &[Vec<f32>], m: &[Vec<f64>]) -> (f64, f64, f64) {
    let (mut d, mut mm, mut aa, mut am) = (0f64, 0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(m) {
        for (&p, &q) in x.iter().zip(y) {
            let p = f64::from(p);
            d += (p - q).powi(2);
            mm += q * q;
            aa += p * p;
            am += p * q;
        }
    }
    ((d / mm).sqrt(), am / (aa * mm).sqrt(), (aa / mm).sqrt())
}

fn exact_mean(micro: &[Vec<Vec<f32>>]) -> Vec<Vec<f64>> {
    (0..micro[0].len())
        .map(|p| {
            (0..micro[0][p].len())
                .map(|i| micro.iter().map(|g| f64::from(g[p][i])).sum::<f64>() / micro.len() as f64)
                .collect()
        })
        .collect()
}

/// Mean over `reps` windows of `compare(row mean, exact)`, and of the floor: one
/// stochastic quantization of the exact mean with the same trits, blocks and scales (for
/// the dithered rows too, so that every row's ratio is to the issue's floor).
fn errors(row: Row, micro: &[Vec<Vec<f32>>], reps: u64) -> [f64; 4] {
    let m = exact_mean(micro);
    let m32: Vec<Vec<Vec<f32>>> = vec![
        m.iter()
            .map(|v| v.iter().map(|&x| x as f32).collect())
            .collect(),
    ];
    let mut out = [0f64; 4];
    let reps = if matches!(row, Row::Ternary { .. } | Row::Dither { .. }) {
        reps
    } else {
        1
    };
    for seed in 0..reps {
        let (e, c, _) = compare(&row_mean(row, micro, seed), &m);
        let floor = row_mean_with(row, &m32, seed, Some(Rounding::Stochastic));
        let (f, fc, _) = compare(&floor, &m);
        for (o, v) in out.iter_mut().zip([e, c, f, fc]) {
            *o += v / reps as f64;
        }
    }
    out
}

fn quickstart(rows: &[Row], out: &mut String) {
    // README quick start: one 256×64 weight and a 64 bias; 8 micro-batches of a shared
    // signal μ ~ N(0, 1) plus per-batch noise ε_k ~ N(0, 3²) (SNR 1/3 per micro-batch).
    let shapes = [256 * 64, 64];
    let mut r = vsa_optim_rs::vsa_core::rng::chacha_stream(2024, 0);
    let mut normal = move || {
        use rand_core::RngCore;
        let u = ((r.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let v = ((r.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    };
    let mu: Vec<Vec<f32>> = shapes
        .iter()
        .map(|&n| (0..n).map(|_| normal()).collect())
        .collect();
    let micro: Vec<Vec<Vec<f32>>> = (0..8)
        .map(|_| {
            mu.iter()
                .map(|m| m.iter().map(|x| x + 3.0 * normal()).collect())
                .collect()
        })
        .collect();
    let m = exact_mean(&micro);
    out.push_str(
        "\n#### README quick-start case: 8 micro-batches of μ + ε_k (μ ~ N(0,1), ε ~ N(0,3²)), 16 448 elements, 3 windows\n\n",
    );
    out.push_str("| accumulator | bits held/element (2^20) | cosine to exact mean | norm ratio | rel. L2 error |\n|---|---|---|---|---|\n");
    for &row in rows {
        let (mut e, mut c, mut nr) = (0.0, 0.0, 0.0);
        for seed in 0..3 {
            let (a, b, d) = compare(&row_mean(row, &micro, seed), &m);
            e += a / 3.0;
            c += b / 3.0;
            nr += d / 3.0;
        }
        out.push_str(&format!(
            "| {} | {:.2} | {c:.3} | {nr:.2} | {e:.3} |\n",
            row.label(),
            row.bits()
        ));
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let write = args
        .iter()
        .position(|a| a == "--write")
        .and_then(|i| args.get(i + 1).cloned());
    let dev = Device::Cpu;
    if args.iter().any(|a| a == "--long") {
        return long_columns(&args, quick, &dev, write.as_deref());
    }
    let rows = Row::all();
    let mut out = String::new();
    out.push_str("Regenerate: `cargo run --release -p vsa-optim-bench --example ternary_report -- --write docs/benchmarks.md` (all randomness seeded; `--train-rows f32,1n,…` limits the training table to those rows). Rows marked *subtractive dither* use `Rounding::Subtractive` (`docs/ternary.md` §3.3); the floor is one stochastic quantization of the exact mean with the row's trits, blocks and scales.\n");
    let train_rows = rows_flag(&args, "--train-rows")?;
    quickstart(&rows, &mut out);

    // 2. Real gradients.
    let steps: Vec<usize> = if quick { vec![0] } else { vec![0, 300, 600] };
    let reps = if quick { 2 } else { 8 };
    let task8 = DigitsTask::new(Some(64), 8, &dev)?;
    let t4 = DigitsTask::new(Some(32), 4, &dev)?;
    let t16 = DigitsTask::new(Some(128), 16, &dev)?;
    let lr = ParamsAdamW::default().lr;
    let grads = real_gradients(&task8, &[(4, &t4), (16, &t16)], lr, &steps)?;
    out.push_str(&format!(
        "\n#### Real digits-MLP micro-batch gradients (8 rows each), mean over steps {steps:?} of an exact run and {reps} windows\n\n"
    ));
    out.push_str(&gradient_table(&rows, &grads, reps));

    // 3. Training.
    let (train_steps, seeds, lrs): (usize, Vec<u64>, Vec<f64>) = if quick {
        (60, vec![0], vec![1e-3])
    } else {
        (600, vec![0, 1, 2], LR_GRID.to_vec())
    };
    let task = DigitsTask::new(Some(64), 8, &dev)?;
    if train_rows.len() < rows.len() {
        let ids: Vec<String> = train_rows.iter().map(|r| r.id()).collect();
        out.push_str(&format!(
            "\n**Training table limited** (`--train-rows {}`): the other rows of this column were not run by this command.\n",
            ids.join(",")
        ));
    }
    let table = training_table(
        &task,
        Metric::DigitsAccuracy,
        &train_rows,
        train_steps,
        &seeds,
        &lrs,
        |_| Ok(()),
    )?;
    out.push_str(&table.render(Metric::DigitsAccuracy, &Row::F32.label()));
    print!("{out}");
    if let Some(path) = write {
        write_section(&path, "ternary-frontier", &out)?;
    }
    Ok(())
}

/// Replaces what lies between `<!-- {name}:begin -->` and `<!-- {name}:end -->` in `path`.
fn write_section(path: &str, name: &str, out: &str) -> Result<()> {
    let (begin, end) = (
        format!("<!-- {name}:begin -->"),
        format!("<!-- {name}:end -->"),
    );
    let doc = std::fs::read_to_string(path)?;
    let (Some(i), Some(j)) = (doc.find(&begin), doc.find(&end)) else {
        return Err(candle_core::Error::Msg(format!(
            "{path}: missing {begin} / {end} markers"
        )));
    };
    let new = format!("{}{begin}\n{out}{}", &doc[..i], &doc[j..]);
    std::fs::write(path, new)?;
    eprintln!("wrote {path}");
    Ok(())
}

/// The shared learning-rate grid of every training column.
const LR_GRID: [f64; 5] = [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2];

/// One training column: every row trained for `steps` on `task` at every learning rate of
/// `lrs` and every seed; the row's learning rate is the one with the best mean over the
/// seeds. `after_row` sees the table so far after every row.
fn training_table(
    task: &dyn Task,
    metric: Metric,
    rows: &[Row],
    steps: usize,
    seeds: &[u64],
    lrs: &[f64],
    mut after_row: impl FnMut(&Table) -> Result<()>,
) -> Result<Table> {
    let mut table = Table {
        settings: settings_line(task, metric, steps, seeds),
        lrs: lrs.to_vec(),
        rows: Vec::new(),
    };
    for &row in rows {
        let mut runs = Vec::new();
        let mut bytes = 0;
        for &lr in lrs {
            let mut vals = Vec::new();
            for &seed in seeds {
                let t0 = std::time::Instant::now();
                let r = train_task(
                    task,
                    row.accumulation(),
                    DigitsRunSettings { steps, lr, seed },
                    0,
                )?;
                let last = r.last();
                let v = match metric {
                    Metric::DigitsAccuracy => last.metric,
                    Metric::CharLmLoss => last.loss,
                };
                eprintln!(
                    "  {} lr {lr:e} seed {seed}: {v:.4} ({:.1} s)",
                    row.id(),
                    t0.elapsed().as_secs_f64()
                );
                vals.push(v);
                bytes = r.accumulator_bytes;
            }
            runs.push((lr, vals));
        }
        if runs.is_empty() {
            continue;
        }
        table.rows.push(RowResult::new(
            row.label(),
            bytes.to_string(),
            metric,
            &runs,
        ));
        eprintln!("{} done", row.label());
        after_row(&table)?;
    }
    Ok(table)
}

/// A training column's settings line up to its learning-rate grid: what `--merge` compares.
fn settings_line(task: &dyn Task, metric: Metric, steps: usize, seeds: &[u64]) -> String {
    let k = task.micro_batches();
    match metric {
        Metric::DigitsAccuracy => format!(
            "#### Digits test accuracy, {steps} steps of {k} micro-batches of 8, seeds {seeds:?}, AdamW lr tuned per row"
        ),
        Metric::CharLmLoss => format!(
            "#### Char-LM validation loss (nats/char), {steps} steps of {k} micro-batches ({}), seeds {seeds:?}, AdamW lr tuned per row",
            task.name()
        ),
    }
}
