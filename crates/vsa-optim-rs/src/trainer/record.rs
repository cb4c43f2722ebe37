//! Recording true gradients: validation, the device (tensor) path and the CPU fast path,
//! each computing everything new first and committing only after it validates.

use candle_core::{DType, Tensor};
use grad_predict::{
    PredictCoefficients, QualitySums, RecordCoefficients, StatPrecision, residual_decision,
};
use phase_scheduler::{DeterministicPhase, QualityReport, StepInfo};

use super::{DeterministicPhaseTrainer, host};
use crate::error::{Error, Result};

/// What one group records this step: its history update, and at a Correct step the
/// prediction it is measured against.
pub(super) struct GroupRecord {
    coeffs: RecordCoefficients,
    pcoeffs: Option<PredictCoefficients>,
}

impl DeterministicPhaseTrainer {
    /// Per group: `Some` for a group whose true gradient this step computes.
    fn group_records(&self, step: u64) -> Result<Vec<Option<GroupRecord>>> {
        self.scheduler
            .group_steps()
            .iter()
            .zip(&self.fits)
            .map(|(st, fit)| {
                if !st.needs_backward {
                    return Ok(None);
                }
                let coeffs = fit.record_coefficients(step)?;
                let pcoeffs = if st.phase == DeterministicPhase::Correct && fit.samples() > 0 {
                    Some(fit.predict_coefficients(step)?)
                } else {
                    None
                };
                Ok(Some(GroupRecord { coeffs, pcoeffs }))
            })
            .collect()
    }

    /// Validates and records `grads` (sorted order, one entry per parameter; `None` only for
    /// parameters of groups that predict this step; shapes and dtypes already checked).
    /// Everything new is computed first; one read-back validates it; then it is committed.
    pub(super) fn record_tensors(
        &mut self,
        info: StepInfo,
        grads: &[Option<Tensor>],
    ) -> Result<()> {
        let step = info.step;
        let plan = self.group_records(step)?;
        // The parameters recorded this step: (index, gradient, its group's record).
        let mut active = Vec::with_capacity(grads.len());
        for (i, (spec, g)) in self.params.specs().iter().zip(grads).enumerate() {
            let Some(rec) = &plan[self.member[i]] else {
                continue;
            };
            let Some(g) = g else {
                return Err(Error::MissingParameter {
                    name: spec.name.clone(),
                });
            };
            if !g.device().same_device(&self.device) {
                return Err(Error::DeviceMismatch {
                    name: spec.name.clone(),
                    expected: format!("{:?}", self.device.location()),
                    actual: format!("{:?}", g.device().location()),
                });
            }
            active.push((i, g, rec));
        }
        if self.cpu_fast() {
            return self.record_cpu(step, &active, &plan);
        }
        let precision = self.config.history_precision;
        let rate = self.config.residual_rate;
        let ranged = precision != StatPrecision::F32;
        let mut scalars = Vec::with_capacity(active.len() * 7);
        let mut new_hist = Vec::with_capacity(active.len());
        let mut residuals = Vec::with_capacity(active.len());
        let mut offsets = Vec::with_capacity(active.len());
        for &(i, g, rec) in &active {
            let h = &self.history[i];
            let g32 = g.to_dtype(DType::F32)?;
            offsets.push(scalars.len());
            scalars.push(g32.sum_all()?);
            if ranged {
                scalars.push(g32.abs()?.max_all()?);
            }
            if let Some(pc) = &rec.pcoeffs {
                let (r, sums) = h.correction(pc, &g32, rate)?;
                scalars.extend(sums.sums);
                residuals.push(Some(r));
            } else {
                residuals.push(None);
            }
            new_hist.push(h.recorded(rec.coeffs, g, &g32, precision)?);
        }
        let values = self.read_back(&scalars)?;
        let limit = precision.max_abs();
        for (&(i, g, _), &o) in active.iter().zip(&offsets) {
            if !values[o].is_finite() && !exactly_finite(g)? {
                return Err(Error::NonFiniteGradient {
                    name: self.params.specs()[i].name.clone(),
                });
            }
            if ranged && values[o + 1] > limit {
                return Err(out_of_range(g, limit, precision)?);
            }
        }
        // Validated. The quality reports are the last fallible calls; the rest cannot fail.
        let threshold = self.config.residual_threshold;
        let mut totals = vec![QualitySums::default(); plan.len()];
        let mut decisions = Vec::with_capacity(active.len());
        for (&(i, _, rec), &o) in active.iter().zip(&offsets) {
            if rec.pcoeffs.is_none() {
                decisions.push(None);
                continue;
            }
            let v = &values[o + 1 + usize::from(ranged)..o + 6 + usize::from(ranged)];
            let sums = QualitySums {
                dot: f64::from(v[0]),
                pp: f64::from(v[1]),
                gg: f64::from(v[2]),
                ee: f64::from(v[3]),
            };
            totals[self.member[i]].add(&sums);
            decisions.push(Some(residual_decision(f64::from(v[4]), sums.gg, threshold)));
        }
        self.report_groups(&plan, &totals)?;
        for (((&(i, _, _), mut h), r), d) in
            active.iter().zip(new_hist).zip(residuals).zip(decisions)
        {
            if let (Some((ratio, on)), Some(r)) = (d, r) {
                h.residual = Some(r);
                h.residual_ratio = ratio;
                h.residual_active = on;
            }
            self.history[i] = h;
        }
        self.commit_fits(step, &plan)
    }

    /// Reports each measured group's quality to the scheduler; on an error the scheduler is
    /// restored, so that nothing changes.
    fn report_groups(
        &mut self,
        plan: &[Option<GroupRecord>],
        totals: &[QualitySums],
    ) -> Result<()> {
        let measured = plan
            .iter()
            .filter(|r| r.as_ref().is_some_and(|r| r.pcoeffs.is_some()))
            .count();
        let saved = (measured > 1).then(|| self.scheduler.clone());
        let mut qualities = Vec::with_capacity(measured);
        for (gi, rec) in plan.iter().enumerate() {
            if rec.as_ref().is_none_or(|r| r.pcoeffs.is_none()) {
                continue;
            }
            let q = totals[gi].finish();
            let report = QualityReport {
                cosine: q.cosine,
                relative_error: q.relative_error,
            };
            if let Err(e) = self.scheduler.report_quality(gi, report) {
                if let Some(s) = saved {
                    self.scheduler = s;
                }
                return Err(e.into());
            }
            qualities.push((gi, (q.cosine, q.relative_error)));
        }
        for (gi, q) in qualities {
            self.last_quality[gi] = Some(q);
            self.last_reported = Some(q);
        }
        Ok(())
    }

    /// Records this step in the scalar fit of every group that computed its gradient.
    fn commit_fits(&mut self, step: u64, plan: &[Option<GroupRecord>]) -> Result<()> {
        for (fit, rec) in self.fits.iter_mut().zip(plan) {
            if rec.is_some() {
                fit.record(step, &[])?;
            }
        }
        self.recorded = true;
        Ok(())
    }

    /// [`Self::record_tensors`] on the CPU fast path: the checks and the quality sums come
    /// from the same pass over the gradient's slice, nothing is read back.
    fn record_cpu(
        &mut self,
        step: u64,
        active: &[(usize, &Tensor, &GroupRecord)],
        plan: &[Option<GroupRecord>],
    ) -> Result<()> {
        let rate = self.config.residual_rate;
        let mut corrections = Vec::with_capacity(active.len());
        for &(i, g, rec) in active {
            let h = &self.history[i];
            let (finite, c) = host::with_f32(g, |gs| -> Result<_> {
                let c = match &rec.pcoeffs {
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
                    name: self.params.specs()[i].name.clone(),
                });
            }
            corrections.push(c);
        }
        let new_hist = active
            .iter()
            .map(|&(i, g, rec)| self.history[i].recorded_cpu(rec.coeffs, g))
            .collect::<Result<Vec<_>>>()?;
        // Validated. The quality reports are the last fallible calls; the rest cannot fail.
        let threshold = self.config.residual_threshold;
        let mut totals = vec![QualitySums::default(); plan.len()];
        let mut decisions = Vec::with_capacity(active.len());
        for (&(i, _, _), c) in active.iter().zip(&corrections) {
            decisions.push(c.as_ref().map(|(_, sums, rr)| {
                totals[self.member[i]].add(sums);
                residual_decision(*rr, sums.gg, threshold)
            }));
        }
        self.report_groups(plan, &totals)?;
        for (((&(i, _, _), mut h), c), d) in
            active.iter().zip(new_hist).zip(corrections).zip(decisions)
        {
            if let (Some((ratio, on)), Some((r, _, _))) = (d, c) {
                h.residual = Some(r);
                h.residual_ratio = ratio;
                h.residual_active = on;
            }
            self.history[i] = h;
        }
        self.commit_fits(step, plan)
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
