//! Sweeps trainer configurations against the LR-tuned plain baseline on one workload, to
//! choose the trainer's defaults by measurement.
//!
//! `cargo run --release -p vsa-optim-bench --example sweep -- [digits-full|digits-mini|charlm-large|charlm-mini] [seeds]`

use vsa_optim_bench::harness::{Method, RunSettings, run};
use vsa_optim_bench::models::CharLmConfig;
use vsa_optim_bench::tasks::{CharLmTask, DigitsTask, Task};
use vsa_optim_bench::workloads::{Regime, Workload, workload_settings};
use vsa_optim_rs::{DeterministicPhaseConfig, HistoryMode, PredictorModel};

fn cfg(
    f: usize,
    p: usize,
    c: usize,
    model: PredictorModel,
    adaptive: bool,
) -> DeterministicPhaseConfig {
    DeterministicPhaseConfig {
        warmup_steps: 10,
        full_steps: f,
        predict_steps: p,
        correct_every: c,
        adaptive_phases: adaptive,
        predictor_model: model,
        history_mode: HistoryMode::Streaming,
        min_full_steps: 1.min(f),
        ..DeterministicPhaseConfig::default()
    }
}

fn sustained_backward(r: &vsa_optim_bench::harness::RunResult, target: f64) -> Option<usize> {
    let mut t = None;
    for p in &r.curve {
        if p.loss <= target {
            t.get_or_insert(p.backward);
        } else {
            t = None;
        }
    }
    t
}

fn lr_mults(args: &[String]) -> Vec<f64> {
    args.get(2)
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![1.0, 2.0])
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let which = args.first().map_or("digits-full", String::as_str);
    let seeds: u64 = args.get(1).map_or(Ok(1), |s| s.parse())?;
    let (w, r) = match which {
        "digits-full" => (Workload::Digits, Regime::Large),
        "digits-mini" => (Workload::Digits, Regime::Mini),
        "charlm-large" => (Workload::CharLm, Regime::Large),
        "charlm-mini" => (Workload::CharLm, Regime::Mini),
        other => return Err(format!("unknown workload {other}").into()),
    };
    let ws = workload_settings(w, r, false);
    let dev = candle_core::Device::Cpu;
    let task: Box<dyn Task> = match w {
        Workload::Digits => Box::new(DigitsTask::new(ws.batch, ws.micro, &dev)?),
        Workload::CharLm => Box::new(CharLmTask::new(
            CharLmConfig::default(),
            ws.batch.unwrap_or(16),
            ws.micro,
            ws.eval_windows,
            &dev,
        )?),
    };
    use PredictorModel::*;
    let configs: Vec<(String, DeterministicPhaseConfig)> = vec![
        ("defaults".into(), DeterministicPhaseConfig::default()),
        (
            "F5P20C5 last adaptive".into(),
            cfg(5, 20, 5, LastGradient, true),
        ),
        (
            "F5P20C5 wls adaptive".into(),
            cfg(5, 20, 5, LinearWls, true),
        ),
        (
            "F5P20C5 mean adaptive".into(),
            cfg(5, 20, 5, DecayedMean, true),
        ),
        ("F5P5C1 last".into(), cfg(5, 5, 1, LastGradient, false)),
        ("F5P5C1 wls".into(), cfg(5, 5, 1, LinearWls, false)),
        ("F2P2C1 last".into(), cfg(2, 2, 1, LastGradient, false)),
        ("F1P1C1 last".into(), cfg(1, 1, 1, LastGradient, false)),
        ("F1P2C2 last".into(), cfg(1, 2, 2, LastGradient, false)),
        ("F1P3C3 last".into(), cfg(1, 3, 3, LastGradient, false)),
        ("F1P1C1 wls".into(), cfg(1, 1, 1, LinearWls, false)),
        ("F1P2C2 wls".into(), cfg(1, 2, 2, LinearWls, false)),
    ];
    let only: Option<Vec<String>> = std::env::var("SWEEP_CONFIGS")
        .ok()
        .map(|v| v.split(',').map(str::to_string).collect());
    let configs: Vec<_> = configs
        .into_iter()
        .filter(|(l, _)| only.as_ref().is_none_or(|o| o.contains(l)))
        .collect();
    let plain_mults: Vec<f64> = std::env::var("SWEEP_PLAIN")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![0.5, 1.0, 2.0, 3.0, 4.0]);
    for seed in 0..seeds {
        let s = RunSettings {
            steps: ws.steps,
            lr: ws.lr,
            seed,
            eval_every: ws.eval_every,
        };
        let mut plain = Vec::new();
        for &m in &plain_mults {
            plain.push((
                m,
                run(task.as_ref(), &Method::Plain, "plain", ws.lr * m, s, |_| {})?,
            ));
        }
        let base = plain
            .iter()
            .find(|(m, _)| *m == 1.0)
            .ok_or("SWEEP_PLAIN must contain 1")?;
        let target = base.1.last().loss * 1.01;
        let tuned = plain
            .iter()
            .filter_map(|(m, r)| {
                r.sustained_hit(target).map(|t| {
                    (
                        *m,
                        t,
                        r.backward,
                        r.curve
                            .iter()
                            .find(|p| p.loss <= target)
                            .map(|p| p.backward),
                    )
                })
            })
            .min_by(|a, b| a.1.total_cmp(&b.1));
        println!(
            "\n== {} seed {seed}: target {target:.4}; tuned plain {tuned:?}",
            task.name()
        );
        for (m, r) in &plain {
            println!(
                "plain x{m}: loss {:.4} metric {:.2} secs {:.2} sustained {:?} backward-at-sustained {:?}",
                r.last().loss,
                r.last().metric,
                r.secs,
                r.sustained_hit(target),
                sustained_backward(r, target)
            );
        }
        for (label, c) in &configs {
            for lrm in lr_mults(&args) {
                let r = run(
                    task.as_ref(),
                    &Method::Trainer(Box::new(c.clone())),
                    label,
                    ws.lr * lrm,
                    s,
                    |_| {},
                )?;
                let sus = r.sustained_hit(target);
                let ratio = match (tuned, sus) {
                    (Some(t), Some(x)) => format!("{:.2}x", t.1 / x),
                    _ => "n/a".into(),
                };
                println!(
                    "{label} lr x{lrm}: loss {:.4} metric {:.2} backward {} secs {:.2} sustained {:?} speedup-vs-tuned {ratio} backward-at-sustained {:?} | {}",
                    r.last().loss,
                    r.last().metric,
                    r.backward,
                    r.secs,
                    sus,
                    sustained_backward(&r, target),
                    r.stats.clone().unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}
