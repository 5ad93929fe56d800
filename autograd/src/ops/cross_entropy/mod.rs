//! `cross_entropy`: the classification loss from raw logits and integer labels.

#[cfg(test)]
mod tests;

use crate::ops::softmax::log_softmax_forward;
use crate::tape::{Op, Tape, Var};
use crate::tensor::Tensor;

impl Tape {
    /// Mean negative log-likelihood of the labels under softmax(logits).
    /// ```text
    /// # Shapes    logits [N, C], labels N integers in 0..C → loss []
    /// # Forward   loss = (1/N) Σₙ −log_softmax(logitsₙ)[labelₙ] = (1/N) Σₙ (lseₙ − logitsₙ[labelₙ])
    /// # Backward  dlogitsₙ = dloss · (softmax(logitsₙ) − onehot(labelₙ)) / N
    /// # Saved     log_softmax(logits), labels
    /// # Reference torch.nn.functional.cross_entropy (reduction='mean')
    /// ```
    #[track_caller]
    pub fn cross_entropy(&mut self, logits: &Var, labels: &[usize]) -> Var {
        let s = logits.shape();
        if s.len() != 2 || s[0] != labels.len() {
            panic!("cross_entropy: logits {s:?} must be [N, C] with N = {} labels", labels.len());
        }
        let (n, c) = (s[0], s[1]);
        if let Some(bad) = labels.iter().find(|&&l| l >= c) {
            panic!("cross_entropy: label {bad} is out of range for {c} classes");
        }
        let log_probs = log_softmax_forward(logits.value().data(), (n, c, 1));
        let loss = -labels.iter().enumerate().map(|(i, &l)| log_probs[i * c + l] as f64).sum::<f64>() / n as f64;
        let op = CrossEntropyOp { log_probs: Tensor::from_vec(s, log_probs), labels: labels.to_vec() };
        self.record(op, &[logits], Tensor::scalar(loss as f32))
    }
}

struct CrossEntropyOp {
    log_probs: Tensor,
    labels: Vec<usize>,
}
impl Op for CrossEntropyOp {
    fn name(&self) -> &'static str {
        "cross_entropy"
    }
    fn backward(&self, dloss: &Tensor, _wants: &[bool]) -> Vec<Option<Tensor>> {
        // forward: loss = (1/N) Σₙ −log_softmax(logitsₙ)[labelₙ] = (1/N) Σₙ (lseₙ − logitsₙ[labelₙ])
        let (n, c) = (self.log_probs.shape()[0], self.log_probs.shape()[1]);
        let scale = dloss.item() / n as f32;
        let mut dx: Vec<f32> = self.log_probs.data().iter().map(|lp| lp.exp() * scale).collect();
        for (i, &l) in self.labels.iter().enumerate() {
            dx[i * c + l] -= scale;
        }
        vec![Some(Tensor::from_vec(self.log_probs.shape(), dx))]
    }
}
