//! An MLP denoiser for low-dimensional data (2-D point clouds): the first model of the tutorial.
//!
//! ```text
//! temb = SiLU(Linear(sinusoidal(t, 64)))                      [B, H]
//! φ(x) = [x, sin(2ᵏ x), cos(2ᵏ x) for k = 0 … 7]               [B, D·17] Fourier features of the input
//! h    = SiLU(Linear([φ(x_t) | temb]))                         [B, H]
//! h    = h + SiLU(Linear(h) + Linear(temb))   × (depth − 1)   residual blocks, time added in each
//! ε̂    = Linear(h)                                             [B, D]
//! ```
//! The Fourier features (Tancik et al. 2020, "Fourier Features Let Networks Learn High Frequency Functions
//! in Low Dimensional Domains") let a small MLP represent the sharp edges of a 2-D shape; without them the
//! learned noise prediction is too smooth and samples leak into the gaps between the moons. They are a
//! fixed function of the input, computed outside the tape (no gradient flows into x_t).

use autograd::nn::Linear;
use autograd::{ParamStore, Tape, Tensor, Var};
use rand::rngs::StdRng;

use crate::model::denoiser::Denoiser;
use crate::model::embedding::timestep_embedding;

const TIME_DIM: usize = 64;
const FOURIER_OCTAVES: usize = 8;

/// [x, sin(2ᵏx), cos(2ᵏx)] per coordinate, k = 0 … FOURIER_OCTAVES−1: [B, D] → [B, D·(1 + 2·octaves)].
fn fourier_features(x: &Tensor) -> Tensor {
    let (b, d) = (x.shape()[0], x.shape()[1]);
    let width = d * (1 + 2 * FOURIER_OCTAVES);
    let mut out = Vec::with_capacity(b * width);
    for row in x.data().chunks(d) {
        out.extend_from_slice(row);
        for k in 0..FOURIER_OCTAVES {
            let f = (1 << k) as f32;
            out.extend(row.iter().map(|v| (f * v).sin()));
            out.extend(row.iter().map(|v| (f * v).cos()));
        }
    }
    Tensor::from_vec(&[b, width], out)
}

pub struct MlpDenoiser {
    time: Linear,
    input: Linear,
    blocks: Vec<(Linear, Linear)>,
    output: Linear,
}

impl MlpDenoiser {
    /// `dim`: data dimension D; `hidden`: width H; `depth`: number of hidden layers (≥ 1).
    pub fn new(params: &mut ParamStore, dim: usize, hidden: usize, depth: usize, rng: &mut StdRng) -> MlpDenoiser {
        let time = Linear::new(params, "time", TIME_DIM, hidden, rng);
        let input = Linear::new(params, "input", dim * (1 + 2 * FOURIER_OCTAVES) + hidden, hidden, rng);
        let blocks = (1..depth.max(1))
            .map(|i| {
                let dense = Linear::new(params, &format!("blocks.{i}.dense"), hidden, hidden, rng);
                let temb = Linear::new(params, &format!("blocks.{i}.time"), hidden, hidden, rng);
                (dense, temb)
            })
            .collect();
        let output = Linear::new(params, "output", hidden, dim, rng);
        MlpDenoiser { time, input, blocks, output }
    }
}

impl Denoiser for MlpDenoiser {
    fn predict(&self, tape: &mut Tape, params: &ParamStore, x_t: &Var, t: &[usize]) -> Var {
        let t: Vec<f32> = t.iter().map(|&v| v as f32).collect();
        let temb = tape.constant(timestep_embedding(&t, TIME_DIM, 10000.0));
        let temb = self.time.forward(tape, params, &temb);
        let temb = tape.silu(&temb);
        let features = tape.constant(fourier_features(x_t.value()));
        let h = tape.concat(&[&features, &temb], 1);
        let h = self.input.forward(tape, params, &h);
        let mut h = tape.silu(&h);
        for (dense, time) in &self.blocks {
            let a = dense.forward(tape, params, &h);
            let b = time.forward(tape, params, &temb);
            let s = tape.add(&a, &b);
            let s = tape.silu(&s);
            h = tape.add(&h, &s);
        }
        self.output.forward(tape, params, &h)
    }
}
