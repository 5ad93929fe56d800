"""diffusers parity fixtures for tests/diffusers_parity.rs, and the check of a folder the Rust export wrote.

Written with Python 3.11.7, torch 2.15.0, diffusers 0.42.1, safetensors 0.8.0, numpy 2.4.6 (the versions are
printed on every run). Both modes run on CPU in float32.

    python parity.py make [DIR]             # DIR defaults to this script's folder
    python parity.py check FOLDER PROBE [PNG]   # FOLDER: a pipeline folder 11_diffusers wrote; PROBE: its probe file

make: builds two small random UNet2DModels with the `diffusers-mnist` preset's block types, one plain and one
with every option this project maps (conditional, downsample_padding=0, flip_sin_to_cos=False, freq_shift=1,
norm_eps=1e-6, attention_head_dim=None, time_embedding_dim set), each with a DDPMScheduler; draws every
parameter at random (norm weights around 1, so that a swapped scale would show); saves each pipeline with
save_pretrained into DIR/<name>/ and the model's output at fixed inputs into DIR/<name>.probe.safetensors
(tensors x, t, out, and labels for the conditional one). The Rust test loads the folders and matches out.

check: loads FOLDER with UNet2DModel.from_pretrained(..., output_loading_info=True) and prints its missing,
unexpected and mismatched keys; runs it on PROBE's x, t (and labels) and prints the largest difference from
PROBE's out (the Rust model's output) relative to out's largest magnitude; then loads the whole folder with
DDPMPipeline.from_pretrained and draws two images in 10 steps, to show the pipeline runs; with PNG, also 16
images with all of the scheduler's steps, written there as a 4×4 grid.
"""

import os
import sys

import diffusers
import numpy
import safetensors
import torch
from PIL import Image
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from safetensors.torch import load_file, save_file

torch.set_num_threads(2)

MODELS = {
    # The diffusers-mnist preset's block types and skips, shrunk to a fixture of a few hundred KB.
    "plain": dict(
        sample_size=12,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 8, 16),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        attention_head_dim=8,
    ),
    # Every option the mapping has to get right.
    "options": dict(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D"),
        norm_num_groups=4,
        attention_head_dim=None,
        downsample_padding=0,
        flip_sin_to_cos=False,
        freq_shift=1,
        norm_eps=1e-6,
        time_embedding_dim=24,
        num_class_embeds=5,
        dropout=0.1,
    ),
}

SCHEDULERS = {
    "plain": dict(num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon"),
    "options": dict(num_train_timesteps=200, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction"),
}


def versions():
    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, diffusers {diffusers.__version__}, "
          f"safetensors {safetensors.__version__}, numpy {numpy.__version__}")


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))


def make(out_dir):
    for i, (name, kwargs) in enumerate(MODELS.items()):
        torch.manual_seed(i)
        unet = UNet2DModel(**kwargs).eval()
        randomize(unet, 100 + i)
        DDPMPipeline(unet=unet, scheduler=DDPMScheduler(**SCHEDULERS[name])).save_pretrained(os.path.join(out_dir, name))
        g = torch.Generator().manual_seed(200 + i)
        c, s = kwargs["in_channels"], kwargs["sample_size"]
        x = torch.randn((4, c, s, s), generator=g)
        t = torch.tensor([0, 17, 500, 999] if name == "plain" else [0, 3, 100, 199], dtype=torch.int64)
        probe = {"x": x, "t": t.float()}
        args = {}
        if "num_class_embeds" in kwargs:
            labels = torch.tensor([0, 4, 2, 1], dtype=torch.int64)
            probe["labels"] = labels.float()
            args["class_labels"] = labels
        with torch.no_grad():
            out = unet(x, t, **args).sample
        probe["out"] = out
        save_file({k: v.contiguous() for k, v in probe.items()}, os.path.join(out_dir, f"{name}.probe.safetensors"))
        params = sum(p.numel() for p in unet.parameters())
        print(f"{name}: {params} parameters, out[0, 0, 0, :4] = {out[0, 0, 0, :4].tolist()}")


def check(folder, probe_path, png=None):
    unet, info = UNet2DModel.from_pretrained(folder, subfolder="unet", output_loading_info=True)
    unet.eval()
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        print(f"{key}: {len(info[key])} {info[key][:5]}")
    probe = load_file(probe_path)
    args = {"class_labels": probe["labels"].long()} if "labels" in probe else {}
    with torch.no_grad():
        out = unet(probe["x"], probe["t"].long(), **args).sample
    ref = probe["out"]
    rel = ((out - ref).abs().max() / ref.abs().max()).item()
    print(f"output against the Rust model's, {tuple(ref.shape)}: largest difference {rel:.2e} of the largest magnitude")
    pipe = DDPMPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, num_inference_steps=10, generator=torch.Generator().manual_seed(0), output_type="np").images
    print(f"DDPMPipeline.from_pretrained: {type(pipe.unet).__name__} + {type(pipe.scheduler).__name__}, "
          f"drew {images.shape} in 10 steps, values in [{images.min():.3f}, {images.max():.3f}]")
    if png:
        pipe.set_progress_bar_config(disable=False)
        images = pipe(batch_size=16, generator=torch.Generator().manual_seed(0), output_type="np").images
        s = images.shape[1]
        grid = images.reshape(4, 4, s, s, -1).transpose(0, 2, 1, 3, 4).reshape(4 * s, 4 * s, -1)
        Image.fromarray((grid[..., 0] * 255).round().astype("uint8")).resize((8 * s, 8 * s), Image.NEAREST).save(png)
        print(f"DDPMPipeline, all {pipe.scheduler.config.num_train_timesteps} steps: wrote 16 images to {png}")
    if info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"] or rel > 1e-5:
        sys.exit(1)


if __name__ == "__main__":
    versions()
    if len(sys.argv) >= 2 and sys.argv[1] == "make":
        make(sys.argv[2] if len(sys.argv) > 2 else os.path.dirname(os.path.abspath(__file__)))
    elif len(sys.argv) in (4, 5) and sys.argv[1] == "check":
        check(*sys.argv[2:])
    else:
        sys.exit(__doc__)
