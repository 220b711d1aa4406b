"""torch.optim.AdamW reference run, for tests/reference_parity.rs.

usage: adamw_reference.py IN.safetensors OUT.safetensors LR BETA1 BETA2 EPS WD STEPS
IN holds the 2-layer MLP's initial `fc1.weight`, `fc1.bias`, `fc2.weight`, `fc2.bias` (float32)
and the batch `x`, `y`. Each step: zero grads, loss = mse(fc2(gelu(fc1(x))), y), backward,
AdamW step with biases in a weight-decay-0 group. OUT gets the final parameters.
"""
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

inp = load_file(sys.argv[1])
lr, beta1, beta2, eps, wd = (float(a) for a in sys.argv[3:8])
steps = int(sys.argv[8])
names = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
params = {n: inp[n].clone().requires_grad_(True) for n in names}
groups = [
    {"params": [params[n] for n in names if not n.endswith("bias")], "weight_decay": wd},
    {"params": [params[n] for n in names if n.endswith("bias")], "weight_decay": 0.0},
]
# foreach=False: the single-tensor path, which is also what torch picks for CPU tensors.
opt = torch.optim.AdamW(groups, lr=lr, betas=(beta1, beta2), eps=eps, foreach=False)
for _ in range(steps):
    opt.zero_grad()
    h = F.gelu(F.linear(inp["x"], params["fc1.weight"], params["fc1.bias"]))
    out = F.linear(h, params["fc2.weight"], params["fc2.bias"])
    F.mse_loss(out, inp["y"]).backward()
    opt.step()
save_file({n: p.detach().contiguous() for n, p in params.items()}, sys.argv[2])
