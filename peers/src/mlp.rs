//! The digits MLP (64-128-10, ReLU, softmax cross-entropy), forward and backward written out
//! on `f32` slices, and Adam: the same arithmetic under every trainer, so that the only
//! difference between two runs is the trainer. Parameter names and shapes follow the bench
//! crate's candle model (`l1`, `l2`, weights `[out, in]`), and the initialisation follows
//! `vsa_optim_rs::init::deterministic_init` (weights uniform in ±1/√fan_in from the stream
//! keyed by the parameter's name, biases zero).

use ours::vsa_core::rng::{chacha_stream, key_from_name};
use rand_core::RngCore;

use crate::Result;
use crate::api::{Phase, PhaseApi, Shapes};
use crate::inputs::Digits;

const IN: usize = Digits::FEATURES;
const HIDDEN: usize = 128;
const OUT: usize = 10;

/// The parameters in sorted-name order: `l1.bias`, `l1.weight`, `l2.bias`, `l2.weight`.
pub fn shapes() -> Shapes {
    vec![
        ("l1.bias".into(), vec![HIDDEN]),
        ("l1.weight".into(), vec![HIDDEN, IN]),
        ("l2.bias".into(), vec![OUT]),
        ("l2.weight".into(), vec![OUT, HIDDEN]),
    ]
}

/// Seeded initial parameters (sorted-name order).
pub fn init(seed: u64) -> Vec<Vec<f32>> {
    shapes()
        .iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            if shape.len() < 2 {
                return vec![0.0; n];
            }
            let bound = 1.0 / (shape[1] as f64).sqrt();
            let mut rng = chacha_stream(seed, key_from_name(name));
            (0..n)
                .map(|_| {
                    let u = f64::from(rng.next_u32() >> 8) / f64::from(1u32 << 24);
                    ((2.0 * u - 1.0) * bound) as f32
                })
                .collect()
        })
        .collect()
}

/// Mean cross-entropy, accuracy and (when `grads`) the gradient over rows `rows` of `data`.
fn pass(
    p: &[Vec<f32>],
    data: &Digits,
    rows: std::ops::Range<usize>,
    mut grads: Option<&mut Vec<Vec<f32>>>,
) -> (f32, f64) {
    let (b1, w1, b2, w2) = (&p[0], &p[1], &p[2], &p[3]);
    if let Some(g) = grads.as_deref_mut() {
        *g = p.iter().map(|v| vec![0.0; v.len()]).collect();
    }
    let count = rows.len();
    let inv = 1.0 / count as f32;
    let (mut loss, mut correct) = (0.0f64, 0usize);
    let mut h = [0f32; HIDDEN];
    let mut dh = [0f32; HIDDEN];
    for r in rows {
        let x = &data.features[r * IN..(r + 1) * IN];
        for j in 0..HIDDEN {
            let w = &w1[j * IN..(j + 1) * IN];
            let s: f32 = b1[j] + w.iter().zip(x).map(|(a, b)| a * b).sum::<f32>();
            h[j] = s.max(0.0);
        }
        let mut logits = [0f32; OUT];
        for (o, l) in logits.iter_mut().enumerate() {
            let w = &w2[o * HIDDEN..(o + 1) * HIDDEN];
            *l = b2[o] + w.iter().zip(&h).map(|(a, b)| a * b).sum::<f32>();
        }
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let z: f32 = logits.iter().map(|l| (l - max).exp()).sum();
        let y = usize::from(data.labels[r]);
        loss += f64::from(z.ln() + max - logits[y]);
        let arg = (0..OUT).fold(0, |a, o| if logits[o] > logits[a] { o } else { a });
        correct += usize::from(arg == y);
        let Some(g) = grads.as_deref_mut() else {
            continue;
        };
        dh.fill(0.0);
        for o in 0..OUT {
            let d = ((logits[o] - max).exp() / z - f32::from(u8::from(o == y))) * inv;
            g[2][o] += d;
            let (gw, w) = (
                &mut g[3][o * HIDDEN..(o + 1) * HIDDEN],
                &w2[o * HIDDEN..(o + 1) * HIDDEN],
            );
            for j in 0..HIDDEN {
                gw[j] += d * h[j];
                dh[j] += d * w[j];
            }
        }
        for j in 0..HIDDEN {
            if h[j] > 0.0 {
                g[0][j] += dh[j];
                for (gw, xi) in g[1][j * IN..(j + 1) * IN].iter_mut().zip(x) {
                    *gw += dh[j] * xi;
                }
            }
        }
    }
    (
        (loss / count as f64) as f32,
        100.0 * correct as f64 / count as f64,
    )
}

/// Adam (β = 0.9, 0.999, ε = 1e-8, no weight decay).
struct Adam {
    lr: f32,
    t: i32,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl Adam {
    fn new(p: &[Vec<f32>], lr: f32) -> Self {
        let zeros: Vec<Vec<f32>> = p.iter().map(|v| vec![0.0; v.len()]).collect();
        Self {
            lr,
            t: 0,
            m: zeros.clone(),
            v: zeros,
        }
    }

    fn step(&mut self, p: &mut [Vec<f32>], g: &[Vec<f32>]) -> Result<()> {
        if g.len() != p.len() || g.iter().zip(p.iter()).any(|(a, b)| a.len() != b.len()) {
            return Err("gradient shapes differ from the parameters'".into());
        }
        self.t += 1;
        let (b1, b2) = (0.9f32, 0.999f32);
        let c1 = 1.0 - b1.powi(self.t);
        let c2 = 1.0 - b2.powi(self.t);
        for (((p, g), m), v) in p.iter_mut().zip(g).zip(&mut self.m).zip(&mut self.v) {
            for i in 0..p.len() {
                m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                p[i] -= self.lr * (m[i] / c1) / ((v[i] / c2).sqrt() + 1e-8);
            }
        }
        Ok(())
    }
}

/// One training run's outcome.
pub struct DigitsRun {
    /// Steps that ran a backward pass.
    pub backward: usize,
    /// Steps that applied a predicted gradient.
    pub predicted: usize,
    /// Final test accuracy, %.
    pub test_acc: f64,
    /// Final test loss.
    pub test_loss: f32,
    /// Wall-clock seconds of the loop.
    pub secs: f64,
}

/// `steps` full-batch Adam steps on the 1500 training rows from the seeded initialisation,
/// with `trainer` deciding which steps run backward; evaluated on the 297 test rows.
pub fn train<T: PhaseApi>(
    trainer: &mut T,
    data: &Digits,
    steps: usize,
    lr: f32,
    seed: u64,
) -> Result<DigitsRun> {
    let mut p = init(seed);
    let mut adam = Adam::new(&p, lr);
    let (mut backward, mut predicted) = (0, 0);
    let mut g = Vec::new();
    let t0 = std::time::Instant::now();
    for _ in 0..steps {
        if trainer.begin()? == Phase::Predict {
            let host = {
                let pred = trainer.predict()?;
                trainer.host(&pred)?
            };
            let loss = if trainer.wants_predicted_loss() {
                Some(pass(&p, data, 0..Digits::TRAIN_ROWS, None).0)
            } else {
                None
            };
            adam.step(&mut p, &host)?;
            trainer.end(loss)?;
            predicted += 1;
        } else {
            let (loss, _) = pass(&p, data, 0..Digits::TRAIN_ROWS, Some(&mut g));
            let grads = trainer.grads(&g)?;
            trainer.record(&grads)?;
            adam.step(&mut p, &g)?;
            trainer.end(Some(loss))?;
            backward += 1;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let (test_loss, test_acc) = pass(&p, data, Digits::TRAIN_ROWS..data.rows(), None);
    Ok(DigitsRun {
        backward,
        predicted,
        test_acc,
        test_loss,
        secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written backward pass against central differences of the loss.
    #[test]
    fn gradient_matches_finite_differences() {
        let data = Digits::load().unwrap();
        let mut p = init(3);
        let mut g = Vec::new();
        pass(&p, &data, 0..40, Some(&mut g));
        for (k, i) in [(0, 5), (1, 700), (2, 3), (3, 900)] {
            let h = 1e-2f32;
            p[k][i] += h;
            let up = pass(&p, &data, 0..40, None).0;
            p[k][i] -= 2.0 * h;
            let down = pass(&p, &data, 0..40, None).0;
            p[k][i] += h;
            let fd = (up - down) / (2.0 * h);
            assert!(
                (fd - g[k][i]).abs() < 2e-3,
                "param {k}[{i}]: fd {fd}, grad {}",
                g[k][i]
            );
        }
    }
}
