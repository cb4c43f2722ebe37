//! End to end on the real data: a shortened digits comparison in both regimes, and a few
//! dozen char-LM steps with the trainer.

use candle_core::Device;
use vsa_optim_bench::compare::{TrainerSpec, compare};
use vsa_optim_bench::harness::{Method, RunSettings, run};
use vsa_optim_bench::models::CharLmConfig;
use vsa_optim_bench::tasks::{CharLmTask, DigitsTask};
use vsa_optim_rs::DeterministicPhaseConfig;

fn defaults() -> Vec<TrainerSpec> {
    vec![TrainerSpec {
        label: "defaults".into(),
        config: DeterministicPhaseConfig::default(),
        lr_mult: 1.0,
    }]
}

/// Minibatch regime: the trainer must back off (prediction quality is poor) and stay within
/// the accuracy bound of the baseline.
#[test]
fn digits_minibatch_trainer_backs_off_and_keeps_accuracy() {
    let task = DigitsTask::new(Some(64), 1, &Device::Cpu).unwrap();
    let s = RunSettings {
        steps: 300,
        lr: 2e-3,
        seed: 0,
        eval_every: 20,
    };
    let cmp = compare(&task, s, &[1.0], &defaults(), |_, _| {}).unwrap();
    let base = &cmp.rows[0];
    let trainer = cmp
        .rows
        .iter()
        .find(|r| r.label == "trainer defaults")
        .unwrap();
    // Accuracy on 297 test rows moves in steps of 0.34 points; 2 points is ~6 rows.
    assert!(
        (trainer.metric - base.metric).abs() <= 2.0,
        "trainer {:.2}% vs baseline {:.2}%",
        trainer.metric,
        base.metric
    );
    // Backing off: at most 25% of steps predicted when prediction quality is poor.
    assert!(
        trainer.backward >= 225,
        "backward passes {}",
        trainer.backward
    );
    assert!(trainer.backward <= 300);
    // The backward count the table reports is the trainer's own full-step count.
    let stats = trainer.stats.as_ref().unwrap();
    assert!(
        stats.contains(&format!("({} full,", trainer.backward)),
        "{stats}"
    );
}

/// Large-batch regime (full batch): predicted steps happen and accuracy stays close.
#[test]
fn digits_full_batch_trainer_predicts_and_keeps_accuracy() {
    let task = DigitsTask::new(None, 1, &Device::Cpu).unwrap();
    let s = RunSettings {
        steps: 150,
        lr: 2e-3,
        seed: 1,
        eval_every: 10,
    };
    let base = run(&task, &Method::Plain, "plain", s.lr, s, |_| {}).unwrap();
    let cfg = DeterministicPhaseConfig::default();
    let tr = run(
        &task,
        &Method::Trainer(Box::new(cfg)),
        "trainer",
        s.lr,
        s,
        |_| {},
    )
    .unwrap();
    assert!(tr.backward < base.backward, "no backward pass was skipped");
    assert_eq!(base.backward, 150);
    assert!(
        (tr.last().metric - base.last().metric).abs() <= 3.0,
        "trainer {:.2}% vs baseline {:.2}%",
        tr.last().metric,
        base.last().metric
    );
    assert!(
        base.last().metric > 80.0,
        "baseline only {:.2}%",
        base.last().metric
    );
}

/// A few dozen char-LM steps with the trainer: the loss falls and predicted steps happen.
#[test]
fn charlm_trainer_runs_predicts_and_learns() {
    let cfg = CharLmConfig {
        d_model: 64,
        heads: 4,
        layers: 1,
        context: 32,
        ..CharLmConfig::default()
    };
    let task = CharLmTask::new(cfg, 8, 1, 8, &Device::Cpu).unwrap();
    let s = RunSettings {
        steps: 40,
        lr: 3e-3,
        seed: 0,
        eval_every: 40,
    };
    let trainer_cfg = DeterministicPhaseConfig {
        warmup_steps: 5,
        full_steps: 2,
        predict_steps: 4,
        correct_every: 2,
        ..DeterministicPhaseConfig::default()
    };
    let r = run(
        &task,
        &Method::Trainer(Box::new(trainer_cfg)),
        "t",
        s.lr,
        s,
        |_| {},
    )
    .unwrap();
    let first = r.curve.first().unwrap().loss;
    let last = r.last().loss;
    // Uniform guessing over 67 characters is ln 67 = 4.20 nats.
    assert!((first - 67f64.ln()).abs() < 0.5, "initial loss {first}");
    assert!(last < first - 0.5, "loss {first} -> {last}");
    assert!(r.backward < 40, "no predicted step: {:?}", r.stats);
}

/// Same seed, same everything: bit-identical weights.
#[test]
fn runs_are_reproducible() {
    let task = DigitsTask::new(Some(64), 1, &Device::Cpu).unwrap();
    let s = RunSettings {
        steps: 40,
        lr: 1e-3,
        seed: 3,
        eval_every: 40,
    };
    let cfg = DeterministicPhaseConfig::default();
    let a = run(
        &task,
        &Method::Trainer(Box::new(cfg.clone())),
        "a",
        s.lr,
        s,
        |_| {},
    )
    .unwrap();
    let b = run(&task, &Method::Trainer(Box::new(cfg)), "b", s.lr, s, |_| {}).unwrap();
    assert_eq!(a.weights_hash, b.weights_hash);
    let c = run(
        &task,
        &Method::Plain,
        "c",
        s.lr,
        RunSettings { seed: 4, ..s },
        |_| {},
    )
    .unwrap();
    assert_ne!(a.weights_hash, c.weights_hash);
}
