//! The U-Net denoiser (Ronneberger et al. 2015, as adapted for diffusion by Ho et al. 2020, appendix B):
//! residual blocks conditioned on the timestep, group norm, self-attention at low resolution, skip
//! connections from each down level to its up level, strided-conv downsampling and nearest upsampling.
//!
//! ```text
//! temb = Linear(SiLU(Linear(sinusoidal(t, time_embedding_dim))))            [B, time_dim]
//! h = conv_in(x)                                                  (diffusers topology: kept as a skip)
//! down level l: (ResBlock → [SelfAttention]) × blocks, each output kept as a skip;
//!               Downsample (not last; diffusers topology: its output kept as a skip)
//! mid: ResBlock → SelfAttention → ResBlock
//! up level l (deepest first): (ResBlock(cat[h, skip]) → [SelfAttention]) × blocks (diffusers: blocks + 1);
//!               Upsample (not level 0)
//! out = Conv3x3(SiLU(GroupNorm(h)))
//!
//! ResBlock(cin → cout):   h = Conv3x3(SiLU(GN(x)));  h += Linear(SiLU(temb)) over H, W;
//!                         h = Conv3x3(Dropout(SiLU(GN(h))));  out = h + (cin = cout ? x : Conv1x1(x))
//! SelfAttention(C, heads): qkv = Conv1x1(C → 3C)(GN(x)), channels [3][heads][C/heads];
//!                         o = softmax(q kᵀ/√d) v per head over the H·W positions;  out = x + Conv1x1(o)
//! ```
//! The preset [`UNetConfig::small`] is the common small DDPM U-Net for 28×28 digits (2,268,513 parameters);
//! [`UNetConfig::diffusers_mnist`] is diffusers' `UNet2DModel` for the same digits, layer for layer
//! ([`crate::interop::diffusers`] maps its parameters).

mod config;

pub use config::{limits, Heads, Sizes, Topology, UNetConfig};

use autograd::nn::{Conv2d, Embedding, GroupNorm, Linear};
use autograd::{ParamStore, Tape, Tensor, Var};
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::model::denoiser::Denoiser;
use crate::model::embedding::timestep_embedding_with;

/// A group norm of the config's groups and ε.
fn group_norm(ps: &mut ParamStore, name: &str, channels: usize, cfg: &UNetConfig) -> GroupNorm {
    GroupNorm { eps: cfg.norm_eps, ..GroupNorm::new(ps, name, cfg.groups, channels) }
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
            norm1: group_norm(ps, &format!("{name}.norm1"), c_in, cfg),
            conv1: Conv2d::new(ps, &format!("{name}.conv1"), c_in, c_out, 3, 1, 1, rng),
            time: Linear::new(ps, &format!("{name}.time"), cfg.time_dim, c_out, rng),
            norm2: group_norm(ps, &format!("{name}.norm2"), c_out, cfg),
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
            norm: group_norm(ps, &format!("{name}.norm"), c, cfg),
            qkv: Conv2d::new(ps, &format!("{name}.qkv"), c, 3 * c, 1, 1, 0, rng),
            proj: Conv2d::new(ps, &format!("{name}.proj"), c, c, 1, 1, 0, rng),
            heads: cfg.heads_at(c),
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
    /// The stages of one level of the [`config::Plan`].
    fn level(ps: &mut ParamStore, level: &config::Level, cfg: &UNetConfig, rng: &mut StdRng) -> Vec<Stage> {
        let stage = |b: &config::Block| Stage {
            res: ResBlock::new(ps, &format!("{}.res", b.name), b.c_in, b.c_out, cfg, rng),
            attn: b.attention.then(|| SelfAttention::new(ps, &format!("{}.attn", b.name), b.c_out, cfg, rng)),
        };
        level.blocks.iter().map(stage).collect()
    }

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
        assert!(cfg.attention.len() == cfg.channel_mult.len(), "UNetConfig: attention needs one entry per level");
        let td = cfg.time_dim;
        let time1 = Linear::new(params, "time.linear1", cfg.time_embedding_dim, td, rng);
        let time2 = Linear::new(params, "time.linear2", td, td, rng);
        let conv_in = Conv2d::new(params, "conv_in", cfg.image_channels, cfg.base_channels, 3, 1, 1, rng);
        let plan = cfg.plan();
        let mut down = Vec::new();
        for level in &plan.down {
            let blocks = Stage::level(params, level, cfg, rng);
            let c = level.channels;
            let pad = cfg.downsample_padding;
            let downsample = level.resample.as_ref().map(|name| Conv2d::new(params, name, c, c, 3, 2, pad, rng));
            down.push((blocks, downsample));
        }
        let ch = plan.mid;
        let mid = (
            ResBlock::new(params, "mid.res1", ch, ch, cfg, rng),
            SelfAttention::new(params, "mid.attn", ch, cfg, rng),
            ResBlock::new(params, "mid.res2", ch, ch, cfg, rng),
        );
        let mut up = Vec::new();
        for level in &plan.up {
            let blocks = Stage::level(params, level, cfg, rng);
            let c = level.channels;
            let upsample = level.resample.as_ref().map(|name| Conv2d::new(params, name, c, c, 3, 1, 1, rng));
            up.push((blocks, upsample));
        }
        let ch = plan.up.last().map_or(ch, |level| level.channels);
        let out_norm = group_norm(params, "out.norm", ch, cfg);
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
        let (dim, flip, shift) = (cfg.time_embedding_dim, cfg.flip_sin_to_cos, cfg.freq_shift);
        let emb = t.constant(timestep_embedding_with(timesteps, dim, 10000.0, flip, shift as f32));
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

        let diffusers = cfg.topology == Topology::Diffusers;
        let mut h = self.conv_in.forward(t, ps, x);
        let mut skips = if diffusers { vec![h.clone()] } else { Vec::new() };
        for (stages, downsample) in &self.down {
            for stage in stages {
                h = stage.forward(t, ps, &h, &temb, rng.as_deref_mut());
                skips.push(h.clone());
            }
            if let Some(conv) = downsample {
                if cfg.downsample_padding == 0 {
                    h = pad_right_bottom(t, &h);
                }
                h = conv.forward(t, ps, &h);
                if diffusers {
                    skips.push(h.clone());
                }
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

/// x [B, C, H, W] with a row of zeros below and a column of zeros on the right: [B, C, H + 1, W + 1]
/// (diffusers' downsampler with `downsample_padding=0` pads so before its unpadded stride-2 convolution).
fn pad_right_bottom(t: &mut Tape, x: &Var) -> Var {
    let [b, c, h, w] = [x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]];
    let row = t.constant(Tensor::zeros(&[b, c, 1, w]));
    let x = t.concat(&[x, &row], 2);
    let column = t.constant(Tensor::zeros(&[b, c, h + 1, 1]));
    t.concat(&[&x, &column], 3)
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
mod tests;
