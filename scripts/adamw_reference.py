"""torch.optim.AdamW reference run, for tests/reference_parity.rs.

usage: adamw_reference.py IN.safetensors OUT.safetensors BETA1 BETA2 EPS WD
IN holds the 2-layer MLP's initial `fc1.weight`, `fc1.bias`, `fc2.weight`, `fc2.bias` (float32),
the batch `x`, `y` and `lrs` (float64, one learning rate per step; their count is the steps). Each step: zero grads, loss = mse(fc2(gelu(fc1(x))), y), backward,
AdamW step with biases in a weight-decay-0 group. OUT gets the final parameters.
"""
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

inp = load_file(sys.argv[1])
beta1, beta2, eps, wd = (float(a) for a in sys.argv[3:7])
lrs = inp["lrs"].tolist()
names = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
params = {n: inp[n].clone().requires_grad_(True) for n in names}
groups = [
    {"params": [params[n] for n in names if not n.endswith("bias")], "weight_decay": wd},
    {"params": [params[n] for n in names if n.endswith("bias")], "weight_decay": 0.0},
]
# foreach=False: the single-tensor path, which is also what torch picks for CPU tensors.
opt = torch.optim.AdamW(groups, lr=lrs[0], betas=(beta1, beta2), eps=eps, foreach=False)
for lr in lrs:
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad()
    h = F.gelu(F.linear(inp["x"], params["fc1.weight"], params["fc1.bias"]))
    out = F.linear(h, params["fc2.weight"], params["fc2.bias"])
    F.mse_loss(out, inp["y"]).backward()
    opt.step()
save_file({n: p.detach().contiguous() for n, p in params.items()}, sys.argv[2])
