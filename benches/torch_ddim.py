"""PyTorch's time for 50-step DDIM with the twin of the `small` U-Net at any batch size (the twin's own
bench, `../shared/reference/torch_twin/bench.py --only M2`, draws 16 images; evaluation draws 256 or more).

Usage: python torch_ddim.py [--twin ../shared/reference/torch_twin] [--images 256] [--rounds 1] [--threads 2]

Compare with `cargo run --release --example 04_sample -- --random-weights small --sampler ddim --steps 50
--count 256` (one batch, as here; the timing does not depend on the weights' values). Prints one time per
round after one warm-up sample.
"""
import argparse
import os
import sys
import time

import torch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--twin", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference", "torch_twin"))
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    sys.path.insert(0, os.path.abspath(args.twin))
    from bench import UNetMnist, ddpm_schedule  # the twin's model and its linear-β ᾱ

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, abar = UNetMnist(), ddpm_schedule()
    stride = 1000 // args.steps
    timesteps = list(range(999, -1, -stride))[: args.steps]

    @torch.no_grad()
    def sample():
        x = torch.randn(args.images, 1, 28, 28)
        for i, t in enumerate(timesteps):
            a = abar[t]
            a_next = abar[timesteps[i + 1]] if i + 1 < len(timesteps) else torch.tensor(1.0)
            eps = model(x, torch.full((args.images,), t, dtype=torch.long))
            x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
            x = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
        return x

    sample()
    for r in range(args.rounds):
        start = time.perf_counter()
        sample()
        print(f"DDIM {args.steps} steps, {args.images} images in one batch: {time.perf_counter() - start:.2f} s", flush=True)


if __name__ == "__main__":
    main()
