use super::*;
use std::path::Path;

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::model::mlp::MlpDenoiser;
use crate::model::unet::{UNet, UNetConfig};
use rand::RngExt;

fn config(steps: usize, out: &str) -> TrainConfig {
    TrainConfig {
        lr: 2e-3,
        warmup: 10,
        ema_decay: 0.9,
        seed: 1,
        grid_images: 4,
        grid_sampler: SamplerConfig { steps: 5, ..TrainConfig::default_grid_sampler() },
        checkpoint_every: 0,
        ..TrainConfig::new(steps, 8, std::env::temp_dir().join(format!("train-test-{}-{out}", std::process::id())))
    }
}

/// `count` 8×8 "images": a bright 3×3 square on a dark background at a random position.
fn squares(count: usize) -> Tensor {
    let mut rng = StdRng::seed_from_u64(5);
    let mut data = vec![-1.0f32; count * 64];
    for i in 0..count {
        let (y, x) = (rng.random_range(0..5usize), rng.random_range(0..5usize));
        for dy in 0..3 {
            for dx in 0..3 {
                data[i * 64 + (y + dy) * 8 + x + dx] = 1.0;
            }
        }
    }
    Tensor::from_vec(&[count, 1, 8, 8], data)
}

fn losses(out_dir: &Path) -> Vec<f32> {
    std::fs::read_to_string(out_dir.join("loss.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect()
}

fn bits(store: &ParamStore) -> Vec<u32> {
    store.iter().flat_map(|(_, _, t)| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>()).collect()
}

/// `train` takes any [`Trainable`] denoiser: the MLP of example 02 learns 2-D moons in it, and the run
/// writes its log, checkpoint and weights but no grid.
#[test]
fn the_loop_trains_the_2d_mlp_too() {
    use crate::data::toy2d::Toy2d;
    let mut rng = StdRng::seed_from_u64(3);
    let points = Toy2d::Moons.sample(512, &mut rng);
    let mut params = ParamStore::new();
    let model = MlpDenoiser::new(&mut params, 2, 64, 2, &mut rng);
    let schedule = NoiseSchedule::linear_scaled(100);
    let cfg = TrainConfig { batch: 64, sample_every: 10, ..config(300, "mlp") };
    let (_, report) = train(&model, &mut params, &schedule, &points, None, &cfg, None).unwrap();
    let loss = losses(&cfg.out_dir);
    let (first, last) = (loss[..20].iter().sum::<f32>() / 20.0, loss[280..].iter().sum::<f32>() / 20.0);
    assert!(last < 0.7 * first, "the loss falls: first 20 steps {first}, last 20 {last}");
    assert!(report.grid.is_none() && report.weights.is_some_and(|w| w.exists()));
    assert!(!cfg.out_dir.join("samples_step10.png").exists(), "no grid for points");
    std::fs::remove_dir_all(&cfg.out_dir).unwrap();
}

/// Flow matching trains in the same loop: the flow schedule, velocity targets, logit-normal timesteps.
#[test]
fn a_flow_matching_unet_learns() {
    use crate::process::objective::TimeSampling;
    let images = squares(64);
    let mut params = ParamStore::new();
    let model = UNet::new(UNetConfig::tiny(), &mut params, 0);
    let schedule = NoiseSchedule::flow(100);
    let time_sampling = TimeSampling::LogitNormal { mean: 0.0, std: 1.0 };
    let cfg = TrainConfig { prediction: Prediction::Flow, time_sampling, ..config(150, "flow") };
    let (_, report) = train(&model, &mut params, &schedule, &images, None, &cfg, None).unwrap();
    let loss = losses(&cfg.out_dir);
    let (first, last) = (loss[..10].iter().sum::<f32>() / 10.0, loss[140..].iter().sum::<f32>() / 10.0);
    assert!(last < 0.6 * first, "the loss falls: first 10 steps {first}, last 10 {last}");
    let metadata = crate::training::checkpoint::read_metadata(report.weights.as_ref().unwrap()).unwrap();
    assert_eq!(metadata.get("train.prediction").map(String::as_str), Some("flow"));
    assert_eq!(metadata.get("train.t_sampling").map(String::as_str), Some("logit-normal:0,1"));
    std::fs::remove_dir_all(&cfg.out_dir).unwrap();
}

#[test]
fn warmup_then_cosine() {
    let c = TrainConfig { steps: 110, ..config(110, "lr") };
    assert!((c.lr_at(0) - 2e-4).abs() < 1e-9);
    assert!((c.lr_at(9) - 2e-3).abs() < 1e-9);
    assert!((c.lr_at(10) - 2e-3).abs() < 1e-9);
    assert!((c.lr_at(60) - 1e-3).abs() < 1e-6); // halfway through the decay
    assert!(c.lr_at(109) < 1e-5);
}

#[test]
fn tiny_unet_training_lowers_the_loss_and_writes_its_outputs() {
    let images = squares(64);
    let mut params = ParamStore::new();
    let model = UNet::new(UNetConfig::tiny(), &mut params, 0);
    let schedule = NoiseSchedule::linear(200, 1e-4, 0.04);
    let cfg = config(300, "tiny");
    let (_, report) = train(&model, &mut params, &schedule, &images, None, &cfg, None).unwrap();
    let losses = losses(&cfg.out_dir);
    assert_eq!(losses.len(), 300);
    let first: f32 = losses[..30].iter().sum::<f32>() / 30.0;
    let last: f32 = losses[270..].iter().sum::<f32>() / 30.0;
    assert!(last < 0.6 * first, "loss {first} → {last}");
    assert!(report.grid.as_ref().is_some_and(|g| g.exists()) && report.checkpoint.exists());
    std::fs::remove_dir_all(&cfg.out_dir).unwrap();
}

/// N steps straight, against N/2 steps, a stop, a resume from the checkpoint, and N/2 more: the same
/// losses and the same parameters, EMA and Adam moments, bit for bit. Dropout is on, and 20 images in
/// batches of 8 make batches straddle epochs, so the random draws and the data order are both tested;
/// `accumulate` passes a step, and the data position `(epoch, position)` expected after N/2 steps.
fn resumed_equals_uninterrupted(accumulate: usize, expected: (u64, u64)) {
    let images = squares(20);
    let net = UNetConfig { dropout: 0.1, ..UNetConfig::tiny() };
    let schedule = NoiseSchedule::linear(200, 1e-4, 0.04);
    let steps = 12;
    let config = |out: &str| TrainConfig { accumulate, ..config(steps, &format!("{out}{accumulate}")) };

    let straight = config("straight");
    let mut p_straight = ParamStore::new();
    let model = UNet::new(net.clone(), &mut p_straight, 3);
    let (ema_straight, _) = train(&model, &mut p_straight, &schedule, &images, None, &straight, None).unwrap();

    let sittings = TrainConfig { stop_at: Some(steps / 2), ..config("sittings") };
    let mut p_first = ParamStore::new();
    let model = UNet::new(net, &mut p_first, 3);
    let (_, first) = train(&model, &mut p_first, &schedule, &images, None, &sittings, None).unwrap();
    assert_eq!(first.step, steps / 2);
    // A fresh model (different initial weights) receives everything from the checkpoint.
    let mut p_resumed = ParamStore::new();
    let model = UNet::new(model.config.clone(), &mut p_resumed, 99);
    let checkpoint = Checkpoint::load(&first.checkpoint, &p_resumed).unwrap();
    assert_eq!((checkpoint.step, checkpoint.epoch, checkpoint.position), (6, expected.0, expected.1));
    let resume = TrainConfig { stop_at: None, ..sittings.clone() };
    let (ema_resumed, report) =
        train(&model, &mut p_resumed, &schedule, &images, None, &resume, Some(checkpoint)).unwrap();
    assert_eq!(report.step, steps);

    assert_eq!(losses(&straight.out_dir), losses(&sittings.out_dir), "loss.csv holds the same rows");
    assert_eq!(losses(&straight.out_dir).len(), steps);
    assert!(bits(&p_straight) == bits(&p_resumed), "parameters differ");
    assert!(bits(ema_straight.params()) == bits(ema_resumed.params()), "EMA differs");
    let last = |dir: &Path| Checkpoint::load(dir.join("checkpoints/step-00000012.safetensors"), &p_straight);
    let (a, b) = (last(&straight.out_dir).unwrap(), last(&sittings.out_dir).unwrap());
    assert!(a.adam == b.adam && a.ema_updates == b.ema_updates && a.position == b.position);
    for dir in [&straight.out_dir, &sittings.out_dir] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn a_resumed_run_equals_the_uninterrupted_run_bit_for_bit() {
    resumed_equals_uninterrupted(1, (2, 8)); // 48 items = 2 epochs + 8
}

#[test]
fn a_resumed_run_with_accumulated_gradients_equals_the_uninterrupted_run() {
    resumed_equals_uninterrupted(2, (4, 16)); // 6 steps of 2 passes of 8 = 96 items = 4 epochs + 16
}

/// A loss without random draws: the model's prediction at t = 40 for the clean images, against them.
struct Deterministic;

impl Objective for Deterministic {
    fn loss(
        &self,
        tape: &mut Tape,
        model: &dyn Denoiser,
        params: &ParamStore,
        _: &NoiseSchedule,
        _: &TrainConfig,
        _: usize,
        x_0: &Tensor,
        rng: &mut StdRng,
    ) -> Var {
        let x = tape.constant(x_0.clone());
        let output = model.predict_train(tape, params, &x, &vec![40; x_0.shape()[0]], rng);
        tape.mse_loss(&output, &x)
    }
}

/// Gradient accumulation: two passes of 8 images give the loss and the gradient of one pass of all 16 (to
/// f32 rounding: the sums run in another order), every parameter's. Without the 1/K seed of each pass's
/// backward they would be twice it. And under the denoising loss the passes draw their own timesteps and
/// noise: two passes of the same 8 images are not one pass of them.
#[test]
fn accumulated_passes_give_the_gradient_of_one_batch_of_all_their_images() {
    let images = squares(16);
    let rows =
        |from: usize, to: usize| Tensor::from_vec(&[to - from, 1, 8, 8], images.data()[from * 64..to * 64].to_vec());
    let (first, second) = (rows(0, 8), rows(8, 16));
    let mut params = ParamStore::new();
    let model = UNet::new(UNetConfig::tiny(), &mut params, 0);
    let schedule = NoiseSchedule::linear(200, 1e-4, 0.04);
    let cfg = config(1, "accumulate");
    fn with<'a>(x: &'a Tensor, model: &'a UNet) -> (&'a Tensor, Box<dyn Denoiser + 'a>) {
        (x, Box::new(model))
    }
    let pass = |x| with(x, &model);
    let gradients = |passes: &[(&Tensor, Box<dyn Denoiser + '_>)], objective: &dyn Objective| {
        step_gradients(&mut Tape::new(), passes, &params, 0, &schedule, &cfg, objective).unwrap()
    };

    let (loss_one, one) = gradients(&[pass(&images)], &Deterministic);
    let (loss_two, two) = gradients(&[pass(&first), pass(&second)], &Deterministic);
    assert!((loss_one - loss_two).abs() <= 1e-6 * loss_one, "loss {loss_one} against {loss_two}");
    assert_eq!(one.params().count(), params.len());
    assert_eq!(two.params().count(), params.len());
    for (id, g) in one.params() {
        let scale = g.data().iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
        let diff = g.max_abs_diff(two.param(id).unwrap());
        assert!(diff <= 1e-4 * scale, "{}: differs by {diff} (largest entry {scale})", params.name(id));
    }

    let (_, alone) = gradients(&[pass(&first)], &Denoising);
    let (_, twice) = gradients(&[pass(&first), pass(&first)], &Denoising);
    let w = params.iter().next().unwrap().0;
    assert!(alone.param(w).unwrap().max_abs_diff(twice.param(w).unwrap()) > 1e-4, "pass 1 drew pass 0's noise");
}

/// `train.accumulate` is written only for several passes a step (files of one-pass runs stay as they
/// were), read back, and taken as 1 when absent; 0 passes is refused, and so are more images a step than
/// a batch may hold.
#[test]
fn accumulation_is_recorded_only_when_a_step_has_several_passes() {
    let one = config(10, "meta").to_metadata();
    assert!(!one.contains_key("train.accumulate"));
    let three = TrainConfig { accumulate: 3, ..config(10, "meta") }.to_metadata();
    assert_eq!(three.get("train.accumulate").map(String::as_str), Some("3"));
    let mut back = config(10, "meta");
    back.set_from_metadata(&Fields::new(Path::new("run.safetensors"), &three)).unwrap();
    assert_eq!(back.accumulate, 3);
    back.set_from_metadata(&Fields::new(Path::new("run.safetensors"), &one)).unwrap();
    assert_eq!(back.accumulate, 1);
    let none = TrainConfig { accumulate: 0, ..config(10, "meta") }.validate(200).unwrap_err();
    assert!(none.contains("accumulate"), "{none}");
    let huge = TrainConfig { accumulate: 4096, batch: 32, ..config(10, "meta") }.validate(200).unwrap_err();
    assert!(huge.contains("batch × accumulate"), "{huge}");
}

#[test]
fn training_is_bit_identical_on_one_and_two_threads() {
    let images = squares(24);
    let schedule = NoiseSchedule::linear(200, 1e-4, 0.04);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let cfg = config(6, &format!("threads{threads}"));
            let mut params = ParamStore::new();
            let model = UNet::new(UNetConfig { dropout: 0.1, ..UNetConfig::tiny() }, &mut params, 4);
            train(&model, &mut params, &schedule, &images, None, &cfg, None).unwrap();
            let losses: Vec<u32> = losses(&cfg.out_dir).iter().map(|l| l.to_bits()).collect();
            std::fs::remove_dir_all(&cfg.out_dir).unwrap();
            (bits(&params), losses)
        })
    };
    let (one, two) = (run(1), run(2));
    assert!(one == two, "1 and 2 threads disagree");
}

#[test]
fn a_class_conditional_model_trains_on_labels_and_refuses_to_train_without() {
    let images = squares(16);
    let labels: Vec<usize> = (0..16).map(|i| i % 3).collect();
    let schedule = NoiseSchedule::linear(200, 1e-4, 0.04);
    let cfg = TrainConfig { grid_images: 6, ..config(4, "conditional") };
    let mut params = ParamStore::new();
    let model = UNet::new(UNetConfig { num_classes: 3, ..UNetConfig::tiny() }, &mut params, 0);
    let before = params.get(params.find("class_embedding.weight").unwrap()).clone();
    let err = train(&model, &mut params, &schedule, &images, None, &cfg, None).unwrap_err().to_string();
    assert_eq!(err, "a class-conditional model needs labels to train on");
    let err = train(&model, &mut params, &schedule, &images, Some(&[5; 16]), &cfg, None).unwrap_err().to_string();
    assert_eq!(err, "a label is not below num_classes = 3");
    let (_, report) = train(&model, &mut params, &schedule, &images, Some(&labels), &cfg, None).unwrap();
    let after = params.get(params.find("class_embedding.weight").unwrap());
    assert!(after.data() != before.data(), "the class embedding learns");
    let checkpoint = Checkpoint::load(&report.checkpoint, &params).unwrap();
    assert_eq!(checkpoint.config["unet.num_classes"], "3");
    assert_eq!(checkpoint.config["train.label_dropout"], "0.1");
    std::fs::remove_dir_all(&cfg.out_dir).unwrap();
}

#[test]
fn a_nan_stops_training_naming_the_step_and_what_went_bad_first() {
    let images = squares(16);
    let schedule = NoiseSchedule::linear(200, 1e-4, 0.04);
    // A parameter that is NaN from the start is named at step 1.
    let cfg = config(5, "nan-param");
    let mut params = ParamStore::new();
    let model = UNet::new(UNetConfig::tiny(), &mut params, 0);
    let id = params.find("mid.res1.conv2.bias").unwrap();
    params.get_mut(id).data_mut()[0] = f32::NAN;
    let err = train(&model, &mut params, &schedule, &images, None, &cfg, None).unwrap_err().to_string();
    assert_eq!(
        err,
        "training diverged at step 1: the loss is NaN; parameter mid.res1.conv2.bias is not finite; \
         no checkpoint was written in this run"
    );
    // A learning rate of 1e30 makes the weights huge after one step and the activations overflow in the
    // second; the checkpoint of step 1 is kept and still loads.
    let cfg = TrainConfig { lr: 1e30, warmup: 0, grad_clip: 0.0, checkpoint_every: 1, ..config(5, "nan-lr") };
    let mut params = ParamStore::new();
    let model = UNet::new(UNetConfig::tiny(), &mut params, 0);
    let err = train(&model, &mut params, &schedule, &images, None, &cfg, None).unwrap_err();
    assert!(matches!(err, Error::Diverged(_)));
    let err = err.to_string();
    let kept = cfg.out_dir.join("checkpoints/step-00000001.safetensors");
    assert!(err.starts_with("training diverged at step 2: the loss is "), "{err}");
    assert!(err.contains("the first non-finite activation is the output of op #3 (linear of time.linear2)"), "{err}");
    assert!(err.ends_with(&format!("the last good checkpoint is {}", kept.display())), "{err}");
    assert_eq!(Checkpoint::load(&kept, &params).unwrap().step, 1);
    std::fs::remove_dir_all(&cfg.out_dir).unwrap();
}
