"""PyTorch reference values for the op tests in torch_reference.rs (beside this file). Writes
torch_reference.txt: for each case, the output of the op and the gradients of L = sum(y * r) with respect to
every input (for cross_entropy, of the loss itself). Inputs and r come from formulas both sides compute, in
float64 rounded to float32, so only results are stored:

    input k of a case:  v_j = scale * sin(0.61 j + 1.7 k + 0.2)      (scale 0.3 for weights, else 1)
    r:                  r_j = cos(0.13 j + 0.5)

Run from the repository root (torch: see ../shared/reference/README.md):
    ~/torch-venv/bin/python autograd/src/ops/torch_reference.py
"""
import os

import torch
import torch.nn.functional as F

torch.set_num_threads(1)
torch.backends.mkldnn.enabled = False


def make(shape, k, scale=1.0):
    n = 1
    for d in shape:
        n *= d
    j = torch.arange(n, dtype=torch.float64)
    v = scale * torch.sin(0.61 * j + 1.7 * k + 0.2)
    return v.to(torch.float32).reshape(shape).requires_grad_(True)


def weights_r(y):
    j = torch.arange(y.numel(), dtype=torch.float64)
    return torch.cos(0.13 * j + 0.5).to(torch.float32).reshape(y.shape)


lines = [f"# written by torch_reference.py with torch {torch.__version__}"]


def emit(case, names, tensors, y, loss=None):
    if loss is None:
        loss = (y * weights_r(y)).sum()
    loss.backward()
    lines.append(f"{case}.y " + " ".join(f"{v:.9g}" for v in y.detach().flatten().tolist()))
    for name, t in zip(names, tensors):
        lines.append(f"{case}.d{name} " + " ".join(f"{v:.9g}" for v in t.grad.flatten().tolist()))


# conv2d: (case, x shape, c_out, kernel, stride, padding) — stride 1 and 2, 1×1, and the two Winograd layouts
for case, xs, c_out, k, stride, pad in [("conv_s1", (2, 3, 7, 7), 4, 3, 1, 1), ("conv_s2", (2, 4, 9, 9), 5, 3, 2, 1),
                                        ("conv_1x1", (2, 6, 5, 5), 3, 1, 1, 0), ("conv_winograd_cm", (2, 8, 6, 6), 8, 3, 1, 1),
                                        ("conv_winograd", (1, 8, 24, 24), 8, 3, 1, 1)]:
    x, w, b = make(xs, 0), make((c_out, xs[1], k, k), 1, 0.3), make((c_out,), 2, 0.3)
    emit(case, ["x", "w", "b"], [x, w, b], F.conv2d(x, w, b, stride=stride, padding=pad))

# group norm (4 groups of 2 channels), alone and followed by SiLU
for case, silu in [("group_norm", False), ("group_norm_silu", True)]:
    x, w, b = make((2, 8, 3, 5), 0), make((8,), 1), make((8,), 2)
    y = F.group_norm(x, 4, w, b, eps=1e-5)
    emit(case, ["x", "w", "b"], [x, w, b], F.silu(y) if silu else y)

# attention: a short sequence, and the U-Net's 7×7 = 49 positions
for case, shape in [("attention", (2, 2, 5, 4)), ("attention_49", (1, 2, 49, 8))]:
    q, k, v = make(shape, 0), make(shape, 1), make(shape, 2)
    emit(case, ["q", "k", "v"], [q, k, v], F.scaled_dot_product_attention(q, k, v))

x = make((3, 7), 0)
emit("softmax", ["x"], [x], torch.softmax(x, dim=1))
x = make((3, 7), 0)
emit("log_softmax", ["x"], [x], torch.log_softmax(x, dim=1))
logits = make((4, 5), 0)
loss = F.cross_entropy(logits, torch.tensor([1, 0, 4, 2]))
emit("cross_entropy", ["logits"], [logits], loss.reshape(1), loss=loss)

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_reference.txt")
with open(out, "w") as f:
    f.write("\n".join(lines) + "\n")
print("wrote", out, len(lines) - 1, "tensors")
