//! Prediction quality: cosine and relative error of a prediction against the truth.

use crate::error::{Error, Result};

/// How close a predicted gradient was to the true one.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PredictionQuality {
    /// ⟨ĝ, g⟩ / (‖ĝ‖·‖g‖) in [−1, 1]. Conventions: 1 when both are zero, 0 when exactly one is.
    pub cosine: f32,
    /// ‖ĝ − g‖ / ‖g‖. Conventions: 0 when both are zero, `f32::INFINITY` when only g is zero.
    pub relative_error: f32,
}

/// Running sums of one pass: ⟨p,g⟩, ‖p‖², ‖g‖², ‖p−g‖², in f64 across blocks.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct QualitySums {
    pub dot: f64,
    pub pp: f64,
    pub gg: f64,
    pub ee: f64,
}

impl QualitySums {
    /// Adds one block. Eight f32 lanes inside the block (vectorises), then f64 across
    /// blocks; the order is fixed, so results do not depend on anything but the data.
    #[inline]
    pub(crate) fn add_block(&mut self, p: &[f32], g: &[f32]) {
        const L: usize = 8;
        let mut dot = [0f32; L];
        let mut pp = [0f32; L];
        let mut gg = [0f32; L];
        let mut ee = [0f32; L];
        let pc = p.chunks_exact(L);
        let gc = g.chunks_exact(L);
        let (pt, gt) = (pc.remainder(), gc.remainder());
        for (pc, gc) in pc.zip(gc) {
            for l in 0..L {
                let (a, b) = (pc[l], gc[l]);
                let e = a - b;
                dot[l] += a * b;
                pp[l] += a * a;
                gg[l] += b * b;
                ee[l] += e * e;
            }
        }
        for (l, (&a, &b)) in pt.iter().zip(gt).enumerate() {
            let e = a - b;
            dot[l] += a * b;
            pp[l] += a * a;
            gg[l] += b * b;
            ee[l] += e * e;
        }
        let sum = |v: [f32; L]| v.iter().map(|&x| f64::from(x)).sum::<f64>();
        self.dot += sum(dot);
        self.pp += sum(pp);
        self.gg += sum(gg);
        self.ee += sum(ee);
    }

    pub(crate) fn finish(&self) -> PredictionQuality {
        let (np, ng) = (self.pp.sqrt(), self.gg.sqrt());
        let cosine = if np == 0.0 && ng == 0.0 {
            1.0
        } else if np == 0.0 || ng == 0.0 {
            0.0
        } else {
            (self.dot / (np * ng)).clamp(-1.0, 1.0)
        };
        let relative_error = if ng == 0.0 {
            if self.ee == 0.0 { 0.0 } else { f64::INFINITY }
        } else {
            self.ee.sqrt() / ng
        };
        PredictionQuality {
            cosine: cosine as f32,
            relative_error: relative_error as f32,
        }
    }
}

/// Cosine and relative error of `pred` against `truth`, in one pass.
///
/// Gives bit-identical results to the quality returned by
/// [`GradientPredictor::record_correction`](crate::GradientPredictor::record_correction)
/// for the same prediction (same block order and lane layout).
///
/// # Errors
/// [`Error::LengthMismatch`] when the lengths differ.
///
/// ```
/// let q = grad_predict::quality(&[1.0, 0.0], &[1.0, 1.0])?;
/// assert!((q.cosine - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
/// assert!((q.relative_error - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
/// # Ok::<(), grad_predict::Error>(())
/// ```
pub fn quality(pred: &[f32], truth: &[f32]) -> Result<PredictionQuality> {
    if pred.len() != truth.len() {
        return Err(Error::LengthMismatch {
            what: "pred",
            expected: truth.len(),
            actual: pred.len(),
        });
    }
    let mut s = QualitySums::default();
    for (p, g) in pred
        .chunks(crate::storage::BLOCK)
        .zip(truth.chunks(crate::storage::BLOCK))
    {
        s.add_block(p, g);
    }
    Ok(s.finish())
}
