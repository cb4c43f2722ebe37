//! The demo's workloads and regimes, their sizes, and the trainer configs compared.

use vsa_optim_rs::DeterministicPhaseConfig;

use crate::compare::{Comparison, TrainerSpec, median};

/// Which model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// The digits MLP.
    Digits,
    /// The character transformer.
    CharLm,
}

impl Workload {
    /// File-name slug.
    pub fn slug(self) -> &'static str {
        match self {
            Self::Digits => "digits",
            Self::CharLm => "charlm",
        }
    }
}

/// Which batch regime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Regime {
    /// Small minibatches: noisy gradients.
    Mini,
    /// A large effective batch: full batch, or accumulated micro-batches.
    Large,
}

impl Regime {
    /// File-name slug.
    pub fn slug(self) -> &'static str {
        match self {
            Self::Mini => "minibatch",
            Self::Large => "large-batch",
        }
    }
}

/// Sizes of one workload in one regime.
#[derive(Debug, Clone, Copy)]
pub struct WorkloadSettings {
    /// Rows/windows per micro-batch (`None`: the full digits training split).
    pub batch: Option<usize>,
    /// Micro-batches per optimizer step.
    pub micro: usize,
    /// Optimizer steps.
    pub steps: usize,
    /// Base learning rate.
    pub lr: f64,
    /// Evaluate every this many steps.
    pub eval_every: usize,
    /// Validation windows (char-LM).
    pub eval_windows: usize,
}

/// The sizes used by the demo and the benchmark report.
pub fn workload_settings(w: Workload, r: Regime, quick: bool) -> WorkloadSettings {
    let q = |full: usize, short: usize| if quick { short } else { full };
    match (w, r) {
        (Workload::Digits, Regime::Mini) => WorkloadSettings {
            batch: Some(64),
            micro: 1,
            steps: q(600, 200),
            lr: 1e-3,
            eval_every: 10,
            eval_windows: 0,
        },
        (Workload::Digits, Regime::Large) => WorkloadSettings {
            batch: None,
            micro: 1,
            steps: q(300, 150),
            lr: 1e-3,
            eval_every: 5,
            eval_windows: 0,
        },
        (Workload::CharLm, Regime::Mini) => WorkloadSettings {
            batch: Some(16),
            micro: 1,
            steps: q(150, 60),
            lr: 2e-3,
            eval_every: 10,
            eval_windows: 32,
        },
        (Workload::CharLm, Regime::Large) => WorkloadSettings {
            batch: Some(8),
            micro: 8,
            steps: q(40, 20),
            lr: 2e-3,
            eval_every: 4,
            eval_windows: 32,
        },
    }
}

/// The best configuration found by measurement (`cargo run --release -p vsa-optim-bench
/// --example sweep`, see `docs/trainer.md`): after warmup, alternate one true and one predicted
/// (last-gradient) step, with a Correct step measuring every prediction so the scheduler can
/// back off when quality is poor; predict phases never grow past one step.
pub fn best_config() -> DeterministicPhaseConfig {
    DeterministicPhaseConfig::alternating()
}

/// The trainer configurations compared: the defaults first at the base learning rate (the
/// controls reuse its schedule), then the best configuration found, at the learning rate
/// where it did best in the sweep (×2).
pub fn trainer_configs() -> Vec<TrainerSpec> {
    vec![
        TrainerSpec {
            label: "defaults".into(),
            config: DeterministicPhaseConfig::default(),
            lr_mult: 1.0,
        },
        TrainerSpec {
            label: "best (F1 P1 C1, lr×2)".into(),
            config: best_config(),
            lr_mult: 2.0,
        },
    ]
}

/// Median and spread over seeds of each row's final metric, time ratio and time to target,
/// plus the speedup against the LR-tuned baseline.
pub fn summarize(results: &[Comparison]) -> String {
    let first = &results[0];
    let mut s = format!(
        "**{}: {} seeds, median [min, max]**\n\n| method | {} | time ÷ baseline | sustained s |\n|---|---|---|---|\n",
        first.task,
        results.len(),
        first.metric_name
    );
    for (i, r0) in first.rows.iter().enumerate() {
        let rows: Vec<_> = results.iter().filter_map(|c| c.rows.get(i)).collect();
        let fmt = |v: Vec<f64>| {
            if v.is_empty() {
                return "never".to_string();
            }
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!("{:.2} [{lo:.2}, {hi:.2}]", median(v.clone()))
        };
        let metric = fmt(rows.iter().map(|r| r.metric).collect());
        let ratio = fmt(rows.iter().map(|r| r.time_ratio).collect());
        let sus: Vec<f64> = rows.iter().filter_map(|r| r.sustained).collect();
        let sus = if sus.len() == rows.len() {
            fmt(sus)
        } else {
            format!("never in {} of {}", rows.len() - sus.len(), rows.len())
        };
        s.push_str(&format!("| {} | {metric} | {ratio} | {sus} |\n", r0.label));
    }
    let sp: Vec<f64> = results.iter().filter_map(|c| c.speedup_vs_tuned).collect();
    if sp.is_empty() {
        s.push_str(
            "\nSpeedup to target vs LR-tuned plain (defaults): never measured (target not held)\n",
        );
    } else {
        let lo = sp.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = sp.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        s.push_str(&format!(
            "\nSpeedup to target vs LR-tuned plain (defaults): median {:.2}× [{lo:.2}, {hi:.2}] over {} of {} seeds\n",
            median(sp.clone()),
            sp.len(),
            results.len()
        ));
    }
    let best: Vec<(String, f64)> = results
        .iter()
        .filter_map(|c| c.best_speedup_vs_tuned.clone())
        .collect();
    if !best.is_empty() {
        let v: Vec<f64> = best.iter().map(|b| b.1).collect();
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        s.push_str(&format!(
            "Speedup to target vs LR-tuned plain (best trainer config per seed): median {:.2}× [{lo:.2}, {hi:.2}] over {} of {} seeds ({})\n",
            median(v.clone()),
            v.len(),
            results.len(),
            best.iter().map(|b| b.0.as_str()).collect::<Vec<_>>().join("; ")
        ));
    }
    s
}
