//! Random projection: adjointness, the exact diagonal of S·Sᵀ, the projector and its
//! statistics.

use proptest::prelude::*;
use vsa_core::RandomProjection;

/// Deterministic pseudo-random test input from a seed (values in [-1, 1)).
fn input(n: usize, seed: u64) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let h = vsa_core::rng::mix(seed, i);
            (h >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum()
}

fn dims() -> impl Strategy<Value = (usize, usize)> {
    (1usize..3000, 1usize..400)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// ⟨S x, y⟩ = ⟨x, Sᵀ y⟩. Sᵀy is exact (sign flips). Each y_j of Sx is an f32 sum of
    /// k terms |x| ≤ 1, error ≤ k·2⁻²⁴·k, so |Δ| ≤ D·k²·2⁻²⁴·max|y| (+ f64 dot rounding).
    #[test]
    fn transpose_is_the_adjoint((n, d) in dims(), seed in any::<u64>()) {
        let p = RandomProjection::new(n, d, seed).unwrap();
        let x = input(n, seed ^ 1);
        let y = input(d, seed ^ 2);
        let mut sx = vec![0f32; d];
        let mut sty = vec![0f32; n];
        p.encode_into(&x, &mut sx).unwrap();
        p.transpose_into(&y, &mut sty).unwrap();
        let k = p.num_chunks() as f64;
        let tol = d as f64 * k * k * 2f64.powi(-23) + 1e-9;
        prop_assert!((dot(&sx, &y) - dot(&x, &sty)).abs() <= tol);
    }

    /// S Sᵀ = diag(m) exactly: encode(transpose(y)) = m ⊙ y, with m from `slot_count`, and
    /// Σ m_j = n. Adding y_j to a running f32 sum m times rounds each step by at most
    /// i·|y_j|·2⁻²⁴, so the error is below m²·|y_j|·2⁻²⁴.
    #[test]
    fn s_st_is_the_slot_count_diagonal((n, d) in dims(), seed in any::<u64>()) {
        let p = RandomProjection::new(n, d, seed).unwrap();
        let y = input(d, seed);
        let mut x = vec![0f32; n];
        let mut back = vec![0f32; d];
        p.transpose_into(&y, &mut x).unwrap();
        p.encode_into(&x, &mut back).unwrap();
        let mut total = 0;
        for j in 0..d {
            let m = p.slot_count(j).unwrap();
            total += m;
            let want = m as f32 * y[j];
            prop_assert!((back[j] - want).abs() <= (m * m) as f32 * 2f32.powi(-24) * y[j].abs());
        }
        prop_assert_eq!(total, n);
        prop_assert_eq!(p.slot_count(d), None);
    }

    /// P = Sᵀ diag(1/m) S is an orthogonal projector: idempotent, and x − Px ⟂ Px, so
    /// ‖x − Px‖² = ‖x‖² − ‖Px‖² ≤ ‖x‖² (the contraction error feedback needs).
    #[test]
    fn reconstruction_is_an_orthogonal_projector((n, d) in dims(), seed in any::<u64>()) {
        let p = RandomProjection::new(n, d, seed).unwrap();
        let x = input(n, seed);
        let (mut y, mut px, mut ppx, mut y2) = (vec![0f32; d], vec![0f32; n], vec![0f32; n], vec![0f32; d]);
        p.encode_into(&x, &mut y).unwrap();
        p.reconstruct_into(&y, &mut px).unwrap();
        p.encode_into(&px, &mut y2).unwrap();
        p.reconstruct_into(&y2, &mut ppx).unwrap();
        let nx = dot(&x, &x);
        let k = p.num_chunks() as f64;
        // f32 rounding: every step is a sum of ≤ k terms of size ≤ 1.
        let tol = 1e-5 * k * (nx + 1.0);
        let diff: f64 = px.iter().zip(&ppx).map(|(a, b)| f64::from(a - b).powi(2)).sum();
        prop_assert!(diff <= tol, "not idempotent: {diff}");
        let r: Vec<f32> = x.iter().zip(&px).map(|(a, b)| a - b).collect();
        prop_assert!(dot(&r, &px).abs() <= tol, "residual not orthogonal");
        prop_assert!(dot(&r, &r) <= nx + tol);
        if n <= d {
            // One chunk: S is a signed identity on the first n slots, P = I.
            prop_assert!(dot(&r, &r) <= tol);
        }
    }
}

/// For a fixed x and random keys, ‖Px‖² = Σ_j (Σ_c s_c(j) x_cj)² / m_j has mean
/// Σ_j Σ_c x_cj² / m_j = ‖x‖²/k (all m_j = k here: n = kD), i.e. cos(x, Px) = ‖Px‖/‖x‖ ≈
/// 1/√k = √(D/n). Each of the D slot terms is a normalised sum of k independent signed terms;
/// its variance is ≤ 2·(Σ_c x_cj²)²/k², so the relative sd of the total is about √(2/D).
/// We allow 6 of those.
#[test]
fn projection_keeps_one_over_k_of_the_energy() {
    let (d, k) = (1024, 64);
    let n = d * k;
    let x = input(n, 5);
    let nx = dot(&x, &x);
    let rel_sd = (2.0 / d as f64).sqrt();
    for seed in 0..4 {
        let p = RandomProjection::new(n, d, seed).unwrap();
        let (mut y, mut px) = (vec![0f32; d], vec![0f32; n]);
        p.encode_into(&x, &mut y).unwrap();
        p.reconstruct_into(&y, &mut px).unwrap();
        let ratio = dot(&px, &px) / nx * k as f64;
        assert!(
            (ratio - 1.0).abs() < 6.0 * rel_sd,
            "seed {seed}: k·‖Px‖²/‖x‖² = {ratio}"
        );
        let cos = dot(&x, &px) / (nx * dot(&px, &px)).sqrt();
        let expect = (d as f64 / n as f64).sqrt();
        assert!(
            (cos / expect - 1.0).abs() < 3.0 * rel_sd,
            "seed {seed}: cos {cos} vs {expect}"
        );
    }
}

#[test]
fn partial_last_chunk_counts() {
    // n = 25, D = 10: chunks [0,10), [10,20), [20,25); slots 0..5 reached 3 times, 5..10 twice.
    let p = RandomProjection::new(25, 10, 1).unwrap();
    assert_eq!(p.num_chunks(), 3);
    let counts: Vec<usize> = (0..10).map(|j| p.slot_count(j).unwrap()).collect();
    assert_eq!(counts, [3, 3, 3, 3, 3, 2, 2, 2, 2, 2]);
    // n < D: slots past n are never reached.
    let q = RandomProjection::new(3, 5, 1).unwrap();
    let counts: Vec<usize> = (0..5).map(|j| q.slot_count(j).unwrap()).collect();
    assert_eq!(counts, [1, 1, 1, 0, 0]);
}

#[test]
fn chunk_keys_are_random_signs() {
    // The transpose of the all-ones y is the concatenation of the chunk keys: about half of
    // the n = 100,000 signs are negative (sd √n/2 ≈ 158; allow 6σ), and every value is ±1.
    let p = RandomProjection::new(100_000, 1000, 77).unwrap();
    let mut x = vec![0f32; 100_000];
    p.transpose_into(&[1.0; 1000], &mut x).unwrap();
    assert!(x.iter().all(|&v| v == 1.0 || v == -1.0));
    let neg = x.iter().filter(|&&v| v < 0.0).count() as f64;
    assert!((neg - 50_000.0).abs() < 6.0 * 158.2);
    // Two chunks use different keys.
    let agree = x[..1000]
        .iter()
        .zip(&x[1000..2000])
        .filter(|(a, b)| a == b)
        .count();
    assert!((agree as f64 - 500.0).abs() < 6.0 * 15.9);
}
