"""Reference side of tests/suite/hardening_export.rs: exported tokenizers read back by the libraries.

  tokenizer_export_parity.py JOB OUT

JOB is a JSON file {"captions": [...], "folders": [{"dir": ..., "context_length": N}, ...]}.
Each folder (an `export hf` or `export openclip` folder) is read with
transformers.AutoTokenizer.from_pretrained(dir), offline, and, when it holds
open_clip_config.json, with open_clip.get_tokenizer('local-dir:' + dir) (open_clip's HFTokenizer,
which cleans captions as the config's tokenizer_kwargs say, then calls the same AutoTokenizer).
OUT gets, per folder: the tokenizer classes, bos/eos/pad ids, and each reader's ids of every
caption (max_length = context_length, padded and truncated as open_clip does). One process for
every folder: importing transformers and open_clip is most of the time.
"""
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from transformers import AutoTokenizer  # noqa: E402


def main() -> int:
    job = json.loads(open(sys.argv[1]).read())
    captions = job["captions"]
    results = []
    for folder in job["folders"]:
        d, ctx = folder["dir"], folder["context_length"]
        tok = AutoTokenizer.from_pretrained(d, local_files_only=True)
        ids = tok(captions, padding="max_length", max_length=ctx, truncation=True)["input_ids"]
        result = {
            "dir": d,
            "auto_class": type(tok).__name__,
            "bos": tok.bos_token_id,
            "eos": tok.eos_token_id,
            "pad": tok.pad_token_id,
            "auto_ids": ids,
        }
        if os.path.exists(os.path.join(d, "open_clip_config.json")):
            import open_clip

            oc = open_clip.get_tokenizer("local-dir:" + d)
            result["open_clip_class"] = type(oc).__name__
            result["open_clip_ids"] = oc(captions).tolist()
        results.append(result)
    with open(sys.argv[2], "w") as f:
        json.dump(results, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
