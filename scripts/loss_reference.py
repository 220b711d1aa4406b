"""Reference contrastive losses from open_clip, for tests/suite/reference_parity.rs.

usage: loss_reference.py IN.safetensors OUT.safetensors
IN holds raw `image` and `text` features [N, D], `logit_scale` (log temperature) and `logit_bias`
(0-dim), all float64. OUT gets `infonce` and `siglip` (0-dim float64). open_clip's losses expect
normalised features and exp(logit_scale), which its models produce; we do that here.
"""
import sys

import torch.nn.functional as F
from open_clip.loss import ClipLoss, SigLipLoss
from safetensors.torch import load_file, save_file

inp = load_file(sys.argv[1])
image = F.normalize(inp["image"], dim=-1)
text = F.normalize(inp["text"], dim=-1)
scale = inp["logit_scale"].exp()
bias = inp["logit_bias"]
out = {
    "infonce": ClipLoss()(image, text, scale),
    "siglip": SigLipLoss()(image, text, scale, bias),
}
save_file({k: v.detach().reshape(()).contiguous() for k, v in out.items()}, sys.argv[2])
