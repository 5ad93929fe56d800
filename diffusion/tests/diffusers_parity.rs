//! diffusers' `UNet2DModel` read here gives diffusers' output: `reference/diffusers/parity.py make` saved two
//! small random pipelines (`plain`: the `diffusers-mnist` preset's block types; `options`: conditional,
//! downsample_padding 0, sin first, freq_shift 1, norm_eps 1e-6, one head, its own time_embedding_dim) and
//! each model's output at fixed inputs. This test needs no Python: it reads each folder as example 04 would
//! ([`Trained::load`] on a folder), runs the model on the saved inputs, and matches the saved outputs to
//! 1e-5 of their largest magnitude. Then it writes the model back out as a diffusers folder and checks that
//! the files hold what diffusers wrote: the same tensors, bit for bit, and the same settings.

use std::path::{Path, PathBuf};

use autograd::{Tape, Tensor};
use diffusion::model::unet::{Heads, Topology};
use diffusion::process::objective::Prediction;
use diffusion::training::checkpoint::diffusers::weights_path;
use diffusion::training::checkpoint::Trained;
use safetensors::SafeTensors;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/diffusers").join(name)
}

/// The probe's tensor `name`.
fn probe(file: &SafeTensors, name: &str) -> Tensor {
    let view = file.tensor(name).unwrap();
    let values = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    Tensor::from_vec(view.shape(), values)
}

/// The largest |ours − theirs| over the largest |theirs|.
fn relative_difference(ours: &Tensor, theirs: &Tensor) -> f32 {
    assert_eq!(ours.shape(), theirs.shape());
    let scale = theirs.data().iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = ours.data().iter().zip(theirs.data()).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    diff / scale
}

fn run(name: &str) -> Trained {
    let trained = Trained::load(fixture(name)).unwrap();
    let bytes = std::fs::read(fixture(&format!("{name}.probe.safetensors"))).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let (x, t, expected) = (probe(&file, "x"), probe(&file, "t"), probe(&file, "out"));
    let labels: Option<Vec<usize>> =
        file.tensor("labels").ok().map(|_| probe(&file, "labels").data().iter().map(|&l| l as usize).collect());
    let mut tape = Tape::new();
    let x = tape.constant(x);
    let out = trained.model.forward(&mut tape, &trained.params, &x, t.data(), labels.as_deref(), None);
    let difference = relative_difference(out.value(), &expected);
    println!("{name}: largest difference {difference:.1e} of the largest output");
    assert!(difference <= 1e-5, "{name}: differs from diffusers' output by {difference:e} of its largest value");
    trained
}

#[test]
fn a_plain_unet2dmodel_gives_diffusers_output() {
    let trained = run("plain");
    let c = &trained.model.config;
    assert_eq!(
        (c.topology, c.heads, c.blocks_per_level, c.channel_mult.clone()),
        (Topology::Diffusers, Heads::Width(8), 2, vec![1, 1, 2])
    );
    assert_eq!((trained.prediction, trained.schedule.steps()), (Prediction::Epsilon, 1000));
    assert_eq!(trained.params.num_elements(), 74_865);
}

#[test]
fn every_mapped_option_gives_diffusers_output() {
    let trained = run("options");
    let c = &trained.model.config;
    assert_eq!((c.downsample_padding, c.flip_sin_to_cos, c.freq_shift, c.norm_eps), (0, false, 1, 1e-6));
    assert_eq!((c.heads, c.time_dim, c.num_classes, c.image_channels), (Heads::Count(1), 24, 4, 3));
    assert_eq!((trained.prediction, trained.schedule.steps()), (Prediction::Velocity, 200));
}

#[test]
fn written_back_the_folders_hold_what_diffusers_wrote() {
    for name in ["plain", "options"] {
        let trained = Trained::load(fixture(name)).unwrap();
        let out = std::env::temp_dir().join(format!("diffusers-parity-{}-{name}", std::process::id()));
        trained.export_diffusers(&out).unwrap();
        let (ours, theirs) =
            (std::fs::read(weights_path(&out)).unwrap(), std::fs::read(weights_path(&fixture(name))).unwrap());
        let (ours, theirs) = (SafeTensors::deserialize(&ours).unwrap(), SafeTensors::deserialize(&theirs).unwrap());
        let (mut a, mut b) = (ours.names(), theirs.names());
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b, "{name}: tensor names");
        for n in a {
            let (x, y) = (ours.tensor(n).unwrap(), theirs.tensor(n).unwrap());
            assert_eq!((x.shape(), x.data()), (y.shape(), y.data()), "{name}: {n}");
        }
        for file in ["unet/config.json", "scheduler/scheduler_config.json"] {
            let read = |dir: &Path| -> serde_json::Value {
                serde_json::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap()
            };
            let (mut ours, mut theirs) = (read(&out), read(&fixture(name)));
            for v in [&mut ours, &mut theirs] {
                v.as_object_mut().unwrap().retain(|k, _| !k.starts_with('_'));
            }
            assert_eq!(ours, theirs, "{name}: {file}");
        }
        // The model read back from our folder is the same model.
        let again = Trained::load(&out).unwrap();
        assert_eq!(again.model.config, trained.model.config);
        for ((_, n, x), (_, _, y)) in again.params.iter().zip(trained.params.iter()) {
            assert_eq!(x.data(), y.data(), "{n}");
        }
        std::fs::remove_dir_all(&out).unwrap();
    }
}

/// A copy of the `plain` fixture with `edit` applied to its unet/config.json, read back: the error's text.
fn edited(tag: &str, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> String {
    let dir = std::env::temp_dir().join(format!("diffusers-bad-{}-{tag}", std::process::id()));
    let trained = Trained::load(fixture("plain")).unwrap();
    trained.export_diffusers(&dir).unwrap();
    let path = dir.join("unet/config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(config.as_object_mut().unwrap());
    std::fs::write(&path, config.to_string()).unwrap();
    let err = Trained::load(&dir).err().expect("an edited folder must be refused").to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    err
}

#[test]
fn a_config_this_project_cannot_express_is_refused_naming_the_key_and_value() {
    use serde_json::json;
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        ("act_fn", json!("gelu"), "act_fn = \"gelu\": this project builds only silu or swish"),
        (
            "block_out_channels",
            json!([8, 12, 16]),
            "block_out_channels = [8,12,16]: this project needs every entry a multiple of the first",
        ),
        (
            "up_block_types",
            json!(["UpBlock2D", "UpBlock2D", "UpBlock2D"]),
            "up_block_types = [\"UpBlock2D\",\"UpBlock2D\",\"UpBlock2D\"]: this project builds the mirror",
        ),
        (
            "down_block_types",
            json!(["DownBlock2D", "SkipDownBlock2D", "AttnDownBlock2D"]),
            "\"SkipDownBlock2D\": this project builds DownBlock2D and AttnDownBlock2D",
        ),
        ("resnet_time_scale_shift", json!("scale_shift"), "resnet_time_scale_shift = \"scale_shift\""),
        ("out_channels", json!(2), "out_channels = 2: this project's U-Net gives as many channels as it takes (1)"),
        ("class_embed_type", json!("timestep"), "class_embed_type = \"timestep\""),
        ("a_new_setting", json!(3), "a_new_setting = 3: not a UNet2DModel setting this project knows"),
        ("layers_per_block", json!(1_000_000_000_000u64), "blocks_per_level 1000000000000: out of range (1 to 16)"),
        (
            "block_out_channels",
            json!([4096, 8192, 16384]),
            "cannot build: base_channels 4096: out of range (1 to 2048)",
        ),
        ("norm_num_groups", json!(3), "not a multiple of groups"),
        ("sample_size", json!("big"), "sample_size = \"big\": not one square size"),
    ];
    for (i, (key, value, expected)) in cases.into_iter().enumerate() {
        let err = edited(&format!("{i}"), |config| {
            config.insert(key.to_string(), value.clone());
        });
        assert!(err.contains("unet/config.json") && err.contains(expected), "{key}: {err}");
    }
    // The weights must be the model the config describes.
    let err = edited("layers", |config| {
        config.insert("layers_per_block".into(), json!(1));
    });
    assert!(err.contains("diffusion_pytorch_model.safetensors: describes a U-Net of"), "{err}");
}
