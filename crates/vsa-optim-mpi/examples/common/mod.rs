//! The case shared by the `mpi_sum` example and `tests/summed.rs`: a parameter layout with
//! uneven chunks, per-rank gradients with heavy hitters, and the single-process references
//! of a summed step.

use grad_sketch::{Compressor, CompressorConfig};
use vsa_optim_mpi::reduce::divide;
use vsa_optim_mpi::{bf16_to_f32, f32_to_bf16};

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
