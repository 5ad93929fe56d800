"""The table of `benches/unet_kernels.rs` against `benches/torch_unet_kernels.py`, over interleaved rounds.

Usage: python3 compare_unet_kernels.py --list target/unet_kernels.txt \
           --criterion target/criterion/unet_kernels --baselines r1,r2,r3 --torch t1.json,t2.json,t3.json

Round i is criterion's saved baseline r_i (`cargo bench --bench unet_kernels -- --save-baseline r_i`) and
PyTorch's t_i.json, run one after the other. Per kernel and phase: each side's figure of every round (ours:
criterion's median estimate), the median of each side over the rounds, and their ratio (ours / PyTorch's;
below 1 is faster). The last rows weight every kernel by how many times a step calls it. Markdown on
stdout. Standard library only.
"""
import argparse
import json
import os
import statistics


def ours_ms(root, phase, index, baseline):
    with open(os.path.join(root, phase, index, baseline, "estimates.json")) as f:
        return json.load(f)["median"]["point_estimate"] / 1e6


def short(line):
    """'07 conv2d x=32,64,14,14 w=64,64,3,3 ...' -> a readable name and the call count."""
    index, name, *fields = line.split()
    f = dict(field.split("=") for field in fields)
    calls = int(f["calls"])
    if name == "conv2d":
        w = f["w"].split(",")
        what = f"conv {w[2]}×{w[3]}{' stride 2' if f['stride'] == '2' else ''} [{f['x']}]→{w[0]}"
        if f["dx"] == "0":
            what += " (no input gradient)"
    elif name == "scaled_dot_product_attention":
        what = f"attention q,k,v [{f['q']}]"
    else:
        what = f"{'group norm + SiLU' if name.endswith('silu') else 'group norm'} [{f['x']}]/{f['groups']}"
    return index, what, calls


def fmt(ms):
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--list", required=True)
    p.add_argument("--criterion", required=True)
    p.add_argument("--baselines", required=True)
    p.add_argument("--torch", required=True)
    args = p.parse_args()
    baselines = args.baselines.split(",")
    torch_rounds = []
    for path in args.torch.split(","):
        with open(path) as f:
            torch_rounds.append(json.load(f)["kernels"])
    with open(args.list) as f:
        lines = [line.strip() for line in f if line.strip() and not line.startswith("#")]

    print("| # | kernel | calls per step | phase | ours, ms (rounds) | PyTorch, ms (rounds) | ratio of medians |")
    print("|---|---|---|---|---|---|---|")
    totals = {"forward": [0.0, 0.0], "backward": [0.0, 0.0]}
    slower = 0
    for line in lines:
        index, what, calls = short(line)
        for phase in ("forward", "backward"):
            ours = [ours_ms(args.criterion, phase, index, b) for b in baselines]
            theirs = [r[index][phase]["ms"] for r in torch_rounds]
            variants = sorted({r[index][phase]["variant"] for r in torch_rounds})
            mo, mt = statistics.median(ours), statistics.median(theirs)
            totals[phase][0] += calls * mo
            totals[phase][1] += calls * mt
            slower += mo > mt
            ratio = f"**{mo / mt:.2f}**" if mo > mt else f"{mo / mt:.2f}"
            label = what + (f" ({'/'.join(variants)})" if "attention" in what else "")
            print(f"| {index} | {label} | {calls} | {phase} | {', '.join(fmt(v) for v in ours)} | "
                  f"{', '.join(fmt(v) for v in theirs)} | {ratio} |")
    for phase, (o, t) in totals.items():
        print(f"| | all of them, × calls | | {phase} | {fmt(o)} | {fmt(t)} | {o / t:.2f} |")
    print(f"\n{slower} of {2 * len(lines)} phases slower than PyTorch's.")


if __name__ == "__main__":
    main()
