//! What the training loop keeps and writes besides the parameters: the batches in their shuffled order,
//! AdamW's moments and the EMA, the loss log, the progress line, and the diagnosis of a divergence.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use autograd::optim::{Adam, Ema};
use autograd::{ParamStore, Tape, Tensor};

use super::{Objective, TrainConfig};
use crate::data::order::{epoch_order, pass_rng, Stream};
use crate::error::{Error, Result};
use crate::model::denoiser::Denoiser;
use crate::process::schedule::NoiseSchedule;
use crate::training::checkpoint::Checkpoint;

/// The training progress: step, loss, images/s, elapsed and ETA. On a terminal an `indicatif` bar,
/// redrawn in place; otherwise (a log file, CI) a plain line every 10 s and at the end.
pub(super) struct Progress {
    bar: Option<indicatif::ProgressBar>,
    first_step: usize,
    started: Instant,
    last_print: Instant,
}

impl Progress {
    pub(super) fn new(first_step: usize, total: usize) -> Progress {
        let now = Instant::now();
        let bar = std::io::stderr().is_terminal().then(|| {
            let style = indicatif::ProgressStyle::with_template("{bar:30} step {pos:>6}/{len}  {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            let bar = indicatif::ProgressBar::new(total as u64).with_style(style);
            bar.set_position(first_step as u64);
            bar
        });
        Progress { bar, first_step, started: now, last_print: now }
    }

    pub(super) fn update(&mut self, step: usize, total: usize, loss: f32, batch: usize, last: bool) {
        let every = if self.bar.is_some() { 0.2 } else { 10.0 };
        if !last && self.last_print.elapsed().as_secs_f64() < every {
            return;
        }
        self.last_print = Instant::now();
        let elapsed = self.started.elapsed().as_secs_f64();
        let per_step = elapsed / (step - self.first_step).max(1) as f64;
        let eta = per_step * (total - step) as f64;
        let rate = batch as f64 / per_step;
        let status = format!("loss {loss:.4}  {rate:.1} img/s  elapsed {}  eta {}", clock(elapsed), clock(eta));
        match &self.bar {
            Some(bar) => {
                bar.set_position(step as u64);
                bar.set_message(status);
                if last {
                    bar.abandon();
                }
            }
            None => eprintln!("step {step:>6}/{total}  {status}"),
        }
    }
}

pub(super) fn clock(seconds: f64) -> String {
    let s = seconds.round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// What the loop changes besides the parameters: AdamW's moments and the EMA, and where the data order
/// stood when it started (for resuming).
pub(super) struct State {
    pub(super) opt: Adam,
    pub(super) ema: Ema,
    pub(super) epoch: u64,
    pub(super) position: usize,
}

impl State {
    /// A fresh state, or the one `resume` holds (checked against the run); and the step to start at.
    pub(super) fn new(
        params: &mut ParamStore,
        config: &TrainConfig,
        resume: Option<Checkpoint>,
        n: usize,
    ) -> Result<(State, usize)> {
        let mut opt = Adam::adamw(config.lr, config.weight_decay);
        let Some(c) = resume else {
            return Ok((State { opt, ema: Ema::new(params, config.ema_decay), epoch: 0, position: 0 }, 0));
        };
        c.fits(config.steps, n).map_err(|problem| Error::Usage(format!("cannot resume: {problem}")))?;
        *params = c.params;
        opt.set_state(c.adam);
        let ema = Ema::from_parts(c.ema, config.ema_decay, c.ema_updates);
        Ok((State { opt, ema, epoch: c.epoch, position: c.position as usize }, c.step as usize))
    }

    /// The checkpoint of the run after `step` steps, the data order at `batches`' position.
    pub(super) fn checkpoint(
        &self,
        params: &ParamStore,
        step: usize,
        batches: &Batches,
        record: &BTreeMap<String, String>,
    ) -> Checkpoint {
        Checkpoint {
            step: step as u64,
            epoch: batches.epoch,
            position: batches.position as u64,
            params: params.clone(),
            ema: self.ema.params().clone(),
            ema_updates: self.ema.updates(),
            adam: self.opt.state().to_vec(),
            config: record.clone(),
        }
    }
}

/// The training batches: items in each epoch's shuffled order ([`epoch_order`]), moving on to the next
/// epoch's order at the end of one.
pub(super) struct Batches<'a> {
    images: &'a Tensor,
    labels: Option<&'a [usize]>,
    batch: usize,
    seed: u64,
    order: Vec<usize>,
    epoch: u64,
    position: usize,
}

impl<'a> Batches<'a> {
    pub(super) fn new(
        images: &'a Tensor,
        labels: Option<&'a [usize]>,
        config: &TrainConfig,
        epoch: u64,
        position: usize,
    ) -> Batches<'a> {
        let order = epoch_order(images.shape()[0], config.seed, epoch);
        Batches { images, labels, batch: config.batch, seed: config.seed, order, epoch, position }
    }

    /// The next batch [batch, …] and its labels.
    pub(super) fn next(&mut self) -> (Tensor, Option<Vec<usize>>) {
        let n = self.images.shape()[0];
        let row = self.images.numel() / n;
        let mut data = Vec::with_capacity(self.batch * row);
        let mut labels = self.labels.map(|_| Vec::with_capacity(self.batch));
        for _ in 0..self.batch {
            if self.position == n {
                self.epoch += 1;
                self.order = epoch_order(n, self.seed, self.epoch);
                self.position = 0;
            }
            let k = self.order[self.position];
            self.position += 1;
            data.extend_from_slice(&self.images.data()[k * row..(k + 1) * row]);
            if let (Some(out), Some(all)) = (labels.as_mut(), self.labels) {
                out.push(all[k]);
            }
        }
        let mut shape = self.images.shape().to_vec();
        shape[0] = self.batch;
        (Tensor::from_vec(&shape, data), labels)
    }
}

/// `loss.csv`: step, loss and learning rate of every step.
pub(super) struct LossLog {
    path: PathBuf,
    file: BufWriter<File>,
}

impl LossLog {
    pub(super) fn open(out_dir: &Path, start: usize) -> Result<LossLog> {
        std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
        let path = out_dir.join("loss.csv");
        let file = loss_csv(&path, start)?;
        Ok(LossLog { path, file })
    }

    pub(super) fn write(&mut self, step: usize, loss: f32, lr: f32) -> Result<()> {
        writeln!(self.file, "{step},{loss},{lr}").map_err(|e| Error::io(&self.path, e))
    }

    pub(super) fn flush(&mut self) -> Result<()> {
        self.file.flush().map_err(|e| Error::io(&self.path, e))
    }
}

/// Opens the loss log for appending after step `start`: a new file with its header when starting from
/// scratch; when resuming, the rows up to `start` are kept and any later ones (written after the checkpoint
/// by the interrupted run) dropped, so the file reads as one uninterrupted run.
pub(super) fn loss_csv(path: &Path, start: usize) -> Result<BufWriter<File>> {
    let mut kept = String::from("step,loss,lr\n");
    if start > 0 {
        if let Ok(previous) = std::fs::read_to_string(path) {
            for line in previous.lines().skip(1) {
                match line.split(',').next().and_then(|s| s.parse::<usize>().ok()) {
                    Some(s) if s <= start => {
                        kept.push_str(line);
                        kept.push('\n');
                    }
                    _ => break,
                }
            }
        }
    }
    let mut file = BufWriter::new(File::create(path).map_err(|e| Error::io(path, e))?);
    file.write_all(kept.as_bytes()).map_err(|e| Error::io(path, e))?;
    Ok(file)
}

/// Why the loss of pass `pass` of `step` is not finite: the first parameter that is not, or else the first
/// activation that is not, found by running that pass's forward again (same batch, same random draws) with
/// the tape's finite check on.
#[allow(clippy::too_many_arguments)]
pub(super) fn explain_non_finite_loss(
    model: &dyn Denoiser,
    params: &ParamStore,
    schedule: &NoiseSchedule,
    config: &TrainConfig,
    objective: &dyn Objective,
    x_0: &Tensor,
    (step, pass): (usize, usize),
    loss: f32,
) -> String {
    if let Some((_, name, _)) = params.iter().find(|(_, _, t)| !t.all_finite()) {
        return format!("the loss is {loss}; parameter {name} is not finite");
    }
    if !x_0.all_finite() {
        return format!("the loss is {loss}; the training batch holds non-finite pixels");
    }
    let mut tape = Tape::new();
    tape.enable_finite_check();
    let mut rng = pass_rng(config.seed, Stream::Step, step as u64, pass as u64);
    let _ = objective.loss(&mut tape, model, params, schedule, config, step, x_0, &mut rng);
    let Some(first) = tape.first_non_finite() else { return format!("the loss is {loss}") };
    let layer = match first.params.first() {
        Some(&id) => format!(" of {}", params.name(id).rsplit_once('.').map_or(params.name(id), |(layer, _)| layer)),
        None => String::new(),
    };
    format!(
        "the loss is {loss}; the first non-finite activation is the output of op #{} ({}{layer}), shape {:?} from \
         inputs {:?}",
        first.op_index, first.op, first.shape, first.input_shapes
    )
}
