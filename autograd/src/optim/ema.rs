use rayon::prelude::*;

use crate::params::ParamStore;

/// Exponential moving average of parameters: after the n-th optimizer step (n = 0, 1, …),
/// ```text
/// d_n = min(decay, (1 + n)/(10 + n))          warmup, as diffusers' EMAModel
/// shadow ← d_n · shadow + (1 − d_n) · p
/// ```
/// Diffusion models sample with the average (Ho et al. 2020 use decay 0.9999; Song & Ermon 2020, §3.5):
/// it smooths out the noise of the last steps of SGD. The warmup keeps the random initial weights from
/// lingering in the average: without it, 0.999ⁿ of the initialization is still in there after n steps
/// (61% after 500). Starts as a copy of the parameters.
#[derive(Clone, Debug)]
pub struct Ema {
    pub decay: f32,
    updates: u64,
    shadow: ParamStore,
}

impl Ema {
    pub fn new(params: &ParamStore, decay: f32) -> Ema {
        Ema { decay, updates: 0, shadow: params.clone() }
    }

    /// An average restored from a checkpoint: its parameters and the number of updates it has had.
    pub fn from_parts(shadow: ParamStore, decay: f32, updates: u64) -> Ema {
        Ema { decay, updates, shadow }
    }

    /// The decay the next update uses.
    pub fn current_decay(&self) -> f32 {
        let n = self.updates as f32;
        self.decay.min((1.0 + n) / (10.0 + n))
    }

    /// Number of updates so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    pub fn update(&mut self, params: &ParamStore) {
        let d = self.current_decay();
        self.updates += 1;
        let level = crate::cpu::simd();
        // Every tensor cut into chunks, all in one parallel loop (as Adam's step).
        let mut jobs = Vec::new();
        for ((_, shadow), (_, _, p)) in self.shadow.iter_mut().zip(params.iter()) {
            jobs.extend(shadow.data_mut().chunks_mut(1 << 15).zip(p.data().chunks(1 << 15)));
        }
        jobs.into_par_iter().for_each(|(shadow, p)| ema_chunk(level, shadow, p, d));
    }

    /// The averaged parameters, to sample or evaluate with.
    pub fn params(&self) -> &ParamStore {
        &self.shadow
    }

    pub fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.shadow
    }
}

/// shadow ← d · shadow + (1 − d) · p, element by element.
#[inline(always)]
fn ema_body(shadow: &mut [f32], p: &[f32], d: f32) {
    for (s, &v) in shadow.iter_mut().zip(p) {
        *s = d * *s + (1.0 - d) * v;
    }
}
crate::multiversion!(fn ema_chunk(level: Simd, shadow: &mut [f32], p: &[f32], d: f32) => ema_body);
