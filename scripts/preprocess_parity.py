"""Reference pixel values for tests/suite/preprocess.rs (issue 22, part 3).

  preprocess_parity.py OUT

Writes four non-square PNG images (300×200, 200×300, 1000×600 and 400×1000: smooth
gradients, edges and noise),
and for each processor case a folder OUT/CASE holding the processor file a model folder would
hold (`preprocessor_config.json`, or `open_clip_config.json` with its `preprocess_cfg`) and
the pixel values the reference library makes of each image: `IMAGE.f32`, float32 CHW at 224,
normalised as the file says. Cases: transformers' CLIP and SigLIP processors in both backends
(torchvision, the default, and PIL), a CLIP processor that resizes to 256 and crops 224, and
open_clip's `longest` (padded with gray 128) and `squash` transforms.
"""
import json
import os
import sys

import numpy as np
from PIL import Image

SIZE = 224
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def images(out):
    rng = np.random.default_rng(0)
    made = {}
    for name, (w, h) in {"wide": (300, 200), "tall": (200, 300), "photo": (1000, 600),
                         "portrait": (400, 1000)}.items():
        y, x = np.mgrid[0:h, 0:w]
        img = np.stack([x * 255 / w, y * 255 / h, (x + y) % 64 * 4], axis=-1)
        img[(x // 25 + y // 25) % 2 == 0] *= 0.5  # hard edges for the kernels' overshoot
        img += rng.normal(0, 12, img.shape)
        pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
        pil.save(os.path.join(out, name + ".png"))
        made[name] = Image.open(os.path.join(out, name + ".png")).convert("RGB")
    return made


def hf_cases():
    clip = {"do_resize": True, "size": {"shortest_edge": SIZE}, "resample": 3, "do_center_crop": True,
            "crop_size": {"height": SIZE, "width": SIZE}, "do_rescale": True, "rescale_factor": 1 / 255,
            "do_normalize": True, "image_mean": CLIP_MEAN, "image_std": CLIP_STD, "do_convert_rgb": True}
    siglip = {"do_resize": True, "size": {"height": SIZE, "width": SIZE}, "resample": 2, "do_rescale": True,
              "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    crop256 = dict(clip, size={"shortest_edge": 256})
    return {
        "hf-clip": ("CLIPImageProcessor", clip),
        "hf-clip-pil": ("CLIPImageProcessorPil", clip),
        "hf-clip-256": ("CLIPImageProcessorPil", crop256),
        "hf-siglip": ("SiglipImageProcessor", siglip),
        "hf-siglip-pil": ("SiglipImageProcessorPil", siglip),
    }


def main(out):
    import open_clip
    import transformers
    from open_clip.transform import PreprocessCfg, image_transform_v2

    made = images(out)

    def save(case, name, pixels):
        np.asarray(pixels, dtype="<f4").tofile(os.path.join(out, case, name + ".f32"))

    for case, (cls, cfg) in hf_cases().items():
        os.makedirs(os.path.join(out, case))
        # The file a model folder holds names the default class; the test reads it.
        stated = dict(cfg, image_processor_type=cls.removesuffix("Pil"))
        json.dump(stated, open(os.path.join(out, case, "preprocessor_config.json"), "w"))
        proc = getattr(transformers, cls)(**cfg)
        for name, img in made.items():
            save(case, name, proc(img, return_tensors="np")["pixel_values"][0])
    for case, mode in {"oc-longest": "longest", "oc-squash": "squash"}.items():
        os.makedirs(os.path.join(out, case))
        pre = {"size": SIZE, "mode": "RGB", "mean": CLIP_MEAN, "std": CLIP_STD,
               "interpolation": "bicubic", "resize_mode": mode, "fill_color": 128}
        json.dump({"model_cfg": {}, "preprocess_cfg": pre},
                  open(os.path.join(out, case, "open_clip_config.json"), "w"))
        transform = image_transform_v2(PreprocessCfg(**pre), is_train=False)
        for name, img in made.items():
            save(case, name, transform(img).numpy())
    print(json.dumps({"open_clip": open_clip.__version__, "transformers": transformers.__version__}))


if __name__ == "__main__":
    main(sys.argv[1])
