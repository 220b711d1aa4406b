"""Independent reference for `cliptrain eval zeroshot` (used by tests/suite/eval.rs).

  zeroshot_reference.py CKPT_DIR --data SHARD.tar --classnames F --templates F
                        [--classes-subset F] --json OUT

Rebuilds the checkpoint as a Hugging Face `transformers.CLIPModel` from its config.toml and
model.safetensors (strict load), preprocesses images the way open_clip evaluates (torchvision
Resize(bicubic) + CenterCrop + Normalize on PIL images), tokenizes with the `tokenizers` package,
and computes the CLIP-paper classifier and top-1/top-5 in plain torch. Nothing here shares code
with cliptrain, so agreement means both sides compute the same thing.
"""
import argparse
import io
import json
import tarfile
import tomllib
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file
from tokenizers import Tokenizer
from torchvision import transforms
from transformers import CLIPConfig, CLIPModel


def build_model(ckpt: Path, sot: int, eot: int):
    cfg = tomllib.loads((ckpt / "config.toml").read_text())
    m, v, t = cfg["model"], cfg["model"]["vision"], cfg["model"]["text"]
    act = m["activation"]
    config = CLIPConfig(
        text_config=dict(
            vocab_size=t["vocab_size"], hidden_size=t["width"],
            intermediate_size=int(t["width"] * t["mlp_ratio"]), num_hidden_layers=t["layers"],
            num_attention_heads=t["heads"], max_position_embeddings=t["context_length"],
            hidden_act=act, layer_norm_eps=m["layer_norm_eps"], eos_token_id=eot, bos_token_id=sot,
            pad_token_id=0,
        ),
        vision_config=dict(
            image_size=v["image_size"], patch_size=v["patch_size"], hidden_size=v["width"],
            intermediate_size=int(v["width"] * v["mlp_ratio"]), num_hidden_layers=v["layers"],
            num_attention_heads=v["heads"], hidden_act=act, layer_norm_eps=m["layer_norm_eps"],
        ),
        projection_dim=m["embed_dim"],
    )
    model = CLIPModel(config)
    model.load_state_dict(load_file(ckpt / "model.safetensors"), strict=True)
    return model.eval(), cfg


def tokenize(tok: Tokenizer, texts, ctx: int, sot: int, eot: int) -> torch.Tensor:
    rows = torch.zeros(len(texts), ctx, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = tok.encode(" ".join(text.lower().split()), add_special_tokens=False).ids
        ids = [sot] + ids[: ctx - 2] + [eot]
        rows[i, : len(ids)] = torch.tensor(ids)
    return rows


def read_shard(path: Path):
    samples = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            key, _, ext = member.name.partition(".")
            samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    for key in sorted(samples):
        s = samples[key]
        yield Image.open(io.BytesIO(s["jpg"])).convert("RGB"), int(s["cls"].decode().strip())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpt", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--classnames", type=Path, required=True)
    ap.add_argument("--templates", type=Path, required=True)
    ap.add_argument("--classes-subset", type=Path)
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(2)

    tok = Tokenizer.from_file(str(args.ckpt / "tokenizer.json"))
    sot, eot = tok.token_to_id("<|startoftext|>"), tok.token_to_id("<|endoftext|>")
    model, cfg = build_model(args.ckpt, sot, eot)
    classes = args.classnames.read_text().strip().splitlines()
    templates = args.templates.read_text().strip().splitlines()
    ctx = cfg["model"]["text"]["context_length"]
    with torch.no_grad():
        rows = []
        for c in classes:
            ids = tokenize(tok, [t.replace("{}", c) for t in templates], ctx, sot, eot)
            e = torch.nn.functional.normalize(model.text_projection(model.text_model(input_ids=ids).pooler_output), dim=-1)
            rows.append(torch.nn.functional.normalize(e.mean(0), dim=0))
        classifier = torch.stack(rows)

        size = cfg["model"]["vision"]["image_size"]
        prep = transforms.Compose([
            transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(cfg["data"]["image_mean"], cfg["data"]["image_std"]),
        ])
        images, labels = zip(*read_shard(args.data))
        labels = torch.tensor(labels)
        preds = []
        for i in range(0, len(images), 256):
            x = torch.stack([prep(im) for im in images[i:i + 256]])
            f = torch.nn.functional.normalize(model.visual_projection(model.vision_model(pixel_values=x).pooler_output), dim=-1)
            preds.append((f @ classifier.T).topk(min(5, len(classes)), dim=1).indices)
        preds = torch.cat(preds)

    def scores(mask):
        p, l = preds[mask], labels[mask]
        return {"samples": int(mask.sum()), "top1": (p[:, 0] == l).float().mean().item(),
                "top5": (p == l[:, None]).any(1).float().mean().item()}

    out = scores(torch.ones_like(labels, dtype=torch.bool))
    if args.classes_subset:
        seen = {classes.index(c) for c in args.classes_subset.read_text().strip().splitlines()}
        in_seen = torch.tensor([int(l) in seen for l in labels])
        out["groups"] = {"seen": scores(in_seen), "held_out": scores(~in_seen)}
    args.json.write_text(json.dumps(out, indent=1))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
