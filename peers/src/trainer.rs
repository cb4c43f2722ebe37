//! The trainers side by side: per-call cost and bytes held on a 1M-element parameter, and
//! accuracy on the digits MLP.

use std::fmt::Write;
use std::time::Instant;

use crate::api::{Ours, Phase, PhaseApi, Plain, Seed, Shapes};
use crate::inputs::{Digits, gaussian};
use crate::{ALLOC, Result, fmt_bytes, median};

/// Elements of the one parameter of the overhead run.
const N: usize = 1 << 20;
/// Steps of the overhead run.
const STEPS: usize = 60;
/// Seed of every input here.
const SEED: u64 = 12;

/// The calls one trainer made, timed, and the bytes it held at the end.
struct Overhead {
    record_ms: Vec<f64>,
    predict_ms: Vec<f64>,
    held: usize,
    backward: usize,
    predicted: usize,
}

/// Drives a trainer through `STEPS` steps of a drifting gradient
/// `g_t = base + 0.02·t·drift + 0.05·noise_t` (one `[1024, 1024]` parameter) and times each
/// `record` of a Full or Correct step and each `predict`. Building the crate's tensors from
/// `Vec<f32>` is outside the timed calls. `held`: live heap bytes after the run minus before
/// the trainer was built (the gradients are dropped by the loop, so what a trainer keeps of
/// them counts as its own).
fn overhead<T: PhaseApi>(make: impl FnOnce() -> Result<T>) -> Result<Overhead> {
    let base = gaussian(SEED, 1, N, 1.0);
    let drift = gaussian(SEED, 2, N, 1.0);
    let before = ALLOC.current_usage();
    let mut t = make()?;
    let mut out = Overhead {
        record_ms: Vec::new(),
        predict_ms: Vec::new(),
        held: 0,
        backward: 0,
        predicted: 0,
    };
    for step in 0..STEPS {
        let phase = t.begin()?;
        let loss = 1.0 / (1.0 + step as f32);
        if phase == Phase::Predict {
            let t0 = Instant::now();
            let p = t.predict()?;
            out.predict_ms.push(t0.elapsed().as_secs_f64() * 1e3);
            drop(p);
            t.end(t.wants_predicted_loss().then_some(loss))?;
            out.predicted += 1;
        } else {
            let noise = gaussian(SEED, 100 + step as u64, N, 0.05);
            let k = 0.02 * step as f32;
            let g: Vec<f32> = (0..N).map(|i| base[i] + k * drift[i] + noise[i]).collect();
            let grads = t.grads(&[g])?;
            drop(noise);
            let t0 = Instant::now();
            t.record(&grads)?;
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            drop(grads);
            if matches!(phase, Phase::Full | Phase::Correct) {
                out.record_ms.push(ms);
            }
            t.end(Some(loss))?;
            out.backward += 1;
        }
    }
    out.held = ALLOC.current_usage().saturating_sub(before);
    Ok(out)
}

/// The label of [`wls_config`].
const WLS_LABEL: &str = "`LinearWls`, `Window(8)`";

/// Ours with 0.1.1's predictor model: WLS baseline + velocity over a window of 8 gradients
/// (0.1.1's `history_window` default), on the default schedule.
fn wls_config() -> ours::DeterministicPhaseConfig {
    let window = seed::DeterministicPhaseConfig::default().history_window;
    ours::DeterministicPhaseConfig {
        predictor_model: ours::PredictorModel::LinearWls,
        history_window: window,
        history_mode: ours::HistoryMode::Window(window),
        ..Default::default()
    }
}

fn one_param() -> Shapes {
    vec![("w".to_string(), vec![1024, 1024])]
}

fn ms_cell(v: &[f64]) -> String {
    if v.is_empty() {
        return "— (no such call)".into();
    }
    let (lo, hi) = v
        .iter()
        .fold((f64::INFINITY, 0f64), |(a, b), &x| (a.min(x), b.max(x)));
    format!("{:.3} ({} calls, {lo:.3}–{hi:.3})", median(v), v.len())
}

/// The "Trainer" part of the section.
pub fn section(digits: &Digits, digits_steps: usize, lr: f32) -> Result<String> {
    let mut s = String::new();
    let (sc, oc) = (
        seed::DeterministicPhaseConfig::default(),
        ours::DeterministicPhaseConfig::default(),
    );
    let schedule = format!(
        "0.1.1: warmup {}, F{} P{} C{}, adaptive {}; ours: warmup {}, F{} P{} C{}, adaptive {}",
        sc.warmup_steps,
        sc.full_steps,
        sc.predict_steps,
        sc.correct_every,
        sc.adaptive_phases,
        oc.warmup_steps,
        oc.full_steps,
        oc.predict_steps,
        oc.correct_every,
        oc.adaptive_phases
    );
    let window = sc.history_window;
    eprintln!("peers: trainer overhead, vsa-optim-rs 0.1.1");
    let seed_o = overhead(|| Seed::new(&one_param(), seed::DeterministicPhaseConfig::default()))?;
    eprintln!("peers: trainer overhead, ours");
    let ours_o = overhead(|| Ours::new(&one_param(), ours::DeterministicPhaseConfig::default()))?;
    let ours_wls_o = overhead(|| Ours::new(&one_param(), wls_config()))?;
    writeln!(
        s,
        "### Trainer: cost per call and bytes held\n\n\
         One parameter of {N} elements (`[1024, 1024]`), {STEPS} steps of a drifting gradient \
         `g_t = base + 0.02·t·drift + 0.05·noise_t` (seeded Gaussians), each crate's default \
         config ({schedule}). *record*: \
         `record_full_gradients` in Full and Correct steps; *predict*: \
         `get_predicted_gradients` in Predict steps; ms per call per {N} elements, median \
         (calls, min–max). Building each crate's tensors from `Vec<f32>` is not timed. \
         *Bytes held*: live heap bytes after the run minus before the trainer was built, \
         counted by a global allocator (the loop drops its gradients, so what a trainer keeps \
         of them is its own). Ours by default reuses the last true gradient \
         (`PredictorModel::LastGradient`); the `LinearWls` row fits 0.1.1's model, \
         baseline + velocity by weighted least squares over a window of {window} gradients.\n\n\
         | crate | config | record ms | predict ms | backward / predicted steps | bytes held | bytes per element |\n\
         |---|---|---|---|---|---|---|"
    )?;
    for (name, config, o) in [
        ("vsa-optim-rs 0.1.1", "default", &seed_o),
        ("ours", "default", &ours_o),
        ("ours", WLS_LABEL, &ours_wls_o),
    ] {
        writeln!(
            s,
            "| {name} | {config} | {} | {} | {} / {} | {} | {:.1} |",
            ms_cell(&o.record_ms),
            ms_cell(&o.predict_ms),
            o.backward,
            o.predicted,
            fmt_bytes(o.held),
            o.held as f64 / N as f64
        )?;
    }

    writeln!(
        s,
        "\n### Trainer: digits MLP accuracy\n\n\
         The digits MLP (64-128-10, ReLU; {params} parameters), forward and backward written out \
         on `f32` slices in `peers/src/mlp.rs`, so every row runs the same arithmetic: the \
         same seeded initialisation, the full {train}-row training split every step, Adam at \
         lr {lr}, {digits_steps} steps; the trainer only decides which steps run backward and \
         supplies the predicted gradients of the others. Accuracy and loss on the {test} test \
         rows after the last step. 0.1.1's `end_step` needs a loss on predicted steps too, so \
         its loop runs a forward pass there (no backward); ours calls \
         `end_step_without_loss`.\n\n\
         | trainer | config | backward / predicted steps | test accuracy % | test loss | loop s (one run) |\n\
         |---|---|---|---|---|---|",
        params = crate::mlp::shapes()
            .iter()
            .map(|(_, sh)| sh.iter().product::<usize>())
            .sum::<usize>(),
        train = Digits::TRAIN_ROWS,
        test = digits.rows() - Digits::TRAIN_ROWS,
    )?;
    let shapes = crate::mlp::shapes();
    // The same loop, data, learning rate and seed for every trainer.
    macro_rules! train {
        ($api:expr) => {
            crate::mlp::train(&mut $api, digits, digits_steps, lr, SEED)?
        };
    }
    let runs: Vec<(&str, &str, crate::mlp::DigitsRun)> = vec![
        ("none (plain Adam)", "every step backward", train!(Plain)),
        (
            "vsa-optim-rs 0.1.1",
            "default",
            train!(Seed::new(
                &shapes,
                seed::DeterministicPhaseConfig::default()
            )?),
        ),
        (
            "ours",
            "default (0.1.1's schedule)",
            train!(Ours::new(
                &shapes,
                ours::DeterministicPhaseConfig::default()
            )?),
        ),
        ("ours", WLS_LABEL, train!(Ours::new(&shapes, wls_config())?)),
        (
            "ours",
            "`alternating()`",
            train!(Ours::new(
                &shapes,
                ours::DeterministicPhaseConfig::alternating()
            )?),
        ),
    ];
    for (name, config, r) in &runs {
        writeln!(
            s,
            "| {name} | {config} | {} / {} | {:.2} | {:.4} | {:.2} |",
            r.backward, r.predicted, r.test_acc, r.test_loss, r.secs
        )?;
    }
    Ok(s)
}
