"""Reference side of tests/suite/augment.rs: torchvision's functional ops on uint8 tensors.

  augment_parity.py DIR
      Reads DIR/cases.safetensors (`image_K`: uint8 [H, W, 3]) and DIR/cases.json (one
      [op, params] per K: brightness|contrast|saturation|hue [factor], grayscale [],
      hflip [], erase [top, left, height, width, r, g, b]), applies each op with
      torchvision.transforms.functional to the CHW tensor, and writes DIR/reference.safetensors
      (`image_K`, uint8 [H, W, 3]). Prints one JSON line: the number of cases.
"""
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torchvision.transforms import functional as F


def apply(img, op, args):
    if op == "brightness":
        return F.adjust_brightness(img, args[0])
    if op == "contrast":
        return F.adjust_contrast(img, args[0])
    if op == "saturation":
        return F.adjust_saturation(img, args[0])
    if op == "hue":
        return F.adjust_hue(img, args[0])
    if op == "grayscale":
        return F.rgb_to_grayscale(img, num_output_channels=3)
    if op == "hflip":
        return F.hflip(img)
    if op == "erase":
        top, left, h, w, *fill = [int(a) for a in args]
        value = torch.tensor(fill, dtype=torch.uint8).view(3, 1, 1)
        return F.erase(img, top, left, h, w, value)
    raise SystemExit(f"unknown op {op}")


def main() -> int:
    d = Path(sys.argv[1])
    images = load_file(str(d / "cases.safetensors"))
    cases = json.loads((d / "cases.json").read_text())
    out = {}
    for k, (op, args) in enumerate(cases):
        chw = images[f"image_{k}"].permute(2, 0, 1).contiguous()
        out[f"image_{k}"] = apply(chw, op, args).permute(1, 2, 0).contiguous()
    save_file(out, str(d / "reference.safetensors"))
    print(json.dumps({"cases": len(cases)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
