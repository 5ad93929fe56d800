"""Reference values of the `small` U-Net from its PyTorch twin, for diffusion/tests/pytorch_reference.rs.

Writes small_unet.txt beside this file: the output of the twin at fixed inputs and a few parameter
gradients of a fixed loss. No weights are stored: both sides fill parameter i (in registration order,
which is the same in the twin and in the Rust U-Net) from one formula, in float64 then rounded to float32:

    v_j = sin(0.7 j + 1.9 i + 0.3)        j = 0, 1, … over the flattened tensor
    w_j = v_j / sqrt(numel / shape[0])    tensors of 2 or more dimensions (fan-in scaling)
    w_j = 0.5 + 0.25 v_j                  1-D tensors (biases, group norm scales and shifts)

Inputs: x[j] = sin(0.05 j + 0.1) for x [2, 1, 28, 28], timesteps t = (3, 500).
Loss: L = mean(y ⊙ r), r[j] = cos(0.03 j).

Run (needs torch; see ../shared/reference/README.md), from the repository root:
    ~/torch-venv/bin/python diffusion/tests/reference/small_unet.py ../shared/reference/torch_twin
"""
import math
import os
import sys

import torch

sys.path.insert(0, sys.argv[1] if len(sys.argv) > 1 else "../shared/reference/torch_twin")
from bench import UNetMnist  # noqa: E402  (the twin of the `small` preset)

torch.set_num_threads(1)
torch.backends.mkldnn.enabled = False  # plain kernels: the reference, not the fast path

model = UNetMnist()
params = list(model.named_parameters())
assert len(params) == 126, len(params)
with torch.no_grad():
    for i, (name, p) in enumerate(params):
        j = torch.arange(p.numel(), dtype=torch.float64)
        v = torch.sin(0.7 * j + 1.9 * i + 0.3)
        w = v / math.sqrt(p.numel() / p.shape[0]) if p.dim() >= 2 else 0.5 + 0.25 * v
        p.copy_(w.reshape(p.shape).to(torch.float32))

x = torch.sin(0.05 * torch.arange(2 * 28 * 28, dtype=torch.float64) + 0.1).to(torch.float32).reshape(2, 1, 28, 28)
t = torch.tensor([3, 500])
y = model(x, t)
r = torch.cos(0.03 * torch.arange(y.numel(), dtype=torch.float64)).to(torch.float32).reshape(y.shape)
loss = (y * r).mean()
loss.backward()

# (index, how many values) of the gradients kept: the first convolution, the first attention's qkv, the
# middle attention's projection bias, the first time linear, a skip 1×1 convolution, the last bias.
names = [n for n, _ in params]
kept = [(names.index("conv_in.weight"), 288), (names.index("d2a.qkv.weight"), 200), (names.index("ma.proj.bias"), 128),
        (names.index("t1.weight"), 200), (names.index("u0.skip.weight"), 200), (names.index("conv_out.bias"), 1)]

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "small_unet.txt")
with open(out, "w") as f:
    f.write(f"# written by small_unet.py with torch {torch.__version__}; loss {loss.item():.9g}\n")
    f.write("output -1 y " + str(y.numel()) + " " + " ".join(f"{v:.9g}" for v in y.flatten().tolist()) + "\n")
    for i, count in kept:
        g = params[i][1].grad.flatten()[:count]
        f.write(f"grad {i} {names[i]} {count} " + " ".join(f"{v:.9g}" for v in g.tolist()) + "\n")
print("wrote", out, "loss", loss.item())
