//! What a tape can watch besides recording, each off unless enabled: the time every op takes, forward and
//! backward ([`Tape::enable_profile`]), and the first op whose output holds a NaN or ±∞
//! ([`Tape::enable_finite_check`]). Kept apart so that [`Tape::record`] reads "observe, then record".

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Node, Tape, Var};
use crate::params::ParamId;
use crate::tensor::Tensor;

/// What [`Tape::enable_finite_check`] has seen: ops so far, and the first op whose output was not finite.
#[derive(Default, Debug)]
pub(super) struct FiniteCheck {
    ops: usize,
    first: Option<NonFinite>,
}

/// The first op whose output held a NaN or ±∞ (see [`Tape::enable_finite_check`]).
#[derive(Clone, Debug, PartialEq)]
pub struct NonFinite {
    /// Position of the op in the forward pass, counting every op from 1.
    pub op_index: usize,
    pub op: &'static str,
    pub shape: Vec<usize>,
    pub input_shapes: Vec<Vec<usize>>,
    /// The parameters among its inputs (a layer's weights name the layer).
    pub params: Vec<ParamId>,
}

/// Time spent per op, forward and backward (see [`Tape::enable_profile`]).
#[derive(Default, Debug)]
pub(super) struct Profile {
    /// op name → (calls, forward seconds, backward seconds)
    ops: BTreeMap<&'static str, (usize, f64, f64)>,
    last: Option<std::time::Instant>,
}

impl Tape {
    /// Starts timing every recorded op: forward time is measured from the previous recorded op (so it
    /// includes any glue code between ops), backward time around each op's `backward`. Accumulates over
    /// steps until [`Tape::profile_report`].
    pub fn enable_profile(&mut self) {
        self.profile = Some(Profile { last: Some(std::time::Instant::now()), ..Profile::default() });
    }

    /// Books the time since the last recorded op (or mark) under `label` instead of the next op's forward:
    /// for work done outside the tape, such as the optimizer step. Does nothing when profiling is off. (Each
    /// recorded op books its own forward the same way.)
    pub fn profile_mark(&mut self, label: &'static str) {
        if let Some(profile) = self.profile.as_mut() {
            let now = std::time::Instant::now();
            let entry = profile.ops.entry(label).or_default();
            entry.0 += 1;
            entry.1 += profile.last.map_or(0.0, |t| (now - t).as_secs_f64());
            profile.last = Some(now);
        }
    }

    /// A table of the profiled time per op, largest total first, and resets the counts.
    pub fn profile_report(&mut self) -> String {
        let Some(profile) = self.profile.as_mut() else { return "profiling is off\n".into() };
        let mut rows: Vec<_> = profile.ops.iter().map(|(name, &(n, f, b))| (name, n, f, b)).collect();
        rows.sort_by(|x, y| (y.2 + y.3).total_cmp(&(x.2 + x.3)));
        let total: f64 = rows.iter().map(|r| r.2 + r.3).sum();
        let mut out =
            format!("{:<30} {:>7} {:>11} {:>11} {:>6}\n", "op", "calls", "forward ms", "backward ms", "share");
        for (name, n, f, b) in rows {
            let share = 100.0 * (f + b) / total.max(1e-12);
            let _ = writeln!(out, "{name:<30} {n:>7} {:>11.2} {:>11.2} {share:>5.1}%", f * 1e3, b * 1e3);
        }
        profile.ops.clear();
        out
    }

    /// Starts checking every op's output for NaN or ±∞ (recorded or not); [`Tape::first_non_finite`] then
    /// names the first op that produced one. A debugging aid: it reads every activation once more.
    pub fn enable_finite_check(&mut self) {
        self.finite_check = Some(FiniteCheck::default());
    }

    /// The first op whose output held a NaN or ±∞ since [`Tape::enable_finite_check`].
    pub fn first_non_finite(&self) -> Option<&NonFinite> {
        self.finite_check.as_ref().and_then(|c| c.first.as_ref())
    }

    /// Books an op's forward: the time since the last op (or mark), and whether its output is finite.
    pub(super) fn observe_forward(&mut self, name: &'static str, inputs: &[&Var], output: &Tensor) {
        self.profile_mark(name);
        let Some(check) = self.finite_check.as_mut() else { return };
        check.ops += 1;
        if check.first.is_some() || output.all_finite() {
            return;
        }
        let params = inputs
            .iter()
            .filter_map(|v| v.node)
            .filter_map(|n| match self.nodes[n] {
                Node::Param { id, .. } => Some(id),
                _ => None,
            })
            .collect();
        check.first = Some(NonFinite {
            op_index: check.ops,
            op: name,
            shape: output.shape().to_vec(),
            input_shapes: inputs.iter().map(|v| v.shape().to_vec()).collect(),
            params,
        });
    }

    /// Runs an op's backward, booking its time when profiling.
    pub(super) fn timed_backward<T>(&mut self, name: &'static str, backward: impl FnOnce() -> T) -> T {
        let started = self.profile.is_some().then(std::time::Instant::now);
        let out = backward();
        if let (Some(profile), Some(started)) = (self.profile.as_mut(), started) {
            profile.ops.entry(name).or_default().2 += started.elapsed().as_secs_f64();
        }
        out
    }

    /// After a backward pass: the next op's forward time starts now.
    pub(super) fn restart_profile_clock(&mut self) {
        if let Some(profile) = self.profile.as_mut() {
            profile.last = Some(std::time::Instant::now());
        }
    }
}
