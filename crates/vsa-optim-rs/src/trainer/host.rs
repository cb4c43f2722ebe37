//! The CPU fast path: on `Device::Cpu` with f32 history storage, the trainer reads gradients
//! and history tensors as slices (no copy for contiguous f32 tensors), applies grad-predict's
//! coefficients in single passes, and wraps each result buffer as a tensor without copying
//! (`Tensor::from_vec`). Same f32 operations and order as grad-predict's slice kernels; the
//! quality sums use grad-predict's own block order (`QualitySums::add_slices`).

use candle_core::{DType, Device, Storage, Tensor};
use grad_predict::{PredictCoefficients, QualitySums, RecordCoefficients};

use super::device::{History, missing};
use crate::error::Result;

/// Elements per block of the fused correction pass (grad-predict's block length).
const BLOCK: usize = 1024;

/// Calls `f` with `t`'s elements as an f32 slice: borrowed for a contiguous f32 CPU tensor,
/// otherwise a converted copy.
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    if t.dtype() == DType::F32 {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) {
            let s = cpu.as_slice::<f32>()?;
            return Ok(f(&s[start..end]));
        }
    }
    let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(f(&v))
}

/// Whether every element of `g` (whose elements `gs` are) is finite: candle's vectorised sum
/// first (one pass; our own crates build at opt-level 1 in the dev profile, candle at 3),
/// and only when it is not finite the exact element check (an overflow of the sum is not a
/// non-finite gradient).
pub(crate) fn finite(g: &Tensor, gs: &[f32]) -> Result<bool> {
    let sum = g.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?;
    Ok(sum.is_finite() || all_finite(gs))
}

/// Whether every element is finite, exactly.
pub(crate) fn all_finite(g: &[f32]) -> bool {
    g.chunks(BLOCK)
        .all(|c| c.iter().fold(true, |ok, x| ok & x.is_finite()))
}

fn wrap(v: Vec<f32>, like: &Tensor) -> Result<Tensor> {
    Ok(Tensor::from_vec(v, like.shape(), &Device::Cpu)?)
}

impl History {
    /// [`History::recorded`] for f32 storage on the CPU. `g` is the recorded gradient.
    pub(crate) fn recorded_cpu(&self, coeffs: RecordCoefficients, gt: &Tensor) -> Result<History> {
        let precision = grad_predict::StatPrecision::F32;
        let (a0, b0) = match coeffs {
            // No arithmetic: the history keeps a reference to g.
            RecordCoefficients::Replace | RecordCoefficients::Slot { .. } => {
                return self.recorded(coeffs, gt, gt, precision);
            }
            RecordCoefficients::Mean { a0, b0 } | RecordCoefficients::Line { a0, b0, .. } => {
                (a0, b0)
            }
        };
        let mut h = self.clone();
        with_f32(gt, |g| -> Result<()> {
            let first = |g: &[f32]| g.iter().map(|&x| b0 * x + 0.0).collect::<Vec<f32>>();
            let mean = |m: &[f32]| {
                m.iter()
                    .zip(g)
                    .map(|(&m, &x)| a0 * m + b0 * x)
                    .collect::<Vec<f32>>()
            };
            match coeffs {
                RecordCoefficients::Mean { .. } => {
                    let m = match &self.a {
                        None => first(g),
                        Some(a) => with_f32(a, mean)?,
                    };
                    h.a = Some(wrap(m, gt)?);
                }
                RecordCoefficients::Line { c1, c2, .. } => {
                    let (m, n) = match (&self.a, &self.b) {
                        (Some(a), Some(b)) => with_f32(a, |m_old| {
                            with_f32(b, |n_old| {
                                let n: Vec<f32> = n_old
                                    .iter()
                                    .zip(m_old)
                                    .map(|(&n, &m)| c1 * n + c2 * m)
                                    .collect();
                                (mean(m_old), n)
                            })
                        })??,
                        _ => (first(g), vec![0.0; g.len()]),
                    };
                    h.a = Some(wrap(m, gt)?);
                    h.b = Some(wrap(n, gt)?);
                }
                _ => {}
            }
            Ok(())
        })??;
        Ok(h)
    }

    /// The model's prediction without the residual, as a new f32 buffer.
    fn model_vec(&self, coeffs: &PredictCoefficients) -> Result<Vec<f32>> {
        let a = || self.a.as_ref().ok_or_else(missing);
        match coeffs {
            PredictCoefficients::Copy => with_f32(a()?, <[f32]>::to_vec),
            PredictCoefficients::Line { gamma } => {
                let gamma = *gamma;
                let b = self.b.as_ref().ok_or_else(missing)?;
                with_f32(a()?, |m| {
                    with_f32(b, |n| {
                        m.iter()
                            .zip(n)
                            .map(|(&m, &n)| m + (gamma * (n - m) + 0.0))
                            .collect()
                    })
                })?
            }
            PredictCoefficients::Window { terms } => {
                let mut out: Option<Vec<f32>> = None;
                for &(slot, c) in terms {
                    with_f32(self.slot(slot)?, |x| match &mut out {
                        None => out = Some(x.iter().map(|&v| c * v + 0.0).collect()),
                        Some(o) => {
                            for (o, &v) in o.iter_mut().zip(x) {
                                *o += c * v + 0.0;
                            }
                        }
                    })?;
                }
                out.ok_or_else(missing)
            }
        }
    }

    /// [`History::prediction`] on the CPU: one buffer, wrapped without copying. A `Copy`
    /// prediction without residual is the history tensor itself.
    pub(crate) fn prediction_cpu(&self, coeffs: &PredictCoefficients) -> Result<Tensor> {
        let active = self.residual.as_ref().filter(|_| self.residual_active);
        // Any held buffer has the parameter's shape.
        let like = self
            .a
            .as_ref()
            .or_else(|| self.slots.iter().flatten().next())
            .ok_or_else(missing)?;
        if matches!(coeffs, PredictCoefficients::Copy) && active.is_none() {
            return self.prediction(coeffs);
        }
        let mut p = self.model_vec(coeffs)?;
        if let Some(r) = active {
            with_f32(r, |r| {
                for (p, &r) in p.iter_mut().zip(r) {
                    *p += r;
                }
            })?;
        }
        wrap(p, like)
    }

    /// [`History::correction`] on the CPU, fused: one pass forms the applied prediction's
    /// quality sums (grad-predict's block order) and the new residual, in the prediction's
    /// buffer. Returns the residual, the sums and ‖r‖².
    pub(crate) fn correction_cpu(
        &self,
        coeffs: &PredictCoefficients,
        g: &[f32],
        like: &Tensor,
        rate: f32,
    ) -> Result<(Tensor, QualitySums, f64)> {
        let mut p = self.model_vec(coeffs)?;
        let keep = 1.0 - rate;
        let mut sums = QualitySums::default();
        let active = self.residual_active;
        let pass = |p: &mut [f32], r: Option<&[f32]>, sums: &mut QualitySums| {
            let mut f = [0f32; BLOCK];
            for (i, (p, g)) in p.chunks_mut(BLOCK).zip(g.chunks(BLOCK)).enumerate() {
                let r = r.map(|r| &r[i * BLOCK..i * BLOCK + p.len()]);
                match r {
                    Some(r) if active => {
                        let f = &mut f[..p.len()];
                        for ((f, &p), &r) in f.iter_mut().zip(p.iter()).zip(r) {
                            *f = p + r;
                        }
                        sums.add_slices(f, g);
                    }
                    _ => sums.add_slices(p, g),
                }
                match r {
                    Some(r) => {
                        for ((p, &r), &x) in p.iter_mut().zip(r).zip(g) {
                            *p = (keep * r + 0.0) + (rate * (x - *p) + 0.0);
                        }
                    }
                    None => {
                        for (p, &x) in p.iter_mut().zip(g) {
                            *p = rate * (x - *p) + 0.0;
                        }
                    }
                }
            }
        };
        match &self.residual {
            Some(r) => with_f32(r, |r| pass(&mut p, Some(r), &mut sums))?,
            None => pass(&mut p, None, &mut sums),
        }
        let rr = QualitySums::sum_squares(&p);
        Ok((wrap(p, like)?, sums, rr))
    }
}
