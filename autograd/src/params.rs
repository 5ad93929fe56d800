//! Parameters: tensors that live across training steps, each with a stable, readable name
//! (`down1.res.conv1.weight`), kept in a [`ParamStore`] and bound to each step's tape with
//! [`crate::Tape::param`].

use crate::tensor::Tensor;

/// Handle of a parameter in its [`ParamStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(pub usize);

/// Named parameter tensors, in the order they were added.
#[derive(Clone, Default, Debug)]
pub struct ParamStore {
    names: Vec<String>,
    values: Vec<Tensor>,
}

impl ParamStore {
    pub fn new() -> ParamStore {
        ParamStore::default()
    }

    /// Adds a parameter. Names must be unique.
    #[track_caller]
    pub fn add(&mut self, name: impl Into<String>, value: Tensor) -> ParamId {
        let name = name.into();
        assert!(!self.names.contains(&name), "ParamStore::add: a parameter named {name:?} already exists");
        self.names.push(name);
        self.values.push(value);
        ParamId(self.values.len() - 1)
    }

    pub fn get(&self, id: ParamId) -> &Tensor {
        &self.values[id.0]
    }

    pub fn get_mut(&mut self, id: ParamId) -> &mut Tensor {
        &mut self.values[id.0]
    }

    pub fn name(&self, id: ParamId) -> &str {
        &self.names[id.0]
    }

    /// The parameter with this name, if any.
    pub fn find(&self, name: &str) -> Option<ParamId> {
        self.names.iter().position(|n| n == name).map(ParamId)
    }

    /// Number of parameter tensors.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Total number of scalar parameters.
    pub fn num_elements(&self) -> usize {
        self.values.iter().map(Tensor::numel).sum()
    }

    pub fn ids(&self) -> impl Iterator<Item = ParamId> {
        (0..self.values.len()).map(ParamId)
    }

    /// (id, value) for every parameter in order, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (ParamId, &mut Tensor)> {
        self.values.iter_mut().enumerate().map(|(i, v)| (ParamId(i), v))
    }

    /// (id, name, value) for every parameter in order.
    pub fn iter(&self) -> impl Iterator<Item = (ParamId, &str, &Tensor)> {
        self.names.iter().zip(&self.values).enumerate().map(|(i, (n, v))| (ParamId(i), n.as_str(), v))
    }
}
