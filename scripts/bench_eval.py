"""Evaluation feature-extraction speed the way an OpenCLIP user gets it: webdataset + PIL +
open_clip's eval preprocess in DataLoader workers, `encode_image` under no_grad, batch 256.
Prints one JSON line: {"images", "seconds", "images_per_s"} (after one warm-up batch)."""
import argparse, json, time
import torch, webdataset as wds, open_clip

p = argparse.ArgumentParser()
p.add_argument("spec")
p.add_argument("--model", default="ViT-B-32")
p.add_argument("--workers", type=int, default=2)
p.add_argument("--batch-size", type=int, default=256)
a = p.parse_args()
torch.set_num_threads(a.workers)
model, _, preprocess = open_clip.create_model_and_transforms(a.model, pretrained=None)
model.eval()
shards = wds.shardlists.expand_urls(a.spec)
workers = min(a.workers, len(shards))  # a worker without a shard would find no sample
ds = (wds.WebDataset(a.spec, shardshuffle=False).decode("pil")
      .to_tuple("jpg", "cls").map_tuple(preprocess, lambda c: c).batched(a.batch_size))
loader = wds.WebLoader(ds, batch_size=None, num_workers=workers)
n, start = 0, None
with torch.no_grad():
    for images, _ in loader:
        model.encode_image(images)
        if start is None:
            start = time.perf_counter()  # after the warm-up batch
            continue
        n += images.shape[0]
secs = time.perf_counter() - start
print(json.dumps({"images": n, "seconds": secs, "images_per_s": n / secs}))
