#!/usr/bin/env python3
"""Reference ids for cliptrain's tokenizer tests, from `open_clip.tokenize`.

Usage (with the torch venv's python):
  scripts/tokenizer_parity.py ids CAPTIONS.json OUT.json [--context-length 77]
      CAPTIONS.json is a JSON list of strings; OUT.json gets the list of id rows.
  scripts/tokenizer_parity.py time CAPTIONS.txt
      Times open_clip.tokenize on the file's lines (one caption per line, the whole file in one
      call, as a data loader batch would) and prints `{"captions": N, "seconds": S}`.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    ids = sub.add_parser("ids")
    ids.add_argument("captions")
    ids.add_argument("out")
    ids.add_argument("--context-length", type=int, default=77)
    timing = sub.add_parser("time")
    timing.add_argument("captions")
    args = parser.parse_args()

    try:
        import open_clip
    except ImportError as e:
        sys.exit(f"tokenizer_parity.py: {e}; run scripts/bootstrap.sh --ref")

    if args.cmd == "ids":
        with open(args.captions, encoding="utf-8") as f:
            captions = json.load(f)
        rows = open_clip.tokenize(captions, context_length=args.context_length).tolist()
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(rows, f)
    else:
        with open(args.captions, encoding="utf-8") as f:
            captions = f.read().split("\n")
        if captions and captions[-1] == "":
            captions.pop()
        open_clip.tokenize(captions[:100])  # warm up (lazy imports, caches)
        start = time.perf_counter()
        open_clip.tokenize(captions)
        seconds = time.perf_counter() - start
        print(json.dumps({"captions": len(captions), "seconds": seconds}))


if __name__ == "__main__":
    main()
