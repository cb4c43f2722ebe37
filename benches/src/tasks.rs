//! Training tasks: a model, its data order and its evaluation, behind one trait so that every
//! method in [`crate::harness`] trains exactly the same thing.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarMap;
use rand_core::RngCore;

use crate::data::{Digits, Shakespeare};
use crate::models::{CharLm, CharLmConfig, Mlp, PlanHandle};
use vsa_optim_rs::BackwardPlan;

/// A model to train, its data order, and its held-out evaluation.
pub trait Task {
    /// A short name for tables.
    fn name(&self) -> String;
    /// A fresh model with its variables in `varmap` (initial values not yet set).
    ///
    /// # Errors
    /// Candle errors.
    fn model(&self, varmap: &VarMap) -> Result<Box<dyn Module>>;
    /// Builds a fresh model ([`Task::model`]) with deterministic initial weights for `seed`
    /// (`vsa_optim_rs::init::deterministic_init`).
    ///
    /// # Errors
    /// Candle errors.
    fn build(&self, seed: u64) -> Result<(VarMap, Box<dyn Module>)> {
        let varmap = VarMap::new();
        let model = self.model(&varmap)?;
        vsa_optim_rs::init::deterministic_init(&varmap, seed)?;
        Ok((varmap, model))
    }
    /// Micro-batches per optimizer step (1 = no accumulation).
    fn micro_batches(&self) -> usize;
    /// The mean loss of micro-batch `micro` of optimizer step `step`, for data-order `seed`.
    ///
    /// # Errors
    /// Candle errors.
    fn micro_loss(
        &self,
        model: &dyn Module,
        step: usize,
        micro: usize,
        seed: u64,
    ) -> Result<Tensor>;
    /// Held-out `(loss, metric)`; the metric is [`Task::metric_name`].
    ///
    /// # Errors
    /// Candle errors.
    fn eval(&self, model: &dyn Module) -> Result<(f64, f64)>;
    /// What [`Task::eval`]'s metric is ("test accuracy %", "val bits/char").
    fn metric_name(&self) -> &'static str;
    /// True when a larger metric is better.
    fn metric_higher_is_better(&self) -> bool;
    /// Sets the backward plan that the models this task built follow in their next forward
    /// passes (which residual branches to detach). Returns `false` when the model has no
    /// residual blocks to detach (the plan is then ignored).
    ///
    /// # Errors
    /// Candle errors.
    fn set_backward_plan(&self, plan: BackwardPlan) -> Result<bool> {
        let _ = plan;
        Ok(false)
    }
}

/// The digits MLP: minibatches of `batch` rows (epoch-wise shuffled), or the full 1500-row
/// training split per step when `batch` is `None`, split into `micro` micro-batches.
#[derive(Debug)]
pub struct DigitsTask {
    device: Device,
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    batch: Option<usize>,
    micro: usize,
    /// Epoch permutations per data seed, built lazily.
    perms: std::sync::Mutex<std::collections::BTreeMap<(u64, u64), Vec<u32>>>,
}

impl DigitsTask {
    /// Loads the data set.
    ///
    /// # Errors
    /// Data or candle errors.
    pub fn new(batch: Option<usize>, micro: usize, device: &Device) -> Result<Self> {
        let d = Digits::load().map_err(candle_core::Error::wrap)?;
        let n = Digits::TRAIN_ROWS;
        let x = Tensor::from_vec(d.features.clone(), (d.rows(), 64), device)?;
        let y = Tensor::from_vec(d.labels.clone(), d.rows(), device)?;
        Ok(Self {
            device: device.clone(),
            train_x: x.narrow(0, 0, n)?,
            train_y: y.narrow(0, 0, n)?,
            test_x: x.narrow(0, n, d.rows() - n)?,
            test_y: y.narrow(0, n, d.rows() - n)?,
            batch,
            micro: micro.max(1),
            perms: Default::default(),
        })
    }

    fn perm(&self, seed: u64, epoch: u64) -> Vec<u32> {
        let mut cache = self.perms.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry((seed, epoch))
            .or_insert_with(|| {
                let n = Digits::TRAIN_ROWS;
                let mut p: Vec<u32> = (0..n as u32).collect();
                let mut rng = vsa_optim_rs::vsa_core::rng::chacha_stream(seed, epoch);
                for i in (1..n).rev() {
                    let j = (rng.next_u64() % (i as u64 + 1)) as usize;
                    p.swap(i, j);
                }
                p
            })
            .clone()
    }
}

impl Task for DigitsTask {
    fn name(&self) -> String {
        match self.batch {
            Some(b) => format!("digits-mlp batch {b}"),
            None if self.micro > 1 => format!("digits-mlp full batch ({} micro)", self.micro),
            None => "digits-mlp full batch".into(),
        }
    }

    fn model(&self, varmap: &VarMap) -> Result<Box<dyn Module>> {
        Ok(Box::new(Mlp::new(varmap, &self.device)?))
    }

    fn micro_batches(&self) -> usize {
        self.micro
    }

    fn micro_loss(
        &self,
        model: &dyn Module,
        step: usize,
        micro: usize,
        seed: u64,
    ) -> Result<Tensor> {
        let n = Digits::TRAIN_ROWS;
        let (x, y) = match self.batch {
            None => {
                let per = n.div_ceil(self.micro);
                let start = (micro * per).min(n);
                let len = per.min(n - start);
                (
                    self.train_x.narrow(0, start, len)?,
                    self.train_y.narrow(0, start, len)?,
                )
            }
            Some(b) => {
                let mb = b / self.micro;
                let first = (step * b + micro * mb) as u64;
                let idx: Vec<u32> = (first..first + mb as u64)
                    .map(|g| self.perm(seed, g / n as u64)[(g % n as u64) as usize])
                    .collect();
                let idx = Tensor::from_vec(idx, mb, &self.device)?;
                (
                    self.train_x.index_select(&idx, 0)?,
                    self.train_y.index_select(&idx, 0)?,
                )
            }
        };
        candle_nn::loss::cross_entropy(&model.forward(&x)?, &y)
    }

    fn eval(&self, model: &dyn Module) -> Result<(f64, f64)> {
        let logits = model.forward(&self.test_x)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &self.test_y)?.to_scalar::<f32>()?;
        let pred = logits.argmax(1)?;
        let correct = pred
            .eq(&self.test_y)?
            .to_dtype(DType::F32)?
            .sum_all()?
            .to_scalar::<f32>()?;
        let acc = 100.0 * f64::from(correct) / self.test_y.dims1()? as f64;
        Ok((f64::from(loss), acc))
    }

    fn metric_name(&self) -> &'static str {
        "test accuracy %"
    }

    fn metric_higher_is_better(&self) -> bool {
        true
    }
}

/// The character transformer on Shakespeare: `batch` random windows per micro-batch,
/// `micro` micro-batches per optimizer step.
#[derive(Debug)]
pub struct CharLmTask {
    device: Device,
    cfg: CharLmConfig,
    train: Vec<u32>,
    val_x: Tensor,
    val_y: Tensor,
    batch: usize,
    micro: usize,
    plan: PlanHandle,
}

impl CharLmTask {
    /// The model's size.
    pub fn config(&self) -> &CharLmConfig {
        &self.cfg
    }

    /// Windows per micro-batch.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Loads the corpus; evaluates on `eval_windows` fixed windows of the validation split.
    ///
    /// # Errors
    /// Data or candle errors.
    pub fn new(
        cfg: CharLmConfig,
        batch: usize,
        micro: usize,
        eval_windows: usize,
        device: &Device,
    ) -> Result<Self> {
        let s = Shakespeare::load().map_err(candle_core::Error::wrap)?;
        let split = s.split();
        let val = &s.ids[split..];
        let t = cfg.context;
        let stride = (val.len() - t - 1) / eval_windows.max(1);
        let mut xs = Vec::with_capacity(eval_windows * t);
        let mut ys = Vec::with_capacity(eval_windows * t);
        for w in 0..eval_windows {
            let o = w * stride;
            xs.extend_from_slice(&val[o..o + t]);
            ys.extend_from_slice(&val[o + 1..o + t + 1]);
        }
        Ok(Self {
            device: device.clone(),
            cfg,
            train: s.ids[..split].to_vec(),
            val_x: Tensor::from_vec(xs, (eval_windows, t), device)?,
            val_y: Tensor::from_vec(ys, (eval_windows, t), device)?,
            batch,
            micro: micro.max(1),
            plan: PlanHandle::default(),
        })
    }

    fn lm_loss(&self, model: &dyn Module, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        let logits = model.forward(x)?;
        let (b, t, v) = logits.dims3()?;
        candle_nn::loss::cross_entropy(&logits.reshape((b * t, v))?, &y.reshape(b * t)?)
    }
}

impl Task for CharLmTask {
    fn name(&self) -> String {
        if self.micro > 1 {
            format!("char-lm batch {}x{} micro", self.batch, self.micro)
        } else {
            format!("char-lm batch {}", self.batch)
        }
    }

    fn model(&self, varmap: &VarMap) -> Result<Box<dyn Module>> {
        let m = CharLm::with_plan(self.cfg, varmap, &self.device, self.plan.clone())?;
        Ok(Box::new(m))
    }

    fn micro_batches(&self) -> usize {
        self.micro
    }

    fn micro_loss(
        &self,
        model: &dyn Module,
        step: usize,
        micro: usize,
        seed: u64,
    ) -> Result<Tensor> {
        let t = self.cfg.context;
        let span = (self.train.len() - t - 1) as u64;
        let mut rng =
            vsa_optim_rs::vsa_core::rng::chacha_stream(seed, (step * self.micro + micro) as u64);
        let mut xs = Vec::with_capacity(self.batch * t);
        let mut ys = Vec::with_capacity(self.batch * t);
        for _ in 0..self.batch {
            let o = (rng.next_u64() % span) as usize;
            xs.extend_from_slice(&self.train[o..o + t]);
            ys.extend_from_slice(&self.train[o + 1..o + t + 1]);
        }
        let x = Tensor::from_vec(xs, (self.batch, t), &self.device)?;
        let y = Tensor::from_vec(ys, (self.batch, t), &self.device)?;
        self.lm_loss(model, &x, &y)
    }

    fn eval(&self, model: &dyn Module) -> Result<(f64, f64)> {
        let loss = self
            .lm_loss(model, &self.val_x, &self.val_y)?
            .to_scalar::<f32>()?;
        let loss = f64::from(loss);
        Ok((loss, loss / std::f64::consts::LN_2))
    }

    fn metric_name(&self) -> &'static str {
        "val bits/char"
    }

    fn set_backward_plan(&self, plan: BackwardPlan) -> Result<bool> {
        *self.plan.lock().map_err(|_| {
            candle_core::Error::Msg("the backward plan's mutex is poisoned".into())
        })? = plan;
        Ok(true)
    }

    fn metric_higher_is_better(&self) -> bool {
        false
    }
}
