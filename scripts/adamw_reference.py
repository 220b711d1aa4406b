"""torch.optim.AdamW reference run, for tests/suite/reference_parity.rs.

usage: adamw_reference.py IN.safetensors OUT.safetensors BETA1 BETA2 EPS WD [KERNEL]
IN holds the 2-layer MLP's initial `fc1.weight`, `fc1.bias`, `fc2.weight`, `fc2.bias` (float32),
the batch `x`, `y` and `lrs` (float64, one learning rate per step; their count is the steps),
and optionally `lr_scale.<param>` (float64 scalar, default 1.0): that parameter's learning-rate
multiplier. Each step: zero grads, loss = mse(fc2(gelu(fc1(x))), y), backward, AdamW step with
biases in weight-decay-0 groups and one param group per (weight decay, multiplier), whose lr is
the step's lr times the multiplier. KERNEL is `single` (default: torch's single-tensor path,
foreach=False) or `fused` (fused=True). OUT gets the final parameters.
"""
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

inp = load_file(sys.argv[1])
beta1, beta2, eps, wd = (float(a) for a in sys.argv[3:7])
kernel = sys.argv[7] if len(sys.argv) > 7 else "single"
lrs = inp["lrs"].tolist()
names = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
params = {n: inp[n].clone().requires_grad_(True) for n in names}
groups = {}
for n in names:
    decay = 0.0 if n.endswith("bias") else wd
    scale = inp[f"lr_scale.{n}"].item() if f"lr_scale.{n}" in inp else 1.0
    groups.setdefault((decay, scale), []).append(params[n])
param_groups = [
    {"params": ps, "weight_decay": decay, "lr_scale": scale} for (decay, scale), ps in groups.items()
]
kind = {"single": {"foreach": False}, "fused": {"fused": True}}[kernel]
opt = torch.optim.AdamW(param_groups, lr=lrs[0], betas=(beta1, beta2), eps=eps, **kind)
for lr in lrs:
    for g in opt.param_groups:
        g["lr"] = lr * g["lr_scale"]
    opt.zero_grad()
    h = F.gelu(F.linear(inp["x"], params["fc1.weight"], params["fc1.bias"]))
    out = F.linear(h, params["fc2.weight"], params["fc2.bias"])
    F.mse_loss(out, inp["y"]).backward()
    opt.step()
save_file({n: p.detach().contiguous() for n, p in params.items()}, sys.argv[2])
