//! Algebraic laws of `TernaryVector`, checked against element-wise references.

use proptest::prelude::*;
use vsa_core::{BundleAccumulator, TernaryVector};

use crate::common::{len_strategy, rotate_ref, trits};

fn triple() -> impl Strategy<Value = (Vec<i8>, Vec<i8>, Vec<i8>)> {
    len_strategy().prop_flat_map(|n| (trits(n), trits(n), trits(n)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn packing_round_trips((a, _, _) in triple()) {
        let v = TernaryVector::from_trits(&a).unwrap();
        prop_assert_eq!(v.to_trits(), a.clone());
        for (i, &x) in a.iter().enumerate() {
            prop_assert_eq!(v.get(i), Some(x));
        }
        prop_assert_eq!(v.get(a.len()), None);
        // Layout: element i at word i/64, bit i%64 of plus (+1) or minus (-1).
        let (p, m) = v.planes();
        for (i, &x) in a.iter().enumerate() {
            prop_assert_eq!((p[i / 64] >> (i % 64)) & 1, u64::from(x == 1));
            prop_assert_eq!((m[i / 64] >> (i % 64)) & 1, u64::from(x == -1));
        }
        let w = TernaryVector::from_planes(v.len(), p.to_vec(), m.to_vec()).unwrap();
        prop_assert_eq!(&w, &v);
        prop_assert_eq!(v.nnz(), a.iter().filter(|&&x| x != 0).count() as u64);
    }

    #[test]
    fn bind_is_product_and_unbind_recovers_on_the_key_support((a, b, c) in triple()) {
        let (va, vb, vc) = (
            TernaryVector::from_trits(&a).unwrap(),
            TernaryVector::from_trits(&b).unwrap(),
            TernaryVector::from_trits(&c).unwrap(),
        );
        let ab = va.bind(&vb).unwrap();
        let expect: Vec<i8> = a.iter().zip(&b).map(|(x, y)| x * y).collect();
        prop_assert_eq!(ab.to_trits(), expect);
        // unbind(a*k, k) = a * |k|: exact where k != 0, zero where k == 0.
        let masked: Vec<i8> = a.iter().zip(&b).map(|(x, y)| x * y.abs()).collect();
        prop_assert_eq!(ab.unbind(&vb).unwrap().to_trits(), masked);
        prop_assert_eq!(vb.bind(&va).unwrap(), ab.clone());
        prop_assert_eq!(ab.bind(&vc).unwrap(), va.bind(&vb.bind(&vc).unwrap()).unwrap());
        let one = TernaryVector::ones(a.len()).unwrap();
        prop_assert_eq!(va.bind(&one).unwrap(), va.clone());
    }

    #[test]
    fn permute_matches_reference_is_invertible_and_distributes((a, b, _) in triple(), k in 0usize..1000) {
        let (va, vb) = (TernaryVector::from_trits(&a).unwrap(), TernaryVector::from_trits(&b).unwrap());
        let pa = va.permute(k);
        prop_assert_eq!(pa.to_trits(), rotate_ref(&a, k));
        prop_assert_eq!(pa.inverse_permute(k), va.clone());
        prop_assert_eq!(va.bind(&vb).unwrap().permute(k), pa.bind(&vb.permute(k)).unwrap());
        let (p, m) = pa.planes();
        prop_assert!(TernaryVector::from_planes(pa.len(), p.to_vec(), m.to_vec()).is_ok());
    }

    #[test]
    fn similarity_matches_reference((a, b, _) in triple()) {
        let (va, vb) = (TernaryVector::from_trits(&a).unwrap(), TernaryVector::from_trits(&b).unwrap());
        let dot: i64 = a.iter().zip(&b).map(|(x, y)| i64::from(x * y)).sum();
        prop_assert_eq!(va.dot(&vb).unwrap(), dot);
        let ham = a.iter().zip(&b).filter(|(x, y)| x != y).count() as u64;
        prop_assert_eq!(va.hamming(&vb).unwrap(), ham);
        let na = a.iter().filter(|&&x| x != 0).count() as f64;
        let nb = b.iter().filter(|&&x| x != 0).count() as f64;
        let cos = if na * nb == 0.0 { 0.0 } else { dot as f64 / (na * nb).sqrt() };
        prop_assert!((va.cosine(&vb).unwrap() - cos).abs() < 1e-12);
    }

    #[test]
    fn bundle_is_sign_of_sum(
        (n, vs) in len_strategy().prop_flat_map(|n| (Just(n), proptest::collection::vec(trits(n), 1..=20)))
    ) {
        let packed: Vec<TernaryVector> = vs.iter().map(|v| TernaryVector::from_trits(v).unwrap()).collect();
        let refs: Vec<&TernaryVector> = packed.iter().collect();
        let got = TernaryVector::bundle(&refs).unwrap();
        let expect: Vec<i8> = (0..n)
            .map(|i| vs.iter().map(|v| i32::from(v[i])).sum::<i32>().signum() as i8)
            .collect();
        prop_assert_eq!(got.to_trits(), expect);
        let mut acc = BundleAccumulator::new(n).unwrap();
        for v in &packed {
            acc.add_ternary(v).unwrap();
        }
        prop_assert_eq!(acc.to_ternary(), got.clone());
        if packed.len() == 2 {
            prop_assert_eq!(packed[0].bundle2(&packed[1]).unwrap(), got);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Long vectors exercise the blocked kernels (8-word bundling blocks, 64-word Harley–Seal
    /// dot blocks) and their remainders.
    #[test]
    fn long_vectors_match_reference(n in 500usize..9000, seed in any::<u64>(), m in 1usize..40) {
        let vs: Vec<TernaryVector> = (0..m as u64).map(|i| TernaryVector::random(n, seed, i).unwrap()).collect();
        let (a, b) = (vs[0].to_trits(), vs[m - 1].to_trits());
        let dot: i64 = a.iter().zip(&b).map(|(x, y)| i64::from(x * y)).sum();
        prop_assert_eq!(vs[0].dot(&vs[m - 1]).unwrap(), dot);
        let refs: Vec<&TernaryVector> = vs.iter().collect();
        let got = TernaryVector::bundle(&refs).unwrap();
        let mut acc = BundleAccumulator::new(n).unwrap();
        for v in &refs {
            acc.add_ternary(v).unwrap();
        }
        prop_assert_eq!(got, acc.to_ternary());
    }
}
