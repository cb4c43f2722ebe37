//! The per-tensor gradient predictor.

use crate::config::{HistoryMode, PredictorConfig, PredictorModel, StatPrecision};
use crate::error::{Error, Result};
use crate::fit::{Fit, PredictCoefficients, RecordCoefficients, plan_for};
use crate::kernels::{
    Buffers, Layout, PredictPlan, RecordPlan, Scratch, Store, WindowMeta, dispatch, predict_block,
    record_block, sumsq_block,
};
use crate::quality::{PredictionQuality, QualitySums, residual_decision};
use crate::storage::{BLOCK, Stored, max_abs_bits};
use half::{bf16, f16};

/// A closed-form gradient predictor for one tensor of `len` f32 elements.
///
/// It fits g(τ) = b + v·τ by weighted least squares with weights `decay^age` (or a reduced
/// model, see [`PredictorModel`]) and predicts ĝ(T + h) = b + v·h (+ r), where T is the last
/// recorded step. The scalars of the normal equations are shared by all elements and solved
/// once per call; per element only two weighted sums are kept or formed. See
/// `docs/grad-predict.md` for the derivation.
///
/// Steady-state calls allocate nothing, except that the first
/// [`record_correction`](Self::record_correction) allocates the residual buffer.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct GradientPredictor {
    config: PredictorConfig,
    len: usize,
    layout: Layout,
    store: Store,
    fit: Fit,
    window: WindowMeta,
    samples: u64,
    last_step: Option<u64>,
    residual: Vec<f32>,
    residual_active: bool,
    residual_ratio: f32,
}

impl GradientPredictor {
    /// A predictor for tensors of `len` elements. Allocates all history buffers now.
    ///
    /// # Errors
    /// Whatever [`PredictorConfig::validate`] returns.
    pub fn new(len: usize, config: PredictorConfig) -> Result<Self> {
        config.validate()?;
        let layout = match (config.model, config.history) {
            (PredictorModel::LastGradient, _) => Layout::Last,
            (PredictorModel::DecayedMean, HistoryMode::Streaming) => Layout::StreamMean,
            (PredictorModel::LinearWls, HistoryMode::Streaming) => Layout::StreamLine,
            (_, HistoryMode::Window(w)) => Layout::Window(w),
        };
        let (na, nb) = match layout {
            Layout::Last | Layout::StreamMean => (len, 0),
            Layout::StreamLine => (len, len),
            Layout::Window(w) => (
                w.checked_mul(len).ok_or(Error::InvalidParameter {
                    parameter: "window × len",
                    expected: "at most usize::MAX elements",
                    actual: w as f32,
                })?,
                0,
            ),
        };
        fn bufs<T: Stored>(na: usize, nb: usize) -> Buffers<T> {
            Buffers {
                a: vec![T::default(); na],
                b: vec![T::default(); nb],
            }
        }
        let store = match config.precision {
            StatPrecision::F32 => Store::F32(bufs(na, nb)),
            StatPrecision::Bf16 => Store::Bf16(bufs(na, nb)),
            StatPrecision::F16 => Store::F16(bufs(na, nb)),
        };
        let window = match layout {
            Layout::Window(w) => WindowMeta {
                cap: w,
                steps: vec![0; w],
                head: 0,
                filled: 0,
                p: vec![0.0; w],
                q: vec![0.0; w],
            },
            _ => WindowMeta::default(),
        };
        Ok(Self {
            config,
            len,
            layout,
            store,
            fit: Fit::default(),
            window,
            samples: 0,
            last_step: None,
            residual: Vec::new(),
            residual_active: false,
            residual_ratio: 0.0,
        })
    }

    /// Number of elements per gradient.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the tensor has zero elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The configuration.
    pub fn config(&self) -> &PredictorConfig {
        &self.config
    }

    /// Number of gradients recorded (by [`record`](Self::record) or
    /// [`record_correction`](Self::record_correction)) since creation or the last
    /// [`reset`](Self::reset). In Window(W) mode at most W of them are held.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// The step of the last recorded gradient, if any.
    pub fn last_step(&self) -> Option<u64> {
        self.last_step
    }

    /// Whether the residual r is currently added to predictions (‖r‖/‖g‖ above
    /// `residual_threshold` at the latest correction).
    pub fn residual_active(&self) -> bool {
        self.residual_active
    }

    /// ‖r‖/‖g‖ measured at the latest correction (0 before any correction).
    pub fn residual_ratio(&self) -> f32 {
        self.residual_ratio
    }

    /// Bytes held by the predictor's buffers (their capacities), not counting the struct.
    pub fn memory_bytes(&self) -> usize {
        let per = self.config.precision.bytes();
        let hist = dispatch!(&self.store, b => b.a.capacity() + b.b.capacity()) * per;
        let meta = self.window.steps.capacity() * 8
            + self.window.p.capacity() * 8
            + self.window.q.capacity() * 8;
        hist + self.residual.capacity() * 4 + meta
    }
    /// Checks the internal consistency of a predictor restored from serialised state (buffer
    /// lengths against the layout and `len`, window metadata, finite scalars), so that a
    /// corrupted checkpoint is an error instead of a later panic.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the inconsistent part.
    pub fn check_state(&self) -> Result<()> {
        self.config.validate()?;
        let bad = |parameter: &'static str, actual: usize| Error::InvalidParameter {
            parameter,
            expected: "a state consistent with the predictor's layout and length",
            actual: actual as f32,
        };
        let (na, nb) = dispatch!(&self.store, b => (b.a.len(), b.b.len()));
        let (wa, wb) = match self.layout {
            Layout::Last | Layout::StreamMean => (self.len, 0),
            Layout::StreamLine => (self.len, self.len),
            Layout::Window(w) => (w.checked_mul(self.len).ok_or(bad("window", w))?, 0),
        };
        if na != wa {
            return Err(bad("history buffer length", na));
        }
        if nb != wb {
            return Err(bad("second history buffer length", nb));
        }
        if !self.residual.is_empty() && self.residual.len() != self.len {
            return Err(bad("residual length", self.residual.len()));
        }
        if let Layout::Window(w) = self.layout {
            let m = &self.window;
            if m.cap != w || m.steps.len() != w || m.p.len() != w || m.q.len() != w {
                return Err(bad("window metadata", m.cap));
            }
            if m.head >= w || m.filled > w {
                return Err(bad("window position", m.head));
            }
        }
        if !(self.fit.a.is_finite() && self.fit.mu.is_finite() && self.fit.m2.is_finite()) {
            return Err(bad("fit scalars", 0));
        }
        Ok(())
    }

    /// Forgets every recorded gradient and the residual; keeps the buffers (no allocation).
    pub fn reset(&mut self) {
        self.fit = Fit::default();
        self.samples = 0;
        self.last_step = None;
        self.window.head = 0;
        self.window.filled = 0;
        self.residual.fill(0.0);
        self.residual_active = false;
        self.residual_ratio = 0.0;
    }

    fn check_len(&self, what: &'static str, actual: usize) -> Result<()> {
        if actual == self.len {
            Ok(())
        } else {
            Err(Error::LengthMismatch {
                what,
                expected: self.len,
                actual,
            })
        }
    }

    fn check_grad(&self, grad: &[f32]) -> Result<()> {
        self.check_len("grad", grad.len())?;
        let (limit, name) = match self.config.precision {
            StatPrecision::F32 => (f32::MAX, <f32 as Stored>::NAME),
            StatPrecision::Bf16 => (<bf16 as Stored>::MAX, <bf16 as Stored>::NAME),
            StatPrecision::F16 => (<f16 as Stored>::MAX, <f16 as Stored>::NAME),
        };
        if max_abs_bits(grad) <= limit.to_bits() {
            return Ok(());
        }
        // Error path only: find the first offending element.
        if let Some((index, &value)) = grad.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "grad",
                index,
                value,
            });
        }
        let (index, &value) = grad
            .iter()
            .enumerate()
            .find(|(_, v)| v.abs() > limit)
            .expect("max_abs_bits found an element above the limit");
        Err(Error::OutOfRange {
            what: "grad",
            index,
            value,
            limit,
            precision: name,
        })
    }

    fn check_next_step(&self, step: u64) -> Result<()> {
        match self.last_step {
            Some(last) if step <= last => Err(Error::NonIncreasingStep { last, step }),
            _ => Ok(()),
        }
    }

    /// Horizon h = step − last_step for a prediction at `step`.
    fn horizon(&self, step: u64) -> Result<f64> {
        let last = self.last_step.ok_or(Error::NoSamples { step })?;
        if step < last {
            return Err(Error::StepInPast { last, step });
        }
        Ok((step - last) as f64)
    }

    fn predict_plan(&self, h: f64) -> PredictPlan<'_> {
        plan_for(self.layout, &self.fit, &self.window, h)
    }

    /// The record plan and the scalars after recording a sample at `step` (validated).
    fn record_plan(&self, step: u64) -> (RecordPlan, Fit) {
        let decay = f64::from(self.config.decay);
        match self.layout {
            Layout::Last => (RecordPlan::Copy, Fit::default()),
            Layout::StreamMean | Layout::StreamLine => {
                let (fit, [a0, b0, c1, c2]) = self.fit.stream_step(self.last_step, step, decay);
                let plan = if self.layout == Layout::StreamLine {
                    RecordPlan::Line { a0, b0, c1, c2 }
                } else {
                    RecordPlan::Mean { a0, b0 }
                };
                (plan, fit)
            }
            Layout::Window(_) => (
                RecordPlan::Slot {
                    offset: self.window.head * self.len,
                },
                // Recomputed from the ring by `commit_window` after the slot is written.
                self.fit,
            ),
        }
    }

    /// Window mode: after writing slot `head` for `step`, advances the ring and recomputes
    /// A, μ, M₂ and the per-slot coefficients (two passes over ≤ W scalars, in f64).
    fn commit_window(&mut self, step: u64) {
        let decay = f64::from(self.config.decay);
        let linear = self.config.model == PredictorModel::LinearWls;
        let m = &mut self.window;
        m.steps[m.head] = step;
        m.head = (m.head + 1) % m.cap;
        m.filled = (m.filled + 1).min(m.cap);
        let (mut a, mut swt) = (0.0f64, 0.0f64);
        for j in 0..m.filled {
            let s = m.chrono(j);
            let tau = -((step - m.steps[s]) as f64);
            let w = decay.powf(-tau);
            m.p[s] = w;
            a += w;
            swt += w * tau;
        }
        let mu = swt / a;
        let mut m2 = 0.0f64;
        for j in 0..m.filled {
            let s = m.chrono(j);
            let tau = -((step - m.steps[s]) as f64);
            let d = tau - mu;
            m2 += m.p[s] * d * d;
        }
        let fit = Fit { a, mu, m2 };
        let use_v = linear && fit.velocity_ok();
        for j in 0..m.filled {
            let s = m.chrono(j);
            let tau = -((step - m.steps[s]) as f64);
            let w = m.p[s];
            m.p[s] = w / a;
            m.q[s] = if use_v { w * (tau - mu) / m2 } else { 0.0 };
        }
        self.fit = fit;
    }

    fn commit(&mut self, step: u64, fit: Fit) {
        if matches!(self.layout, Layout::Window(_)) {
            self.commit_window(step);
        } else {
            self.fit = fit;
        }
        self.samples += 1;
        self.last_step = Some(step);
    }

    /// Records the true gradient observed at training step `step`.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`], [`Error::NonFinite`], [`Error::OutOfRange`] (16-bit
    /// storage), [`Error::NonIncreasingStep`]; the state is untouched on error.
    pub fn record(&mut self, step: u64, grad: &[f32]) -> Result<()> {
        self.check_grad(grad)?;
        self.check_next_step(step)?;
        let (plan, fit) = self.record_plan(step);
        let mut sc = Scratch::new();
        dispatch!(&mut self.store, b => {
            for (i, g) in grad.chunks(BLOCK).enumerate() {
                record_block(plan, b, i * BLOCK, g, &mut sc);
            }
        });
        self.commit(step, fit);
        Ok(())
    }

    /// Writes the predicted gradient at step `step` (horizon h = step − last recorded step,
    /// h = 0 gives the fitted value at the last sample) into `out`.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`], [`Error::NoSamples`], [`Error::StepInPast`].
    pub fn predict_into(&self, step: u64, out: &mut [f32]) -> Result<()> {
        self.check_len("out", out.len())?;
        let h = self.horizon(step)?;
        let plan = self.predict_plan(h);
        let mut sc = Scratch::new();
        let r = if self.residual_active {
            Some(self.residual.as_slice())
        } else {
            None
        };
        dispatch!(&self.store, b => {
            for (i, o) in out.chunks_mut(BLOCK).enumerate() {
                let start = i * BLOCK;
                predict_block(plan, b, self.len, start, o, &mut sc);
                if let Some(r) = r {
                    let n = o.len();
                    for (o, &r) in o.iter_mut().zip(&r[start..start + n]) {
                        *o += r;
                    }
                }
            }
        });
        Ok(())
    }

    /// Allocating convenience over [`predict_into`](Self::predict_into).
    ///
    /// # Errors
    /// As [`predict_into`](Self::predict_into).
    pub fn predict(&self, step: u64) -> Result<Vec<f32>> {
        let mut out = vec![0.0; self.len];
        self.predict_into(step, &mut out)?;
        Ok(out)
    }

    /// At a Correct step: in one pass over the elements, measures the quality of what
    /// [`predict_into(step)`](Self::predict_into) would have returned against the true
    /// `grad`, updates the residual r ← (1 − ρ)·r + ρ·(g − ĝ₀) (ĝ₀ = the model's prediction
    /// without r), decides whether r is applied from then on (‖r‖/‖g‖ > `residual_threshold`),
    /// and records `grad` as [`record`](Self::record) does.
    ///
    /// # Errors
    /// As [`record`](Self::record), plus [`Error::NoSamples`] before any sample; the state is
    /// untouched on error.
    pub fn record_correction(&mut self, step: u64, grad: &[f32]) -> Result<PredictionQuality> {
        self.check_grad(grad)?;
        self.check_next_step(step)?;
        let h = self.horizon(step)?;
        if self.residual.len() != self.len {
            self.residual = vec![0.0; self.len];
        }
        let (rplan, fit) = self.record_plan(step);
        let rho = self.config.residual_rate;
        let keep = 1.0 - rho;
        let active = self.residual_active;
        let mut sums = QualitySums::default();
        let mut rr = 0.0f64;
        {
            // Split the borrows: the plan reads the window metadata and scalars, the pass
            // writes the store and the residual.
            let Self {
                layout,
                window,
                fit: cur,
                store,
                residual,
                len,
                ..
            } = self;
            let pplan = plan_for(*layout, cur, window, h);
            let mut sc = Scratch::new();
            let mut pbuf = [0f32; BLOCK];
            let mut fbuf = [0f32; BLOCK];
            dispatch!(store, b => {
                for (i, g) in grad.chunks(BLOCK).enumerate() {
                    let start = i * BLOCK;
                    let n = g.len();
                    let p = &mut pbuf[..n];
                    predict_block(pplan, b, *len, start, p, &mut sc);
                    let r = &mut residual[start..start + n];
                    if active {
                        let f = &mut fbuf[..n];
                        for ((f, &p), &r) in f.iter_mut().zip(p.iter()).zip(r.iter()) {
                            *f = p + r;
                        }
                        sums.add_block(f, g);
                    } else {
                        sums.add_block(p, g);
                    }
                    for ((r, &p), &x) in r.iter_mut().zip(p.iter()).zip(g) {
                        *r = keep * *r + rho * (x - p);
                    }
                    rr += sumsq_block(r);
                    record_block(rplan, b, start, g, &mut sc);
                }
            });
        }
        let (ratio, active) = residual_decision(rr, sums.gg, self.config.residual_threshold);
        self.residual_ratio = ratio;
        self.residual_active = active;
        self.commit(step, fit);
        Ok(sums.finish())
    }
}

impl GradientPredictor {
    /// The scalar coefficients with which recording a gradient at `step` would update the
    /// per-element history (see [`RecordCoefficients`]), without recording anything. With
    /// [`predict_coefficients`](Self::predict_coefficients) it lets another implementation
    /// (the facade's device-resident trainer) keep the history as device tensors while this
    /// crate solves the scalars: a predictor of length 0 tracks them, and
    /// `record(step, &[])` commits them.
    ///
    /// # Errors
    /// [`Error::NonIncreasingStep`].
    pub fn record_coefficients(&self, step: u64) -> Result<RecordCoefficients> {
        self.check_next_step(step)?;
        Ok(match self.record_plan(step).0 {
            RecordPlan::Copy => RecordCoefficients::Replace,
            RecordPlan::Mean { a0, b0 } => RecordCoefficients::Mean { a0, b0 },
            RecordPlan::Line { a0, b0, c1, c2 } => RecordCoefficients::Line { a0, b0, c1, c2 },
            RecordPlan::Slot { .. } => RecordCoefficients::Slot {
                slot: self.window.head,
            },
        })
    }

    /// The scalar coefficients of the prediction at `step` (see [`PredictCoefficients`]);
    /// the residual, when active, is added on top.
    ///
    /// # Errors
    /// [`Error::NoSamples`], [`Error::StepInPast`].
    pub fn predict_coefficients(&self, step: u64) -> Result<PredictCoefficients> {
        let h = self.horizon(step)?;
        Ok(match self.predict_plan(h) {
            PredictPlan::Copy => PredictCoefficients::Copy,
            PredictPlan::Line { gamma } => PredictCoefficients::Line { gamma },
            PredictPlan::Window { meta, hm } => PredictCoefficients::Window {
                terms: (0..meta.filled)
                    .map(|j| {
                        let s = meta.chrono(j);
                        (s, (meta.p[s] + hm * meta.q[s]) as f32)
                    })
                    .collect(),
            },
        })
    }
}
