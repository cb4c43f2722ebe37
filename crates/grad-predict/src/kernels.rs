//! Block kernels: the per-element buffers and the loops that predict from and record into
//! them, one block of `BLOCK` elements at a time.

use half::{bf16, f16};

use crate::storage::{BLOCK, Stored};

/// Which per-element buffers exist and what they mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(crate) enum Layout {
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
pub(crate) struct Buffers<T> {
    pub(crate) a: Vec<T>,
    pub(crate) b: Vec<T>,
}

#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(crate) enum Store {
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
pub(crate) use dispatch;

/// Ring-buffer metadata (Window mode only): the step of each slot and its per-slot
/// coefficients p = w/A and q = w(τ−μ)/M₂, so that the prediction at horizon h is
/// Σ (p + (h−μ)·q)·g over the slots.
#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(crate) struct WindowMeta {
    pub(crate) cap: usize,
    pub(crate) steps: Vec<u64>,
    pub(crate) head: usize,
    pub(crate) filled: usize,
    pub(crate) p: Vec<f64>,
    pub(crate) q: Vec<f64>,
}

impl WindowMeta {
    /// Slot index of the j-th oldest held gradient.
    #[inline]
    pub(crate) fn chrono(&self, j: usize) -> usize {
        (self.head + self.cap - self.filled + j) % self.cap
    }
}

/// How a block of predictions is formed from the stored history.
#[derive(Clone, Copy)]
pub(crate) enum PredictPlan<'a> {
    /// out = a.
    Copy,
    /// out = M₀ + γ·(N₁ − M₀).
    Line { gamma: f32 },
    /// out = Σ (p + hm·q)·slot over the held slots, oldest first.
    Window { meta: &'a WindowMeta, hm: f64 },
}

/// How a block of a new gradient g enters the stored history.
#[derive(Clone, Copy)]
pub(crate) enum RecordPlan {
    /// a = g.
    Copy,
    /// M₀ ← a0·M₀ + b0·g.
    Mean { a0: f32, b0: f32 },
    /// N₁ ← c1·N₁ + c2·M₀ (old M₀), then M₀ ← a0·M₀ + b0·g.
    Line { a0: f32, b0: f32, c1: f32, c2: f32 },
    /// Slot starting at `offset` ← g.
    Slot { offset: usize },
}

pub(crate) struct Scratch {
    pub(crate) s0: [f32; BLOCK],
    pub(crate) s1: [f32; BLOCK],
}

impl Scratch {
    pub(crate) fn new() -> Self {
        Self {
            s0: [0.0; BLOCK],
            s1: [0.0; BLOCK],
        }
    }
}

pub(crate) fn predict_block<T: Stored>(
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

pub(crate) fn record_block<T: Stored>(
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

/// Sum of squares of one block: eight f32 lanes, then f64.
#[inline]
pub(crate) fn sumsq_block(x: &[f32]) -> f64 {
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
