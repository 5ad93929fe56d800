//! An MLP denoiser for low-dimensional data (2-D point clouds): the first model of the tutorial.
//!
//! ```text
//! temb = SiLU(Linear(sinusoidal(t, 64)))                      [B, H]
//! h    = SiLU(Linear([x_t | temb]))                            [B, H]
//! h    = h + SiLU(Linear(h) + Linear(temb))   × (depth − 1)   residual blocks, time added in each
//! ε̂    = Linear(h)                                             [B, D]
//! ```

use autograd::nn::Linear;
use autograd::{ParamStore, Tape, Var};
use rand::rngs::StdRng;

use crate::ddpm::Denoiser;
use crate::embedding::timestep_embedding;

const TIME_DIM: usize = 64;

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
        let input = Linear::new(params, "input", dim + hidden, hidden, rng);
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
    fn predict_eps(&self, tape: &mut Tape, params: &ParamStore, x_t: &Var, t: &[usize]) -> Var {
        let t: Vec<f32> = t.iter().map(|&v| v as f32).collect();
        let temb = tape.constant(timestep_embedding(&t, TIME_DIM, 10000.0));
        let temb = self.time.forward(tape, params, &temb);
        let temb = tape.silu(&temb);
        let h = tape.concat(&[x_t, &temb], 1);
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
