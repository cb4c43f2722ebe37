//! The fixed-order reduction that makes the `f32` mode bit-deterministic.
//!
//! Floating-point addition is not associative, so an `MPI_Allreduce` whose algorithm picks
//! the summation tree (ring, recursive doubling, ...) can give different bits on different
//! world sizes, message sizes or library versions. Here every rank receives every rank's
//! contribution and sums them itself, always as `((c₀ + c₁) + c₂) + …` in rank order, then
//! divides by the number of contributions. A single process that computes the same
//! contributions and calls these functions in the same order gets the same bits.

use crate::error::{Error, Result};

/// `acc[i] += x[i]` (one rounding per element, the order of the caller's calls).
///
/// # Errors
/// [`Error::LengthMismatch`] when the lengths differ (nothing is written).
pub fn add_into(acc: &mut [f32], x: &[f32]) -> Result<()> {
    if acc.len() != x.len() {
        return Err(Error::LengthMismatch {
            what: "reduction input".into(),
            expected: acc.len(),
            actual: x.len(),
        });
    }
    for (a, &b) in acc.iter_mut().zip(x) {
        *a += b;
    }
    Ok(())
}

/// `acc[i] /= count` (a true division, not a multiplication by `1/count`, so that
/// `count = 1` is exact and the result is the correctly rounded quotient).
pub fn divide(acc: &mut [f32], count: usize) {
    let c = count as f32;
    for a in acc.iter_mut() {
        *a /= c;
    }
}

/// The mean of `parts` in rank order: `out = ((p₀ + p₁) + … + p_{N−1}) / N`, per element.
/// Every part is a parameter list (one `Vec<f32>` per parameter).
///
/// # Errors
/// [`Error::LengthMismatch`] when a part's layout differs from `out`'s, or `parts` is empty;
/// `out` is untouched on error.
pub fn mean_in_rank_order(parts: &[&[Vec<f32>]], out: &mut [Vec<f32>]) -> Result<()> {
    if parts.is_empty() {
        return Err(Error::LengthMismatch {
            what: "number of contributions".into(),
            expected: 1,
            actual: 0,
        });
    }
    for p in parts {
        check_layout(p, out)?;
    }
    for (k, o) in out.iter_mut().enumerate() {
        o.copy_from_slice(&parts[0][k]);
        for p in &parts[1..] {
            add_into(o, &p[k])?;
        }
        divide(o, parts.len());
    }
    Ok(())
}

/// Checks that `a` and `b` have the same number of parameters and lengths.
///
/// # Errors
/// [`Error::LengthMismatch`].
pub fn check_layout(a: &[Vec<f32>], b: &[Vec<f32>]) -> Result<()> {
    if a.len() != b.len() {
        return Err(Error::LengthMismatch {
            what: "number of parameters".into(),
            expected: b.len(),
            actual: a.len(),
        });
    }
    for (k, (x, y)) in a.iter().zip(b).enumerate() {
        if x.len() != y.len() {
            return Err(Error::LengthMismatch {
                what: format!("parameter {k}"),
                expected: y.len(),
                actual: x.len(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_is_left_to_right_in_rank_order() {
        // 1e8 + 1 − 1e8: left to right in f32 gives 0 (1e8 + 1 rounds to 1e8), any other
        // order that adds 1 last gives 1. The function must give the left-to-right value.
        let parts = [vec![vec![1.0e8f32]], vec![vec![1.0]], vec![vec![-1.0e8]]];
        let refs: Vec<&[Vec<f32>]> = parts.iter().map(|p| p.as_slice()).collect();
        let mut out = vec![vec![0f32]];
        mean_in_rank_order(&refs, &mut out).unwrap();
        assert_eq!(out[0][0], 0.0);
        let swapped = [refs[0], refs[2], refs[1]];
        mean_in_rank_order(&swapped, &mut out).unwrap();
        assert_eq!(out[0][0], 1.0 / 3.0);
    }

    #[test]
    fn one_part_is_exact_and_errors_leave_output() {
        let p = vec![vec![0.1f32, -3.0, 7.25]];
        let mut out = vec![vec![9f32; 3]];
        mean_in_rank_order(&[&p], &mut out).unwrap();
        assert_eq!(out, p);
        let bad = vec![vec![1f32; 2]];
        let before = out.clone();
        assert!(matches!(
            mean_in_rank_order(&[&p, &bad], &mut out),
            Err(Error::LengthMismatch { .. })
        ));
        assert_eq!(out, before);
        assert!(mean_in_rank_order(&[], &mut out).is_err());
    }
}
