"""PyTorch's times for the kernels `benches/unet_kernels.rs` lists: every convolution, group norm and
attention of the `small` U-Net at batch 32, forward and backward, at the same shapes.

Usage: python torch_unet_kernels.py target/unet_kernels.txt [--threads 2] [--json out.json]

The list comes from `cargo bench --bench unet_kernels` (it writes target/unet_kernels.txt). Each phase is
timed as the Rust bench times it: the forward alone (under no_grad), the backward alone (autograd.grad of
a recorded forward with a given output gradient, asking for exactly the gradients a training step needs).
Group norm + SiLU is F.silu(F.group_norm(...)), as the twin runs it; attention is the faster of the fused
F.scaled_dot_product_attention and plain matmul, softmax, matmul. Each figure: the median of at least 7
timed calls (and about 1 s of them) after 3 warm-up calls.
"""
import argparse
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F


def median_ms(call, prepare=None, warmup=3, at_least=7, seconds=1.0):
    """Median time of call() in ms; with prepare, prepare() runs untimed before each call and its result
    is call's argument."""
    for _ in range(warmup):
        call(prepare()) if prepare else call()
    times = []
    while len(times) < at_least or (sum(times) < seconds and len(times) < 200):
        arg = prepare() if prepare else None
        start = time.perf_counter()
        call(arg) if prepare else call()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def dims(text):
    return [int(d) for d in text.split(",")]


def parse(line):
    index, name, *fields = line.split()
    return index, name, dict(field.split("=") for field in fields)


def attention_explicit(q, k, v):
    scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    return torch.matmul(torch.softmax(scores, dim=-1), v)


def kernel(name, f, g):
    """(forward function, its inputs, which inputs need a gradient, the output's shape) per variant."""
    if name == "conv2d":
        x, w = torch.randn(dims(f["x"]), generator=g), torch.randn(dims(f["w"]), generator=g) * 0.1
        b = torch.randn(w.shape[0], generator=g)
        stride, padding = int(f["stride"]), int(f["padding"])
        wants = [f["dx"] == "1", True, True]
        return {"conv2d": lambda x, w, b: F.conv2d(x, w, b, stride=stride, padding=padding)}, [x, w, b], wants
    if name in ("group_norm", "group_norm_silu"):
        x = torch.randn(dims(f["x"]), generator=g)
        c, groups = x.shape[1], int(f["groups"])
        gamma, beta = 1 + 0.1 * torch.randn(c, generator=g), 0.1 * torch.randn(c, generator=g)
        if name == "group_norm":
            fn = lambda x, gm, bt: F.group_norm(x, groups, gm, bt, 1e-5)
        else:
            fn = lambda x, gm, bt: F.silu(F.group_norm(x, groups, gm, bt, 1e-5))
        return {name: fn}, [x, gamma, beta], [True, True, True]
    if name == "scaled_dot_product_attention":
        q, k = torch.randn(dims(f["q"]), generator=g), torch.randn(dims(f["k"]), generator=g)
        v = torch.randn(dims(f["k"]), generator=g)
        variants = {"sdpa": F.scaled_dot_product_attention, "explicit": attention_explicit}
        return variants, [q, k, v], [True, True, True]
    raise SystemExit(f"unknown kernel {name}")


def time_kernel(name, fields, g):
    variants, inputs, wants = kernel(name, fields, g)
    inputs = [t.requires_grad_(want) for t, want in zip(inputs, wants)]
    needed = [t for t in inputs if t.requires_grad]
    best = {}
    for label, fn in variants.items():
        with torch.no_grad():
            forward = median_ms(lambda: fn(*inputs))
        dy = torch.randn(fn(*inputs).shape, generator=g)
        backward = median_ms(lambda y: torch.autograd.grad(y, needed, dy), prepare=lambda: fn(*inputs))
        for phase, ms in (("forward", forward), ("backward", backward)):
            if phase not in best or ms < best[phase]["ms"]:
                best[phase] = {"ms": ms, "variant": label}
    return best


def main():
    p = argparse.ArgumentParser()
    p.add_argument("kernels", help="target/unet_kernels.txt, written by cargo bench --bench unet_kernels")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    results = {}
    with open(args.kernels) as f:
        lines = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    for line in lines:
        index, name, fields = parse(line)
        results[index] = time_kernel(name, fields, g)
        results[index]["line"] = line
        r = results[index]
        print(f"{index} forward {r['forward']['ms']:8.3f} ms ({r['forward']['variant']})  "
              f"backward {r['backward']['ms']:8.3f} ms ({r['backward']['variant']})  {line}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": args.threads, "kernels": results}, f, indent=1)


if __name__ == "__main__":
    main()
