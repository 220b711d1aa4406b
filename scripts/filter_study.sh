#!/usr/bin/env bash
# Planted bad captions, found by their CLIP score (issue 24): 2,000 fresh synthetic training
# samples (another seed than the demo's data) with 10 % of the captions swapped between images,
# scored with the demo's model, filtered at --keep-fraction 0.9. Prints how many of the swapped
# captions the filter dropped (and how many good ones it dropped with them).
#   scripts/filter_study.sh [OUT]   (default runs/filter-study; needs checkpoints/demo from scripts/demo.sh)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${1:-runs/filter-study}"
source scripts/env.sh
cargo build --release --locked --quiet
BIN=$PWD/target/release/cliptrain
[[ -e checkpoints/demo/latest ]] || scripts/demo.sh
rm -rf "$OUT" && mkdir -p "$OUT"
"$BIN" -q data synth --out "$OUT/syn" --seed 7 --train 2000 --eval 48 --image-size 32 --shard-size 1000 >/dev/null
python - "$OUT" <<'PY'
import io, json, random, sys, tarfile
from pathlib import Path
out = Path(sys.argv[1])
rng = random.Random(0)
for shard in sorted((out / "syn").glob("train-*.tar")):
    samples = {}
    with tarfile.open(shard) as t:
        for m in t.getmembers():
            key, ext = m.name.split(".", 1)
            samples.setdefault(key, {})[ext] = t.extractfile(m).read()
    keys = sorted(samples)
    chosen = rng.sample(keys, len(keys) // 10)
    rotated = chosen[1:] + chosen[:1]   # each chosen sample gets the next chosen one's caption
    captions = {k: samples[r]["txt"] for k, r in zip(chosen, rotated)}
    with tarfile.open(out / shard.name, "w") as t:
        for k in keys:
            for ext, data in samples[k].items():
                if ext == "txt" and k in captions:
                    data = captions[k]
                info = tarfile.TarInfo(f"{k}.{ext}")
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    with open(out / "swapped.txt", "a") as f:
        f.write("".join(f"{shard.name} {k}\n" for k in chosen))
PY
SPEC="$OUT/train-{000000..000001}.tar"
"$BIN" -q data score "$SPEC" --checkpoint checkpoints/demo --out "$OUT/scores"
"$BIN" -q data filter "$SPEC" --scores "$OUT/scores" --keep-fraction 0.9 --out "$OUT/kept"
python - "$OUT" <<'PY'
import sys, tarfile
from pathlib import Path
out = Path(sys.argv[1])
swapped = {tuple(l.split()) for l in (out / "swapped.txt").read_text().splitlines()}
kept = set()
for shard in (out / "kept").glob("*.tar"):
    with tarfile.open(shard) as t:
        kept |= {m.name.split(".", 1)[0] for m in t.getmembers()}
swapped_keys = {k for _, k in swapped}
caught = len(swapped_keys - kept)
total = 2000
dropped = total - len(kept)
print(f"swapped captions: {len(swapped_keys)}; dropped by the filter: {caught} "
      f"({100 * caught / len(swapped_keys):.1f} %); good samples dropped with them: {dropped - caught} "
      f"of {total - len(swapped_keys)}")
PY
