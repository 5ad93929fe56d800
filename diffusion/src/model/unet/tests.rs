use super::*;
use autograd::Tensor;

use crate::metadata::Fields;

#[test]
fn small_preset_has_the_reference_parameter_count() {
    let mut params = ParamStore::new();
    let _ = UNet::new(UNetConfig::small(), &mut params, 0);
    assert_eq!(params.num_elements(), 2_268_513);
}

#[test]
fn sizes_count_the_parameters_the_network_has() {
    let mut configs = vec![UNetConfig::small(), UNetConfig::tiny(), UNetConfig::rgb32()];
    configs.push(UNetConfig { num_classes: 10, blocks_per_level: 2, ..UNetConfig::tiny() });
    configs.push(UNetConfig { channel_mult: vec![1, 1, 3], attention: vec![true, false, true], ..UNetConfig::small() });
    configs.push(UNetConfig::diffusers_mnist());
    configs.push(diffusers_tiny());
    for config in configs {
        let mut params = ParamStore::new();
        let _ = UNet::new(config.clone(), &mut params, 0);
        assert_eq!(config.sizes().parameters, params.num_elements(), "{config:?}");
    }
    assert_eq!(UNetConfig::small().sizes().parameters, 2_268_513);
}

#[test]
fn absurd_sizes_are_refused_before_anything_is_allocated() {
    let huge = UNetConfig { base_channels: 2048, channel_mult: vec![1, 1, 1], ..UNetConfig::small() };
    let err = huge.validate().unwrap_err();
    assert!(err.contains("parameters") && err.contains("over the limit of 500000000"), "{err}");
    let err = UNetConfig { blocks_per_level: 1000, ..UNetConfig::small() }.validate().unwrap_err();
    assert_eq!(err, "blocks_per_level 1000: out of range (1 to 16)");
    let err = UNetConfig { image_size: 1 << 32, ..UNetConfig::small() }.validate().unwrap_err();
    assert_eq!(err, "image_size 4294967296: out of range (1 to 1024)");
    let err = UNetConfig { time_dim: usize::MAX, ..UNetConfig::small() }.validate().unwrap_err();
    assert!(err.starts_with("time_dim 18446744073709551615: out of range"), "{err}");
    let small = UNetConfig::small();
    small.check_memory(32, true).unwrap();
    small.check_memory(256, false).unwrap();
    let err = small.check_memory(1_000_000, true).unwrap_err();
    assert!(err.starts_with("training on 1000000 images at once would take about ") && err.contains("TB"), "{err}");
}

/// The diffusers topology at the size of `tiny`, with every non-default option: padding 0, sin first,
/// shifted frequencies, ε = 1e-6, heads by width, classes.
fn diffusers_tiny() -> UNetConfig {
    UNetConfig {
        topology: Topology::Diffusers,
        heads: Heads::Width(8),
        downsample_padding: 0,
        flip_sin_to_cos: false,
        freq_shift: 1,
        norm_eps: 1e-6,
        num_classes: 3,
        attention: vec![true, true],
        ..UNetConfig::tiny()
    }
}

#[test]
fn diffusers_topology_reads_conv_in_and_downsampler_outputs_and_every_parameter_learns() {
    let mut params = ParamStore::new();
    let net = UNet::new(diffusers_tiny(), &mut params, 0);
    // One block more per up level, reading conv_in's 8 channels at the end of the way up.
    assert_eq!(params.get(params.find("up0.1.res.conv1.weight").unwrap()).shape(), &[8, 16, 3, 3]);
    assert_eq!(params.get(params.find("up1.1.res.conv1.weight").unwrap()).shape(), &[16, 24, 3, 3]);
    assert!(params.find("up1.2.res.conv1.weight").is_none());
    keeps_the_shape_and_every_parameter_learns(&net, &params, Some(&[0, 2]));
}

/// A forward pass on two 8×8 images gives their shape back, and every parameter gets a gradient.
fn keeps_the_shape_and_every_parameter_learns(net: &UNet, params: &ParamStore, labels: Option<&[usize]>) {
    let mut tape = Tape::new();
    let x = tape.constant(Tensor::randn_seeded(&[2, 1, 8, 8], 1));
    let y = net.forward(&mut tape, params, &x, &[3.0, 500.0], labels, None);
    assert_eq!(y.shape(), &[2, 1, 8, 8]);
    let loss = tape.mean_all(&y);
    let grads = tape.backward(&loss);
    for (id, name, _) in params.iter() {
        assert!(grads.param(id).is_some(), "{name} has no gradient");
    }
}

#[test]
fn config_round_trips_through_metadata_and_bad_configs_are_errors() {
    let path = std::path::Path::new("model.safetensors");
    let small = UNetConfig::small().to_metadata();
    assert!(small.keys().all(|k| !k.contains("topology") && !k.contains("eps")), "{small:?}");
    for config in
        [UNetConfig::small(), UNetConfig::tiny(), UNetConfig::rgb32(), UNetConfig::diffusers_mnist(), diffusers_tiny()]
    {
        let meta = config.to_metadata();
        assert_eq!(UNetConfig::from_metadata(&Fields::new(path, &meta)).unwrap(), config);
    }
    let mut meta = UNetConfig::tiny().to_metadata();
    meta.insert("unet.groups".into(), "3".into());
    let err = UNetConfig::from_metadata(&Fields::new(path, &meta)).unwrap_err().to_string();
    let expected = "level 0 has 8 channels, not a multiple of groups";
    assert_eq!(err, format!("model.safetensors: describes an impossible U-Net: {expected}"));
    for (key, value, problem) in [
        ("unet.norm_eps", "NaN", "norm_eps NaN is not in (0, 1]"),
        ("unet.downsample_padding", "7", "downsample_padding 7: out of range (0 to 1)"),
        ("unet.freq_shift", "8", "freq_shift 8 is not below half the time_embedding_dim 16"),
        ("unet.topology", "ring", "unknown unet.topology \"ring\""),
    ] {
        let mut meta = UNetConfig::tiny().to_metadata();
        meta.insert(key.into(), value.into());
        let err = UNetConfig::from_metadata(&Fields::new(path, &meta)).unwrap_err().to_string();
        assert!(err.contains(problem), "{key}: {err}");
    }
    let mut width = UNetConfig { heads: Heads::Width(8), ..UNetConfig::tiny() }.to_metadata();
    width.insert("unet.head_width".into(), "0".into());
    let err = UNetConfig::from_metadata(&Fields::new(path, &width)).unwrap_err().to_string();
    assert!(err.contains("head_width 0: out of range (1 to 2048)"), "{err}");
    meta.insert("unet.channel_mult".into(), "1,x".into());
    let err = UNetConfig::from_metadata(&Fields::new(path, &meta)).unwrap_err().to_string();
    assert!(err.contains("\"unet.channel_mult\" entry that is not a valid list"), "{err}");
    meta.insert("unet.channel_mult".into(), "1,2".into());
    meta.remove("unet.heads");
    let err = UNetConfig::from_metadata(&Fields::new(path, &meta)).unwrap_err().to_string();
    assert!(err.contains("no \"unet.heads\" entry"), "{err}");
}

#[test]
fn parameter_names_are_readable_and_stable() {
    let mut params = ParamStore::new();
    let _ = UNet::new(UNetConfig::small(), &mut params, 0);
    for name in [
        "conv_in.weight",
        "down1.0.res.conv1.weight",
        "down2.0.attn.qkv.weight",
        "mid.attn.proj.bias",
        "up2.0.res.skip.weight",
        "up1.upsample.weight",
        "out.conv.bias",
    ] {
        assert!(params.find(name).is_some(), "{name}");
    }
}

#[test]
fn tiny_forward_keeps_the_image_shape_and_every_parameter_gets_a_gradient() {
    let mut params = ParamStore::new();
    let net = UNet::new(UNetConfig::tiny(), &mut params, 0);
    keeps_the_shape_and_every_parameter_learns(&net, &params, None);
}

#[test]
fn diffusers_mnist_has_the_parameter_count_of_its_unet2dmodel() {
    // diffusers 0.42.1: sum(p.numel() for p in UNet2DModel(**the preset's config).parameters())
    assert_eq!(UNetConfig::diffusers_mnist().sizes().parameters, 3_939_393);
}
