//! The case shared by the `mpi_sum` example and `tests/summed.rs`: a parameter layout with
//! uneven chunks, per-rank gradients with heavy hitters, and the single-process references
//! of a summed step.

use grad_sketch::{Compressor, CompressorConfig};
use vsa_optim_mpi::reduce::divide;
use vsa_optim_mpi::{bf16_add, bf16_to_f32, f32_to_bf16};

/// Sorted by name (the order of the method codecs); 91 + 5 + 60 = 156 elements, which
/// 3 and 5 ranks cut into uneven chunks (and the sketches into uneven chunks at every N).
pub fn params() -> Vec<(String, Vec<usize>)> {
    vec![
        ("a".to_string(), vec![7, 13]),
        ("b".to_string(), vec![5]),
        ("c".to_string(), vec![3, 4, 5]),
    ]
}

/// The parameter lengths.
pub fn lens() -> Vec<usize> {
    params().iter().map(|(_, s)| s.iter().product()).collect()
}

/// Every parameter filled with `v`.
pub fn filled(v: f32) -> Vec<Vec<f32>> {
    lens().iter().map(|&n| vec![v; n]).collect()
}

/// Rank `r`'s gradient at `step`, the same in every process: every 17th entry is a heavy
/// hitter over small noise.
pub fn grads(r: usize, step: usize) -> Vec<Vec<f32>> {
    lens()
        .iter()
        .enumerate()
        .map(|(k, &n)| {
            (0..n)
                .map(|j| {
                    let x = ((r * 7919 + step * 104_729 + k * 31 + j) as f32 * 0.618).sin();
                    if j % 17 == 3 { 20.0 * x } else { 0.1 * x }
                })
                .collect()
        })
        .collect()
}

/// The summed mode's result for a linear method, computed by one process: every rank's
/// compressor compresses its gradient, the messages are summed in rank order with
/// `Compressor::accumulate` (what all-gathering them and summing would give), and the sum
/// is decoded once and divided by the rank count; one entry per step.
pub fn method_reference(n: usize, cfg: CompressorConfig, steps: usize) -> Vec<Vec<Vec<f32>>> {
    let mut cs: Vec<Compressor> = (0..n)
        .map(|_| Compressor::new(&params(), cfg).expect("a valid config"))
        .collect();
    (0..steps)
        .map(|s| {
            let msgs: Vec<_> = cs
                .iter_mut()
                .enumerate()
                .map(|(r, c)| c.compress(&grads(r, s)).expect("finite"))
                .collect();
            let mut sum = msgs[0].clone();
            for m in &msgs[1..] {
                cs[0].accumulate(&mut sum, m).expect("a linear method");
            }
            let mut d = cs[0].decompress(&sum).expect("a valid message");
            d.iter_mut().for_each(|v| divide(v, n));
            d
        })
        .collect()
}

/// `x` rounded to bf16.
pub fn bf16(x: f32) -> f32 {
    bf16_to_f32(f32_to_bf16(x))
}

/// The summed bf16 mode's result: per element, the bf16 values summed in f32 in rank
/// order, the sum rounded to bf16, divided by the rank count; one entry per step.
pub fn bf16_sum_reference(n: usize, steps: usize) -> Vec<Vec<Vec<f32>>> {
    (0..steps)
        .map(|s| {
            let parts: Vec<Vec<Vec<f32>>> = (0..n).map(|r| grads(r, s)).collect();
            let mut out = filled(0.0);
            for (k, o) in out.iter_mut().enumerate() {
                for (j, x) in o.iter_mut().enumerate() {
                    let mut acc = bf16(parts[0][k][j]);
                    for p in &parts[1..] {
                        acc += bf16(p[k][j]);
                    }
                    *x = bf16(acc) / n as f32;
                }
            }
            out
        })
        .collect()
}

/// The bf16 all-reduce's result when the pairs are combined in rank order (the default
/// `Collective::all_reduce_sum_bf16`, which the thread transport uses): per element,
/// `bf16_add(bf16_add(h₀, h₁), h₂) …` of the rounded values, widened and divided by the
/// rank count; one entry per step.
pub fn bf16_allreduce_rank_order_reference(n: usize, steps: usize) -> Vec<Vec<Vec<f32>>> {
    (0..steps)
        .map(|s| {
            let parts: Vec<Vec<Vec<f32>>> = (0..n).map(|r| grads(r, s)).collect();
            let mut out = filled(0.0);
            for (k, o) in out.iter_mut().enumerate() {
                for (j, x) in o.iter_mut().enumerate() {
                    let mut acc = f32_to_bf16(parts[0][k][j]);
                    for p in &parts[1..] {
                        acc = bf16_add(acc, f32_to_bf16(p[k][j]));
                    }
                    *x = bf16_to_f32(acc) / n as f32;
                }
            }
            out
        })
        .collect()
}

/// The largest `|got − mean| / bound` over the elements of every step, where `mean` is
/// the rank-order f32 mean of the unrounded gradients and `bound` the error bound of a
/// bf16 all-reduce over `n` ranks, whatever tree MPI sums along:
///
/// * each input is rounded to bf16: `x̂ = x(1 + δ)`, `|δ| ≤ u = 2⁻⁸` (8 significant bits);
/// * each pair is added in f32 (`|ε| ≤ 2⁻²⁴`) and rounded to bf16 (`≤ u`), so one
///   combination is `(a + b)(1 + δ')` with `|δ'| ≤ u' = (1 + 2⁻²⁴)(1 + u) − 1`;
/// * a tree of `n − 1` additions puts at most `n − 1` such factors on any input, so with
///   the input rounding the computed sum is `Σ xᵢ(1 + θᵢ)`, `|θᵢ| ≤ γₙ = n·u'/(1 − n·u')`
///   (Higham, Accuracy and Stability, Lemma 3.1), an error of at most `γₙ·Σ|xᵢ|`;
/// * the division by `n` rounds once more in f32 (`2⁻²⁴` of the result, at most
///   `(1 + γₙ)·Σ|xᵢ|/n`), and the f32 reference itself is off by at most
///   `γ³²ₙ·Σ|xᵢ|/n` with `γ³²ₙ = n·2⁻²⁴/(1 − n·2⁻²⁴)`.
///
/// So `bound = (γₙ + (1 + γₙ)·2⁻²⁴ + γ³²ₙ)·Σ|xᵢ| / n` (every value here is a normal
/// number, so no subnormal term). A result within the bound gives at most 1.
pub fn bf16_allreduce_error_ratio(n: usize, got: &[Vec<Vec<f32>>]) -> f64 {
    let u = 2f64.powi(-8);
    let u32_ = 2f64.powi(-24);
    let up = (1.0 + u32_) * (1.0 + u) - 1.0;
    let nf = n as f64;
    let gamma = nf * up / (1.0 - nf * up);
    let gamma32 = nf * u32_ / (1.0 - nf * u32_);
    let factor = gamma + (1.0 + gamma) * u32_ + gamma32;
    let mut worst = 0f64;
    for (s, g) in got.iter().enumerate() {
        let parts: Vec<Vec<Vec<f32>>> = (0..n).map(|r| grads(r, s)).collect();
        for (k, o) in g.iter().enumerate() {
            for (j, &x) in o.iter().enumerate() {
                let mut mean = parts[0][k][j];
                let mut abs = f64::from(parts[0][k][j].abs());
                for p in &parts[1..] {
                    mean += p[k][j];
                    abs += f64::from(p[k][j].abs());
                }
                mean /= n as f32;
                let (err, bound) = (f64::from(x - mean).abs(), factor * abs / nf);
                // Every input zero: the sum must be exactly zero.
                let ratio = if bound > 0.0 {
                    err / bound
                } else if err == 0.0 {
                    0.0
                } else {
                    f64::INFINITY
                };
                worst = worst.max(ratio);
            }
        }
    }
    worst
}

/// The largest `|got − mean|` over every element and step, `mean` being the rank-order
/// f32 mean of the unrounded gradients.
#[allow(dead_code)] // the mpi_sum example's report; not needed by tests/summed.rs
pub fn max_abs_error(n: usize, got: &[Vec<Vec<f32>>]) -> f32 {
    let mut worst = 0f32;
    for (s, g) in got.iter().enumerate() {
        let parts: Vec<Vec<Vec<f32>>> = (0..n).map(|r| grads(r, s)).collect();
        for (k, o) in g.iter().enumerate() {
            for (j, &x) in o.iter().enumerate() {
                let mut mean = parts[0][k][j];
                for p in &parts[1..] {
                    mean += p[k][j];
                }
                worst = worst.max((x - mean / n as f32).abs());
            }
        }
    }
    worst
}
