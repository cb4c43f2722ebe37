//! The methods' kernels on slices: keyed hashes, the count sketch and its median estimate,
//! top-k selection, the random-k mask, and PowerSGD's products.

use vsa_core::rng::{mix, splitmix64};

/// A keyed 64-bit hash of element `j`.
#[inline]
fn hash(key: u64, j: usize) -> u64 {
    splitmix64(mix(key, j as u64))
}

/// Uniform in `[0, 1)` for element `j` under `key` (53 bits).
#[inline]
pub(crate) fn unit(key: u64, j: usize) -> f64 {
    (hash(key, j) >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether random-k keeps element `j` (probability `p`).
#[inline]
pub(crate) fn keep(key: u64, j: usize, p: f64) -> bool {
    p >= 1.0 || unit(key, j) < p
}

/// Bucket in `0..width` and sign of element `j` in the row keyed by `row_key`.
#[inline]
pub(crate) fn bucket_sign(row_key: u64, j: usize, width: usize) -> (usize, f32) {
    let h = hash(row_key, j);
    // Lemire's multiply-shift range reduction of the high 32 bits; the sign is bit 0.
    let b = (((h >> 32) * width as u64) >> 32) as usize;
    (b, if h & 1 == 0 { 1.0 } else { -1.0 })
}

/// `table[r][h_r(j)] += s_r(j)·x_j` for every row `r` (row-major `rows × width`), summed in
/// element order. `table` is overwritten.
pub(crate) fn sketch_into(x: &[f32], row_keys: &[u64], width: usize, table: &mut [f32]) {
    table.fill(0.0);
    for (r, &key) in row_keys.iter().enumerate() {
        let row = &mut table[r * width..(r + 1) * width];
        for (j, &v) in x.iter().enumerate() {
            let (b, s) = bucket_sign(key, j, width);
            row[b] += s * v;
        }
    }
}

/// `out_j = median_r s_r(j)·table[r][h_r(j)]` (the mean of the two middle values for an even
/// number of rows).
pub(crate) fn estimate_into(table: &[f32], row_keys: &[u64], width: usize, out: &mut [f32]) {
    let rows = row_keys.len();
    let mut buf = [0f32; super::MAX_ROWS];
    for (j, o) in out.iter_mut().enumerate() {
        for (r, &key) in row_keys.iter().enumerate() {
            let (b, s) = bucket_sign(key, j, width);
            buf[r] = s * table[r * width + b];
        }
        let v = &mut buf[..rows];
        v.sort_unstable_by(f32::total_cmp);
        *o = if rows % 2 == 1 {
            v[rows / 2]
        } else {
            0.5 * (v[rows / 2 - 1] + v[rows / 2])
        };
    }
}

/// The indices of the `k` largest `|v_j|` (ties to the lower index), ascending, in
/// `order[..k]`. `order` is scratch of any capacity (reused). `v` must be finite.
///
/// For finite `x ≥ 0` the IEEE-754 bit pattern orders like the value, so the threshold is
/// found by a selection over the `u32` bits of `|v|` (no comparator indirection), then one
/// pass keeps everything above it and the first ties in index order.
pub(crate) fn top_k(v: &[f32], k: usize, order: &mut Vec<u32>) {
    order.clear();
    if k == 0 {
        return;
    }
    // Lengths above u32::MAX are refused when the compressor is built (indices are u32).
    let n = u32::try_from(v.len()).unwrap_or(u32::MAX);
    if k >= v.len() {
        order.extend(0..n);
        return;
    }
    order.extend(v.iter().map(|x| x.abs().to_bits()));
    let (_, &mut t, _) = order.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
    let above = v.iter().filter(|x| x.abs().to_bits() > t).count();
    let mut ties = k - above;
    order.clear();
    for (j, x) in (0..n).zip(v) {
        let b = x.abs().to_bits();
        if b > t {
            order.push(j);
        } else if b == t && ties > 0 {
            ties -= 1;
            order.push(j);
        }
    }
}

/// Fills `q` (`b × r`, row-major) with keyed uniforms in `[-1, 1)`.
pub(crate) fn init_q(key: u64, q: &mut [f32]) {
    for (i, x) in q.iter_mut().enumerate() {
        *x = (2.0 * unit(key, i) - 1.0) as f32;
    }
}

/// `p = m q` for `m` (`a × b`), `q` (`b × r`), `p` (`a × r`), all row-major; f64 sums.
pub(crate) fn m_times_q(m: &[f32], a: usize, b: usize, q: &[f32], r: usize, p: &mut [f32]) {
    let mut acc = [0f64; 8];
    for i in 0..a {
        let row = &m[i * b..(i + 1) * b];
        for c0 in (0..r).step_by(8) {
            let w = (r - c0).min(8);
            acc[..w].fill(0.0);
            for (j, &x) in row.iter().enumerate() {
                let qr = &q[j * r + c0..j * r + c0 + w];
                for (a, &y) in acc[..w].iter_mut().zip(qr) {
                    *a += f64::from(x) * f64::from(y);
                }
            }
            for (c, a) in acc[..w].iter().enumerate() {
                p[i * r + c0 + c] = *a as f32;
            }
        }
    }
}

/// `q = mᵀ p` for `m` (`a × b`), `p` (`a × r`), `q` (`b × r`); f64 accumulation in `acc`
/// (scratch of length `b·r`, reused).
pub(crate) fn mt_times_p(
    m: &[f32],
    a: usize,
    b: usize,
    p: &[f32],
    r: usize,
    q: &mut [f32],
    acc: &mut Vec<f64>,
) {
    acc.clear();
    acc.resize(b * r, 0.0);
    for i in 0..a {
        let row = &m[i * b..(i + 1) * b];
        let pr = &p[i * r..(i + 1) * r];
        for (j, &x) in row.iter().enumerate() {
            for (c, &y) in pr.iter().enumerate() {
                acc[j * r + c] += f64::from(x) * f64::from(y);
            }
        }
    }
    for (q, a) in q.iter_mut().zip(acc.iter()) {
        *q = *a as f32;
    }
}

/// Orthonormalises the `r` columns of `p` (`a × r`) in place by modified Gram–Schmidt with
/// f64 dot products; a column that is (numerically) in the span of the previous ones is set
/// to zero, so the result is always finite.
pub(crate) fn orthonormalize(p: &mut [f32], a: usize, r: usize) {
    for c in 0..r {
        for prev in 0..c {
            let d: f64 = (0..a)
                .map(|i| f64::from(p[i * r + c]) * f64::from(p[i * r + prev]))
                .sum();
            for i in 0..a {
                p[i * r + c] -= (d * f64::from(p[i * r + prev])) as f32;
            }
        }
        let n: f64 = (0..a).map(|i| f64::from(p[i * r + c]).powi(2)).sum::<f64>();
        let n = n.sqrt();
        let inv = if n > 1e-30 && n.is_finite() {
            1.0 / n
        } else {
            0.0
        };
        for i in 0..a {
            p[i * r + c] = (f64::from(p[i * r + c]) * inv) as f32;
        }
    }
}

/// `out = p qᵀ` (`a × b`) for `p` (`a × r`), `q` (`b × r`); f64 sums over `r`.
pub(crate) fn p_times_qt(p: &[f32], q: &[f32], a: usize, b: usize, r: usize, out: &mut [f32]) {
    for i in 0..a {
        let pr = &p[i * r..(i + 1) * r];
        for j in 0..b {
            let qr = &q[j * r..(j + 1) * r];
            let s: f64 = pr
                .iter()
                .zip(qr)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum();
            out[i * b + j] = s as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_is_the_largest_magnitudes_with_low_index_ties() {
        let v = [0.5, -3.0, 1.0, 3.0, -0.1, 2.0];
        let mut o = Vec::new();
        top_k(&v, 3, &mut o);
        assert_eq!(o, vec![1, 3, 5]);
        top_k(&v, 1, &mut o);
        assert_eq!(o, vec![1], "tie between |−3| and |3| goes to index 1");
        top_k(&v, 6, &mut o);
        assert_eq!(o, vec![0, 1, 2, 3, 4, 5]);
        top_k(&v, 2, &mut o);
        assert_eq!(o, vec![1, 3], "both |3|s");
        top_k(&[0.0, -0.0, 1.0, 0.0], 3, &mut o);
        assert_eq!(o, vec![0, 1, 2], "zeros tie; the lower indices win");
    }

    #[test]
    fn orthonormalize_gives_orthonormal_columns() {
        let (a, r) = (7, 3);
        let mut p: Vec<f32> = (0..a * r).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect();
        orthonormalize(&mut p, a, r);
        for c in 0..r {
            for d in 0..r {
                let dot: f64 = (0..a)
                    .map(|i| f64::from(p[i * r + c]) * f64::from(p[i * r + d]))
                    .sum();
                let want = if c == d { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < 1e-5, "{c},{d}: {dot}");
            }
        }
    }
}
