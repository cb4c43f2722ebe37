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
    fn accumulator_is_deterministic_and_state_round_trips(len in 0usize..900, seed in any::<u64>(), block in 1usize..100) {
        let cfg = AccumulatorConfig { accumulation_steps: 3, seed, tensor_id: 9, scale_granularity: ScaleGranularity::PerBlock(block * 5), ..Default::default() };
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
