//! The facade's data-parallel pieces without MPI (a world of one rank): `DataParallel` on
//! `GradStore`s and the trainer's host-gradient entry points. The VSA codec's staging,
//! rollback and checkpoint state are tested in `vsa-optim-mpi` (`tests/codec/vsa.rs`); the
//! multi-rank behaviour under `mpirun` in `benches/tests/mpi.rs`.
#![cfg(feature = "distributed")]

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use vsa_optim_rs::distributed::{DataParallel, ExchangeMode, SingleProcess};
use vsa_optim_rs::grad_sketch::test_support::{wave_config, wave_grads};
use vsa_optim_rs::{DeterministicPhaseConfig, DeterministicPhaseTrainer, Error, VSAConfig};

fn shapes() -> Vec<(String, Vec<usize>)> {
    vec![("b".into(), vec![40]), ("w".into(), vec![30, 50])]
}

#[test]
fn data_parallel_refuses_nan_and_keeps_its_state() {
    for mode in [ExchangeMode::F32, ExchangeMode::Ternary, ExchangeMode::Vsa] {
        let mut dp =
            DataParallel::new(SingleProcess::new(), mode, &shapes(), 5, wave_config(), 0).unwrap();
        let mut twin =
            DataParallel::new(SingleProcess::new(), mode, &shapes(), 5, wave_config(), 0).unwrap();
        let (a, _) = dp.average_host(0, &wave_grads(0), 1.0).unwrap();
        let a = a.to_vec();
        let (b, _) = twin.average_host(0, &wave_grads(0), 1.0).unwrap();
        assert!(a == b, "{mode}: twins differ");
        let mut bad = wave_grads(1);
        bad[1][7] = f32::INFINITY;
        let e = dp.average_host(1, &bad, 1.0).unwrap_err();
        assert!(matches!(e, Error::Exchange(_)), "{mode}: {e}");
        assert!(e.to_string().contains("non-finite"), "{e}");
        assert!(dp.average_host(1, &wave_grads(1), f32::NAN).is_err());
        assert_eq!(dp.exchange().stats().failed, 2);
        // The failed calls changed nothing: the next step matches the twin's.
        let (x, lx) = dp.average_host(1, &wave_grads(1), 2.0).unwrap();
        let x = x.to_vec();
        let (y, ly) = twin.average_host(1, &wave_grads(1), 2.0).unwrap();
        assert!(
            x.as_slice() == y && lx == ly,
            "{mode}: the failed calls changed the state"
        );
        if mode == ExchangeMode::F32 {
            assert!(x == wave_grads(1), "one rank, f32: the mean is the input");
        }
    }
}

#[test]
fn data_parallel_on_grad_stores_and_bad_layouts() {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let w = vb.get((3, 4), "w").unwrap();
    let b = vb.get(3, "b").unwrap();
    let x = Tensor::ones((2, 4), DType::F32, &Device::Cpu).unwrap();
    let loss = x
        .matmul(&w.t().unwrap())
        .unwrap()
        .broadcast_add(&b)
        .unwrap()
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap();
    let g = loss.backward().unwrap();
    let shapes = vec![("b".to_string(), vec![3]), ("w".to_string(), vec![3, 4])];
    let mut dp = DataParallel::new(
        SingleProcess::new(),
        ExchangeMode::F32,
        &shapes,
        0,
        VSAConfig::default(),
        0,
    )
    .unwrap();
    let (avg, l) = dp.average_grad_store(0, &vm, &g, 0.5).unwrap();
    assert_eq!(l, 0.5);
    for v in [&w, &b] {
        let a = avg.get(v).unwrap().flatten_all().unwrap().to_vec1::<f32>();
        let e = g.get(v).unwrap().flatten_all().unwrap().to_vec1::<f32>();
        assert_eq!(a.unwrap(), e.unwrap());
    }
    // A VarMap with other variables is refused before anything is exchanged.
    let other = VarMap::new();
    let _ = VarBuilder::from_varmap(&other, DType::F32, &Device::Cpu)
        .get(3, "b")
        .unwrap();
    assert!(dp.average_grad_store(1, &other, &g, 0.5).is_err());
    assert_eq!(dp.exchange().stats().exchanges, 1);
    // Bad configurations at construction.
    assert!(
        DataParallel::new(
            SingleProcess::new(),
            ExchangeMode::F32,
            &[],
            0,
            VSAConfig::default(),
            0
        )
        .is_err()
    );
    let bad_vsa = VSAConfig {
        compression_ratio: 0.0,
        ..VSAConfig::default()
    };
    assert!(
        DataParallel::new(
            SingleProcess::new(),
            ExchangeMode::Vsa,
            &shapes,
            0,
            bad_vsa,
            0
        )
        .is_err()
    );
}

#[test]
fn trainer_host_entry_points_validate_before_recording() {
    let shapes = shapes();
    let config = DeterministicPhaseConfig {
        warmup_steps: 1,
        ..DeterministicPhaseConfig::alternating()
    };
    let mut t = DeterministicPhaseTrainer::new(&shapes, config.clone(), &Device::Cpu).unwrap();
    let digest0 = t.state_digest().unwrap();
    let info = t.begin_step().unwrap();
    assert!(info.needs_backward);
    assert!(t.predicted_host().is_err());
    let mut bad = wave_grads(0);
    bad[0][0] = f32::NAN;
    assert!(matches!(
        t.record_full_host(&bad),
        Err(Error::NonFiniteGradient { .. })
    ));
    assert!(matches!(
        t.record_full_host(&wave_grads(0)[..1]),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut short = wave_grads(0);
    short[1].pop();
    assert!(matches!(
        t.record_full_host(&short),
        Err(Error::ShapeMismatch { .. })
    ));
    t.record_full_host(&wave_grads(0)).unwrap();
    assert!(
        t.record_full_host(&wave_grads(0)).is_err(),
        "twice in a step"
    );
    t.end_step(1.0).unwrap();
    assert_ne!(t.state_digest().unwrap(), digest0);
    // Walk to a Predict step: its host prediction has the parameters' layout, and recording
    // true gradients there is refused.
    let mut seen_predict = false;
    for s in 1..10u64 {
        let info = t.begin_step().unwrap();
        if info.needs_backward {
            t.record_full_host(&wave_grads(s)).unwrap();
            t.end_step(1.0).unwrap();
        } else {
            assert!(t.record_full_host(&wave_grads(s)).is_err());
            let p = t.predicted_host().unwrap();
            assert_eq!(p.len(), 2);
            assert_eq!((p[0].len(), p[1].len()), (40, 1500));
            t.end_step_without_loss().unwrap();
            seen_predict = true;
        }
    }
    assert!(seen_predict);
    // Two trainers fed the same gradients have the same digest; a different one differs.
    let mut u = DeterministicPhaseTrainer::new(&shapes, config, &Device::Cpu).unwrap();
    assert_eq!(u.state_digest().unwrap(), digest0);
    u.begin_step().unwrap();
    assert!(u.state_digest().is_err(), "digest during a step is refused");
}
