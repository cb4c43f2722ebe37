//! Algebraic laws of `RealVector`.

use proptest::prelude::*;
use vsa_core::{BinaryVector, RealVector};

use crate::common::{bipolar, len_strategy, rotate_ref};

fn pair() -> impl Strategy<Value = (Vec<f32>, Vec<i8>)> {
    len_strategy().prop_flat_map(|n| (proptest::collection::vec(-1e3f32..1e3, n), bipolar(n)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn bind_with_sign_key_is_exact_product_and_self_inverse((x, k) in pair()) {
        let vx = RealVector::from_vec(x.clone()).unwrap();
        let key = BinaryVector::from_bipolar(&k).unwrap();
        let bound = vx.bind(&key).unwrap();
        for i in 0..x.len() {
            prop_assert_eq!(bound.as_slice()[i], x[i] * f32::from(k[i]));
        }
        // Bit-exact round trip.
        prop_assert_eq!(bound.unbind(&key).unwrap(), vx.clone());
        prop_assert_eq!(vx.mul(&key.to_real()).unwrap(), bound);
    }

    #[test]
    fn permute_matches_reference_is_invertible_and_distributes((x, k) in pair(), s in 0usize..1000) {
        let vx = RealVector::from_vec(x.clone()).unwrap();
        let key = BinaryVector::from_bipolar(&k).unwrap();
        let px = vx.permute(s);
        prop_assert_eq!(px.as_slice(), &rotate_ref(&x, s)[..]);
        prop_assert_eq!(px.inverse_permute(s), vx.clone());
        prop_assert_eq!(vx.bind(&key).unwrap().permute(s), px.bind(&key.permute(s)).unwrap());
    }

    #[test]
    fn dot_and_bundle_match_reference((x, k) in pair()) {
        let vx = RealVector::from_vec(x.clone()).unwrap();
        let vk = BinaryVector::from_bipolar(&k).unwrap().to_real();
        let dot: f64 = x.iter().zip(&k).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
        // f32 lanes: each lane sums at most n/16 products of size <= 1e3, so the error is
        // below n * 1e3 * 2^-24 * n / 16 (crude worst case), far under this bound.
        let tol = 1e-3 * x.len() as f64;
        prop_assert!((vx.dot(&vk).unwrap() - dot).abs() <= tol);
        let sum = RealVector::bundle(&[&vx, &vk, &vx]).unwrap();
        for i in 0..x.len() {
            prop_assert_eq!(sum.as_slice()[i], x[i] + f32::from(k[i]) + x[i]);
        }
    }
}

#[test]
fn random_real_is_the_expansion_of_random_binary() {
    let r = RealVector::random(1000, 5, 9).unwrap();
    let b = BinaryVector::random(1000, 5, 9).unwrap();
    assert_eq!(r, b.to_real());
    assert!(r.as_slice().iter().all(|&v| v == 1.0 || v == -1.0));
}
