//! Per-block skipping of backward work on the char-LM transformer (issue 16): per-block
//! prediction against whole-model prediction, DropBP-style controls and the LR-tuned plain
//! run, with the backward FLOPs actually computed counted next to the wall-clock time.
//!
//! Every method trains the same [`CharLmTask`] from the same initial weights with the same
//! data order, and every method's learning rate is tuned on the same grid (best final
//! validation loss, mean over seeds).

use candle_core::Result;
use serde::{Deserialize, Serialize};
use vsa_optim_rs::vsa_core::rng::chacha_stream;
use vsa_optim_rs::{DeterministicPhaseConfig, GroupRule};

use crate::compare::TARGET_SLACK;
use crate::harness::{Method, RunResult, RunSettings, run};
use crate::models::{CHARLM_BLOCK_PREFIX, CharLmConfig};
use crate::tasks::CharLmTask;

/// Backward FLOPs per token of the char-LM: each residual block (both branches) and the rest
/// (final norm, head; the embedding's scatter is not counted). A backward pass costs about
/// twice the forward matrix products (gradients for the weights and for the inputs); a
/// detached block costs nothing.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BackwardFlops {
    /// One block: `2 × (24·d² + 4·t·d)` (qkv, proj, fc1, fc2, and the two attention products
    /// at the mean causal length `t/2`, counted at full `t` for simplicity).
    pub block: f64,
    /// The head: `2 × 2·d·V`.
    pub head: f64,
}

impl BackwardFlops {
    /// The counts for `cfg`.
    pub fn of(cfg: &CharLmConfig) -> Self {
        let (d, t, v) = (cfg.d_model as f64, cfg.context as f64, cfg.vocab as f64);
        Self {
            block: 2.0 * (24.0 * d * d + 4.0 * t * d),
            head: 2.0 * 2.0 * d * v,
        }
    }

    /// Backward FLOPs of one step (per token of one micro-batch) given which groups were
    /// computed: `groups` are the run's group names, `flags` that step's flags; the head
    /// counts whenever any backward ran.
    pub fn step(&self, groups: &[String], flags: &[bool], blocks: usize) -> f64 {
        if groups.len() == 1 {
            // One group: all or nothing.
            return if flags.first().copied().unwrap_or(true) {
                self.head + self.block * blocks as f64
            } else {
                0.0
            };
        }
        let any = flags.iter().any(|&f| f);
        let computed = groups
            .iter()
            .zip(flags)
            .filter(|(g, f)| **f && g.starts_with(CHARLM_BLOCK_PREFIX))
            .count();
        if any {
            self.head + self.block * computed as f64
        } else {
            0.0
        }
    }

    /// A run's backward FLOPs as a fraction of computing everything at every step.
    pub fn fraction(&self, r: &RunResult, blocks: usize) -> f64 {
        let full = (self.head + self.block * blocks as f64) * r.block_schedule.len() as f64;
        let done: f64 = r
            .block_schedule
            .iter()
            .map(|f| self.step(&r.groups, f, blocks))
            .sum();
        if full > 0.0 { done / full } else { 1.0 }
    }
}

/// The fraction of block-steps skipped in `r` (blocks only, the remainder group excluded).
/// A one-group run (plain, whole-model prediction) skips every block on the steps without
/// a backward pass.
pub fn block_skip_rate(r: &RunResult) -> f64 {
    if r.groups.len() == 1 {
        let steps = r.block_schedule.len().max(1) as f64;
        let skipped = r
            .block_schedule
            .iter()
            .filter(|f| !f.iter().any(|&x| x))
            .count();
        return skipped as f64 / steps;
    }
    let mut total = 0usize;
    let mut skipped = 0usize;
    for flags in &r.block_schedule {
        for (g, f) in r.groups.iter().zip(flags) {
            if g.starts_with(CHARLM_BLOCK_PREFIX) {
                total += 1;
                skipped += usize::from(!*f);
            }
        }
    }
    if total == 0 {
        0.0
    } else {
        skipped as f64 / total as f64
    }
}

/// A DropBP-style random schedule: each block is skipped at step `t` with probability
/// `rate`, drawn from the counter-based stream keyed by `(seed, t)`; the remainder group
/// `""` is always computed. Deterministic.
pub fn random_block_schedule(
    groups: &[String],
    steps: usize,
    rate: f64,
    seed: u64,
) -> Vec<Vec<bool>> {
    use rand_core::RngCore;
    (0..steps)
        .map(|t| {
            let mut rng = chacha_stream(seed ^ 0xd20b_b10c, t as u64);
            groups
                .iter()
                .map(|g| {
                    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                    !g.starts_with(CHARLM_BLOCK_PREFIX) || u >= rate
                })
                .collect()
        })
        .collect()
}

/// One method of the comparison.
#[derive(Debug, Clone)]
pub enum BlockMethod {
    /// A backward pass every step.
    Plain,
    /// The trainer with `config` (one group, or per-block groups).
    Trainer(Box<DeterministicPhaseConfig>),
    /// Zero gradient for the blocks skipped by the reference per-block run's schedule.
    DropSameSchedule,
    /// Zero gradient for blocks skipped at random at the reference run's skip rate.
    DropRandom,
    /// DropBP at a fixed rate: zero gradient for blocks skipped at random at this rate.
    DropRate(f64),
}

/// A labelled method.
#[derive(Debug, Clone)]
pub struct Labelled {
    /// Table label.
    pub label: String,
    /// The method.
    pub method: BlockMethod,
}

/// The per-block trainer configs: `base` with one group per block.
pub fn per_block(base: DeterministicPhaseConfig) -> DeterministicPhaseConfig {
    DeterministicPhaseConfig {
        groups: GroupRule::blocks(CHARLM_BLOCK_PREFIX),
        ..base
    }
}

/// The methods of the table, in order. The first per-block trainer is the reference whose
/// schedule and skip rate the DropBP controls replay.
pub fn methods() -> Vec<Labelled> {
    let l = |label: &str, method| Labelled {
        label: label.into(),
        method,
    };
    vec![
        l("plain AdamW", BlockMethod::Plain),
        l(
            "whole-model prediction (defaults)",
            BlockMethod::Trainer(Box::default()),
        ),
        l(
            PER_BLOCK,
            BlockMethod::Trainer(Box::new(per_block(DeterministicPhaseConfig::default()))),
        ),
        l(
            "DropBP control: same block schedule, zero gradient",
            BlockMethod::DropSameSchedule,
        ),
        l(
            "DropBP control: random blocks at the same rate, zero gradient",
            BlockMethod::DropRandom,
        ),
        l(
            "DropBP at rate 0.25: random blocks, zero gradient",
            BlockMethod::DropRate(0.25),
        ),
    ]
}

/// One regime of the comparison.
#[derive(Debug, Clone, Copy)]
pub struct Regime {
    /// Label.
    pub name: &'static str,
    /// Windows per micro-batch.
    pub batch: usize,
    /// Micro-batches per step.
    pub micro: usize,
}

/// The model used: the char-LM deepened to 4 blocks at d_model 64 (the CPU budget).
pub fn model_config() -> CharLmConfig {
    CharLmConfig {
        d_model: 64,
        heads: 4,
        layers: 4,
        ..CharLmConfig::default()
    }
}

/// One finished run with its accounting.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockRun {
    /// Method label.
    pub label: String,
    /// Seed.
    pub seed: u64,
    /// The run.
    pub result: RunResult,
    /// Backward FLOPs done as a fraction of plain training.
    pub flops_fraction: f64,
    /// Block-steps skipped.
    pub skip_rate: f64,
}

/// Runs every method at every learning rate of `lrs` for `seed`, in the order of
/// [`methods`] (the DropBP controls replay the reference per-block run at the same LR).
///
/// # Errors
/// Candle and trainer errors.
pub fn run_seed(
    task: &CharLmTask,
    lrs: &[f64],
    steps: usize,
    seed: u64,
    mut each: impl FnMut(&BlockRun),
) -> Result<Vec<BlockRun>> {
    let flops = BackwardFlops::of(task.config());
    let blocks = task.config().layers;
    let settings = |lr| RunSettings {
        steps,
        lr,
        seed,
        eval_every: (steps / 20).max(1),
    };
    let mut out = Vec::new();
    for &lr in lrs {
        let mut reference: Option<RunResult> = None;
        for m in methods() {
            let method = harness_method(&m.method, reference.as_ref(), steps, seed)?;
            let result = run(task, &method, &m.label, lr, settings(lr), |_| {})?;
            if reference.is_none() && result.groups.len() > 1 {
                reference = Some(result.clone());
            }
            let br = BlockRun {
                label: m.label.clone(),
                seed,
                flops_fraction: flops.fraction(&result, blocks),
                skip_rate: block_skip_rate(&result),
                result,
            };
            each(&br);
            out.push(br);
        }
    }
    Ok(out)
}

/// Re-times the tuned configuration of every method: `reps` more runs of each (method,
/// seed) at the learning rate [`summarise`] picked, interleaved (repetition, then seed, then
/// method, so that a slow spell of the machine spreads over all methods), and each saved
/// run's evaluation times replaced by the median over the saved run and its repetitions.
/// The runs are deterministic, so every repetition must end with the saved run's weights
/// (checked: an error otherwise); only the clock differs.
///
/// # Errors
/// Candle and trainer errors; a repetition whose weights differ from the saved run's.
pub fn retime(
    task: &CharLmTask,
    runs: &mut [BlockRun],
    seeds: &[u64],
    steps: usize,
    reps: usize,
    mut each: impl FnMut(&str, u64, usize, f64),
) -> Result<()> {
    let tuned: Vec<(String, f64)> = summarise(runs, seeds)
        .into_iter()
        .filter(|r| !r.label.starts_with("compute-matched"))
        .map(|r| (r.label, r.lr))
        .collect();
    let mut clocks: Vec<(usize, Vec<Vec<f64>>)> = Vec::new();
    for rep in 0..reps {
        for &seed in seeds {
            for (label, lr) in &tuned {
                let Some(idx) = runs
                    .iter()
                    .position(|r| &r.label == label && r.seed == seed && r.result.lr == *lr)
                else {
                    continue;
                };
                let method = method_of(runs, label, *lr, seed, steps)?;
                let settings = RunSettings {
                    steps,
                    lr: *lr,
                    seed,
                    eval_every: (steps / 20).max(1),
                };
                let again = run(task, &method, label, *lr, settings, |_| {})?;
                if again.weights_hash != runs[idx].result.weights_hash {
                    return Err(candle_core::Error::Msg(format!(
                        "{label}, seed {seed}: a repetition ended with other weights"
                    )));
                }
                each(label, seed, rep, again.secs);
                let secs: Vec<f64> = again.curve.iter().map(|p| p.secs).collect();
                match clocks.iter_mut().find(|(i, _)| *i == idx) {
                    Some((_, v)) => v.push(secs),
                    None => clocks.push((idx, vec![secs])),
                }
            }
        }
    }
    for (idx, mut times) in clocks {
        let r = &mut runs[idx].result;
        times.push(r.curve.iter().map(|p| p.secs).collect());
        for (k, p) in r.curve.iter_mut().enumerate() {
            let mut at: Vec<f64> = times.iter().filter_map(|t| t.get(k).copied()).collect();
            at.sort_by(f64::total_cmp);
            p.secs = at[at.len() / 2];
        }
        let mut total: Vec<f64> = times.iter().filter_map(|t| t.last().copied()).collect();
        total.sort_by(f64::total_cmp);
        r.secs = total[total.len() / 2];
    }
    Ok(())
}

/// The harness method that reproduces the saved run `label` at `lr` for `seed` (the DropBP
/// controls replay the saved per-block run at the same rate and seed).
fn method_of(runs: &[BlockRun], label: &str, lr: f64, seed: u64, steps: usize) -> Result<Method> {
    let m = methods()
        .into_iter()
        .find(|m| m.label == label)
        .ok_or_else(|| candle_core::Error::Msg(format!("no method `{label}`")))?;
    let reference = runs
        .iter()
        .find(|r| r.label == PER_BLOCK && r.seed == seed && r.result.lr == lr)
        .map(|r| &r.result);
    harness_method(&m.method, reference, steps, seed)
}

/// The harness method of `method`. The DropBP rows need `reference`, the per-block run at
/// the same learning rate and seed: its groups, and its schedule or skip rate.
fn harness_method(
    method: &BlockMethod,
    reference: Option<&RunResult>,
    steps: usize,
    seed: u64,
) -> Result<Method> {
    let plan = match method {
        BlockMethod::Plain => return Ok(Method::Plain),
        BlockMethod::Trainer(c) => return Ok(Method::Trainer(c.clone())),
        BlockMethod::DropSameSchedule | BlockMethod::DropRandom | BlockMethod::DropRate(_) => {
            reference.ok_or_else(|| {
                candle_core::Error::Msg(
                    "a DropBP row needs the per-block run at its learning rate and seed".into(),
                )
            })?
        }
    };
    let schedule = match method {
        BlockMethod::DropRandom => {
            random_block_schedule(&plan.groups, steps, block_skip_rate(plan), seed)
        }
        BlockMethod::DropRate(rate) => random_block_schedule(&plan.groups, steps, *rate, seed),
        _ => plan.block_schedule.clone(),
    };
    Ok(Method::ZeroOnBlockSchedule {
        groups: plan.groups.clone().into(),
        plan: schedule,
    })
}

/// A table row: one method at its tuned learning rate, over seeds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Method label.
    pub label: String,
    /// The learning rate with the lowest mean final validation loss.
    pub lr: f64,
    /// Mean final validation loss at that rate.
    pub loss: f64,
    /// Smallest and largest final loss over the seeds.
    pub loss_range: (f64, f64),
    /// `loss / tuned plain loss − 1`.
    pub loss_vs_plain: f64,
    /// Mean backward FLOPs fraction.
    pub flops_fraction: f64,
    /// Mean block skip rate.
    pub skip_rate: f64,
    /// Mean training seconds.
    pub secs: f64,
    /// Per seed: the tuned plain run's sustained time to target divided by this method's
    /// (`> 1`: sooner); `None` where it never holds the target.
    pub speedups: Vec<Option<f64>>,
    /// Mean trainer statistics line of the first seed, where a trainer ran.
    pub stats: Option<String>,
}

/// Tunes each method's learning rate (lowest mean final loss) and summarises it against the
/// tuned plain run. The target is the tuned plain run's final loss × (1 + 1%), per seed.
pub fn summarise(runs: &[BlockRun], seeds: &[u64]) -> Vec<Summary> {
    let labels: Vec<String> = methods().into_iter().map(|m| m.label).collect();
    let mut lrs: Vec<f64> = runs.iter().map(|r| r.result.lr).collect();
    lrs.sort_by(f64::total_cmp);
    lrs.dedup();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let pick = |label: &str| -> Option<(f64, Vec<&BlockRun>)> {
        lrs.iter()
            .map(|&lr| {
                let rs: Vec<&BlockRun> = runs
                    .iter()
                    .filter(|r| r.label == label && r.result.lr == lr)
                    .collect();
                (lr, rs)
            })
            .filter(|(_, rs)| !rs.is_empty())
            .min_by(|a, b| {
                let la: Vec<f64> = a.1.iter().map(|r| r.result.last().loss).collect();
                let lb: Vec<f64> = b.1.iter().map(|r| r.result.last().loss).collect();
                mean(&la).total_cmp(&mean(&lb))
            })
    };
    let Some((_, plain)) = pick(&labels[0]) else {
        return Vec::new();
    };
    let plain_loss = mean(
        &plain
            .iter()
            .map(|r| r.result.last().loss)
            .collect::<Vec<_>>(),
    );
    let mut rows: Vec<Summary> = labels
        .iter()
        .filter_map(|label| {
            let (lr, rs) = pick(label)?;
            let losses: Vec<f64> = rs.iter().map(|r| r.result.last().loss).collect();
            let loss = mean(&losses);
            let speedups = seeds
                .iter()
                .map(|&s| {
                    let p = plain.iter().find(|r| r.seed == s)?;
                    let me = rs.iter().find(|r| r.seed == s)?;
                    let target = p.result.last().loss * (1.0 + TARGET_SLACK);
                    Some(p.result.sustained_hit(target)? / me.result.sustained_hit(target)?)
                })
                .collect();
            Some(Summary {
                label: label.clone(),
                lr,
                loss,
                loss_range: (
                    losses.iter().copied().fold(f64::INFINITY, f64::min),
                    losses.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                ),
                loss_vs_plain: loss / plain_loss - 1.0,
                flops_fraction: mean(&rs.iter().map(|r| r.flops_fraction).collect::<Vec<_>>()),
                skip_rate: mean(&rs.iter().map(|r| r.skip_rate).collect::<Vec<_>>()),
                secs: mean(&rs.iter().map(|r| r.result.secs).collect::<Vec<_>>()),
                speedups,
                stats: rs.first().and_then(|r| r.result.stats.clone()),
            })
        })
        .collect();
    if let Some(row) =
        pick(PER_BLOCK).and_then(|(_, pb)| compute_matched(&plain, &pb, seeds, plain_loss))
    {
        rows.insert(1, row);
    }
    rows
}

/// The label of the per-block method whose backward FLOPs the compute-matched row matches.
pub const PER_BLOCK: &str = "per-block prediction (defaults)";

/// The compute-matched control: each seed's tuned plain run stopped at the per-block run's
/// backward FLOPs (its last evaluation at or before step `fraction × steps`; a prefix of the
/// same run, so its time to target is the plain run's when the prefix holds the target, and
/// "never" otherwise).
fn compute_matched(
    plain: &[&BlockRun],
    per_block: &[&BlockRun],
    seeds: &[u64],
    plain_loss: f64,
) -> Option<Summary> {
    let mut picked = Vec::new();
    for &s in seeds {
        let (Some(p), Some(me)) = (
            plain.iter().find(|r| r.seed == s),
            per_block.iter().find(|r| r.seed == s),
        ) else {
            continue;
        };
        let budget = me.flops_fraction * p.result.schedule.len() as f64;
        let prefix: Vec<_> = p
            .result
            .curve
            .iter()
            .copied()
            .filter(|c| c.step as f64 <= budget + 1e-9)
            .collect();
        let last = *prefix.last()?;
        let target = p.result.last().loss * (1.0 + TARGET_SLACK);
        let mut hit = None;
        for c in &prefix {
            if c.loss <= target {
                hit.get_or_insert(c.secs);
            } else {
                hit = None;
            }
        }
        let speedup = match (p.result.sustained_hit(target), hit) {
            (Some(full), Some(h)) => Some(full / h),
            _ => None,
        };
        picked.push((last, me.flops_fraction, speedup, p.result.lr));
    }
    let first = picked.first()?;
    let n = picked.len() as f64;
    let losses: Vec<f64> = picked.iter().map(|x| x.0.loss).collect();
    let loss = losses.iter().sum::<f64>() / n;
    Some(Summary {
        label: "compute-matched plain (tuned plain stopped at the per-block run's backward FLOPs)"
            .into(),
        lr: first.3,
        loss,
        loss_range: (
            losses.iter().copied().fold(f64::INFINITY, f64::min),
            losses.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        ),
        loss_vs_plain: loss / plain_loss - 1.0,
        flops_fraction: picked.iter().map(|x| x.1).sum::<f64>() / n,
        skip_rate: 0.0,
        secs: picked.iter().map(|x| x.0.secs).sum::<f64>() / n,
        speedups: picked.iter().map(|x| x.2).collect(),
        stats: None,
    })
}

/// The summary as a markdown table.
pub fn markdown(regime: &Regime, rows: &[Summary], steps: usize, seeds: usize) -> String {
    let mut s = format!(
        "### {} (batch {}×{} windows, {steps} steps, {seeds} seeds)\n\n| method | tuned lr | \
         final val loss (mean; range) | vs tuned plain | backward FLOPs | blocks skipped | \
         train s (mean) | time to target vs tuned plain, per seed |\n|---|---|---|---|---|---|---|---|\n",
        regime.name, regime.batch, regime.micro
    );
    for r in rows {
        let sp: Vec<String> = r
            .speedups
            .iter()
            .map(|x| x.map_or("never".into(), |v| format!("{v:.2}×")))
            .collect();
        s.push_str(&format!(
            "| {} | {:.1e} | {:.4} ({:.4}–{:.4}) | {:+.2}% | {:.1}% | {:.1}% | {:.1} | {} |\n",
            r.label,
            r.lr,
            r.loss,
            r.loss_range.0,
            r.loss_range.1,
            100.0 * r.loss_vs_plain,
            100.0 * r.flops_fraction,
            100.0 * r.skip_rate,
            r.secs,
            sp.join(" / ")
        ));
    }
    s
}

/// Builds the task of `regime` (validation on `eval_windows` fixed windows).
///
/// # Errors
/// Data or candle errors.
pub fn task(regime: &Regime, eval_windows: usize) -> Result<CharLmTask> {
    CharLmTask::new(
        model_config(),
        regime.batch,
        regime.micro,
        eval_windows,
        &candle_core::Device::Cpu,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups() -> Vec<String> {
        ["", "block0", "block1"].map(String::from).to_vec()
    }

    #[test]
    fn flops_count_computed_blocks_and_the_head() {
        let f = BackwardFlops::of(&model_config());
        let g = groups();
        assert_eq!(f.step(&g, &[true, true, true], 2), f.head + 2.0 * f.block);
        assert_eq!(f.step(&g, &[false, true, false], 2), f.head + f.block);
        assert_eq!(f.step(&g, &[true, false, false], 2), f.head);
        assert_eq!(f.step(&g, &[false, false, false], 2), 0.0);
        assert_eq!(f.step(&g[..1], &[true], 4), f.head + 4.0 * f.block);
    }

    #[test]
    fn random_schedule_has_the_rate_and_keeps_the_remainder() {
        let g = groups();
        let s = random_block_schedule(&g, 4000, 0.3, 7);
        assert!(
            s.iter().all(|f| f[0]),
            "the remainder group is always computed"
        );
        let skipped = s.iter().flat_map(|f| &f[1..]).filter(|&&x| !x).count() as f64;
        // 8000 Bernoulli(0.3) draws: sd = sqrt(8000·0.21) ≈ 41; allow 5 sd.
        assert!((skipped - 2400.0).abs() < 5.0 * 41.0, "{skipped}");
        assert_eq!(s, random_block_schedule(&g, 4000, 0.3, 7));
        assert_ne!(s, random_block_schedule(&g, 4000, 0.3, 8));
    }
}
