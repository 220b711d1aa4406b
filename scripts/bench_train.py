"""OpenCLIP reference for `scripts/bench_train.sh`: the same CLIP trained the OpenCLIP way.

open_clip's `CLIP` built with the dimensions of a cliptrain preset, fed by webdataset + PIL +
torchvision (RandomResizedCrop 0.9-1.0 bicubic, CLIP normalisation) in DataLoader workers,
captions encoded with the same tokenizer.json, open_clip's ClipLoss, torch.optim.AdamW with
OpenCLIP's no-decay groups. Prints samples/s over the steps after --warmup steps and peak RSS
(this process + its workers).
"""
import argparse
import json
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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("spec")
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--patch-size", type=int, default=8)
    p.add_argument("--width", type=int, default=192)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=3)
    p.add_argument("--embed-dim", type=int, default=192)
    p.add_argument("--vocab-size", type=int, default=1024)
    p.add_argument("--context-length", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--warmup", type=int, default=5)
    a = p.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)

    tok = Tokenizer.from_file(a.tokenizer)
    sot, eot = tok.token_to_id("<|startoftext|>"), tok.token_to_id("<|endoftext|>")
    tok.no_padding()
    tok.no_truncation()

    def encode(text):
        ids = tok.encode(text.lower().strip(), add_special_tokens=False).ids[: a.context_length - 2]
        row = [sot] + ids + [eot]
        return torch.tensor(row + [0] * (a.context_length - len(row)), dtype=torch.long)

    transform = T.Compose([
        T.RandomResizedCrop(a.image_size, scale=(0.9, 1.0), interpolation=T.InterpolationMode.BICUBIC),
        T.ToTensor(),
        T.Normalize(MEAN, STD),
    ])
    ds = (
        wds.WebDataset(a.spec, resampled=True, shardshuffle=False, nodesplitter=None)
        .shuffle(1000)
        .decode("pilrgb")
        .to_tuple("jpg;png;webp", "txt")
        .map_tuple(transform, encode)
        .batched(a.batch_size)
    )
    loader = iter(wds.WebLoader(ds, batch_size=None, num_workers=a.threads))

    vision = open_clip.model.CLIPVisionCfg(layers=a.layers, width=a.width, head_width=a.width // a.heads,
                                           patch_size=a.patch_size, image_size=a.image_size)
    text = open_clip.model.CLIPTextCfg(context_length=a.context_length, vocab_size=a.vocab_size,
                                       width=a.width, heads=a.heads, layers=a.layers)
    model = open_clip.model.CLIP(a.embed_dim, vision, text)
    exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n
    params = list(model.named_parameters())
    opt = torch.optim.AdamW([
        {"params": [p for n, p in params if exclude(n, p)], "weight_decay": 0.0},
        {"params": [p for n, p in params if not exclude(n, p)], "weight_decay": 0.1},
    ], lr=1e-3, betas=(0.9, 0.98), eps=1e-6)
    loss_fn = ClipLoss()

    start = None
    for step in range(a.steps):
        if step == a.warmup:
            start = time.perf_counter()
        images, texts = next(loader)
        img, txt, scale = model(images, texts)[:3]
        loss = loss_fn(img, txt, scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)
    secs = time.perf_counter() - start
    samples = (a.steps - a.warmup) * a.batch_size
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"samples_per_s": samples / secs, "seconds": secs, "peak_rss_mib": rss_kb / 1024,
                      "params": sum(p.numel() for p in model.parameters()), "last_loss": loss.item()}))


if __name__ == "__main__":
    main()
