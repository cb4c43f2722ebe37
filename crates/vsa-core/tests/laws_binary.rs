//! Algebraic laws of `BinaryVector`, checked against element-wise references.

use proptest::prelude::*;
use vsa_core::{BinaryVector, BundleAccumulator};

use crate::common::{bipolar, len_strategy, rotate_ref};

/// Three bipolar vectors of one random length.
fn triple() -> impl Strategy<Value = (Vec<i8>, Vec<i8>, Vec<i8>)> {
    len_strategy().prop_flat_map(|n| (bipolar(n), bipolar(n), bipolar(n)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn packing_round_trips((a, _, _) in triple()) {
        let v = BinaryVector::from_bipolar(&a).unwrap();
        prop_assert_eq!(v.to_bipolar(), a.clone());
        prop_assert_eq!(v.len(), a.len());
        for (i, &x) in a.iter().enumerate() {
            prop_assert_eq!(v.get(i), Some(x));
        }
        prop_assert_eq!(v.get(a.len()), None);
        // Words round trip, and padding bits are zero.
        let w = BinaryVector::from_words(v.len(), v.words().to_vec()).unwrap();
        prop_assert_eq!(&w, &v);
        prop_assert_eq!(v.to_real().sign(), v);
    }

    #[test]
    fn bind_is_elementwise_product_and_self_inverse((a, b, c) in triple()) {
        let (va, vb, vc) = (
            BinaryVector::from_bipolar(&a).unwrap(),
            BinaryVector::from_bipolar(&b).unwrap(),
            BinaryVector::from_bipolar(&c).unwrap(),
        );
        let ab = va.bind(&vb).unwrap();
        let expect: Vec<i8> = a.iter().zip(&b).map(|(x, y)| x * y).collect();
        prop_assert_eq!(ab.to_bipolar(), expect);
        prop_assert_eq!(ab.unbind(&vb).unwrap(), va.clone());
        prop_assert_eq!(vb.bind(&va).unwrap(), ab.clone());
        prop_assert_eq!(ab.bind(&vc).unwrap(), va.bind(&vb.bind(&vc).unwrap()).unwrap());
        let mut out = BinaryVector::ones(a.len()).unwrap();
        va.bind_into(&vb, &mut out).unwrap();
        prop_assert_eq!(out, ab);
    }

    #[test]
    fn permute_matches_reference_is_invertible_and_distributes((a, b, _) in triple(), k in 0usize..1000) {
        let (va, vb) = (BinaryVector::from_bipolar(&a).unwrap(), BinaryVector::from_bipolar(&b).unwrap());
        let pa = va.permute(k);
        prop_assert_eq!(pa.to_bipolar(), rotate_ref(&a, k));
        prop_assert_eq!(pa.inverse_permute(k), va.clone());
        prop_assert_eq!(
            va.bind(&vb).unwrap().permute(k),
            pa.bind(&vb.permute(k)).unwrap()
        );
        // Padding stays zero (from_words validates it).
        prop_assert!(BinaryVector::from_words(pa.len(), pa.words().to_vec()).is_ok());
        let mut out = BinaryVector::ones(a.len()).unwrap();
        va.permute_into(k, &mut out).unwrap();
        prop_assert_eq!(out, pa);
    }

    #[test]
    fn similarity_matches_reference((a, b, _) in triple()) {
        let (va, vb) = (BinaryVector::from_bipolar(&a).unwrap(), BinaryVector::from_bipolar(&b).unwrap());
        let dot: i64 = a.iter().zip(&b).map(|(x, y)| i64::from(x * y)).sum();
        let ham = a.iter().zip(&b).filter(|(x, y)| x != y).count() as u64;
        prop_assert_eq!(va.dot(&vb).unwrap(), dot);
        prop_assert_eq!(va.hamming(&vb).unwrap(), ham);
        prop_assert_eq!(va.cosine(&vb).unwrap(), dot as f64 / a.len() as f64);
        prop_assert_eq!(va.cosine(&va).unwrap(), 1.0);
    }

    #[test]
    fn bundle_is_majority_with_fixed_tie_break(
        (n, vs) in len_strategy().prop_flat_map(|n| (Just(n), proptest::collection::vec(bipolar(n), 1..=20)))
    ) {
        let packed: Vec<BinaryVector> = vs.iter().map(|v| BinaryVector::from_bipolar(v).unwrap()).collect();
        let refs: Vec<&BinaryVector> = packed.iter().collect();
        let got = BinaryVector::bundle(&refs).unwrap();
        let tie = BinaryVector::tie_breaker(n).unwrap().to_bipolar();
        let expect: Vec<i8> = (0..n)
            .map(|i| {
                let s: i32 = vs.iter().map(|v| i32::from(v[i])).sum();
                if s > 0 { 1 } else if s < 0 { -1 } else { tie[i] }
            })
            .collect();
        prop_assert_eq!(got.to_bipolar(), expect);
        // Order independent.
        let rev: Vec<&BinaryVector> = packed.iter().rev().collect();
        prop_assert_eq!(BinaryVector::bundle(&rev).unwrap(), got.clone());
        // Streaming accumulator agrees.
        let mut acc = BundleAccumulator::new(n).unwrap();
        for v in &packed {
            acc.add_binary(v).unwrap();
        }
        prop_assert_eq!(acc.count(), packed.len() as u64);
        prop_assert_eq!(acc.to_binary(), got.clone());
        if packed.len() == 2 {
            prop_assert_eq!(packed[0].bundle2(&packed[1]).unwrap(), got);
        }
    }
}

#[test]
fn tie_breaker_is_a_prefix_across_dimensions() {
    let small = BinaryVector::tie_breaker(100).unwrap().to_bipolar();
    let big = BinaryVector::tie_breaker(1000).unwrap().to_bipolar();
    assert_eq!(small[..], big[..100]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Long vectors exercise the blocked kernels (8-word bundling blocks, 64-word Harley–Seal
    /// popcount blocks) and their remainders.
    #[test]
    fn long_vectors_match_reference(n in 500usize..9000, seed in any::<u64>(), k in 0usize..20_000) {
        let vs: Vec<BinaryVector> = (0..5).map(|i| BinaryVector::random(n, seed, i).unwrap()).collect();
        let (a, b) = (vs[0].to_bipolar(), vs[1].to_bipolar());
        let ham = a.iter().zip(&b).filter(|(x, y)| x != y).count() as u64;
        prop_assert_eq!(vs[0].hamming(&vs[1]).unwrap(), ham);
        prop_assert_eq!(vs[0].permute(k).to_bipolar(), rotate_ref(&a, k));
        for m in [4usize, 5] {
            let refs: Vec<&BinaryVector> = vs[..m].iter().collect();
            let got = BinaryVector::bundle(&refs).unwrap();
            let mut acc = BundleAccumulator::new(n).unwrap();
            for v in &refs {
                acc.add_binary(v).unwrap();
            }
            prop_assert_eq!(got, acc.to_binary());
        }
    }
}
