//! Sample quality as numbers: the Fréchet distance between the classifier features of samples and of real
//! images ([`crate::eval::fid`]), the classifier's mean confidence, and the histogram of the classes it sees.
//!
//! A Fréchet distance depends on the features and on the sample count, so it is always reported with two
//! references measured the same way, with the same count n:
//! ```text
//! floor     real vs real: two disjoint random sets of n real images (what a perfect model would score)
//! ceiling   real vs noise: n images of N(0, 1) noise clipped to [−1, 1] (what the sampler starts from)
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use autograd::{ParamStore, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::data::order::shuffle;
use crate::error::{Error, Result};
use crate::eval::classifier::{self, select, Classifier, Judgement};
use crate::eval::fid::frechet_distance_of;
use crate::model::unet::UNet;
use crate::process::objective::Prediction;
use crate::process::schedule::NoiseSchedule;
use crate::sampling::sampler::{sample, Method, SamplerConfig, Spacing};

/// Evaluation during training: the Fréchet distance of `count` samples' classifier features (DPM-Solver++,
/// 10 steps) to real digits, with its floor and ceiling, and the classifier's confidence, printed and
/// appended to `eval.csv`.
pub struct DuringTraining {
    classifier: Classifier,
    params: ParamStore,
    reference: Reference,
    csv: PathBuf,
}

impl DuringTraining {
    /// The classifier from `classifier` (example 05's), a reference set of `count` of `images` (at most half
    /// of them), and a fresh `out/eval.csv`.
    pub fn new(classifier: &Path, images: &Tensor, count: usize, out: &Path) -> Result<DuringTraining> {
        if images.shape()[1..] != [1, 28, 28] {
            return Err(Error::Usage("--eval-every judges 1×28×28 digits only".into()));
        }
        let count = count.min(images.shape()[0] / 2);
        let (model, params) = classifier::load(classifier)
            .map_err(|e| Error::Usage(format!("{e} (--eval-every needs example 05's classifier: run it first)")))?;
        let reference = Reference::new(&model, &params, images, count, 0);
        let csv = out.join("eval.csv");
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let header = "step,frechet,floor,ceiling,confidence\n";
        std::fs::write(&csv, header).map_err(|e| Error::io(&csv, e))?;
        Ok(DuringTraining { classifier: model, params, reference, csv })
    }

    /// Samples from `weights` (seeded, the same noise every time), scores, prints and logs the row of `step`.
    pub fn evaluate(
        &self,
        model: &UNet,
        weights: &ParamStore,
        schedule: &NoiseSchedule,
        prediction: Prediction,
        step: usize,
    ) -> Result<()> {
        let config =
            SamplerConfig { method: Method::DpmSolver2M, steps: 10, spacing: Spacing::Linspace, clip_x0: Some(1.0) };
        let shape = [self.reference.count, 1, 28, 28];
        let images = sample(model, weights, schedule, prediction, &config, &shape, &mut StdRng::seed_from_u64(7));
        let (score, _) = self.reference.score(&self.classifier, &self.params, &images);
        println!(
            "eval at step {step}: Fréchet distance {:.1} (floor {:.1}, ceiling {:.1}), confidence {:.3}",
            score.frechet, self.reference.floor, self.reference.ceiling, score.confidence
        );
        let line = format!(
            "{step},{:.4},{:.4},{:.4},{:.4}\n",
            score.frechet, self.reference.floor, self.reference.ceiling, score.confidence
        );
        let mut file = std::fs::OpenOptions::new().append(true).open(&self.csv).map_err(|e| Error::io(&self.csv, e))?;
        file.write_all(line.as_bytes()).map_err(|e| Error::io(&self.csv, e))
    }
}

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

/// The samplers of an evaluation and their scores, one row per (sampler, network evaluations): written as
/// `evaluation.csv` and charted as distance against evaluations, one line per sampler.
#[derive(Default)]
pub struct SamplerTable {
    rows: Vec<(String, usize, Score, f64)>,
}

/// Colours of the chart's lines, one per sampler family, in `Method::short_name` order of appearance.
const LINE_COLORS: [[u8; 3]; 10] = [
    [0, 0, 0],
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [23, 190, 207],
];

impl SamplerTable {
    /// Adds the row of `sampler` at `evaluations` network evaluations that took `seconds`, and prints it.
    pub fn push(&mut self, sampler: &str, evaluations: usize, score: Score, seconds: f64) {
        let histogram = score.histogram.iter().map(|h| h.to_string()).collect::<Vec<_>>().join(" ");
        println!(
            "| {sampler} | {evaluations} | {:.3} | {:.3} | {histogram} | {seconds:.1} s |",
            score.frechet, score.confidence
        );
        self.rows.push((sampler.to_string(), evaluations, score, seconds));
    }

    /// Writes `out/evaluation.csv` and `out/frechet_vs_nfe.png` (the reference's floor dashed); returns
    /// their paths.
    pub fn write(&self, reference: &Reference, out: &Path) -> Result<(PathBuf, PathBuf)> {
        let mut csv = String::from("sampler,nfe,frechet,floor,ceiling,confidence,seconds,histogram\n");
        for (name, nfe, score, seconds) in &self.rows {
            let histogram = score.histogram.iter().map(|h| h.to_string()).collect::<Vec<_>>().join(" ");
            csv.push_str(&format!(
                "{name},{nfe},{:.4},{:.4},{:.4},{:.4},{seconds:.2},{histogram}\n",
                score.frechet, reference.floor, reference.ceiling, score.confidence
            ));
        }
        let csv_path = out.join("evaluation.csv");
        std::fs::write(&csv_path, csv).map_err(|e| Error::io(&csv_path, e))?;
        let mut names: Vec<&str> = Vec::new();
        for (name, ..) in &self.rows {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
        // The top of the chart: a little above the 80th percentile of the distances, so that a few very bad
        // rows (a sampler at too few steps) do not flatten the rest; those are drawn at the top edge.
        let mut sorted: Vec<f64> = self.rows.iter().map(|r| r.2.frechet).collect();
        sorted.sort_by(f64::total_cmp);
        let high = sorted.get((sorted.len().saturating_sub(1)) * 4 / 5).copied().unwrap_or(reference.floor);
        let y_max = high.max(reference.floor) * 1.15;
        let series: Vec<crate::plot::Series> = names
            .iter()
            .enumerate()
            .map(|(i, name)| crate::plot::Series {
                points: self
                    .rows
                    .iter()
                    .filter(|r| r.0 == *name)
                    .map(|r| (r.1 as f64, r.2.frechet.min(y_max)))
                    .collect(),
                color: LINE_COLORS[i % LINE_COLORS.len()],
            })
            .collect();
        let mut ticks: Vec<f64> = self.rows.iter().map(|r| r.1 as f64).collect();
        ticks.sort_by(f64::total_cmp);
        ticks.dedup();
        let chart = crate::plot::line_chart(&series, &ticks, y_max.max(1e-6), &[(reference.floor, [150, 150, 150])]);
        let chart_path = out.join("frechet_vs_nfe.png");
        chart.write_png(&chart_path)?;
        let legend: Vec<String> =
            names.iter().enumerate().map(|(i, n)| format!("{n} {:?}", LINE_COLORS[i % 10])).collect();
        println!("chart colours (RGB): {}", legend.join(", "));
        Ok((csv_path, chart_path))
    }
}
