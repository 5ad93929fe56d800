//! The U-Net's architecture as data: [`UNetConfig`], its presets, the limits every config is checked against,
//! its metadata form and its size, computed without building it.

use std::collections::BTreeMap;

use crate::error::{check_range, Result};
use crate::metadata::{join, Fields};

/// Architecture of a [`super::UNet`].
#[derive(Clone, Debug, PartialEq)]
pub struct UNetConfig {
    /// Image channels in and out (1 for MNIST, 3 for RGB).
    pub image_channels: usize,
    /// Image height and width.
    pub image_size: usize,
    /// Channels at the first level.
    pub base_channels: usize,
    /// Channels of level l = base_channels · channel_mult[l].
    pub channel_mult: Vec<usize>,
    /// Residual blocks per level on the way down (each leaves one skip connection).
    pub blocks_per_level: usize,
    /// Whether level l has self-attention after each residual block.
    pub attention: Vec<bool>,
    /// Attention heads: a count at every level, or a width (heads = channels / width).
    pub heads: Heads,
    /// Groups of every group norm, and their ε.
    pub groups: usize,
    pub norm_eps: f32,
    pub dropout: f32,
    /// Which outputs of the way down the way up reads.
    pub topology: Topology,
    /// Downsampling: a stride-2 3×3 convolution padded by 1 all round, or (0) padded on the right and
    /// bottom only (diffusers' `downsample_padding=0`).
    pub downsample_padding: usize,
    /// Width of the sinusoidal timestep embedding, and its convention ([`crate::model::embedding`]).
    pub time_embedding_dim: usize,
    pub flip_sin_to_cos: bool,
    pub freq_shift: usize,
    /// Width of the learned time embedding every residual block reads.
    pub time_dim: usize,
    /// Class-conditional when > 0: a learned vector per class (and one more, index `num_classes`, for "no
    /// class") is added to the time embedding.
    pub num_classes: usize,
}

/// Attention heads of every self-attention layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Heads {
    /// The same number of heads at every level (this project's presets).
    Count(usize),
    /// Heads of this width: channels / width heads (diffusers' `attention_head_dim`).
    Width(usize),
}

/// Which outputs of the way down the way up reads through its skip connections.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Topology {
    /// Each residual block of the way down leaves one skip; each up level has `blocks_per_level` blocks.
    Compact,
    /// As in Ho et al.'s DDPM code and diffusers' `UNet2DModel`: conv_in's output, every residual block's
    /// and every downsampler's output are skips; each up level has `blocks_per_level + 1` blocks.
    Diffusers,
}

/// The range of every number of a [`UNetConfig`], checked by [`UNetConfig::validate`] whatever the config
/// came from (a preset, flags, a file's metadata). Wide enough for any model a CPU trains; narrow enough
/// that a corrupt number cannot ask for all the memory there is.
pub mod limits {
    use std::ops::RangeInclusive;

    pub const IMAGE_CHANNELS: RangeInclusive<usize> = 1..=4;
    pub const IMAGE_SIZE: RangeInclusive<usize> = 1..=1024;
    /// Channels of any level (and `base_channels`).
    pub const CHANNELS: RangeInclusive<usize> = 1..=2048;
    pub const CHANNEL_MULT: RangeInclusive<usize> = 1..=64;
    pub const LEVELS: RangeInclusive<usize> = 1..=8;
    pub const BLOCKS_PER_LEVEL: RangeInclusive<usize> = 1..=16;
    pub const HEADS: RangeInclusive<usize> = 1..=256;
    /// A head's width ([`super::Heads::Width`]).
    pub const HEAD_WIDTH: RangeInclusive<usize> = 1..=2048;
    pub const GROUPS: RangeInclusive<usize> = 1..=2048;
    /// `time_embedding_dim` (which must also be even) and `time_dim`.
    pub const TIME_DIM: RangeInclusive<usize> = 1..=8192;
    pub const NUM_CLASSES: RangeInclusive<usize> = 0..=100_000;
    /// At most 500 M parameters: 2 GB of f32, 10 GB to train.
    pub const PARAMETERS: usize = 500_000_000;
    /// What [`super::UNetConfig::check_memory`] lets a batch take: 16 GiB.
    pub const MEMORY_BYTES: u64 = 16 << 30;
}

/// The size of a U-Net, computed from its config alone ([`UNetConfig::sizes`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sizes {
    pub parameters: usize,
    /// Floats of the op outputs one image's forward pass records (an upper estimate).
    pub activations_per_image: usize,
}

/// A byte count for a message: "3.2 GB".
fn bytes(n: u128) -> String {
    match n {
        n if n >= 1 << 40 => format!("{:.1} TB", n as f64 / (1u64 << 40) as f64),
        n if n >= 1 << 30 => format!("{:.1} GB", n as f64 / (1u64 << 30) as f64),
        n => format!("{:.1} MB", n as f64 / (1u64 << 20) as f64),
    }
}

impl UNetConfig {
    /// The small DDPM U-Net for 1×28×28: levels of 32, 64, 128 channels at 28², 14², 7², one residual block
    /// per level, attention at 7² and in the middle, 4 heads, GroupNorm(8). 2,268,513 parameters.
    pub fn small() -> UNetConfig {
        UNetConfig {
            image_channels: 1,
            image_size: 28,
            base_channels: 32,
            channel_mult: vec![1, 2, 4],
            blocks_per_level: 1,
            attention: vec![false, false, true],
            heads: Heads::Count(4),
            groups: 8,
            norm_eps: 1e-5,
            dropout: 0.0,
            topology: Topology::Compact,
            downsample_padding: 1,
            time_embedding_dim: 64,
            flip_sin_to_cos: true,
            freq_shift: 0,
            time_dim: 256,
            num_classes: 0,
        }
    }

    /// A tiny U-Net for tests and CI: 8×8 images, 8 and 16 channels, groups of 4, attention at 4².
    pub fn tiny() -> UNetConfig {
        UNetConfig {
            image_size: 8,
            base_channels: 8,
            channel_mult: vec![1, 2],
            attention: vec![false, true],
            heads: Heads::Count(2),
            groups: 4,
            time_embedding_dim: 16,
            time_dim: 32,
            ..UNetConfig::small()
        }
    }

    /// For 3×32×32 RGB (CIFAR-10 size): 64, 128, 128 channels at 32², 16², 8², two blocks per level,
    /// attention at 16², dropout 0.1 (the proportions of Ho et al.'s CIFAR-10 model, at about a third of
    /// its width).
    pub fn rgb32() -> UNetConfig {
        UNetConfig {
            image_channels: 3,
            image_size: 32,
            base_channels: 64,
            channel_mult: vec![1, 2, 2],
            blocks_per_level: 2,
            attention: vec![false, true, false],
            dropout: 0.1,
            ..UNetConfig::small()
        }
    }

    /// diffusers' `UNet2DModel` for 1×28×28 digits, as its MNIST examples configure it: `block_out_channels`
    /// (32, 64, 128), `layers_per_block` 2, DownBlock2D, DownBlock2D, AttnDownBlock2D and the mirror,
    /// `norm_num_groups` 8, `attention_head_dim` 32 (4 heads at 128 channels, as in `small`), the time
    /// embedding of `UNet2DModel` (32 wide, then 128). Exported and imported by [`crate::interop::diffusers`].
    pub fn diffusers_mnist() -> UNetConfig {
        UNetConfig {
            blocks_per_level: 2,
            heads: Heads::Width(32),
            topology: Topology::Diffusers,
            time_embedding_dim: 32,
            time_dim: 128,
            ..UNetConfig::small()
        }
    }

    /// The names [`UNetConfig::preset`] knows.
    pub const PRESETS: &'static str = "small, tiny, rgb32, diffusers-mnist";

    /// A preset by name: `small`, `tiny`, `rgb32`, `diffusers-mnist`.
    pub fn preset(name: &str) -> Option<UNetConfig> {
        match name {
            "small" => Some(UNetConfig::small()),
            "tiny" => Some(UNetConfig::tiny()),
            "rgb32" => Some(UNetConfig::rgb32()),
            "diffusers-mnist" => Some(UNetConfig::diffusers_mnist()),
            _ => None,
        }
    }

    /// The config as `unet.*` metadata entries (for checkpoints and weight files). What the first presets do
    /// (heads by count, ε = 1e-5, compact skips, padding 1, cos first, no shift) is not written, so their
    /// files are what they were before these options existed, and a file without these entries means them.
    pub fn to_metadata(&self) -> BTreeMap<String, String> {
        let attention: Vec<u8> = self.attention.iter().map(|&a| a as u8).collect();
        let mut entries = vec![
            ("image_channels", self.image_channels.to_string()),
            ("image_size", self.image_size.to_string()),
            ("base_channels", self.base_channels.to_string()),
            ("channel_mult", join(&self.channel_mult)),
            ("blocks_per_level", self.blocks_per_level.to_string()),
            ("attention", join(&attention)),
            ("groups", self.groups.to_string()),
            ("dropout", self.dropout.to_string()),
            ("time_embedding_dim", self.time_embedding_dim.to_string()),
            ("time_dim", self.time_dim.to_string()),
            ("num_classes", self.num_classes.to_string()),
        ];
        entries.push(match self.heads {
            Heads::Count(n) => ("heads", n.to_string()),
            Heads::Width(w) => ("head_width", w.to_string()),
        });
        if self.norm_eps != 1e-5 {
            entries.push(("norm_eps", self.norm_eps.to_string()));
        }
        if self.topology == Topology::Diffusers {
            entries.push(("topology", "diffusers".to_string()));
        }
        if self.downsample_padding != 1 {
            entries.push(("downsample_padding", self.downsample_padding.to_string()));
        }
        if !self.flip_sin_to_cos {
            entries.push(("flip_sin_to_cos", "false".to_string()));
        }
        if self.freq_shift != 0 {
            entries.push(("freq_shift", self.freq_shift.to_string()));
        }
        entries.into_iter().map(|(k, v)| (format!("unet.{k}"), v)).collect()
    }

    /// The config written by [`UNetConfig::to_metadata`], checked with [`UNetConfig::validate`].
    pub fn from_metadata(fields: &Fields) -> Result<UNetConfig> {
        let attention: Vec<u8> = fields.list("unet.attention")?;
        let has = |key: &str| fields.text(key).is_ok();
        let topology = match fields.text("unet.topology") {
            Err(_) => Topology::Compact,
            Ok("diffusers") => Topology::Diffusers,
            Ok(other) => return Err(fields.error(format!("has an unknown unet.topology {other:?} (diffusers)"))),
        };
        let config = UNetConfig {
            image_channels: fields.get("unet.image_channels")?,
            image_size: fields.get("unet.image_size")?,
            base_channels: fields.get("unet.base_channels")?,
            channel_mult: fields.list("unet.channel_mult")?,
            blocks_per_level: fields.get("unet.blocks_per_level")?,
            attention: attention.iter().map(|&a| a != 0).collect(),
            heads: if has("unet.head_width") {
                Heads::Width(fields.get("unet.head_width")?)
            } else {
                Heads::Count(fields.get("unet.heads")?)
            },
            groups: fields.get("unet.groups")?,
            norm_eps: if has("unet.norm_eps") { fields.get("unet.norm_eps")? } else { 1e-5 },
            dropout: fields.get("unet.dropout")?,
            topology,
            downsample_padding: if has("unet.downsample_padding") {
                fields.get("unet.downsample_padding")?
            } else {
                1
            },
            time_embedding_dim: fields.get("unet.time_embedding_dim")?,
            flip_sin_to_cos: if has("unet.flip_sin_to_cos") { fields.get("unet.flip_sin_to_cos")? } else { true },
            freq_shift: if has("unet.freq_shift") { fields.get("unet.freq_shift")? } else { 0 },
            time_dim: fields.get("unet.time_dim")?,
            // Absent from files written before class conditioning existed: unconditional.
            num_classes: if has("unet.num_classes") { fields.get("unet.num_classes")? } else { 0 },
        };
        config.validate().map_err(|problem| fields.error(format!("describes an impossible U-Net: {problem}")))?;
        Ok(config)
    }

    /// Whether a U-Net can be built from this config; if not, what is wrong. Every number is checked against
    /// [`limits`] before anything derived from it is computed, and then the size of the network against
    /// [`limits::PARAMETERS`], so a config read from a file cannot size an absurd allocation.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let levels = self.channel_mult.len();
        check_range("levels (channel_mult entries)", &levels, &limits::LEVELS)?;
        let (heads_name, heads, heads_range) = match self.heads {
            Heads::Count(n) => ("heads", n, limits::HEADS),
            Heads::Width(w) => ("head_width", w, limits::HEAD_WIDTH),
        };
        let counts = [
            ("image_channels", self.image_channels, limits::IMAGE_CHANNELS),
            ("image_size", self.image_size, limits::IMAGE_SIZE),
            ("base_channels", self.base_channels, limits::CHANNELS),
            ("blocks_per_level", self.blocks_per_level, limits::BLOCKS_PER_LEVEL),
            (heads_name, heads, heads_range),
            ("groups", self.groups, limits::GROUPS),
            ("downsample_padding", self.downsample_padding, 0..=1),
            ("time_embedding_dim", self.time_embedding_dim, limits::TIME_DIM),
            ("time_dim", self.time_dim, limits::TIME_DIM),
            ("num_classes", self.num_classes, limits::NUM_CLASSES),
        ];
        for (name, value, range) in counts {
            check_range(name, &value, &range)?;
        }
        for &m in &self.channel_mult {
            check_range("a channel_mult entry", &m, &limits::CHANNEL_MULT)?;
        }
        if self.attention.len() != levels {
            return Err(format!("attention has {} entries for {levels} levels", self.attention.len()));
        }
        if !self.time_embedding_dim.is_multiple_of(2) {
            return Err(format!("time_embedding_dim {} is not even", self.time_embedding_dim));
        }
        if self.freq_shift >= self.time_embedding_dim / 2 {
            return Err(format!(
                "freq_shift {} is not below half the time_embedding_dim {}",
                self.freq_shift, self.time_embedding_dim
            ));
        }
        if !(self.norm_eps > 0.0 && self.norm_eps <= 1.0) {
            return Err(format!("norm_eps {} is not in (0, 1]", self.norm_eps));
        }
        if !self.image_size.is_multiple_of(1 << (levels - 1)) {
            return Err(format!("image_size {} cannot be halved {} times", self.image_size, levels - 1));
        }
        for l in 0..levels {
            let c = self.channels(l);
            check_range(&format!("level {l}'s channels"), &c, &limits::CHANNELS)?;
            if !c.is_multiple_of(self.groups) {
                return Err(format!("level {l} has {c} channels, not a multiple of groups"));
            }
            // Attention runs at the levels that have it and in the middle (at the deepest level).
            let attends = self.attention[l] || l + 1 == levels;
            if attends && !c.is_multiple_of(heads) {
                return Err(format!("level {l} has {c} channels, not a multiple of {heads_name}"));
            }
        }
        if !self.base_channels.is_multiple_of(self.groups) {
            return Err(format!("base_channels {} is not a multiple of groups", self.base_channels));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("dropout {} is not in [0, 1)", self.dropout));
        }
        let parameters = self.sizes().parameters;
        if parameters > limits::PARAMETERS {
            return Err(format!(
                "{parameters} parameters ({} as f32, 5 times that to train) are over the limit of {}",
                bytes(4 * parameters as u128),
                limits::PARAMETERS
            ));
        }
        Ok(())
    }

    /// Fails with what it would take when `batch` images at once would need more than
    /// [`limits::MEMORY_BYTES`] (an estimate from [`UNetConfig::sizes`]): training keeps every activation
    /// for the backward pass, plus the gradients, the EMA and Adam's two moments (5 floats per parameter);
    /// sampling is bounded by the same activations (it keeps fewer) and one copy of the weights.
    /// Call after [`UNetConfig::validate`].
    pub fn check_memory(&self, batch: usize, training: bool) -> std::result::Result<(), String> {
        let sizes = self.sizes();
        let (weights, activations) = if training { (5, 2) } else { (1, 1) };
        let floats = (weights * sizes.parameters as u128)
            .saturating_add((activations * batch as u128).saturating_mul(sizes.activations_per_image as u128));
        let needed = floats.saturating_mul(4);
        if needed <= limits::MEMORY_BYTES as u128 {
            return Ok(());
        }
        let what = if training { "training on" } else { "sampling" };
        Err(format!(
            "{what} {batch} images at once would take about {} with this U-Net (limit {})",
            bytes(needed),
            bytes(limits::MEMORY_BYTES as u128)
        ))
    }

    /// The network's size without building it: parameters, from the same [`Plan`] as [`super::UNet::new`]
    /// builds (a test holds it to the built store's count), and the floats of the outputs one image's
    /// forward pass records on the tape (an upper estimate: each op's output counted once).
    pub fn sizes(&self) -> Sizes {
        let conv = |c_in: u128, c_out: u128, k: u128| c_out * c_in * k * k + c_out;
        let (td, tdim) = (self.time_dim as u128, self.time_embedding_dim as u128);
        let res = |c_in: u128, c_out: u128| {
            let skip = if c_in != c_out { conv(c_in, c_out, 1) } else { 0 };
            2 * c_in + conv(c_in, c_out, 3) + (td * c_out + c_out) + 2 * c_out + conv(c_out, c_out, 3) + skip
        };
        let attn = |c: u128| 2 * c + conv(c, 3 * c, 1) + conv(c, c, 1);
        // Recorded outputs per pixel: a residual block c_in + 6·c_out, attention 11·c.
        let (res_act, attn_act) = (|c_in: u128, c_out: u128| c_in + 6 * c_out, |c: u128| 11 * c);
        let block = |b: &Block| {
            let (c_in, c_out) = (b.c_in as u128, b.c_out as u128);
            let (p, a) = if b.attention { (attn(c_out), attn_act(c_out)) } else { (0, 0) };
            (res(c_in, c_out) + p, res_act(c_in, c_out) + a)
        };
        let pixels = |l: usize| (self.image_size as u128 >> l).pow(2);
        let plan = self.plan();
        let mut p =
            (tdim * td + td) + (td * td + td) + conv(self.image_channels as u128, self.base_channels as u128, 3);
        let mut a = self.base_channels as u128 * pixels(0);
        for (l, level) in plan.down.iter().enumerate() {
            for b in &level.blocks {
                let (bp, ba) = block(b);
                p += bp;
                a += ba * pixels(l);
            }
            if level.resample.is_some() {
                let c = level.channels as u128;
                p += conv(c, c, 3);
                // The output, and with padding 0 the padded copy.
                a += c * pixels(l + 1) + if self.downsample_padding == 0 { 2 * c * pixels(l) } else { 0 };
            }
        }
        let (ch, deepest) = (plan.mid as u128, pixels(plan.down.len() - 1));
        p += 2 * res(ch, ch) + attn(ch);
        a += (2 * res_act(ch, ch) + attn_act(ch)) * deepest;
        for level in &plan.up {
            let l = level.level;
            for b in &level.blocks {
                let (bp, ba) = block(b);
                p += bp;
                a += (b.c_in as u128 + ba) * pixels(l); // the concatenation, then the block
            }
            if level.resample.is_some() {
                let c = level.channels as u128;
                p += conv(c, c, 3);
                a += 2 * c * pixels(l - 1);
            }
        }
        let out = plan.up.last().map_or(ch, |level| level.channels as u128);
        p += 2 * out + conv(out, self.image_channels as u128, 3);
        a += (out + self.image_channels as u128) * pixels(0);
        if self.num_classes > 0 {
            p += (self.num_classes as u128 + 1) * td;
        }
        let clamp = |v: u128| usize::try_from(v).unwrap_or(usize::MAX);
        Sizes { parameters: clamp(p), activations_per_image: clamp(a) }
    }

    /// Channels of level `level`.
    pub fn channels(&self, level: usize) -> usize {
        self.base_channels * self.channel_mult[level]
    }

    /// Attention heads at a level of `channels` channels.
    pub fn heads_at(&self, channels: usize) -> usize {
        match self.heads {
            Heads::Count(n) => n,
            Heads::Width(w) => channels / w,
        }
    }

    /// Every residual block of the network with its channels, in the order [`super::UNet::new`] builds
    /// them: the walk of the skip connections, written once.
    pub(super) fn plan(&self) -> Plan {
        let levels = self.channel_mult.len();
        let diffusers = self.topology == Topology::Diffusers;
        let mut skips = Vec::new();
        if diffusers {
            skips.push(self.base_channels); // conv_in's output
        }
        let mut ch = self.base_channels;
        let mut down = Vec::new();
        for l in 0..levels {
            let c = self.channels(l);
            let blocks = (0..self.blocks_per_level)
                .map(|b| {
                    let block =
                        Block { name: format!("down{l}.{b}"), c_in: ch, c_out: c, attention: self.attention[l] };
                    ch = c;
                    skips.push(c);
                    block
                })
                .collect();
            let resample = (l + 1 < levels).then(|| format!("down{l}.downsample"));
            if resample.is_some() && diffusers {
                skips.push(c); // the downsampler's output
            }
            down.push(Level { level: l, channels: c, blocks, resample });
        }
        let mid = ch;
        let mut up = Vec::new();
        for l in (0..levels).rev() {
            let c = self.channels(l);
            let blocks = (0..self.blocks_per_level + diffusers as usize)
                .map(|b| {
                    let skip = skips.pop().expect("one skip per up block");
                    let block =
                        Block { name: format!("up{l}.{b}"), c_in: ch + skip, c_out: c, attention: self.attention[l] };
                    ch = c;
                    block
                })
                .collect();
            up.push(Level { level: l, channels: c, blocks, resample: (l > 0).then(|| format!("up{l}.upsample")) });
        }
        Plan { down, mid, up }
    }
}

/// A residual block (with self-attention after it if `attention`), named for its parameters.
pub(super) struct Block {
    pub name: String,
    pub c_in: usize,
    pub c_out: usize,
    pub attention: bool,
}

/// A level's blocks, then its downsampler (on the way down, not at the deepest level) or upsampler (on the
/// way up, not at level 0), named `resample`.
pub(super) struct Level {
    pub level: usize,
    pub channels: usize,
    pub blocks: Vec<Block>,
    pub resample: Option<String>,
}

/// The way down (level 0 first), the middle's channels, the way up (deepest level first).
pub(super) struct Plan {
    pub down: Vec<Level>,
    pub mid: usize,
    pub up: Vec<Level>,
}
