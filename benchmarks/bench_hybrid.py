"""The learned PM correction (Lanzieri et al. 2022) against the plain coarse PM, side by side.

Trains :class:`physml.simulation.hybrid.CorrectionNet` on one box (Omega_m = 0.3,
sigma_8 = 0.8, seed 0) against its reference run, then prints, on held-out seeds at the
training cosmology and at two other values of Omega_m: the P(k) deficit against the
reference in the band k_N/4 <= k <= k_N/2 without and with the correction, the smallest
per-bin cut of it, the largest change of |1 - P/P_ref| below the band, and r(k) in the
band; then the per-bin table. Reference runs are cached under ~/.cache/physml/hybrid.

    python benchmarks/bench_hybrid.py [--iterations 60] [--seeds 4] [--fast]
"""

from __future__ import annotations

import argparse
import time

import torch

from physml.simulation.hybrid import HybridConfig, compare, format_comparisons, train_correction


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=None, help="training steps (default 60)")
    ap.add_argument("--seeds", type=int, default=4, help="held-out seeds per cosmology")
    ap.add_argument("--fast", action="store_true", help="a few iterations, one seed")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = ap.parse_args()
    iterations = args.iterations or (8 if args.fast else 60)
    n_seeds = 1 if args.fast else args.seeds
    torch.set_num_threads(args.threads)
    cfg = HybridConfig()
    print(
        f"box {cfg.box_size} Mpc/h, {cfg.n_particles}^3 particles; coarse: {cfg.n_mesh}^3 mesh, "
        f"{cfg.n_steps} steps; reference: {cfg.ref_mesh}^3 mesh, "
        f"{cfg.n_steps * cfg.ref_substeps} steps; k_N = {cfg.k_nyquist:.2f} h/Mpc, "
        f"band {cfg.k_nyquist / 4:.2f}-{cfg.k_nyquist / 2:.2f} h/Mpc"
    )
    t = time.perf_counter()
    net, losses = train_correction(cfg, iterations=iterations)
    print(
        f"trained {iterations} iterations on seed 0 in {time.perf_counter() - t:.0f} s "
        f"(loss {losses[0]:.4f} -> {losses[-1]:.4f})"
    )
    seeds = range(1, 1 + n_seeds)
    cosmologies = [0.3] if args.fast else [0.3, 0.2, 0.4]
    comparisons = [compare(net, cfg, om, 0.8, seeds) for om in cosmologies]
    print(format_comparisons(comparisons, per_bin=True))


if __name__ == "__main__":
    main()
