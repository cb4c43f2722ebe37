//! Round trips, fused-vs-reference equivalence and chunking invariance (proptest).
use proptest::prelude::*;
use ternary_quant::fused::{
    quantize_stochastic_base3_with_scale_into, quantize_stochastic_planes_with_scale_into,
};
use ternary_quant::*;

fn trits(max_len: usize) -> impl Strategy<Value = Vec<i8>> {
    prop::collection::vec(-1i8..=1, 0..max_len)
}

fn floats(max_len: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(
        prop_oneof![
            4 => -10.0f32..10.0,
            1 => Just(0.0f32),
            1 => prop::num::f32::NORMAL | prop::num::f32::SUBNORMAL | prop::num::f32::ZERO,
        ],
        0..max_len,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn planes_round_trip(t in trits(700)) {
        let w = plane_words(t.len());
        let (mut p, mut m) = (vec![0u64; w], vec![0u64; w]);
        pack_planes(&t, &mut p, &mut m).unwrap();
        let mut back = vec![9i8; t.len()];
        unpack_planes(&p, &m, &mut back).unwrap();
        prop_assert_eq!(&back, &t);
        // Popcounts equal the number of +1 / -1 trits (layout sanity).
        let np: u32 = p.iter().map(|w| w.count_ones()).sum();
        prop_assert_eq!(np as usize, t.iter().filter(|&&x| x == 1).count());
    }

    #[test]
    fn base3_round_trip(t in trits(700)) {
        let mut b = vec![0u8; base3_bytes(t.len())];
        pack_base3(&t, &mut b).unwrap();
        prop_assert!(b.iter().all(|&x| x <= 242));
        let mut back = vec![9i8; t.len()];
        unpack_base3(&b, &mut back).unwrap();
        prop_assert_eq!(&back, &t);
    }

    #[test]
    fn planes_base3_conversions_round_trip(t in trits(1500)) {
        let n = t.len();
        let w = plane_words(n);
        let (mut p, mut m) = (vec![0u64; w], vec![0u64; w]);
        pack_planes(&t, &mut p, &mut m).unwrap();
        let mut b = vec![0u8; base3_bytes(n)];
        planes_to_base3(n, &p, &m, &mut b).unwrap();
        let mut b_ref = vec![0u8; base3_bytes(n)];
        pack_base3(&t, &mut b_ref).unwrap();
        prop_assert_eq!(&b, &b_ref);
        let (mut p2, mut m2) = (vec![!0u64; w], vec![!0u64; w]);
        base3_to_planes(n, &b, &mut p2, &mut m2).unwrap();
        prop_assert_eq!((&p2, &m2), (&p, &m));
    }

    #[test]
    fn fused_kernels_match_reference(x in floats(700), seed in any::<u64>(), step in 0u64..4) {
        let n = x.len();
        let key = RngKey::new(seed, step, 5);
        let s = max_abs(&x).unwrap();
        let mut q = vec![0i8; n];
        quantize_stochastic_into(&x, s, key, 0, &mut q).unwrap();
        let w = plane_words(n);
        let (mut p, mut m) = (vec![0u64; w], vec![0u64; w]);
        prop_assert_eq!(quantize_stochastic_planes_into(&x, key, &mut p, &mut m).unwrap(), s);
        let mut back = vec![0i8; n];
        unpack_planes(&p, &m, &mut back).unwrap();
        prop_assert_eq!(&back, &q);
        let mut b = vec![0u8; base3_bytes(n)];
        prop_assert_eq!(quantize_stochastic_base3_into(&x, key, &mut b).unwrap(), s);
        unpack_base3(&b, &mut back).unwrap();
        prop_assert_eq!(&back, &q);
        // Dequantize kernels agree with scale * trit.
        let mut f1 = vec![0f32; n];
        let mut f2 = vec![1f32; n];
        dequantize_into(&q, s, &mut f1).unwrap();
        dequantize_planes_into(&p, &m, s, &mut f2).unwrap();
        prop_assert_eq!(&f1, &f2);
        dequantize_base3_into(&b, s, &mut f2).unwrap();
        prop_assert_eq!(&f1, &f2);
        // Absmean fused == reference.
        let g = quantize_absmean_into(&x, &mut q).unwrap();
        prop_assert_eq!(quantize_absmean_planes_into(&x, &mut p, &mut m).unwrap(), g);
        unpack_planes(&p, &m, &mut back).unwrap();
        prop_assert_eq!(&back, &q);
        prop_assert_eq!(quantize_absmean_base3_into(&x, &mut b).unwrap(), g);
        unpack_base3(&b, &mut back).unwrap();
        prop_assert_eq!(&back, &q);
    }

    #[test]
    fn stochastic_is_chunking_invariant(x in floats(1200), cuts in prop::collection::vec(0usize..1200, 0..6), seed in any::<u64>()) {
        let n = x.len();
        let key = RngKey::new(seed, 1, 2);
        let s = max_abs(&x).unwrap();
        let mut whole = vec![0i8; n];
        quantize_stochastic_into(&x, s, key, 0, &mut whole).unwrap();
        // Arbitrary element cuts.
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(n)).collect();
        cuts.extend([0, n]);
        cuts.sort_unstable();
        let mut pieces = vec![0i8; n];
        for w in cuts.windows(2) {
            let (a, b) = (w[0], w[1]);
            quantize_stochastic_into(&x[a..b], s, key, a as u64, &mut pieces[a..b]).unwrap();
        }
        prop_assert_eq!(&pieces, &whole);
        // Word-aligned cuts for planes, byte-aligned cuts for base 3.
        let wcuts: Vec<usize> = cuts.iter().map(|c| (c / 64 * 64).min(n)).chain([n]).collect();
        let words = plane_words(n);
        let (mut p, mut m) = (vec![0u64; words], vec![0u64; words]);
        for w in wcuts.windows(2) {
            let (a, b) = (w[0], w[1].max(w[0]));
            let (wa, wb) = (a / 64, a / 64 + plane_words(b - a));
            quantize_stochastic_planes_with_scale_into(&x[a..b], s, key, (a / 64) as u64, &mut p[wa..wb], &mut m[wa..wb]).unwrap();
        }
        let mut back = vec![0i8; n];
        unpack_planes(&p, &m, &mut back).unwrap();
        prop_assert_eq!(&back, &whole);
        let bcuts: Vec<usize> = cuts.iter().map(|c| (c / 5 * 5).min(n)).chain([n]).collect();
        let mut bytes = vec![0u8; base3_bytes(n)];
        for w in bcuts.windows(2) {
            let (a, b) = (w[0], w[1].max(w[0]));
            let (ba, bb) = (a / 5, a / 5 + base3_bytes(b - a));
            quantize_stochastic_base3_with_scale_into(&x[a..b], s, key, (a / 5) as u64, &mut bytes[ba..bb]).unwrap();
        }
        unpack_base3(&bytes, &mut back).unwrap();
        prop_assert_eq!(&back, &whole);
    }

    #[test]
    fn deterministic_error_bounds(x in floats(500)) {
        // Absmean: |x - g q| <= max(g/2, |x| - g) elementwise (q = 0 iff |x| <= g/2).
        let mut q = vec![0i8; x.len()];
        let g = quantize_absmean_into(&x, &mut q).unwrap();
        for (&v, &t) in x.iter().zip(&q) {
            let err = (v - g * f32::from(t)).abs();
            let bound = (g / 2.0).max(v.abs() - g);
            prop_assert!(err <= bound * (1.0 + 1e-6) + f32::MIN_POSITIVE, "{} {} {} {}", v, t, g, err);
            if t != 0 { prop_assert_eq!(t as f32, v.signum()); }
        }
        // Threshold: q_i != 0 exactly when |x_i| > delta * mean|x|.
        let d = 0.7f32;
        let s = quantize_threshold_into(&x, d, &mut q).unwrap();
        let t = d * mean_abs(&x).unwrap();
        for (&v, &qi) in x.iter().zip(&q) {
            prop_assert_eq!(qi != 0, v.abs() > t);
        }
        prop_assert!(s >= 0.0 && s.is_finite());
    }

    #[test]
    fn stochastic_trits_have_sign_of_x(x in floats(300), seed in any::<u64>()) {
        let s = max_abs(&x).unwrap();
        let mut q = vec![0i8; x.len()];
        quantize_stochastic_into(&x, s, RngKey::new(seed, 0, 0), 0, &mut q).unwrap();
        for (&v, &t) in x.iter().zip(&q) {
            prop_assert!(t == 0 || f32::from(t) == v.signum());
            // |x| = s is always kept.
            if v != 0.0 && v.abs() == s { prop_assert_eq!(f32::from(t), v.signum()); }
        }
    }

    #[test]
    fn accumulator_is_deterministic_and_state_round_trips(len in 0usize..900, seed in any::<u64>(), block in 1usize..100, t in 0usize..4, log8 in any::<bool>()) {
        let scale_format = if log8 { ScaleFormat::Log8 } else { ScaleFormat::F32 };
        let cfg = AccumulatorConfig { accumulation_steps: 3, seed, tensor_id: 9, scale_granularity: ScaleGranularity::PerBlock(block * 5), trits_per_element: SUPPORTED_TRITS[t], scale_format, ..Default::default() };
        let g: Vec<f32> = (0..len).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let mut a = PackedAccumulator::new(len, cfg).unwrap();
        let mut b = PackedAccumulator::new(len, cfg).unwrap();
        a.accumulate(&g).unwrap();
        b.accumulate(&g).unwrap();
        // Checkpoint after one step, continue both.
        let mut c = PackedAccumulator::from_state(a.state()).unwrap();
        for acc in [&mut a, &mut b, &mut c] {
            acc.accumulate(&g).unwrap();
        }
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(&a, &c);
        // Every trit has the sign of its gradient or is zero, so the mean keeps the signs.
        let mean = a.mean();
        prop_assert!(mean.iter().zip(&g).all(|(m, gi)| m.is_finite() && (*m == 0.0 || m.signum() == gi.signum())));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Multi-trit packing round trips at every trit count and length, and agrees with the
    /// single-trit base-3 layout of the trit stream.
    #[test]
    fn levels_round_trip(vals in prop::collection::vec(-121i32..=121, 0..700), t in 0usize..4) {
        let n = SUPPORTED_TRITS[t];
        let l = max_level(n);
        let v: Vec<i8> = vals.iter().map(|x| (x % (l + 1)) as i8).collect();
        let mut bytes = vec![0u8; levels_bytes(n, v.len())];
        pack_levels(n, &v, &mut bytes).unwrap();
        let mut back = vec![0i8; v.len()];
        unpack_levels(n, &bytes, &mut back).unwrap();
        prop_assert_eq!(&back, &v);
        // The same bytes read as a plain trit stream give the balanced digits of each value.
        let mut trits = vec![0i8; usize::from(n) * v.len()];
        unpack_base3(&bytes, &mut trits).unwrap();
        for (x, d) in v.iter().zip(trits.chunks(usize::from(n))) {
            let val = d.iter().rev().fold(0i32, |a, &t| 3 * a + i32::from(t));
            prop_assert_eq!(val, i32::from(*x));
        }
    }
}

/// The same accumulation run on 4 threads at once gives bit-identical states (no shared or
/// thread-dependent randomness).
#[test]
fn accumulator_is_thread_independent() {
    let g: Vec<Vec<f32>> = (0..4)
        .map(|k| {
            (0..5000)
                .map(|i| ((i * 31 + k * 7) % 97) as f32 - 48.0)
                .collect()
        })
        .collect();
    for n in SUPPORTED_TRITS {
        let cfg = AccumulatorConfig {
            accumulation_steps: 4,
            seed: 5,
            trits_per_element: n,
            ..Default::default()
        };
        let run = || {
            let mut a = PackedAccumulator::new(5000, cfg).unwrap();
            for x in &g {
                a.accumulate(x).unwrap();
            }
            a.state()
        };
        let single = run();
        let states: Vec<AccumulatorState> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4).map(|_| s.spawn(run)).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(states.iter().all(|st| *st == single), "{n} trits");
    }
}

/// A later micro-batch far larger than the window's earlier ones raises the 8-bit scales'
/// reference instead of clipping: the mean of a constant 1e-6 and a constant 1e6 tensor is
/// exact at one trit, and finite up to f32::MAX at every trit count.
#[test]
fn later_larger_micro_batch_is_not_clipped() {
    let mut a = PackedAccumulator::new(
        60,
        AccumulatorConfig {
            accumulation_steps: 2,
            ..Default::default()
        },
    )
    .unwrap();
    a.accumulate(&[1e-6; 60]).unwrap();
    a.accumulate(&[1e6; 60]).unwrap();
    let expect = 0.5f32 * 1e-6 + 0.5 * 1e6;
    assert!(
        a.mean().iter().all(|&m| m == expect),
        "{:?}",
        &a.mean()[..3]
    );
    for n in SUPPORTED_TRITS {
        let mut a = PackedAccumulator::new(
            60,
            AccumulatorConfig {
                accumulation_steps: 3,
                trits_per_element: n,
                ..Default::default()
            },
        )
        .unwrap();
        let small: Vec<f32> = (0..60).map(|i| (i as f32 - 30.0) * 1e-30).collect();
        a.accumulate(&small).unwrap();
        a.accumulate(&[f32::MAX; 60]).unwrap();
        a.accumulate(&[-f32::MAX; 60]).unwrap();
        assert!(a.mean().iter().all(|m| m.is_finite()), "{n} trits");
    }
}

/// Unsupported trit counts are typed errors, at construction and on restore.
#[test]
fn unsupported_trit_counts_are_rejected() {
    for n in [0u8, 4, 6, 255] {
        let cfg = AccumulatorConfig {
            trits_per_element: n,
            ..Default::default()
        };
        assert!(matches!(
            PackedAccumulator::new(10, cfg),
            Err(Error::InvalidParameter {
                param: "trits_per_element",
                ..
            })
        ));
        let mut st = PackedAccumulator::new(10, AccumulatorConfig::default())
            .unwrap()
            .state();
        st.config.trits_per_element = n;
        assert!(PackedAccumulator::from_state(st).is_err());
    }
    // A state whose level bytes do not match its trit count is rejected.
    let mut st = PackedAccumulator::new(
        10,
        AccumulatorConfig {
            trits_per_element: 2,
            ..Default::default()
        },
    )
    .unwrap()
    .state();
    st.config.trits_per_element = 3;
    assert!(matches!(
        PackedAccumulator::from_state(st),
        Err(Error::LengthMismatch { .. })
    ));
}
