"""Reference side of tests/suite/interop.rs: the folders cliptrain exports, loaded by the real libraries.

  interop_parity.py hf-check EXPORT CMP
      transformers.CLIPModel.from_pretrained(EXPORT) and CLIPProcessor.from_pretrained(EXPORT),
      offline. Runs the model on CMP/inputs.safetensors (pixel_values, input_ids) and compares
      its image/text embeddings with CMP/outputs.safetensors (cliptrain's). Also checks the
      processor: its tokenizer must give cliptrain's ids (CMP/captions.json) up to the EOT, and
      its image settings must be the checkpoint's size, mean and std (CMP/expect.json). Saves
      the loaded model and processor again with save_pretrained to CMP/resaved.
  interop_parity.py openclip-check EXPORT CMP
      open_clip.create_model_and_transforms('local-dir:' + EXPORT), the same comparisons, with
      open_clip.get_tokenizer('local-dir:' + EXPORT) when the export has a tokenizer.
  interop_parity.py peft-check ADAPTER CMP --base BASE
      PEFT's PeftModel.from_pretrained(CLIPModel.from_pretrained(BASE), ADAPTER): cliptrain's
      `export peft` folder on its base model, run on CMP/inputs.safetensors; its embeddings
      compared with CMP/outputs.safetensors (the adapted model's, computed by cliptrain).
  interop_parity.py score-check EXPORT CMP
      open_clip's own CLIP score of every sample of CMP/shard.tar (KEY.png + KEY.txt): the
      folder's preprocess and tokenizer, cosine of the normalised embeddings; compared with
      cliptrain's `data score` rows in CMP/scores.jsonl, key by key.
  interop_parity.py openclip-make DIR --act gelu|quick_gelu
      A small random OpenCLIP model (1-d parameters randomised too; quick_gelu also with MLP
      ratios OpenCLIP truncates) as DIR/open_clip_model.safetensors
      + DIR/open_clip_config.json, with DIR/inputs.safetensors and its DIR/outputs.safetensors.
  interop_parity.py openclip-siglip-make DIR
      The same for OpenCLIP's SigLIP (timm trunk), shrunk to a test size.
  interop_parity.py resize-pos DIR OUT --grids 8,2 --context 6
      The position embeddings of the HF folder DIR as `model.init_from` must fit them, computed
      independently with torch: the vision grid resampled to each of --grids as OpenCLIP's
      resize_pos_embed does (F.interpolate bicubic, align_corners=False, antialias=True, class
      token row kept) saved as OUT `vision_G`, the text rows truncated to --context as `text`.

Each mode prints one JSON line; the checks exit 1 when an embedding differs by more than --tol.
"""
import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
from safetensors.torch import load_file, save_file

VOCAB, CTX = 99, 16
EOT = VOCAB - 1  # OpenCLIP pools at argmax(ids): EOT must be the largest id


def max_diff(a, b):
    return (a.float() - b.float()).abs().max().item()


def ids_until_eot(row, eot):
    row = [int(x) for x in row]
    return row[: row.index(eot) + 1] if eot in row else row


def compare_ids(got_rows, want_rows, eot):
    bad = []
    for i, (g, w) in enumerate(zip(got_rows, want_rows)):
        if ids_until_eot(g, eot) != ids_until_eot(w, eot):
            bad.append(i)
    return bad


def hf_check(export: Path, cmp: Path, tol: float) -> int:
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(str(export), local_files_only=True).eval()
    processor = CLIPProcessor.from_pretrained(str(export), local_files_only=True)
    inputs = load_file(str(cmp / "inputs.safetensors"))
    ours = load_file(str(cmp / "outputs.safetensors"))
    with torch.no_grad():
        out = model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"])
    diffs = {
        "image_embeds": max_diff(out.image_embeds, ours["image_embeds"]),
        "text_embeds": max_diff(out.text_embeds, ours["text_embeds"]),
    }
    expect = json.loads((cmp / "expect.json").read_text())
    captions = json.loads((cmp / "captions.json").read_text())
    tok = processor(text=captions, padding="max_length", max_length=expect["context_length"],
                    truncation=True, return_tensors="pt")
    bad_rows = compare_ids(tok["input_ids"].tolist(), inputs["input_ids"].tolist(), expect["eot"])
    ip = processor.image_processor
    crop = ip.crop_size["height"] if isinstance(ip.crop_size, dict) else ip.crop_size.height
    image_ok = (
        crop == expect["image_size"]
        and [round(x, 6) for x in ip.image_mean] == [round(x, 6) for x in expect["mean"]]
        and [round(x, 6) for x in ip.image_std] == [round(x, 6) for x in expect["std"]]
    )
    # What transformers itself writes back, for the Rust side to import again.
    model.save_pretrained(str(cmp / "resaved"))
    processor.save_pretrained(str(cmp / "resaved"))
    print(json.dumps({"max_abs_diff": diffs, "tokenizer_rows_differing": bad_rows,
                      "image_processor_ok": image_ok, "tokenizer": type(processor.tokenizer).__name__}))
    ok = all(v <= tol for v in diffs.values()) and not bad_rows and image_ok
    return 0 if ok else 1


def openclip_check(export: Path, cmp: Path, tol: float) -> int:
    import open_clip

    name = "local-dir:" + str(export)
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    model.eval()
    inputs = load_file(str(cmp / "inputs.safetensors"))
    ours = load_file(str(cmp / "outputs.safetensors"))
    with torch.no_grad():
        image = model.encode_image(inputs["pixel_values"], normalize=True)
        text = model.encode_text(inputs["input_ids"], normalize=True)
    diffs = {
        "image_embeds": max_diff(image, ours["image_embeds"]),
        "text_embeds": max_diff(text, ours["text_embeds"]),
    }
    expect = json.loads((cmp / "expect.json").read_text())
    norm = [t for t in preprocess.transforms if type(t).__name__ == "Normalize"][0]
    image_ok = (
        [round(x, 6) for x in norm.mean] == [round(x, 6) for x in expect["mean"]]
        and [round(x, 6) for x in norm.std] == [round(x, 6) for x in expect["std"]]
        and model.visual.image_size[0] == expect["image_size"]
    )
    result = {"max_abs_diff": diffs, "image_preprocess_ok": image_ok}
    bad_rows = []
    if (export / "tokenizer.json").exists():
        captions = json.loads((cmp / "captions.json").read_text())
        tokenizer = open_clip.get_tokenizer(name)
        bad_rows = compare_ids(tokenizer(captions).tolist(), inputs["input_ids"].tolist(), expect["eot"])
        result["tokenizer"] = type(tokenizer).__name__
        result["tokenizer_rows_differing"] = bad_rows
    print(json.dumps(result))
    ok = all(v <= tol for v in diffs.values()) and not bad_rows and image_ok
    return 0 if ok else 1


def peft_check(adapter: Path, cmp: Path, base: Path, tol: float) -> int:
    from peft import PeftModel
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(str(base), local_files_only=True)
    model = PeftModel.from_pretrained(model, str(adapter)).eval()
    adapted = model.get_base_model()
    layers = sorted(n for n, m in adapted.named_modules() if hasattr(m, "lora_A"))
    inputs = load_file(str(cmp / "inputs.safetensors"))
    ours = load_file(str(cmp / "outputs.safetensors"))
    with torch.no_grad():
        out = adapted(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"])
    diffs = {
        "image_embeds": max_diff(out.image_embeds, ours["image_embeds"]),
        "text_embeds": max_diff(out.text_embeds, ours["text_embeds"]),
    }
    print(json.dumps({"max_abs_diff": diffs, "lora_modules": len(layers)}))
    return 0 if all(v <= tol for v in diffs.values()) and layers else 1


def score_check(export: Path, cmp: Path, tol: float) -> int:
    import io
    import tarfile

    import open_clip
    from PIL import Image

    name = "local-dir:" + str(export)
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    model.eval()
    tokenizer = open_clip.get_tokenizer(name)
    samples = {}
    with tarfile.open(cmp / "shard.tar") as tar:
        for m in tar.getmembers():
            key, ext = m.name.split(".", 1)
            samples.setdefault(key, {})[ext] = tar.extractfile(m).read()
    keys = sorted(samples)
    images = torch.stack([preprocess(Image.open(io.BytesIO(samples[k]["png"])).convert("RGB")) for k in keys])
    texts = tokenizer([samples[k]["txt"].decode().strip() for k in keys])
    with torch.no_grad():
        score = (model.encode_image(images, normalize=True) * model.encode_text(texts, normalize=True)).sum(-1)
    ours = {}
    for line in (cmp / "scores.jsonl").read_text().splitlines():
        row = json.loads(line)
        ours[row["key"]] = row["score"]
    missing = [k for k in keys if k not in ours]
    diff = max(abs(score[i].item() - ours[k]) for i, k in enumerate(keys) if k in ours)
    print(json.dumps({"samples": len(keys), "missing": missing, "max_abs_diff": diff,
                      "score_range": [score.min().item(), score.max().item()]}))
    return 0 if not missing and diff <= tol else 1


def openclip_make(d: Path, act: str) -> int:
    import open_clip

    torch.manual_seed(7 if act == "gelu" else 8)
    cfg = {
        "embed_dim": 40,
        "quick_gelu": act == "quick_gelu",
        "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2,
                       "head_width": 16, "mlp_ratio": 4.0},
        "text_cfg": {"context_length": CTX, "vocab_size": VOCAB, "width": 48, "heads": 4,
                     "layers": 2, "mlp_ratio": 4.0},
    }
    if act == "quick_gelu":
        # Ratios whose MLP widths OpenCLIP truncates (int(64 * 2.6667) = 170, int(48 * 3.99) =
        # 191) where rounding would give 171 and 192, as bigG's 4.9231 or SO400M's 3.7362 may.
        cfg["vision_cfg"]["mlp_ratio"] = 2.6667
        cfg["text_cfg"]["mlp_ratio"] = 3.99
    model = open_clip.model.CLIP(**cfg).eval()
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.ndim <= 1 and p.numel() > 1:  # LayerNorms, biases, class embedding
                p.add_(0.1 * torch.randn_like(p))
        model.logit_scale.fill_(2.1)
    ids = torch.randint(1, EOT - 1, (4, CTX))
    for row, pos in enumerate([3, CTX - 1, 7, 10]):
        ids[row, 0] = EOT - 1
        ids[row, pos] = EOT
        ids[row, pos + 1:] = 0
    inputs = {"pixel_values": torch.randn(3, 3, 32, 32), "input_ids": ids}
    with torch.no_grad():
        outputs = {
            "image_features": model.encode_image(inputs["pixel_values"]),
            "text_features": model.encode_text(inputs["input_ids"]),
        }
    d.mkdir(parents=True, exist_ok=True)
    sd = {k: v.contiguous() for k, v in model.state_dict().items() if k != "attn_mask"}
    save_file(sd, str(d / "open_clip_model.safetensors"))
    (d / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": cfg,
        "preprocess_cfg": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]},
    }, indent=2))
    save_file(inputs, str(d / "inputs.safetensors"))
    save_file({k: v.contiguous() for k, v in outputs.items()}, str(d / "outputs.safetensors"))
    print(json.dumps({"tensors": len(sd), "eot": EOT}))
    return 0


def openclip_siglip_make(d: Path) -> int:
    """OpenCLIP's SigLIP (`CustomTextCLIP`: timm `vit_base_patch16_siglip_224` trunk with MAP
    pooling, bidirectional text pooled at the last position, biased text projection, logit
    bias), shrunk to a test size by overriding the timm model's depth, width, patch and image
    size (timm's `create_model` takes them as keyword overrides; the 12 heads stay the name's).
    """
    import open_clip
    import open_clip.timm_model as timm_model

    create = timm_model.timm.create_model

    def small(name, **kw):
        kw.update(depth=2, embed_dim=96, img_size=32, patch_size=8)
        return create(name, **kw)

    timm_model.timm.create_model = small
    torch.manual_seed(11)
    cfg = {
        "embed_dim": 96,
        "init_logit_bias": -10,
        "custom_text": True,
        "vision_cfg": {"image_size": 32, "timm_model_name": "vit_base_patch16_siglip_224",
                       "timm_model_pretrained": False, "timm_pool": "map", "timm_proj": "none"},
        "text_cfg": {"context_length": CTX, "vocab_size": VOCAB, "width": 64, "heads": 4,
                     "layers": 2, "no_causal_mask": True, "proj_bias": True,
                     "pool_type": "last", "norm_kwargs": {"eps": 1e-6},
                     "tokenizer_kwargs": {"clean": "canonicalize"}},
    }
    model = open_clip.model.CustomTextCLIP(
        **{k: v for k, v in cfg.items() if k != "custom_text"}).eval()
    timm_model.timm.create_model = create
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.ndim <= 1 and p.numel() > 1:  # LayerNorms and biases
                p.add_(0.1 * torch.randn_like(p))
        model.logit_scale.fill_(2.1)
        model.logit_bias.fill_(-3.5)
    ids = torch.randint(1, EOT, (4, CTX))
    inputs = {"pixel_values": torch.randn(3, 3, 32, 32), "input_ids": ids}
    with torch.no_grad():
        outputs = {
            "image_features": model.encode_image(inputs["pixel_values"]),
            "text_features": model.encode_text(inputs["input_ids"]),
        }
    d.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(d / "open_clip_model.safetensors"))
    (d / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": cfg,
        "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
    }, indent=2))
    save_file(inputs, str(d / "inputs.safetensors"))
    save_file({k: v.contiguous() for k, v in outputs.items()}, str(d / "outputs.safetensors"))
    print(json.dumps({"tensors": len(model.state_dict())}))
    return 0


def resize_pos(d: Path, out: Path, grids: str, context: int) -> int:
    import torch.nn.functional as F

    sd = load_file(str(d / "model.safetensors"))
    pos = sd["vision_model.embeddings.position_embedding.weight"].float()
    width = pos.shape[1]
    old = int(round((pos.shape[0] - 1) ** 0.5))
    cls, grid = pos[:1], pos[1:].reshape(1, old, old, width).permute(0, 3, 1, 2)
    result = {}
    for g in [int(x) for x in grids.split(",")]:
        resized = F.interpolate(grid, size=(g, g), mode="bicubic", align_corners=False,
                                antialias=True)
        resized = resized.permute(0, 2, 3, 1).reshape(g * g, width)
        result[f"vision_{g}"] = torch.cat([cls, resized]).contiguous()
    text = sd["text_model.embeddings.position_embedding.weight"]
    result["text"] = text[:context].contiguous()
    save_file(result, str(out))
    print(json.dumps({"grid": old, "grids": grids, "context": context}))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("mode", choices=["hf-check", "openclip-check", "peft-check", "score-check", "openclip-make",
                                     "openclip-siglip-make", "resize-pos"])
    ap.add_argument("dir", type=Path)
    ap.add_argument("cmp", type=Path, nargs="?")
    ap.add_argument("--act", choices=["quick_gelu", "gelu"], default="gelu")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--grids", default="8")
    ap.add_argument("--context", type=int, default=CTX)
    ap.add_argument("--base", type=Path, help="peft-check: the base model folder")
    a = ap.parse_args()
    if a.mode == "openclip-make":
        return openclip_make(a.dir, a.act)
    if a.mode == "openclip-siglip-make":
        return openclip_siglip_make(a.dir)
    if a.mode == "resize-pos":
        if a.cmp is None:
            ap.error("resize-pos needs DIR and OUT")
        return resize_pos(a.dir, a.cmp, a.grids, a.context)
    if a.cmp is None:
        ap.error(f"{a.mode} needs EXPORT and CMP folders")
    if a.mode == "score-check":
        return score_check(a.dir, a.cmp, a.tol)
    if a.mode == "peft-check":
        if a.base is None:
            ap.error("peft-check needs --base")
        return peft_check(a.dir, a.cmp, a.base, a.tol)
    check = hf_check if a.mode == "hf-check" else openclip_check
    return check(a.dir, a.cmp, a.tol)


if __name__ == "__main__":
    sys.exit(main())
