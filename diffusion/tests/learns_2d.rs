//! End to end: a DDPM on the ring of Gaussians really learns. The ε-loss falls, and the sampled points land
//! on the ring's modes (nearest-real-point distance within 2× of a fresh real draw, where pure noise is
//! about 100× away).

use autograd::optim::{Adam, Optimizer};
use autograd::{ParamStore, Tape};
use diffusion::data::toy2d::{mean_nearest_distance, Toy2d};
use diffusion::model::mlp::MlpDenoiser;
use diffusion::process::ddpm;
use diffusion::process::schedule::NoiseSchedule;
use rand::rngs::StdRng;
use rand::SeedableRng;

#[test]
fn ddpm_learns_the_ring() {
    let mut rng = StdRng::seed_from_u64(0);
    let schedule = NoiseSchedule::linear_scaled(100);
    let mut params = ParamStore::new();
    let model = MlpDenoiser::new(&mut params, 2, 128, 3, &mut rng);
    let mut opt = Adam::new(3e-3);
    let mut tape = Tape::new();
    let (mut first, mut last) = (0.0, 0.0);
    let steps = 3000;
    for step in 0..steps {
        let x_0 = Toy2d::Ring.sample(128, &mut rng);
        let loss = ddpm::eps_loss(&mut tape, &model, &params, &schedule, &x_0, &mut rng);
        let grads = tape.backward(&loss);
        opt.step(&mut params, &grads);
        if step < 100 {
            first += loss.value().item() / 100.0;
        } else if step >= steps - 100 {
            last += loss.value().item() / 100.0;
        }
    }
    assert!(last < 0.7 * first, "loss {first} → {last}");
    let samples = ddpm::sample(&model, &params, &schedule, &[500, 2], &mut rng);
    let reference = Toy2d::Ring.sample(500, &mut rng);
    let fresh = Toy2d::Ring.sample(500, &mut rng);
    let (d_samples, d_fresh) = (mean_nearest_distance(&samples, &reference), mean_nearest_distance(&fresh, &reference));
    eprintln!("samples {d_samples} fresh {d_fresh} loss {first} → {last}");
    assert!(d_samples < 2.0 * d_fresh, "samples {d_samples} vs fresh real {d_fresh}");
}
