//! The summed and all-reduced exchanges ([`Reduction::Sum`], [`Reduction::Allreduce`]) on
//! ranks that are threads: the same bits as all-gathering the messages and summing them in
//! rank order (f32, bf16, the count sketch, random-k) for 1 to 5 ranks with uneven chunks;
//! bytes per rank that do not grow with the rank count; typed errors on every rank with the
//! output and the codec state unchanged; the handshake refusing a rank whose decoding
//! config differs.

use grad_sketch::{CompressorConfig, Method};
use vsa_optim_mpi::{
    Bf16Codec, Collective, Error, ExchangeConfig, ExchangeStats, F32Codec, Gathered, GradientCodec,
    GradientExchange, HANDSHAKE_BYTES, MethodCodec, Reduction, SUM_HEADER_BYTES, chunk,
};

use crate::common::{bits, thread_world};

#[path = "../examples/common/mod.rs"]
mod case;
use case::{
    bf16, bf16_allreduce_error_ratio, bf16_allreduce_rank_order_reference, bf16_sum_reference,
    filled, grads, lens, method_reference, params,
};

fn config() -> ExchangeConfig {
    ExchangeConfig {
        seed: 9,
        user_fingerprint: 0xabc,
    }
}

type Make = dyn Fn() -> Box<dyn GradientCodec + Send> + Sync;

/// One rank's step: the output and the loss, or the error.
type Step = Result<(Vec<Vec<f32>>, f32), Error>;

/// What each rank of an `n`-rank run did: its steps, then its stats and codec state.
struct RankRun {
    steps: Vec<Step>,
    stats: ExchangeStats,
    state: Vec<u8>,
}

/// Runs `inputs[r]` (one gradient set per step) on `n` thread ranks with `reduction`; every
/// rank's exchange is built with `make_for(rank)`'s codec.
fn run_with(
    n: usize,
    reduction: &(dyn Fn(usize) -> Reduction + Sync),
    make_for: &(dyn Fn(usize) -> Box<dyn GradientCodec + Send> + Sync),
    inputs: &[Vec<Vec<Vec<f32>>>],
) -> Result<Vec<RankRun>, Vec<Error>> {
    let results: Vec<Result<RankRun, Error>> = std::thread::scope(|s| {
        let handles: Vec<_> = thread_world(n)
            .into_iter()
            .enumerate()
            .map(|(r, world)| {
                s.spawn(move || {
                    let mut ex = GradientExchange::with_reduction(
                        world,
                        make_for(r),
                        &params(),
                        config(),
                        reduction(r),
                    )?;
                    let mut steps = Vec::new();
                    for (step, g) in inputs[r].iter().enumerate() {
                        let mut out = filled(f32::NAN);
                        let res = ex.mean(step as u64, g, r as f32 * 0.5, &mut out);
                        if res.is_err() {
                            assert_eq!(bits(&out), bits(&filled(f32::NAN)), "out untouched");
                        }
                        steps.push(res.map(|l| (out, l)));
                    }
                    Ok(RankRun {
                        steps,
                        stats: ex.stats(),
                        state: ex.codec_state(),
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    if results.iter().all(Result::is_ok) {
        Ok(results.into_iter().map(Result::unwrap).collect())
    } else {
        Err(results.into_iter().filter_map(Result::err).collect())
    }
}

fn run(n: usize, reduction: Reduction, make: &Make, steps: usize) -> Vec<RankRun> {
    let inputs: Vec<Vec<Vec<Vec<f32>>>> = (0..n)
        .map(|r| (0..steps).map(|s| grads(r, s)).collect())
        .collect();
    run_with(n, &|_| reduction, &|_| make(), &inputs).unwrap()
}

fn out_bits(run: &RankRun, step: usize) -> (Vec<Vec<u32>>, u32) {
    let (out, loss) = run.steps[step].as_ref().unwrap();
    (bits(out), loss.to_bits())
}

fn method(m: Method, error_feedback: bool, dense_warmup_steps: u64) -> CompressorConfig {
    CompressorConfig {
        method: m,
        seed: 17,
        error_feedback,
        dense_warmup_steps,
    }
}

const SKETCH: Method = Method::CountSketch {
    rows: 3,
    ratio: 0.3,
    k_fraction: 0.1,
};
const RANDOM_K: Method = Method::RandomK { ratio: 0.25 };

fn loss_mean(n: usize) -> f32 {
    let mut l = 0f32;
    for r in 0..n {
        l = if r == 0 { 0.0 } else { l + r as f32 * 0.5 };
    }
    l / n as f32
}

// ---------------------------------------------------------------------------------------------
// Bit-identical sums

#[test]
fn summed_and_allreduced_f32_equal_the_gathered_mean_bit_for_bit_on_1_to_5_ranks() {
    let make: &Make = &|| Box::new(F32Codec::new(&lens()));
    for n in 1..=5 {
        let gathered = run(n, Reduction::Gather, make, 3);
        let summed = run(n, Reduction::Sum, make, 3);
        // The thread transport's all-reduce is the default: rank order, deterministic.
        let reduced = run(n, Reduction::Allreduce, make, 3);
        for s in 0..3 {
            let reference = out_bits(&gathered[0], s);
            assert_eq!(reference.1, loss_mean(n).to_bits());
            for r in 0..n {
                assert_eq!(out_bits(&gathered[r], s), reference, "n={n} rank {r}");
                assert_eq!(
                    out_bits(&summed[r], s),
                    reference,
                    "sum n={n} rank {r} step {s}"
                );
                assert_eq!(
                    out_bits(&reduced[r], s),
                    reference,
                    "allreduce n={n} rank {r}"
                );
            }
        }
    }
}

#[test]
fn allreduced_bf16_adds_each_pair_in_f32_rounded_to_bf16_within_the_derived_bound() {
    let make: &Make = &|| Box::new(Bf16Codec::new(&lens()));
    for n in 1..=5 {
        // The thread transport all-reduces with the default: pairs in rank order.
        let reduced = run(n, Reduction::Allreduce, make, 3);
        let again = run(n, Reduction::Allreduce, make, 3);
        let reference = bf16_allreduce_rank_order_reference(n, 3);
        let outs: Vec<Vec<Vec<f32>>> = (0..3)
            .map(|s| reduced[0].steps[s].as_ref().unwrap().0.clone())
            .collect();
        for (s, expected) in reference.iter().enumerate() {
            assert_eq!(out_bits(&reduced[0], s).0, bits(expected), "n={n} step {s}");
            assert_eq!(out_bits(&reduced[0], s).1, loss_mean(n).to_bits());
            for r in 0..n {
                assert_eq!(
                    out_bits(&reduced[r], s),
                    out_bits(&reduced[0], s),
                    "n={n} rank {r}"
                );
                assert_eq!(
                    out_bits(&again[r], s),
                    out_bits(&reduced[r], s),
                    "n={n} rerun"
                );
            }
        }
        // Within the bound of docs/distributed.md §11 (derived next to the function).
        let ratio = bf16_allreduce_error_ratio(n, &outs);
        assert!(ratio <= 1.0, "n={n}: error {ratio} × the bound");
        // Bytes: the nominal 2(N − 1)/N of a 2-byte message each way, plus the headers.
        let m = lens().iter().sum::<usize>() as u64;
        let moved = (2 * (n as u64 - 1) * 2 * m) / n as u64;
        let stats = reduced[0].stats;
        let headers = (HANDSHAKE_BYTES + 3 * SUM_HEADER_BYTES) as u64;
        assert_eq!(stats.bytes_sent, headers + 3 * moved, "n={n}");
    }
    // Not the summed mode's bits: at 4 ranks, rounding after each of the 3 additions
    // differs from rounding the f32 sum once on some element of this case.
    let sum = bf16_sum_reference(4, 1);
    let all = bf16_allreduce_rank_order_reference(4, 1);
    assert_ne!(bits(&sum[0]), bits(&all[0]));
}

#[test]
fn summed_count_sketch_and_random_k_equal_all_gather_then_sum_bit_for_bit() {
    let configs = [
        method(SKETCH, true, 0),
        method(SKETCH, false, 0),
        // The first step is the dense warm-up, then the sketch.
        method(SKETCH, true, 1),
        method(RANDOM_K, true, 0),
        method(RANDOM_K, false, 0),
    ];
    for cfg in configs {
        for n in 1..=5 {
            let make = move || -> Box<dyn GradientCodec + Send> {
                Box::new(MethodCodec::new(&params(), cfg).unwrap())
            };
            let summed = run(n, Reduction::Sum, &make, 3);
            let reference = method_reference(n, cfg, 3);
            for (s, expected) in reference.iter().enumerate() {
                for (r, rr) in summed.iter().enumerate() {
                    assert_eq!(
                        out_bits(rr, s),
                        (bits(expected), loss_mean(n).to_bits()),
                        "{} ef={} n={n} rank {r} step {s}",
                        cfg.method.label(),
                        cfg.error_feedback
                    );
                }
            }
            // Random-k with error feedback sends the values unscaled: decoding the sum is
            // summing the decoded messages, so the gathered mode gives the same bits.
            if cfg.method == RANDOM_K && cfg.error_feedback {
                let gathered = run(n, Reduction::Gather, &make, 3);
                for s in 0..3 {
                    assert_eq!(out_bits(&gathered[0], s), out_bits(&summed[0], s));
                }
            }
            // Error feedback is per rank: each rank keeps its own residual.
            if n > 1 && cfg.error_feedback {
                assert_ne!(summed[0].state, summed[1].state);
            }
        }
    }
}

#[test]
fn summed_bf16_sums_in_f32_in_rank_order_and_rounds_the_sum_to_bf16() {
    let make: &Make = &|| Box::new(Bf16Codec::new(&lens()));
    for n in 1..=5 {
        let summed = run(n, Reduction::Sum, make, 2);
        let gathered = run(n, Reduction::Gather, make, 2);
        for (s, sum_ref) in bf16_sum_reference(n, 2).iter().enumerate() {
            // Gathered: the decoded bf16 values summed in f32, the sum not rounded.
            let gather_ref: Vec<Vec<f32>> = (0..lens().len())
                .map(|k| {
                    (0..lens()[k])
                        .map(|j| {
                            let mut acc = bf16(grads(0, s)[k][j]);
                            for r in 1..n {
                                acc += bf16(grads(r, s)[k][j]);
                            }
                            acc / n as f32
                        })
                        .collect()
                })
                .collect();
            for r in 0..n {
                assert_eq!(out_bits(&summed[r], s).0, bits(sum_ref), "n={n} rank {r}");
                assert_eq!(
                    out_bits(&gathered[r], s).0,
                    bits(&gather_ref),
                    "n={n} rank {r}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Bytes

#[test]
fn summed_bytes_per_rank_do_not_grow_with_the_rank_count() {
    let make: &Make = &|| Box::new(F32Codec::new(&lens()));
    let m: usize = lens().iter().sum();
    let message = 4 * m as u64;
    let mut summed_max = Vec::new();
    for n in 1..=5 {
        let handshake = |run: &RankRun| {
            let s = run.stats;
            (s.bytes_sent, s.bytes_received)
        };
        let gathered = run(n, Reduction::Gather, make, 1);
        let summed = run(n, Reduction::Sum, make, 1);
        let base = run(n, Reduction::Sum, make, 0);
        let mut worst = 0u64;
        for r in 0..n {
            let (s0, r0) = handshake(&base[r]);
            let (s1, r1) = handshake(&summed[r]);
            let own = 4 * chunk(r, m, n).len() as u64;
            let header = SUM_HEADER_BYTES as u64;
            // The header, the chunks for the other ranks and the reduced chunk.
            assert_eq!(s1 - s0, header + (message - own) + own, "n={n} rank {r}");
            // The other headers, this chunk from every other rank, the other reduced chunks.
            let received = r1 - r0;
            assert_eq!(
                received,
                (n as u64 - 1) * (header + own) + (message - own),
                "n={n} rank {r}"
            );
            let payload = received - (n as u64 - 1) * header;
            assert!(payload <= 2 * message, "n={n}: {payload} > 2·{message}");
            worst = worst.max(payload);
            // Gathered: every other rank's whole frame.
            let g = gathered[r].stats.bytes_received - r0;
            assert_eq!(g, (n as u64 - 1) * (24 + message));
        }
        summed_max.push(worst);
    }
    // 2(N − 1)/N of the message, ±1 element of chunk rounding: 0, 1, 4/3, 3/2, 8/5 × M.
    assert_eq!(summed_max[0], 0);
    for (i, &b) in summed_max.iter().enumerate().skip(1) {
        let n = i as u64 + 1;
        let ideal = 2 * (n - 1) * message / n;
        assert!(b.abs_diff(ideal) <= 4 * (n - 1), "n={n}: {b} vs {ideal}");
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Runs two steps on 3 ranks where step 0 is spoiled on one rank by `spoil`; checks that
/// every rank failed step 0, kept its output, and that step 1 then matches a clean run in
/// which step 0 never happened (state unchanged by the failure).
fn fails_together(
    reduction: Reduction,
    cfg: Option<CompressorConfig>,
    spoil: fn(&mut Vec<Vec<f32>>),
) -> Vec<Error> {
    const N: usize = 3;
    let make_for = |_: usize| -> Box<dyn GradientCodec + Send> {
        match cfg {
            Some(c) => Box::new(MethodCodec::new(&params(), c).unwrap()),
            None => Box::new(F32Codec::new(&lens())),
        }
    };
    let inputs: Vec<Vec<Vec<Vec<f32>>>> = (0..N)
        .map(|r| {
            let mut bad = grads(r, 1);
            if r == 1 {
                spoil(&mut bad);
            }
            vec![bad, grads(r, 1)]
        })
        .collect();
    let runs = run_with(N, &|_| reduction, &make_for, &inputs).unwrap();
    let clean_inputs: Vec<Vec<Vec<Vec<f32>>>> = (0..N).map(|r| vec![grads(r, 1)]).collect();
    let clean = run_with(N, &|_| reduction, &make_for, &clean_inputs).unwrap();
    let mut errors = Vec::new();
    for (r, run) in runs.iter().enumerate() {
        assert_eq!(run.stats.failed, 1);
        assert_eq!(run.stats.exchanges, 1);
        // The step after the failure equals a run that never had the failed step: the codec
        // state (residuals, counter) was rolled back. The step number differs (1 vs 0), so
        // compare the codec state and the output.
        assert_eq!(run.state, clean[r].state, "rank {r}: state rolled back");
        assert_eq!(out_bits(run, 1), out_bits(&clean[r], 0), "rank {r}");
        match &run.steps[0] {
            Err(e) => errors.push(e.to_string()),
            Ok(_) => panic!("rank {r}: step 0 should fail"),
        }
    }
    // One message for the other ranks; the failing rank may have its own.
    assert_eq!(errors[0], errors[2]);
    runs.into_iter()
        .map(|r| r.steps.into_iter().next().unwrap().unwrap_err())
        .collect()
}

#[test]
fn a_nan_on_one_rank_fails_every_rank_with_state_unchanged() {
    for reduction in [Reduction::Sum, Reduction::Allreduce] {
        let errs = fails_together(reduction, None, |g| g[0][3] = f32::NAN);
        for e in &errs {
            assert!(matches!(e, Error::NonFinite { rank: 1, step: 0 }), "{e:?}");
        }
    }
    let errs = fails_together(Reduction::Sum, Some(method(SKETCH, true, 0)), |g| {
        g[2][0] = f32::INFINITY;
    });
    assert!(
        errs.iter()
            .all(|e| matches!(e, Error::NonFinite { rank: 1, .. }))
    );
}

#[test]
fn a_malformed_input_on_one_rank_fails_every_rank_with_state_unchanged() {
    for cfg in [
        None,
        Some(method(SKETCH, true, 0)),
        Some(method(RANDOM_K, true, 0)),
    ] {
        let errs = fails_together(Reduction::Sum, cfg, |g| {
            g[1].pop();
        });
        assert!(
            matches!(errs[1], Error::LengthMismatch { .. }),
            "{:?}",
            errs[1]
        );
        for e in [&errs[0], &errs[2]] {
            assert!(
                matches!(e, Error::Codec(m) if m.contains("rank 1 failed")),
                "{e:?}"
            );
        }
    }
}

#[test]
fn a_sum_that_overflows_fails_every_rank_with_state_unchanged() {
    // Every rank sends 3e38 at one element: finite alone, infinite summed.
    for (reduction, bf16_mode) in [
        (Reduction::Sum, false),
        (Reduction::Allreduce, false),
        (Reduction::Allreduce, true),
    ] {
        const N: usize = 3;
        let make_for = |_: usize| -> Box<dyn GradientCodec + Send> {
            if bf16_mode {
                Box::new(Bf16Codec::new(&lens()))
            } else {
                Box::new(F32Codec::new(&lens()))
            }
        };
        let inputs: Vec<Vec<Vec<Vec<f32>>>> = (0..N)
            .map(|r| {
                let mut g = grads(r, 0);
                g[2][7] = 3.0e38;
                vec![g, grads(r, 0)]
            })
            .collect();
        let runs = run_with(N, &|_| reduction, &make_for, &inputs).unwrap();
        for run in &runs {
            match &run.steps[0] {
                Err(Error::Decode { reason, .. }) => assert!(reason.contains("overflows")),
                other => panic!("{reduction}: {:?}", other.as_ref().map(|_| ())),
            }
            assert_eq!(out_bits(run, 1), out_bits(&runs[0], 1));
        }
    }
}

#[test]
fn a_codec_without_a_linear_message_is_refused_on_every_rank() {
    let cases: [(Reduction, &Make); 3] = [
        (Reduction::Sum, &|| {
            Box::new(MethodCodec::new(&params(), CompressorConfig::default()).unwrap())
        }),
        (Reduction::Sum, &|| {
            Box::new(
                MethodCodec::new(&params(), method(Method::PowerSgd { rank: 2 }, true, 0)).unwrap(),
            )
        }),
        // Random-k has a linear message, but only f32 and bf16 go over the all-reduce.
        (Reduction::Allreduce, &|| {
            Box::new(MethodCodec::new(&params(), method(RANDOM_K, true, 0)).unwrap())
        }),
    ];
    for (reduction, make) in cases {
        let inputs = vec![Vec::new(); 2];
        let errs = run_with(2, &|_| reduction, &|_| make(), &inputs)
            .err()
            .expect("refused");
        assert_eq!(errs.len(), 2, "every rank");
        for e in errs {
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
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Handshake

fn refused(
    reduction: &(dyn Fn(usize) -> Reduction + Sync),
    make_for: &(dyn Fn(usize) -> Box<dyn GradientCodec + Send> + Sync),
) -> Vec<(&'static str, usize)> {
    let inputs = vec![Vec::new(); 3];
    run_with(3, reduction, make_for, &inputs)
        .err()
        .expect("the handshake must refuse")
        .into_iter()
        .map(|e| match e {
            Error::ConfigMismatch { field, rank, .. } => (field, rank),
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn the_handshake_refuses_a_rank_whose_decoding_config_differs() {
    let sketch = |cfg: CompressorConfig| -> Box<dyn GradientCodec + Send> {
        Box::new(MethodCodec::new(&params(), cfg).unwrap())
    };
    // Summed on two ranks, gathered on rank 2.
    let errs = refused(
        &|r| {
            if r == 2 {
                Reduction::Gather
            } else {
                Reduction::Sum
            }
        },
        &|_| sketch(method(SKETCH, true, 0)),
    );
    assert_eq!(errs, vec![("reduction (gather, sum or allreduce)", 2); 3]);
    // All-reduced against summed f32.
    let errs = refused(
        &|r| {
            if r == 1 {
                Reduction::Allreduce
            } else {
                Reduction::Sum
            }
        },
        &|_| Box::new(F32Codec::new(&lens())),
    );
    assert_eq!(errs, vec![("reduction (gather, sum or allreduce)", 1); 3]);
    // bf16: all-reduced on rank 0, summed on the others.
    let errs = refused(
        &|r| {
            if r == 0 {
                Reduction::Allreduce
            } else {
                Reduction::Sum
            }
        },
        &|_| Box::new(Bf16Codec::new(&lens())),
    );
    assert_eq!(errs, vec![("reduction (gather, sum or allreduce)", 1); 3]);
    // The heavy-hitter k, the rows, the ratio or error feedback differ on rank 1: every
    // one changes how the summed sketch decodes.
    let variants = [
        Method::CountSketch {
            rows: 3,
            ratio: 0.3,
            k_fraction: 0.2,
        },
        Method::CountSketch {
            rows: 5,
            ratio: 0.3,
            k_fraction: 0.1,
        },
        Method::CountSketch {
            rows: 3,
            ratio: 0.2,
            k_fraction: 0.1,
        },
    ];
    for v in variants {
        let errs = refused(&|_| Reduction::Sum, &move |r| {
            sketch(method(if r == 1 { v } else { SKETCH }, true, 0))
        });
        assert_eq!(errs, vec![("codec configuration", 1); 3], "{}", v.label());
    }
    let errs = refused(&|_| Reduction::Sum, &|r| sketch(method(SKETCH, r != 1, 0)));
    assert_eq!(errs, vec![("codec configuration", 1); 3]);
    // f32 against bf16: the mode.
    let errs = refused(&|_| Reduction::Sum, &|r| -> Box<dyn GradientCodec + Send> {
        if r == 0 {
            Box::new(Bf16Codec::new(&lens()))
        } else {
            Box::new(F32Codec::new(&lens()))
        }
    });
    assert_eq!(errs, vec![("mode", 1); 3]);
}

// ---------------------------------------------------------------------------------------------
// A transport that only implements the all-gather

/// A foreign transport: only the required all-gather, so the all-to-all and the all-reduce
/// run on the trait's default implementations.
struct GatherOnly<C>(C);

impl<C: Collective> Collective for GatherOnly<C> {
    fn rank(&self) -> usize {
        self.0.rank()
    }

    fn size(&self) -> usize {
        self.0.size()
    }

    fn all_gather_bytes(&mut self, mine: &[u8], out: &mut Gathered) -> vsa_optim_mpi::Result<()> {
        self.0.all_gather_bytes(mine, out)
    }

    fn collective_calls(&self) -> u64 {
        self.0.collective_calls()
    }
}

#[test]
fn a_transport_with_only_the_all_gather_gives_the_same_bits() {
    let cfg = method(SKETCH, true, 0);
    for n in [1, 3, 4] {
        let results: Vec<Vec<Vec<u32>>> = std::thread::scope(|s| {
            let handles: Vec<_> = thread_world(n)
                .into_iter()
                .enumerate()
                .map(|(r, world)| {
                    s.spawn(move || {
                        let codecs: [(Reduction, Box<dyn GradientCodec + Send>); 2] = [
                            (
                                Reduction::Sum,
                                Box::new(MethodCodec::new(&params(), cfg).unwrap()),
                            ),
                            (Reduction::Allreduce, Box::new(F32Codec::new(&lens()))),
                        ];
                        let mut world = GatherOnly(world);
                        let mut outs = Vec::new();
                        for (reduction, codec) in codecs {
                            let mut ex = GradientExchange::with_reduction(
                                &mut world,
                                codec,
                                &params(),
                                config(),
                                reduction,
                            )
                            .unwrap();
                            let mut out = filled(0.0);
                            ex.mean(0, &grads(r, 0), 0.0, &mut out).unwrap();
                            outs.push(bits(&out));
                        }
                        outs.concat()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let sketch = &method_reference(n, cfg, 1)[0];
        let f32_ref = run(
            n,
            Reduction::Gather,
            &|| Box::new(F32Codec::new(&lens())),
            1,
        );
        let mut expected = bits(sketch);
        expected.extend(out_bits(&f32_ref[0], 0).0);
        assert_eq!(results.len(), n);
        for (r, got) in results.iter().enumerate() {
            assert_eq!(got, &expected, "n={n} rank {r}");
        }
    }
}
