//! [`FetchSgd`]: momentum and error feedback inside a count sketch, under AdamW.

use vsa_core::rng::{fnv1a, key_from_name, mix, splitmix64};

use super::MAX_ROWS;
use super::adam::{AdamConfig, AdamMoments, check_run, check_warmup, new_from_state};
use super::kernels;
use super::message::{Message, Part};
use crate::error::{Error, Result, config_error, invalid};
use crate::params::Params;
use crate::state::{check_buffers, check_same};

/// Domain of FetchSGD's fixed sketch keys.
const FETCH_DOMAIN: u64 = 0x6665_7463_6873_6764; // "fetchsgd"

/// The wire code of [`FetchSgd`] messages (after [`Method::code`](super::Method::code)'s
/// 1–4).
pub const FETCH_SGD_CODE: u8 = 5;

/// A [`FetchSgd`]'s configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FetchSgdConfig {
    /// Sketch rows `r` in `1 ..= MAX_ROWS`.
    pub rows: usize,
    /// Sketch values per element in `(0, 1]`: `w = ⌈ratio·n / r⌉` buckets per row.
    pub ratio: f64,
    /// Heavy hitters recovered per step: `k = ⌈k_fraction·n⌉`, `k_fraction` in `(0, 1]`.
    pub k_fraction: f64,
    /// Seed of the sketch keys.
    pub seed: u64,
    /// Exact AdamW steps (dense gradients) before the variance is frozen; at least 1.
    pub warmup_steps: u64,
    /// FetchSGD's masking: zero both sketch accumulators in the buckets of the recovered
    /// coordinates. `false`: subtract the sketch of the update from the error sketch only.
    pub zero_recovered: bool,
    /// Sketch the preconditioned gradient `P ⊙ g` (`true`), or the raw gradient `g` and
    /// precondition the recovered update (`false`: `d = P ⊙ Δ / (1 − β₁ᵗ)`). The
    /// preconditioner flattens the gradient's magnitudes, which is the worst case for
    /// heavy-hitter recovery; the raw gradient keeps its heavy tail.
    pub sketch_preconditioned: bool,
    /// AdamW's moment settings.
    pub adam: AdamConfig,
}

impl FetchSgdConfig {
    /// Checks every field.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for `rows` 0 or above [`MAX_ROWS`], a fraction outside
    /// `(0, 1]`, a warm-up of 0 steps, or the moments' errors.
    pub fn validate(&self) -> Result<()> {
        if self.rows == 0 || self.rows > MAX_ROWS {
            return Err(config_error("rows", format!("1 ..= {MAX_ROWS}"), self.rows));
        }
        for (name, v) in [("ratio", self.ratio), ("k_fraction", self.k_fraction)] {
            if !(v.is_finite() && v > 0.0 && v <= 1.0) {
                return Err(config_error(name, "a fraction in (0, 1]", v));
            }
        }
        check_warmup(self.warmup_steps)?;
        self.adam.validate()
    }

    /// [`validate`](Self::validate), plus a warm-up shorter than a run of `total_steps`.
    ///
    /// # Errors
    /// As [`Self::validate`], and `warmup_steps ≥ total_steps`.
    pub fn validate_for_run(&self, total_steps: u64) -> Result<()> {
        self.validate()?;
        check_run(self.warmup_steps, total_steps)
    }

    /// A short label for tables.
    pub fn label(&self) -> String {
        format!(
            "FetchSGD r={} ρ={} k/n={}{}{}",
            self.rows,
            self.ratio,
            self.k_fraction,
            if self.sketch_preconditioned {
                ", sketch of P⊙g"
            } else {
                ", sketch of g"
            },
            if self.zero_recovered {
                ""
            } else {
                ", no zeroing"
            }
        )
    }
}

#[derive(Debug, Clone, Copy)]
struct Plan {
    numel: usize,
    width: usize,
    k: usize,
    keys: [u64; MAX_ROWS],
}

/// Momentum and error feedback inside a count sketch (Rothchild et al. 2020),
/// on AdamW's frozen-variance preconditioned gradient.
///
/// The sketch `S` has `r` rows of `w` buckets with keys from `(seed, name)` only — fixed
/// over steps, unlike [`Method::CountSketch`](super::Method::CountSketch) — so sketches of
/// different steps live in one space and can be accumulated there. `S` is linear: the mean
/// of the ranks' sketches is the sketch of the mean gradient. Per step `t` (1-based), with
/// `W = warmup_steps`:
///
/// ```text
/// t ≤ W:  send g (dense); exact AdamW moments m, v; d = m̂ / (√v̂ + ε)
///         at t = W: v is frozen, P = 1/(√v̂_W + ε), S_u ← S(P ⊙ m), S_e ← 0
/// t > W:  send S(P ⊙ g)                                   (r·w values, no indices)
///         S_u ← β₁S_u + (1−β₁)·mean S(P ⊙ g)               (momentum, in sketch space)
///         S_e ← S_e + S_u                                  (error accumulation, in sketch space)
///         Δ = top-k of the median estimate U(S_e)          (heavy hitters)
///         zero_recovered: S_u and S_e ← 0 in every bucket a recovered coordinate hashes to
///         otherwise:      S_e ← S_e − S(Δ)
///         d = Δ / (1 − β₁ᵗ)
/// ```
///
/// With [`sketch_preconditioned`](FetchSgdConfig::sketch_preconditioned) off, `P` moves
/// out of the sketch: the ranks send `S(g)`, `S_u ← S(m)` at the hand-off, and
/// `d = P ⊙ Δ / (1 − β₁ᵗ)`.
///
/// The caller applies `θ ← θ·(1 − lr·wd) − lr·d`. Why this is stable where a dense
/// residual with a heavy-hitter decode diverges is derived in `docs/compression.md`.
#[derive(Debug, Clone)]
pub struct FetchSgd {
    config: FetchSgdConfig,
    params: Params,
    plans: Vec<Plan>,
    fingerprint: u64,
    moments: AdamMoments,
    su: Vec<Vec<f32>>,
    se: Vec<Vec<f32>>,
}

/// A [`FetchSgd`]'s state; restoring it resumes a run bit for bit.
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FetchSgdState {
    /// Parameter names, sorted.
    pub names: Vec<String>,
    /// Parameter shapes, in the order of `names`.
    pub shapes: Vec<Vec<usize>>,
    /// The configuration (`None` only in a default value).
    pub config: Option<FetchSgdConfig>,
    /// The applied steps and AdamW's moments (the dense momentum is used during the
    /// warm-up only).
    pub moments: AdamMoments,
    /// The momentum sketch `S_u` (`rows × width` per parameter).
    pub momentum_sketch: Vec<Vec<f32>>,
    /// The error sketch `S_e` (`rows × width` per parameter).
    pub error_sketch: Vec<Vec<f32>>,
}

fn ceil_frac(f: f64, n: usize) -> usize {
    ((f * n as f64).ceil() as usize).clamp(1, n)
}

impl FetchSgd {
    /// A scheme for the parameters `shapes` (`(name, shape)` in any order).
    ///
    /// # Errors
    /// [`FetchSgdConfig::validate`]'s errors; [`Error::NoParameters`],
    /// [`Error::EmptyParameter`], [`Error::DuplicateParameter`].
    pub fn new(shapes: &[(String, Vec<usize>)], config: FetchSgdConfig) -> Result<Self> {
        config.validate()?;
        let params = Params::new(shapes)?;
        let plans: Vec<Plan> = params
            .list()
            .iter()
            .map(|p| {
                let numel = p.numel();
                let base = mix(mix(config.seed, key_from_name(&p.name)), FETCH_DOMAIN);
                let mut keys = [0u64; MAX_ROWS];
                for (r, k) in keys.iter_mut().enumerate().take(config.rows) {
                    *k = mix(base, r as u64);
                }
                Plan {
                    numel,
                    width: ((config.ratio * numel as f64 / config.rows as f64).ceil() as usize)
                        .max(1),
                    k: ceil_frac(config.k_fraction, numel),
                    keys,
                }
            })
            .collect();
        let tables = plans
            .iter()
            .map(|p| vec![0f32; config.rows * p.width])
            .collect::<Vec<_>>();
        Ok(Self {
            fingerprint: Self::fingerprint_of(&config, &params),
            moments: AdamMoments::zeros(&params),
            config,
            params,
            plans,
            su: tables.clone(),
            se: tables,
        })
    }

    fn fingerprint_of(c: &FetchSgdConfig, params: &Params) -> u64 {
        let mut b = Vec::new();
        b.extend_from_slice(b"grad-sketch/fetchsgd/1");
        for w in [
            c.rows as u64,
            c.ratio.to_bits(),
            c.k_fraction.to_bits(),
            c.seed,
            c.warmup_steps,
            u64::from(c.zero_recovered),
            u64::from(c.sketch_preconditioned),
            c.adam.beta1.to_bits(),
            c.adam.beta2.to_bits(),
            c.adam.eps.to_bits(),
        ] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        params.hash_into(&mut b);
        splitmix64(fnv1a(b))
    }

    /// The configuration.
    pub fn config(&self) -> &FetchSgdConfig {
        &self.config
    }

    /// The declared parameters, sorted by name.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The fingerprint stored in every message.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Applied steps (the step of the next message).
    pub fn step(&self) -> u64 {
        self.moments.step
    }

    /// Whether step `step()` is still an exact warm-up step.
    pub fn in_warmup(&self) -> bool {
        self.step() < self.config.warmup_steps
    }

    /// Sketch buckets per row of `name`.
    pub fn width(&self, name: &str) -> Option<usize> {
        Some(self.plans[self.params.position(name)?].width)
    }

    /// The momentum sketch `S_u` of `name` (`rows × width`, row-major).
    pub fn momentum_sketch(&self, name: &str) -> Option<&[f32]> {
        Some(&self.su[self.params.position(name)?])
    }

    /// The error sketch `S_e` of `name` (`rows × width`, row-major).
    pub fn error_sketch(&self, name: &str) -> Option<&[f32]> {
        Some(&self.se[self.params.position(name)?])
    }

    /// The variance of `name`.
    pub fn variance(&self, name: &str) -> Option<&[f32]> {
        Some(&self.moments.variance[self.params.position(name)?])
    }

    /// The sketch `S(x)` of a vector `x` of parameter `name` with this scheme's fixed keys
    /// (`rows × width`, row-major): what [`compress`](Self::compress) sends for
    /// `P ⊙ g` (or `g`), and the space the accumulators live in.
    ///
    /// # Errors
    /// [`Error::UnknownParameter`], [`Error::ShapeMismatch`].
    pub fn sketch_of(&self, name: &str, x: &[f32]) -> Result<Vec<f32>> {
        let i = self.params.require(name)?;
        let p = &self.params.list()[i];
        if x.len() != p.numel() {
            return Err(Error::ShapeMismatch {
                name: name.to_string(),
                expected: p.shape.clone(),
                actual: vec![x.len()],
            });
        }
        let mut table = vec![0f32; self.su[i].len()];
        self.sketch(i, x, &mut table);
        Ok(table)
    }

    /// Bytes of state: moments and the two sketches.
    pub fn memory_bytes(&self) -> usize {
        self.moments.memory_bytes()
            + 4 * self.su.iter().chain(&self.se).map(Vec::len).sum::<usize>()
    }

    /// The sketch `S(x)` of parameter `i` (fixed keys) into `table`.
    fn sketch(&self, i: usize, x: &[f32], table: &mut [f32]) {
        let p = &self.plans[i];
        kernels::sketch_into(x, &p.keys[..self.config.rows], p.width, table);
    }

    /// The local half of a step: the dense gradient during the warm-up, afterwards the
    /// sketch `S(P ⊙ g)` of the preconditioned gradient. Changes nothing.
    ///
    /// # Errors
    /// [`Error::ParameterCount`], [`Error::ShapeMismatch`], [`Error::NonFiniteGradient`]
    /// (also when a sketch sum overflows).
    pub fn compress<G: AsRef<[f32]>>(&self, grads: &[G]) -> Result<Message> {
        self.params.check_grads(grads)?;
        let mut parts = Vec::with_capacity(self.plans.len());
        for (i, g) in grads.iter().enumerate() {
            let g = g.as_ref();
            let part = if self.in_warmup() {
                Part::Dense(g.to_vec())
            } else if !self.config.sketch_preconditioned {
                let mut table = vec![0f32; self.su[i].len()];
                self.sketch(i, g, &mut table);
                Part::Values(table)
            } else {
                let mut pre = vec![0f32; g.len()];
                self.config.adam.frozen_inverse(
                    self.config.warmup_steps,
                    &self.moments.variance[i],
                    &mut pre,
                );
                pre.iter_mut().zip(g).for_each(|(p, g)| *p *= g);
                let mut table = vec![0f32; self.su[i].len()];
                self.sketch(i, &pre, &mut table);
                Part::Values(table)
            };
            if !part.all_finite() {
                return Err(Error::NonFiniteGradient {
                    name: self.params.list()[i].name.clone(),
                });
            }
            parts.push(part);
        }
        Ok(Message {
            fingerprint: self.fingerprint,
            method: FETCH_SGD_CODE,
            step: self.step(),
            elements: self.params.total_numel() as u64,
            parts,
        })
    }

    /// Checks that `m` was made by a scheme with this config and parameters at this step.
    ///
    /// # Errors
    /// [`Error::FingerprintMismatch`], [`Error::InvalidCompressed`].
    pub fn check(&self, m: &Message) -> Result<()> {
        if m.fingerprint != self.fingerprint {
            return Err(Error::FingerprintMismatch {
                expected: self.fingerprint,
                actual: m.fingerprint,
            });
        }
        if m.method != FETCH_SGD_CODE
            || m.parts.len() != self.plans.len()
            || m.elements != self.params.total_numel() as u64
            || m.step != self.step()
        {
            return Err(invalid(format!(
                "method/parts/elements/step: expected {FETCH_SGD_CODE}/{}/{}/{}, got {}/{}/{}/{}",
                self.plans.len(),
                self.params.total_numel(),
                self.step(),
                m.method,
                m.parts.len(),
                m.elements,
                m.step
            )));
        }
        let warm = self.in_warmup();
        for (i, part) in m.parts.iter().enumerate() {
            let ok = match part {
                Part::Dense(v) => warm && v.len() == self.plans[i].numel,
                Part::Values(v) => !warm && v.len() == self.su[i].len(),
                _ => false,
            };
            if !ok {
                return Err(invalid(format!(
                    "parameter `{}`: expected a {} part of {} values at step {}",
                    self.params.list()[i].name,
                    if warm { "dense" } else { "sketch" },
                    if warm {
                        self.plans[i].numel
                    } else {
                        self.su[i].len()
                    },
                    self.step()
                )));
            }
            if !part.all_finite() {
                return Err(invalid(format!("part {i}: a value is not finite")));
            }
        }
        Ok(())
    }

    /// The shared half of a step: averages the messages of every rank (one each, summed in
    /// the order given, so a fixed order gives the same bits), updates the accumulators and
    /// writes the AdamW direction `d` into `out` (sorted-name order).
    ///
    /// # Errors
    /// [`Error::InvalidCompressed`] / [`Error::FingerprintMismatch`] for no message or one
    /// of another config or step; [`Error::ParameterCount`] / [`Error::ShapeMismatch`] for
    /// `out`; [`Error::NonFiniteGradient`] when an accumulator overflows. On error nothing
    /// changes (`out` included).
    pub fn apply<O: AsMut<[f32]>>(&mut self, received: &[Message], out: &mut [O]) -> Result<()> {
        if received.is_empty() {
            return Err(invalid("no messages to apply"));
        }
        for m in received {
            self.check(m)?;
        }
        self.params
            .check_lengths(out.len(), |i| out[i].as_mut().len())?;
        let n = received.len();
        let mut mean: Vec<Vec<f32>> = Vec::with_capacity(self.plans.len());
        for i in 0..self.plans.len() {
            let mut acc: Vec<f32> = Vec::new();
            for msg in received {
                if let Part::Dense(x) | Part::Values(x) = &msg.parts[i] {
                    if acc.is_empty() {
                        acc.clone_from(x);
                    } else {
                        acc.iter_mut().zip(x).for_each(|(a, b)| *a += b);
                    }
                }
            }
            if n > 1 {
                let s = 1.0 / n as f32;
                acc.iter_mut().for_each(|x| *x *= s);
            }
            mean.push(acc);
        }
        let t = self.step() + 1;
        let adam = self.config.adam;
        let rows = self.config.rows;
        let (mut m, mut v) = (self.moments.momentum.clone(), self.moments.variance.clone());
        let (mut su, mut se) = (self.su.clone(), self.se.clone());
        let mut d: Vec<Vec<f32>> = self.plans.iter().map(|p| vec![0f32; p.numel]).collect();
        if self.in_warmup() {
            for i in 0..m.len() {
                adam.exact(t, &mean[i], &mut m[i], &mut v[i], &mut d[i]);
            }
            if t == self.config.warmup_steps {
                // Hand-off: the momentum of the preconditioned gradient, sketched.
                for i in 0..m.len() {
                    let mut pre = vec![1f32; m[i].len()];
                    if self.config.sketch_preconditioned {
                        adam.frozen_inverse(t, &v[i], &mut pre);
                    }
                    pre.iter_mut().zip(&m[i]).for_each(|(p, m)| *p *= m);
                    self.sketch(i, &pre, &mut su[i]);
                    se[i].fill(0.0);
                }
            }
        } else {
            let (b1, sm) = (adam.beta1 as f32, adam.m_scale(t) as f32);
            let (mut order, mut pre) = (Vec::new(), Vec::new());
            for (i, plan) in self.plans.iter().enumerate() {
                let keys = &plan.keys[..rows];
                pre.clear();
                pre.resize(plan.numel, sm);
                if !self.config.sketch_preconditioned {
                    adam.frozen_inverse(self.config.warmup_steps, &v[i], &mut pre);
                    pre.iter_mut().for_each(|p| *p *= sm);
                }
                for ((u, e), &s) in su[i].iter_mut().zip(se[i].iter_mut()).zip(&mean[i]) {
                    *u = b1 * *u + (1.0 - b1) * s;
                    *e += *u;
                }
                kernels::estimate_into(&se[i], keys, plan.width, &mut d[i]);
                kernels::top_k(&d[i], plan.k, &mut order);
                let mut next = order.iter().peekable();
                for (j, o) in d[i].iter_mut().enumerate() {
                    if next.peek().is_some_and(|&&k| k as usize == j) {
                        next.next();
                        for (r, &key) in keys.iter().enumerate() {
                            let (b, s) = kernels::bucket_sign(key, j, plan.width);
                            let at = r * plan.width + b;
                            if self.config.zero_recovered {
                                su[i][at] = 0.0;
                                se[i][at] = 0.0;
                            } else {
                                se[i][at] -= s * *o;
                            }
                        }
                        *o *= pre[j];
                    } else {
                        *o = 0.0;
                    }
                }
            }
        }
        for (i, x) in m.iter().zip(&v).zip(&su).zip(&se).zip(&d).enumerate() {
            let ((((m, v), su), se), d) = x;
            if ![m, v, su, se, d]
                .iter()
                .all(|x| x.iter().all(|y| y.is_finite()))
            {
                return Err(Error::NonFiniteGradient {
                    name: self.params.list()[i].name.clone(),
                });
            }
        }
        for (o, d) in out.iter_mut().zip(&d) {
            o.as_mut().copy_from_slice(d);
        }
        self.moments = AdamMoments {
            step: t,
            momentum: m,
            variance: v,
        };
        (self.su, self.se) = (su, se);
        Ok(())
    }

    /// The state (see [`FetchSgdState`]).
    pub fn state(&self) -> FetchSgdState {
        FetchSgdState {
            names: self.params.list().iter().map(|p| p.name.clone()).collect(),
            shapes: self.params.list().iter().map(|p| p.shape.clone()).collect(),
            config: Some(self.config),
            moments: self.moments.clone(),
            momentum_sketch: self.su.clone(),
            error_sketch: self.se.clone(),
        }
    }

    /// Builds a scheme from a state: [`new`](Self::new), then [`restore`](Self::restore).
    ///
    /// # Errors
    /// As [`new`](Self::new) and [`restore`](Self::restore); [`Error::InvalidState`] for a
    /// state without a config.
    pub fn from_state(state: FetchSgdState) -> Result<Self> {
        let mut s = new_from_state(state.config, &state.names, &state.shapes, Self::new)?;
        s.restore(&state)?;
        Ok(s)
    }

    /// Puts a state back; the parameters and config must be this scheme's.
    ///
    /// # Errors
    /// [`Error::InvalidState`] for other parameters or config, or buffers of the wrong
    /// number, lengths or non-finite values. Nothing changes on error.
    pub fn restore(&mut self, state: &FetchSgdState) -> Result<()> {
        check_same(
            &self.params,
            &Some(self.config),
            &state.names,
            &state.shapes,
            &state.config,
        )?;
        self.moments.check(&state.moments)?;
        let tables: Vec<usize> = self.su.iter().map(Vec::len).collect();
        check_buffers("momentum sketch", &state.momentum_sketch, &tables)?;
        check_buffers("error sketch", &state.error_sketch, &tables)?;
        self.moments.clone_from(&state.moments);
        self.su.clone_from(&state.momentum_sketch);
        self.se.clone_from(&state.error_sketch);
        Ok(())
    }
}
