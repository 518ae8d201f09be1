"""Seconds and memory per simulated catalog at the lecture settings.

Prints, for one CPU thread: ICs / PM / FoF seconds per catalog (mean over --n runs), the
process's peak resident memory and its increase over the memory after imports, the time
to load the bundled LH set, and the same timings on CUDA when a GPU is present.

    python benchmarks/bench_simulation.py [--n 3]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from physml.datasets import load_bundled
from physml.simulation import SimulationConfig, simulate


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run(device: str, n: int) -> dict:
    cfg = SimulationConfig()
    simulate(0.3, 0.8, 999, cfg, device=device)  # warm-up
    times = []
    for i in range(n):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        res = simulate(0.3, 0.8, 1000 + i, cfg, device=device)
        res.timings["total"] = time.perf_counter() - t
        times.append(res.timings)
    return {k: float(np.mean([t[k] for t in times])) for k in times[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3, help="catalogs to time per device")
    args = ap.parse_args()
    torch.set_num_threads(1)
    base = rss_mb()
    cpu = run("cpu", args.n)
    peak = rss_mb()
    cfg = SimulationConfig()
    print(
        f"lecture settings: box {cfg.box_size} Mpc/h, {cfg.n_particles}^3 particles, "
        f"{cfg.n_mesh}^3 mesh, {cfg.n_steps} steps"
    )
    print(
        "cpu, 1 thread: "
        + ", ".join(f"{k} {v:.2f} s" for k, v in cpu.items())
        + f" per catalog (mean of {args.n})"
    )
    print(f"memory: peak RSS {peak:.0f} MB, of which {peak - base:.0f} MB above the imports")
    print(
        f"1000 catalogs with 2 processes: {1000 * cpu['total'] / 2 / 60:.1f} min "
        "(if the two processes do not slow each other)"
    )
    t = time.perf_counter()
    lh = load_bundled("lh")
    print(f"load_bundled('lh'): {time.perf_counter() - t:.2f} s for {len(lh)} catalogs")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        gpu = run("cuda", args.n)
        mem = torch.cuda.max_memory_allocated() / 2**20
        print(
            f"cuda ({torch.cuda.get_device_name()}): "
            + ", ".join(f"{k} {v:.3f} s" for k, v in gpu.items())
            + f"; peak GPU memory {mem:.0f} MB"
        )


if __name__ == "__main__":
    main()
