//! The two real models: a digits MLP and a small character-level transformer.

use std::sync::{Arc, Mutex};

use candle_core::{D, DType, Device, Module, Result, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder, VarMap};
use vsa_optim_rs::BackwardPlan;

/// The digits MLP, 64-128-10 with ReLU.
#[derive(Debug)]
pub struct Mlp {
    l1: Linear,
    l2: Linear,
}

impl Mlp {
    /// Builds the model's variables in `varmap` (initialise them deterministically afterwards).
    ///
    /// # Errors
    /// Candle errors.
    pub fn new(varmap: &VarMap, device: &Device) -> Result<Self> {
        let vb = VarBuilder::from_varmap(varmap, DType::F32, device);
        Ok(Self {
            l1: candle_nn::linear(64, 128, vb.pp("l1"))?,
            l2: candle_nn::linear(128, 10, vb.pp("l2"))?,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.l2.forward(&self.l1.forward(x)?.relu()?)
    }
}

/// Size of the character transformer.
#[derive(Debug, Clone, Copy)]
pub struct CharLmConfig {
    /// Vocabulary size.
    pub vocab: usize,
    /// Model width.
    pub d_model: usize,
    /// Attention heads.
    pub heads: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Context length.
    pub context: usize,
}

impl Default for CharLmConfig {
    fn default() -> Self {
        Self {
            vocab: 67,
            d_model: 128,
            heads: 4,
            layers: 2,
            context: 64,
        }
    }
}

/// Layer norm from differentiable primitives (candle-nn's fused op has no backward).
#[derive(Debug)]
struct Norm {
    gain: Tensor,
    bias: Tensor,
}

impl Norm {
    fn new(d: usize, vb: VarBuilder<'_>) -> Result<Self> {
        Ok(Self {
            gain: vb.get_with_hints(d, "weight", candle_nn::Init::Const(1.0))?,
            bias: vb.get_with_hints(d, "bias", candle_nn::Init::Const(0.0))?,
        })
    }
}

impl Module for Norm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let xn = xc.broadcast_div(&(var + 1e-5)?.sqrt()?)?;
        xn.broadcast_mul(&self.gain)?.broadcast_add(&self.bias)
    }
}

#[derive(Debug)]
struct Block {
    n1: Norm,
    qkv: Linear,
    proj: Linear,
    n2: Norm,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
}

impl Block {
    fn new(c: &CharLmConfig, vb: VarBuilder<'_>) -> Result<Self> {
        let d = c.d_model;
        Ok(Self {
            n1: Norm::new(d, vb.pp("n1"))?,
            qkv: candle_nn::linear(d, 3 * d, vb.pp("qkv"))?,
            proj: candle_nn::linear(d, d, vb.pp("proj"))?,
            n2: Norm::new(d, vb.pp("n2"))?,
            fc1: candle_nn::linear(d, 4 * d, vb.pp("fc1"))?,
            fc2: candle_nn::linear(4 * d, d, vb.pp("fc2"))?,
            heads: c.heads,
        })
    }

    /// `plan` says whether this block (group `name`) computes its gradient this step; when
    /// it predicts, both residual branches are detached, so backward skips them and reaches
    /// the blocks below through the identity path.
    fn forward(
        &self,
        x: &Tensor,
        mask: &Tensor,
        plan: &BackwardPlan,
        name: &str,
    ) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let hd = d / self.heads;
        let qkv = self.qkv.forward(&self.n1.forward(x)?)?;
        let qkv = qkv
            .reshape((b, t, 3, self.heads, hd))?
            .permute((2, 0, 3, 1, 4))?;
        let q = qkv.get(0)?.contiguous()?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let att = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
        let att = att.broadcast_add(mask)?;
        let att = candle_nn::ops::softmax(&att, D::Minus1)?;
        let y = att.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?;
        let x = (x + plan.branch(name, &self.proj.forward(&y)?)?)?;
        let h = self.fc1.forward(&self.n2.forward(&x)?)?.gelu()?;
        x + plan.branch(name, &self.fc2.forward(&h)?)?
    }
}

/// A small GPT-style character language model.
#[derive(Debug)]
pub struct CharLm {
    cfg: CharLmConfig,
    tok: Embedding,
    pos: Tensor,
    blocks: Vec<Block>,
    norm: Norm,
    head: Linear,
    mask: Tensor,
    /// The backward plan of the step being computed, shared with the task that built the
    /// model ([`BackwardPlan::all`] unless a per-block method sets it).
    plan: Arc<Mutex<BackwardPlan>>,
}

/// A shared, settable [`BackwardPlan`]: the task sets it before a step's forward passes, and
/// the models it built read it.
pub type PlanHandle = Arc<Mutex<BackwardPlan>>;

/// The parameter group of char-LM block `i` under `GroupRule::blocks(CHARLM_BLOCK_PREFIX)`.
pub fn charlm_block_group(i: usize) -> String {
    format!("{CHARLM_BLOCK_PREFIX}{i}")
}

/// The prefix of the char-LM's block parameters (`block0.qkv.weight`, …).
pub const CHARLM_BLOCK_PREFIX: &str = "block";

impl CharLm {
    /// Builds the model's variables in `varmap` (initialise them deterministically afterwards).
    ///
    /// # Errors
    /// Candle errors.
    pub fn new(cfg: CharLmConfig, varmap: &VarMap, device: &Device) -> Result<Self> {
        Self::with_plan(cfg, varmap, device, PlanHandle::default())
    }

    /// As [`CharLm::new`], reading its backward plan from `plan`.
    ///
    /// # Errors
    /// Candle errors.
    pub fn with_plan(
        cfg: CharLmConfig,
        varmap: &VarMap,
        device: &Device,
        plan: PlanHandle,
    ) -> Result<Self> {
        let vb = VarBuilder::from_varmap(varmap, DType::F32, device);
        let tok = candle_nn::embedding(cfg.vocab, cfg.d_model, vb.pp("tok"))?;
        let pos = vb.get((cfg.context, cfg.d_model), "pos.weight")?;
        let blocks = (0..cfg.layers)
            .map(|i| Block::new(&cfg, vb.pp(charlm_block_group(i))))
            .collect::<Result<Vec<_>>>()?;
        let norm = Norm::new(cfg.d_model, vb.pp("norm"))?;
        let head = candle_nn::linear(cfg.d_model, cfg.vocab, vb.pp("head"))?;
        let t = cfg.context;
        let mask: Vec<f32> = (0..t * t)
            .map(|i| {
                if i % t > i / t {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), device)?;
        Ok(Self {
            cfg,
            tok,
            pos,
            blocks,
            norm,
            head,
            mask,
            plan,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &CharLmConfig {
        &self.cfg
    }
}

impl Module for CharLm {
    /// `ids`: `(batch, context)` u32 → logits `(batch, context, vocab)`.
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (_, t) = ids.dims2()?;
        let mut x = self
            .tok
            .forward(ids)?
            .broadcast_add(&self.pos.narrow(0, 0, t)?)?;
        let mask = self.mask.narrow(0, 0, t)?.narrow(1, 0, t)?;
        let plan = self
            .plan
            .lock()
            .map_err(|_| candle_core::Error::Msg("the backward plan's mutex is poisoned".into()))?
            .clone();
        for (i, b) in self.blocks.iter().enumerate() {
            x = b
                .forward(&x, &mask, &plan, &charlm_block_group(i))
                .map_err(|e| e.context(format!("block {i}")))?;
        }
        self.head.forward(&self.norm.forward(&x)?)
    }
}
