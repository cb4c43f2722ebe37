//! Per-group phases on the trainer: which groups compute their true gradient this step
//! ([`BackwardPlan`], the residual-detach helper for candle models), and per-group
//! statistics.
//!
//! In a residual block `h = x + f(x)`, writing `h = x + plan.branch("layers.3", &f(x))?`
//! detaches `f(x)` when group `layers.3` predicts this step: the gradient still reaches the
//! blocks below through `x`, `f`'s own backward work is skipped, and its parameters get no
//! gradient from `backward()`. The trainer fills them in with
//! [`fill_predicted_grad_store`](DeterministicPhaseTrainer::fill_predicted_grad_store).

use std::sync::Arc;

use candle_core::Tensor;
use phase_scheduler::PhaseStats;

use super::DeterministicPhaseTrainer;
use crate::error::{Error, Result};

/// Which parameter groups compute their true gradient in a step. Cheap to clone (the group
/// names are shared); hand it to the model's forward pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackwardPlan {
    names: Option<Arc<[String]>>,
    computed: Vec<bool>,
}

impl BackwardPlan {
    /// A plan that computes every group (plain training, evaluation): [`branch`](Self::branch)
    /// never detaches, for any group name.
    #[must_use]
    pub fn all() -> Self {
        Self::default()
    }

    /// A plan over the groups `names` (sorted, as [`DeterministicPhaseTrainer::groups`]
    /// returns them) with `computed[i]` for group `i`. Used by the trainer; public so that a
    /// model can be tested with any plan.
    ///
    /// # Errors
    /// [`Error::InvalidState`] when the lengths differ.
    pub fn new(names: Arc<[String]>, computed: Vec<bool>) -> Result<Self> {
        if names.len() != computed.len() {
            return Err(Error::InvalidState(format!(
                "a backward plan needs one flag per group: {} groups, {} flags",
                names.len(),
                computed.len()
            )));
        }
        Ok(Self {
            names: Some(names),
            computed,
        })
    }

    /// Whether group `group` computes its true gradient.
    ///
    /// # Errors
    /// [`Error::UnknownGroup`] for a name that is not a group of the plan (a plan from
    /// [`all`](Self::all) knows every name).
    pub fn computes(&self, group: &str) -> Result<bool> {
        let Some(names) = &self.names else {
            return Ok(true);
        };
        match names.binary_search_by(|n| n.as_str().cmp(group)) {
            Ok(i) => Ok(self.computed[i]),
            Err(_) => Err(Error::UnknownGroup {
                name: group.to_string(),
                groups: names.to_vec(),
            }),
        }
    }

    /// `branch` itself when `group` computes its gradient, `branch.detach()` when it
    /// predicts: the residual-detach helper (`h = x + plan.branch(group, &f(x))?`).
    ///
    /// # Errors
    /// As [`computes`](Self::computes).
    pub fn branch(&self, group: &str, branch: &Tensor) -> Result<Tensor> {
        Ok(if self.computes(group)? {
            branch.clone()
        } else {
            branch.detach()
        })
    }

    /// Per group (in group order): whether it computes its gradient (empty for
    /// [`all`](Self::all)).
    #[must_use]
    pub fn flags(&self) -> &[bool] {
        &self.computed
    }

    /// Whether every group computes its gradient.
    #[must_use]
    pub fn computes_all(&self) -> bool {
        self.computed.iter().all(|&c| c)
    }

    /// The number of groups whose backward work is skipped.
    #[must_use]
    pub fn skipped(&self) -> usize {
        self.computed.iter().filter(|&&c| !c).count()
    }
}

/// One group's statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupStats {
    /// The group's name (`""` for the remainder group).
    pub name: String,
    /// Its parameters, sorted.
    pub params: Vec<String>,
    /// Its gradient elements.
    pub elements: usize,
    /// Its scheduler's statistics (`full_steps`: steps that computed this group's gradient).
    pub phases: PhaseStats,
    /// Its last measured prediction quality `(cosine, relative error)`.
    pub last_quality: Option<(f32, f32)>,
}

impl DeterministicPhaseTrainer {
    /// The parameter groups, sorted by name (one group `""` with the default
    /// `GroupRule::Whole`).
    pub fn groups(&self) -> &[String] {
        self.scheduler.names()
    }

    /// The group of parameter `name`.
    pub fn group_of(&self, name: &str) -> Option<&str> {
        let i = self.params.position(name)?;
        self.scheduler
            .names()
            .get(self.member[i])
            .map(String::as_str)
    }

    /// Which groups compute their true gradient in the step in progress (between steps: in
    /// the next one). Pass it to the model's forward pass and detach the branches of the
    /// groups that predict ([`BackwardPlan::branch`]).
    pub fn backward_plan(&self) -> BackwardPlan {
        let steps = self.scheduler.group_steps();
        BackwardPlan {
            names: Some(self.group_names.clone()),
            computed: steps.iter().map(|s| s.needs_backward).collect(),
        }
    }

    /// Every group's statistics, in group order.
    pub fn group_stats(&self) -> Vec<GroupStats> {
        self.scheduler
            .names()
            .iter()
            .enumerate()
            .map(|(g, name)| {
                let members: Vec<usize> = (0..self.member.len())
                    .filter(|&i| self.member[i] == g)
                    .collect();
                GroupStats {
                    name: name.clone(),
                    params: members
                        .iter()
                        .map(|&i| self.params.specs()[i].name.clone())
                        .collect(),
                    elements: members
                        .iter()
                        .map(|&i| self.params.specs()[i].numel())
                        .sum(),
                    phases: self
                        .scheduler
                        .group_stats(g)
                        .cloned()
                        .unwrap_or_else(|| self.scheduler.stats().clone()),
                    last_quality: self.last_quality[g],
                }
            })
            .collect()
    }

    /// Backward work done so far, weighted by gradient elements: the sum over steps of the
    /// elements of the groups computed, divided by `steps × all elements` (1 when nothing was
    /// skipped; 0 before any step). For linear layers the weight-gradient FLOPs are
    /// proportional to the elements, so this is the fraction of that backward work done.
    pub fn backward_work_fraction(&self) -> f64 {
        let total = self.scheduler.backward_steps() + self.scheduler.predicted_steps();
        if total == 0 {
            return 0.0;
        }
        let done: f64 = self
            .group_stats()
            .iter()
            .map(|g| g.elements as f64 * g.phases.full_steps as f64)
            .sum();
        done / (total as f64 * self.params.total_numel() as f64)
    }
}
