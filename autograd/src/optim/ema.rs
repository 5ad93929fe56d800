use crate::params::ParamStore;

/// Exponential moving average of parameters: after each optimizer step,
/// ```text
/// shadow ← decay · shadow + (1 − decay) · p
/// ```
/// Diffusion models sample with the average (Ho et al. 2020 use decay 0.9999; Song & Ermon 2020, §3.5):
/// it smooths out the noise of the last steps of SGD. Starts as a copy of the parameters.
#[derive(Clone, Debug)]
pub struct Ema {
    pub decay: f32,
    shadow: ParamStore,
}

impl Ema {
    pub fn new(params: &ParamStore, decay: f32) -> Ema {
        Ema { decay, shadow: params.clone() }
    }

    pub fn update(&mut self, params: &ParamStore) {
        let d = self.decay;
        for id in params.ids() {
            let p = params.get(id).data();
            for (s, &v) in self.shadow.get_mut(id).data_mut().iter_mut().zip(p) {
                *s = d * *s + (1.0 - d) * v;
            }
        }
    }

    /// The averaged parameters, to sample or evaluate with.
    pub fn params(&self) -> &ParamStore {
        &self.shadow
    }

    pub fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.shadow
    }
}
