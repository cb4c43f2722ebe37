//! One interface over the two trainers (and plain training), so that the loops that drive
//! them are literally the same code. Gradients cross as `Vec<f32>` (one per parameter, in
//! sorted-name order); each crate gets them as its own candle's tensors, built outside the
//! timed calls.

use std::collections::HashMap;

use crate::Result;

/// The phase of a step, as either crate reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before the predictor is ready: true gradients.
    Warmup,
    /// True gradients between predict blocks.
    Full,
    /// A predicted gradient; no backward pass.
    Predict,
    /// A true gradient that closes predicted steps.
    Correct,
}

/// A phase trainer as the loops use it.
pub trait PhaseApi {
    /// The crate's own gradient map.
    type Grads;
    /// Host vectors (sorted-name order) to the crate's gradient map. Not timed.
    fn grads(&self, host: &[Vec<f32>]) -> Result<Self::Grads>;
    /// The crate's gradient map to host vectors (sorted-name order). Not timed.
    fn host(&self, grads: &Self::Grads) -> Result<Vec<Vec<f32>>>;
    /// Begins a step.
    fn begin(&mut self) -> Result<Phase>;
    /// Records the true gradients of a backward step.
    fn record(&mut self, grads: &Self::Grads) -> Result<()>;
    /// The predicted gradients of a Predict step.
    fn predict(&mut self) -> Result<Self::Grads>;
    /// Ends the step; `loss` is `None` on a predicted step of a trainer that needs none.
    fn end(&mut self, loss: Option<f32>) -> Result<()>;
    /// Whether predicted steps must report a loss (0.1.1's `end_step` takes one on every
    /// step; this crate's `end_step_without_loss` skips the forward pass).
    fn wants_predicted_loss(&self) -> bool;
}

/// Sorted `(name, shape)` pairs.
pub type Shapes = Vec<(String, Vec<usize>)>;

/// `grads` / `host` of [`PhaseApi`] for a trainer whose gradient map is
/// `HashMap<String, $candle::Tensor>` (the two crates use different candle versions, so the
/// code is the same but the types are not).
macro_rules! tensor_map_conversions {
    ($candle:ident, $who:literal) => {
        fn grads(&self, host: &[Vec<f32>]) -> Result<Self::Grads> {
            let mut map = HashMap::new();
            for ((name, shape), v) in self.shapes.iter().zip(host) {
                let t =
                    $candle::Tensor::from_vec(v.clone(), shape.as_slice(), &$candle::Device::Cpu)?;
                map.insert(name.clone(), t);
            }
            Ok(map)
        }
        fn host(&self, grads: &Self::Grads) -> Result<Vec<Vec<f32>>> {
            self.shapes
                .iter()
                .map(|(name, _)| {
                    let t = grads
                        .get(name)
                        .ok_or_else(|| format!(concat!($who, " returned no {}"), name))?;
                    Ok(t.flatten_all()?.to_vec1::<f32>()?)
                })
                .collect()
        }
    };
}

/// No trainer: every step is a backward step.
pub struct Plain;

impl PhaseApi for Plain {
    type Grads = Vec<Vec<f32>>;
    fn grads(&self, host: &[Vec<f32>]) -> Result<Self::Grads> {
        Ok(host.to_vec())
    }
    fn host(&self, grads: &Self::Grads) -> Result<Vec<Vec<f32>>> {
        Ok(grads.clone())
    }
    fn begin(&mut self) -> Result<Phase> {
        Ok(Phase::Full)
    }
    fn record(&mut self, _grads: &Self::Grads) -> Result<()> {
        Ok(())
    }
    fn predict(&mut self) -> Result<Self::Grads> {
        Err("plain training never predicts".into())
    }
    fn end(&mut self, _loss: Option<f32>) -> Result<()> {
        Ok(())
    }
    fn wants_predicted_loss(&self) -> bool {
        false
    }
}

/// vsa-optim-rs 0.1.1's `DeterministicPhaseTrainer` (candle 0.9, CPU).
pub struct Seed {
    shapes: Shapes,
    trainer: seed::DeterministicPhaseTrainer,
}

impl Seed {
    /// A trainer for `shapes` (sorted by name) with `config`.
    pub fn new(shapes: &Shapes, config: seed::DeterministicPhaseConfig) -> Result<Self> {
        let trainer =
            seed::DeterministicPhaseTrainer::new(shapes, config, &seed_candle::Device::Cpu)?;
        Ok(Self {
            shapes: shapes.clone(),
            trainer,
        })
    }
}

impl PhaseApi for Seed {
    type Grads = HashMap<String, seed_candle::Tensor>;
    tensor_map_conversions!(seed_candle, "0.1.1");
    fn begin(&mut self) -> Result<Phase> {
        use seed::DeterministicPhase as P;
        Ok(match self.trainer.begin_step()?.phase {
            P::Warmup => Phase::Warmup,
            P::Full => Phase::Full,
            P::Predict => Phase::Predict,
            P::Correct => Phase::Correct,
        })
    }
    fn record(&mut self, grads: &Self::Grads) -> Result<()> {
        Ok(self.trainer.record_full_gradients(grads)?)
    }
    fn predict(&mut self) -> Result<Self::Grads> {
        Ok(self.trainer.get_predicted_gradients()?)
    }
    fn end(&mut self, loss: Option<f32>) -> Result<()> {
        let loss = loss.ok_or("0.1.1's end_step needs a loss on every step")?;
        Ok(self.trainer.end_step(loss)?)
    }
    fn wants_predicted_loss(&self) -> bool {
        true
    }
}

/// This workspace's `DeterministicPhaseTrainer` (candle 0.11, CPU).
pub struct Ours {
    shapes: Shapes,
    trainer: ours::DeterministicPhaseTrainer,
    /// Whether the step in progress is a Predict step.
    predicting: bool,
}

impl Ours {
    /// A trainer for `shapes` (sorted by name) with `config`.
    pub fn new(shapes: &Shapes, config: ours::DeterministicPhaseConfig) -> Result<Self> {
        let trainer =
            ours::DeterministicPhaseTrainer::new(shapes, config, &ours_candle::Device::Cpu)?;
        Ok(Self {
            shapes: shapes.clone(),
            trainer,
            predicting: false,
        })
    }
}

impl PhaseApi for Ours {
    type Grads = HashMap<String, ours_candle::Tensor>;
    tensor_map_conversions!(ours_candle, "ours");
    fn begin(&mut self) -> Result<Phase> {
        use ours::DeterministicPhase as P;
        let phase = match self.trainer.begin_step()?.phase {
            P::Warmup => Phase::Warmup,
            P::Full => Phase::Full,
            P::Predict => Phase::Predict,
            P::Correct => Phase::Correct,
        };
        self.predicting = phase == Phase::Predict;
        Ok(phase)
    }
    fn record(&mut self, grads: &Self::Grads) -> Result<()> {
        Ok(self.trainer.record_full_gradients(grads)?)
    }
    fn predict(&mut self) -> Result<Self::Grads> {
        Ok(self.trainer.get_predicted_gradients()?)
    }
    fn end(&mut self, loss: Option<f32>) -> Result<()> {
        match loss {
            Some(l) if !self.predicting => self.trainer.end_step(l)?,
            _ => self.trainer.end_step_without_loss()?,
        }
        Ok(())
    }
    fn wants_predicted_loss(&self) -> bool {
        false
    }
}
