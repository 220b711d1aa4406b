"""SentencePiece test fixtures and their reference ids (tests/suite/sentencepiece.rs).

  sentencepiece_fixture.py OUT
      trains two small SentencePiece models on generated captions with the sentencepiece
      package: OUT/siglip/spiece.model (Unigram, T5's layout: <pad> 0, </s> 1, <unk> 2, as
      SigLIP's) with SigLIP's tokenizer_config.json, and OUT/bpe/sentencepiece.bpe.model (BPE,
      two user-defined pieces). Writes OUT/captions.json: 2,000 further captions, the rows
      transformers' SiglipTokenizer gives them (padding to max_length 64, truncated), and the
      ids sentencepiece's own encoder gives them under the BPE model.
  sentencepiece_fixture.py --check-export TOKENIZER_JSON CAPTIONS_JSON
      loads an exported tokenizer.json with transformers' PreTrainedTokenizerFast and prints
      how many captions get other rows than SiglipTokenizer gave (and the first few).
"""
import json
import os
import random
import string
import sys

CONTEXT = 64
WORDS = (
    "a photo of the dog cat red blue green small large two on in with café naïve Ärger straße "
    "ÉCOLE ΣΟΦΙΑ İstanbul 東京 猫 写真 한국어 Москва 😀 🐶 🎉👍🏽 über élan Zürich résumé "
    "ﬁne ＦＵＬＬ １２３ e\u0301te 42 2026 3.14 $3,499 20% co-op e-mail it's don't A.I. "
    "U.S.A. #tag @user <b> ▁x snake_case under__score"
).split()
SEPARATORS = [" ", " ", " ", "  ", "\t", "\n", "\r\n", " \u3000", "\u00a0", "\u2009", "\x1c", "\u200b"]


def caption(rng):
    n = rng.randint(1, 60 if rng.random() < 0.1 else 10)
    text = ""
    for _ in range(n):
        w = rng.choice(WORDS)
        if rng.random() < 0.2:
            w = w.upper()
        if rng.random() < 0.2:
            w += rng.choice(string.punctuation)
        text += w + rng.choice(SEPARATORS)
    if rng.random() < 0.3:
        text = rng.choice([" ", "  ", "\n", "- ", "... ", "▁"]) + text
    return text if rng.random() < 0.5 else text.strip()


def build(out):
    import sentencepiece as spm
    from transformers import SiglipTokenizer

    rng = random.Random(0)
    os.makedirs(os.path.join(out, "siglip"))
    os.makedirs(os.path.join(out, "bpe"))
    corpus = os.path.join(out, "corpus.txt")
    with open(corpus, "w") as f:
        for _ in range(3000):
            f.write(caption(rng).replace("\n", " ").replace("\r", " ") + "\n")
    quiet = dict(minloglevel=2, num_threads=1)
    # SigLIP's layout; character_coverage < 1 leaves rare characters to <unk>.
    spm.SentencePieceTrainer.train(
        input=corpus, model_prefix=os.path.join(out, "siglip", "spiece"), vocab_size=320,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        character_coverage=0.99, **quiet)
    spm.SentencePieceTrainer.train(
        input=corpus, model_prefix=os.path.join(out, "bpe", "sentencepiece.bpe"),
        vocab_size=560, model_type="bpe", character_coverage=0.99, user_defined_symbols=["<img>", "dog"],
        byte_fallback=True, **quiet)
    os.remove(os.path.join(out, "siglip", "spiece.vocab"))
    os.remove(os.path.join(out, "bpe", "sentencepiece.bpe.vocab"))
    # What google/siglip-* repositories hold beside spiece.model.
    with open(os.path.join(out, "siglip", "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "SiglipTokenizer", "model_max_length": CONTEXT,
                   "do_lower_case": True, "eos_token": "</s>", "pad_token": "</s>",
                   "unk_token": "<unk>"}, f)
    with open(os.path.join(out, "siglip", "special_tokens_map.json"), "w") as f:
        json.dump({"eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>"}, f)
    siglip = SiglipTokenizer.from_pretrained(os.path.join(out, "siglip"))
    bpe = spm.SentencePieceProcessor(model_file=os.path.join(out, "bpe", "sentencepiece.bpe.model"))
    captions = [caption(rng) for _ in range(2000)] + ["", "   ", "a dog<img>dogdog", "▁▁a"]
    rows = siglip(captions, padding="max_length", max_length=CONTEXT, truncation=True).input_ids
    with open(os.path.join(out, "captions.json"), "w") as f:
        json.dump({"captions": captions, "siglip_rows": rows,
                   "bpe_ids": [bpe.encode(c) for c in captions]}, f, ensure_ascii=False)


def check_export(tokenizer_json, captions_json):
    from transformers import PreTrainedTokenizerFast

    ref = json.load(open(captions_json))
    tok = PreTrainedTokenizerFast(tokenizer_file=tokenizer_json, pad_token="</s>")
    rows = tok(ref["captions"], padding="max_length", max_length=CONTEXT, truncation=True).input_ids
    bad = [(c, r, g) for c, r, g in zip(ref["captions"], ref["siglip_rows"], rows) if r != g]
    print(json.dumps({"mismatches": len(bad), "of": len(rows), "first": bad[:3]}, ensure_ascii=False))


if __name__ == "__main__":
    if sys.argv[1] == "--check-export":
        check_export(sys.argv[2], sys.argv[3])
    else:
        build(sys.argv[1])
