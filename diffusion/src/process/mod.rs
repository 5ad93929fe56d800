//! The diffusion process: how data is noised, what the network is trained to predict about the noise, and
//! the DDPM paper's two algorithms written out plainly.
//!
//! - [`schedule`]: β_t, ᾱ_t and the forward process q(x_t | x_0).
//! - [`ddpm`]: Algorithms 1 and 2 of Ho et al. 2020, the ε-prediction loss and ancestral sampling, in plain
//!   code; the rest of the crate generalizes them.
//! - [`objective`]: the general training loss: ε, x₀ or v targets, min-SNR weighting.

pub mod ddpm;
pub mod objective;
pub mod schedule;
