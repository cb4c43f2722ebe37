//! The checkpoint pattern of both compressors: `state()` → `from_state` (a new compressor)
//! or `restore` (into an existing one) gives the same next message, bit for bit; a state
//! for other parameters or another config, or with malformed buffers, is
//! [`Error::InvalidState`] and changes nothing.

use grad_sketch::{
    Compressor, CompressorConfig, CompressorState, Error, Method, SketchCompressor, SketchConfig,
    SketchState,
};

use grad_sketch::test_support::{config, grads, shapes};

fn sketch_config(ef: bool) -> SketchConfig {
    SketchConfig {
        error_feedback: ef,
        ..config(0.1)
    }
}

#[test]
fn sketch_state_resumes_bit_for_bit() {
    for ef in [true, false] {
        let mut a = SketchCompressor::new(&shapes(), sketch_config(ef)).unwrap();
        for k in 0..3 {
            a.compress(&grads(k)).unwrap();
        }
        let state = a.state();
        assert_eq!(state.step, 3);
        assert_eq!(state.names, ["layer.bias", "layer.weight", "out.weight"]);
        let want: Vec<usize> = if ef { vec![50, 2000, 231] } else { vec![0; 3] };
        assert_eq!(
            state.residuals.iter().map(Vec::len).collect::<Vec<_>>(),
            want
        );
        let mut b = SketchCompressor::from_state(state.clone()).unwrap();
        let mut c = SketchCompressor::new(&shapes(), sketch_config(ef)).unwrap();
        c.restore(&state).unwrap();
        let next = a.compress(&grads(3)).unwrap();
        assert_eq!(b.compress(&grads(3)).unwrap(), next);
        assert_eq!(c.compress(&grads(3)).unwrap(), next);
        assert_eq!(b.state(), a.state());
        assert_eq!(c.state(), a.state());
    }
}

#[test]
fn sketch_state_mismatches_are_errors_that_change_nothing() {
    let mut a = SketchCompressor::new(&shapes(), sketch_config(true)).unwrap();
    a.compress(&grads(1)).unwrap();
    let good = a.state();
    let mut b = SketchCompressor::new(&shapes(), sketch_config(true)).unwrap();
    b.compress(&grads(2)).unwrap();
    let before = b.state();
    let mut bad: Vec<(&str, SketchState)> = Vec::new();
    let mut s = good.clone();
    s.config.seed += 1;
    bad.push(("seed", s));
    let mut s = good.clone();
    s.config.error_feedback = false;
    bad.push(("error feedback", s));
    let mut s = good.clone();
    s.shapes[2] = vec![231];
    bad.push(("shape", s));
    let mut s = good.clone();
    s.names.swap(0, 1);
    bad.push(("order", s));
    let mut s = good.clone();
    s.names.pop();
    bad.push(("one name short", s));
    let mut s = good.clone();
    s.residuals[1].pop();
    bad.push(("residual length", s));
    let mut s = good.clone();
    s.residuals.pop();
    bad.push(("residual count", s));
    let mut s = good.clone();
    s.residuals[2][7] = f32::NAN;
    bad.push(("NaN", s));
    for (what, s) in bad {
        assert!(
            matches!(b.restore(&s), Err(Error::InvalidState(_))),
            "{what}"
        );
        assert_eq!(b.state(), before, "{what}");
    }
    // Residuals where error feedback is off.
    let mut off = SketchCompressor::new(&shapes(), sketch_config(false)).unwrap();
    let mut s = off.state();
    s.residuals[0] = vec![0.0; 50];
    assert!(matches!(off.restore(&s), Err(Error::InvalidState(_))));
    assert!(matches!(
        SketchCompressor::from_state(s),
        Err(Error::InvalidState(_))
    ));
    // from_state validates the config and the parameters like `new`.
    let mut s = good;
    s.config.dimension = 0;
    assert!(matches!(
        SketchCompressor::from_state(s),
        Err(Error::InvalidConfig { .. })
    ));
}

fn method_config(method: Method) -> CompressorConfig {
    CompressorConfig {
        method,
        seed: 3,
        error_feedback: true,
        dense_warmup_steps: 1,
    }
}

#[test]
fn method_state_resumes_bit_for_bit() {
    for method in [
        Method::PowerSgd { rank: 2 },
        Method::TopK { k_fraction: 0.05 },
        Method::CountSketch {
            rows: 3,
            ratio: 0.2,
            k_fraction: 0.1,
        },
        Method::RandomK { ratio: 0.1 },
    ] {
        let mut a = Compressor::new(&shapes(), method_config(method)).unwrap();
        for k in 0..3 {
            a.compress(&grads(k)).unwrap();
        }
        let state = a.state();
        let mut b = Compressor::from_state(state.clone()).unwrap();
        let mut c = Compressor::new(&shapes(), method_config(method)).unwrap();
        c.restore(&state).unwrap();
        let next = a.compress(&grads(3)).unwrap();
        assert_eq!(b.compress(&grads(3)).unwrap(), next, "{method:?}");
        assert_eq!(c.compress(&grads(3)).unwrap(), next, "{method:?}");
        assert_eq!(b.state(), a.state());
        // copy_state_into reuses a state of any previous shape.
        let mut reused = CompressorState::default();
        a.copy_state_into(&mut reused);
        assert_eq!(reused, a.state());
    }
}

#[test]
fn method_state_mismatches_are_errors_that_change_nothing() {
    let power = method_config(Method::PowerSgd { rank: 2 });
    let mut a = Compressor::new(&shapes(), power).unwrap();
    a.compress(&grads(1)).unwrap();
    a.compress(&grads(2)).unwrap();
    let good = a.state();
    let mut b = Compressor::new(&shapes(), power).unwrap();
    b.compress(&grads(5)).unwrap();
    let before = b.state();
    let mut bad: Vec<(&str, CompressorState)> = Vec::new();
    let mut s = good.clone();
    s.config.method = Method::PowerSgd { rank: 3 };
    bad.push(("rank", s));
    let mut s = good.clone();
    s.config.dense_warmup_steps = 0;
    bad.push(("warm-up", s));
    let mut s = good.clone();
    s.shapes[1] = vec![2000];
    bad.push(("shape", s));
    let mut s = good.clone();
    s.warm_starts[1].pop();
    bad.push(("warm start length", s));
    let mut s = good.clone();
    s.warm_starts[1][0] = f32::INFINITY;
    bad.push(("warm start Inf", s));
    let mut s = good.clone();
    s.residuals[0][3] = f32::NAN;
    bad.push(("residual NaN", s));
    for (what, s) in bad {
        assert!(
            matches!(b.restore(&s), Err(Error::InvalidState(_))),
            "{what}"
        );
        assert_eq!(b.state(), before, "{what}");
    }
    let mut s = good;
    s.shapes.pop();
    assert!(matches!(
        Compressor::from_state(s),
        Err(Error::InvalidState(_))
    ));
}
