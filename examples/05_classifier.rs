//! # 05 — A digit classifier, the judge of the samples
//!
//! Trains the small convolutional classifier of `diffusion/src/eval/classifier.rs` with the engine on the shipped
//! MNIST digits, holding out the last 50 of each digit (500 images) to measure its accuracy, or on all of them
//! when `--test-images`/`--test-labels` name a separate test set (full MNIST's t10k files, say). Writes
//! `out/05/classifier.safetensors`, which examples 06 (evaluation) and 07 (guidance) use to judge samples.
//!
//! ```text
//! cargo run --release --example 05_classifier
//! cargo run --release --example 05_classifier -- --quick
//! ```

use std::path::PathBuf;
use std::time::Instant;

use diffusion::cli::{self, exit_on_error, in_range, Common, Parser};
use diffusion::data::idx::{read_labeled, shipped_mnist_dir};
use diffusion::eval::classifier::{save, select, split_idx, train_classifier, ClassifierTraining, Split};
use diffusion::plot::image_grid;
use diffusion::Result;

fn main() {
    exit_on_error(run);
}

fn run() -> Result<()> {
    let flags: Flags = cli::parse()?;
    let c = &flags.common;
    let (quick, seed, out, data) = (c.quick, c.seed, c.out("05/classifier.safetensors"), shipped_mnist_dir());
    let images = flags.images.unwrap_or_else(|| data.join("images-idx3-ubyte.gz"));
    let labels = flags.labels.unwrap_or_else(|| data.join("labels-idx1-ubyte.gz"));
    let (test_images, test_labels) = (flags.test_images.unwrap_or_default(), flags.test_labels.unwrap_or_default());
    let epochs = flags.epochs.unwrap_or(c.q(25, 1));

    let mut split = if test_images.is_empty() {
        split_idx(&images, &labels, 50)?
    } else {
        let train = split_idx(&images, &labels, 0)?;
        let test = read_labeled(&test_images, &test_labels)?;
        Split {
            test_images: test.images.to_tensor(),
            test_labels: test.labels.iter().map(|&l| l as usize).collect(),
            ..train
        }
    };
    if quick {
        let few = 256 * 784;
        split.train_images = autograd::Tensor::from_vec(&[256, 1, 28, 28], split.train_images.data()[..few].to_vec());
        split.train_labels.truncate(256);
    }
    println!(
        "training on {} images, testing on {} held-out images; {epochs} epochs",
        split.train_labels.len(),
        split.test_labels.len()
    );
    let config = ClassifierTraining { epochs, seed, ..ClassifierTraining::default() };
    let started = Instant::now();
    let (model, params) = train_classifier(&split.train_images, &split.train_labels, 10, &config, |epoch, loss| {
        println!("epoch {epoch:>2}: mean loss {loss:.4} ({:.0} s)", started.elapsed().as_secs_f64());
    });
    let judged = model.judge(&params, &split.test_images);
    let accuracy = judged.accuracy(&split.test_labels);
    println!(
        "held-out accuracy {:.2}% ({} of {}), mean confidence {:.3}",
        100.0 * accuracy,
        (accuracy * split.test_labels.len() as f64).round(),
        split.test_labels.len(),
        judged.mean_confidence()
    );
    // The digits it gets wrong, as a picture: often digits a person would hesitate over too.
    let wrong: Vec<usize> = judged
        .predicted()
        .iter()
        .zip(&split.test_labels)
        .enumerate()
        .filter(|(_, (p, l))| p != l)
        .map(|(i, _)| i)
        .collect();
    if !wrong.is_empty() {
        let predicted = judged.predicted();
        let list: Vec<String> = wrong.iter().map(|&i| format!("{}→{}", split.test_labels[i], predicted[i])).collect();
        println!("wrong (label→predicted): {}", list.join(" "));
        let path = out.with_file_name("misclassified.png");
        image_grid(&select(&split.test_images, &wrong), wrong.len().min(10), 3).write_png(&path)?;
        println!("wrote {}", path.display());
    }
    save(&out, &params, 10, &[("held_out_accuracy", format!("{accuracy:.4}")), ("epochs", epochs.to_string())])?;
    println!("wrote {}", out.display());
    Ok(())
}

/// Train the digit classifier that example 06 judges samples with.
#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    common: Common,
    /// Training IDX images [default: the shipped data/mnist5k]
    #[arg(long)]
    images: Option<PathBuf>,
    /// Training IDX labels [default: the shipped data/mnist5k]
    #[arg(long)]
    labels: Option<PathBuf>,
    /// A separate test set [default: hold out 50 per digit]
    #[arg(long)]
    test_images: Option<String>,
    /// Its labels
    #[arg(long)]
    test_labels: Option<String>,
    /// Passes over the training images [default: 25; --quick: 1]
    #[arg(long, value_parser = in_range(1..=10_000usize))]
    epochs: Option<usize>,
}
