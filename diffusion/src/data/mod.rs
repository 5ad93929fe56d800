//! Datasets and the order a run visits them in.
//!
//! - [`idx`]: MNIST and Fashion-MNIST files (IDX, gzipped or raw), and the shipped digits.
//! - [`cifar`]: CIFAR-10's binary version.
//! - [`toy2d`]: 2-D point clouds (moons, swiss roll, Gaussians) and a quality number for samples of them.
//! - [`order`]: random streams keyed by (seed, index), epoch orders and shuffles.

pub mod cifar;
pub mod idx;
pub mod order;
pub mod toy2d;
