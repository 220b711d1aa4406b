"""Reference side of tests/suite/siglip.rs: cliptrain's `model.kind = "siglip"` against
transformers.SiglipModel, both directions, fp32 on CPU.

  siglip_parity.py make DIR
      A tiny random SiglipModel (vocab 600, context 16, vision width 64 = projection size;
      LayerNorms, biases, logit_scale and logit_bias moved off their init) saved with
      save_pretrained as DIR/hf, with DIR/inputs.safetensors (pixel_values, input_ids) and
      DIR/outputs.safetensors (image/text embeddings and features, both logits).
  siglip_parity.py check EXPORT CMP
      SiglipModel.from_pretrained(EXPORT) (offline, no missing or unexpected weights) on
      CMP/inputs.safetensors must give CMP/outputs.safetensors (cliptrain's) within --tol, and
      SiglipImageProcessor.from_pretrained(EXPORT) must resize to CMP/expect.json's image_size
      without a crop and normalise with its mean and std.

Each mode prints one JSON line; `check` exits 1 when something differs.
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

VOCAB, CTX = 600, 16


def outputs(model, inputs):
    with torch.no_grad():
        out = model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"])
        image = model.vision_model(pixel_values=inputs["pixel_values"]).pooler_output
        text = model.text_model(input_ids=inputs["input_ids"]).pooler_output
    return {
        "image_embeds": out.image_embeds,
        "text_embeds": out.text_embeds,
        "logits_per_image": out.logits_per_image,
        "logits_per_text": out.logits_per_text,
        "image_features": image,
        "text_features": text,
    }


def make(d: Path) -> int:
    from transformers import SiglipConfig, SiglipModel

    torch.manual_seed(11)
    config = SiglipConfig(
        text_config={"vocab_size": VOCAB, "hidden_size": 48, "intermediate_size": 96,
                     "num_hidden_layers": 2, "num_attention_heads": 4,
                     "max_position_embeddings": CTX, "projection_size": 64,
                     "bos_token_id": VOCAB - 2, "eos_token_id": VOCAB - 1, "pad_token_id": 0},
        vision_config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "image_size": 32, "patch_size": 8},
    )
    model = SiglipModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim <= 1 and p.numel() > 1:  # LayerNorms and biases
                p.add_(0.1 * torch.randn_like(p))
        model.logit_scale.fill_(1.7)
        model.logit_bias.fill_(-3.5)
    inputs = {
        "pixel_values": torch.randn(3, 3, 32, 32),
        "input_ids": torch.randint(0, VOCAB, (4, CTX)),
    }
    (d / "hf").mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(d / "hf"))
    save_file(inputs, str(d / "inputs.safetensors"))
    save_file({k: v.contiguous() for k, v in outputs(model, inputs).items()},
              str(d / "outputs.safetensors"))
    print(json.dumps({"parameters": sum(p.numel() for p in model.parameters())}))
    return 0


def check(export: Path, cmp: Path, tol: float) -> int:
    from transformers import SiglipImageProcessor, SiglipModel

    model, info = SiglipModel.from_pretrained(str(export), local_files_only=True,
                                              output_loading_info=True)
    model.eval()
    loading = {k: sorted(v) for k, v in info.items() if k != "error_msgs" and v}
    inputs = load_file(str(cmp / "inputs.safetensors"))
    ours = load_file(str(cmp / "outputs.safetensors"))
    theirs = outputs(model, inputs)
    diffs = {k: (theirs[k].float() - v.float()).abs().max().item() for k, v in ours.items()}
    expect = json.loads((cmp / "expect.json").read_text())
    ip = SiglipImageProcessor.from_pretrained(str(export), local_files_only=True)
    size = ip.size["height"] if isinstance(ip.size, dict) else ip.size.height
    image_ok = (
        size == expect["image_size"]
        and not getattr(ip, "do_center_crop", False)
        and [round(x, 6) for x in ip.image_mean] == [round(x, 6) for x in expect["mean"]]
        and [round(x, 6) for x in ip.image_std] == [round(x, 6) for x in expect["std"]]
    )
    print(json.dumps({"max_abs_diff": diffs, "loading_problems": loading,
                      "image_processor_ok": image_ok}))
    ok = all(v <= tol for v in diffs.values()) and not loading and image_ok and len(diffs) == 6
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("mode", choices=["make", "check"])
    ap.add_argument("dir", type=Path)
    ap.add_argument("cmp", type=Path, nargs="?")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    if a.mode == "make":
        return make(a.dir)
    if a.cmp is None:
        ap.error("check needs EXPORT and CMP folders")
    return check(a.dir, a.cmp, a.tol)


if __name__ == "__main__":
    sys.exit(main())
