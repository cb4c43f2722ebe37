//! The momentum codec ([`MomentumCodec`]: `grad-sketch`'s `MomentumCompressor` over the
//! gathered exchange) on ranks that are threads: every rank returns the AdamW direction
//! that one process computes with one scheme per rank, bit for bit, through the warm-up and
//! the compressed steps; a failed step changes no state; the handshake refuses a rank that
//! runs the plain method; the summed reduction is refused.

use grad_sketch::{CompressorConfig, Method, MomentumCompressor, MomentumConfig};
use vsa_optim_mpi::{
    Error, ExchangeConfig, GradientCodec, GradientExchange, MethodCodec, MomentumCodec, Reduction,
};

use crate::common::{bits, sines, thread_world};

fn params() -> Vec<(String, Vec<usize>)> {
    vec![
        ("a".to_string(), vec![7, 13]),
        ("b".to_string(), vec![5]),
        ("c".to_string(), vec![3, 4, 5]),
    ]
}

fn lens() -> Vec<usize> {
    vec![91, 5, 60]
}

/// Two exact AdamW steps, then top-10% of the momentum with error feedback.
fn config() -> MomentumConfig {
    MomentumConfig {
        compressor: CompressorConfig {
            method: Method::TopK { k_fraction: 0.1 },
            seed: 5,
            error_feedback: true,
            dense_warmup_steps: 2,
        },
        ..MomentumConfig::default()
    }
}

/// Rank `r`'s gradient at step `s`: smooth, different per rank.
fn grads(r: usize, s: u64) -> Vec<Vec<f32>> {
    let mut g = sines(&lens(), s + 7 * r as u64);
    g[0][(3 * r + s as usize) % 91] += 1.5;
    g
}

const STEPS: u64 = 5;

/// One process, one scheme per rank: every scheme compresses its rank's gradient, every
/// scheme applies all messages in rank order; the directions (equal for every scheme) of
/// each step.
fn reference(n: usize) -> Vec<Vec<Vec<f32>>> {
    let mut schemes: Vec<MomentumCompressor> = (0..n)
        .map(|_| MomentumCompressor::new(&params(), config()).unwrap())
        .collect();
    (0..STEPS)
        .map(|s| {
            let msgs: Vec<_> = schemes
                .iter_mut()
                .enumerate()
                .map(|(r, c)| c.compress(&grads(r, s)).unwrap())
                .collect();
            let mut ds = Vec::new();
            for c in &mut schemes {
                let mut d: Vec<Vec<f32>> = lens().iter().map(|&l| vec![0f32; l]).collect();
                c.apply(&msgs, &mut d).unwrap();
                ds.push(d);
            }
            assert!(ds.iter().all(|d| bits(d) == bits(&ds[0])));
            ds.swap_remove(0)
        })
        .collect()
}

fn exchange_config() -> ExchangeConfig {
    ExchangeConfig {
        seed: 5,
        user_fingerprint: 1,
    }
}

/// Runs the steps on `n` thread ranks; at `bad_step` rank 1 first sends a NaN (which must
/// fail on every rank with the codec state unchanged), then the real gradient.
fn run(n: usize, bad_step: Option<u64>) -> Vec<Vec<Vec<Vec<f32>>>> {
    std::thread::scope(|sc| {
        let handles: Vec<_> = thread_world(n)
            .into_iter()
            .enumerate()
            .map(|(r, world)| {
                sc.spawn(move || {
                    let codec = Box::new(MomentumCodec::new(&params(), config()).unwrap());
                    let mut ex =
                        GradientExchange::new(world, codec, &params(), exchange_config()).unwrap();
                    let mut outs = Vec::new();
                    for s in 0..STEPS {
                        let mut out: Vec<Vec<f32>> =
                            lens().iter().map(|&l| vec![f32::NAN; l]).collect();
                        if bad_step == Some(s) {
                            let before = ex.codec_state();
                            let mut g = grads(r, s);
                            if r == 1 {
                                g[2][4] = f32::NAN;
                            }
                            let e = ex.mean(s, &g, 0.0, &mut out).unwrap_err();
                            assert!(matches!(e, Error::NonFinite { rank: 1, .. }), "{e:?}");
                            assert_eq!(ex.codec_state(), before, "rank {r}: state unchanged");
                            assert!(out.iter().flatten().all(|x| x.is_nan()), "out untouched");
                        }
                        ex.mean(s, &grads(r, s), 0.0, &mut out).unwrap();
                        outs.push(out);
                    }
                    outs
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn every_rank_gets_the_single_process_direction_bit_for_bit() {
    for n in 1..=4 {
        let expected = reference(n);
        // The warm-up's direction is exact AdamW, the compressed steps' differ from it.
        assert_ne!(bits(&expected[2]), bits(&expected[1]));
        for (r, outs) in run(n, None).iter().enumerate() {
            for (s, (o, e)) in outs.iter().zip(&expected).enumerate() {
                assert_eq!(bits(o), bits(e), "n={n} rank {r} step {s}");
            }
        }
    }
}

#[test]
fn a_failed_step_in_the_warm_up_or_after_changes_no_state() {
    for bad in [1, 3] {
        let expected = reference(3);
        for (r, outs) in run(3, Some(bad)).iter().enumerate() {
            for (s, (o, e)) in outs.iter().zip(&expected).enumerate() {
                assert_eq!(bits(o), bits(e), "bad step {bad}: rank {r} step {s}");
            }
        }
    }
}

#[test]
fn the_handshake_refuses_the_plain_method_and_the_sum_is_refused() {
    let errs: Vec<Error> = std::thread::scope(|sc| {
        let handles: Vec<_> = thread_world(3)
            .into_iter()
            .enumerate()
            .map(|(r, world)| {
                sc.spawn(move || {
                    let codec: Box<dyn GradientCodec + Send> = if r == 2 {
                        Box::new(MethodCodec::new(&params(), config().compressor).unwrap())
                    } else {
                        Box::new(MomentumCodec::new(&params(), config()).unwrap())
                    };
                    GradientExchange::new(world, codec, &params(), exchange_config()).unwrap_err()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for e in errs {
        assert!(
            matches!(
                e,
                Error::ConfigMismatch {
                    field: "codec configuration",
                    rank: 2,
                    ..
                }
            ),
            "{e:?}"
        );
    }
    let codec = Box::new(MomentumCodec::new(&params(), config()).unwrap());
    let e = GradientExchange::with_reduction(
        vsa_optim_mpi::SingleProcess::new(),
        codec,
        &params(),
        exchange_config(),
        Reduction::Sum,
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidConfig {
                parameter: "reduction",
                ..
            }
        ),
        "{e:?}"
    );
    // A warm-up of 0 steps is a typed error.
    let mut c = config();
    c.compressor.dense_warmup_steps = 0;
    assert!(matches!(
        MomentumCodec::new(&params(), c),
        Err(Error::InvalidConfig { .. })
    ));
}

#[test]
fn state_round_trips_and_a_bad_state_changes_nothing() {
    let mut ex = GradientExchange::new(
        vsa_optim_mpi::SingleProcess::new(),
        Box::new(MomentumCodec::new(&params(), config()).unwrap()),
        &params(),
        exchange_config(),
    )
    .unwrap();
    let mut out: Vec<Vec<f32>> = lens().iter().map(|&l| vec![0f32; l]).collect();
    for s in 0..3 {
        ex.mean(s, &grads(0, s), 0.0, &mut out).unwrap();
    }
    let state = ex.codec_state();
    // Step counters (compressor, scheme), then residuals, momentum and variance.
    assert_eq!(state.len(), 16 + 4 * 3 * 156);
    assert_eq!(state[..8], 3u64.to_le_bytes());
    // A fresh exchange restored from it continues with the same bits.
    let mut fresh = GradientExchange::new(
        vsa_optim_mpi::SingleProcess::new(),
        Box::new(MomentumCodec::new(&params(), config()).unwrap()),
        &params(),
        exchange_config(),
    )
    .unwrap();
    fresh.restore_codec_state(&state).unwrap();
    assert_eq!(fresh.codec_state(), state);
    let (mut a, mut b) = (out.clone(), out.clone());
    ex.mean(3, &grads(0, 3), 0.0, &mut a).unwrap();
    fresh.mean(3, &grads(0, 3), 0.0, &mut b).unwrap();
    assert_eq!(bits(&a), bits(&b));
    // Truncated, or with a NaN momentum: refused, nothing changes.
    let now = fresh.codec_state();
    assert!(fresh.restore_codec_state(&now[..now.len() - 4]).is_err());
    let mut nan = now.clone();
    let at = 16 + 4 * 156 + 8; // a momentum value
    nan[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    assert!(fresh.restore_codec_state(&nan).is_err());
    assert_eq!(fresh.codec_state(), now);
}
