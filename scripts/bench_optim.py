"""torch side of `scripts/bench_optim.sh`: ms per torch.optim.AdamW step, fused=True and
foreach=True (wall and process CPU time), over the parameters `cliptrain bench optim --shapes-out` wrote (names, shapes,
weight-decay flags), with random gradients and OpenCLIP's decay / no-decay groups. Prints one
JSON line.

usage: bench_optim.py SHAPES.json [--threads N] [--steps N]
"""
import argparse
import json
import time

import torch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("shapes")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    spec = json.load(open(a.shapes))
    params = [torch.randn(s["shape"]).requires_grad_(True) for s in spec]
    for t in params:
        t.grad = torch.randn_like(t)

    def ms(**kind):
        groups = [
            {"params": [t for t, s in zip(params, spec) if s["decay"]], "weight_decay": 0.2},
            {"params": [t for t, s in zip(params, spec) if not s["decay"]], "weight_decay": 0.0},
        ]
        opt = torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.98), eps=1e-6, **kind)
        for _ in range(2):
            opt.step()
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(a.steps):
            opt.step()
        per_step = 1e3 / a.steps
        elapsed = ((time.perf_counter() - start) * per_step, (time.process_time() - cpu) * per_step)
        del opt
        return elapsed

    (fused, fused_cpu), (foreach, foreach_cpu) = ms(fused=True), ms(foreach=True)
    out = {"fused_ms": fused, "foreach_ms": foreach, "fused_cpu_ms": fused_cpu, "foreach_cpu_ms": foreach_cpu,
           "tensors": len(params), "numel": sum(t.numel() for t in params),
           "threads": a.threads, "steps": a.steps, "torch": torch.__version__}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
