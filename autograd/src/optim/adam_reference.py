# Reference values for optim/tests.rs, computed in float64 by following torch.optim.Adam / AdamW's documented
# algorithm step by step (PyTorch's `_single_tensor_adam`, amsgrad=False, maximize=False). Run with plain
# Python 3 (no dependencies); the printed values are pasted into the tests. Running the tests never needs it.
import math

def adam(p, grads, lr, b1=0.9, b2=0.999, eps=1e-8, wd=0.0, decoupled=False):
    m = v = 0.0
    for t, g in enumerate(grads, start=1):
        if decoupled:
            p *= 1 - lr * wd
        else:
            g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        step_size = lr / (1 - b1 ** t)
        denom = math.sqrt(v) / math.sqrt(1 - b2 ** t) + eps
        p -= step_size * m / denom
    return p

grads = [1.0, -2.0, 0.5, 3.0, -0.25]
print("adam ", repr(adam(0.5, grads, lr=0.1)))
print("adam_l2 ", repr(adam(0.5, grads, lr=0.1, wd=0.1)))
print("adamw ", repr(adam(0.5, grads, lr=0.1, wd=0.1, decoupled=True)))
