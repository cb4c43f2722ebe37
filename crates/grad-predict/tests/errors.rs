//! Every bad input returns a typed error and leaves the state untouched.

use grad_predict::{
    Error, GradientPredictor, HistoryMode, PredictorConfig, PredictorModel, StatPrecision, quality,
};

fn snapshot(p: &GradientPredictor) -> (u64, Option<u64>, usize, Vec<f32>, bool, f32) {
    let last = p.last_step().unwrap();
    (
        p.samples(),
        p.last_step(),
        p.memory_bytes(),
        p.predict(last + 3).unwrap(),
        p.residual_active(),
        p.residual_ratio(),
    )
}

#[test]
fn bad_inputs_leave_state_untouched() {
    for precision in [StatPrecision::F32, StatPrecision::F16] {
        for mode in [HistoryMode::Streaming, HistoryMode::Window(3)] {
            let cfg = PredictorConfig {
                history: mode,
                precision,
                residual_threshold: 0.0,
                ..PredictorConfig::default()
            };
            let mut p = GradientPredictor::new(6, cfg).unwrap();
            assert_eq!(p.predict(0), Err(Error::NoSamples { step: 0 }));
            assert_eq!(
                p.record_correction(0, &[0.0; 6]),
                Err(Error::NoSamples { step: 0 })
            );
            assert_eq!(p.samples(), 0);
            p.record(10, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
            p.record(11, &[2.0, 2.0, 3.0, 4.0, 5.0, 7.0]).unwrap();
            p.record_correction(13, &[3.0, 2.0, 3.0, 4.0, 6.0, 8.0])
                .unwrap();
            let before = snapshot(&p);

            let good = [1.0f32; 6];
            assert_eq!(
                p.record(20, &good[..5]),
                Err(Error::LengthMismatch {
                    what: "grad",
                    expected: 6,
                    actual: 5
                })
            );
            let mut nan = good;
            nan[4] = f32::NAN;
            assert!(matches!(
                p.record(20, &nan),
                Err(Error::NonFinite { index: 4, .. })
            ));
            let mut inf = good;
            inf[1] = f32::NEG_INFINITY;
            assert!(matches!(
                p.record_correction(20, &inf),
                Err(Error::NonFinite { index: 1, value, .. }) if value == f32::NEG_INFINITY
            ));
            if precision == StatPrecision::F16 {
                let mut big = good;
                big[2] = 1e5;
                let r = p.record(20, &big);
                assert!(
                    matches!(
                        r,
                        Err(Error::OutOfRange {
                            index: 2,
                            limit: 65504.0,
                            ..
                        })
                    ),
                    "{r:?}"
                );
            }
            assert_eq!(
                p.record(13, &good),
                Err(Error::NonIncreasingStep { last: 13, step: 13 })
            );
            assert_eq!(
                p.record_correction(12, &good),
                Err(Error::NonIncreasingStep { last: 13, step: 12 })
            );
            assert_eq!(p.predict(12), Err(Error::StepInPast { last: 13, step: 12 }));
            let mut out = [0.0f32; 7];
            assert_eq!(
                p.predict_into(14, &mut out),
                Err(Error::LengthMismatch {
                    what: "out",
                    expected: 6,
                    actual: 7
                })
            );
            assert_eq!(snapshot(&p), before, "{mode:?} {precision:?}");
        }
    }
}

#[test]
fn step_errors_f32() {
    let mut p = GradientPredictor::new(2, PredictorConfig::default()).unwrap();
    p.record(5, &[1.0, 2.0]).unwrap();
    p.record(6, &[1.5, 2.0]).unwrap();
    let before = snapshot(&p);
    assert_eq!(
        p.record(6, &[0.0, 0.0]),
        Err(Error::NonIncreasingStep { last: 6, step: 6 })
    );
    assert_eq!(
        p.record(2, &[0.0, 0.0]),
        Err(Error::NonIncreasingStep { last: 6, step: 2 })
    );
    assert_eq!(snapshot(&p), before);
}

#[test]
fn config_errors() {
    let new = |f: &dyn Fn(&mut PredictorConfig)| {
        let mut c = PredictorConfig::default();
        f(&mut c);
        GradientPredictor::new(4, c).err()
    };
    for d in [0.0f32, -0.5, 1.0001, f32::NAN, f32::INFINITY] {
        let e = new(&|c| c.decay = d).unwrap();
        assert!(matches!(e, Error::InvalidDecay { .. }), "{d}: {e:?}");
        assert!(e.to_string().contains("decay"));
    }
    assert_eq!(
        new(&|c| c.history = HistoryMode::Window(0)),
        Some(Error::ZeroWindow)
    );
    for t in [-0.1f32, f32::NAN, f32::INFINITY] {
        let e = new(&|c| c.residual_threshold = t).unwrap();
        assert!(matches!(
            e,
            Error::InvalidParameter {
                parameter: "residual_threshold",
                ..
            }
        ));
    }
    for r in [0.0f32, 1.5, f32::NAN] {
        let e = new(&|c| c.residual_rate = r).unwrap();
        assert!(
            matches!(
                e,
                Error::InvalidParameter {
                    parameter: "residual_rate",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("residual_rate"));
    }
    assert!(new(&|c| c.decay = 1.0).is_none());
    assert!(new(&|c| c.model = PredictorModel::LastGradient).is_none());
    assert!(PredictorConfig::default().validate().is_ok());
}

#[test]
fn quality_length_mismatch() {
    assert_eq!(
        quality(&[1.0], &[1.0, 2.0]),
        Err(Error::LengthMismatch {
            what: "pred",
            expected: 2,
            actual: 1
        })
    );
}

#[cfg(feature = "ndarray")]
#[test]
fn ndarray_views() {
    use crate::common::config;
    use ndarray::Array2;
    let mut p = GradientPredictor::new(
        6,
        config(PredictorModel::LinearWls, HistoryMode::Streaming, 0.9),
    )
    .unwrap();
    let a = Array2::from_shape_vec((2, 3), vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    assert_eq!(
        p.record_array(0, a.t()),
        Err(Error::NotContiguous { what: "grad" })
    );
    assert_eq!(p.samples(), 0);
    p.record_array(0, a.view()).unwrap();
    let mut out = Array2::<f32>::zeros((2, 3));
    p.predict_into_array(1, out.view_mut()).unwrap();
    assert_eq!(out, a);
    let q = p.record_correction_array(1, a.view()).unwrap();
    assert_eq!(q.cosine, 1.0);
    assert_eq!(q.relative_error, 0.0);
}
