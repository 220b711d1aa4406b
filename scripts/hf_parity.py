"""Reference side of tests/suite/model_parity.rs: a tiny Hugging Face CLIPModel as ground truth.

  hf_parity.py make  OUTDIR --act quick_gelu|gelu
      Builds a small random CLIPModel (LayerNorm gains/biases and linear biases randomised too,
      so every parameter matters), writes OUTDIR/model.safetensors (HF state-dict names),
      inputs.safetensors, outputs.safetensors and config.json.
  hf_parity.py check DIR --act quick_gelu|gelu
      Loads DIR/model.safetensors (written by cliptrain) with load_state_dict(strict=True), runs
      it on DIR/inputs.safetensors and compares with DIR/outputs.safetensors (cliptrain's). Prints
      one JSON line of max abs diffs; exits 1 if any exceeds --tol.

The eager attention implementation is used so the reference does not share libtorch's SDPA
kernel with the Rust side.
"""
import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPConfig, CLIPModel

VOCAB, EOS, CTX = 99, 98, 16
# EOT position per caption: short, full-length, mid with EOS padding (pad == eos, as some HF
# tokenizers), mid with zero padding.
EOT_POS = [3, CTX - 1, 7, 10]


def config(act: str) -> CLIPConfig:
    return CLIPConfig(
        text_config=dict(
            vocab_size=VOCAB, hidden_size=48, intermediate_size=192, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=CTX, hidden_act=act,
            eos_token_id=EOS, bos_token_id=97, pad_token_id=0, layer_norm_eps=1e-5,
        ),
        vision_config=dict(
            image_size=32, patch_size=8, hidden_size=64, intermediate_size=256,
            num_hidden_layers=2, num_attention_heads=4, hidden_act=act, layer_norm_eps=1e-5,
        ),
        projection_dim=40,
    )


def build(act: str) -> CLIPModel:
    model = CLIPModel(config(act))
    model.set_attn_implementation("eager")
    return model.eval()


def outputs(model: CLIPModel, inputs: dict) -> dict:
    with torch.no_grad():
        out = model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"])
        text = model.text_model(input_ids=inputs["input_ids"]).pooler_output
        image = model.vision_model(pixel_values=inputs["pixel_values"]).pooler_output
        return {
            "text_embeds": out.text_embeds,
            "image_embeds": out.image_embeds,
            "logits_per_image": out.logits_per_image,
            "logits_per_text": out.logits_per_text,
            "text_features": model.text_projection(text),
            "image_features": model.visual_projection(image),
        }


def make(outdir: Path, act: str) -> None:
    torch.manual_seed(1234 if act == "gelu" else 4321)
    model = build(act)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:  # LayerNorm gains/biases, linear biases, class embedding
                p.add_(0.1 * torch.randn_like(p))
        model.logit_scale.fill_(2.3)
    ids = torch.randint(1, EOS - 1, (len(EOT_POS), CTX))
    for row, pos in enumerate(EOT_POS):
        ids[row, pos] = EOS
        ids[row, pos + 1:] = EOS if row == 2 else 0
    inputs = {"pixel_values": torch.randn(3, 3, 32, 32), "input_ids": ids}
    outdir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(outdir / "model.safetensors"))
    save_file(inputs, str(outdir / "inputs.safetensors"))
    save_file({k: v.contiguous() for k, v in outputs(model, inputs).items()},
              str(outdir / "outputs.safetensors"))
    model.config.to_json_file(str(outdir / "config.json"))


def check(d: Path, act: str, tol: float) -> int:
    model = build(act)
    missing_unexpected = model.load_state_dict(load_file(str(d / "model.safetensors")), strict=True)
    inputs = load_file(str(d / "inputs.safetensors"))
    ours = load_file(str(d / "outputs.safetensors"))
    ref = outputs(model, inputs)
    diffs = {k: (ref[k] - ours[k]).abs().max().item() for k in ours}
    print(json.dumps({"strict_load": str(missing_unexpected), "max_abs_diff": diffs}))
    return 0 if all(v <= tol for v in diffs.values()) else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("mode", choices=["make", "check"])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--act", choices=["quick_gelu", "gelu"], default="quick_gelu")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    if a.mode == "make":
        make(a.dir, a.act)
        return 0
    return check(a.dir, a.act, a.tol)


if __name__ == "__main__":
    sys.exit(main())
