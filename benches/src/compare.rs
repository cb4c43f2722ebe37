//! A full comparison on one task: plain training over a learning-rate grid, the trainer, the
//! rows that tell what it is worth (prediction off, `LinearWls` on the same config, a zero
//! gradient on exactly the trainer's schedule), and the compute-matched baseline,
//! summarised as a table.

use candle_core::Result;
use serde::Serialize;
use vsa_optim_rs::DeterministicPhaseConfig;

use crate::harness::{Method, RunResult, RunSettings, run};
use crate::tasks::Task;

/// The target is the baseline's final held-out loss plus this relative slack (1%), so that a
/// method that ends level with the baseline, up to evaluation noise, counts as reaching it.
pub const TARGET_SLACK: f64 = 0.01;

/// One row of the comparison table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Method label.
    pub label: String,
    /// Learning rate.
    pub lr: f64,
    /// Final held-out loss.
    pub loss: f64,
    /// Final held-out metric.
    pub metric: f64,
    /// Micro-batch backward passes.
    pub backward: usize,
    /// Training seconds.
    pub secs: f64,
    /// `secs / baseline secs`.
    pub time_ratio: f64,
    /// Seconds to first reach the baseline's final loss.
    pub first_hit: Option<f64>,
    /// Seconds from which the loss stays at or below the baseline's final loss.
    pub sustained: Option<f64>,
    /// Bytes held by optimizer + predictor state.
    pub state_bytes: usize,
    /// Trainer statistics, where a trainer ran.
    pub stats: Option<String>,
}

/// A finished comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Task label.
    pub task: String,
    /// Metric label.
    pub metric_name: String,
    /// The target for time-to-target: the baseline's final held-out loss × (1 + [`TARGET_SLACK`]).
    pub target: f64,
    /// Rows, in the order: baseline, tuned baseline, compute-matched, trainers, controls.
    pub rows: Vec<Row>,
    /// Every run's full result (curves included).
    pub runs: Vec<RunResult>,
    /// Sustained time-to-target of the best LR-tuned plain run divided by that of the first
    /// trainer config (`> 1` means the trainer is faster); `None` if either never holds the
    /// target.
    pub speedup_vs_tuned: Option<f64>,
    /// The same for the trainer config with the best ratio.
    pub best_speedup_vs_tuned: Option<(String, f64)>,
}

fn row(r: &RunResult, label: &str, baseline_secs: f64, target: f64) -> Row {
    let p = r.last();
    Row {
        label: label.to_string(),
        lr: r.lr,
        loss: p.loss,
        metric: p.metric,
        backward: r.backward,
        secs: r.secs,
        time_ratio: r.secs / baseline_secs,
        first_hit: r.first_hit(target),
        sustained: r.sustained_hit(target),
        state_bytes: r.state_bytes,
        stats: r.stats.clone(),
    }
}

/// A labelled trainer configuration and the learning-rate multiplier it runs at.
#[derive(Debug, Clone)]
pub struct TrainerSpec {
    /// Label for the table.
    pub label: String,
    /// The configuration.
    pub config: DeterministicPhaseConfig,
    /// Multiplier of the base learning rate.
    pub lr_mult: f64,
}

/// Runs the comparison. `grid` holds learning-rate multipliers (must contain `1.0`, the
/// baseline); `trainers` holds labelled trainer configs, the first being the defaults whose
/// schedule (and learning rate) the controls reuse.
///
/// # Errors
/// Candle and trainer errors.
pub fn compare(
    task: &dyn Task,
    s: RunSettings,
    grid: &[f64],
    trainers: &[TrainerSpec],
    mut progress: impl FnMut(&str, usize),
) -> Result<Comparison> {
    let mut runs = Vec::new();
    let mut plain = Vec::new();
    for &m in grid {
        let name = format!("plain lr×{m}");
        let r = run(task, &Method::Plain, &name, s.lr * m, s, |i| {
            progress(&name, i)
        })?;
        plain.push((m, r.clone()));
        runs.push(r);
    }
    let base = plain
        .iter()
        .find(|(m, _)| *m == 1.0)
        .map(|(_, r)| r.clone())
        .ok_or_else(|| candle_core::Error::Msg("the grid must contain 1.0".into()))?;
    let target = base.last().loss * (1.0 + TARGET_SLACK);
    let mut trainer_runs = Vec::new();
    for t in trainers {
        let (label, cfg) = (&t.label, &t.config);
        let name = format!("trainer {label}");
        let r = run(
            task,
            &Method::Trainer(Box::new(cfg.clone())),
            &name,
            s.lr * t.lr_mult,
            s,
            |i| progress(&name, i),
        )?;
        trainer_runs.push((label.clone(), r.clone()));
        runs.push(r);
    }
    let mut controls = Vec::new();
    if let Some(TrainerSpec {
        label,
        config: cfg,
        lr_mult,
    }) = trainers.first()
    {
        let name = format!("trainer {label}, forward kept");
        let r = run(
            task,
            &Method::TrainerWithForward(Box::new(cfg.clone())),
            &name,
            s.lr * lr_mult,
            s,
            |i| progress(&name, i),
        )?;
        controls.push(r.clone());
        runs.push(r);
        let schedule = trainer_runs
            .first()
            .map(|(_, r)| r.schedule.clone())
            .unwrap_or_default();
        let wls = DeterministicPhaseConfig {
            predictor_model: vsa_optim_rs::PredictorModel::LinearWls,
            ..cfg.clone()
        };
        for (name, method) in [
            (
                "trainer, prediction off".to_string(),
                Method::Trainer(Box::new(DeterministicPhaseConfig::prediction_off())),
            ),
            (
                format!("trainer {label}, LinearWls"),
                Method::Trainer(Box::new(wls)),
            ),
            (
                format!("control: zero gradient on the {label} schedule"),
                Method::ZeroOnSchedule(schedule),
            ),
        ] {
            let r = run(task, &method, &name, s.lr * lr_mult, s, |i| {
                progress(&name, i)
            })?;
            controls.push(r.clone());
            runs.push(r);
        }
    }

    let mut rows = vec![row(&base, "baseline (plain, lr×1)", base.secs, target)];
    // The LR-tuned plain run: the grid point that holds the target soonest.
    let tuned = plain
        .iter()
        .filter_map(|(m, r)| r.sustained_hit(target).map(|t| (m, r, t)))
        .min_by(|a, b| a.2.total_cmp(&b.2));
    if let Some((m, r, _)) = tuned {
        rows.push(row(
            r,
            &format!("tuned baseline (plain, lr×{m})"),
            base.secs,
            target,
        ));
    }
    // The compute-matched baseline: the prefix of each plain run with the trainer's backward
    // passes (identical to a shorter run: constant LR, same data order), best LR by loss.
    if let Some((_, tr)) = trainer_runs.first() {
        let b = tr.backward;
        let best = plain
            .iter()
            .map(|(m, r)| (m, r, r.at_backward(b)))
            .min_by(|a, b| a.2.loss.total_cmp(&b.2.loss));
        if let Some((m, r, p)) = best {
            let mut cm = r.clone();
            cm.curve.retain(|q| q.backward <= b);
            cm.backward = p.backward;
            cm.secs = p.secs;
            cm.stats = None;
            rows.push(row(
                &cm,
                &format!("compute-matched (plain, lr×{m}, tuned)"),
                base.secs,
                target,
            ));
        }
    }
    for (label, r) in &trainer_runs {
        rows.push(row(r, &format!("trainer {label}"), base.secs, target));
    }
    for r in &controls {
        rows.push(row(r, &r.name, base.secs, target));
    }
    for (m, r) in &plain {
        if *m != 1.0 {
            rows.push(row(r, &format!("plain lr×{m}"), base.secs, target));
        }
    }
    let tuned_t = tuned.map(|t| t.2);
    let ratio = |r: &RunResult| match (tuned_t, r.sustained_hit(target)) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let speedup_vs_tuned = trainer_runs.first().and_then(|(_, r)| ratio(r));
    let best_speedup_vs_tuned = trainer_runs
        .iter()
        .filter_map(|(l, r)| ratio(r).map(|x| (l.clone(), x)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    Ok(Comparison {
        task: task.name(),
        metric_name: task.metric_name().to_string(),
        target,
        rows,
        runs,
        speedup_vs_tuned,
        best_speedup_vs_tuned,
    })
}

fn opt_secs(x: Option<f64>) -> String {
    x.map_or_else(|| "never".to_string(), |t| format!("{t:.2}"))
}

impl Comparison {
    /// The table as Markdown.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "**{}** — target = baseline's final held-out loss + 1% = {:.4}\n\n\
             | method | lr | final loss | {} | backward passes | train s | time ÷ baseline | first hit s | sustained s | state bytes |\n\
             |---|---|---|---|---|---|---|---|---|---|\n",
            self.task, self.target, self.metric_name
        );
        for r in &self.rows {
            s.push_str(&format!(
                "| {} | {:.4} | {:.4} | {:.2} | {} | {:.2} | {:.2} | {} | {} | {} |\n",
                r.label,
                r.lr,
                r.loss,
                r.metric,
                r.backward,
                r.secs,
                r.time_ratio,
                opt_secs(r.first_hit),
                opt_secs(r.sustained),
                r.state_bytes
            ));
        }
        match self.speedup_vs_tuned {
            Some(x) => s.push_str(&format!(
                "\nTime to hold the target, LR-tuned plain ÷ trainer (defaults): **{x:.2}×**\n"
            )),
            None => s.push_str(
                "\nTime to hold the target, LR-tuned plain ÷ trainer (defaults): **n/a** (one of them never holds it)\n",
            ),
        }
        if let Some((l, x)) = &self.best_speedup_vs_tuned {
            s.push_str(&format!("Best trainer config ({l}): **{x:.2}×**\n"));
        }
        for r in &self.rows {
            if let Some(st) = &r.stats {
                s.push_str(&format!("\n- {}: {}", r.label, st));
            }
        }
        s.push('\n');
        s
    }
}

/// The no-harm measurement: training seconds of plain AdamW and of the trainer with
/// prediction off (the same backward passes), in `reps` interleaved repetitions
/// (plain, off, plain, off, …) so that both see the same machine load.
#[derive(Debug, Clone, Serialize)]
pub struct NoHarm {
    /// Task label.
    pub task: String,
    /// Training seconds of each plain run.
    pub plain: Vec<f64>,
    /// Training seconds of each prediction-off trainer run.
    pub off: Vec<f64>,
}

/// The median of `v` (the mean of the middle two for an even count); `v` must not be empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

impl NoHarm {
    /// Fastest prediction-off run ÷ fastest plain run.
    pub fn fastest_ratio(&self) -> f64 {
        let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        min(&self.off) / min(&self.plain)
    }

    /// Median, minimum and maximum of the per-pair ratios off ÷ plain.
    pub fn pair_ratios(&self) -> (f64, f64, f64) {
        let r: Vec<f64> = self
            .off
            .iter()
            .zip(&self.plain)
            .map(|(o, p)| o / p)
            .collect();
        let lo = r.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (median(r), lo, hi)
    }

    /// One Markdown table row: task, reps, fastest ratio, median [min, max] of pair ratios.
    pub fn markdown_row(&self) -> String {
        let (m, lo, hi) = self.pair_ratios();
        format!(
            "| {} | {} | {:.3} | {:.3} [{:.3}, {:.3}] |",
            self.task,
            self.plain.len(),
            self.fastest_ratio(),
            m,
            lo,
            hi
        )
    }
}

/// Runs the no-harm measurement (see [`NoHarm`]) at learning rate `lr`.
///
/// # Errors
/// Candle and trainer errors.
pub fn no_harm(task: &dyn Task, s: RunSettings, reps: usize) -> Result<NoHarm> {
    let mut out = NoHarm {
        task: task.name(),
        plain: Vec::new(),
        off: Vec::new(),
    };
    let off = Method::Trainer(Box::new(DeterministicPhaseConfig::prediction_off()));
    for _ in 0..reps {
        out.plain
            .push(run(task, &Method::Plain, "plain", s.lr, s, |_| {})?.secs);
        out.off
            .push(run(task, &off, "trainer, prediction off", s.lr, s, |_| {})?.secs);
    }
    Ok(out)
}
