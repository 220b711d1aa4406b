"""Stand-in Hub repositories shaped like the published ones, and what the reference libraries
predict with them (tests/suite/pretrained.rs, issue 22 part 4). Run with the torch venv's python.

  pretrained_repos.py OUT

writes, with small random weights (same seed, same files):
  OUT/openai/    as openai/clip-vit-base-patch32's main branch: config.json, pytorch_model.bin
                 (a torch.save'd state dict with the position_ids buffers older transformers
                 saved), tokenizer.json + vocab.json/merges.txt + tokenizer_config.json +
                 special_tokens_map.json (OpenAI's BPE, 49,408 ids), preprocessor_config.json
                 (shortest edge + centre crop, bicubic).
  OUT/siglip/    as google/siglip-base-patch16-224: config.json, model.safetensors, spiece.model
                 (a Unigram model trained here, T5's layout) with tokenizer_config.json and
                 special_tokens_map.json, preprocessor_config.json (squash to the square size,
                 bilinear) — no tokenizer.json.
  OUT/openclip/  as laion/CLIP-ViT-*: open_clip_config.json, open_clip_pytorch_model.bin (an
                 OpenCLIP training checkpoint: {"epoch", "name", "state_dict" with DDP's
                 "module." names}), and the Hugging Face tokenizer files LAION repos carry.
  OUT/images/CLASS/*.png   16 images of 4 classes, none square (landscape and portrait, up to
                 3:1), with different content at their edges than at their centres.
  OUT/classnames.txt, OUT/templates-one.txt (the pipelines' single template),
  OUT/templates-two.txt (OpenCLIP's classifier averages them).
  OUT/reference.json  per repository: top1, confusion_matrix [true][predicted], each image's
                 predicted class (in sorted path order), and the smallest
                 top-1 − top-2 logit gap over the images (the test needs it well above the
                 float differences between implementations), all from
                   openai, siglip: transformers' pipeline("zero-shot-image-classification") on
                                   the folder (its own tokenizer and image processor);
                   openclip:       open_clip.create_model_from_pretrained("local-dir:...") with
                                   its preprocess, get_tokenizer and build_zero_shot_classifier;
                 and for siglip also crop_confusion_matrix: the same model with a shorter-side
                 resize and centre crop instead of the squash (what cliptrain did before), and
                 masked_confusion_matrix: the pipeline's default, which masks SigLIP's padding
                 (see pipeline_logits); crop_differs / masked_differs count the images whose
                 prediction changes.
"""
import json
import os
import random
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_clip_tokenizer import clip_vocab_and_merges  # noqa: E402

CLASSES = ["red fox", "blue car", "green tree", "yellow bird"]
TEMPLATE_ONE = "a photo of a {}."
TEMPLATES_TWO = ["a photo of a {}.", "a blurry picture of the {}."]
SIZES = [(300, 200), (200, 300), (320, 180), (180, 320), (360, 120), (120, 360), (256, 192),
         (192, 256)]
SIGLIP_CONTEXT = 64
SIGLIP_SEED = 0


def images(out: Path):
    """Non-square images whose outer thirds differ from their centres, so a crop changes them."""
    rng = np.random.default_rng(5)
    for c, name in enumerate(CLASSES):
        folder = out / "images" / name.replace(" ", "_")
        folder.mkdir(parents=True)
        for i in range(4):
            w, h = SIZES[(2 * c + i) % len(SIZES)]
            img = np.empty((h, w, 3), dtype=np.float64)
            centre, edge = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
            img[:] = centre
            band = max(w, h) // 3
            if w > h:
                img[:, :band], img[:, w - band:] = edge, 255 - edge
            else:
                img[:band], img[h - band:] = edge, 255 - edge
            yy, xx = np.mgrid[0:h, 0:w]
            img += 60 * np.sin(xx / rng.uniform(5, 30))[..., None] * rng.uniform(-1, 1, 3)
            img += 60 * np.cos(yy / rng.uniform(5, 30))[..., None] * rng.uniform(-1, 1, 3)
            img += rng.normal(0, 12, img.shape)
            pixels = np.clip(img, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")


def image_list(out: Path):
    """(PIL image, label) in the order cliptrain reads the ImageFolder (sorted paths)."""
    rows = []
    for folder in sorted((out / "images").iterdir()):
        label = CLASSES.index(folder.name.replace("_", " "))
        for path in sorted(folder.iterdir()):
            rows.append((Image.open(path).convert("RGB"), label))
    return rows


def spread(model, std: float, seed: int):
    """Random weights with a larger spread than the init, so that images (not only the text's
    biases) decide the classes, and LayerNorms/biases off their 1/0 init."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2 and "embedding" not in name:
                p.normal_(0, std / p.shape[-1] ** 0.5)
            elif p.ndim == 1 and p.numel() > 1:
                p.add_(0.1 * torch.randn_like(p))


def clip_tokenizer_files(d: Path):
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges()
    tok = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    tok.save_pretrained(str(d))
    (d / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (d / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges))
    (d / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}))


def openai(d: Path):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(1)
    # OpenAI's config states eos_token_id 2 (transformers then pools at the argmax id, the end
    # token 49407), as the published one does.
    config = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                         hidden_act="quick_gelu", bos_token_id=0, eos_token_id=2, pad_token_id=1),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=64, intermediate_size=256,
                           num_hidden_layers=2, num_attention_heads=4, hidden_act="quick_gelu"),
        projection_dim=32,
    )
    model = CLIPModel(config).eval()
    spread(model, 2.0, 3)
    d.mkdir(parents=True)
    config.save_pretrained(str(d))
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    sd["text_model.embeddings.position_ids"] = torch.arange(77)[None]
    sd["vision_model.embeddings.position_ids"] = torch.arange(17)[None]
    torch.save(sd, d / "pytorch_model.bin")
    clip_tokenizer_files(d)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                       resample=3).save_pretrained(str(d))


def siglip(d: Path, work: Path):
    import sentencepiece as spm
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    d.mkdir(parents=True)
    rng = random.Random(2)
    words = " ".join(CLASSES + TEMPLATES_TWO).replace("{}", "").split()
    words += "a the of in on with small large two photo picture dog cat house sky".split()
    corpus = work / "siglip-corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(2, 9)))
                                for _ in range(2000)))
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(d / "spiece"), vocab_size=120, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2, num_threads=1,
        hard_vocab_limit=False)
    (d / "spiece.vocab").unlink()
    vocab = spm.SentencePieceProcessor(model_file=str(d / "spiece.model")).vocab_size()
    (d / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "SiglipTokenizer", "model_max_length": SIGLIP_CONTEXT,
        "do_lower_case": True, "eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>"}))
    (d / "special_tokens_map.json").write_text(json.dumps({
        "eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>"}))
    torch.manual_seed(2)
    config = SiglipConfig(
        text_config={"vocab_size": vocab, "hidden_size": 64, "intermediate_size": 128,
                     "num_hidden_layers": 2, "num_attention_heads": 4,
                     "max_position_embeddings": SIGLIP_CONTEXT, "pad_token_id": 1,
                     "eos_token_id": 1, "bos_token_id": 0},
        vision_config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "image_size": 32, "patch_size": 8},
    )
    model = SiglipModel(config).eval()
    spread(model, 2.0, SIGLIP_SEED)
    config.save_pretrained(str(d))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(d / "model.safetensors"), metadata={"format": "pt"})
    SiglipImageProcessor(size={"height": 32, "width": 32}, resample=2).save_pretrained(str(d))


def openclip(d: Path):
    import open_clip

    torch.manual_seed(4)
    cfg = {
        "embed_dim": 32,
        "quick_gelu": False,
        "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2,
                       "head_width": 16, "mlp_ratio": 4.0},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4,
                     "layers": 2},
    }
    model = open_clip.model.CLIP(**cfg).eval()
    spread(model, 2.0, 3)
    d.mkdir(parents=True)
    sd = {"module." + k: v for k, v in model.state_dict().items()}
    torch.save({"epoch": 32, "name": "2026_01_01-laion-stand-in", "state_dict": sd},
               d / "open_clip_pytorch_model.bin")
    (d / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": cfg,
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073],
                           "std": [0.26862954, 0.26130258, 0.27577711]},
    }, indent=2))
    clip_tokenizer_files(d)


def summary(logits: torch.Tensor, labels):
    """top1, the confusion matrix and the smallest top-1 − top-2 gap of [images, classes]
    logits."""
    n = len(CLASSES)
    top2 = logits.topk(2, dim=1)
    predicted = top2.indices[:, 0].tolist()
    matrix = [[0] * n for _ in range(n)]
    for t, p in zip(labels, predicted):
        matrix[t][p] += 1
    return {
        "top1": sum(t == p for t, p in zip(labels, predicted)) / len(labels),
        "confusion_matrix": matrix,
        "min_margin": float((top2.values[:, 0] - top2.values[:, 1]).min()),
        "distinct_predictions": len(set(predicted)),
        "predicted": predicted,
    }


def pipeline_logits(folder: Path, pil, attention_mask=False):
    """transformers' zero-shot pipeline on the folder; its scores turned back into logits
    (softmax: log p, which keeps the gaps; sigmoid: log(p / (1 − p))).

    SigLIP was trained attending to its padding (pad = end token, no mask: big_vision, and
    open_clip's SigLIP), but transformers 5's SiglipTokenizer also returns an attention mask,
    which the pipeline hands to the model: the text embeddings then are not the authors'. The
    reference asks the tokenizer for no mask (a pipeline argument); `attention_mask=True` gives
    the pipeline's default, reported beside it. (The pipeline's own `tokenizer_kwargs` are
    dropped by its _sanitize_parameters in transformers 5.24, so the tokenizer's
    model_input_names is set instead, as transformers PR #33174 proposes.)"""
    from transformers import pipeline

    classify = pipeline("zero-shot-image-classification", model=str(folder), device="cpu")
    siglip = classify.model.config.model_type == "siglip"
    if siglip and not attention_mask:
        classify.tokenizer.model_input_names = ["input_ids"]
    rows = classify(pil, candidate_labels=CLASSES, hypothesis_template=TEMPLATE_ONE)
    out = torch.zeros(len(pil), len(CLASSES), dtype=torch.float64)
    for i, row in enumerate(rows):
        for r in row:
            p = torch.tensor(r["score"], dtype=torch.float64)
            out[i, CLASSES.index(r["label"])] = torch.logit(p) if siglip else p.log()
    return out


def siglip_cropped_logits(folder: Path, pil):
    """The SigLIP model with CLIP's shorter-side resize + centre crop in place of its squash."""
    from transformers import AutoTokenizer, CLIPImageProcessor, SiglipModel

    model = SiglipModel.from_pretrained(str(folder)).eval()
    tok = AutoTokenizer.from_pretrained(str(folder))
    crop = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                              resample=2, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    texts = [TEMPLATE_ONE.format(c) for c in CLASSES]
    with torch.no_grad():
        ids = tok(texts, padding="max_length", return_tensors="pt").input_ids
        px = crop(pil, return_tensors="pt").pixel_values
        return model(input_ids=ids, pixel_values=px).logits_per_image


def openclip_logits(folder: Path, pil):
    import open_clip

    name = f"local-dir:{folder}"
    model, preprocess = open_clip.create_model_from_pretrained(name)
    model.eval()
    tokenizer = open_clip.get_tokenizer(name)
    with torch.no_grad():
        classifier = open_clip.build_zero_shot_classifier(
            model, tokenizer, CLASSES, TEMPLATES_TWO, device="cpu", use_tqdm=False)
        px = torch.stack([preprocess(im) for im in pil])
        feats = model.encode_image(px, normalize=True)
        return model.logit_scale.exp() * feats @ classifier


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    images(out)
    (out / "classnames.txt").write_text("\n".join(CLASSES) + "\n")
    (out / "templates-one.txt").write_text(TEMPLATE_ONE + "\n")
    (out / "templates-two.txt").write_text("\n".join(TEMPLATES_TWO) + "\n")
    openai(out / "openai")
    siglip(out / "siglip", out)
    openclip(out / "openclip")
    rows = image_list(out)
    pil, labels = [r[0] for r in rows], [r[1] for r in rows]
    reference = {
        "openai": summary(pipeline_logits(out / "openai", pil), labels),
        "siglip": summary(pipeline_logits(out / "siglip", pil), labels),
        "openclip": summary(openclip_logits(out / "openclip", pil), labels),
    }
    cropped = summary(siglip_cropped_logits(out / "siglip", pil), labels)
    reference["siglip"]["crop_confusion_matrix"] = cropped["confusion_matrix"]
    reference["siglip"]["crop_top1"] = cropped["top1"]
    masked = summary(pipeline_logits(out / "siglip", pil, attention_mask=True), labels)
    reference["siglip"]["masked_confusion_matrix"] = masked["confusion_matrix"]
    reference["siglip"]["masked_top1"] = masked["top1"]
    for name, other in [("crop", cropped), ("masked", masked)]:
        pairs = zip(other["predicted"], reference["siglip"]["predicted"])
        reference["siglip"][f"{name}_differs"] = sum(a != b for a, b in pairs)
    (out / "reference.json").write_text(json.dumps(reference, indent=1))
    print(json.dumps(reference))


if __name__ == "__main__":
    main()
