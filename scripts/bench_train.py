"""OpenCLIP reference for `scripts/bench_train.sh` and `scripts/gpu_check.sh`: the same CLIP
trained the OpenCLIP way.

open_clip's `CLIP` built with the dimensions of a cliptrain preset (`--model-toml`, or the tiny
preset's sizes from the flags), fed by webdataset + PIL + torchvision (RandomResizedCrop 0.9-1.0
bicubic, CLIP normalisation) in DataLoader workers, captions encoded with the same tokenizer.json,
open_clip's ClipLoss, torch.optim.AdamW with OpenCLIP's no-decay groups. The training step is
open_clip_train's: bf16 autocast as its `--precision amp_bf16`, and with `--micro-batch` its
`--accum-freq` feature caching (features of every micro-batch first without gradients, then each
micro-batch again with gradients against the cached rest).

Prints one JSON object: samples/s and the fraction of the time blocked on the DataLoader over the
steps after --warmup (the GPU is synchronised at both ends of that window), peak RSS (this process
+ its largest worker) and, on CUDA, PyTorch's own peak allocator figures.
"""
import argparse
import json
import math
import resource
import time

import open_clip
import torch
import webdataset as wds
from open_clip.loss import ClipLoss
from tokenizers import Tokenizer
from torchvision import transforms as T

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def model_dims(a):
    """The model's sizes: from a cliptrain preset (defaults as configs/reference.toml), or the flags."""
    if not a.model_toml:
        return dict(embed_dim=a.embed_dim, quick_gelu=False,
                    vision=dict(image_size=a.image_size, patch_size=a.patch_size, width=a.width,
                                layers=a.layers, heads=a.heads, mlp_ratio=4.0),
                    text=dict(vocab_size=a.vocab_size, context_length=a.context_length, width=a.width,
                              layers=a.layers, heads=a.heads, mlp_ratio=4.0))
    import tomllib
    with open(a.model_toml, "rb") as f:
        m = tomllib.load(f).get("model", {})
    v, t = m.get("vision", {}), m.get("text", {})
    return dict(embed_dim=m.get("embed_dim", 512), quick_gelu=m.get("activation", "quick_gelu") == "quick_gelu",
                vision=dict(image_size=v.get("image_size", 224), patch_size=v.get("patch_size", 32),
                            width=v.get("width", 768), layers=v.get("layers", 12), heads=v.get("heads", 12),
                            mlp_ratio=v.get("mlp_ratio", 4.0)),
                text=dict(vocab_size=t.get("vocab_size", 49408), context_length=t.get("context_length", 77),
                          width=t.get("width", 512), layers=t.get("layers", 12), heads=t.get("heads", 8),
                          mlp_ratio=t.get("mlp_ratio", 4.0)))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("spec")
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--model-toml", help="a cliptrain model preset (configs/models/*.toml); replaces the size flags")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--patch-size", type=int, default=8)
    p.add_argument("--width", type=int, default=192)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=3)
    p.add_argument("--embed-dim", type=int, default=192)
    p.add_argument("--vocab-size", type=int, default=1024)
    p.add_argument("--context-length", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=256, help="contrastive batch of one optimizer step")
    p.add_argument("--micro-batch", type=int, default=0,
                   help="pairs per forward/backward (OpenCLIP --batch-size with --accum-freq = batch/micro); 0 = batch")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers; 0 = --threads")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--warmup-lr", type=int, default=0, help="LR warmup steps, then cosine (0 = constant LR)")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--warmup", type=int, default=5, help="steps before the measured window")
    a = p.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    if device.type == "cuda":  # as open_clip_train/main.py sets them
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.deterministic = False
    micro = a.micro_batch or a.batch_size
    if a.batch_size % micro:
        p.error(f"--micro-batch {micro} must divide --batch-size {a.batch_size}")
    accum = a.batch_size // micro
    dims = model_dims(a)
    ctx = dims["text"]["context_length"]
    size = dims["vision"]["image_size"]

    tok = Tokenizer.from_file(a.tokenizer)
    sot, eot = tok.token_to_id("<|startoftext|>"), tok.token_to_id("<|endoftext|>")
    tok.no_padding()
    tok.no_truncation()

    def encode(text):
        ids = tok.encode(text.lower().strip(), add_special_tokens=False).ids[: ctx - 2]
        row = [sot] + ids + [eot]
        return torch.tensor(row + [0] * (ctx - len(row)), dtype=torch.long)

    transform = T.Compose([
        T.RandomResizedCrop(size, scale=(0.9, 1.0), interpolation=T.InterpolationMode.BICUBIC),
        T.ToTensor(),
        T.Normalize(MEAN, STD),
    ])
    ds = (
        wds.WebDataset(a.spec, resampled=True, shardshuffle=False, nodesplitter=None)
        .shuffle(1000)
        .decode("pilrgb")
        .to_tuple("jpg;png;webp", "txt")
        .map_tuple(transform, encode)
        .batched(micro)
    )
    workers = a.workers or a.threads
    loader = iter(wds.WebLoader(ds, batch_size=None, num_workers=workers, persistent_workers=workers > 0))

    v, t = dims["vision"], dims["text"]
    vision = open_clip.model.CLIPVisionCfg(layers=v["layers"], width=v["width"], head_width=v["width"] // v["heads"],
                                           mlp_ratio=v["mlp_ratio"], patch_size=v["patch_size"],
                                           image_size=v["image_size"])
    text = open_clip.model.CLIPTextCfg(context_length=t["context_length"], vocab_size=t["vocab_size"],
                                       width=t["width"], heads=t["heads"], layers=t["layers"],
                                       mlp_ratio=t["mlp_ratio"])
    model = open_clip.model.CLIP(dims["embed_dim"], vision, text, quick_gelu=dims["quick_gelu"]).to(device)
    exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n
    params = list(model.named_parameters())
    opt = torch.optim.AdamW([
        {"params": [p for n, p in params if exclude(n, p)], "weight_decay": 0.0},
        {"params": [p for n, p in params if not exclude(n, p)], "weight_decay": a.weight_decay},
    ], lr=a.lr, betas=(0.9, 0.98), eps=1e-6)
    loss_fn = ClipLoss()

    def autocast():
        if a.precision == "bf16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return torch.autocast(device_type=device.type, enabled=False)

    def lr_at(step):  # open_clip_train.scheduler.cosine_lr
        if a.warmup_lr <= 0:
            return a.lr
        if step < a.warmup_lr:
            return a.lr * (step + 1) / a.warmup_lr
        e, es = step - a.warmup_lr, max(1, a.steps - a.warmup_lr)
        return 0.5 * (1 + math.cos(math.pi * e / es)) * a.lr

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    waited = 0.0

    def next_batch():
        nonlocal waited
        t0 = time.perf_counter()
        images, texts = next(loader)
        waited += time.perf_counter() - t0
        return images.to(device, non_blocking=True), texts.to(device, non_blocking=True)

    start, first_loss = None, None
    for step in range(a.steps):
        if step == a.warmup:
            sync()
            start, waited = time.perf_counter(), 0.0
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        if accum == 1:
            images, texts = next_batch()
            with autocast():
                img, txt, scale = model(images, texts)[:3]
                loss = loss_fn(img, txt, scale)
            loss.backward()
        else:
            cached, batches = [], []
            with torch.no_grad(), autocast():
                for _ in range(accum):
                    images, texts = next_batch()
                    cached.append(model(images, texts)[:2])
                    batches.append((images, texts))
            for j, (images, texts) in enumerate(batches):
                with autocast():
                    img, txt, scale = model(images, texts)[:3]
                    all_img = torch.cat([c[0] for c in cached[:j]] + [img] + [c[0] for c in cached[j + 1:]])
                    all_txt = torch.cat([c[1] for c in cached[:j]] + [txt] + [c[1] for c in cached[j + 1:]])
                    loss = loss_fn(all_img, all_txt, scale)
                loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step == 0:
            first_loss = loss.item()
    sync()
    secs = time.perf_counter() - start
    samples = (a.steps - a.warmup) * a.batch_size
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = {"samples_per_s": samples / secs, "seconds": secs, "data_wait_fraction": waited / secs,
           "measured_steps": [a.warmup + 1, a.steps], "batch_size": a.batch_size, "micro_batch": micro,
           "device": a.device, "precision": a.precision, "workers": workers, "threads": a.threads,
           "peak_rss_mib": rss_kb / 1024, "params": sum(p.numel() for p in model.parameters()),
           "first_loss": first_loss, "last_loss": loss.item()}
    if device.type == "cuda":
        out["device_name"] = torch.cuda.get_device_name(device)
        out["torch_max_memory_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        out["torch_max_memory_reserved_mib"] = torch.cuda.max_memory_reserved(device) / 2**20
    print(json.dumps(out))


if __name__ == "__main__":
    main()
