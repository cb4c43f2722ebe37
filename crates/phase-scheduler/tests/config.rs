//! Config validation: every field has a typed error naming it.

use phase_scheduler::{Error, PhaseScheduler, ScheduleConfig as Cfg};

fn rejected(cfg: Cfg) -> &'static str {
    let e1 = cfg.validate().unwrap_err();
    let e2 = PhaseScheduler::new(cfg).unwrap_err();
    assert_eq!(e1, e2);
    let Error::InvalidConfig { parameter, .. } = e1 else {
        panic!("expected InvalidConfig, got {e1:?}");
    };
    parameter
}

#[test]
fn every_invalid_field_is_named() {
    let d = Cfg::default;
    let cases: Vec<(Cfg, &str)> = vec![
        (
            Cfg {
                full_steps: 0,
                ..d()
            },
            "full_steps",
        ),
        (
            Cfg {
                predict_steps: 0,
                ..d()
            },
            "predict_steps",
        ),
        (
            Cfg {
                correct_every: 0,
                ..d()
            },
            "correct_every",
        ),
        (
            Cfg {
                warmup_steps: usize::MAX,
                ..d()
            },
            "warmup_steps",
        ),
        (
            Cfg {
                loss_increase_threshold: 0.0,
                ..d()
            },
            "loss_increase_threshold",
        ),
        (
            Cfg {
                loss_increase_threshold: f32::NAN,
                ..d()
            },
            "loss_increase_threshold",
        ),
        (
            Cfg {
                min_predict_steps: 0,
                ..d()
            },
            "min_predict_steps",
        ),
        (
            Cfg {
                max_predict_steps: 0,
                ..d()
            },
            "max_predict_steps",
        ),
        (
            Cfg {
                max_predict_steps: 10,
                ..d()
            },
            "predict_steps",
        ),
        (
            Cfg {
                min_predict_steps: 21,
                max_predict_steps: 30,
                ..d()
            },
            "predict_steps",
        ),
        (
            Cfg {
                predict_increase: 0,
                ..d()
            },
            "predict_increase",
        ),
        (
            Cfg {
                min_full_steps: 0,
                ..d()
            },
            "min_full_steps",
        ),
        (
            Cfg {
                max_full_steps: 4,
                ..d()
            },
            "full_steps",
        ),
        (
            Cfg {
                min_full_steps: 6,
                max_full_steps: 4,
                ..d()
            },
            "max_full_steps",
        ),
        (
            Cfg {
                good_cosine: 1.5,
                ..d()
            },
            "good_cosine",
        ),
        (
            Cfg {
                bad_cosine: 0.95,
                ..d()
            },
            "bad_cosine",
        ),
        (
            Cfg {
                backoff_cosine: 0.6,
                ..d()
            },
            "backoff_cosine",
        ),
        (
            Cfg {
                backoff_cosine: -2.0,
                ..d()
            },
            "backoff_cosine",
        ),
        (
            Cfg {
                good_relative_error: -1.0,
                ..d()
            },
            "good_relative_error",
        ),
        (
            Cfg {
                bad_relative_error: 0.4,
                ..d()
            },
            "bad_relative_error",
        ),
        (
            Cfg {
                quality_ema_decay: 1.0,
                ..d()
            },
            "quality_ema_decay",
        ),
        (
            Cfg {
                loss_ema_decay: f32::NAN,
                ..d()
            },
            "loss_ema_decay",
        ),
        (
            Cfg {
                steady_blocks: 0,
                ..d()
            },
            "steady_blocks",
        ),
        (
            Cfg {
                backoff_initial_interval: 0,
                ..d()
            },
            "backoff_initial_interval",
        ),
        (
            Cfg {
                backoff_max_interval: 31,
                ..d()
            },
            "backoff_max_interval",
        ),
        (
            Cfg {
                backoff_reset_blocks: 0,
                ..d()
            },
            "backoff_reset_blocks",
        ),
    ];
    for (cfg, field) in cases {
        assert_eq!(rejected(cfg), field);
    }
}

#[test]
fn message_names_parameter_expected_and_actual() {
    let e = Cfg {
        correct_every: 0,
        ..Default::default()
    }
    .validate()
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid config: `correct_every` must be in [1, 4294967295], got 0"
    );
}

#[test]
fn builder_validates() {
    let cfg = Cfg::builder()
        .warmup_steps(0)
        .full_steps(5)
        .predict_steps(5)
        .correct_every(1)
        .build()
        .unwrap();
    assert_eq!(
        (cfg.warmup_steps, cfg.predict_steps, cfg.correct_every),
        (0, 5, 1)
    );
    let err = Cfg::builder().correct_every(0).build().unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidConfig {
            parameter: "correct_every",
            ..
        }
    ));
}

#[test]
fn config_serde_round_trip_and_defaults() {
    let cfg = Cfg::builder().predict_steps(7).build().unwrap();
    let json = serde_json::to_string(&cfg).unwrap();
    let back: Cfg = serde_json::from_str(&json).unwrap();
    assert_eq!(back, cfg);
    // Missing fields take their defaults; unknown fields are refused.
    let partial: Cfg = serde_json::from_str(r#"{"predict_steps": 9}"#).unwrap();
    assert_eq!(
        partial,
        Cfg {
            predict_steps: 9,
            ..Default::default()
        }
    );
    assert!(serde_json::from_str::<Cfg>(r#"{"predict_step": 9}"#).is_err());
}
