//! One parameter's bind-and-bundle sketch: its layout into bundles, encode and decode.

use std::ops::Range;

use vsa_core::RandomProjection;
use vsa_core::rng::mix;

use crate::config::{BundleQuantization, Reconstruction};
use crate::wire::{CompressedParam, Payload, bit_words};

/// The fewest slots a parameter gets (all of them when it has fewer elements): a sketch of
/// `m` slots has `E cos ≈ √(m/n)·(1 − O(1/m))`, and at `m = 1` the Jensen gap is 20%
/// (`E|N(0,1)| = √(2/π)`), which would miss the `0.9·√ρ` goal on a 10-element bias.
pub const MIN_SLOTS: usize = 8;

/// How one parameter is cut into bundles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) numel: usize,
    pub(crate) slots: usize,
    pub(crate) bundles: usize,
    pub(crate) key: u64,
}

impl Layout {
    /// Element range, slot range and projection of bundle `i` at call `step` (balanced
    /// integer splits; keys `mix(mix(param_key, step), i)`).
    pub(crate) fn bundle(
        &self,
        i: usize,
        step: u64,
    ) -> (Range<usize>, Range<usize>, RandomProjection) {
        let split = |total: usize, i: usize| total * i / self.bundles;
        let (x0, x1) = (split(self.numel, i), split(self.numel, i + 1));
        let (s0, s1) = (split(self.slots, i), split(self.slots, i + 1));
        let proj = RandomProjection::new(x1 - x0, s1 - s0, mix(mix(self.key, step), i as u64))
            .expect("bundle sizes are at least 1 by construction");
        (x0..x1, s0..s1, proj)
    }
}

/// Per-slot weights `w_j = 1/m_j` of a projection (`m_j` = chunks reaching slot `j`; 0 for
/// slots no chunk reaches).
fn slot_weight(p: &RandomProjection, j: usize) -> f32 {
    match p.slot_count(j) {
        Some(0) | None => 0.0,
        Some(m) => 1.0 / m as f32,
    }
}

/// Weighted-L2-optimal scale on the slots `keep` selects: `Σ w|y| / Σ w` (f64 sums).
fn optimal_scale(p: &RandomProjection, y: &[f32], keep: impl Fn(f32) -> bool) -> f32 {
    let (mut num, mut den) = (0f64, 0f64);
    for (j, &v) in y.iter().enumerate() {
        if keep(v) {
            let w = f64::from(slot_weight(p, j));
            num += w * f64::from(v.abs());
            den += w;
        }
    }
    if den > 0.0 { (num / den) as f32 } else { 0.0 }
}

/// Sketches `x` (length `l.numel`) at call `step`.
pub(crate) fn encode(
    l: &Layout,
    x: &[f32],
    step: u64,
    reconstruction: Reconstruction,
    q: BundleQuantization,
) -> CompressedParam {
    let norm = (reconstruction == Reconstruction::NormMatched)
        .then(|| (x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>()).sqrt() as f32);
    let mut values = vec![0f32; l.slots];
    let mut scales = Vec::new();
    let mut nonzero = Vec::new();
    let mut negative = Vec::new();
    if q != BundleQuantization::F32 {
        scales = vec![0f32; l.bundles];
        nonzero = vec![0u64; bit_words(l.slots)];
        negative = vec![0u64; bit_words(l.slots)];
    }
    #[allow(clippy::needless_range_loop)] // `b` also picks the bundle's keys and ranges
    for b in 0..l.bundles {
        let (xr, sr, proj) = l.bundle(b, step);
        let y = &mut values[sr.clone()];
        proj.encode_into(&x[xr], y)
            .expect("lengths match the layout by construction");
        if q == BundleQuantization::F32 {
            continue;
        }
        let tau = match q {
            BundleQuantization::Ternary => 0.7 * optimal_scale(&proj, y, |_| true),
            _ => -1.0,
        };
        let keep = |v: f32| v.abs() > tau;
        scales[b] = optimal_scale(&proj, y, keep);
        for (j, &v) in y.iter().enumerate() {
            let k = sr.start + j;
            let (w, bit) = (k / 64, 1u64 << (k % 64));
            if keep(v) {
                nonzero[w] |= bit;
                if v.is_sign_negative() {
                    negative[w] |= bit;
                }
            }
        }
    }
    let payload = match q {
        BundleQuantization::F32 => Payload::F32(values),
        BundleQuantization::Sign => Payload::Sign { scales, negative },
        BundleQuantization::Ternary => Payload::Ternary {
            scales,
            nonzero,
            negative,
        },
    };
    CompressedParam {
        slots: l.slots,
        bundles: l.bundles,
        norm,
        payload,
    }
}

/// Decodes one validated parameter into `out` (length `numel`); `scratch` holds the
/// dequantized slots of one bundle (reused; no allocation for f32 bundles).
pub(crate) fn decode(
    l: &Layout,
    p: &CompressedParam,
    step: u64,
    reconstruction: Reconstruction,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    for b in 0..l.bundles {
        let (xr, sr, proj) = l.bundle(b, step);
        let y: &[f32] = match &p.payload {
            Payload::F32(v) => &v[sr],
            Payload::Sign { scales, negative } => {
                scratch.clear();
                scratch.extend(sr.map(|k| {
                    let neg = negative[k / 64] >> (k % 64) & 1 == 1;
                    if neg { -scales[b] } else { scales[b] }
                }));
                scratch
            }
            Payload::Ternary {
                scales,
                nonzero,
                negative,
            } => {
                scratch.clear();
                scratch.extend(sr.map(|k| {
                    let (w, s) = (k / 64, k % 64);
                    match (nonzero[w] >> s & 1, negative[w] >> s & 1) {
                        (0, _) => 0.0,
                        (_, 1) => -scales[b],
                        _ => scales[b],
                    }
                }));
                scratch
            }
        };
        let o = &mut out[xr];
        match reconstruction {
            Reconstruction::Unbiased => proj.transpose_into(y, o),
            _ => proj.reconstruct_into(y, o),
        }
        .expect("lengths match the layout by construction");
    }
    if let Some(norm) = p.norm {
        let have = out
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt();
        let s = if have > 0.0 {
            (f64::from(norm) / have) as f32
        } else {
            0.0
        };
        out.iter_mut().for_each(|v| *v *= s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_cover_every_element_and_slot() {
        for (numel, slots, bundles) in [(10, 1, 1), (100, 10, 3), (7, 7, 7), (1000, 333, 4)] {
            let l = Layout {
                numel,
                slots,
                bundles,
                key: 1,
            };
            let (mut xe, mut se) = (0, 0);
            for b in 0..bundles {
                let (xr, sr, p) = l.bundle(b, 3);
                assert_eq!((xr.start, sr.start), (xe, se));
                assert!(!xr.is_empty() && !sr.is_empty());
                assert_eq!((p.input_len(), p.output_len()), (xr.len(), sr.len()));
                (xe, se) = (xr.end, sr.end);
            }
            assert_eq!((xe, se), (numel, slots));
        }
    }
}
