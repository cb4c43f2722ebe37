//! The per-tensor gradient predictor.

use half::{bf16, f16};

use crate::config::{HistoryMode, PredictorConfig, PredictorModel, StatPrecision};
use crate::error::{Error, Result};
use crate::quality::{PredictionQuality, QualitySums};
use crate::storage::{BLOCK, Stored, max_abs_bits};

/// The velocity term is dropped (the fit falls back to the weighted mean, v = 0) when the
/// weighted variance of the sample times, M₂/A, is at or below this floor. With distinct
/// integer steps that happens only when there is one sample, or when every older sample's
/// weight has fallen below about 1e-200 of the newest one.
const VAR_FLOOR: f64 = 1e-200;

/// Scalars shared by every element: total weight A = Σw, weighted mean time μ = Σwτ/A and
/// weighted second central moment M₂ = Σw(τ−μ)², all in time τ relative to the last sample
/// (τ = step − last_step ≤ 0). The normal-equation determinant is A·M₂.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
struct Fit {
    a: f64,
    mu: f64,
    m2: f64,
}

impl Fit {
    fn velocity_ok(&self) -> bool {
        self.m2 > VAR_FLOOR * self.a
    }
}

/// Which per-element buffers exist and what they mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
enum Layout {
    /// `a` = the last gradient.
    Last,
    /// `a` = M₀ = S₀/A, the decayed mean.
    StreamMean,
    /// `a` = M₀ = S₀/A, `b` = N₁ = −S₁/B̄ with B̄ = Σw|τ| (a second weighted mean).
    StreamLine,
    /// `a` = W slots of `len` values each.
    Window(usize),
}

#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
struct Buffers<T> {
    a: Vec<T>,
    b: Vec<T>,
}

#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
enum Store {
    F32(Buffers<f32>),
    Bf16(Buffers<bf16>),
    F16(Buffers<f16>),
}

macro_rules! dispatch {
    ($store:expr, $b:ident => $body:expr) => {
        match $store {
            Store::F32($b) => $body,
            Store::Bf16($b) => $body,
            Store::F16($b) => $body,
        }
    };
}

/// Ring-buffer metadata (Window mode only): the step of each slot and its per-slot
/// coefficients p = w/A and q = w(τ−μ)/M₂, so that the prediction at horizon h is
/// Σ (p + (h−μ)·q)·g over the slots.
#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
struct WindowMeta {
    cap: usize,
    steps: Vec<u64>,
    head: usize,
    filled: usize,
    p: Vec<f64>,
    q: Vec<f64>,
}

impl WindowMeta {
    /// Slot index of the j-th oldest held gradient.
    #[inline]
    fn chrono(&self, j: usize) -> usize {
        (self.head + self.cap - self.filled + j) % self.cap
    }
}

/// How a block of predictions is formed from the stored history.
#[derive(Clone, Copy)]
enum PredictPlan<'a> {
    /// out = a.
    Copy,
    /// out = M₀ + γ·(N₁ − M₀).
    Line { gamma: f32 },
    /// out = Σ (p + hm·q)·slot over the held slots, oldest first.
    Window { meta: &'a WindowMeta, hm: f64 },
}

/// How a block of a new gradient g enters the stored history.
#[derive(Clone, Copy)]
enum RecordPlan {
    /// a = g.
    Copy,
    /// M₀ ← a0·M₀ + b0·g.
    Mean { a0: f32, b0: f32 },
    /// N₁ ← c1·N₁ + c2·M₀ (old M₀), then M₀ ← a0·M₀ + b0·g.
    Line { a0: f32, b0: f32, c1: f32, c2: f32 },
    /// Slot starting at `offset` ← g.
    Slot { offset: usize },
}

struct Scratch {
    s0: [f32; BLOCK],
    s1: [f32; BLOCK],
}

impl Scratch {
    fn new() -> Self {
        Self {
            s0: [0.0; BLOCK],
            s1: [0.0; BLOCK],
        }
    }
}

fn predict_block<T: Stored>(
    plan: PredictPlan<'_>,
    bufs: &Buffers<T>,
    len: usize,
    start: usize,
    out: &mut [f32],
    sc: &mut Scratch,
) {
    let end = start + out.len();
    match plan {
        PredictPlan::Copy => out.copy_from_slice(T::read(&bufs.a[start..end], &mut sc.s0)),
        PredictPlan::Line { gamma } => {
            let m = T::read(&bufs.a[start..end], &mut sc.s0);
            let n = T::read(&bufs.b[start..end], &mut sc.s1);
            for ((o, &m), &n) in out.iter_mut().zip(m).zip(n) {
                *o = m + gamma * (n - m);
            }
        }
        PredictPlan::Window { meta, hm } => {
            for j in 0..meta.filled {
                let s = meta.chrono(j);
                let c = (meta.p[s] + hm * meta.q[s]) as f32;
                let off = s * len;
                let x = T::read(&bufs.a[off + start..off + end], &mut sc.s0);
                if j == 0 {
                    for (o, &v) in out.iter_mut().zip(x) {
                        *o = c * v;
                    }
                } else {
                    for (o, &v) in out.iter_mut().zip(x) {
                        *o += c * v;
                    }
                }
            }
        }
    }
}

fn record_block<T: Stored>(
    plan: RecordPlan,
    bufs: &mut Buffers<T>,
    start: usize,
    g: &[f32],
    sc: &mut Scratch,
) {
    let end = start + g.len();
    match plan {
        RecordPlan::Copy => T::store(g, &mut bufs.a[start..end]),
        RecordPlan::Slot { offset } => T::store(g, &mut bufs.a[offset + start..offset + end]),
        RecordPlan::Mean { a0, b0 } => T::modify(&mut bufs.a[start..end], &mut sc.s0, |m| {
            for (m, &x) in m.iter_mut().zip(g) {
                *m = a0 * *m + b0 * x;
            }
        }),
        RecordPlan::Line { a0, b0, c1, c2 } => {
            let Buffers { a, b } = bufs;
            let (s0, s1) = (&mut sc.s0, &mut sc.s1);
            T::modify(&mut a[start..end], s0, |m| {
                T::modify(&mut b[start..end], s1, |n| {
                    for ((m, n), &x) in m.iter_mut().zip(n.iter_mut()).zip(g) {
                        *n = c1 * *n + c2 * *m;
                        *m = a0 * *m + b0 * x;
                    }
                })
            })
        }
    }
}

/// The prediction plan at horizon `h` for the current scalars.
fn plan_for<'a>(layout: Layout, fit: &Fit, window: &'a WindowMeta, h: f64) -> PredictPlan<'a> {
    match layout {
        Layout::Last | Layout::StreamMean => PredictPlan::Copy,
        // ĝ(h) = M₀ + γ·(N₁ − M₀) with γ = (h − μ)·A·μ / M₂ (see the docs' derivation).
        Layout::StreamLine if fit.velocity_ok() => PredictPlan::Line {
            gamma: ((h - fit.mu) * fit.a * fit.mu / fit.m2) as f32,
        },
        Layout::StreamLine => PredictPlan::Copy,
        Layout::Window(_) => PredictPlan::Window {
            meta: window,
            hm: h - fit.mu,
        },
    }
}

/// Sum of squares of one block: eight f32 lanes, then f64.
#[inline]
fn sumsq_block(x: &[f32]) -> f64 {
    let mut lanes = [0f32; 8];
    let c = x.chunks_exact(8);
    let tail = c.remainder();
    for c in c {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += v * v;
        }
    }
    for (l, &v) in lanes.iter_mut().zip(tail) {
        *l += v * v;
    }
    lanes.iter().map(|&v| f64::from(v)).sum()
}

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
                let (fit, a0, b0, c1, c2) = match self.last_step {
                    None => (
                        Fit {
                            a: 1.0,
                            mu: 0.0,
                            m2: 0.0,
                        },
                        0.0,
                        1.0,
                        0.0,
                        0.0,
                    ),
                    Some(last) => {
                        let delta = (step - last) as f64;
                        let Fit { a, mu, m2 } = self.fit;
                        // Relative time: the old samples move Δ further into the past, their
                        // weights shrink by k = decay^Δ, and the new sample sits at τ = 0
                        // with weight 1 (a weighted Welford step).
                        let k = decay.powf(delta);
                        let ka = k * a;
                        let a_new = ka + 1.0;
                        let a0 = ka / a_new;
                        let d = mu - delta;
                        // B̄ = Σw|τ| = −A·μ; N₁ coefficients with k factored out.
                        let bbar = -a * mu;
                        let da = delta * a;
                        let denom = bbar + da;
                        (
                            Fit {
                                a: a_new,
                                mu: a0 * d,
                                m2: k * m2 + a0 * d * d,
                            },
                            a0,
                            1.0 / a_new,
                            bbar / denom,
                            da / denom,
                        )
                    }
                };
                let plan = if self.layout == Layout::StreamLine {
                    RecordPlan::Line {
                        a0: a0 as f32,
                        b0: b0 as f32,
                        c1: c1 as f32,
                        c2: c2 as f32,
                    }
                } else {
                    RecordPlan::Mean {
                        a0: a0 as f32,
                        b0: b0 as f32,
                    }
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
        let gn = sums.gg.sqrt();
        let rn = rr.sqrt();
        let ratio = if gn > 0.0 {
            rn / gn
        } else if rn > 0.0 {
            f64::INFINITY
        } else {
            0.0
        };
        self.residual_ratio = ratio as f32;
        self.residual_active = ratio > f64::from(self.config.residual_threshold);
        self.commit(step, fit);
        Ok(sums.finish())
    }
}

#[cfg(feature = "ndarray")]
impl GradientPredictor {
    /// [`record`](Self::record) for an ndarray view of any shape (standard layout).
    ///
    /// # Errors
    /// [`Error::NotContiguous`], or as [`record`](Self::record).
    pub fn record_array<D: ndarray::Dimension>(
        &mut self,
        step: u64,
        grad: ndarray::ArrayView<'_, f32, D>,
    ) -> Result<()> {
        let g = grad
            .as_slice()
            .ok_or(Error::NotContiguous { what: "grad" })?;
        self.record(step, g)
    }

    /// [`predict_into`](Self::predict_into) for an ndarray view of any shape (standard layout).
    ///
    /// # Errors
    /// [`Error::NotContiguous`], or as [`predict_into`](Self::predict_into).
    pub fn predict_into_array<D: ndarray::Dimension>(
        &self,
        step: u64,
        mut out: ndarray::ArrayViewMut<'_, f32, D>,
    ) -> Result<()> {
        let o = out
            .as_slice_mut()
            .ok_or(Error::NotContiguous { what: "out" })?;
        self.predict_into(step, o)
    }

    /// [`record_correction`](Self::record_correction) for an ndarray view (standard layout).
    ///
    /// # Errors
    /// [`Error::NotContiguous`], or as [`record_correction`](Self::record_correction).
    pub fn record_correction_array<D: ndarray::Dimension>(
        &mut self,
        step: u64,
        grad: ndarray::ArrayView<'_, f32, D>,
    ) -> Result<PredictionQuality> {
        let g = grad
            .as_slice()
            .ok_or(Error::NotContiguous { what: "grad" })?;
        self.record_correction(step, g)
    }
}
