"""PyTorch reference for `scripts/bench_lora.sh`: Hugging Face transformers' CLIPModel at
ViT-B/32 (CLIPConfig's defaults are openai/clip-vit-base-patch32's sizes), trained one CPU step
at a time on a random batch, fully or with PEFT LoRA adapters on the same modules cliptrain
adapts (`--targets`, both towers), with torch.optim.AdamW over what trains.

Prints one JSON object: trainable parameters, the optimizer state's bytes (AdamW's exp_avg and
exp_avg_sq after the first step), seconds per step over the steps after --warmup, and this
process's peak RSS.
"""
import argparse
import json
import resource
import time

import torch
from transformers import CLIPConfig, CLIPModel


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=["full", "lora"], required=True)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16.0)
    p.add_argument("--targets", default="q_proj,v_proj")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig())
    model.set_attn_implementation("sdpa")
    if a.mode == "lora":
        from peft import LoraConfig, get_peft_model
        targets = a.targets.split(",")
        model = get_peft_model(model, LoraConfig(r=a.rank, lora_alpha=a.alpha, lora_dropout=0.0,
                                                 target_modules=targets))
        # PEFT freezes everything but the adapters; cliptrain's LoRA runs freeze the temperature
        # too (finetune.logit_scale = "freeze"), so both train the adapters alone.
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    trainable = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.1)
    images = torch.randn(a.batch, 3, 224, 224)
    ids = torch.randint(0, 49407, (a.batch, 77))
    ids[:, 20] = 49407  # EOT
    times = []
    for step in range(a.steps):
        t0 = time.perf_counter()
        out = model(input_ids=ids, pixel_values=images, return_loss=True)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    state = sum(t.numel() * t.element_size() for s in opt.state.values()
                for k, t in s.items() if k in ("exp_avg", "exp_avg_sq"))
    timed = times[a.warmup:]
    print(json.dumps({
        "mode": a.mode, "trainable": trainable, "optimizer_state_bytes": state,
        "step_s": sum(timed) / len(timed),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
