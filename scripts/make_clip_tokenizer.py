#!/usr/bin/env python3
"""Write OpenAI CLIP's tokenizer as a Hugging Face tokenizer.json, offline.

Usage: scripts/make_clip_tokenizer.py OUT.json   (run with the torch venv's python)

The source is the `bpe_simple_vocab_16e6.txt.gz` that open-clip-torch ships, so nothing is
downloaded. The vocab is rebuilt exactly as open_clip's SimpleTokenizer builds it (49,408 ids:
256 byte symbols, the same 256 with `</w>`, 48,894 merges, then <|startoftext|> = 49406 and
<|endoftext|> = 49407), and transformers' CLIPTokenizer (tokenizers-backed in transformers 5)
turns it into the tokenizer.json that `cliptrain` and Hugging Face both read. The output is
deterministic: same open_clip file, same bytes.
"""

import gzip
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

MERGES_END = 49152 - 256 - 2 + 1  # SimpleTokenizer: merges = lines[1:48895]


def bytes_to_unicode():
    """CLIP's reversible byte -> printable character map (same order as SimpleTokenizer)."""
    bs = list(range(ord("!"), ord("~") + 1))
    bs += list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def clip_vocab_and_merges():
    """OpenAI's vocab (token -> id) and merges, from the file open_clip ships."""
    import open_clip

    bpe_path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1:MERGES_END]]

    byte_syms = list(bytes_to_unicode().values())
    tokens = byte_syms + [s + "</w>" for s in byte_syms]
    tokens += ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == 49408, len(vocab)
    assert vocab["<|endoftext|>"] == 49407
    return vocab, merges


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_clip_tokenizer.py OUT.json")
    out = Path(sys.argv[1])

    try:
        from transformers import CLIPTokenizer

        vocab, merges = clip_vocab_and_merges()
    except ImportError as e:
        sys.exit(f"make_clip_tokenizer.py: {e}; run scripts/bootstrap.sh --ref")

    # transformers 5: CLIPTokenizer is tokenizers-backed and takes the vocab and merges directly.
    tok = CLIPTokenizer(vocab=vocab, merges=merges)
    backend = tok.backend_tokenizer
    # open_clip's convention: 77 slots, zero padding. cliptrain ignores these settings (it pads
    # and truncates itself), but other readers of the file get the same ids.
    backend.enable_truncation(77)
    backend.enable_padding(length=77, pad_id=0, pad_token="!")
    out.parent.mkdir(parents=True, exist_ok=True)
    backend.save(str(out), pretty=True)

    check = json.loads(out.read_text(encoding="utf-8"))
    assert len(check["model"]["vocab"]) == 49408
    print(f"wrote {out} (49408 ids, {len(merges)} merges)")


if __name__ == "__main__":
    main()
