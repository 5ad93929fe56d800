//! The tape: reverse-mode automatic differentiation as a flat list of nodes (a Wengert list).
//!
//! Every op that takes an input which requires a gradient appends one node: the op (a struct that holds
//! what its backward needs, and knows how to run it) and the ids of its inputs. Nodes are appended in
//! creation order, which is already a topological order, so `backward` is one loop over the list in
//! reverse: no sort, no recursion, no reference-counted graph.
//!
//! Only values that lead back to a leaf that requires a gradient (a parameter, or a tensor made with
//! [`Tape::leaf`]) get a node. Data, constants and everything computed from them alone are plain values
//! ([`Var`]s without a node), so no gradient is ever computed or stored for them. In an inference tape
//! ([`Tape::inference`]) nothing gets a node at all, so sampling a thousand steps never grows a tape.
//!
//! Parameters live in a [`ParamStore`] across steps; each step binds them to a fresh (or cleared) tape with
//! [`Tape::param`], and [`Tape::backward`] returns their gradients keyed by [`ParamId`]. Backward consumes
//! the recorded nodes, dropping each op (and the activations it saved) as soon as its gradient has been
//! passed on, so the tape is empty and ready for the next step afterwards.

use std::collections::{BTreeMap, HashMap};

mod instruments;
pub use instruments::NonFinite;
use instruments::{FiniteCheck, Profile};
use std::fmt::Write as _;

use crate::params::{ParamId, ParamStore};
use crate::tensor::Tensor;

/// Index of a node on a tape.
pub type NodeId = usize;

/// A value flowing through a computation: a tensor, plus the tape node that produced it when a gradient
/// must flow back through it.
#[derive(Clone, Debug)]
pub struct Var {
    value: Tensor,
    node: Option<NodeId>,
}

impl Var {
    /// A value that takes no part in differentiation (data, targets, noise).
    pub fn constant(value: Tensor) -> Var {
        Var { value, node: None }
    }

    pub fn value(&self) -> &Tensor {
        &self.value
    }

    pub fn shape(&self) -> &[usize] {
        self.value.shape()
    }

    /// The value, dropping the link to the tape.
    pub fn into_value(self) -> Tensor {
        self.value
    }

    /// True when a gradient will flow back through this value.
    pub fn requires_grad(&self) -> bool {
        self.node.is_some()
    }

    pub fn node(&self) -> Option<NodeId> {
        self.node
    }
}

/// The backward half of an op. The forward half is a method on [`Tape`] in the op's own module; it computes
/// the output and builds this struct with whatever the backward needs ("saved for backward").
pub trait Op: Send + Sync {
    /// Short name for the graph printout and for error messages, e.g. `"matmul"`.
    fn name(&self) -> &'static str;

    /// Given `dout` = ∂L/∂output, returns ∂L/∂input for each input (in the order they were recorded).
    /// `wants[i]` says whether input i needs its gradient; the op may return `None` where it is false.
    fn backward(&self, dout: &Tensor, wants: &[bool]) -> Vec<Option<Tensor>>;

    /// The op's settings that its shapes do not show, for [`Tape::recorded_ops`] and the graph printout
    /// (a convolution's stride and padding); empty for most ops.
    fn attributes(&self) -> String {
        String::new()
    }
}

/// One op as the tape recorded it ([`Tape::recorded_ops`]): what a benchmark needs to rerun its kernel on
/// the same shapes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RecordedOp {
    pub name: &'static str,
    /// [`Op::attributes`], e.g. `"stride 2, padding 1"`.
    pub attributes: String,
    pub input_shapes: Vec<Vec<usize>>,
    /// Per input: whether a gradient flows back to it (false for constants).
    pub needs_grad: Vec<bool>,
    pub output_shape: Vec<usize>,
}

/// One entry of the tape: a leaf, where a gradient ends, or an op, through which it flows back.
enum Node {
    /// A parameter bound with [`Tape::param`]; its gradient goes to [`Gradients::param`].
    Param { id: ParamId, shape: Vec<usize> },
    /// A leaf made with [`Tape::leaf`]; its gradient goes to [`Gradients::leaf`].
    Input { shape: Vec<usize> },
    /// An op's output: the op with what it saved for backward, and per input its node (`None`: it needs no
    /// gradient) and its shape (to check the gradient the op returns).
    Op { op: Box<dyn Op>, inputs: Vec<Option<NodeId>>, input_shapes: Vec<Vec<usize>>, shape: Vec<usize> },
}

impl Node {
    fn shape(&self) -> &[usize] {
        match self {
            Node::Param { shape, .. } | Node::Input { shape } | Node::Op { shape, .. } => shape,
        }
    }
}

/// A recording of one forward pass, for one backward pass.
pub struct Tape {
    nodes: Vec<Node>,
    recording: bool,
    bound_params: HashMap<ParamId, NodeId>,
    profile: Option<Profile>,
    finite_check: Option<FiniteCheck>,
}

impl Default for Tape {
    fn default() -> Self {
        Tape::new()
    }
}

/// Gradients produced by [`Tape::backward`]: for every parameter and every [`Tape::leaf`] that the loss
/// depends on.
#[derive(Default, Debug)]
pub struct Gradients {
    params: BTreeMap<ParamId, Tensor>,
    leaves: HashMap<NodeId, Tensor>,
}

impl Gradients {
    /// ∂L/∂parameter, or `None` if the loss does not depend on it.
    pub fn param(&self, id: ParamId) -> Option<&Tensor> {
        self.params.get(&id)
    }

    /// ∂L/∂leaf for a leaf made with [`Tape::leaf`].
    pub fn leaf(&self, var: &Var) -> Option<&Tensor> {
        var.node.and_then(|n| self.leaves.get(&n))
    }

    /// Parameter gradients in parameter order.
    pub fn params(&self) -> impl Iterator<Item = (ParamId, &Tensor)> {
        self.params.iter().map(|(id, g)| (*id, g))
    }

    pub fn params_mut(&mut self) -> impl Iterator<Item = (ParamId, &mut Tensor)> {
        self.params.iter_mut().map(|(id, g)| (*id, g))
    }

    /// Replaces a parameter's gradient (used by gradient clipping and tests).
    pub fn set_param(&mut self, id: ParamId, grad: Tensor) {
        self.params.insert(id, grad);
    }

    /// Adds the parameter gradients of `other` into these: gradient accumulation, where a step's loss is a
    /// sum over passes, L = Σ_k L_k, so ∂L/∂θ = Σ_k ∂L_k/∂θ, each pass's from its own backward. A parameter
    /// only one side has keeps that side's gradient. Leaf gradients are not carried over: a leaf belongs to
    /// the tape of its pass.
    #[track_caller]
    pub fn accumulate(&mut self, other: Gradients) {
        for (id, g) in other.params {
            match self.params.get_mut(&id) {
                Some(mine) => {
                    assert!(
                        mine.shape() == g.shape(),
                        "Gradients::accumulate: parameter {id:?} has gradients of shapes {:?} and {:?}",
                        mine.shape(),
                        g.shape()
                    );
                    add_into(mine, &g);
                }
                None => {
                    self.params.insert(id, g);
                }
            }
        }
    }
}

impl Tape {
    /// A tape that records: ops on values that require gradients get nodes.
    pub fn new() -> Tape {
        Tape { nodes: Vec::new(), recording: true, bound_params: HashMap::new(), profile: None, finite_check: None }
    }

    /// A tape that records nothing (PyTorch's `torch.no_grad()`): every value is a plain constant.
    pub fn inference() -> Tape {
        Tape { recording: false, ..Tape::new() }
    }

    pub fn is_recording(&self) -> bool {
        self.recording
    }

    /// Number of recorded nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Forgets everything recorded (parameters stay in their store).
    pub fn clear(&mut self) {
        self.nodes.clear();
        self.bound_params.clear();
    }

    /// A value that requires no gradient; the same as [`Var::constant`].
    pub fn constant(&self, value: Tensor) -> Var {
        Var::constant(value)
    }

    /// A leaf whose gradient [`Tape::backward`] reports in [`Gradients::leaf`].
    pub fn leaf(&mut self, value: Tensor) -> Var {
        let shape = value.shape().to_vec();
        self.push_leaf(value, Node::Input { shape })
    }

    /// Binds parameter `id` of `store` to this tape. Binding the same parameter twice returns the same node,
    /// so its gradient is accumulated once over every use.
    pub fn param(&mut self, store: &ParamStore, id: ParamId) -> Var {
        let value = store.get(id).clone();
        if !self.recording {
            return Var::constant(value);
        }
        if let Some(&node) = self.bound_params.get(&id) {
            return Var { value, node: Some(node) };
        }
        let shape = value.shape().to_vec();
        let var = self.push_leaf(value, Node::Param { id, shape });
        self.bound_params.insert(id, var.node.expect("recording tape gives leaves a node"));
        var
    }

    fn push_leaf(&mut self, value: Tensor, leaf: Node) -> Var {
        if !self.recording {
            return Var::constant(value);
        }
        self.nodes.push(leaf);
        Var { value, node: Some(self.nodes.len() - 1) }
    }

    /// True when an op on these inputs must be recorded (some input requires a gradient and the tape is
    /// recording). Ops may check this to skip saving state that only backward needs.
    pub fn needs_grad(&self, inputs: &[&Var]) -> bool {
        self.recording && inputs.iter().any(|v| v.node.is_some())
    }

    /// Appends an op's node (when [`Tape::needs_grad`]) and wraps its output. Called by every op's forward.
    pub fn record(&mut self, op: impl Op + 'static, inputs: &[&Var], output: Tensor) -> Var {
        self.observe_forward(op.name(), inputs, &output); // profiling and finiteness checks, when enabled
        if !self.needs_grad(inputs) {
            return Var::constant(output);
        }
        self.nodes.push(Node::Op {
            op: Box::new(op),
            inputs: inputs.iter().map(|v| v.node).collect(),
            input_shapes: inputs.iter().map(|v| v.shape().to_vec()).collect(),
            shape: output.shape().to_vec(),
        });
        Var { value: output, node: Some(self.nodes.len() - 1) }
    }

    /// Reverse pass from a scalar loss: seeds ∂L/∂L = 1 and returns the gradients of every parameter and
    /// leaf the loss depends on. Consumes the recorded nodes; the tape is empty afterwards.
    #[track_caller]
    pub fn backward(&mut self, loss: &Var) -> Gradients {
        assert!(
            loss.value.numel() == 1,
            "backward: the loss must hold one value, got shape {:?} (use backward_from to seed a gradient)",
            loss.shape()
        );
        let seed = Tensor::ones(loss.shape());
        self.backward_from(loss, seed)
    }

    /// Reverse pass seeded with `doutput` = ∂L/∂output for a non-scalar output (a vector-Jacobian product).
    #[track_caller]
    pub fn backward_from(&mut self, output: &Var, doutput: Tensor) -> Gradients {
        assert!(
            doutput.shape() == output.shape(),
            "backward_from: seed gradient {:?} does not match output {:?}",
            doutput.shape(),
            output.shape()
        );
        let mut result = Gradients::default();
        let Some(root) = output.node else {
            self.clear();
            return result; // nothing on the path requires a gradient
        };
        // Nodes after the output cannot contribute to it.
        self.nodes.truncate(root + 1);
        let mut grads: Vec<Option<Tensor>> = vec![None; root + 1];
        grads[root] = Some(doutput);

        // The one reverse loop. Each node is popped (and dropped at the end of the iteration, freeing what
        // its op saved) and its gradient taken (so it is dropped once passed on).
        while let Some(node) = self.nodes.pop() {
            let id = self.nodes.len();
            let Some(dout) = grads[id].take() else { continue };
            match node {
                // A leaf has exactly one node (parameters are bound once per tape), so every use has
                // already been summed into `dout` by the time it is popped.
                Node::Param { id: pid, .. } => {
                    result.params.insert(pid, dout);
                }
                Node::Input { .. } => {
                    result.leaves.insert(id, dout);
                }
                Node::Op { op, inputs, input_shapes, .. } => {
                    let wants: Vec<bool> = inputs.iter().map(Option::is_some).collect();
                    let dinputs = self.timed_backward(op.name(), || op.backward(&dout, &wants));
                    assert!(
                        dinputs.len() == inputs.len(),
                        "{} backward returned {} gradients for {} inputs",
                        op.name(),
                        dinputs.len(),
                        inputs.len()
                    );
                    for (k, (input, dinput)) in inputs.iter().zip(dinputs).enumerate() {
                        let Some(input) = *input else { continue };
                        let dinput = dinput.unwrap_or_else(|| {
                            panic!("{} backward gave no gradient for input {k}, which needs one", op.name())
                        });
                        assert!(
                            dinput.shape() == input_shapes[k],
                            "{} backward: gradient for input {k} has shape {:?}, the input has shape {:?}",
                            op.name(),
                            dinput.shape(),
                            input_shapes[k]
                        );
                        match &mut grads[input] {
                            Some(g) => add_into(g, &dinput),
                            slot => *slot = Some(dinput),
                        }
                    }
                }
            }
        }
        self.bound_params.clear();
        self.restart_profile_clock();
        result
    }

    /// Every op recorded so far, in order (call it before [`Tape::backward`], which consumes the tape).
    pub fn recorded_ops(&self) -> Vec<RecordedOp> {
        let op_nodes = self.nodes.iter().filter_map(|node| match node {
            Node::Op { op, inputs, input_shapes, shape } => Some(RecordedOp {
                name: op.name(),
                attributes: op.attributes(),
                input_shapes: input_shapes.clone(),
                needs_grad: inputs.iter().map(Option::is_some).collect(),
                output_shape: shape.clone(),
            }),
            _ => None,
        });
        op_nodes.collect()
    }

    /// The recorded graph, one node per line: id, op, output shape, and input ids with their shapes.
    pub fn graph(&self) -> String {
        let mut out = String::new();
        for (id, node) in self.nodes.iter().enumerate() {
            let what = match node {
                Node::Param { id: p, .. } => format!("param #{}", p.0),
                Node::Input { .. } => "leaf".to_string(),
                Node::Op { op, .. } => match op.attributes() {
                    a if a.is_empty() => op.name().to_string(),
                    a => format!("{} ({a})", op.name()),
                },
            };
            let _ = write!(out, "%{id:<3} {what:<16} {:?}", node.shape());
            if let Node::Op { inputs, input_shapes, .. } = node {
                let ins: Vec<String> = inputs
                    .iter()
                    .zip(input_shapes)
                    .map(|(i, s)| match i {
                        Some(i) => format!("%{i} {s:?}"),
                        None => format!("const {s:?}"),
                    })
                    .collect();
                let _ = write!(out, " <- {}", ins.join(", "));
            }
            out.push('\n');
        }
        out
    }
}

/// g += other, elementwise (gradient accumulation where a value feeds several ops).
fn add_into(g: &mut Tensor, other: &Tensor) {
    for (a, b) in g.data_mut().iter_mut().zip(other.data()) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (ParamStore, ParamId, ParamId) {
        let mut params = ParamStore::new();
        let w = params.add("w", Tensor::from_vec(&[3], vec![1.0, 2.0, 3.0]));
        let unused = params.add("unused", Tensor::ones(&[2]));
        (params, w, unused)
    }

    #[test]
    fn a_parameter_used_twice_gets_both_contributions() {
        // L = Σ w⊙w  ⇒  ∂L/∂w = 2w, reached through both inputs of one mul.
        let (params, w, unused) = store();
        let mut tape = Tape::new();
        let a = tape.param(&params, w);
        let b = tape.param(&params, w);
        let y = tape.mul(&a, &b);
        let loss = tape.sum_all(&y);
        let grads = tape.backward(&loss);
        assert_eq!(grads.param(w).unwrap().data(), &[2.0, 4.0, 6.0]);
        assert!(grads.param(unused).is_none(), "a parameter the loss does not use has no gradient");
        assert!(tape.is_empty(), "backward consumes the tape");
    }

    /// Two passes, each with its own tape and its own half of the data, accumulate to the gradient of one
    /// pass over all of it: L = Σ_i w_i x_i² over x = [1, 2, 3, 4] split [1, 2] and [3, 4] (as rows of the
    /// same w), and a parameter only the second pass uses keeps the second pass's gradient.
    #[test]
    fn accumulated_passes_sum_to_the_whole_batch_gradient() {
        let mut params = ParamStore::new();
        let w = params.add("w", Tensor::from_vec(&[2], vec![0.5, -1.5]));
        let late = params.add("late", Tensor::from_vec(&[2], vec![2.0, 3.0]));
        let pass = |rows: &[f32], use_late: bool| {
            let mut tape = Tape::new();
            let x = tape.constant(Tensor::from_vec(&[rows.len() / 2, 2], rows.to_vec()));
            let wv = tape.param(&params, w);
            let sq = tape.mul(&x, &x);
            let mut y = tape.mul(&sq, &wv);
            if use_late {
                let lv = tape.param(&params, late);
                y = tape.mul(&y, &lv);
            }
            let loss = tape.sum_all(&y);
            tape.backward(&loss)
        };
        let mut grads = pass(&[1.0, 2.0], false);
        grads.accumulate(pass(&[3.0, 4.0], true));
        // ∂/∂w: [1² + 3²·2, 2² + 4²·3]; ∂/∂late: [3²·0.5, 4²·(−1.5)].
        assert_eq!(grads.param(w).unwrap().data(), &[19.0, 52.0]);
        assert_eq!(grads.param(late).unwrap().data(), &[4.5, -24.0]);
    }

    #[test]
    fn only_paths_to_a_parameter_are_recorded() {
        let (params, w, _) = store();
        let mut tape = Tape::new();
        let x = tape.constant(Tensor::ones(&[3]));
        let x2 = tape.mul(&x, &x); // data only: no node
        assert!(!x2.requires_grad());
        assert_eq!(tape.len(), 0);
        let wv = tape.param(&params, w);
        let y = tape.mul(&x2, &wv);
        assert!(y.requires_grad());
        assert_eq!(tape.len(), 2, "the parameter leaf and the mul");
    }

    #[test]
    fn inference_tape_records_nothing() {
        let (params, w, _) = store();
        let mut tape = Tape::inference();
        let wv = tape.param(&params, w);
        let mut y = tape.exp(&wv);
        for _ in 0..100 {
            y = tape.silu(&y);
        }
        assert_eq!(tape.len(), 0);
        assert!(!y.requires_grad());
    }

    #[test]
    fn graph_lists_ids_ops_and_shapes() {
        let (params, w, _) = store();
        let mut tape = Tape::new();
        let wv = tape.param(&params, w);
        let x = tape.constant(Tensor::ones(&[2, 3]));
        let y = tape.mul(&x, &wv);
        let _ = tape.sum(&y, &[1], false);
        let graph = tape.graph();
        let lines: Vec<&str> = graph.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("%0") && lines[0].contains("param #0") && lines[0].contains("[3]"));
        assert!(lines[1].contains("mul") && lines[1].contains("[2, 3] <- const [2, 3], %0 [3]"), "{graph}");
        assert!(lines[2].contains("sum") && lines[2].contains("[2] <- %1 [2, 3]"), "{graph}");
    }

    #[test]
    fn profile_counts_forward_and_backward_per_op() {
        let mut tape = Tape::new();
        tape.enable_profile();
        let x = tape.leaf(Tensor::ones(&[4]));
        let y = tape.exp(&x);
        let y = tape.exp(&y);
        let s = tape.sum_all(&y);
        tape.backward(&s);
        let report = tape.profile_report();
        let exp_row = report.lines().find(|l| l.starts_with("exp")).expect("exp is listed");
        assert_eq!(exp_row.split_whitespace().nth(1), Some("2"), "{report}");
        assert!(report.lines().any(|l| l.starts_with("sum")), "{report}");
        // Work outside the tape gets its own row, and the next op's forward no longer includes it.
        std::thread::sleep(std::time::Duration::from_millis(20));
        tape.profile_mark("outside");
        let x = tape.leaf(Tensor::ones(&[4]));
        tape.exp(&x);
        let report = tape.profile_report();
        let ms = |name: &str| -> f64 {
            let row = report.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name}: {report}"));
            row.split_whitespace().nth(2).unwrap().parse().unwrap()
        };
        assert!(ms("outside") >= 20.0 && ms("exp") < 20.0, "{report}");
    }

    #[test]
    fn finite_check_names_the_first_op_that_produced_a_nan() {
        let mut tape = Tape::new();
        tape.enable_finite_check();
        let x = tape.leaf(Tensor::from_vec(&[3], vec![1.0, -1.0, 2.0]));
        let y = tape.exp(&x); // finite
        assert_eq!(tape.first_non_finite(), None);
        let minus_y = tape.neg(&y);
        let z = tape.log(&minus_y); // log of negatives: NaN, at the third op
        let _ = tape.sqrt(&z); // NaN again, but not the first
        let first = tape.first_non_finite().unwrap();
        assert_eq!((first.op_index, first.op, first.shape.as_slice()), (3, "log", &[3][..]));
        assert!(first.params.is_empty());
        // An op with a parameter input names it.
        let (params, w, _) = store();
        let mut tape = Tape::new();
        tape.enable_finite_check();
        let wv = tape.param(&params, w);
        let x = tape.constant(Tensor::full(&[3], f32::INFINITY));
        let _ = tape.mul(&x, &wv);
        assert_eq!(tape.first_non_finite().unwrap().params, [w]);
    }

    #[test]
    fn backward_from_seeds_a_vector_jacobian_product() {
        let mut tape = Tape::new();
        let x = tape.leaf(Tensor::from_vec(&[2], vec![1.0, 2.0]));
        let y = tape.mul_scalar(&x, 3.0);
        let g = tape.backward_from(&y, Tensor::from_vec(&[2], vec![10.0, 100.0]));
        assert_eq!(g.leaf(&x).unwrap().data(), &[30.0, 300.0]);
    }

    #[test]
    #[should_panic(expected = "backward: the loss must hold one value, got shape [2]")]
    fn backward_needs_a_scalar() {
        let mut tape = Tape::new();
        let x = tape.leaf(Tensor::ones(&[2]));
        tape.backward(&x);
    }

    #[test]
    fn a_wrong_gradient_shape_is_caught_and_named() {
        struct BadShape;
        impl Op for BadShape {
            fn name(&self) -> &'static str {
                "bad_shape"
            }
            fn backward(&self, _: &Tensor, _: &[bool]) -> Vec<Option<Tensor>> {
                vec![Some(Tensor::zeros(&[5]))]
            }
        }
        let result = std::panic::catch_unwind(|| {
            let mut tape = Tape::new();
            let x = tape.leaf(Tensor::ones(&[2]));
            let y = tape.record(BadShape, &[&x], Tensor::zeros(&[]));
            tape.backward(&y);
        });
        let msg = *result.unwrap_err().downcast::<String>().unwrap();
        assert_eq!(msg, "bad_shape backward: gradient for input 0 has shape [5], the input has shape [2]");
    }
}
