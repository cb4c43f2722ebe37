//! Recording true gradients: validation, the device (tensor) path and the CPU fast path,
//! each computing everything new first and committing only after it validates.

use candle_core::{DType, Tensor};
use grad_predict::{PredictCoefficients, QualitySums, StatPrecision, residual_decision};
use phase_scheduler::{DeterministicPhase, QualityReport, StepInfo};

use super::{DeterministicPhaseTrainer, host};
use crate::error::{Error, Result};

impl DeterministicPhaseTrainer {
    /// Validates and records `grads` (sorted order, shapes and dtypes already checked).
    /// Everything new is computed first; one read-back validates it; then it is committed.
    pub(super) fn record_tensors(&mut self, info: StepInfo, grads: &[Tensor]) -> Result<()> {
        let step = info.step;
        for (spec, g) in self.params.specs().iter().zip(grads) {
            if !g.device().same_device(&self.device) {
                return Err(Error::DeviceMismatch {
                    name: spec.name.clone(),
                    expected: format!("{:?}", self.device.location()),
                    actual: format!("{:?}", g.device().location()),
                });
            }
        }
        let coeffs = self.fit.record_coefficients(step)?;
        let correct = info.phase == DeterministicPhase::Correct && self.fit.samples() > 0;
        let pcoeffs = if correct {
            Some(self.fit.predict_coefficients(step)?)
        } else {
            None
        };
        if self.cpu_fast() {
            return self.record_cpu(step, grads, coeffs, pcoeffs.as_ref());
        }
        let precision = self.config.history_precision;
        let rate = self.config.residual_rate;
        let ranged = precision != StatPrecision::F32;
        let mut scalars = Vec::with_capacity(grads.len() * 7);
        let mut new_hist = Vec::with_capacity(grads.len());
        let mut residuals = Vec::with_capacity(grads.len());
        for (h, g) in self.history.iter().zip(grads) {
            let g32 = g.to_dtype(DType::F32)?;
            scalars.push(g32.sum_all()?);
            if ranged {
                scalars.push(g32.abs()?.max_all()?);
            }
            if let Some(pc) = &pcoeffs {
                let (r, sums) = h.correction(pc, &g32, rate)?;
                scalars.extend(sums.sums);
                residuals.push(r);
            }
            new_hist.push(h.recorded(coeffs, g, &g32, precision)?);
        }
        let values = self.read_back(&scalars)?;
        let per = 1 + usize::from(ranged) + if correct { 5 } else { 0 };
        let limit = precision.max_abs();
        for ((spec, g), v) in self
            .params
            .specs()
            .iter()
            .zip(grads)
            .zip(values.chunks(per))
        {
            if !v[0].is_finite() && !exactly_finite(g)? {
                return Err(Error::NonFiniteGradient {
                    name: spec.name.clone(),
                });
            }
            if ranged && v[1] > limit {
                return Err(out_of_range(g, limit, precision)?);
            }
        }
        // Validated. The quality report is the last fallible call; the rest cannot fail.
        let threshold = self.config.residual_threshold;
        let mut total = QualitySums::default();
        let mut decisions = Vec::with_capacity(if correct { grads.len() } else { 0 });
        if correct {
            for v in values.chunks(per) {
                let v = &v[per - 5..];
                let sums = QualitySums {
                    dot: f64::from(v[0]),
                    pp: f64::from(v[1]),
                    gg: f64::from(v[2]),
                    ee: f64::from(v[3]),
                };
                total.add(&sums);
                decisions.push(residual_decision(f64::from(v[4]), sums.gg, threshold));
            }
            let q = total.finish();
            self.scheduler.report_quality(QualityReport {
                cosine: q.cosine,
                relative_error: q.relative_error,
            })?;
            self.last_quality = Some((q.cosine, q.relative_error));
        }
        for (i, mut h) in new_hist.into_iter().enumerate() {
            if let Some(&(ratio, active)) = decisions.get(i) {
                h.residual = Some(residuals[i].clone());
                h.residual_ratio = ratio;
                h.residual_active = active;
            }
            self.history[i] = h;
        }
        self.fit.record(step, &[])?;
        self.recorded = true;
        Ok(())
    }

    /// [`Self::record_tensors`] on the CPU fast path: the checks and the quality sums come
    /// from the same pass over the gradient's slice, nothing is read back.
    pub(super) fn record_cpu(
        &mut self,
        step: u64,
        grads: &[Tensor],
        coeffs: grad_predict::RecordCoefficients,
        pcoeffs: Option<&PredictCoefficients>,
    ) -> Result<()> {
        let rate = self.config.residual_rate;
        let mut corrections = Vec::with_capacity(if pcoeffs.is_some() { grads.len() } else { 0 });
        for ((spec, h), g) in self.params.specs().iter().zip(&self.history).zip(grads) {
            let (finite, c) = host::with_f32(g, |gs| -> Result<_> {
                let c = match pcoeffs {
                    Some(pc) => Some(h.correction_cpu(pc, gs, g, rate)?),
                    None => None,
                };
                // A finite ‖g‖² proves every element finite; otherwise check exactly
                // (it may be an f32 overflow of the sum).
                let finite = match &c {
                    Some((_, s, _)) if s.gg.is_finite() => true,
                    Some(_) => host::all_finite(gs),
                    None => host::finite(g, gs)?,
                };
                Ok((finite, c))
            })??;
            if !finite {
                return Err(Error::NonFiniteGradient {
                    name: spec.name.clone(),
                });
            }
            if let Some(c) = c {
                corrections.push(c);
            }
        }
        let new_hist = self
            .history
            .iter()
            .zip(grads)
            .map(|(h, g)| h.recorded_cpu(coeffs, g))
            .collect::<Result<Vec<_>>>()?;
        // Validated. The quality report is the last fallible call; the rest cannot fail.
        let threshold = self.config.residual_threshold;
        let mut decisions = Vec::with_capacity(corrections.len());
        if pcoeffs.is_some() {
            let mut total = QualitySums::default();
            for (_, sums, rr) in &corrections {
                total.add(sums);
                decisions.push(residual_decision(*rr, sums.gg, threshold));
            }
            let q = total.finish();
            self.scheduler.report_quality(QualityReport {
                cosine: q.cosine,
                relative_error: q.relative_error,
            })?;
            self.last_quality = Some((q.cosine, q.relative_error));
        }
        let mut corrections = corrections.into_iter();
        for (i, mut h) in new_hist.into_iter().enumerate() {
            if let (Some(&(ratio, active)), Some((r, _, _))) =
                (decisions.get(i), corrections.next())
            {
                h.residual = Some(r);
                h.residual_ratio = ratio;
                h.residual_active = active;
            }
            self.history[i] = h;
        }
        self.fit.record(step, &[])?;
        self.recorded = true;
        Ok(())
    }

    /// Reads `scalars` (0-d f32 tensors) back to the host in one transfer.
    pub(super) fn read_back(&mut self, scalars: &[Tensor]) -> Result<Vec<f32>> {
        let v = Tensor::stack(scalars, 0)?.to_vec1::<f32>()?;
        self.transfers.scalar_readbacks += 1;
        self.transfers.scalar_elements += v.len() as u64;
        Ok(v)
    }
}

/// Whether every element of `g` is finite, exactly: `x − x` is 0 for finite x and NaN
/// otherwise (used only when a gradient's sum is not finite, to tell overflow from NaN/Inf).
#[allow(clippy::eq_op)]
fn exactly_finite(g: &Tensor) -> Result<bool> {
    let g = g.to_dtype(DType::F32)?;
    Ok((&g - &g)?.sum_all()?.to_scalar::<f32>()? == 0.0)
}

/// The 16-bit storage error for a gradient above `limit` (error path only: it reads `g`).
fn out_of_range(g: &Tensor, limit: f32, precision: StatPrecision) -> Result<Error> {
    let v = g.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let (index, &value) = v
        .iter()
        .enumerate()
        .find(|(_, x)| x.abs() > limit)
        .unwrap_or((0, &0.0));
    Ok(Error::Predict(grad_predict::Error::OutOfRange {
        what: "grad",
        index,
        value,
        limit,
        precision: precision.name(),
    }))
}
