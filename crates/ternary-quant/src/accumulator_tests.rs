//! Unit tests of [`super::PackedAccumulator`] (kept apart so that the source stays short).
use super::*;

fn cfg(steps: usize) -> AccumulatorConfig {
    AccumulatorConfig {
        accumulation_steps: steps,
        ..Default::default()
    }
}

#[test]
fn errors_leave_state_unchanged() {
    let mut acc = PackedAccumulator::new(7, cfg(2)).unwrap();
    acc.accumulate(&[0.5, -1.0, 0.0, 2.0, 1.0, 0.25, -0.75])
        .unwrap();
    let before = acc.clone();
    assert_eq!(
        acc.accumulate(&[0.0; 6]),
        Err(Error::LengthMismatch {
            what: "grad",
            expected: 7,
            actual: 6
        })
    );
    let mut bad = [0.0f32; 7];
    bad[4] = f32::NAN;
    assert!(matches!(
        acc.accumulate(&bad),
        Err(Error::NonFinite { index: 4, .. })
    ));
    assert_eq!(acc, before);
    acc.accumulate(&[0.0; 7]).unwrap();
    let full = acc.clone();
    assert_eq!(
        acc.accumulate(&[0.0; 7]),
        Err(Error::AccumulationFull {
            accumulation_steps: 2
        })
    );
    assert_eq!(acc, full);
    assert!(acc.ready());
    acc.reset();
    assert_eq!(acc.count(), 0);
    assert_eq!(acc.mean(), vec![0.0; 7]);
}

#[test]
fn reset_with_seed_switches_streams() {
    let g: Vec<f32> = (0..40).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut a = PackedAccumulator::new(40, cfg(1)).unwrap();
    a.accumulate(&g).unwrap();
    let first = a.mean();
    a.reset_with_seed(99);
    assert_eq!((a.count(), a.config().seed), (0, 99));
    assert_eq!(a.next_rng_key(), RngKey::new(99, 0, 0));
    a.accumulate(&g).unwrap();
    // Same input, fresh stream: some stochastic rounding differs.
    assert_ne!(a.mean(), first);
    let mut b = PackedAccumulator::new(40, AccumulatorConfig { seed: 99, ..cfg(1) }).unwrap();
    b.accumulate(&g).unwrap();
    assert_eq!(a, b);
}

#[test]
fn invalid_configs() {
    assert!(PackedAccumulator::new(10, cfg(0)).is_err());
    for b in [0, 7, 64] {
        let c = AccumulatorConfig {
            scale_granularity: ScaleGranularity::PerBlock(b),
            ..cfg(1)
        };
        assert!(matches!(
            PackedAccumulator::new(10, c),
            Err(Error::InvalidParameter {
                param: "scale_granularity",
                ..
            })
        ));
    }
}

#[test]
fn zeros_subnormals_and_constants() {
    for g in [ScaleGranularity::PerTensor, ScaleGranularity::PerBlock(5)] {
        for stochastic in [true, false] {
            let c = AccumulatorConfig {
                scale_granularity: g,
                stochastic,
                ..cfg(3)
            };
            let mut acc = PackedAccumulator::new(12, c).unwrap();
            acc.accumulate(&[0.0; 12]).unwrap();
            assert_eq!(acc.mean(), vec![0.0; 12]);
            let tiny = f32::from_bits(3);
            acc.accumulate(&[tiny; 12]).unwrap();
            assert!(acc.mean().iter().all(|m| m.is_finite() && *m >= 0.0));
            acc.accumulate(&[f32::MAX; 12]).unwrap();
            assert!(acc.mean().iter().all(|m| m.is_finite()));
        }
    }
}

#[test]
fn memory_is_at_most_two_bits_per_element() {
    let n = 1 << 20;
    for (g, fmt, trits, bound) in [
        (ScaleGranularity::PerTensor, ScaleFormat::F32, 1, 1.6),
        (ScaleGranularity::PerBlock(320), ScaleFormat::F32, 1, 1.7),
        (ScaleGranularity::PerBlock(25), ScaleFormat::Log8, 1, 1.92),
        (ScaleGranularity::PerBlock(25), ScaleFormat::Log8, 2, 3.52),
        (ScaleGranularity::PerBlock(25), ScaleFormat::Log8, 5, 8.32),
    ] {
        let acc = PackedAccumulator::new(
            n,
            AccumulatorConfig {
                scale_granularity: g,
                scale_format: fmt,
                trits_per_element: trits,
                ..cfg(8)
            },
        )
        .unwrap();
        let bits = acc.bits_per_element();
        // Heap: exactly ceil(n·trits/5) bytes + the scales; the O(1) struct (144 bytes) adds < 2e-3.
        assert!(bits <= bound + 2e-3 && bits >= bound, "{g:?}: {bits}");
    }
}

#[test]
fn state_round_trip_and_validation() {
    let mut acc = PackedAccumulator::new(13, cfg(3)).unwrap();
    acc.accumulate(&[
        1.0, -2.0, 3.0, 0.5, 0.0, 1.0, 1.0, -1.0, 0.1, 0.2, 0.3, 0.4, 9.0,
    ])
    .unwrap();
    let back = PackedAccumulator::from_state(acc.state()).unwrap();
    assert_eq!(back, acc);
    let mut bad = acc.state();
    bad.trits[0] = 250;
    assert!(PackedAccumulator::from_state(bad).is_err());
    let mut bad = acc.state();
    bad.count = 4;
    assert!(PackedAccumulator::from_state(bad).is_err());
    let mut bad = acc.state();
    bad.scales[0] = f32::INFINITY;
    assert!(PackedAccumulator::from_state(bad).is_err());
}

/// `restore` puts a state back into an existing accumulator: the next outputs are the same
/// bits as the original's, and a state of another length or config is a typed error that
/// changes nothing.
#[test]
fn restore_in_place_resumes_and_rejects_mismatches() {
    let g: Vec<f32> = (0..47).map(|i| (i as f32 * 0.61).sin() * 3.0).collect();
    let config = AccumulatorConfig { seed: 5, ..cfg(3) };
    let mut a = PackedAccumulator::new(47, config).unwrap();
    a.accumulate(&g).unwrap();
    a.reset_with_seed(17); // the seed is run position, taken from the state
    a.accumulate(&g).unwrap();
    let mut b = PackedAccumulator::new(47, config).unwrap();
    b.restore(&a.state()).unwrap();
    assert_eq!(b, a);
    a.accumulate(&g).unwrap();
    b.accumulate(&g).unwrap();
    let bits = |x: &PackedAccumulator| x.mean().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a), bits(&b));

    let before = b.clone();
    let other_len = PackedAccumulator::new(46, config).unwrap().state();
    assert!(matches!(
        b.restore(&other_len),
        Err(Error::LengthMismatch {
            what: "state.len",
            expected: 47,
            actual: 46
        })
    ));
    for other in [
        AccumulatorConfig {
            trits_per_element: 2,
            ..config
        },
        AccumulatorConfig {
            accumulation_steps: 4,
            ..config
        },
        AccumulatorConfig {
            stochastic: false,
            ..config
        },
        AccumulatorConfig {
            tensor_id: 1,
            ..config
        },
    ] {
        let st = PackedAccumulator::new(47, other).unwrap().state();
        assert!(matches!(
            b.restore(&st),
            Err(Error::InvalidParameter {
                param: "config",
                ..
            })
        ));
    }
    let mut bad = a.state();
    bad.count = 4;
    assert!(matches!(
        b.restore(&bad),
        Err(Error::InvalidParameter { param: "count", .. })
    ));
    let mut bad = a.state();
    bad.codes.pop();
    assert!(matches!(
        b.restore(&bad),
        Err(Error::LengthMismatch { what: "codes", .. })
    ));
    let mut bad = a.state();
    bad.scales[0] = -1.0;
    assert!(matches!(
        b.restore(&bad),
        Err(Error::InvalidParameter {
            param: "scales",
            ..
        })
    ));
    let mut bad = a.state();
    bad.trits[3] = 243;
    assert!(matches!(b.restore(&bad), Err(Error::InvalidPacked { .. })));
    assert_eq!(b, before);
    // A length whose level count would overflow is refused before anything is allocated.
    let mut huge = a.state();
    huge.len = usize::MAX;
    assert!(matches!(
        PackedAccumulator::from_state(huge),
        Err(Error::InvalidParameter { param: "len", .. })
    ));
}

/// Every instruction set the step can run on ([`Isa::available`]: the baseline, and AVX2
/// where the machine has it) gives the same state bit for bit: trits, codes, scales and the
/// reference, for 1, 2, 3 and 5 trits, stochastic and deterministic rounding, the
/// subtractive-dither decode, both scale formats (with and without the Log8 tables, which are
/// built from 64 blocks on), per-tensor scales and lengths that end in a short block. The
/// gradients mix magnitudes over 60 octaves, zero blocks and subnormals, so the scale choice
/// takes its fallback too.
#[test]
fn every_instruction_set_gives_the_same_bits() {
    let paths = Isa::available();
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        // Where the machine has x86-64-v3 (pulp's `V3` list) the comparison must include it.
        let v3 = has!("avx2")
            && has!("fma")
            && has!("bmi1")
            && has!("bmi2")
            && has!("lzcnt")
            && has!("popcnt")
            && has!("sse4.2")
            && has!("ssse3");
        assert_eq!(paths.len(), 1 + usize::from(v3), "{paths:?}");
    }
    let grad = |len: usize, k: usize| -> Vec<f32> {
        (0..len)
            .map(|i| {
                if (i / 25) % 7 == 3 {
                    return 0.0;
                }
                if (i / 25) % 11 == 5 {
                    return f32::from_bits((i * 2654435761 % 8_000_000) as u32) * (k as f32);
                }
                let oct = ((i * 7 + k * 3) % 60) as i32 - 40;
                ((i as f32 * 0.618 + k as f32).sin()) * 2f32.powi(oct)
            })
            .collect()
    };
    let base = AccumulatorConfig {
        accumulation_steps: 4,
        seed: 11,
        tensor_id: 3,
        ..Default::default()
    };
    let mut configs = Vec::new();
    for trits_per_element in crate::levels::SUPPORTED_TRITS {
        for stochastic in [true, false] {
            for (scale_granularity, scale_format) in [
                (ScaleGranularity::PerBlock(25), ScaleFormat::Log8),
                (ScaleGranularity::PerBlock(320), ScaleFormat::F32),
                (ScaleGranularity::PerBlock(80), ScaleFormat::Log8),
                (ScaleGranularity::PerBlock(640), ScaleFormat::Log8),
                (ScaleGranularity::PerTensor, ScaleFormat::F32),
            ] {
                configs.push(AccumulatorConfig {
                    trits_per_element,
                    stochastic,
                    scale_granularity,
                    scale_format,
                    ..base
                });
            }
        }
        configs.push(AccumulatorConfig {
            trits_per_element,
            rounding: Rounding::Subtractive { lambda: 1.0 },
            ..base
        });
    }
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for config in configs {
        // 1,603 elements: 65 blocks of 25 (the tables), one short; 203: 9 blocks, no tables.
        for len in [1603usize, 203] {
            let mut reference = PackedAccumulator::new(len, config).unwrap();
            for k in 0..4 {
                reference
                    .accumulate_on(Isa::Baseline, &grad(len, k))
                    .unwrap();
            }
            let want = reference.state();
            for &isa in &paths {
                let mut acc = PackedAccumulator::new(len, config).unwrap();
                for k in 0..4 {
                    acc.accumulate_on(isa, &grad(len, k)).unwrap();
                }
                let got = acc.state();
                let what = format!("{isa:?} len {len} {config:?}");
                assert_eq!(got.trits, want.trits, "{what}");
                assert_eq!(got.codes, want.codes, "{what}");
                assert_eq!(bits(&got.scales), bits(&want.scales), "{what}");
                // And the state is not trivial: some level is not zero.
                assert!(got.trits.iter().any(|&b| b != BASE3_ZERO), "{what}");
            }
        }
    }
}
