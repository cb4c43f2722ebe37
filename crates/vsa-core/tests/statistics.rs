//! Statistical laws: quasi-orthogonality and bundle similarity, with tolerances derived from
//! the variance (see each comment). Every bound is at least 6 standard deviations, so a false
//! failure has probability below 1e-8 per case.

use proptest::prelude::*;
use vsa_core::{BinaryVector, RealVector, TernaryVector};

const D: usize = 10_000;

/// One standard deviation of a cosine that is a mean of D independent terms bounded by 1.
fn sigma() -> f64 {
    1.0 / (D as f64).sqrt()
}

/// Binomial(n, 1/2) probabilities.
fn binom_half(n: usize) -> Vec<f64> {
    let mut p = vec![1.0f64];
    for _ in 0..n {
        let mut q = vec![0.0; p.len() + 1];
        for (k, &v) in p.iter().enumerate() {
            q[k] += v / 2.0;
            q[k + 1] += v / 2.0;
        }
        p = q;
    }
    p
}

/// Exact E[cos(bundle, input)] for the binary majority of m random vectors with the fixed
/// tie-break: with A ~ Bin(m-1, 1/2) others agreeing with the input, the result agrees when
/// A + 1 > m/2, and with probability 1/2 (the tie bit is independent of random inputs) when
/// A + 1 = m/2. E cos = 2 P(agree) − 1.
fn binary_bundle_expected_cos(m: usize) -> f64 {
    let p = binom_half(m - 1);
    let mut agree = 0.0;
    for (a, &pa) in p.iter().enumerate() {
        if 2 * (a + 1) > m {
            agree += pa;
        } else if 2 * (a + 1) == m {
            agree += pa / 2.0;
        }
    }
    2.0 * agree - 1.0
}

/// Distribution of the sum of n iid trits with P(±1) = 1/4, P(0) = 1/2, offset by n.
fn trit_sum(n: usize) -> Vec<f64> {
    let mut p = vec![1.0f64];
    for _ in 0..n {
        let mut q = vec![0.0; p.len() + 2];
        for (k, &v) in p.iter().enumerate() {
            q[k] += v / 4.0;
            q[k + 1] += v / 2.0;
            q[k + 2] += v / 4.0;
        }
        p = q;
    }
    p
}

/// E[cos(bundle, input)] for ternary bundling of m random ternary vectors:
/// E[v·sign(v + R)] / sqrt(E[v²]·P(S ≠ 0)), R = sum of the other m−1, S = sum of all m.
fn ternary_bundle_expected_cos(m: usize) -> f64 {
    let r = trit_sum(m - 1);
    let off = (m - 1) as i64;
    let sign = |x: i64| x.signum() as f64;
    // v = +1 and v = -1 each with probability 1/4; by symmetry both contribute equally.
    let e_vs: f64 = r
        .iter()
        .enumerate()
        .map(|(k, &p)| 0.5 * p * sign(k as i64 - off + 1))
        .sum();
    let s = trit_sum(m);
    let p_nonzero = 1.0 - s[m];
    e_vs / (0.5 * p_nonzero).sqrt()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Two random vectors: E cos = 0 and sd cos = 1/√D for all three models (binary and real:
    /// mean of D iid ±1; ternary: dot has variance D/4 and nnz ≈ D/2, so sd = 1/√D).
    #[test]
    fn random_vectors_are_quasi_orthogonal(seed in any::<u64>(), k1 in any::<u64>(), k2 in any::<u64>()) {
        prop_assume!(k1 != k2);
        let tol = 6.0 * sigma();
        let c = BinaryVector::random(D, seed, k1).unwrap().cosine(&BinaryVector::random(D, seed, k2).unwrap()).unwrap();
        prop_assert!(c.abs() < tol, "binary cos {c}");
        let c = TernaryVector::random(D, seed, k1).unwrap().cosine(&TernaryVector::random(D, seed, k2).unwrap()).unwrap();
        prop_assert!(c.abs() < tol, "ternary cos {c}");
        let c = RealVector::random(D, seed, k1).unwrap().cosine(&RealVector::random(D, seed, k2).unwrap()).unwrap();
        prop_assert!(c.abs() < tol, "real cos {c}");
        // Different seeds, same key: also independent.
        let c = BinaryVector::random(D, seed, k1).unwrap().cosine(&BinaryVector::random(D, seed ^ 1, k1).unwrap()).unwrap();
        prop_assert!(c.abs() < tol, "binary cos across seeds {c}");
    }

    /// The bundle of m random vectors stays similar to each input: binary E cos is computed
    /// exactly above (≈ √(2/(πm)) ≥ 0.7/√m), per-element agreements are independent so the
    /// sd is ≤ 1/√D; we allow 6σ.
    #[test]
    fn binary_bundle_is_similar_to_inputs(seed in any::<u64>(), m in 1usize..=31) {
        let vs: Vec<BinaryVector> = (0..m as u64).map(|k| BinaryVector::random(D, seed, k).unwrap()).collect();
        let refs: Vec<&BinaryVector> = vs.iter().collect();
        let b = BinaryVector::bundle(&refs).unwrap();
        let expect = binary_bundle_expected_cos(m);
        prop_assert!(expect >= 0.7 / (m as f64).sqrt());
        for v in &vs {
            let c = b.cosine(v).unwrap();
            prop_assert!((c - expect).abs() < 6.0 * sigma(), "m={m} cos={c} expected {expect}");
        }
        // And unrelated vectors stay orthogonal to it.
        let other = BinaryVector::random(D, seed, 1_000_000).unwrap();
        prop_assert!(b.cosine(&other).unwrap().abs() < 6.0 * sigma());
    }

    /// Ternary bundle (sign of the sum): expected cosine from the exact trit-sum distribution
    /// (≈ 0.8/√m for large m). The ratio of empirical means adds a relative O(1/√D) error to
    /// the numerator's 1/√D, so we allow 8σ.
    #[test]
    fn ternary_bundle_is_similar_to_inputs(seed in any::<u64>(), m in 1usize..=31) {
        let vs: Vec<TernaryVector> = (0..m as u64).map(|k| TernaryVector::random(D, seed, k).unwrap()).collect();
        let refs: Vec<&TernaryVector> = vs.iter().collect();
        let b = TernaryVector::bundle(&refs).unwrap();
        let expect = ternary_bundle_expected_cos(m);
        prop_assert!(expect >= 0.7 / (m as f64).sqrt());
        for v in &vs {
            let c = b.cosine(v).unwrap();
            prop_assert!((c - expect).abs() < 8.0 * sigma(), "m={m} cos={c} expected {expect}");
        }
    }

    /// Real bundle (sum) of m random ±1 vectors: cos(Σv, vᵢ) = (1 + e₁)/√(m + e₂) with
    /// sd(e₁) = √((m−1)/D), sd(e₂) = √(2m(m−1)/D); to first order the sd of the cosine is
    /// √((m−1)/(mD) + (m−1)/(2m²D)) ≤ √(1.5/D). 6 of those is < 8/√D.
    #[test]
    fn real_bundle_is_similar_to_inputs(seed in any::<u64>(), m in 1usize..=31) {
        let vs: Vec<RealVector> = (0..m as u64).map(|k| RealVector::random(D, seed, k).unwrap()).collect();
        let refs: Vec<&RealVector> = vs.iter().collect();
        let b = RealVector::bundle(&refs).unwrap();
        let expect = 1.0 / (m as f64).sqrt();
        for v in &vs {
            let c = b.cosine(v).unwrap();
            prop_assert!((c - expect).abs() < 8.0 * sigma(), "m={m} cos={c} expected {expect}");
        }
    }
}

#[test]
fn expected_cosines_are_sane() {
    // m = 1: the bundle is the input. m = 2 (binary): agree w.p. 3/4, so E cos = 1/2.
    assert_eq!(binary_bundle_expected_cos(1), 1.0);
    assert_eq!(binary_bundle_expected_cos(2), 0.5);
    assert_eq!(binary_bundle_expected_cos(3), 0.5);
    assert!((ternary_bundle_expected_cos(1) - 1.0).abs() < 1e-12);
}
