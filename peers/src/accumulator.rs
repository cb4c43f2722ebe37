//! The ternary accumulators side by side: bytes held, error against the exact f32 mean, and
//! whether two runs are bit-identical.

use std::collections::HashMap;
use std::fmt::Write;
use std::time::Instant;

use crate::inputs::gaussian;
use crate::{ALLOC, Result, fmt_bytes, median};

/// Elements of the one parameter.
const N: usize = 1 << 20;
/// Micro-batches accumulated (both crates' default `accumulation_steps`).
const MICRO: usize = 8;
/// Seed of the gradients.
const SEED: u64 = 56;

/// One accumulation window: build, `MICRO` accumulates, read the mean.
trait Window {
    /// Adds one micro-batch given on the host; only the crate's call is timed.
    fn accumulate(&mut self, g: &[f32]) -> Result<f64>;
    /// The accumulated mean on the host.
    fn mean(&self) -> Result<Vec<f32>>;
}

struct SeedAcc(seed::TernaryGradientAccumulator);

impl Window for SeedAcc {
    fn accumulate(&mut self, g: &[f32]) -> Result<f64> {
        let t = seed_candle::Tensor::from_vec(g.to_vec(), N, &seed_candle::Device::Cpu)?;
        let map: HashMap<String, seed_candle::Tensor> = [("g".to_string(), t)].into();
        let t0 = Instant::now();
        self.0.accumulate(&map)?;
        Ok(t0.elapsed().as_secs_f64() * 1e3)
    }
    fn mean(&self) -> Result<Vec<f32>> {
        let m = self.0.get_accumulated()?;
        let t = m.get("g").ok_or("0.1.1 accumulated no `g`")?;
        Ok(t.flatten_all()?.to_vec1::<f32>()?)
    }
}

struct OursAcc(ours::TernaryGradientAccumulator);

impl Window for OursAcc {
    fn accumulate(&mut self, g: &[f32]) -> Result<f64> {
        let t = ours_candle::Tensor::from_vec(g.to_vec(), N, &ours_candle::Device::Cpu)?;
        let map: HashMap<String, ours_candle::Tensor> = [("g".to_string(), t)].into();
        let t0 = Instant::now();
        self.0.accumulate(&map)?;
        Ok(t0.elapsed().as_secs_f64() * 1e3)
    }
    fn mean(&self) -> Result<Vec<f32>> {
        let m = self.0.get_accumulated()?;
        let t = m.get("g").ok_or("ours accumulated no `g`")?;
        Ok(t.flatten_all()?.to_vec1::<f32>()?)
    }
}

struct Outcome {
    held: usize,
    rel_error: f64,
    /// Share of non-zero elements in the first window's mean, %.
    nonzero: f64,
    ms: Vec<f64>,
    identical: bool,
}

/// `reps` windows over the same micro-batches, each from a fresh accumulator.
fn run(
    reps: usize,
    micro: &[Vec<f32>],
    exact: &[f32],
    make: &dyn Fn() -> Result<Box<dyn Window>>,
) -> Result<Outcome> {
    let (mut held, mut ms, mut first): (usize, Vec<f64>, Option<Vec<f32>>) = (0, Vec::new(), None);
    let mut identical = true;
    let (mut rel_error, mut nonzero) = (0.0, 0.0);
    for _ in 0..reps {
        let before = ALLOC.current_usage();
        let mut acc = make()?;
        for g in micro {
            ms.push(acc.accumulate(g)?);
        }
        held = held.max(ALLOC.current_usage().saturating_sub(before));
        let mean = acc.mean()?;
        drop(acc);
        match &first {
            None => {
                rel_error = rel_l2(&mean, exact);
                nonzero =
                    100.0 * mean.iter().filter(|x| **x != 0.0).count() as f64 / mean.len() as f64;
                first = Some(mean);
            }
            Some(f) => {
                identical &= f.iter().zip(&mean).all(|(a, b)| a.to_bits() == b.to_bits());
            }
        }
    }
    Ok(Outcome {
        held,
        rel_error,
        nonzero,
        ms,
        identical,
    })
}

/// `‖a − b‖ / ‖b‖`.
fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        num += (f64::from(*x) - f64::from(*y)).powi(2);
        den += f64::from(*y).powi(2);
    }
    (num / den).sqrt()
}

/// The "Accumulator" part of the section.
pub fn section(reps: usize) -> Result<String> {
    let reps = reps.max(2);
    // Micro-batch gradients: a shared mean plus per-micro-batch noise of the same size.
    let mean_part = gaussian(SEED, 0, N, 0.01);
    let micro: Vec<Vec<f32>> = (0..MICRO as u64)
        .map(|k| {
            let noise = gaussian(SEED, 1 + k, N, 0.01);
            mean_part.iter().zip(&noise).map(|(a, b)| a + b).collect()
        })
        .collect();
    let exact: Vec<f32> = (0..N)
        .map(|i| (micro.iter().map(|g| f64::from(g[i])).sum::<f64>() / MICRO as f64) as f32)
        .collect();
    let shapes = vec![("g".to_string(), vec![N])];
    let seed_make = |stochastic: bool| {
        let shapes = shapes.clone();
        move || -> Result<Box<dyn Window>> {
            let config = seed::TernaryConfig::default()
                .with_accumulation_steps(MICRO)
                .with_stochastic_rounding(stochastic);
            Ok(Box::new(SeedAcc(seed::TernaryGradientAccumulator::new(
                &shapes,
                config,
                &seed_candle::Device::Cpu,
            )?)))
        }
    };
    let ours_make = |stochastic: bool, trits: u8| {
        let shapes = shapes.clone();
        move || -> Result<Box<dyn Window>> {
            let config = ours::TernaryConfig::builder()
                .accumulation_steps(MICRO)
                .use_stochastic_rounding(stochastic)
                .trits_per_element(trits)
                .build();
            Ok(Box::new(OursAcc(ours::TernaryGradientAccumulator::new(
                &shapes,
                config,
                &ours_candle::Device::Cpu,
            )?)))
        }
    };
    let threshold = seed::TernaryConfig::default().ternary_threshold;
    type Make = Box<dyn Fn() -> Result<Box<dyn Window>>>;
    let cases: Vec<(&str, String, Make)> = vec![
        (
            "vsa-optim-rs 0.1.1",
            "default (stochastic rounding)".into(),
            Box::new(seed_make(true)),
        ),
        (
            "vsa-optim-rs 0.1.1",
            format!("deterministic (threshold {threshold})"),
            Box::new(seed_make(false)),
        ),
        (
            "ours",
            "default (stochastic, seeded, 1 trit per element)".into(),
            Box::new(ours_make(true, 1)),
        ),
        (
            "ours",
            "deterministic (absmean), 1 trit".into(),
            Box::new(ours_make(false, 1)),
        ),
        (
            "ours",
            "stochastic, 5 trits per element".into(),
            Box::new(ours_make(true, 5)),
        ),
    ];
    let mut s = String::new();
    writeln!(
        s,
        "### Accumulator: bytes held, error and determinism\n\n\
         {MICRO} micro-batch gradients of {N} elements, each a shared N(0, 0.01²) mean plus its \
         own N(0, 0.01²) noise (seeded), accumulated through each crate's candle API and read \
         back with `get_accumulated`. *Bytes held*: live heap bytes after the {MICRO} \
         accumulates minus before the accumulator was built (global allocator; the loop drops \
         its inputs). *Error*: `‖mean − exact‖ / ‖exact‖` against the f32 mean of the same \
         micro-batches (summed in f64), first window; *non-zero*: the share of elements of that \
         mean that are not 0. *ms / accumulate*: median over \
         {reps} windows × {MICRO} calls; building the tensors is not timed. *Bit-identical*: \
         the {reps} windows, each from a fresh accumulator on the same inputs, give the same \
         bits (0.1.1's stochastic rounding draws from the unseeded `rand::thread_rng()`; its \
         deterministic mode thresholds at a fixed {threshold}).\n\n\
         | crate | config | bytes held | bits per element | error vs exact | non-zero % | ms / accumulate | bit-identical over {reps} runs |\n\
         |---|---|---|---|---|---|---|---|\n\
         | exact f32 sum | reference | {} | 32.0 | — | — | — | — |",
        fmt_bytes(4 * N)
    )?;
    for (name, config, make) in &cases {
        eprintln!("peers: accumulator, {name} {config}");
        let o = run(reps, &micro, &exact, make.as_ref())?;
        writeln!(
            s,
            "| {name} | {config} | {} | {:.2} | {:.4} | {:.1} | {:.2} | {} |",
            fmt_bytes(o.held),
            8.0 * o.held as f64 / N as f64,
            o.rel_error,
            o.nonzero,
            median(&o.ms),
            if o.identical { "yes" } else { "no" }
        )?;
    }
    Ok(s)
}
