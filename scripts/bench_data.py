"""The Python reference for `cliptrain bench data`: the pipeline OpenCLIP users run.

webdataset shards -> PIL decode -> torchvision RandomResizedCrop (bicubic, scale 0.9-1.0) +
ToTensor + Normalize (CLIP mean/std) -> open_clip tokenize -> batches, in DataLoader workers,
as open_clip's training data pipeline does. Prints images/s over --batches batches after one
warm-up batch (the same protocol as the Rust side).
"""
import argparse
import json
import time

import open_clip
import torch
import webdataset as wds
from torchvision import transforms as T

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("spec")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()

    transform = T.Compose([
        T.RandomResizedCrop(a.image_size, scale=(0.9, 1.0), interpolation=T.InterpolationMode.BICUBIC),
        T.ToTensor(),
        T.Normalize(MEAN, STD),
    ])
    tokenize = open_clip.get_tokenizer("ViT-B-32")
    ds = (
        wds.WebDataset(a.spec, resampled=True, shardshuffle=False, nodesplitter=None)
        .shuffle(1000)
        .decode("pilrgb")
        .to_tuple("jpg;png;webp", "txt")
        .map_tuple(transform, lambda t: tokenize([t])[0])
        .batched(a.batch_size)
    )
    loader = wds.WebLoader(ds, batch_size=None, num_workers=a.workers, persistent_workers=False)
    it = iter(loader)
    t0 = time.perf_counter()
    next(it)
    warm = time.perf_counter() - t0
    start = time.perf_counter()
    images = 0
    for _ in range(a.batches):
        imgs, toks = next(it)
        images += imgs.shape[0]
    secs = time.perf_counter() - start
    ips = images / secs
    if a.json:
        print(json.dumps({"images_per_s": ips, "images": images, "seconds": secs, "warmup_s": warm,
                          "workers": a.workers, "image_size": a.image_size}))
    else:
        print(f"{ips:.0f} images/s ({images} images in {secs:.2f} s after a {warm:.2f} s warm-up batch)")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
