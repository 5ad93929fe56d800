//! The U-Net denoiser (Ronneberger et al. 2015, as adapted for diffusion by Ho et al. 2020, appendix B):
//! residual blocks conditioned on the timestep, group norm, self-attention at low resolution, skip
//! connections from each down level to its up level, strided-conv downsampling and nearest upsampling.
//!
//! ```text
//! temb = Linear(SiLU(Linear(sinusoidal(t, time_embedding_dim))))            [B, time_dim]
//! h = conv_in(x)
//! down level l: (ResBlock → [SelfAttention]) × blocks, each output kept as a skip; Downsample (not last)
//! mid: ResBlock → SelfAttention → ResBlock
//! up level l (deepest first): (ResBlock(cat[h, skip]) → [SelfAttention]) × blocks; Upsample (not level 0)
//! out = Conv3x3(SiLU(GroupNorm(h)))
//!
//! ResBlock(cin → cout):   h = Conv3x3(SiLU(GN(x)));  h += Linear(SiLU(temb)) over H, W;
//!                         h = Conv3x3(Dropout(SiLU(GN(h))));  out = h + (cin = cout ? x : Conv1x1(x))
//! SelfAttention(C, heads): qkv = Conv1x1(C → 3C)(GN(x)), channels [3][heads][C/heads];
//!                         o = softmax(q kᵀ/√d) v per head over the H·W positions;  out = x + Conv1x1(o)
//! ```
//! The preset [`UNetConfig::small`] is the common small DDPM U-Net for 28×28 digits (2,268,513 parameters).

use std::collections::BTreeMap;

use autograd::nn::{Conv2d, Embedding, GroupNorm, Linear};
use autograd::{ParamStore, Tape, Var};
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::error::{check_range, Result};
use crate::metadata::{join, Fields};
use crate::model::denoiser::Denoiser;
use crate::model::embedding::timestep_embedding;

/// Architecture of a [`UNet`].
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
    /// Residual blocks per level (each leaves one skip connection).
    pub blocks_per_level: usize,
    /// Whether level l has self-attention after each residual block.
    pub attention: Vec<bool>,
    pub heads: usize,
    pub groups: usize,
    pub dropout: f32,
    /// Width of the sinusoidal timestep embedding.
    pub time_embedding_dim: usize,
    /// Width of the learned time embedding every residual block reads.
    pub time_dim: usize,
    /// Class-conditional when > 0: a learned vector per class (and one more, index `num_classes`, for "no
    /// class") is added to the time embedding.
    pub num_classes: usize,
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
            heads: 4,
            groups: 8,
            dropout: 0.0,
            time_embedding_dim: 64,
            time_dim: 256,
            num_classes: 0,
        }
    }

    /// A tiny U-Net for tests and CI: 8×8 images, 8 and 16 channels, groups of 4, attention at 4².
    pub fn tiny() -> UNetConfig {
        UNetConfig {
            image_channels: 1,
            image_size: 8,
            base_channels: 8,
            channel_mult: vec![1, 2],
            blocks_per_level: 1,
            attention: vec![false, true],
            heads: 2,
            groups: 4,
            dropout: 0.0,
            time_embedding_dim: 16,
            time_dim: 32,
            num_classes: 0,
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
            heads: 4,
            groups: 8,
            dropout: 0.1,
            time_embedding_dim: 64,
            time_dim: 256,
            num_classes: 0,
        }
    }

    /// A preset by name: `small`, `tiny`, `rgb32`.
    pub fn preset(name: &str) -> Option<UNetConfig> {
        match name {
            "small" => Some(UNetConfig::small()),
            "tiny" => Some(UNetConfig::tiny()),
            "rgb32" => Some(UNetConfig::rgb32()),
            _ => None,
        }
    }

    /// The config as `unet.*` metadata entries (for checkpoints and weight files).
    pub fn to_metadata(&self) -> BTreeMap<String, String> {
        let attention: Vec<u8> = self.attention.iter().map(|&a| a as u8).collect();
        [
            ("image_channels", self.image_channels.to_string()),
            ("image_size", self.image_size.to_string()),
            ("base_channels", self.base_channels.to_string()),
            ("channel_mult", join(&self.channel_mult)),
            ("blocks_per_level", self.blocks_per_level.to_string()),
            ("attention", join(&attention)),
            ("heads", self.heads.to_string()),
            ("groups", self.groups.to_string()),
            ("dropout", self.dropout.to_string()),
            ("time_embedding_dim", self.time_embedding_dim.to_string()),
            ("time_dim", self.time_dim.to_string()),
            ("num_classes", self.num_classes.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (format!("unet.{k}"), v))
        .collect()
    }

    /// The config written by [`UNetConfig::to_metadata`], checked with [`UNetConfig::validate`].
    pub fn from_metadata(fields: &Fields) -> Result<UNetConfig> {
        let attention: Vec<u8> = fields.list("unet.attention")?;
        let config = UNetConfig {
            image_channels: fields.get("unet.image_channels")?,
            image_size: fields.get("unet.image_size")?,
            base_channels: fields.get("unet.base_channels")?,
            channel_mult: fields.list("unet.channel_mult")?,
            blocks_per_level: fields.get("unet.blocks_per_level")?,
            attention: attention.iter().map(|&a| a != 0).collect(),
            heads: fields.get("unet.heads")?,
            groups: fields.get("unet.groups")?,
            dropout: fields.get("unet.dropout")?,
            time_embedding_dim: fields.get("unet.time_embedding_dim")?,
            time_dim: fields.get("unet.time_dim")?,
            // Absent from files written before class conditioning existed: unconditional.
            num_classes: if fields.text("unet.num_classes").is_ok() { fields.get("unet.num_classes")? } else { 0 },
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
        let counts = [
            ("image_channels", self.image_channels, limits::IMAGE_CHANNELS),
            ("image_size", self.image_size, limits::IMAGE_SIZE),
            ("base_channels", self.base_channels, limits::CHANNELS),
            ("blocks_per_level", self.blocks_per_level, limits::BLOCKS_PER_LEVEL),
            ("heads", self.heads, limits::HEADS),
            ("groups", self.groups, limits::GROUPS),
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
        if !self.image_size.is_multiple_of(1 << (levels - 1)) {
            return Err(format!("image_size {} cannot be halved {} times", self.image_size, levels - 1));
        }
        for l in 0..levels {
            let c = self.channels(l);
            check_range(&format!("level {l}'s channels"), &c, &limits::CHANNELS)?;
            if !c.is_multiple_of(self.groups) || !c.is_multiple_of(self.heads) {
                return Err(format!("level {l} has {c} channels, not a multiple of groups and heads"));
            }
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

    /// The network's size without building it: parameters, by the same walk as [`UNet::new`] (a test holds
    /// it to the built store's count), and the floats of the outputs one image's forward pass records on
    /// the tape (an upper estimate: each op's output counted once).
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
        let levels = self.channel_mult.len();
        let blocks = self.blocks_per_level;
        let pixels = |l: usize| (self.image_size as u128 >> l).pow(2);
        let mut p =
            (tdim * td + td) + (td * td + td) + conv(self.image_channels as u128, self.base_channels as u128, 3);
        let mut a = self.base_channels as u128 * pixels(0);
        let mut ch = self.base_channels as u128;
        let mut skips = Vec::new();
        for l in 0..levels {
            let c = self.channels(l) as u128;
            for _ in 0..blocks {
                p += res(ch, c) + if self.attention[l] { attn(c) } else { 0 };
                a += (res_act(ch, c) + if self.attention[l] { attn_act(c) } else { 0 }) * pixels(l);
                ch = c;
                skips.push(c);
            }
            if l + 1 < levels {
                p += conv(c, c, 3);
                a += c * pixels(l + 1);
            }
        }
        let deepest = pixels(levels - 1);
        p += 2 * res(ch, ch) + attn(ch);
        a += (2 * res_act(ch, ch) + attn_act(ch)) * deepest;
        for l in (0..levels).rev() {
            let c = self.channels(l) as u128;
            for _ in 0..blocks {
                let skip = skips.pop().expect("one skip per down block");
                p += res(ch + skip, c) + if self.attention[l] { attn(c) } else { 0 };
                a += (ch + skip + res_act(ch + skip, c) + if self.attention[l] { attn_act(c) } else { 0 }) * pixels(l);
                ch = c;
            }
            if l > 0 {
                p += conv(c, c, 3);
                a += 2 * c * pixels(l - 1);
            }
        }
        p += 2 * ch + conv(ch, self.image_channels as u128, 3);
        a += (ch + self.image_channels as u128) * pixels(0);
        if self.num_classes > 0 {
            p += (self.num_classes as u128 + 1) * td;
        }
        let clamp = |v: u128| usize::try_from(v).unwrap_or(usize::MAX);
        Sizes { parameters: clamp(p), activations_per_image: clamp(a) }
    }

    fn channels(&self, level: usize) -> usize {
        self.base_channels * self.channel_mult[level]
    }
}

struct ResBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    time: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    skip: Option<Conv2d>,
    dropout: f32,
}

impl ResBlock {
    fn new(ps: &mut ParamStore, name: &str, c_in: usize, c_out: usize, cfg: &UNetConfig, rng: &mut StdRng) -> ResBlock {
        ResBlock {
            norm1: GroupNorm::new(ps, &format!("{name}.norm1"), cfg.groups, c_in),
            conv1: Conv2d::new(ps, &format!("{name}.conv1"), c_in, c_out, 3, 1, 1, rng),
            time: Linear::new(ps, &format!("{name}.time"), cfg.time_dim, c_out, rng),
            norm2: GroupNorm::new(ps, &format!("{name}.norm2"), cfg.groups, c_out),
            conv2: Conv2d::new(ps, &format!("{name}.conv2"), c_out, c_out, 3, 1, 1, rng),
            skip: (c_in != c_out).then(|| Conv2d::new(ps, &format!("{name}.skip"), c_in, c_out, 1, 1, 0, rng)),
            dropout: cfg.dropout,
        }
    }

    /// `temb_act` = SiLU(temb) [B, time_dim], shared by every block.
    fn forward(&self, t: &mut Tape, ps: &ParamStore, x: &Var, temb_act: &Var, rng: Option<&mut StdRng>) -> Var {
        let h = self.norm1.forward_silu(t, ps, x);
        let h = self.conv1.forward(t, ps, &h);
        let e = self.time.forward(t, ps, temb_act); // [B, C]
        let (b, c) = (e.shape()[0], e.shape()[1]);
        let e = t.reshape(&e, &[b, c, 1, 1]);
        let h = t.add(&h, &e);
        let mut h = self.norm2.forward_silu(t, ps, &h);
        if let (Some(rng), true) = (rng, self.dropout > 0.0) {
            h = t.dropout(&h, self.dropout, rng);
        }
        let h = self.conv2.forward(t, ps, &h);
        let skip = match &self.skip {
            Some(conv) => conv.forward(t, ps, x),
            None => x.clone(),
        };
        t.add(&h, &skip)
    }
}

struct SelfAttention {
    norm: GroupNorm,
    qkv: Conv2d,
    proj: Conv2d,
    heads: usize,
}

impl SelfAttention {
    fn new(ps: &mut ParamStore, name: &str, c: usize, cfg: &UNetConfig, rng: &mut StdRng) -> SelfAttention {
        SelfAttention {
            norm: GroupNorm::new(ps, &format!("{name}.norm"), cfg.groups, c),
            qkv: Conv2d::new(ps, &format!("{name}.qkv"), c, 3 * c, 1, 1, 0, rng),
            proj: Conv2d::new(ps, &format!("{name}.proj"), c, c, 1, 1, 0, rng),
            heads: cfg.heads,
        }
    }

    fn forward(&self, t: &mut Tape, ps: &ParamStore, x: &Var) -> Var {
        let (b, c, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
        let (heads, d, hw) = (self.heads, c / self.heads, h * w);
        let n = self.norm.forward(t, ps, x);
        let qkv = self.qkv.forward(t, ps, &n); // [B, 3C, H, W], channels [3][heads][d]
        let qkv = t.reshape(&qkv, &[b, 3, heads, d, hw]);
        // q, k, v [B, heads, HW, d]
        let mut parts = (0..3).map(|i| {
            let p = t.narrow(&qkv, 1, i, 1);
            let p = t.reshape(&p, &[b, heads, d, hw]);
            t.transpose(&p, 2, 3)
        });
        let (q, k, v) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        let o = t.scaled_dot_product_attention(&q, &k, &v); // [B, heads, HW, d]
        let o = t.transpose(&o, 2, 3);
        let o = t.reshape(&o, &[b, c, h, w]);
        let o = self.proj.forward(t, ps, &o);
        t.add(x, &o)
    }
}

/// One level's blocks: a residual block and, where configured, self-attention after it.
struct Stage {
    res: ResBlock,
    attn: Option<SelfAttention>,
}

impl Stage {
    fn forward(&self, t: &mut Tape, ps: &ParamStore, x: &Var, temb: &Var, rng: Option<&mut StdRng>) -> Var {
        let h = self.res.forward(t, ps, x, temb, rng);
        match &self.attn {
            Some(attn) => attn.forward(t, ps, &h),
            None => h,
        }
    }
}

/// The U-Net: parameter handles plus the config; its parameters live in a [`ParamStore`].
pub struct UNet {
    pub config: UNetConfig,
    time1: Linear,
    time2: Linear,
    conv_in: Conv2d,
    down: Vec<(Vec<Stage>, Option<Conv2d>)>,
    mid: (ResBlock, SelfAttention, ResBlock),
    up: Vec<(Vec<Stage>, Option<Conv2d>)>,
    out_norm: GroupNorm,
    out_conv: Conv2d,
    class_embedding: Option<Embedding>,
}

impl UNet {
    /// Builds the network, adding its parameters (initialized as PyTorch would, from `seed`) to `params`.
    pub fn new(config: UNetConfig, params: &mut ParamStore, seed: u64) -> UNet {
        let rng = &mut StdRng::seed_from_u64(seed);
        let cfg = &config;
        let levels = cfg.channel_mult.len();
        assert!(cfg.attention.len() == levels, "UNetConfig: attention needs one entry per level");
        let td = cfg.time_dim;
        let time1 = Linear::new(params, "time.linear1", cfg.time_embedding_dim, td, rng);
        let time2 = Linear::new(params, "time.linear2", td, td, rng);
        let conv_in = Conv2d::new(params, "conv_in", cfg.image_channels, cfg.base_channels, 3, 1, 1, rng);
        let stage =
            |ps: &mut ParamStore, name: String, c_in: usize, c_out: usize, attn: bool, rng: &mut StdRng| Stage {
                res: ResBlock::new(ps, &format!("{name}.res"), c_in, c_out, cfg, rng),
                attn: attn.then(|| SelfAttention::new(ps, &format!("{name}.attn"), c_out, cfg, rng)),
            };

        let mut down = Vec::new();
        let mut skip_channels = Vec::new();
        let mut ch = cfg.base_channels;
        for l in 0..levels {
            let c = cfg.channels(l);
            let stages = (0..cfg.blocks_per_level)
                .map(|b| {
                    let s = stage(params, format!("down{l}.{b}"), ch, c, cfg.attention[l], rng);
                    ch = c;
                    skip_channels.push(c);
                    s
                })
                .collect();
            let downsample =
                (l + 1 < levels).then(|| Conv2d::new(params, &format!("down{l}.downsample"), c, c, 3, 2, 1, rng));
            down.push((stages, downsample));
        }
        let mid = (
            ResBlock::new(params, "mid.res1", ch, ch, cfg, rng),
            SelfAttention::new(params, "mid.attn", ch, cfg, rng),
            ResBlock::new(params, "mid.res2", ch, ch, cfg, rng),
        );
        let mut up = Vec::new();
        for l in (0..levels).rev() {
            let c = cfg.channels(l);
            let stages = (0..cfg.blocks_per_level)
                .map(|b| {
                    let skip = skip_channels.pop().expect("one skip per down block");
                    let s = stage(params, format!("up{l}.{b}"), ch + skip, c, cfg.attention[l], rng);
                    ch = c;
                    s
                })
                .collect();
            let upsample = (l > 0).then(|| Conv2d::new(params, &format!("up{l}.upsample"), c, c, 3, 1, 1, rng));
            up.push((stages, upsample));
        }
        let out_norm = GroupNorm::new(params, "out.norm", cfg.groups, ch);
        let out_conv = Conv2d::new(params, "out.conv", ch, cfg.image_channels, 3, 1, 1, rng);
        // Last, so that an unconditional model's parameters are initialized the same with or without it.
        let class_embedding =
            (cfg.num_classes > 0).then(|| Embedding::new(params, "class_embedding", cfg.num_classes + 1, td, rng));
        UNet { config, time1, time2, conv_in, down, mid, up, out_norm, out_conv, class_embedding }
    }

    /// The network's output for x_t [B, C, H, W] at timesteps t, for class `labels` (a conditional model;
    /// `None` or the label `num_classes` means "no class"); `rng` enables dropout (training).
    pub fn forward(
        &self,
        t: &mut Tape,
        ps: &ParamStore,
        x: &Var,
        timesteps: &[f32],
        labels: Option<&[usize]>,
        mut rng: Option<&mut StdRng>,
    ) -> Var {
        let cfg = &self.config;
        let emb = t.constant(timestep_embedding(timesteps, cfg.time_embedding_dim, 10000.0));
        let temb = self.time1.forward(t, ps, &emb);
        let temb = t.silu(&temb);
        let mut temb = self.time2.forward(t, ps, &temb);
        match (&self.class_embedding, labels) {
            (Some(table), labels) => {
                let null = vec![cfg.num_classes; timesteps.len()];
                let labels = labels.unwrap_or(&null);
                assert_eq!(
                    labels.len(),
                    timesteps.len(),
                    "UNet: {} labels for a batch of {}",
                    labels.len(),
                    timesteps.len()
                );
                let class = table.forward(t, ps, labels);
                temb = t.add(&temb, &class);
            }
            (None, Some(_)) => panic!("UNet: class labels given to a model without classes (num_classes = 0)"),
            (None, None) => {}
        }
        let temb = t.silu(&temb); // every ResBlock applies SiLU to temb first; do it once here

        let mut h = self.conv_in.forward(t, ps, x);
        let mut skips = Vec::new();
        for (stages, downsample) in &self.down {
            for stage in stages {
                h = stage.forward(t, ps, &h, &temb, rng.as_deref_mut());
                skips.push(h.clone());
            }
            if let Some(conv) = downsample {
                h = conv.forward(t, ps, &h);
            }
        }
        h = self.mid.0.forward(t, ps, &h, &temb, rng.as_deref_mut());
        h = self.mid.1.forward(t, ps, &h);
        h = self.mid.2.forward(t, ps, &h, &temb, rng.as_deref_mut());
        for (stages, upsample) in &self.up {
            for stage in stages {
                let skip = skips.pop().expect("one skip per up block");
                let cat = t.concat(&[&h, &skip], 1);
                h = stage.forward(t, ps, &cat, &temb, rng.as_deref_mut());
            }
            if let Some(conv) = upsample {
                let u = t.upsample_nearest2d(&h, 2);
                h = conv.forward(t, ps, &u);
            }
        }
        let h = self.out_norm.forward_silu(t, ps, &h);
        self.out_conv.forward(t, ps, &h)
    }
}

impl UNet {
    /// [`UNet::forward`] at integer timesteps, as samplers and losses have them.
    pub fn forward_at(
        &self,
        t: &mut Tape,
        ps: &ParamStore,
        x: &Var,
        timesteps: &[usize],
        labels: Option<&[usize]>,
        rng: Option<&mut StdRng>,
    ) -> Var {
        let ts: Vec<f32> = timesteps.iter().map(|&v| v as f32).collect();
        self.forward(t, ps, x, &ts, labels, rng)
    }
}

impl Denoiser for UNet {
    fn predict(&self, tape: &mut Tape, params: &ParamStore, x_t: &Var, t: &[usize]) -> Var {
        self.forward_at(tape, params, x_t, t, None, None)
    }

    fn predict_train(&self, tape: &mut Tape, params: &ParamStore, x_t: &Var, t: &[usize], rng: &mut StdRng) -> Var {
        self.forward_at(tape, params, x_t, t, None, Some(rng))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autograd::Tensor;

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
        configs.push(UNetConfig {
            channel_mult: vec![1, 1, 3],
            attention: vec![true, false, true],
            ..UNetConfig::small()
        });
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

    #[test]
    fn config_round_trips_through_metadata_and_bad_configs_are_errors() {
        let path = std::path::Path::new("model.safetensors");
        for config in [UNetConfig::small(), UNetConfig::tiny(), UNetConfig::rgb32()] {
            let meta = config.to_metadata();
            assert_eq!(UNetConfig::from_metadata(&Fields::new(path, &meta)).unwrap(), config);
        }
        let mut meta = UNetConfig::tiny().to_metadata();
        meta.insert("unet.groups".into(), "3".into());
        let err = UNetConfig::from_metadata(&Fields::new(path, &meta)).unwrap_err().to_string();
        let expected = "level 0 has 8 channels, not a multiple of groups and heads";
        assert_eq!(err, format!("model.safetensors: describes an impossible U-Net: {expected}"));
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
        let mut tape = Tape::new();
        let x = tape.constant(Tensor::randn_seeded(&[2, 1, 8, 8], 1));
        let y = net.forward(&mut tape, &params, &x, &[3.0, 500.0], None, None);
        assert_eq!(y.shape(), &[2, 1, 8, 8]);
        let loss = tape.mean_all(&y);
        let grads = tape.backward(&loss);
        for (id, name, _) in params.iter() {
            assert!(grads.param(id).is_some(), "{name} has no gradient");
        }
    }
}
