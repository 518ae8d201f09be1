"""Peak memory and time of back-propagation through n PM steps: plain autograd against
per-step recomputation (``nbody(checkpoint=True)``, torch.utils.checkpoint).

The loss is sum_k ln P(k) of the final matter field; its gradient with respect to
(Omega_m, sigma_8) is taken through ICs, 2LPT, every PM step, the CIC paint and P(k).

Memory method: every configuration runs in a fresh Python subprocess (so neither the
allocator's cache nor an earlier run's high-water mark leaks into it), with one CPU thread.
The subprocess records its resident set size (``/proc/self/statm``) after imports and a
warm-up run at 2 steps, and the high-water mark ``ru_maxrss`` after the forward and
backward pass; "peak" is the difference, the memory that the pass itself needed. glibc's
malloc would keep freed blocks below its (growing) mmap threshold in the heap, so that RSS
would overstate what is held; the subprocess runs with ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` at 128 KiB, so every large tensor is its own mapping, returned
on release, and RSS follows the tensors alive. On CUDA (``--device cuda``) peak is
``torch.cuda.max_memory_allocated`` instead.

    python benchmarks/bench_memory.py [--steps 10 20 40] [--particles 64 --mesh 128]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(n_steps: int, ckpt: bool, particles: int, mesh: int, device: str) -> dict:
    import torch

    from physml.fisher import FIDUCIAL, simulated_power
    from physml.simulation import SimulationConfig

    torch.set_num_threads(1)

    def grad(cfg):
        th = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in FIDUCIAL]
        _, pk = simulated_power(th, 1, cfg, checkpoint=ckpt, device=device)
        return torch.stack(torch.autograd.grad(pk.log().sum(), th))

    grad(SimulationConfig(n_particles=particles, n_mesh=mesh, n_steps=2))  # warm-up
    cfg = SimulationConfig(n_particles=particles, n_mesh=mesh, n_steps=n_steps)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = _rss_mb()
    t = time.perf_counter()
    g = grad(cfg)
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base  # KiB -> MiB
    return {"time": time.perf_counter() - t, "peak": peak, "base": base, "grad": g.tolist()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 20, 40])
    ap.add_argument("--particles", type=int, default=64, help="particles per side (64)")
    ap.add_argument("--mesh", type=int, default=128, help="PM mesh cells per side (128)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        res = child(
            int(args.child[0]), args.child[1] == "1", args.particles, args.mesh, args.device
        )
        print(json.dumps(res))
        return
    print(
        f"gradient of sum ln P(k) wrt (Omega_m, sigma_8) through n PM steps: "
        f"{args.particles}^3 particles, {args.mesh}^3 mesh, {args.device}, 1 thread; "
        "each run in a fresh process; peak = memory the forward + backward pass needed"
    )
    print(
        f"{'steps':>5} | {'plain MiB':>9} {'s':>6} | {'checkpoint MiB':>14} {'s':>6} | "
        f"{'memory ratio':>12} {'time ratio':>10} | {'grad rel. diff':>14}"
    )
    worst = 0.0
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    for n in args.steps:
        out = {}
        for ckpt in (False, True):
            cmd = [sys.executable, __file__, "--child", str(n), str(int(ckpt)),
                   "--particles", str(args.particles), "--mesh", str(args.mesh),
                   "--device", args.device]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
            out[ckpt] = json.loads(proc.stdout.strip().splitlines()[-1])
        g0, g1 = out[False]["grad"], out[True]["grad"]
        rel = max(abs(a - b) / abs(a) for a, b in zip(g0, g1, strict=True))
        worst = max(worst, rel)
        p, c = out[False], out[True]
        print(f"{n:>5} | {p['peak']:>9.0f} {p['time']:>6.1f} | {c['peak']:>14.0f} "
              f"{c['time']:>6.1f} | {p['peak'] / c['peak']:>11.1f}x {c['time'] / p['time']:>9.2f}x"
              f" | {rel:>14.1e}")  # fmt: skip
    print(f"largest relative difference of the gradients: {worst:.1e} (bar: 1e-5)")


if __name__ == "__main__":
    main()
