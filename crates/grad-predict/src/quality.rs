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

/// Running sums behind a [`PredictionQuality`]: ⟨p,g⟩, ‖p‖², ‖g‖², ‖p−g‖², in f64.
///
/// Public so that other implementations of the predictor (the facade's device path) form
/// the quality with the same conventions: fill the four sums however the data allows, add
/// the sums of several tensors with [`add`](Self::add), and call [`finish`](Self::finish).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QualitySums {
    /// ⟨p, g⟩.
    pub dot: f64,
    /// ‖p‖².
    pub pp: f64,
    /// ‖g‖².
    pub gg: f64,
    /// ‖p − g‖².
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

    /// Adds the sums of a whole prediction `p` against the truth `g` (equal lengths), in the
    /// reference's order: the same blocks as [`GradientPredictor::record_correction`](crate::GradientPredictor::record_correction),
    /// so a caller holding slices gets the reference's sums bit for bit.
    pub fn add_slices(&mut self, p: &[f32], g: &[f32]) {
        for (p, g) in p
            .chunks(crate::storage::BLOCK)
            .zip(g.chunks(crate::storage::BLOCK))
        {
            self.add_block(p, g);
        }
    }

    /// ‖x‖² in the reference's order (the residual norm of
    /// [`GradientPredictor::record_correction`](crate::GradientPredictor::record_correction)).
    #[must_use]
    pub fn sum_squares(x: &[f32]) -> f64 {
        x.chunks(crate::storage::BLOCK)
            .fold(0.0, |acc, b| acc + crate::kernels::sumsq_block(b))
    }

    /// Adds the sums of another tensor (the quality over several tensors together).
    pub fn add(&mut self, other: &QualitySums) {
        self.dot += other.dot;
        self.pp += other.pp;
        self.gg += other.gg;
        self.ee += other.ee;
    }

    /// The cosine and relative error these sums imply, with the conventions documented on
    /// [`PredictionQuality`].
    #[must_use]
    pub fn finish(&self) -> PredictionQuality {
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

/// The residual decision of [`GradientPredictor::record_correction`](crate::GradientPredictor::record_correction):
/// from ‖r‖² (`rr`, after the update) and the true gradient's ‖g‖² (`gg`), the ratio
/// ‖r‖/‖g‖ (∞ when g = 0 and r ≠ 0, 0 when both are zero) and whether r is applied from now
/// on (ratio > `threshold`).
#[must_use]
pub fn residual_decision(rr: f64, gg: f64, threshold: f32) -> (f32, bool) {
    let (gn, rn) = (gg.sqrt(), rr.sqrt());
    let ratio = if gn > 0.0 {
        rn / gn
    } else if rn > 0.0 {
        f64::INFINITY
    } else {
        0.0
    };
    (ratio as f32, ratio > f64::from(threshold))
}
