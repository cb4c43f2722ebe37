//! The sketch codecs (`VsaCodec`, `MethodCodec`): staging, rollback, checkpoint state,
//! decoding, `codec_for`.

use grad_sketch::{CompressorConfig, SketchConfig};

use crate::common::sines;
use vsa_optim_mpi::{
    Context, Error, ExchangeMode, GradientCodec, MethodCodec, VsaCodec, codec_for,
};

fn shapes() -> Vec<(String, Vec<usize>)> {
    vec![("w".into(), vec![30, 50]), ("b".into(), vec![40])]
}

/// Deterministic, non-trivial gradients for step `t` (sorted-name order: b, w).
fn grads(t: u64) -> Vec<Vec<f32>> {
    sines(&[40, 1500], t)
}

fn vsa_config() -> SketchConfig {
    SketchConfig {
        compression_ratio: 0.1,
        error_feedback: true,
        seed: 9,
        ..SketchConfig::default()
    }
}

fn encode(c: &mut VsaCodec, step: u64) -> Vec<u8> {
    let mut out = Vec::new();
    c.encode(Context { step, rank: 0 }, &grads(step), &mut out)
        .unwrap();
    out
}

#[test]
fn vsa_codec_rollback_restores_error_feedback_exactly() {
    let mut a = VsaCodec::new(&shapes(), vsa_config()).unwrap();
    let mut b = VsaCodec::new(&shapes(), vsa_config()).unwrap();
    for t in 0..3 {
        let x = encode(&mut a, t);
        a.commit();
        assert_eq!(x, encode(&mut b, t));
        b.commit();
    }
    // `a` stages step 3 and rolls it back; `b` never saw it. Both must now send the same.
    let staged = encode(&mut a, 3);
    a.rollback();
    assert_eq!(a.compressor().step(), 3);
    let (x, y) = (encode(&mut a, 3), encode(&mut b, 3));
    assert_eq!(x, y);
    assert_eq!(x, staged, "same input, same state: same bytes");
    // Without the rollback the residual would have moved on and the bytes would differ.
    let mut c = VsaCodec::new(&shapes(), vsa_config()).unwrap();
    for t in 0..4 {
        encode(&mut c, t);
        c.commit();
    }
    assert_ne!(encode(&mut c, 3), x);
}

#[test]
fn vsa_codec_bad_input_changes_nothing() {
    let mut a = VsaCodec::new(&shapes(), vsa_config()).unwrap();
    encode(&mut a, 0);
    a.commit();
    let before = a.state();
    let mut out = vec![9u8];
    let mut bad = grads(1);
    bad[1][3] = f32::NAN;
    assert!(matches!(
        a.encode(Context { step: 1, rank: 0 }, &bad, &mut out),
        Err(Error::Codec(_))
    ));
    assert!(
        a.encode(Context { step: 1, rank: 0 }, &grads(1)[..1], &mut out)
            .is_err()
    );
    assert_eq!(out, vec![9u8]);
    a.rollback(); // nothing was staged: a no-op
    assert_eq!(a.state(), before);
}

#[test]
fn vsa_codec_state_round_trip_resumes_bit_identically() {
    let mut a = VsaCodec::new(&shapes(), vsa_config()).unwrap();
    for t in 0..5 {
        encode(&mut a, t);
        a.commit();
    }
    let state = a.state();
    assert_eq!(state.len(), 8 + 4 * (40 + 1500));
    let mut b = VsaCodec::new(&shapes(), vsa_config()).unwrap();
    b.restore(&state).unwrap();
    for t in 5..8 {
        assert_eq!(encode(&mut a, t), encode(&mut b, t));
        a.commit();
        b.commit();
    }
    // Malformed states are refused (a typed error naming no rank) and leave the codec as
    // it was.
    let before = b.state();
    assert!(matches!(
        b.restore(&state[..state.len() - 1]),
        Err(Error::Codec(_))
    ));
    let mut nan = state.clone();
    nan[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
    assert!(b.restore(&nan).is_err());
    let mut late_nan = state.clone();
    let at = state.len() - 4;
    late_nan[at..].copy_from_slice(&f32::NAN.to_le_bytes());
    assert!(b.restore(&late_nan).is_err());
    assert_eq!(b.state(), before);
}

#[test]
fn vsa_codec_decodes_what_the_compressor_reconstructs() {
    let mut a = VsaCodec::new(&shapes(), vsa_config()).unwrap();
    let payload = encode(&mut a, 0);
    let mut out = vec![vec![0f32; 40], vec![0f32; 1500]];
    a.decode(Context { step: 0, rank: 0 }, &payload, &mut out)
        .unwrap();
    // A 10x sketch keeps about √0.1 ≈ 0.32 of the direction (docs/compression.md); the
    // reconstruction must be positively aligned well above chance (|cos| ~ 1/√1540 ≈ 0.03).
    let g = grads(0);
    let (mut dot, mut gg, mut oo) = (0f64, 0f64, 0f64);
    for (x, y) in g.iter().flatten().zip(out.iter().flatten()) {
        dot += f64::from(*x) * f64::from(*y);
        gg += f64::from(*x).powi(2);
        oo += f64::from(*y).powi(2);
    }
    let cos = dot / (gg.sqrt() * oo.sqrt());
    assert!(cos > 0.2, "cosine {cos}");
    // Garbage is a typed decode error naming the sender, and `out` is untouched.
    let keep = out.clone();
    assert!(matches!(
        a.decode(Context { step: 0, rank: 3 }, &payload[..10], &mut out),
        Err(Error::Decode { rank: 3, .. })
    ));
    assert_eq!(out, keep);
}

#[test]
fn codec_for_builds_every_mode_here() {
    for mode in [
        ExchangeMode::F32,
        ExchangeMode::Ternary,
        ExchangeMode::Vsa,
        ExchangeMode::Compressed,
    ] {
        let c = codec_for(mode, &shapes(), 5, vsa_config(), Default::default()).unwrap();
        assert_eq!(c.mode(), mode);
    }
    let bad = SketchConfig {
        compression_ratio: 0.0,
        ..vsa_config()
    };
    assert!(matches!(
        codec_for(ExchangeMode::Vsa, &shapes(), 5, bad, Default::default()),
        Err(Error::InvalidConfig { .. })
    ));
    assert!(matches!(
        codec_for(ExchangeMode::F32, &[], 5, vsa_config(), Default::default()),
        Err(Error::InvalidConfig { .. })
    ));
}

#[test]
fn method_codec_rollback_state_and_handshake_fingerprint() {
    // Every method in grad-sketch's shared table (test_support::all_methods).
    for method in grad_sketch::test_support::all_methods() {
        let cfg = CompressorConfig {
            method,
            seed: 3,
            error_feedback: true,
            dense_warmup_steps: 1,
        };
        let mk = || MethodCodec::new(&shapes(), cfg).unwrap();
        let (mut a, mut b) = (mk(), mk());
        let enc = |c: &mut MethodCodec, t: u64| {
            let mut out = Vec::new();
            c.encode(Context { step: t, rank: 0 }, &grads(t), &mut out)
                .unwrap();
            out
        };
        for t in 0..3 {
            assert_eq!(enc(&mut a, t), enc(&mut b, t), "{method:?}");
            a.commit();
            b.commit();
        }
        // A staged, rolled-back step leaves no trace.
        let before = a.state();
        let staged = enc(&mut a, 3);
        a.rollback();
        assert_eq!(a.state(), before);
        assert_eq!(enc(&mut a, 3), staged);
        a.commit();
        // The state round trip resumes bit-identically; bad states change nothing.
        let mut c = mk();
        c.restore(&a.state()).unwrap();
        assert_eq!(enc(&mut c, 4), enc(&mut a, 4));
        let keep = c.state();
        assert!(matches!(
            c.restore(&keep[..keep.len() - 1]),
            Err(Error::Codec(_))
        ));
        let mut nan = keep.clone();
        let at = nan.len() - 4;
        nan[at..].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(c.restore(&nan).is_err());
        assert_eq!(c.state(), keep);
        // Decoding a payload made by another config fails with a typed error naming the
        // sender; the fingerprints (checked by the handshake) differ.
        let other = MethodCodec::new(&shapes(), CompressorConfig { seed: 4, ..cfg }).unwrap();
        assert_ne!(other.fingerprint(), a.fingerprint());
        let mut out = vec![vec![0f32; 40], vec![0f32; 1500]];
        let mut o = other;
        let payload = enc(&mut o, 5);
        assert!(matches!(
            a.decode(Context { step: 5, rank: 1 }, &payload, &mut out),
            Err(Error::Decode { rank: 1, .. })
        ));
    }
}
