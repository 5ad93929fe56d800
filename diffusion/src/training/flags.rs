//! The flags of the main job (example 03), declared for `clap`: their doc comments are its `--help`.
//! Defaults marked "--quick" shrink in quick mode ([`crate::cli::Common::q`]).

use std::path::PathBuf;

use crate::cli::{in_range, Common, Given, Parser};
use crate::error::{Error, Result};
use crate::model::guidance::SCALE;
use crate::process::objective::TimeSampling;
use crate::process::schedule::TIMESTEPS;
use crate::sampling::sampler::SAMPLER_STEPS;
use crate::training::train::limits;

/// Train a U-Net on handwritten digits (the main job): flow matching, AdamW, warmup and cosine decay,
/// clipping, EMA.
#[derive(Parser, Debug)]
#[command(name = "03_train_mnist")]
pub struct TrainFlags {
    #[command(flatten)]
    pub common: Common,
    /// IDX images, gz or raw [default: the shipped data/mnist5k]
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// IDX labels of the images [default: the shipped data/mnist5k]
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// CIFAR-10 binary files instead (use --preset rgb32)
    #[arg(long)]
    pub cifar: Option<PathBuf>,
    /// Use only the first N images, 0 for all [default: 0; --quick: 64]
    #[arg(long, value_parser = in_range(0..=10_000_000usize))]
    pub limit: Option<usize>,
    /// U-Net preset: small, tiny, rgb32, diffusers-mnist (diffusers' UNet2DModel, see 11_diffusers)
    #[arg(long, default_value = "small")]
    pub preset: String,
    /// Training steps [default: 2250; --quick: 3]
    #[arg(long, value_parser = in_range(limits::STEPS))]
    pub steps: Option<usize>,
    /// Images per forward and backward pass [default: 32; --quick: 4]
    #[arg(long, value_parser = in_range(limits::BATCH))]
    pub batch: Option<usize>,
    /// Passes per step, their gradients averaged (gradient accumulation): a step learns from batch ×
    /// accumulate images in the memory of one batch [default: 2; --quick: 1]
    #[arg(long, value_parser = in_range(limits::ACCUMULATE))]
    pub accumulate: Option<usize>,
    /// Peak learning rate (AdamW)
    #[arg(long, default_value_t = 1e-3, value_parser = in_range(limits::LR))]
    pub lr: f32,
    /// Warmup steps [default: 200; --quick: 1]
    #[arg(long, value_parser = in_range(limits::WARMUP))]
    pub warmup: Option<usize>,
    /// AdamW decoupled weight decay
    #[arg(long, default_value_t = 0.0, value_parser = in_range(limits::WEIGHT_DECAY))]
    pub weight_decay: f32,
    /// Global gradient-norm bound (0: off)
    #[arg(long, default_value_t = 1.0, value_parser = in_range(limits::GRAD_CLIP))]
    pub grad_clip: f32,
    /// EMA decay of the weights sampled from; step n averages with min(this, (1 + n)/(10 + n)), diffusers'
    /// warmup, so over the main job's 2,250 steps any value from 0.99602 up gives the same weights
    #[arg(long, default_value_t = 0.999, value_parser = in_range(limits::EMA_DECAY))]
    pub ema: f32,
    /// Diffusion steps T
    #[arg(long, default_value_t = 1000, value_parser = in_range(TIMESTEPS))]
    pub timesteps: usize,
    /// Beta schedule: linear, cosine, sigmoid
    #[arg(long, default_value = "linear")]
    pub schedule: String,
    /// Network target of --objective diffusion: epsilon, x0, v
    #[arg(long, default_value = "epsilon")]
    pub prediction: String,
    /// flow: flow matching on the straight path (prediction and schedule flow); or diffusion (--prediction,
    /// --schedule) [default: flow; diffusion when --prediction or --schedule is given]
    #[arg(long)]
    pub objective: Option<String>,
    /// How the timesteps of a batch are drawn: uniform, logit-normal, logit-normal:<mean>,<std>
    /// [default: logit-normal with flow matching, uniform with diffusion]
    #[arg(long)]
    pub time_sampling: Option<String>,
    /// Min-SNR-gamma loss weighting (0: uniform)
    #[arg(long, default_value_t = 0.0, value_parser = in_range(limits::MIN_SNR_FLAG))]
    pub min_snr: f64,
    /// Learn p(x | label), for classifier-free guidance
    #[arg(long)]
    pub conditional: bool,
    /// Share of labels dropped in training (--conditional)
    #[arg(long, default_value_t = 0.1, value_parser = in_range(limits::LABEL_DROPOUT))]
    pub label_dropout: f32,
    /// Guidance scale of the grids (--conditional)
    #[arg(long, default_value_t = 3.0, value_parser = in_range(SCALE))]
    pub guidance: f32,
    /// Steps between sample grids [default: 500; --quick: 0]
    #[arg(long)]
    pub sample_every: Option<usize>,
    /// Images in each sample grid [default: 64; --quick: 4]
    #[arg(long, value_parser = in_range(limits::GRID_IMAGES))]
    pub grid: Option<usize>,
    /// SDE-DPM-Solver++(2M) steps of the grids [default: 20; --quick: 3]
    #[arg(long, value_parser = in_range(SAMPLER_STEPS))]
    pub sampler_steps: Option<usize>,
    /// Steps between checkpoints [default: 500; --quick: 2]
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Checkpoints to keep, newest first (0: all)
    #[arg(long, default_value_t = 3)]
    pub keep: usize,
    /// End this sitting after this step (0: run to the end)
    #[arg(long, default_value_t = 0)]
    pub stop_at: usize,
    /// Steps between evaluations with example 05's classifier (0: none)
    #[arg(long, default_value_t = 0)]
    pub eval_every: usize,
    /// Samples per evaluation
    #[arg(long, default_value_t = 128, value_parser = in_range(2..=10_000usize))]
    pub eval_count: usize,
    /// The judge of --eval-every
    #[arg(long, default_value = "out/05/classifier.safetensors")]
    pub classifier: PathBuf,
    /// Continue from a checkpoint (or a folder's newest)
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Print the time spent in each op of the training steps
    #[arg(long)]
    pub profile: bool,
}

impl TrainFlags {
    /// The (prediction, schedule, timestep sampling) of the run: flow matching sets the first two to flow
    /// (giving either as well is an error) and samples logit-normal unless `--time-sampling` says. Flow
    /// matching is the default (the README's recipe search); `--prediction` or `--schedule` alone mean
    /// diffusion.
    pub fn objective(&self, given: &Given) -> Result<(String, String, TimeSampling)> {
        let diffusion_flags = given.contains("prediction") || given.contains("schedule");
        let flow = match self.objective.as_deref() {
            None => !diffusion_flags,
            Some("diffusion") => false,
            Some("flow") => true,
            Some(other) => return Err(Error::Usage(format!("--objective {other:?}: unknown (diffusion, flow)"))),
        };
        if flow && diffusion_flags {
            return Err(Error::Usage("--objective flow sets --prediction flow and --schedule flow".into()));
        }
        let default = if flow { "logit-normal" } else { "uniform" };
        let name = self.time_sampling.as_deref().unwrap_or(default);
        let sampling = TimeSampling::from_name(name).ok_or_else(|| {
            Error::Usage(format!("--time-sampling {name:?}: unknown (uniform, logit-normal[:mean,std])"))
        })?;
        Ok(match flow {
            true => ("flow".into(), "flow".into(), sampling),
            false => (self.prediction.clone(), self.schedule.clone(), sampling),
        })
    }
}
