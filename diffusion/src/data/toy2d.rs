//! 2-D point-cloud datasets for the first diffusion example, and a sample-quality number for them.

use autograd::Tensor;
use rand::rngs::StdRng;
use rand::RngExt;
use rand_distr::{Distribution, StandardNormal};
use std::f32::consts::PI;

/// The shapes example 02 can learn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Toy2d {
    /// Two interleaving half circles (scikit-learn's `make_moons`, noise 0.05), standardized.
    Moons,
    /// A 2-D swiss roll: a spiral r = θ for θ ∈ [1.5π, 4.5π] (noise 0.25), scaled by 1/5.
    SwissRoll,
    /// Eight Gaussians (σ = 0.05) evenly spaced on a circle of radius 2.
    Ring,
}

impl Toy2d {
    pub const ALL: [Toy2d; 3] = [Toy2d::Moons, Toy2d::SwissRoll, Toy2d::Ring];

    pub fn name(self) -> &'static str {
        match self {
            Toy2d::Moons => "moons",
            Toy2d::SwissRoll => "swiss-roll",
            Toy2d::Ring => "ring",
        }
    }

    pub fn from_name(name: &str) -> Option<Toy2d> {
        Toy2d::ALL.into_iter().find(|d| d.name() == name)
    }

    /// `n` points [n, 2].
    pub fn sample(self, n: usize, rng: &mut StdRng) -> Tensor {
        let mut normal = || -> f32 { StandardNormal.sample(rng) };
        let mut pts = Vec::with_capacity(2 * n);
        for i in 0..n {
            let (x, y) = match self {
                Toy2d::Moons => {
                    let u: f32 = (i as f32 + 0.5) / n as f32; // even coverage, then shuffled by noise
                    let theta = PI * ((2.0 * u) % 1.0);
                    let (x, y) =
                        if u < 0.5 { (theta.cos(), theta.sin()) } else { (1.0 - theta.cos(), 0.5 - theta.sin()) };
                    // Standardize: make_moons has mean (0.5, 0.25) and std about (0.87, 0.5).
                    ((x + 0.05 * normal() - 0.5) / 0.87, (y + 0.05 * normal() - 0.25) / 0.5)
                }
                Toy2d::SwissRoll => {
                    let theta = 1.5 * PI * (1.0 + 2.0 * (i as f32 + 0.5) / n as f32);
                    ((theta * theta.cos() + 0.25 * normal()) / 5.0, (theta * theta.sin() + 0.25 * normal()) / 5.0)
                }
                Toy2d::Ring => {
                    let k = (i % 8) as f32;
                    let a = 2.0 * PI * k / 8.0;
                    (2.0 * a.cos() + 0.05 * normal(), 2.0 * a.sin() + 0.05 * normal())
                }
            };
            pts.push(x);
            pts.push(y);
        }
        shuffle_rows(pts, n, rng)
    }
}

fn shuffle_rows(mut pts: Vec<f32>, n: usize, rng: &mut StdRng) -> Tensor {
    for i in (1..n).rev() {
        let j = rng.random_range(0..=i);
        pts.swap(2 * i, 2 * j);
        pts.swap(2 * i + 1, 2 * j + 1);
    }
    Tensor::from_vec(&[n, 2], pts)
}

/// Mean over the rows of `points` [n, 2] of the distance to the nearest row of `reference` [m, 2].
///
/// How to read it: compute it for generated samples and for a fresh draw of real points of the same size,
/// against the same reference. Samples that lie on the data's shape score close to the fresh draw; samples
/// smeared off the shape score higher.
pub fn mean_nearest_distance(points: &Tensor, reference: &Tensor) -> f32 {
    let r = reference.data();
    let total: f64 = points
        .data()
        .chunks(2)
        .map(|p| {
            r.chunks(2).map(|q| (p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2)).fold(f32::INFINITY, f32::min).sqrt()
                as f64
        })
        .sum();
    (total / points.shape()[0] as f64) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn datasets_have_their_shapes() {
        let mut rng = StdRng::seed_from_u64(0);
        let ring = Toy2d::Ring.sample(800, &mut rng);
        // Every ring point is within 4σ of radius 2.
        assert!(ring.data().chunks(2).all(|p| ((p[0].hypot(p[1])) - 2.0).abs() < 0.3));
        let moons = Toy2d::Moons.sample(2000, &mut rng);
        let mean_x = moons.data().chunks(2).map(|p| p[0]).sum::<f32>() / 2000.0;
        assert!(mean_x.abs() < 0.05, "standardized moons have mean ≈ 0, got {mean_x}");
    }

    #[test]
    fn nearest_distance_separates_real_from_noise() {
        let mut rng = StdRng::seed_from_u64(1);
        let reference = Toy2d::Moons.sample(1000, &mut rng);
        let fresh = Toy2d::Moons.sample(500, &mut rng);
        let noise = Tensor::randn(&[500, 2], &mut rng);
        let (real, fake) = (mean_nearest_distance(&fresh, &reference), mean_nearest_distance(&noise, &reference));
        assert!(fake > 3.0 * real, "real {real}, noise {fake}");
    }
}
