//! How good are the samples: a classifier trained with the engine judges them, and the Fréchet distance
//! between its features of samples and of real digits measures them.
//!
//! - [`classifier`]: the digit classifier, its training and its files.
//! - [`fid`]: the Fréchet distance of two Gaussians, with a symmetric matrix square root (Jacobi).
//! - [`evaluate`]: a reference set of real digits, its floor and ceiling, and the score of a set of samples.

pub mod classifier;
pub mod evaluate;
pub mod fid;
