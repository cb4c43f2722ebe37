//! Peak resident memory the trainer adds above the model's own gradient, in a process of its
//! own (run one model per process so that peaks do not mix):
//!
//! ```text
//! cargo run --release -p vsa-optim-rs --example trainer_memory -- last-gradient
//! cargo run --release -p vsa-optim-rs --example trainer_memory -- linear-wls
//! ```
//!
//! One 16M-element f32 parameter (64 MiB), 60 steps of the default schedule (F5 P20 C5 after
//! 10 warmup steps). Every backward step makes a fresh gradient (as `backward` does) and
//! drops it after recording; every predicted step takes the predicted gradient as an
//! optimizer would. The baseline is the resident set after the first gradient exists, so
//! the result counts the caller's one live gradient out: it is what the trainer holds and
//! allocates, in copies of the gradient. Linux only (reads `/proc/self/status`).

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use vsa_optim_rs::{DeterministicPhaseConfig, DeterministicPhaseTrainer, PredictorModel};

const N: usize = 1 << 24;

fn status_kib(key: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Resets the peak (VmHWM) to the current resident set (Linux ≥ 4.0).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let model = match std::env::args().nth(1).as_deref() {
        Some("last-gradient") | None => PredictorModel::LastGradient,
        Some("linear-wls") => PredictorModel::LinearWls,
        Some("decayed-mean") => PredictorModel::DecayedMean,
        Some(other) => return Err(format!("unknown model {other}").into()),
    };
    let device = Device::Cpu;
    let config = DeterministicPhaseConfig {
        predictor_model: model,
        ..DeterministicPhaseConfig::default()
    };
    let shapes = vec![("w".to_string(), vec![N])];
    let mut trainer = DeterministicPhaseTrainer::new(&shapes, config, &device)?;
    // A fixed ramp; each step's gradient is one new tensor made from it (as backward makes
    // one new gradient), so the generator adds no temporaries of its own.
    let ramp = Tensor::arange(0u32, N as u32, &device)?
        .to_dtype(candle_core::DType::F32)?
        .affine(1.0 / N as f64, -0.5)?;
    let make = |step: u64| ramp.affine(1.0, step as f64 * 1e-3);
    // The ramp and the caller's own live gradient exist before the baseline.
    let mut live = Some(make(0)?);
    let base = status_kib("VmRSS:");
    reset_peak();
    let mut applied = 0.0f64;
    for _ in 0..60 {
        let info = trainer.begin_step()?;
        if info.needs_backward {
            drop(live.take());
            let g = make(info.step)?;
            trainer.record_full_gradients(&HashMap::from([("w".to_string(), g.clone())]))?;
            live = Some(g);
            trainer.end_step(1.0)?;
        } else {
            let p = trainer.get_predicted_gradients()?;
            applied += f64::from(p["w"].get(7)?.to_scalar::<f32>()?);
            trainer.end_step_without_loss()?;
        }
    }
    let peak = status_kib("VmHWM:");
    let grad_kib = (N * 4 / 1024) as f64;
    let extra = peak.saturating_sub(base) as f64 / grad_kib;
    println!(
        "model {model:?}: peak resident above the live gradient = {extra:.2} gradient copies \
         ({} KiB peak, {} KiB baseline, gradient {} KiB); held at the end: {:.2} copies \
         (memory_bytes); {}; checksum {applied:.3}",
        peak,
        base,
        grad_kib,
        trainer.memory_bytes() as f64 / (N * 4) as f64,
        trainer.get_stats()
    );
    Ok(())
}
