"""Radius-graph construction: every available physml backend against a numpy brute force.

Builds the graphs of a batch of random catalogs (default 20 x 400 points, unit box, r = 0.2)
in one call per backend (batch vector), periodic and open, and prints seconds per graph,
edges per graph and whether the edges equal the brute force's, side by side.

    python benchmarks/bench_graphs.py [--graphs 20] [--points 400] [--r 0.2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from physml.graphs import available_backends, radius_graph


def brute_force(pos: np.ndarray, batch: np.ndarray, r: float, box: float | None) -> np.ndarray:
    """All pairs per graph in numpy float64, minimum image; [2, E] sorted (target, source)."""
    src, dst = [], []
    for g in np.unique(batch):
        idx = np.nonzero(batch == g)[0]
        x = pos[idx]
        d = x[None, :, :] - x[:, None, :]
        if box is not None:
            d -= box * np.round(d / box)
        adj = (d**2).sum(-1) < r * r
        np.fill_diagonal(adj, False)
        i, j = np.nonzero(adj)
        dst.append(idx[i])
        src.append(idx[j])
    src, dst = np.concatenate(src), np.concatenate(dst)
    order = np.lexsort((src, dst))
    return np.stack([src[order], dst[order]])


def timed(fn, repeats: int, sync=None) -> tuple[float, object]:
    out = fn()  # warm-up (imports, CUDA context, allocator)
    best = float("inf")
    for _ in range(repeats):
        if sync:
            sync()
        t0 = time.perf_counter()
        out = fn()
        if sync:
            sync()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graphs", type=int, default=20)
    ap.add_argument("--points", type=int, default=400)
    ap.add_argument("--r", type=float, default=0.2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    g = torch.Generator().manual_seed(args.seed)
    n = args.graphs * args.points
    pos = torch.rand(n, 3, generator=g)  # float32, box units, as in the catalogs
    batch = torch.arange(args.graphs).repeat_interleave(args.points)
    pos_np, batch_np = pos.double().numpy(), batch.numpy()

    runs = [(b, "cpu") for b in available_backends()]
    if torch.cuda.is_available():
        runs += [("torch", "cuda")]
        if "cluster" in available_backends():
            runs += [("cluster", "cuda")]

    print(
        f"{args.graphs} catalogs x {args.points} points, r = {args.r}, best of {args.repeats}; "
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads"
        + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "")
    )
    header = f"{'boundaries':<10} {'method':<16} {'s / graph':>11} {'edges / graph':>14}  = brute"
    print(header)
    print("-" * len(header))
    for box, label in ((1.0, "periodic"), (None, "open")):
        t, ref = timed(lambda box=box: brute_force(pos_np, batch_np, args.r, box), args.repeats)
        print(
            f"{label:<10} {'numpy brute':<16} {t / args.graphs:11.2e} "
            f"{ref.shape[1] / args.graphs:14.1f}  (ref)"
        )
        for backend, device in runs:
            name = f"{backend} ({device})"
            if backend == "cluster" and box is not None:
                print(f"{label:<10} {name:<16} {'n/a: open boundaries only':>26}")
                continue
            p, b = pos.to(device), batch.to(device)
            sync = torch.cuda.synchronize if device == "cuda" else None
            t, ei = timed(
                lambda p=p, b=b, box=box, backend=backend: radius_graph(
                    p, args.r, box_size=box, batch=b, backend=backend
                ),
                args.repeats,
                sync,
            )
            same = np.array_equal(ei.cpu().numpy(), ref)
            print(
                f"{label:<10} {name:<16} {t / args.graphs:11.2e} "
                f"{ei.shape[1] / args.graphs:14.1f}  {'yes' if same else 'NO'}"
            )


if __name__ == "__main__":
    main()
