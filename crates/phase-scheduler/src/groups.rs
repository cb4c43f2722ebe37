//! Per-group phases: parameters split into groups (by default one group per residual block),
//! each group with its own [`PhaseScheduler`].
//!
//! Skipping the *whole* backward pass is coarse: gradient quality differs across layers and
//! over time, and one tensor with a poor prediction forces a Full step for every parameter.
//! With groups, each group runs the ordinary Warmup → Full → Predict/Correct machine on its
//! own quality reports. A step needs a backward pass when **any** group needs its true
//! gradient; a group in a Predict step gets a predicted gradient, and its part of the backward
//! pass can be skipped (in a residual block `h = x + f(x)`, computing
//! `h = x + f(x).detach()` still carries the gradient to the blocks below through `x`, while
//! `f`'s own backward work is skipped).
//!
//! All groups see the same loss, so a loss spike or a non-finite loss aborts the predict
//! blocks of every group at once; quality reports are per group. With one group
//! ([`GroupRule::Whole`]) the [`GroupedScheduler`] is exactly a [`PhaseScheduler`]: same
//! steps, same statistics, same serialised state.
//!
//! Group identity is deterministic: parameter names are sorted, groups are sorted by name, and
//! the remainder group (parameters that no rule matches) is named `""`, so it sorts first.

use serde::{Deserialize, Serialize};

use crate::config::ScheduleConfig;
use crate::error::{Error, Result};
use crate::phase::DeterministicPhase;
use crate::scheduler::PhaseScheduler;
use crate::stats::PhaseStats;
use crate::step::{QualityReport, StepInfo};

/// How parameters are split into groups, each with its own phase state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupRule {
    /// One group holding every parameter: the behaviour of vsa-optim-rs 0.1.1.
    #[default]
    Whole,
    /// One group per numbered block: a parameter whose name is `{prefix}{index}.…` (a decimal
    /// index followed by a `.`) joins the group `{prefix}{index}`; with prefix `layers.`,
    /// `layers.3.attn.w` joins `layers.3`. Every other parameter joins the remainder group
    /// `""`.
    Blocks {
        /// The text before the block index, e.g. `"layers."` or `"blocks."`.
        prefix: String,
    },
    /// Explicit prefixes: a parameter joins the group named by the longest prefix its name
    /// starts with; parameters that match none join the remainder group `""`.
    Prefixes(Vec<String>),
}

/// The name of the group that holds the parameters no rule matches.
pub const REMAINDER_GROUP: &str = "";

fn rule_error(expected: &str, actual: String) -> Error {
    Error::InvalidConfig {
        parameter: "groups",
        expected: expected.into(),
        actual,
    }
}

impl GroupRule {
    /// A [`GroupRule::Blocks`] rule.
    #[must_use]
    pub fn blocks(prefix: impl Into<String>) -> Self {
        Self::Blocks {
            prefix: prefix.into(),
        }
    }

    /// Checks the rule on its own: no empty prefix, no duplicate prefix.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] with parameter `groups`.
    pub fn validate(&self) -> Result<()> {
        match self {
            Self::Whole => Ok(()),
            Self::Blocks { prefix } if prefix.is_empty() => Err(rule_error(
                "a non-empty block prefix such as \"layers.\"",
                "\"\"".into(),
            )),
            Self::Blocks { .. } => Ok(()),
            Self::Prefixes(list) => {
                if list.is_empty() {
                    return Err(rule_error("at least one prefix", "an empty list".into()));
                }
                let mut sorted: Vec<&String> = list.iter().collect();
                sorted.sort();
                if let Some(p) = sorted.iter().find(|p| p.is_empty()) {
                    return Err(rule_error("non-empty prefixes", format!("{p:?}")));
                }
                if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
                    return Err(rule_error("distinct prefixes", format!("{:?} twice", w[0])));
                }
                Ok(())
            }
        }
    }

    /// The group of `name` under this rule (`None`: the remainder group).
    fn group_of<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        match self {
            Self::Whole => None,
            Self::Blocks { prefix } => {
                let rest = name.strip_prefix(prefix.as_str())?;
                let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
                (digits > 0 && rest.as_bytes().get(digits) == Some(&b'.'))
                    .then(|| &name[..prefix.len() + digits])
            }
            Self::Prefixes(list) => list
                .iter()
                .filter(|p| name.starts_with(p.as_str()))
                .max_by_key(|p| p.len())
                .map(String::as_str),
        }
    }

    /// Splits `names` (any order, no duplicates) into groups.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] (parameter `groups`) for an invalid rule, no names, a
    /// duplicate name, a [`GroupRule::Blocks`] prefix that matches no parameter, or a
    /// [`GroupRule::Prefixes`] prefix that matches none.
    pub fn assign(&self, names: &[String]) -> Result<ParamGroups> {
        self.validate()?;
        if names.is_empty() {
            return Err(rule_error("at least one parameter", "none".into()));
        }
        let mut sorted: Vec<&String> = names.iter().collect();
        sorted.sort();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(rule_error(
                "distinct parameter names",
                format!("{:?} twice", w[0]),
            ));
        }
        let keys: Vec<&str> = sorted
            .iter()
            .map(|n| self.group_of(n).unwrap_or(REMAINDER_GROUP))
            .collect();
        let mut group_names: Vec<String> = keys.iter().map(|k| (*k).to_string()).collect();
        group_names.sort();
        group_names.dedup();
        match self {
            Self::Blocks { prefix } if group_names.iter().all(|g| g.is_empty()) => {
                return Err(rule_error(
                    "a block prefix that matches at least one parameter",
                    format!("{prefix:?} matches none"),
                ));
            }
            Self::Prefixes(list) => {
                if let Some(p) = list.iter().find(|p| !group_names.contains(p)) {
                    return Err(rule_error(
                        "prefixes that each hold at least one parameter",
                        format!("{p:?} holds none (a longer prefix or no name matches)"),
                    ));
                }
            }
            _ => {}
        }
        let members = keys
            .iter()
            .map(|k| {
                group_names
                    .binary_search_by(|g| g.as_str().cmp(k))
                    .unwrap_or(0)
            })
            .collect();
        Ok(ParamGroups {
            params: sorted.into_iter().cloned().collect(),
            names: group_names,
            members,
        })
    }
}

/// The result of [`GroupRule::assign`]: parameters (sorted by name) and the group of each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamGroups {
    params: Vec<String>,
    names: Vec<String>,
    members: Vec<usize>,
}

impl ParamGroups {
    /// Group names, sorted (the remainder group `""` first when present).
    #[must_use]
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Parameter names, sorted.
    #[must_use]
    pub fn params(&self) -> &[String] {
        &self.params
    }

    /// The group index of each parameter, in sorted parameter order.
    #[must_use]
    pub fn members(&self) -> &[usize] {
        &self.members
    }

    /// The number of groups.
    #[must_use]
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Always `false`: [`GroupRule::assign`] makes at least one group.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The index of group `name`.
    #[must_use]
    pub fn index(&self, name: &str) -> Option<usize> {
        self.names.binary_search_by(|g| g.as_str().cmp(name)).ok()
    }
}

/// One [`PhaseScheduler`] per group, stepped together.
///
/// The step it reports ([`GroupedScheduler::begin_step`]) is the seed's [`StepInfo`]; with
/// one group it is that group's, unchanged. With several groups `needs_backward` is true when
/// any group needs its true gradient, `phase` is the first of Warmup, Full, Correct that some
/// group is in (Predict when every group predicts), the position fields are those of the first
/// group in that phase, and `full_steps` / `predicted_steps` count the steps that did / did not
/// run a backward pass. [`GroupedScheduler::group_steps`] gives every group's own step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "GroupedState", into = "GroupedState")]
pub struct GroupedScheduler {
    names: Vec<String>,
    groups: Vec<PhaseScheduler>,
    /// This step's [`StepInfo`] of each group (the one [`PhaseScheduler::peek`] gives).
    steps: Vec<StepInfo>,
    backward_steps: u64,
    predicted_steps: u64,
    /// Backward work done, in group-steps: the sum over steps of the groups computed.
    group_backward_steps: u64,
}

#[derive(Serialize, Deserialize)]
struct GroupedState {
    names: Vec<String>,
    groups: Vec<PhaseScheduler>,
    backward_steps: u64,
    predicted_steps: u64,
    group_backward_steps: u64,
}

impl From<GroupedScheduler> for GroupedState {
    fn from(g: GroupedScheduler) -> Self {
        Self {
            names: g.names,
            groups: g.groups,
            backward_steps: g.backward_steps,
            predicted_steps: g.predicted_steps,
            group_backward_steps: g.group_backward_steps,
        }
    }
}

impl TryFrom<GroupedState> for GroupedScheduler {
    type Error = Error;
    fn try_from(s: GroupedState) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidState {
            reason: reason.into(),
        };
        if s.groups.is_empty() || s.names.len() != s.groups.len() {
            return Err(bad("one name per group, at least one group"));
        }
        if s.names.windows(2).any(|w| w[0] >= w[1]) {
            return Err(bad("group names must be sorted and distinct"));
        }
        let first = &s.groups[0];
        let total = first.stats().total_steps;
        if s.groups.iter().any(|g| {
            g.stats().total_steps != total
                || g.current_step().is_some() != first.current_step().is_some()
                || g.config() != first.config()
        }) {
            return Err(bad(
                "groups disagree on the step, the step in progress or the config",
            ));
        }
        if s.backward_steps.checked_add(s.predicted_steps) != Some(total)
            || s.group_backward_steps > total.saturating_mul(s.groups.len() as u64)
            || s.group_backward_steps < s.backward_steps
        {
            return Err(bad("grouped step counters disagree with the groups"));
        }
        let steps = s.groups.iter().map(PhaseScheduler::peek).collect();
        Ok(Self {
            names: s.names,
            groups: s.groups,
            steps,
            backward_steps: s.backward_steps,
            predicted_steps: s.predicted_steps,
            group_backward_steps: s.group_backward_steps,
        })
    }
}

impl GroupedScheduler {
    /// One scheduler with `config` for each of the groups `names` (sorted, distinct, at
    /// least one; e.g. [`ParamGroups::names`]).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an invalid config or group list.
    pub fn new(config: ScheduleConfig, names: &[String]) -> Result<Self> {
        if names.is_empty() {
            return Err(rule_error("at least one group", "none".into()));
        }
        if let Some(w) = names.windows(2).find(|w| w[0] >= w[1]) {
            return Err(rule_error(
                "sorted, distinct group names",
                format!("{:?} before {:?}", w[0], w[1]),
            ));
        }
        let one = PhaseScheduler::new(config)?;
        let groups = vec![one; names.len()];
        let steps = groups.iter().map(PhaseScheduler::peek).collect();
        Ok(Self {
            names: names.to_vec(),
            groups,
            steps,
            backward_steps: 0,
            predicted_steps: 0,
            group_backward_steps: 0,
        })
    }

    /// A one-group scheduler continuing `scheduler` (for example one restored from a
    /// checkpoint of a plain [`PhaseScheduler`]).
    ///
    /// # Errors
    /// [`Error::InvalidState`] while `scheduler` has a step in progress.
    pub fn from_scheduler(name: impl Into<String>, scheduler: PhaseScheduler) -> Result<Self> {
        if let Some(s) = scheduler.current_step() {
            return Err(Error::InvalidState {
                reason: format!("step {} is in progress", s.step),
            });
        }
        let st = scheduler.stats();
        let (backward, predicted) = (st.full_steps, st.predicted_steps);
        let steps = vec![scheduler.peek()];
        Ok(Self {
            names: vec![name.into()],
            groups: vec![scheduler],
            steps,
            backward_steps: backward,
            predicted_steps: predicted,
            group_backward_steps: backward,
        })
    }

    /// The group names.
    #[must_use]
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The number of groups.
    #[must_use]
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Always `false`: there is at least one group.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The configuration (the same for every group).
    #[must_use]
    pub fn config(&self) -> &ScheduleConfig {
        self.groups[0].config()
    }

    /// The scheduler of group `index`.
    #[must_use]
    pub fn group(&self, index: usize) -> Option<&PhaseScheduler> {
        self.groups.get(index)
    }

    /// Every group's own step for the step in progress (or, between steps, the next one),
    /// in group order.
    #[must_use]
    pub fn group_steps(&self) -> &[StepInfo] {
        &self.steps
    }

    /// Whether group `index` needs its true gradient in the step in progress (or the next).
    #[must_use]
    pub fn needs_backward(&self, index: usize) -> bool {
        self.steps.get(index).is_some_and(|s| s.needs_backward)
    }

    /// The step in progress, if any.
    #[must_use]
    pub fn current_step(&self) -> Option<StepInfo> {
        self.groups[0].current_step().map(|_| self.combined())
    }

    /// What the next [`begin_step`](Self::begin_step) will return, without starting it.
    #[must_use]
    pub fn peek(&self) -> StepInfo {
        self.combined()
    }

    fn combined(&self) -> StepInfo {
        if self.steps.len() == 1 {
            return self.steps[0];
        }
        let order = [
            DeterministicPhase::Warmup,
            DeterministicPhase::Full,
            DeterministicPhase::Correct,
            DeterministicPhase::Predict,
        ];
        let lead = order
            .iter()
            .find_map(|p| self.steps.iter().find(|s| s.phase == *p))
            .copied()
            .unwrap_or(self.steps[0]);
        StepInfo {
            needs_backward: lead.phase.needs_backward(),
            full_steps: self.backward_steps,
            predicted_steps: self.predicted_steps,
            ..lead
        }
    }

    /// Starts the next step in every group.
    ///
    /// # Errors
    /// [`Error::StepInProgress`] when the previous step has not ended (state unchanged).
    pub fn begin_step(&mut self) -> Result<StepInfo> {
        if let Some(s) = self.groups[0].current_step() {
            return Err(Error::StepInProgress { step: s.step });
        }
        for (g, s) in self.groups.iter_mut().zip(&mut self.steps) {
            *s = g.begin_step()?;
        }
        Ok(self.combined())
    }

    /// Reports group `index`'s prediction quality for the step in progress (see
    /// [`PhaseScheduler::report_quality`]).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] (parameter `group`) for an index out of range; otherwise as
    /// [`PhaseScheduler::report_quality`]. State unchanged on error.
    pub fn report_quality(&mut self, index: usize, report: QualityReport) -> Result<()> {
        let n = self.groups.len();
        let g = self.groups.get_mut(index).ok_or(Error::InvalidConfig {
            parameter: "group",
            expected: format!("a group index below {n}"),
            actual: index.to_string(),
        })?;
        g.report_quality(report)
    }

    fn count(&mut self) {
        let computed = self.steps.iter().filter(|s| s.needs_backward).count() as u64;
        if computed > 0 {
            self.backward_steps += 1;
        } else {
            self.predicted_steps += 1;
        }
        self.group_backward_steps += computed;
    }

    /// Ends the step with its loss, in every group.
    ///
    /// # Errors
    /// [`Error::NoStepInProgress`] (state unchanged).
    pub fn end_step(&mut self, loss: f32) -> Result<()> {
        if self.groups[0].current_step().is_none() {
            return Err(Error::NoStepInProgress {
                operation: "end_step",
            });
        }
        self.count();
        for g in &mut self.groups {
            g.end_step(loss)?;
        }
        self.refresh();
        Ok(())
    }

    /// Ends a step in which every group predicted and no forward pass ran.
    ///
    /// # Errors
    /// [`Error::NoStepInProgress`]; [`Error::LossRequired`] when some group ran backward
    /// (state unchanged).
    pub fn end_step_without_loss(&mut self) -> Result<()> {
        let Some(info) = self.current_step() else {
            return Err(Error::NoStepInProgress {
                operation: "end_step_without_loss",
            });
        };
        if info.needs_backward {
            return Err(Error::LossRequired {
                step: info.step,
                phase: info.phase,
            });
        }
        self.count();
        for g in &mut self.groups {
            g.end_step_without_loss()?;
        }
        self.refresh();
        Ok(())
    }

    fn refresh(&mut self) {
        for (g, s) in self.groups.iter().zip(&mut self.steps) {
            *s = g.peek();
        }
    }

    /// The first group's statistics: with one group, the statistics of the plain scheduler.
    #[must_use]
    pub fn stats(&self) -> &PhaseStats {
        self.groups[0].stats()
    }

    /// The statistics of group `index`.
    #[must_use]
    pub fn group_stats(&self, index: usize) -> Option<&PhaseStats> {
        self.groups.get(index).map(PhaseScheduler::stats)
    }

    /// Steps that ran a backward pass for at least one group.
    #[must_use]
    pub fn backward_steps(&self) -> u64 {
        self.backward_steps
    }

    /// Steps in which every group predicted (no forward or backward pass needed).
    #[must_use]
    pub fn predicted_steps(&self) -> u64 {
        self.predicted_steps
    }

    /// Backward work done, counted in group-steps (the sum over steps of the number of groups
    /// whose true gradient was computed). `steps × groups` when nothing was skipped.
    #[must_use]
    pub fn group_backward_steps(&self) -> u64 {
        self.group_backward_steps
    }
}
