//! Per-group phases in the trainer: one group is today's trainer, a group with poor
//! predictions goes back to Full on its own, mixed steps take the computed groups' true
//! gradients and predict the others, resume mid-run is bit-identical, the CPU fast path equals
//! the tensor path, and misuse is a typed error that changes nothing.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{Device, Tensor, Var};
use vsa_optim_rs::{
    BackwardPlan, DeterministicPhase, DeterministicPhaseConfig, DeterministicPhaseTrainer, Error,
    GroupRule,
};

fn shapes() -> Vec<(String, Vec<usize>)> {
    vec![
        ("head.w".into(), vec![5, 4]),
        ("layers.0.w".into(), vec![64]),
        ("layers.1.b".into(), vec![3]),
        ("layers.1.w".into(), vec![8, 16]),
    ]
}

fn noise(p: u64, t: u64, i: u64) -> f32 {
    let h = vsa_optim_rs::vsa_core::rng::splitmix64(p << 48 ^ t << 24 ^ i ^ 0x9e37);
    (h >> 40) as f32 / (1u32 << 24) as f32 - 0.5
}

/// Step `t`'s gradients: `layers.1.*` are pure noise (unpredictable), the others a fixed
/// pattern that drifts slowly (well predicted by the last gradient).
fn grads(t: u64) -> HashMap<String, Tensor> {
    shapes()
        .into_iter()
        .enumerate()
        .map(|(p, (name, shape))| {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n as u64)
                .map(|i| {
                    if name.starts_with("layers.1.") {
                        noise(p as u64, t, i)
                    } else {
                        ((i % 7) as f32 - 3.0) * (1.0 + 0.01 * t as f32) + 0.01 * noise(9, t, i)
                    }
                })
                .collect();
            let t = Tensor::from_vec(v, shape, &Device::Cpu).unwrap();
            (name, t)
        })
        .collect()
}

fn config(groups: GroupRule) -> DeterministicPhaseConfig {
    DeterministicPhaseConfig {
        warmup_steps: 2,
        full_steps: 2,
        predict_steps: 4,
        correct_every: 2,
        groups,
        ..DeterministicPhaseConfig::default()
    }
}

fn trainer(groups: GroupRule) -> DeterministicPhaseTrainer {
    DeterministicPhaseTrainer::new(&shapes(), config(groups), &Device::Cpu).unwrap()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

/// What one step applied: per parameter (sorted), the bits of the gradient used.
type Applied = Vec<Vec<u32>>;

/// Runs one step: true gradients for the computed groups (only theirs are passed), the
/// predictions for the others. Returns what was applied.
fn step(tr: &mut DeterministicPhaseTrainer, t: u64) -> Applied {
    let info = tr.begin_step().unwrap();
    let plan = tr.backward_plan();
    let all = grads(t);
    let mut used: HashMap<String, Tensor> = if info.needs_backward {
        let computed: HashMap<String, Tensor> = all
            .into_iter()
            .filter(|(n, _)| plan.computes(tr.group_of(n).unwrap()).unwrap())
            .collect();
        tr.record_full_gradients(&computed).unwrap();
        computed
    } else {
        HashMap::new()
    };
    tr.fill_predicted_gradients(&mut used).unwrap();
    if info.needs_backward {
        tr.end_step(1.0).unwrap();
    } else {
        tr.end_step_without_loss().unwrap();
    }
    let mut names: Vec<&String> = used.keys().collect();
    names.sort();
    assert_eq!(names.len(), 4, "every parameter gets a gradient");
    names.iter().map(|n| bits(&used[*n])).collect()
}

#[test]
fn one_block_group_is_the_whole_model_trainer() {
    // Every parameter in block 0: one group, named "layers.0".
    let one = vec![
        ("layers.0.a".to_string(), vec![30]),
        ("layers.0.b".into(), vec![4, 5]),
    ];
    let grads1 = |t: u64| -> HashMap<String, Tensor> {
        one.iter()
            .enumerate()
            .map(|(p, (n, s))| {
                let k: usize = s.iter().product();
                let v = (0..k as u64).map(|i| {
                    noise(p as u64, 0, i) * (1.0 + 0.01 * t as f32) + 0.001 * noise(7, t, i)
                });
                (
                    n.clone(),
                    Tensor::from_iter(v, &Device::Cpu)
                        .unwrap()
                        .reshape(s.clone())
                        .unwrap(),
                )
            })
            .collect()
    };
    let mut whole =
        DeterministicPhaseTrainer::new(&one, config(GroupRule::Whole), &Device::Cpu).unwrap();
    let mut block =
        DeterministicPhaseTrainer::new(&one, config(GroupRule::blocks("layers.")), &Device::Cpu)
            .unwrap();
    assert_eq!(block.groups(), ["layers.0".to_string()]);
    for t in 0..60 {
        let (a, b) = (whole.begin_step().unwrap(), block.begin_step().unwrap());
        assert_eq!(a, b);
        if a.needs_backward {
            whole.record_full_gradients(&grads1(t)).unwrap();
            block.record_full_gradients(&grads1(t)).unwrap();
            whole.end_step(1.0).unwrap();
            block.end_step(1.0).unwrap();
        } else {
            let (pa, pb) = (
                whole.get_predicted_gradients().unwrap(),
                block.get_predicted_gradients().unwrap(),
            );
            for (n, t) in &pa {
                assert_eq!(bits(t), bits(&pb[n]));
            }
            whole.end_step_without_loss().unwrap();
            block.end_step_without_loss().unwrap();
        }
        assert_eq!(whole.get_stats(), block.get_stats());
    }
    assert!(whole.get_stats().predicted_steps > 10);
}

#[test]
fn a_group_with_poor_predictions_goes_back_to_full_alone() {
    let mut tr = trainer(GroupRule::blocks("layers."));
    assert_eq!(tr.groups(), ["", "layers.0", "layers.1"].map(String::from));
    assert_eq!(tr.group_of("head.w"), Some(""));
    assert_eq!(tr.group_of("layers.1.b"), Some("layers.1"));
    let mut mixed = 0;
    for t in 0..150 {
        let plan = tr.peek();
        let before = tr.backward_plan();
        let applied = step(&mut tr, t);
        if plan.needs_backward && !before.computes_all() {
            mixed += 1;
            // A predicted group's gradient is its last true gradient (LastGradient model):
            // never the step's own true gradient.
            if !before.computes("layers.0").unwrap() {
                assert_ne!(applied[1], bits(&grads(t)["layers.0.w"]));
            }
        }
    }
    let stats = tr.group_stats();
    let (rest, good, bad) = (&stats[0], &stats[1], &stats[2]);
    assert_eq!(bad.params, ["layers.1.b", "layers.1.w"].map(String::from));
    assert_eq!(bad.elements, 3 + 128);
    assert!(bad.phases.backed_off, "the noisy block must back off");
    assert!(!good.phases.backed_off && !rest.phases.backed_off);
    assert!(
        good.phases.predicted_steps > 4 * bad.phases.predicted_steps,
        "good block predicted {}, noisy block {}",
        good.phases.predicted_steps,
        bad.phases.predicted_steps
    );
    assert!(bad.last_quality.unwrap().0 < 0.5);
    assert!(good.last_quality.unwrap().0 > 0.9);
    assert!(mixed > 40, "{mixed} mixed steps");
    // Counting: a step is a backward step when any group computed; the noisy block computes
    // nearly always, so few steps skip everything, but much of the other blocks' work is saved.
    let s = tr.get_stats();
    assert_eq!(s.total_steps, 150);
    assert_eq!(s.full_steps + s.predicted_steps, 150);
    let work = tr.backward_work_fraction();
    let expected = stats
        .iter()
        .map(|g| (g.elements * g.phases.full_steps as usize) as f64)
        .sum::<f64>()
        / (150.0 * (20 + 64 + 3 + 128) as f64);
    assert_eq!(work, expected);
    assert!(work < 0.85, "backward work fraction {work}");
}

#[test]
fn cpu_fast_path_equals_tensor_path_with_groups() {
    let mut fast = trainer(GroupRule::blocks("layers."));
    let mut slow = trainer(GroupRule::blocks("layers."));
    slow.set_force_tensor_path(true);
    for t in 0..80 {
        assert_eq!(step(&mut fast, t), step(&mut slow, t), "step {t}");
    }
    // The quality sums are added in another order on the two paths (equal to rounding), so
    // compare the schedules, not the quality averages.
    for (a, b) in fast.group_stats().iter().zip(slow.group_stats()) {
        assert_eq!(
            (
                a.phases.full_steps,
                a.phases.predicted_steps,
                a.phases.backoffs
            ),
            (
                b.phases.full_steps,
                b.phases.predicted_steps,
                b.phases.backoffs
            )
        );
    }
    assert!(fast.group_stats()[1].phases.predicted_steps > 20);
}

#[test]
fn resume_mid_run_is_bit_identical() {
    let mut reference = trainer(GroupRule::blocks("layers."));
    let mut applied = Vec::new();
    for t in 0..70 {
        applied.push(step(&mut reference, t));
    }
    for cut in [5, 9, 23, 41] {
        let mut tr = trainer(GroupRule::blocks("layers."));
        for t in 0..cut {
            step(&mut tr, t);
        }
        let bytes = tr.state_bytes().unwrap();
        let mut resumed = trainer(GroupRule::blocks("layers."));
        resumed.load_bytes(&bytes).unwrap();
        assert_eq!(resumed.state_bytes().unwrap(), bytes);
        for t in cut..70 {
            assert_eq!(
                step(&mut resumed, t),
                applied[t as usize],
                "cut {cut}, step {t}"
            );
        }
        assert_eq!(
            resumed.state_bytes().unwrap(),
            reference.state_bytes().unwrap()
        );
    }
    // A grouped checkpoint does not load into a one-group trainer, nor the reverse.
    let bytes = reference.state_bytes().unwrap();
    let mut whole = trainer(GroupRule::Whole);
    let before = whole.state_bytes().unwrap();
    assert!(matches!(
        whole.load_bytes(&bytes),
        Err(Error::Checkpoint(_))
    ));
    assert_eq!(whole.state_bytes().unwrap(), before);
}

#[test]
fn state_from_state_and_restore_follow_the_checkpoint_pattern() {
    let mut reference = trainer(GroupRule::blocks("layers."));
    for t in 0..17 {
        step(&mut reference, t);
    }
    let state = reference.state().unwrap();
    assert_eq!(
        state.as_bytes(),
        reference.state_bytes().unwrap().as_slice()
    );
    // `from_state` builds a new trainer (parameters and config from the snapshot) ...
    let mut built = DeterministicPhaseTrainer::from_state(&state, &Device::Cpu).unwrap();
    assert_eq!(built.groups(), reference.groups());
    // ... `restore` writes into an existing one; both continue bit for bit.
    let mut restored = trainer(GroupRule::blocks("layers."));
    restored.restore(&state).unwrap();
    for t in 17..40 {
        let want = step(&mut reference, t);
        assert_eq!(step(&mut built, t), want, "from_state, step {t}");
        assert_eq!(step(&mut restored, t), want, "restore, step {t}");
    }
    // The snapshot round-trips through serde and through its bytes.
    let json = serde_json::to_string(&state).unwrap();
    let back: vsa_optim_rs::TrainerState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, state);
    assert_eq!(
        vsa_optim_rs::TrainerState::from_bytes(state.as_bytes().to_vec()).unwrap(),
        state
    );
    // Bytes that are not a trainer checkpoint are refused up front.
    assert!(matches!(
        vsa_optim_rs::TrainerState::from_bytes(b"{\"version\": 2}".to_vec()),
        Err(Error::Checkpoint(_))
    ));
    let cut = state.as_bytes()[..state.as_bytes().len() / 2].to_vec();
    assert!(matches!(
        vsa_optim_rs::TrainerState::from_bytes(cut),
        Err(Error::Checkpoint(_))
    ));
    // A snapshot of another grouping does not restore, and changes nothing.
    let mut whole = trainer(GroupRule::Whole);
    step(&mut whole, 0);
    let before = whole.state_bytes().unwrap();
    assert!(matches!(whole.restore(&state), Err(Error::Checkpoint(_))));
    assert_eq!(whole.state_bytes().unwrap(), before);
}

#[test]
fn misuse_is_a_typed_error_and_changes_nothing() {
    let mut tr = trainer(GroupRule::blocks("layers."));
    // Run until a mixed step: some group computes, some predicts.
    let mut t = 0;
    loop {
        let info = tr.begin_step().unwrap();
        let plan = tr.backward_plan();
        if info.needs_backward && !plan.computes_all() {
            break;
        }
        let mut g = grads(t);
        if info.needs_backward {
            tr.record_full_gradients(&g).unwrap();
            tr.end_step(1.0).unwrap();
        } else {
            tr.fill_predicted_gradients(&mut g).unwrap();
            tr.end_step_without_loss().unwrap();
        }
        t += 1;
        assert!(t < 200, "no mixed step");
    }
    let plan = tr.backward_plan();
    let computed: Vec<String> = tr
        .groups()
        .iter()
        .filter(|g| plan.computes(g).unwrap())
        .cloned()
        .collect();
    let snapshot = |tr: &DeterministicPhaseTrainer| (tr.get_stats(), tr.transfers());
    let before = snapshot(&tr);
    // A missing gradient of a computed group.
    let mut g = grads(t);
    let dropped = g
        .keys()
        .find(|n| computed.iter().any(|c| tr.group_of(n) == Some(c)))
        .cloned()
        .unwrap();
    g.remove(&dropped);
    assert!(
        matches!(tr.record_full_gradients(&g), Err(Error::MissingParameter { name }) if name == dropped)
    );
    // The whole-model predicted API refuses a mixed step; so does ending it without a loss.
    assert!(matches!(
        tr.get_predicted_gradients(),
        Err(Error::InvalidState(_))
    ));
    assert!(tr.end_step_without_loss().is_err());
    assert!(tr.end_step(1.0).is_err(), "gradients not recorded yet");
    // A wrong shape for a predicting group's parameter is still refused.
    let mut g = grads(t);
    let predicted = tr
        .params()
        .specs()
        .iter()
        .map(|s| s.name.clone())
        .find(|n| !computed.iter().any(|c| tr.group_of(n) == Some(c)))
        .unwrap();
    g.insert(
        predicted,
        Tensor::zeros(7, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    assert!(matches!(
        tr.record_full_gradients(&g),
        Err(Error::ShapeMismatch { .. })
    ));
    assert_eq!(snapshot(&tr), before);
    // After the errors the step completes normally.
    tr.record_full_gradients(&grads(t)).unwrap();
    tr.end_step(1.0).unwrap();
    assert_eq!(tr.get_stats().total_steps, before.0.total_steps + 1);
}

#[test]
fn bad_group_rules_are_typed_errors() {
    for rule in [
        GroupRule::blocks("blocks."),
        GroupRule::blocks(""),
        GroupRule::Prefixes(vec!["nothing.".into()]),
        GroupRule::Prefixes(vec!["layers.".into(), "layers.".into()]),
    ] {
        let r = DeterministicPhaseTrainer::new(&shapes(), config(rule.clone()), &Device::Cpu);
        match r {
            Err(Error::Scheduler(vsa_optim_rs::phase_scheduler::Error::InvalidConfig {
                parameter,
                ..
            })) => assert_eq!(parameter, "groups"),
            other => panic!("{rule:?}: {other:?}"),
        }
    }
    // Rules that cannot be right for any model fail `validate` already.
    assert!(config(GroupRule::blocks("")).validate().is_err());
    assert!(config(GroupRule::blocks("layers.")).validate().is_ok());
}

/// The residual-detach helper: a detached branch gets no gradient, the path through `x`
/// still carries it to the input.
#[test]
fn backward_plan_detaches_the_branches_of_predicting_groups() {
    let x = Var::from_slice(&[1.0f32, 2.0, 3.0], 3, &Device::Cpu).unwrap();
    let w = Var::from_slice(&[0.5f32, -1.0, 2.0], 3, &Device::Cpu).unwrap();
    let names: Arc<[String]> = vec!["layers.0".to_string(), "layers.1".to_string()].into();
    let forward = |plan: &BackwardPlan| {
        let branch = (x.as_tensor() * w.as_tensor()).unwrap();
        let h = (x.as_tensor() + plan.branch("layers.1", &branch).unwrap()).unwrap();
        h.sqr().unwrap().sum_all().unwrap().backward().unwrap()
    };
    let computed = BackwardPlan::new(names.clone(), vec![true, true]).unwrap();
    let skipped = BackwardPlan::new(names.clone(), vec![true, false]).unwrap();
    let g = forward(&computed);
    assert!(g.get(w.as_tensor()).is_some());
    let g = forward(&skipped);
    assert!(
        g.get(w.as_tensor()).is_none(),
        "a detached branch gets no gradient"
    );
    // d/dx of Σ (x + stop(x·w))² = 2·(x + x·w).
    let gx = g.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(gx, vec![3.0, 0.0, 18.0]);
    assert_eq!(skipped.skipped(), 1);
    assert!(!skipped.computes_all());
    assert!(matches!(
        skipped.computes("layers.2"),
        Err(Error::UnknownGroup { .. })
    ));
    assert!(BackwardPlan::all().computes("anything").unwrap());
    assert!(BackwardPlan::new(names, vec![true]).is_err());
    // The trainer's plan: between steps it describes the next one; Warmup computes all.
    let tr = trainer(GroupRule::blocks("layers."));
    assert!(tr.backward_plan().computes_all());
    assert_eq!(tr.peek().phase, DeterministicPhase::Warmup);
}
