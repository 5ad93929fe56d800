//! Sample quality as numbers: the Fréchet distance between the classifier features of samples and of real
//! images ([`crate::eval::fid`]), the classifier's mean confidence, and the histogram of the classes it sees.
//!
//! A Fréchet distance depends on the features and on the sample count, so it is always reported with two
//! references measured the same way, with the same count n:
//! ```text
//! floor     real vs real: two disjoint random sets of n real images (what a perfect model would score)
//! ceiling   real vs noise: n images of N(0, 1) noise clipped to [−1, 1] (what the sampler starts from)
//! ```

use autograd::{ParamStore, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::data::order::shuffle;
use crate::eval::classifier::{select, Classifier, Judgement};
use crate::eval::fid::frechet_distance_of;

/// The real features samples are compared with, and the floor and ceiling of the distance.
pub struct Reference {
    pub features: Tensor,
    pub floor: f64,
    pub ceiling: f64,
    pub count: usize,
}

/// How one set of samples scores.
#[derive(Clone, Debug)]
pub struct Score {
    pub frechet: f64,
    pub confidence: f64,
    pub histogram: Vec<usize>,
}

impl Reference {
    /// Draws two disjoint sets of `count` images from `real` [N ≥ 2·count, 1, 28, 28] (seeded) and `count`
    /// noise images, and measures the floor and the ceiling.
    #[track_caller]
    pub fn new(classifier: &Classifier, params: &ParamStore, real: &Tensor, count: usize, seed: u64) -> Reference {
        let n = real.shape()[0];
        assert!(2 * count <= n, "Reference: {count} samples need {} real images, {n} given", 2 * count);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut order: Vec<usize> = (0..n).collect();
        shuffle(&mut order, &mut rng);
        let a = classifier.judge(params, &select(real, &order[..count])).features;
        let b = classifier.judge(params, &select(real, &order[count..2 * count])).features;
        let mut noise_shape = real.shape().to_vec();
        noise_shape[0] = count;
        let noise = Tensor::randn(&noise_shape, &mut rng);
        let noise = Tensor::from_vec(&noise_shape, noise.data().iter().map(|v| v.clamp(-1.0, 1.0)).collect());
        let c = classifier.judge(params, &noise).features;
        Reference { floor: frechet_distance_of(&a, &b), ceiling: frechet_distance_of(&a, &c), features: a, count }
    }

    /// Scores `images` [n, 1, 28, 28] against the reference.
    pub fn score(&self, classifier: &Classifier, params: &ParamStore, images: &Tensor) -> (Score, Judgement) {
        let judged = classifier.judge(params, images);
        let score = Score {
            frechet: frechet_distance_of(&self.features, &judged.features),
            confidence: judged.mean_confidence(),
            histogram: judged.histogram(),
        };
        (score, judged)
    }
}
