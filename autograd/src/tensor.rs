//! `Tensor`: an f32 array, contiguous and row-major, with a shape.
//!
//! The data lives behind an `Arc`, so cloning a tensor is cheap (the tape clones the tensors an op saves for
//! its backward; a parameter is bound to each step's tape by a clone). Writing through [`Tensor::data_mut`]
//! copies the buffer only if someone else still holds it (copy on write), so a value never changes under a
//! reader's feet.

use std::fmt;
use std::sync::{Arc, Mutex};

use ndarray::{ArrayD, IxDyn};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

/// An f32 tensor: a shape and `shape.iter().product()` values in row-major order.
#[derive(Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Arc<Storage>,
}

/// A tensor's values. When the last tensor holding them drops, the buffer goes back to the [`crate::pool`].
/// `.1` holds values derived from them and kept with them ([`Tensor::derived`]): emptied whenever the values
/// change, not copied with them, not compared.
struct Storage(Vec<f32>, Mutex<Vec<(Derived, Arc<Vec<f32>>)>>);

/// What a derived buffer is (the kernel's name) and the parameters it was made with.
pub type Derived = (&'static str, [usize; 4]);

impl Storage {
    fn new(values: Vec<f32>) -> Storage {
        Storage(values, Mutex::new(Vec::new()))
    }

    /// Drops the derived buffers, handing the pool back those it lent.
    fn forget_derived(&mut self) {
        let derived = self.1.get_mut().unwrap_or_else(|e| e.into_inner());
        for (_, buffer) in derived.drain(..) {
            if let Ok(buffer) = Arc::try_unwrap(buffer) {
                crate::pool::give(buffer);
            }
        }
    }
}

impl PartialEq for Storage {
    fn eq(&self, other: &Storage) -> bool {
        self.0 == other.0
    }
}

impl Clone for Storage {
    fn clone(&self) -> Self {
        let mut v = crate::pool::take(self.0.len());
        v.extend_from_slice(&self.0);
        Storage::new(v)
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        self.forget_derived();
        crate::pool::give(std::mem::take(&mut self.0));
    }
}

impl Tensor {
    /// A tensor from its shape and row-major values.
    #[track_caller]
    pub fn from_vec(shape: &[usize], data: Vec<f32>) -> Tensor {
        let numel: usize = shape.iter().product();
        assert!(data.len() == numel, "Tensor::from_vec: shape {shape:?} holds {numel} values, got {}", data.len());
        Tensor { shape: shape.to_vec(), data: Arc::new(Storage::new(data)) }
    }

    /// A 0-dimensional tensor holding one value.
    pub fn scalar(value: f32) -> Tensor {
        Tensor::from_vec(&[], vec![value])
    }

    pub fn full(shape: &[usize], value: f32) -> Tensor {
        Tensor::from_vec(shape, crate::pool::take_filled(shape.iter().product(), value))
    }

    pub fn zeros(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 0.0)
    }

    pub fn ones(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 1.0)
    }

    /// Standard normal draws N(0, 1) from `rng`.
    pub fn randn(shape: &[usize], rng: &mut StdRng) -> Tensor {
        let n = shape.iter().product();
        let data = (0..n).map(|_| StandardNormal.sample(rng)).collect();
        Tensor::from_vec(shape, data)
    }

    /// Uniform draws from [low, high) taken from `rng`.
    pub fn rand_uniform(shape: &[usize], low: f32, high: f32, rng: &mut StdRng) -> Tensor {
        let n = shape.iter().product();
        let data = (0..n).map(|_| low + (high - low) * rng.random::<f32>()).collect();
        Tensor::from_vec(shape, data)
    }

    /// Standard normal draws from a fresh generator seeded with `seed`.
    pub fn randn_seeded(shape: &[usize], seed: u64) -> Tensor {
        Tensor::randn(shape, &mut StdRng::seed_from_u64(seed))
    }

    /// Uniform [low, high) draws from a fresh generator seeded with `seed`.
    pub fn rand_uniform_seeded(shape: &[usize], low: f32, high: f32, seed: u64) -> Tensor {
        Tensor::rand_uniform(shape, low, high, &mut StdRng::seed_from_u64(seed))
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn ndim(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.data.0.len()
    }

    pub fn data(&self) -> &[f32] {
        &self.data.0
    }

    /// Mutable access to the values; copies them first if another tensor shares the buffer. Forgets every
    /// buffer derived from them ([`Tensor::derived`]).
    pub fn data_mut(&mut self) -> &mut [f32] {
        let storage = Arc::make_mut(&mut self.data);
        storage.forget_derived();
        storage.0.as_mut_slice()
    }

    /// A buffer computed from these values by `make`, kept with them: the first call for a `key` runs
    /// `make`, later ones (from any tensor sharing these values) return the same buffer, until the values
    /// change ([`Tensor::data_mut`] forgets it). For work that depends on the values only and is needed again
    /// and again, such as a convolution's weights rearranged for its kernel while a sampler calls the same
    /// network 50 times. `make` must be a pure function of the values and the key.
    pub fn derived(&self, key: Derived, make: impl FnOnce() -> Vec<f32>) -> Arc<Vec<f32>> {
        let lock = || self.data.1.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, buffer)) = lock().iter().find(|(k, _)| *k == key) {
            return buffer.clone();
        }
        // Made outside the lock (`make` may run parallel loops); if another thread made it meanwhile, the
        // first one stays.
        let made = Arc::new(make());
        let mut derived = lock();
        if let Some((_, buffer)) = derived.iter().find(|(k, _)| *k == key) {
            return buffer.clone();
        }
        derived.push((key, made.clone()));
        made
    }

    /// The values as a `Vec`, without a copy when this tensor is their only owner.
    pub fn into_vec(self) -> Vec<f32> {
        match Arc::try_unwrap(self.data) {
            Ok(mut storage) => std::mem::take(&mut storage.0),
            Err(shared) => shared.0.clone(),
        }
    }

    /// The same values under another shape with the same number of elements (no copy).
    #[track_caller]
    pub fn reshape(&self, shape: &[usize]) -> Tensor {
        let numel: usize = shape.iter().product();
        assert!(
            numel == self.numel(),
            "reshape: cannot view x {:?} ({} values) as {shape:?} ({numel} values)",
            self.shape,
            self.numel()
        );
        Tensor { shape: shape.to_vec(), data: self.data.clone() }
    }

    /// Row-major offset of a multi-index.
    #[track_caller]
    fn offset(&self, index: &[usize]) -> usize {
        assert!(
            index.len() == self.shape.len() && index.iter().zip(&self.shape).all(|(i, n)| i < n),
            "Tensor index {index:?} is out of bounds for shape {:?}",
            self.shape
        );
        index.iter().zip(&self.shape).fold(0, |off, (i, n)| off * n + i)
    }

    /// The element at a multi-index, e.g. `t.at(&[n, c, h, w])`.
    #[track_caller]
    pub fn at(&self, index: &[usize]) -> f32 {
        self.data()[self.offset(index)]
    }

    #[track_caller]
    pub fn set(&mut self, index: &[usize], value: f32) {
        let off = self.offset(index);
        self.data_mut()[off] = value;
    }

    /// The value of a one-element tensor.
    #[track_caller]
    pub fn item(&self) -> f32 {
        assert!(self.numel() == 1, "item: tensor of shape {:?} is not a single value", self.shape);
        self.data()[0]
    }

    pub fn to_ndarray(&self) -> ArrayD<f32> {
        ArrayD::from_shape_vec(IxDyn(&self.shape), self.data().to_vec()).expect("shape matches length")
    }

    /// Copies any ndarray (whatever its strides) into a contiguous row-major tensor.
    pub fn from_ndarray(array: &ArrayD<f32>) -> Tensor {
        Tensor::from_vec(array.shape(), array.iter().copied().collect())
    }

    /// Largest absolute difference to another tensor of the same shape.
    #[track_caller]
    pub fn max_abs_diff(&self, other: &Tensor) -> f32 {
        assert_eq!(self.shape, other.shape, "max_abs_diff: shapes differ");
        self.data().iter().zip(other.data()).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
    }

    /// True if every value is finite (no NaN, no ±inf).
    pub fn all_finite(&self) -> bool {
        self.data().iter().all(|v| v.is_finite())
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 8;
        write!(f, "Tensor{:?} [", self.shape)?;
        for (i, v) in self.data().iter().take(SHOWN).enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{v:.4}")?;
        }
        if self.numel() > SHOWN {
            write!(f, ", … {} more", self.numel() - SHOWN)?;
        }
        write!(f, "]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A derived buffer is made once per key, shared by clones, and forgotten when the values change.
    #[test]
    fn derived_buffers_are_kept_until_the_values_change() {
        let mut t = Tensor::from_vec(&[3], vec![1.0, 2.0, 3.0]);
        let made = std::cell::Cell::new(0);
        let double = |t: &Tensor| {
            t.derived(("double", [0; 4]), || {
                made.set(made.get() + 1);
                t.data().iter().map(|v| 2.0 * v).collect()
            })
        };
        assert_eq!(*double(&t), vec![2.0, 4.0, 6.0]);
        assert_eq!(*double(&t.clone()), vec![2.0, 4.0, 6.0]);
        assert_eq!(made.get(), 1, "made once, for both the tensor and its clone");
        assert_eq!(*t.derived(("other", [1, 0, 0, 0]), || vec![7.0]), vec![7.0], "another key, another buffer");
        t.data_mut()[0] = 10.0;
        assert_eq!(*double(&t), vec![20.0, 4.0, 6.0], "made again from the new values");
        assert_eq!(made.get(), 2);
        assert_eq!(t, Tensor::from_vec(&[3], vec![10.0, 2.0, 3.0]), "derived buffers take no part in ==");
    }

    #[test]
    fn ndarray_round_trip_keeps_shape_and_order() {
        let t = Tensor::from_vec(&[2, 3], vec![0., 1., 2., 3., 4., 5.]);
        let a = t.to_ndarray();
        assert_eq!(a[[1, 0]], 3.0);
        // A transposed (non-contiguous) view comes back contiguous in its own row-major order.
        let back = Tensor::from_ndarray(&a.t().to_owned().into_dyn());
        assert_eq!(back.shape(), &[3, 2]);
        assert_eq!(back.data(), &[0., 3., 1., 4., 2., 5.]);
    }

    #[test]
    fn element_access_is_row_major() {
        let mut t = Tensor::zeros(&[2, 3, 4]);
        t.set(&[1, 2, 3], 7.0);
        assert_eq!(t.data()[12 + 8 + 3], 7.0);
        assert_eq!(t.at(&[1, 2, 3]), 7.0);
    }

    #[test]
    fn clone_is_copy_on_write() {
        let a = Tensor::ones(&[4]);
        let mut b = a.clone();
        b.data_mut()[0] = 5.0;
        assert_eq!(a.data()[0], 1.0);
        assert_eq!(b.data()[0], 5.0);
    }

    #[test]
    fn seeded_draws_repeat_and_have_the_right_moments() {
        let a = Tensor::randn_seeded(&[10_000], 3);
        assert_eq!(a, Tensor::randn_seeded(&[10_000], 3));
        let mean = a.data().iter().sum::<f32>() / 10_000.0;
        let var = a.data().iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / 10_000.0;
        assert!(mean.abs() < 0.05 && (var - 1.0).abs() < 0.05, "mean {mean} var {var}");
        let u = Tensor::rand_uniform_seeded(&[10_000], -2.0, 3.0, 4);
        assert!(u.data().iter().all(|&v| (-2.0..3.0).contains(&v)));
    }

    #[test]
    #[should_panic(expected = "Tensor::from_vec: shape [2, 3] holds 6 values, got 5")]
    fn from_vec_rejects_wrong_length() {
        Tensor::from_vec(&[2, 3], vec![0.0; 5]);
    }
}
