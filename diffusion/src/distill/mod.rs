//! Distillation: a trained model drawn in a few network evaluations.
//!
//! - [`progressive`]: progressive distillation (Salimans & Ho 2022): a student learns to take in one DDIM
//!   step what its teacher takes in two; the student of one round is the teacher of the next, halving the
//!   steps each round (64 → 32 → … → 1).

pub mod progressive;
