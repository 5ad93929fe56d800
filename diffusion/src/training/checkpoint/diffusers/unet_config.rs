//! `unet/config.json`: a [`UNetConfig`] as the keyword arguments of diffusers' `UNet2DModel`, and back.
//!
//! | `UNet2DModel`              | [`UNetConfig`]                                                   |
//! |----------------------------|------------------------------------------------------------------|
//! | `sample_size`              | `image_size`                                                     |
//! | `in_channels`, `out_channels` | `image_channels` (both)                                       |
//! | `block_out_channels`       | `base_channels` · `channel_mult`                                 |
//! | `layers_per_block`         | `blocks_per_level` (the up blocks have one more: [`Topology::Diffusers`]) |
//! | `down_block_types`, `up_block_types` | `attention` (`AttnDownBlock2D` / `AttnUpBlock2D` where true, mirrored) |
//! | `attention_head_dim`       | `heads`: [`Heads::Width`] (null: one head, [`Heads::Count`]`(1)`) |
//! | `norm_num_groups`, `norm_eps` | `groups`, `norm_eps`                                          |
//! | `downsample_padding`       | `downsample_padding`                                             |
//! | `flip_sin_to_cos`, `freq_shift` | the same; the sinusoid's width is `block_out_channels[0]`   |
//! | `time_embedding_dim`       | `time_dim` (null: 4 · `block_out_channels[0]`)                   |
//! | `num_class_embeds`         | `num_classes` + 1 (the last row is this project's "no class")    |
//! | `dropout`                  | `dropout`                                                        |
//!
//! Everything else must have the one value this project builds (`act_fn` "silu", `resnet_time_scale_shift`
//! "default", `mid_block_type` "UNetMidBlock2D", …); any other value is an error naming the key.

use serde_json::{json, Value};

use super::json::Config;
use crate::error::Result;
use crate::model::unet::{Heads, Topology, UNetConfig};

/// The diffusers version whose `UNet2DModel` these configs were checked against.
pub const DIFFUSERS_VERSION: &str = "0.42.1";

/// The config.json of `config`, or why `UNet2DModel` cannot express it.
pub fn to_json(config: &UNetConfig) -> std::result::Result<Value, String> {
    if config.topology != Topology::Diffusers {
        return Err("its U-Net has the compact skip topology, which UNet2DModel has no setting for (train with --preset diffusers-mnist)".into());
    }
    let levels = config.channel_mult.len();
    if config.channel_mult[0] != 1 {
        return Err(format!(
            "channel_mult starts at {}; UNet2DModel's conv_in gives level 0's channels",
            config.channel_mult[0]
        ));
    }
    let c0 = config.base_channels;
    if config.time_embedding_dim != c0 {
        return Err(format!(
            "its sinusoidal embedding is {} wide; UNet2DModel's is block_out_channels[0] = {c0}",
            config.time_embedding_dim
        ));
    }
    let widths: Vec<usize> = (0..levels)
        .filter(|&l| config.attention[l] || l + 1 == levels)
        .map(|l| config.channels(l) / config.heads_at(config.channels(l)))
        .collect();
    let head_dim = match config.heads {
        Heads::Width(w) => json!(w),
        Heads::Count(1) => Value::Null, // diffusers: heads as wide as each level's channels
        Heads::Count(n) if widths.iter().all(|&w| w == widths[0]) => json!(config.channels(levels - 1) / n),
        Heads::Count(n) => return Err(format!("{n} heads at every level are heads of different widths {widths:?}")),
    };
    let block = |attn: bool, down: bool| match (attn, down) {
        (true, true) => "AttnDownBlock2D",
        (false, true) => "DownBlock2D",
        (true, false) => "AttnUpBlock2D",
        (false, false) => "UpBlock2D",
    };
    let down: Vec<&str> = config.attention.iter().map(|&a| block(a, true)).collect();
    let up: Vec<&str> = config.attention.iter().rev().map(|&a| block(a, false)).collect();
    let channels: Vec<usize> = (0..levels).map(|l| config.channels(l)).collect();
    // An f32 as the decimal it was written as (1e-6, not 9.999999974752427e-7).
    let decimal = |v: f32| v.to_string().parse::<f64>().expect("an f32 prints as a number");
    Ok(json!({
        "_class_name": "UNet2DModel",
        "_diffusers_version": DIFFUSERS_VERSION,
        "act_fn": "silu",
        "add_attention": true,
        "attention_head_dim": head_dim,
        "attn_norm_num_groups": null,
        "block_out_channels": channels,
        "center_input_sample": false,
        "class_embed_type": null,
        "down_block_types": down,
        "downsample_padding": config.downsample_padding,
        "downsample_type": "conv",
        "dropout": decimal(config.dropout),
        "flip_sin_to_cos": config.flip_sin_to_cos,
        "freq_shift": config.freq_shift,
        "in_channels": config.image_channels,
        "layers_per_block": config.blocks_per_level,
        "mid_block_scale_factor": 1,
        "mid_block_type": "UNetMidBlock2D",
        "norm_eps": decimal(config.norm_eps),
        "norm_num_groups": config.groups,
        "num_class_embeds": if config.num_classes > 0 { json!(config.num_classes + 1) } else { Value::Null },
        "num_train_timesteps": null,
        "out_channels": config.image_channels,
        "resnet_time_scale_shift": "default",
        "sample_size": config.image_size,
        "time_embedding_dim": if config.time_dim == 4 * c0 { Value::Null } else { json!(config.time_dim) },
        "time_embedding_type": "positional",
        "up_block_types": up,
        "upsample_type": "conv",
    }))
}

/// The [`UNetConfig`] of a `UNet2DModel` config.json (absent keys take `UNet2DModel`'s defaults), checked
/// with [`UNetConfig::validate`]; a setting it cannot express is an error naming the key and the value.
pub fn from_json(file: &Config) -> Result<UNetConfig> {
    if let Some(class) = file.optional_str("_class_name")? {
        if class != "UNet2DModel" {
            return Err(file.error("_class_name", "this project reads UNet2DModel only"));
        }
    }
    let image_size = match file.value("sample_size") {
        Some(Value::Array(hw)) if hw.len() == 2 && hw[0] == hw[1] => hw[0].as_u64().unwrap_or(0) as usize,
        Some(v) => v.as_u64().map(|n| n as usize).ok_or_else(|| file.error("sample_size", "not one square size"))?,
        None => return Err(file.error("sample_size", "this project needs the image size")),
    };
    let image_channels = file.usize_or("in_channels", 3)?;
    if file.usize_or("out_channels", 3)? != image_channels {
        return Err(file.error(
            "out_channels",
            format!("this project's U-Net gives as many channels as it takes ({image_channels})"),
        ));
    }
    if file.bool_or("center_input_sample", false)? {
        return Err(file.error("center_input_sample", "this project builds only false"));
    }
    file.expect_str("time_embedding_type", "positional", &["positional"])?;
    file.expect_str("act_fn", "silu", &["silu", "swish"])?;
    file.expect_str("resnet_time_scale_shift", "default", &["default"])?;
    file.expect_str("downsample_type", "conv", &["conv"])?;
    file.expect_str("upsample_type", "conv", &["conv"])?;
    if file.value("mid_block_type").is_none() && file.map_has("mid_block_type") {
        return Err(file.error("mid_block_type", "this project builds only UNetMidBlock2D"));
    }
    file.expect_str("mid_block_type", "UNetMidBlock2D", &["UNetMidBlock2D"])?;
    if file.f64_or("mid_block_scale_factor", 1.0)? != 1.0 {
        return Err(file.error("mid_block_scale_factor", "this project builds only 1"));
    }
    if !file.bool_or("add_attention", true)? {
        return Err(file.error("add_attention", "this project's middle always has attention"));
    }
    if let Some(kind) = file.optional_str("class_embed_type")? {
        return Err(file.error(
            "class_embed_type",
            format!("{kind:?}: this project builds only null (a table of num_class_embeds)"),
        ));
    }
    file.optional_usize("num_train_timesteps")?; // used only by time_embedding_type "learned"

    let channels = file.usizes_or("block_out_channels", &[224, 448, 672, 896])?;
    let c0 = *channels.first().ok_or_else(|| file.error("block_out_channels", "empty"))?;
    if c0 == 0 || channels.iter().any(|c| c % c0 != 0) {
        return Err(file.error("block_out_channels", "this project needs every entry a multiple of the first"));
    }
    let levels = channels.len();
    let default_down = ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"];
    let down = file.strings_or("down_block_types", &default_down)?;
    let up = file.strings_or("up_block_types", &["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"])?;
    if down.len() != levels {
        return Err(file.error("down_block_types", format!("{} entries for {levels} block_out_channels", down.len())));
    }
    let mut attention = Vec::with_capacity(levels);
    for kind in &down {
        attention.push(match kind.as_str() {
            "DownBlock2D" => false,
            "AttnDownBlock2D" => true,
            _ => {
                return Err(file.error(
                    "down_block_types",
                    format!("{kind:?}: this project builds DownBlock2D and AttnDownBlock2D"),
                ))
            }
        });
    }
    let mirrored: Vec<&str> = attention.iter().rev().map(|&a| if a { "AttnUpBlock2D" } else { "UpBlock2D" }).collect();
    if up != mirrored {
        return Err(
            file.error("up_block_types", format!("this project builds the mirror of down_block_types: {mirrored:?}"))
        );
    }
    let groups = match file.optional_usize("norm_num_groups")? {
        Some(g) => g,
        None if file.map_has("norm_num_groups") => {
            return Err(file.error("norm_num_groups", "this project needs a number"))
        }
        None => 32,
    };
    if let Some(g) = file.optional_usize("attn_norm_num_groups")? {
        if g != groups {
            return Err(file.error(
                "attn_norm_num_groups",
                format!("this project's attention norms have norm_num_groups ({groups})"),
            ));
        }
    }
    let heads = match file.value("attention_head_dim") {
        None if file.map_has("attention_head_dim") => Heads::Count(1),
        _ => Heads::Width(file.usize_or("attention_head_dim", 8)?),
    };
    let config = UNetConfig {
        image_channels,
        image_size,
        base_channels: c0,
        channel_mult: channels.iter().map(|c| c / c0).collect(),
        blocks_per_level: file.usize_or("layers_per_block", 2)?,
        attention,
        heads,
        groups,
        norm_eps: file.f64_or("norm_eps", 1e-5)? as f32,
        dropout: file.f64_or("dropout", 0.0)? as f32,
        topology: Topology::Diffusers,
        downsample_padding: file.usize_or("downsample_padding", 1)?,
        time_embedding_dim: c0,
        flip_sin_to_cos: file.bool_or("flip_sin_to_cos", true)?,
        freq_shift: file.usize_or("freq_shift", 0)?,
        time_dim: file.usize_or("time_embedding_dim", 4 * c0)?,
        num_classes: match file.optional_usize("num_class_embeds")? {
            None => 0,
            Some(n) if n >= 2 => n - 1,
            Some(_) => {
                return Err(file.error("num_class_embeds", "this project needs at least 2 (classes and \"no class\")"))
            }
        },
    };
    file.refuse_unknown("UNet2DModel")?;
    config.validate().map_err(|problem| {
        crate::error::Error::format(file.path, format!("describes a U-Net this project cannot build: {problem}"))
    })?;
    Ok(config)
}
