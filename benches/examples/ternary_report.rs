//! Prints the real-gradient tables of `docs/ternary.md`: the error of the ternary mean on
//! digits-MLP gradients, and exact-vs-ternary training (accuracy, bytes, time) over 3 seeds.
//!
//! ```text
//! cargo run --release -p vsa-optim-bench --example ternary_report [-- --quick] [--steps N] [--e2e-only]
//! ```

use candle_core::Device;
use vsa_optim_bench::tasks::DigitsTask;
use vsa_optim_bench::ternary_runs::{
    Accumulation, DigitsRunSettings, gradient_errors, mean_sd, train_digits,
};
use vsa_optim_rs::ternary::TernaryConfig;
use vsa_optim_rs::ternary_quant::ScaleGranularity;

fn main() -> candle_core::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let dev = Device::Cpu;
    let args: Vec<String> = std::env::args().collect();
    let e2e_only = args.iter().any(|a| a == "--e2e-only");
    let (mut steps, seeds, reps) = if quick {
        (150, vec![0u64], 4)
    } else {
        (600, vec![0u64, 1, 2], 16)
    };
    if let Some(i) = args.iter().position(|a| a == "--steps") {
        steps = args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| candle_core::Error::Msg("--steps needs a number".into()))?;
    }
    let lr = 1e-3;
    let stoch = |g| {
        TernaryConfig::builder()
            .use_stochastic_rounding(true)
            .scale_granularity(g)
            .build()
    };
    let configs = [
        stoch(ScaleGranularity::PerBlock(320)),
        stoch(ScaleGranularity::PerBlock(80)),
        stoch(ScaleGranularity::PerTensor),
        TernaryConfig::builder()
            .use_stochastic_rounding(false)
            .scale_block(320)
            .build(),
    ];
    let full = DigitsTask::new(None, 1, &dev)?;

    // 1. Error of the ternary mean on real gradients.
    let tables: &[(usize, &str)] = if e2e_only {
        &[]
    } else {
        &[(64, "8 micro-batches of 8"), (512, "8 micro-batches of 64")]
    };
    for &(batch, what) in tables {
        let task = DigitsTask::new(Some(batch), 8, &dev)?;
        let at: Vec<usize> = if quick {
            vec![0, 100]
        } else {
            vec![0, 50, 200, 600]
        };
        let s = DigitsRunSettings { steps, lr, seed: 0 };
        let (rows, refs) = gradient_errors(&task, &full, s, &at, &configs, reps)?;
        println!("\n### Relative L2 error, {what} (batch {batch}), seed 0, {reps} windows each\n");
        println!(
            "| step | accumulator | rel. L2 error (mean) | min..max | error of the {reps}-window average |"
        );
        println!("|---|---|---|---|---|");
        for r in &rows {
            println!(
                "| {} | {} | {:.3} | {:.3}..{:.3} | {:.3} |",
                r.step, r.label, r.rel_l2, r.range.0, r.range.1, r.rel_l2_of_average
            );
        }
        println!("\n| step | mini-batch noise ‖M − G_full‖/‖G_full‖ | mean ‖g_k − M‖/‖M‖ |");
        println!("|---|---|---|");
        for r in &refs {
            println!(
                "| {} | {:.3} | {:.3} |",
                r.step, r.minibatch_noise, r.micro_spread
            );
        }
    }

    // 2. End to end: exact f32 vs ternary accumulation, batch 64 = 8 micro-batches of 8.
    let task = DigitsTask::new(Some(64), 8, &dev)?;
    let methods: Vec<Accumulation> = std::iter::once(Accumulation::ExactF32)
        .chain(configs.iter().map(|c| Accumulation::Ternary(*c)))
        .collect();
    println!(
        "\n### End to end: digits MLP 64-128-10, AdamW lr {lr}, {steps} steps of 8 micro-batches of 8\n"
    );
    println!(
        "| accumulator | seed | test acc. % | test loss | bytes held | bits/elem | train s | of which accumulator s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut summary = Vec::new();
    for m in &methods {
        let mut accs = Vec::new();
        let mut secs = Vec::new();
        let mut bytes = 0;
        for &seed in &seeds {
            let r = train_digits(&task, *m, DigitsRunSettings { steps, lr, seed })?;
            println!(
                "| {} | {} | {:.2} | {:.4} | {} | {:.2} | {:.2} | {:.2} |",
                r.label,
                r.seed,
                r.test_accuracy,
                r.test_loss,
                r.accumulator_bytes,
                r.bits_per_element,
                r.train_secs,
                r.accumulator_secs
            );
            accs.push(r.test_accuracy);
            secs.push(r.train_secs);
            bytes = r.accumulator_bytes;
        }
        summary.push((m.label(), mean_sd(&accs), mean_sd(&secs), bytes, accs));
    }
    println!(
        "\n| accumulator | test acc. % (mean ± sd over seeds) | Δ vs exact (points) | bytes held | train s (mean) |"
    );
    println!("|---|---|---|---|---|");
    let exact = summary[0].1.0;
    for (label, (am, asd), (sm, _), bytes, _) in &summary {
        println!(
            "| {label} | {am:.2} ± {asd:.2} | {:+.2} | {bytes} | {sm:.2} |",
            am - exact
        );
    }
    Ok(())
}
