//! `phase-scheduler`: the tensor-free state machine that decides, step by step, whether a
//! training step runs a backward pass or applies a predicted gradient.
//!
//! It knows nothing of tensors: the trainer (`DeterministicPhaseTrainer` in the `vsa-optim-rs`
//! facade) asks it for the next phase, reports the
//! loss and, at backward steps, the measured quality of its prediction. The scheduler is
//! deterministic (no randomness at all) and serialisable with serde, so a checkpointed
//! scheduler resumes identically. It depends on no predictor: the trainer owns the
//! predictor's settings and measures the quality it reports here.
//!
//! # Quick start
//!
//! ```
//! use phase_scheduler::{DeterministicPhase, ScheduleConfig, PhaseScheduler};
//!
//! // The seed's defaults, without adaptation: the schedule follows the closed formula.
//! let config = ScheduleConfig { adaptive_phases: false, ..Default::default() };
//! let mut scheduler = PhaseScheduler::new(config)?;
//! for _ in 0..100 {
//!     let info = scheduler.begin_step()?;
//!     if info.needs_backward {
//!         // forward + backward; record the true gradient; optionally, at Correct steps,
//!         // scheduler.report_quality(QualityReport { cosine, relative_error })
//!         scheduler.end_step(1.0)?;
//!     } else {
//!         assert_eq!(info.phase, DeterministicPhase::Predict);
//!         // apply the predicted gradient; the forward pass may be skipped
//!         scheduler.end_step_without_loss()?;
//!     }
//! }
//! let stats = scheduler.stats();
//! assert_eq!((stats.full_steps, stats.predicted_steps), (40, 60));
//! assert_eq!(stats.to_string(), "100 steps (40 full, 60 predicted): 2.50x fewer backward passes");
//! # Ok::<(), phase_scheduler::Error>(())
//! ```
//!
//! # The schedule
//!
//! `W = warmup_steps` Warmup steps, then cycles of a Full phase of `F` steps followed by a
//! predict block. A block holds `P` **predicted** steps; a Correct step (a backward pass)
//! follows every `C = correct_every` predicted steps, and one more closes a shorter final run,
//! so a block has `P + ceil(P / C)` steps. **Correct steps do not count inside `P`.** With the
//! defaults (`W 10, F 5, P 20, C 5`) a cycle is `FFFFF PPPPPC PPPPPC PPPPPC PPPPPC`, 29 steps of
//! which 9 run backward.
//!
//! Without adaptation, after `N > W` steps, with `K = ceil(P/C)`, `L = F + P + K`,
//! `q = (N − W) / L`, `r = (N − W) mod L`, `s = max(0, r − F)`:
//!
//! | counter | formula |
//! | --- | --- |
//! | warmup | `W` (or `N` when `N <= W`) |
//! | Full-phase | `q·F + min(r, F)` |
//! | Correct | `q·K + floor(s / (C+1))` |
//! | predicted | `q·P + s − floor(s / (C+1))` |
//! | backward (`full_steps`) | warmup + Full-phase + Correct |
//!
//! 100 steps with the defaults: `90 = 3·29 + 3`, so 10 warmup + 18 Full + 12 Correct = **40
//! backward passes** and **60 predicted** steps: **2.50× fewer backward passes**. (The seed's
//! README claimed "10 warmup + ~25 full + ~65 predict ≈ 35 backward passes, 2.9×"; that count
//! left out the Correct steps.) See
//! [`ScheduleConfig::counts_without_adaptation`].
//!
//! # Transitions
//!
//! `F` and `P` below are the *effective* lengths (`stats().effective_full_steps`,
//! `effective_predict_steps`), equal to the config's without adaptation; `m =
//! min_predict_steps`; "block complete" means its `P` predicted steps and its last Correct step
//! are done. Rules are tried top to bottom after each step; the first that applies wins. Rules
//! marked *(adaptive)* apply only when `adaptive_phases` is true.
//!
//! | # | step just ended | condition | next step | side effect |
//! | --- | --- | --- | --- | --- |
//! | T0 | (start) | `W > 0` / `W = 0` | Warmup / Full(`F`) | |
//! | T1 | Warmup | non-finite loss | Warmup while warmup lasts, else Full(`F`) | counted |
//! | T2 | Full (backed off) | non-finite loss | Full, back-off interval restarted | counted |
//! | T3 | Full | non-finite loss | new Full(`F`) | counted; *(adaptive)* `P ← max(m, P/2)`, `F ← min(max_full, 2F)` |
//! | T4 | Predict/Correct of a probe | non-finite loss | Full(next back-off interval) | failed probe, interval doubles |
//! | T5 | Predict/Correct | non-finite loss | new Full(`F`) | block aborted; *(adaptive)* as T3 |
//! | T6 | Correct of a probe | bad report *(adaptive)* | Full(next back-off interval) | failed probe, interval doubles |
//! | T7 | Correct | bad report with `cosine < backoff_cosine`, or `P = m` *(adaptive)* | Full(back-off interval) | backed off, `P ← m` |
//! | T8 | Correct | bad report *(adaptive)* | new Full(`F`) | block aborted, `P ← max(m, P/2)` |
//! | T9 | Predict/Correct of a probe | loss spike *(adaptive)* | Full(next back-off interval) | failed probe |
//! | T10 | Predict/Correct | loss spike *(adaptive)* | new Full(`F`) | block aborted, `P ← max(m, P/2)`, `F ← min(max_full, 2F)` |
//! | T11 | Warmup | `W` warmup steps done | Full(`F`) | |
//! | T12 | Full | phase done, backed off | Predict (probe block of `m`) | probe counted |
//! | T13 | Full | phase done | Predict (block of `P`) | |
//! | T14 | Predict | run of `C` done, or the block's `P` done | Correct | |
//! | T15 | Correct of a probe | block complete | Full(`F`) | back-off ends (`P` stays `m`) |
//! | T16 | Correct | block complete | Full(`F`) | *(adaptive)* growth rule below |
//! | T17 | any | otherwise | same phase, next position | |
//!
//! A *bad* report has `cosine < bad_cosine` or `relative_error > bad_relative_error`; a *good*
//! one `cosine >= good_cosine` and `relative_error <= good_relative_error`. A *loss spike* is a
//! finite loss `l` with `l − ema > loss_increase_threshold · |ema|`, where `ema` is the loss
//! average before `l`, counted only on steps after at least one predicted update of the
//! current block. **Growth rule (T16):** if the block had quality reports and all were good,
//! or it had none and the loss average fell over `steady_blocks` consecutive blocks, then
//! `P ← min(max_predict, P + predict_increase)` and `F ← max(min_full, F − 1)`. The back-off
//! interval starts at `backoff_initial_interval`, doubles on every back-off and failed probe up
//! to `backoff_max_interval`, and returns to its start after `backoff_reset_blocks` completed
//! blocks in a row without a bad report.
//!
//! The full derivations, the adaptation bounds and the worst-case cost of probing are in
//! `docs/phase-scheduler.md`.
//!
//! # Errors and non-finite losses
//!
//! Misuse (ending a step that was not begun, beginning one twice, a quality report outside a
//! step, at a Predict step or twice, a NaN quality, `end_step_without_loss` on a backward step)
//! returns a typed [`Error`] and leaves the scheduler unchanged. A non-finite **loss** is not
//! an error: `end_step` records it (`stats().non_finite_losses`), keeps it out of the loss
//! average, switches to Full at once (T1–T5), and returns `Ok`; the next
//! [`StepInfo::full_reason`] is `Some(FullReason::NonFiniteLoss)`.
//!
//! # Per-group phases
//!
//! [`GroupedScheduler`] runs one scheduler per parameter group (a [`GroupRule`], by default
//! the whole model; [`GroupRule::Blocks`] makes one group per residual block), so that a block
//! whose predictions are poor goes back to Full on its own while the others keep predicting.
//! With one group it behaves exactly like [`PhaseScheduler`].
//!
//! # Checkpoints
//!
//! [`PhaseScheduler`] implements `Serialize`/`Deserialize`; deserialising validates the config
//! and every invariant ([`Error::InvalidState`] otherwise). JSON checkpoints need
//! `serde_json`'s `float_roundtrip` feature to restore the loss and quality averages bit for
//! bit (without it the resume property test fails); binary formats are exact.
#![deny(missing_docs)]

mod checkpoint;
mod config;
mod error;
mod groups;
mod phase;
mod scheduler;
mod stats;
mod step;
mod transitions;

pub use checkpoint::STATE_VERSION;
pub use config::{
    COSINE_SLACK, MAX_PHASE_LEN, ScheduleConfig, ScheduleConfigBuilder, ScheduleCounts,
};
pub use error::{Error, Result};
pub use groups::{GroupRule, GroupedScheduler, ParamGroups, REMAINDER_GROUP};
pub use phase::{DeterministicPhase, FullReason};
pub use scheduler::PhaseScheduler;
pub use stats::{PhaseStats, QualityClass, QualityStats};
pub use step::{MAX_RELATIVE_ERROR, QualityReport, StepInfo};
