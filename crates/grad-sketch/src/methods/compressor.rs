//! [`Compressor`]: one encode/decode shape for every [`Method`], with error feedback and a
//! dense warm-up.

use vsa_core::rng::{fnv1a, key_from_name, mix, splitmix64};

use super::kernels;
use super::message::{Message, Part};
use super::packed::PackedValues;
use super::{CompressorConfig, MAX_ROWS, Method};
use crate::error::{Error, Result, invalid};
use crate::params::Params;

/// Domain constants separating the key streams.
const STEP_DOMAIN: u64 = 0x6772_6164_2d73_6b31; // "grad-sk1"
const Q_DOMAIN: u64 = 0x706f_7765_7273_6764; // "powersgd"

/// How one parameter is compressed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Plan {
    numel: usize,
    key: u64,
    /// Count sketch buckets per row.
    width: usize,
    /// Top-k / heavy hitters kept.
    k: usize,
    /// PowerSGD matrix view `(a, b)`, `None` when sent dense.
    mat: Option<(usize, usize)>,
}

/// Scratch buffers reused by every call.
#[derive(Debug, Clone, Default)]
pub(super) struct Scratch {
    order: Vec<u32>,
    acc: Vec<f64>,
}

/// A gradient compressor for any [`Method`] over host `f32` slices in sorted-name order.
/// See the [module docs](super).
#[derive(Debug, Clone)]
pub struct Compressor {
    pub(super) config: CompressorConfig,
    pub(super) params: Params,
    pub(super) plans: Vec<Plan>,
    pub(super) fingerprint: u64,
    pub(super) residuals: Vec<Vec<f32>>,
    /// PowerSGD's warm-start `Q` per parameter (empty when sent dense or another method).
    pub(super) q: Vec<Vec<f32>>,
    pub(super) work: Vec<f32>,
    pub(super) decoded: Vec<f32>,
    pub(super) scratch: Scratch,
    pub(super) step: u64,
}

/// Indices strictly increasing and below `numel`.
fn check_indices(who: &str, indices: &[u32], numel: usize) -> Result<()> {
    let increasing = indices.windows(2).all(|w| w[0] < w[1]);
    if !increasing || indices.last().is_some_and(|&j| j as usize >= numel) {
        return Err(invalid(format!(
            "{who}: indices must be strictly increasing and below {numel}"
        )));
    }
    Ok(())
}

/// The packed values use the configured coding.
fn check_coding(who: &str, coding: super::ValueCoding, values: &PackedValues) -> Result<()> {
    if values.coding() == coding {
        Ok(())
    } else {
        Err(invalid(format!(
            "{who}: expected {} values, got {}",
            coding.label(),
            values.coding().label()
        )))
    }
}

fn ceil_frac(f: f64, n: usize) -> usize {
    ((f * n as f64).ceil() as usize).clamp(1, n)
}

impl Compressor {
    /// A compressor for the parameters `shapes` (`(name, shape)` in any order).
    ///
    /// # Errors
    /// [`CompressorConfig::validate`]'s errors; [`Error::NoParameters`],
    /// [`Error::EmptyParameter`], [`Error::DuplicateParameter`].
    pub fn new(shapes: &[(String, Vec<usize>)], config: CompressorConfig) -> Result<Self> {
        config.validate()?;
        let params = Params::new(shapes)?;
        let mut plans = Vec::with_capacity(params.len());
        let mut q = Vec::with_capacity(params.len());
        for p in params.list() {
            let numel = p.numel();
            let key = mix(config.seed, key_from_name(&p.name));
            let mut plan = Plan {
                numel,
                key,
                width: 0,
                k: 0,
                mat: None,
            };
            let mut qi = Vec::new();
            match config.method {
                Method::CountSketch {
                    rows,
                    ratio,
                    k_fraction,
                } => {
                    plan.width = ((ratio * numel as f64 / rows as f64).ceil() as usize).max(1);
                    plan.k = ceil_frac(k_fraction, numel);
                }
                Method::RandomK { .. } | Method::RandomKPacked { .. } => {}
                Method::TopK { k_fraction } | Method::TopKPacked { k_fraction, .. } => {
                    if u32::try_from(numel).is_err() {
                        return Err(crate::error::config_error(
                            "method",
                            format!("top-k over at most {} elements (u32 indices)", u32::MAX),
                            format!("{numel} elements in `{}`", p.name),
                        ));
                    }
                    plan.k = ceil_frac(k_fraction, numel);
                }
                Method::PowerSgd { rank } => {
                    if p.shape.len() >= 2 {
                        let (a, b) = (p.shape[0], numel / p.shape[0]);
                        if rank * (a + b) < a * b {
                            plan.mat = Some((a, b));
                            qi = vec![0f32; b * rank];
                            kernels::init_q(mix(key, Q_DOMAIN), &mut qi);
                        }
                    }
                }
            }
            plans.push(plan);
            q.push(qi);
        }
        let widest = plans.iter().map(|p| p.numel).max().unwrap_or(0);
        let residuals = if config.error_feedback {
            plans.iter().map(|p| vec![0f32; p.numel]).collect()
        } else {
            vec![Vec::new(); plans.len()]
        };
        Ok(Self {
            fingerprint: Self::fingerprint_of(&config, &params),
            config,
            params,
            plans,
            residuals,
            q,
            work: vec![0f32; widest],
            decoded: vec![0f32; widest],
            scratch: Scratch::default(),
            step: 0,
        })
    }

    fn fingerprint_of(config: &CompressorConfig, params: &Params) -> u64 {
        let mut b = Vec::new();
        b.extend_from_slice(b"grad-sketch/methods/1");
        b.push(config.method.code());
        let words: [u64; 3] = match config.method {
            Method::CountSketch {
                rows,
                ratio,
                k_fraction,
            } => [rows as u64, ratio.to_bits(), k_fraction.to_bits()],
            Method::RandomK { ratio } => [ratio.to_bits(), 0, 0],
            Method::TopK { k_fraction } => [k_fraction.to_bits(), 0, 0],
            Method::PowerSgd { rank } => [rank as u64, 0, 0],
            Method::TopKPacked { k_fraction, values } => {
                [k_fraction.to_bits(), u64::from(values.code()), 0]
            }
            Method::RandomKPacked { ratio, values } => {
                [ratio.to_bits(), u64::from(values.code()), 0]
            }
        };
        for w in words {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.extend_from_slice(&config.seed.to_le_bytes());
        b.push(u8::from(config.error_feedback));
        b.extend_from_slice(&config.dense_warmup_steps.to_le_bytes());
        params.hash_into(&mut b);
        splitmix64(fnv1a(b))
    }

    /// The configuration.
    pub fn config(&self) -> &CompressorConfig {
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

    /// Successful compress calls so far: the `step` of the next message.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The error-feedback residual of `name` (`None` when off or unknown).
    pub fn residual(&self, name: &str) -> Option<&[f32]> {
        let i = self.params.position(name)?;
        let r = &self.residuals[i];
        (!r.is_empty()).then_some(r.as_slice())
    }

    /// PowerSGD's warm-start `Q` of `name` (`b × rank`, row-major; `None` when the
    /// parameter is sent dense, for other methods, or for an unknown name).
    pub fn warm_start(&self, name: &str) -> Option<&[f32]> {
        let i = self.params.position(name)?;
        let q = &self.q[i];
        (!q.is_empty()).then_some(q.as_slice())
    }

    /// Bytes of state: residuals, PowerSGD factors and the reused work buffers.
    pub fn memory_bytes(&self) -> usize {
        4 * (self.residuals.iter().map(Vec::len).sum::<usize>()
            + self.q.iter().map(Vec::len).sum::<usize>()
            + self.work.len()
            + self.decoded.len())
    }

    /// `(key of parameter i at step)`: the randomness of one call.
    fn step_key(plan: &Plan, step: u64) -> u64 {
        mix(mix(plan.key, step), STEP_DOMAIN)
    }

    fn row_keys(plan: &Plan, step: u64, rows: usize) -> [u64; MAX_ROWS] {
        let mut keys = [0u64; MAX_ROWS];
        let k = Self::step_key(plan, step);
        for (r, key) in keys.iter_mut().enumerate().take(rows) {
            *key = mix(k, r as u64);
        }
        keys
    }

    fn encode_part(&mut self, i: usize, v: &[f32], step: u64) -> Part {
        let plan = self.plans[i];
        if step < self.config.dense_warmup_steps {
            return Part::Dense(v.to_vec());
        }
        match self.config.method {
            Method::CountSketch { rows, .. } => {
                let keys = Self::row_keys(&plan, step, rows);
                let mut table = vec![0f32; rows * plan.width];
                kernels::sketch_into(v, &keys[..rows], plan.width, &mut table);
                Part::Values(table)
            }
            Method::RandomK { ratio } => {
                let key = Self::step_key(&plan, step);
                Part::Values(
                    v.iter()
                        .enumerate()
                        .filter(|(j, _)| kernels::keep(key, *j, ratio))
                        .map(|(_, &x)| x)
                        .collect(),
                )
            }
            Method::RandomKPacked { ratio, values } => {
                let key = Self::step_key(&plan, step);
                let kept: Vec<f32> = v
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| kernels::keep(key, *j, ratio))
                    .map(|(_, &x)| x)
                    .collect();
                Part::PackedValues(PackedValues::encode(values, &kept))
            }
            Method::TopKPacked { values: coding, .. } => {
                kernels::top_k(v, plan.k, &mut self.scratch.order);
                let indices = self.scratch.order.clone();
                let kept: Vec<f32> = indices.iter().map(|&j| v[j as usize]).collect();
                Part::PackedSparse {
                    indices,
                    values: PackedValues::encode(coding, &kept),
                }
            }
            Method::TopK { .. } => {
                kernels::top_k(v, plan.k, &mut self.scratch.order);
                let indices = self.scratch.order.clone();
                let values = indices.iter().map(|&j| v[j as usize]).collect();
                Part::Sparse { indices, values }
            }
            Method::PowerSgd { rank } => match plan.mat {
                None => Part::Dense(v.to_vec()),
                Some((a, b)) => {
                    let mut p = vec![0f32; a * rank];
                    kernels::m_times_q(v, a, b, &self.q[i], rank, &mut p);
                    kernels::orthonormalize(&mut p, a, rank);
                    let mut q = vec![0f32; b * rank];
                    kernels::mt_times_p(v, a, b, &p, rank, &mut q, &mut self.scratch.acc);
                    Part::LowRank { p, q }
                }
            },
        }
    }

    /// Compresses host gradients in sorted-name order. With error feedback compresses
    /// `v = g + e` and sets `e ← v − decode(encode(v))` in place; PowerSGD keeps the new
    /// `Q` as the next call's warm start.
    ///
    /// # Errors
    /// [`Error::ParameterCount`], [`Error::ShapeMismatch`], [`Error::NonFiniteGradient`]
    /// (also when `g + e` or a sketch sum overflows). On error nothing changes.
    pub fn compress<G: AsRef<[f32]>>(&mut self, grads: &[G]) -> Result<Message> {
        self.params.check_grads(grads)?;
        let (ef, step) = (self.config.error_feedback, self.step);
        let mut parts = Vec::with_capacity(self.plans.len());
        // Pass 1: encode; only scratch buffers are written.
        for (i, g) in grads.iter().enumerate() {
            let g = g.as_ref();
            let part = if ef {
                let mut work = std::mem::take(&mut self.work);
                let v = &mut work[..g.len()];
                v.iter_mut()
                    .zip(g.iter().zip(&self.residuals[i]))
                    .for_each(|(v, (a, b))| *v = a + b);
                let part = self.encode_part(i, v, step);
                self.work = work;
                part
            } else {
                self.encode_part(i, g, step)
            };
            if !part.all_finite() {
                return Err(Error::NonFiniteGradient {
                    name: self.params.list()[i].name.clone(),
                });
            }
            parts.push(part);
        }
        // Pass 2: commit the warm starts and the residuals.
        for (i, part) in parts.iter().enumerate() {
            if let Part::LowRank { q, .. } = part {
                self.q[i].copy_from_slice(q);
            }
            if ef {
                let n = self.plans[i].numel;
                let mut d = std::mem::take(&mut self.decoded);
                let mut order = std::mem::take(&mut self.scratch.order);
                self.decode_part(i, part, step, &mut d[..n], &mut order);
                for ((r, &a), &d) in self.residuals[i].iter_mut().zip(grads[i].as_ref()).zip(&d) {
                    *r = (a + *r) - d;
                }
                self.decoded = d;
                self.scratch.order = order;
            }
        }
        self.step += 1;
        Ok(Message {
            fingerprint: self.fingerprint,
            method: self.config.method.code(),
            step,
            elements: self.params.total_numel() as u64,
            parts,
        })
    }

    /// Checks part `i` of a message made at `step` against the plan.
    fn check_part(&self, i: usize, part: &Part, step: u64) -> Result<()> {
        let plan = &self.plans[i];
        let who = format!("parameter `{}`", self.params.list()[i].name);
        let len = |what: &str, expected: usize, actual: usize| {
            if expected == actual {
                Ok(())
            } else {
                Err(invalid(format!(
                    "{who} {what}: expected {expected} values, got {actual}"
                )))
            }
        };
        let kind = |expected: &str| {
            Err(invalid(format!(
                "{who}: expected a {expected} part at step {step}"
            )))
        };
        if step < self.config.dense_warmup_steps {
            return match part {
                Part::Dense(v) => len("dense", plan.numel, v.len()),
                _ => kind("dense (warm-up)"),
            };
        }
        match (self.config.method, part) {
            (Method::CountSketch { rows, .. }, Part::Values(v)) => {
                len("sketch", rows * plan.width, v.len())
            }
            (Method::RandomK { ratio }, Part::Values(v)) => {
                let key = Self::step_key(plan, step);
                let kept = (0..plan.numel)
                    .filter(|&j| kernels::keep(key, j, ratio))
                    .count();
                len("random-k", kept, v.len())
            }
            (Method::TopK { .. }, Part::Sparse { indices, values }) => {
                len("top-k indices", plan.k, indices.len())?;
                len("top-k values", plan.k, values.len())?;
                check_indices(&who, indices, plan.numel)
            }
            (Method::TopKPacked { values: coding, .. }, Part::PackedSparse { indices, values }) => {
                len("top-k indices", plan.k, indices.len())?;
                len("top-k values", plan.k, values.len())?;
                check_coding(&who, coding, values)?;
                check_indices(&who, indices, plan.numel)
            }
            (
                Method::RandomKPacked {
                    ratio,
                    values: coding,
                },
                Part::PackedValues(v),
            ) => {
                let key = Self::step_key(plan, step);
                let kept = (0..plan.numel)
                    .filter(|&j| kernels::keep(key, j, ratio))
                    .count();
                len("random-k", kept, v.len())?;
                check_coding(&who, coding, v)
            }
            (Method::PowerSgd { rank }, Part::LowRank { p, q }) => match plan.mat {
                Some((a, b)) => {
                    len("P", a * rank, p.len())?;
                    len("Q", b * rank, q.len())
                }
                None => kind("dense"),
            },
            (Method::PowerSgd { .. }, Part::Dense(v)) if plan.mat.is_none() => {
                len("dense", plan.numel, v.len())
            }
            (m, _) => kind(&m.label()),
        }
    }

    /// Decodes a checked part into `out` (length `numel`).
    fn decode_part(&self, i: usize, part: &Part, step: u64, out: &mut [f32], order: &mut Vec<u32>) {
        let plan = &self.plans[i];
        match (self.config.method, part) {
            (_, Part::Dense(v)) => out.copy_from_slice(v),
            (Method::CountSketch { rows, .. }, Part::Values(t)) => {
                let keys = Self::row_keys(plan, step, rows);
                kernels::estimate_into(t, &keys[..rows], plan.width, out);
                if plan.k < plan.numel {
                    kernels::top_k(out, plan.k, order);
                    let mut next = order.iter().peekable();
                    for (j, o) in out.iter_mut().enumerate() {
                        if next.peek().is_some_and(|&&k| k as usize == j) {
                            next.next();
                        } else {
                            *o = 0.0;
                        }
                    }
                }
            }
            (Method::RandomK { ratio }, Part::Values(v)) => {
                let key = Self::step_key(plan, step);
                let scale = if self.config.error_feedback {
                    1.0
                } else {
                    (1.0 / ratio) as f32
                };
                let mut vals = v.iter();
                for (j, o) in out.iter_mut().enumerate() {
                    *o = if kernels::keep(key, j, ratio) {
                        vals.next().map_or(0.0, |x| x * scale)
                    } else {
                        0.0
                    };
                }
            }
            (_, Part::Sparse { indices, values }) => {
                out.fill(0.0);
                for (&j, &x) in indices.iter().zip(values) {
                    out[j as usize] = x;
                }
            }
            (_, Part::PackedSparse { indices, values }) => {
                out.fill(0.0);
                for (i, &j) in indices.iter().enumerate() {
                    out[j as usize] = values.get(i);
                }
            }
            (Method::RandomKPacked { ratio, .. }, Part::PackedValues(v)) => {
                let key = Self::step_key(plan, step);
                let scale = if self.config.error_feedback {
                    1.0
                } else {
                    (1.0 / ratio) as f32
                };
                let mut i = 0;
                for (j, o) in out.iter_mut().enumerate() {
                    *o = if kernels::keep(key, j, ratio) && i < v.len() {
                        i += 1;
                        v.get(i - 1) * scale
                    } else {
                        0.0
                    };
                }
            }
            (Method::PowerSgd { rank }, Part::LowRank { p, q }) => {
                let (a, b) = plan.mat.expect("checked");
                kernels::p_times_qt(p, q, a, b, rank, out);
            }
            _ => unreachable!("parts are checked before decoding"),
        }
    }

    /// Checks that `m` was made by a compressor with this config and parameters, with the
    /// sizes this step implies.
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
        if m.method != self.config.method.code()
            || m.parts.len() != self.plans.len()
            || m.elements != self.params.total_numel() as u64
        {
            return Err(invalid(format!(
                "method/parts/elements: expected {}/{}/{}, got {}/{}/{}",
                self.config.method.code(),
                self.plans.len(),
                self.params.total_numel(),
                m.method,
                m.parts.len(),
                m.elements
            )));
        }
        for (i, part) in m.parts.iter().enumerate() {
            if !part.all_finite() {
                return Err(invalid(format!("part {i}: a value is not finite")));
            }
            self.check_part(i, part, m.step)?;
        }
        Ok(())
    }

    /// Decompresses into new host vectors in sorted-name order.
    ///
    /// # Errors
    /// As [`Self::check`].
    pub fn decompress(&self, m: &Message) -> Result<Vec<Vec<f32>>> {
        let mut out: Vec<Vec<f32>> = self.plans.iter().map(|p| vec![0f32; p.numel]).collect();
        self.decompress_into(m, &mut out)?;
        Ok(out)
    }

    /// Decompresses into caller-provided buffers; on error `out` is untouched.
    ///
    /// # Errors
    /// As [`Self::check`], plus [`Error::ParameterCount`] / [`Error::ShapeMismatch`].
    pub fn decompress_into<O: AsMut<[f32]>>(&self, m: &Message, out: &mut [O]) -> Result<()> {
        self.check(m)?;
        self.params
            .check_lengths(out.len(), |i| out[i].as_mut().len())?;
        let mut order = Vec::new();
        for (i, (part, o)) in m.parts.iter().zip(out.iter_mut()).enumerate() {
            self.decode_part(i, part, m.step, o.as_mut(), &mut order);
        }
        Ok(())
    }
}
