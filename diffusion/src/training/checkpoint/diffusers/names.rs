//! Which diffusers tensor each parameter of a [`Topology::Diffusers`](crate::model::unet::Topology) U-Net
//! is, and how its layout differs:
//!
//! | this project                         | diffusers `UNet2DModel`                                     |
//! |--------------------------------------|-------------------------------------------------------------|
//! | `time.linear1`, `time.linear2`       | `time_embedding.linear_1`, `time_embedding.linear_2`        |
//! | `down{l}.{b}.res.{norm1,conv1,norm2,conv2}` | `down_blocks.{l}.resnets.{b}.{same}`                 |
//! | `….res.time`, `….res.skip`           | `….time_emb_proj`, `….conv_shortcut`                        |
//! | `down{l}.{b}.attn.norm`              | `down_blocks.{l}.attentions.{b}.group_norm`                 |
//! | `….attn.qkv` (1×1 conv, C → 3C)      | `….to_q`, `….to_k`, `….to_v` (linear, C → C each: rows 0–C, C–2C, 2C–3C) |
//! | `….attn.proj` (1×1 conv [C, C, 1, 1]) | `….to_out.0` (linear [C, C]: the same numbers)             |
//! | `down{l}.downsample`                 | `down_blocks.{l}.downsamplers.0.conv`                       |
//! | `mid.res1`, `mid.attn`, `mid.res2`   | `mid_block.resnets.0`, `mid_block.attentions.0`, `mid_block.resnets.1` |
//! | `up{l}.…`, `up{l}.upsample`          | `up_blocks.{L−1−l}.…`, `up_blocks.{L−1−l}.upsamplers.0.conv` (diffusers counts the way up from the deepest level) |
//! | `out.norm`, `out.conv`               | `conv_norm_out`, `conv_out`                                 |
//! | `conv_in`, `class_embedding`         | the same                                                    |
//!
//! Convolutions, linear layers, norms and the class table have the same layouts in both (PyTorch's).

/// One diffusers tensor: its name, its shape, and which of our parameter's values it holds
/// (`offset`, `len` into the parameter's data, in order).
#[derive(Clone, Debug, PartialEq)]
pub struct Part {
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
}

/// The diffusers tensors that hold our parameter `name` of shape `shape`, in a U-Net of `levels` levels.
pub fn parts(name: &str, shape: &[usize], levels: usize) -> Vec<Part> {
    let theirs = their_name(name, levels);
    let (stem, kind) = theirs.rsplit_once('.').expect("parameter names end in .weight or .bias");
    if let Some(block) = stem.strip_suffix(".qkv") {
        let c = shape[0] / 3;
        let shape = if kind == "weight" { vec![c, shape[1]] } else { vec![c] };
        let size: usize = shape.iter().product();
        return ["to_q", "to_k", "to_v"]
            .iter()
            .enumerate()
            .map(|(i, part)| Part { name: format!("{block}.{part}.{kind}"), shape: shape.clone(), offset: i * size })
            .collect();
    }
    let shape = match stem.strip_suffix(".to_out.0") {
        Some(_) if kind == "weight" => shape[..2].to_vec(), // [C, C, 1, 1] → [C, C]
        _ => shape.to_vec(),
    };
    vec![Part { name: theirs, shape, offset: 0 }]
}

/// Our parameter name as diffusers spells it (an attention's `qkv` is left as `.qkv`, for [`parts`] to
/// split).
fn their_name(name: &str, levels: usize) -> String {
    let segments: Vec<&str> = name.split('.').collect();
    let mut out: Vec<String> = Vec::new();
    let mut rest = &segments[..];
    match rest {
        ["time", "linear1", tail @ ..] => {
            out.push("time_embedding.linear_1".into());
            rest = tail;
        }
        ["time", "linear2", tail @ ..] => {
            out.push("time_embedding.linear_2".into());
            rest = tail;
        }
        ["out", "norm", tail @ ..] => {
            out.push("conv_norm_out".into());
            rest = tail;
        }
        ["out", "conv", tail @ ..] => {
            out.push("conv_out".into());
            rest = tail;
        }
        ["mid", part, tail @ ..] => {
            out.push(
                match *part {
                    "res1" => "mid_block.resnets.0",
                    "res2" => "mid_block.resnets.1",
                    _ => "mid_block.attentions.0",
                }
                .into(),
            );
            rest = tail;
        }
        [level, tail @ ..] if level.starts_with("down") || level.starts_with("up") => {
            let (side, l) = if let Some(l) = level.strip_prefix("down") { ("down", l) } else { ("up", &level[2..]) };
            let l: usize = l.parse().expect("level names are down{l} and up{l}");
            let index = if side == "down" { l } else { levels - 1 - l };
            out.push(format!("{side}_blocks.{index}"));
            match tail {
                ["downsample", t @ ..] => {
                    out.push("downsamplers.0.conv".into());
                    rest = t;
                }
                ["upsample", t @ ..] => {
                    out.push("upsamplers.0.conv".into());
                    rest = t;
                }
                [block, "res", t @ ..] => {
                    out.push(format!("resnets.{block}"));
                    rest = t;
                }
                [block, "attn", t @ ..] => {
                    out.push(format!("attentions.{block}"));
                    rest = t;
                }
                _ => rest = tail,
            }
        }
        _ => {}
    }
    for segment in rest {
        out.push(
            match *segment {
                "time" => "time_emb_proj",
                "skip" => "conv_shortcut",
                "norm" => "group_norm",
                "proj" => "to_out.0",
                other => other,
            }
            .into(),
        );
    }
    out.join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_unet2dmodel() {
        let one = |name: &str, shape: &[usize]| {
            let parts = parts(name, shape, 3);
            assert_eq!(parts.len(), 1, "{name}");
            (parts[0].name.clone(), parts[0].shape.clone())
        };
        assert_eq!(one("time.linear1.weight", &[128, 32]).0, "time_embedding.linear_1.weight");
        assert_eq!(one("down1.0.res.time.bias", &[64]).0, "down_blocks.1.resnets.0.time_emb_proj.bias");
        assert_eq!(one("down0.1.res.skip.weight", &[64, 32, 1, 1]).0, "down_blocks.0.resnets.1.conv_shortcut.weight");
        assert_eq!(one("down1.downsample.weight", &[64, 64, 3, 3]).0, "down_blocks.1.downsamplers.0.conv.weight");
        assert_eq!(one("up2.1.attn.norm.weight", &[128]).0, "up_blocks.0.attentions.1.group_norm.weight");
        assert_eq!(one("up1.upsample.bias", &[64]).0, "up_blocks.1.upsamplers.0.conv.bias");
        assert_eq!(one("mid.res2.norm1.weight", &[128]).0, "mid_block.resnets.1.norm1.weight");
        assert_eq!(one("out.conv.weight", &[1, 32, 3, 3]).0, "conv_out.weight");
        assert_eq!(one("conv_in.bias", &[32]).0, "conv_in.bias");
        assert_eq!(one("class_embedding.weight", &[11, 128]).0, "class_embedding.weight");
        let proj = one("mid.attn.proj.weight", &[128, 128, 1, 1]);
        assert_eq!(proj, ("mid_block.attentions.0.to_out.0.weight".into(), vec![128, 128]));
        let qkv = parts("down2.0.attn.qkv.weight", &[384, 128, 1, 1], 3);
        let names: Vec<&str> = qkv.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "down_blocks.2.attentions.0.to_q.weight",
                "down_blocks.2.attentions.0.to_k.weight",
                "down_blocks.2.attentions.0.to_v.weight"
            ]
        );
        assert_eq!((qkv[1].shape.clone(), qkv[1].offset, qkv[2].offset), (vec![128, 128], 128 * 128, 2 * 128 * 128));
        let bias = parts("up2.0.attn.qkv.bias", &[384], 3);
        assert_eq!((bias[2].name.as_str(), bias[2].offset), ("up_blocks.0.attentions.0.to_v.bias", 256));
    }
}
