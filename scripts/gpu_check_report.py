"""The report of `scripts/gpu_check.sh`: reads its scratch folder (meta.tsv, phases.tsv, the
phases' logs, cliptrain's metrics.jsonl, bench_train.py's JSON) and writes gpu_check.json and
gpu_check.md into the output folder and prints the markdown; with --exit-code it exits 1 unless
every phase passed.

    python3 scripts/gpu_check_report.py WORK OUT [--exit-code]

Standard library only (the GPU host's python3 runs it before OpenCLIP's packages are there).
"""
import json
import math
import os
import sys

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) by a substring of
# torch.cuda.get_device_name(); the first match wins, so the more specific names come first.
BF16_PEAK_TFLOPS = [
    ("H100 NVL", 835.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),  # SXM: "NVIDIA H100 80GB HBM3"
    ("H200", 989.0),  # "NVIDIA H200", "NVIDIA GH200 480GB"
    ("H800", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
]
MEMORY_METHOD = ("nvidia-smi --query-gpu=memory.used every 200 ms during the phase, max minus the "
                 "reading just before it (the process's CUDA context included)")


def peak_tflops(name):
    return next((p for key, p in BF16_PEAK_TFLOPS if key in name), None)


def load_toml(path):
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        return None
    with open(path, "rb") as f:
        return tomllib.load(f)


def model_flops(preset, batch):
    """Forward FLOPs per sample of a CLIP (2 per multiply-add): every matmul of both towers, the
    attention scores and their weighted sum (counted in full for the causal text tower too), the
    patch embedding, both projections, and the image-text logits of a contrastive batch.
    Training is 3x forward; the extra no-grad forward of feature caching is not counted."""
    m = preset.get("model", {})
    v, t = m.get("vision", {}), m.get("text", {})
    E = m.get("embed_dim", 512)
    S, P = v.get("image_size", 224), v.get("patch_size", 32)
    dv, Lv, rv = v.get("width", 768), v.get("layers", 12), v.get("mlp_ratio", 4.0)
    nt, dt, Lt, rt = t.get("context_length", 77), t.get("width", 512), t.get("layers", 12), t.get("mlp_ratio", 4.0)
    patches = (S // P) ** 2
    nv = patches + 1

    def blocks(n, d, layers, ratio):
        hidden = int(d * ratio)
        matmul = 2 * n * (4 * d * d + 2 * d * hidden)  # q, k, v, out; MLP in and out
        attention = 4 * n * n * d  # Q K^T and A V
        return layers * (matmul + attention)

    vision = blocks(nv, dv, Lv, rv) + 2 * patches * 3 * P * P * dv + 2 * dv * E
    text = blocks(nt, dt, Lt, rt) + 2 * dt * E
    logits = 2 * batch * E
    forward = vision + text + logits
    return {"vision_forward": vision, "text_forward": text, "logits_forward": logits,
            "forward": forward, "train": 3 * forward,
            "formula": ("per layer 2*n*(4*d^2 + 2*d*mlp_ratio*d) + 4*n^2*d; vision n = (S/P)^2 + 1, "
                        "+ patch embedding 2*(S/P)^2*3*P^2*d and projection 2*d*E; text n = context, "
                        "+ projection 2*d*E; logits 2*batch*E; train = 3 x forward")}


def read_tsv_rows(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip()]


def read(path, default=""):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return default


def tail(text, lines=15, chars=2000):
    return "\n".join(text.strip().splitlines()[-lines:])[-chars:]


def metrics(path):
    rows = []
    for line in read(path).splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if r.get("kind") == "train":
            rows.append(r)
    return rows


def finite(x):
    return isinstance(x, (int, float)) and math.isfinite(x)


def num(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


class Checker:
    """Phase-specific checks on top of the exit code: (ok, what was checked, figures)."""

    def __init__(self, work, meta):
        self.work, self.meta = work, meta
        self.logs = os.path.join(work, "logs")

    def log(self, name, ext):
        return read(os.path.join(self.logs, f"{name}.{ext}"))

    def run_metrics(self, run):
        return metrics(os.path.join(self.work, "runs", run, "metrics.jsonl"))

    def check(self, name):
        fn = getattr(self, "check_" + name.split("_b")[0] if name.startswith(("cliptrain_b", "openclip_b"))
                     else "check_" + name, None)
        return fn(name) if fn else (True, "exit code 0", {})

    def check_env(self, name):
        try:
            env = json.loads(self.log(name, "out"))
        except ValueError:
            return False, "cliptrain env --json printed no JSON", {}
        keys = ("libtorch_version", "libtorch_lib_loaded", "cuda_available", "cuda_device_count", "cudnn_available")
        detail = {k: env.get(k) for k in keys}
        if self.meta.get("mode") == "cpu-smoke":
            return True, f"libtorch {env.get('libtorch_version')} (CUDA not required in cpu-smoke)", detail
        ok = bool(env.get("cuda_available")) and env.get("cuda_device_count", 0) >= 1
        return ok, (f"CUDA available: {env.get('cuda_available')}, {env.get('cuda_device_count')} device(s), "
                    f"cuDNN {env.get('cudnn_available')}, libtorch {env.get('libtorch_version')} from "
                    f"{env.get('libtorch_lib_loaded')}"), detail

    def check_synth(self, name):
        data = os.path.join(self.work, "data")
        shards = sorted(f for f in os.listdir(data) if f.startswith("train-")) if os.path.isdir(data) else []
        return bool(shards), f"{self.meta.get('synth_samples')} samples at 256 px in {len(shards)} shards", {"shards": len(shards)}

    def short_run(self, run, name, last_step):
        """A few-step run: its loss rows up to `last_step` (all finite, that step logged) and the
        phase's output."""
        rows = [r for r in self.run_metrics(run) if r["step"] <= last_step]
        losses = [round(r["loss"], 4) if finite(r.get("loss")) else r.get("loss") for r in rows]
        ok = bool(rows) and all(finite(x) for x in losses) and rows[-1]["step"] == last_step
        text = self.log(name, "out") + self.log(name, "err")
        return ok, {"steps_logged": [r["step"] for r in rows], "losses": losses}, text

    def check_tiny_train(self, name):
        ok, d, _ = self.short_run("tiny", name, 10)
        ckpt = os.path.isdir(os.path.join(self.work, "runs", "tiny", "step-0000010"))
        return ok and ckpt, f"loss finite to step 10 {d['losses']}; checkpoint step-0000010 written: {ckpt}", d

    def check_tiny_resume(self, name):
        ok, d, text = self.short_run("tiny", name, 20)
        resumed = "resumed from" in text
        return ok and resumed, f"resumed at step 10: {resumed}; loss finite to step 20 {d['losses']}", d

    def check_siglip(self, name):
        ok, d, _ = self.short_run("siglip", name, 10)
        return ok, f"SigLIP with patch dropout 0.5 and activation checkpointing: loss finite to step 10 {d['losses']}", d

    def check_nccl(self, name):
        ok, d, text = self.short_run("nccl", name, 10)
        joined = "process group of 1 ranks joined" in text
        backend = "Gloo (cpu-smoke)" if self.meta.get("mode") == "cpu-smoke" else "NCCL"
        return ok and joined, f"{backend} group of 1 rank joined: {joined}; loss finite to step 10 {d['losses']}", d

    def check_cliptrain(self, name):
        every, steps = int(self.meta["log_every"]), int(self.meta["steps"])
        start = int(self.meta["window_from"])
        rows = {r["step"]: r for r in self.run_metrics(name)}
        windows = [rows.get(s) for s in range(start + every, steps + 1, every)]
        if not windows or any(w is None for w in windows):
            return False, f"metrics.jsonl lacks the rows of steps {start + every}..{steps}", {}
        if not all(finite(w.get("loss")) and finite(w.get("samples_per_s")) and w["samples_per_s"] > 0 for w in windows):
            return False, "a non-finite loss or rate in steps %d-%d" % (start + 1, steps), {}
        # Each window holds `every` steps of the same batch: its time is every*batch/rate.
        times = [1.0 / w["samples_per_s"] for w in windows]
        sps = len(windows) / sum(times)
        wait = sum(w.get("data_wait_fraction", 0.0) * t for w, t in zip(windows, times)) / sum(times)
        d = {"samples_per_s": sps, "data_wait_fraction": wait, "window_rows": [
            {k: w.get(k) for k in ("step", "loss", "samples_per_s", "data_wait_fraction")} for w in windows],
            "first_loss": rows[min(rows)].get("loss"), "last_loss": windows[-1]["loss"]}
        return True, f"samples/s over steps {start + 1}-{steps} from metrics.jsonl windows; loss finite", d

    def check_openclip(self, name):
        out = [l for l in self.log(name, "out").splitlines() if l.startswith("{")]
        try:
            r = json.loads(out[-1])
        except (IndexError, ValueError):
            return False, "bench_train.py printed no JSON", {}
        ok = finite(r.get("last_loss")) and finite(r.get("samples_per_s"))
        lo, hi = r.get("measured_steps", [None, None])
        return ok, f"samples/s over steps {lo}-{hi} (synchronised); loss finite: {finite(r.get('last_loss'))}", r


def main():
    work, out = sys.argv[1], sys.argv[2]
    meta = dict(r[:2] for r in read_tsv_rows(os.path.join(work, "meta.tsv")) if len(r) >= 2)
    checker = Checker(work, meta)
    smoke = meta.get("mode") == "cpu-smoke"
    phases = []
    for r in read_tsv_rows(os.path.join(work, "phases.tsv")):
        r += [""] * (6 - len(r))
        name, rc, secs, limit, base, peak = r[:6]
        p = {"name": name, "seconds": num(secs), "limit_s": num(limit)}
        if rc == "skipped":
            p.update(status="skipped", rc=None, checks="not run: the time budget was spent")
        else:
            p["rc"] = int(rc)
            if p["rc"] in (124, 137):
                p["status"], p["checks"] = "timed out", f"killed after its {limit} s limit"
            elif p["rc"] != 0:
                p["status"], p["checks"] = "failed", f"exit code {rc}"
            else:
                try:
                    ok, what, detail = checker.check(name)
                except Exception as e:  # a report that breaks must still report
                    ok, what, detail = False, f"report check failed: {e!r}", {}
                p["status"], p["checks"] = ("passed" if ok else "failed"), what
                p["detail"] = detail
            b, pk = num(base), num(peak)
            if b is not None and pk is not None:
                p["gpu_mem_peak_mib"] = pk - b
                p["gpu_mem_before_mib"] = b
            if p["status"] != "passed":
                p["stderr_tail"] = tail(checker.log(name, "err")) or tail(checker.log(name, "out"))
        phases.append(p)

    device = meta.get("device_name", "?")
    peak = None if smoke else peak_tflops(device)
    preset_path = meta.get("preset_toml", "")
    preset = load_toml(preset_path) if os.path.exists(preset_path) else None
    by_name = {p["name"]: p for p in phases}
    rows, ratios, flops = [], {}, {}
    micro = int(meta.get("micro", 0) or 0)
    for key in ("batch_small", "batch_large"):
        if key not in meta:
            continue
        batch = int(meta[key])
        mb = micro if key == "batch_large" else batch
        f = model_flops(preset, batch) if preset else None
        if f:
            flops[str(batch)] = f
        got = {}
        for impl, label in (("cliptrain", "cliptrain"), ("openclip", "OpenCLIP")):
            p = by_name.get(f"{impl}_b{batch}")
            row = {"impl": label, "batch": batch, "micro_batch": mb, "status": p["status"] if p else "not run"}
            d = (p or {}).get("detail", {}) if p and p["status"] == "passed" else {}
            if d:
                row["samples_per_s"] = d["samples_per_s"]
                row["data_wait_fraction"] = d.get("data_wait_fraction")
                row["first_loss"], row["last_loss"] = d.get("first_loss"), d.get("last_loss")
                if f:
                    row["achieved_tflops"] = d["samples_per_s"] * f["train"] / 1e12
                    row["mfu"] = row["achieved_tflops"] / peak if peak else None
                got[impl] = d["samples_per_s"]
            if p and "gpu_mem_peak_mib" in p:
                row["peak_gpu_mem_mib"] = p["gpu_mem_peak_mib"]
            if impl == "openclip" and d.get("torch_max_memory_reserved_mib") is not None:
                row["torch_max_memory_reserved_mib"] = d["torch_max_memory_reserved_mib"]
            rows.append(row)
        if "cliptrain" in got and "openclip" in got:
            ratios[str(batch)] = got["cliptrain"] / got["openclip"]

    all_passed = bool(phases) and all(p["status"] == "passed" for p in phases)
    report = {
        "mode": meta.get("mode"), "date": meta.get("date"), "device_name": device, "host": meta.get("host"),
        "cores": num(meta.get("cores")), "torch": meta.get("torch"), "cuda_devices": num(meta.get("cuda_devices")),
        "revision": meta.get("revision"), "binary": meta.get("binary"), "overrides": meta.get("overrides", ""), "budget_s": num(meta.get("budget_s")),
        "elapsed_s": sum(p["seconds"] or 0 for p in phases),
        "all_passed": all_passed, "phases": phases,
        "throughput": {"preset": meta.get("preset"), "precision": meta.get("precision"),
                       "measured_steps": [int(meta.get("window_from", 0)) + 1, int(meta.get("steps", 0))],
                       "rows": rows, "ratio_cliptrain_over_openclip": ratios},
        "flops_per_sample": flops, "bf16_peak_tflops": peak, "memory_method": MEMORY_METHOD,
    }
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "gpu_check.json"), "w") as fh:
        json.dump(report, fh, indent=2)
    md = markdown(report, meta)
    with open(os.path.join(out, "gpu_check.md"), "w") as fh:
        fh.write(md)
    print(md)
    return 0 if all_passed or "--exit-code" not in sys.argv else 1


def fmt(x, spec=",.0f", unit=""):
    return "–" if x is None else format(x, spec) + unit


def markdown(r, meta):
    t = r["throughput"]
    lo, hi = t["measured_steps"]
    lines = [
        f"# cliptrain GPU check ({r['mode']}): {r['device_name']}",
        "",
        f"{r['date']}, {r['host']}, {fmt(r['cores'], '.0f')} cores, torch {r['torch']}, cliptrain {r['revision']}; "
        f"{fmt(r['elapsed_s'], '.0f')} s of a {fmt(r['budget_s'], '.0f')} s budget. "
        f"All phases passed: **{'yes' if r['all_passed'] else 'no'}**.",
        "",
        "| phase | status | seconds | what was checked |",
        "|---|---|---:|---|",
    ]
    for p in r["phases"]:
        checks = p.get("checks", "").replace("|", "/")
        lines.append(f"| {p['name']} | {p['status']} | {fmt(p['seconds'], '.0f')} | {checks} |")
    lines += [
        "",
        f"Throughput: `{t['preset']}`, {t['precision']}, AdamW (lr 5e-4, wd 0.2, OpenCLIP's no-decay "
        f"groups), the same synthetic 256-px JPEG shards, tokenizer and loader cores on both sides; "
        f"samples/s over steps {lo}-{hi}.",
        "",
        "| implementation | batch (micro) | samples/s | data wait | peak GPU memory | achieved TFLOP/s | MFU |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in t["rows"]:
        batch = f"{row['batch']}" + (f" ({row['micro_batch']})" if row["micro_batch"] != row["batch"] else "")
        if "samples_per_s" not in row:
            lines.append(f"| {row['impl']} | {batch} | {row['status']} | | {fmt(row.get('peak_gpu_mem_mib'), ',.0f', ' MiB')} | | |")
            continue
        wait, mfu = row.get("data_wait_fraction"), row.get("mfu")
        wait = "–" if wait is None else f"{100 * wait:.1f} %"
        mfu = "–" if mfu is None else f"{100 * mfu:.1f} %"
        lines.append(
            f"| {row['impl']} | {batch} | {fmt(row['samples_per_s'], ',.1f')} | "
            f"{wait} | {fmt(row.get('peak_gpu_mem_mib'), ',.0f', ' MiB')} | "
            f"{fmt(row.get('achieved_tflops'), '.4g')} | {mfu} |")
    ratios = t["ratio_cliptrain_over_openclip"]
    if ratios:
        lines += ["", "cliptrain / OpenCLIP samples/s: " + ", ".join(
            f"**{ratio:.2f}x** at batch {batch}" for batch, ratio in ratios.items()) + "."]
    lines.append("")
    for batch, f in r["flops_per_sample"].items():
        lines.append(
            f"Model FLOPs per sample at batch {batch}: forward {f['forward'] / 1e9:.4g} GFLOP (vision "
            f"{f['vision_forward'] / 1e9:.4g}, text {f['text_forward'] / 1e9:.4g}, logits "
            f"{f['logits_forward'] / 1e9:.3g}), training {f['train'] / 1e9:.4g} GFLOP (3x forward).")
    peak = r["bf16_peak_tflops"]
    lines += [
        "",
        (f"MFU = samples/s x training FLOPs per sample / {peak:g} TFLOP/s (dense bf16 peak of {r['device_name']}); "
         "feature caching's extra forward is not counted." if peak else
         f"No dense bf16 peak is known for {r['device_name']}: achieved TFLOP/s only."),
        f"Peak GPU memory: {r['memory_method']}. cliptrain's samples/s and data wait come from its "
        "metrics.jsonl windows; OpenCLIP's (scripts/bench_train.py) from a synchronised window over the "
        "same steps, data wait = time blocked on the DataLoader / window time.",
    ]
    failed = [p for p in r["phases"] if p["status"] != "passed" and p.get("stderr_tail")]
    for p in failed:
        lines += ["", f"### {p['name']}: {p['status']}", "", "```", p["stderr_tail"], "```"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
