"""Does the marginal sigma(sigma_8) of notebook 05's Fisher forecast settle between N/2 and
N runs? Ordinary Gaussian-seed derivatives against fixed-amplitude and fixed-paired ones,
side by side in one run.

    python benchmarks/bench_fisher_convergence.py [--runs 48]

Settings of notebook 05, section 3: 32^3 particles, 64^3 mesh, 20 steps, 25 Mpc/h box,
the 5 lowest k bins (k < 1.23 h/Mpc), fiducial (Omega_m, sigma_8) = (0.3, 0.8). The
covariance always comes from the first n Gaussian seeds (1000, 1001, ...), with the Hartlap
factor; only the derivatives change. Each row prints the marginal errors with N/2 and with
N runs of derivatives (a pair counts as two runs) and the relative change. About 3 s per
run on 2 CPU cores, 3 x N runs with a cold cache (results cached in ~/.cache/physml).
"""

from __future__ import annotations

import argparse

import numpy as np

from physml.fisher import FIDUCIAL, fisher_matrix, marginal_errors, seed_responses
from physml.simulation import SimulationConfig

SMALL = SimulationConfig(n_particles=32, n_mesh=64, n_steps=20)
N_BINS = 5


def _errors(dmu, pk, n):
    return marginal_errors(fisher_matrix(dmu, np.cov(pk[:n], rowvar=False), n_sims=n))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=48, help="N, a multiple of 4")
    n = ap.parse_args().runs
    seeds = range(1000, 1000 + n)
    _, pk, dg = seed_responses(seeds, SMALL, FIDUCIAL)
    _, _, dfix = seed_responses(seeds, SMALL, FIDUCIAL, fixed_amplitude=True)
    half = seeds[: n // 2]
    _, _, dflip = seed_responses(half, SMALL, FIDUCIAL, fixed_amplitude=True, paired=True)
    pk, dg, dfix, dflip = pk[:, :N_BINS], dg[..., :N_BINS], dfix[..., :N_BINS], dflip[..., :N_BINS]
    dpair = 0.5 * (dfix[: n // 2] + dflip)
    rows = {
        "Gaussian seeds": (dg[: n // 2].mean(0), dg.mean(0)),
        "fixed amplitude": (dfix[: n // 2].mean(0), dfix.mean(0)),
        "fixed + paired": (dpair[: n // 4].mean(0), dpair.mean(0)),
    }
    print(f"covariance from {n // 2} / {n} Gaussian seeds, {N_BINS} bins; derivatives from:")
    for name, (d_half, d_all) in rows.items():
        e_half, e_all = _errors(d_half, pk, n // 2), _errors(d_all, pk, n)
        ch = 100 * np.abs(e_all / e_half - 1)
        print(
            f"  {name:16s} sigma(sigma_8) {e_half[1]:.4f} -> {e_all[1]:.4f} ({ch[1]:4.1f} %), "
            f"sigma(Omega_m) {e_half[0]:.4f} -> {e_all[0]:.4f} ({ch[0]:4.1f} %)"
        )
    # how much of the change is the covariance: all-N derivatives, N/2 vs N covariance
    for name, (_, d_all) in rows.items():
        e_half, e_all = _errors(d_all, pk, n // 2), _errors(d_all, pk, n)
        print(
            f"  {name:16s} derivatives of all {n} runs, covariance N/2 -> N: sigma(sigma_8) "
            f"{e_half[1]:.4f} -> {e_all[1]:.4f} ({100 * abs(e_all[1] / e_half[1] - 1):.1f} %)"
        )
    for name, d in (("Gaussian", dg), ("fixed", dfix), ("fixed + paired", dpair)):
        s = d.std(0) / np.abs(d.mean(0))
        print(f"  scatter / mean of dP/dsigma_8 per {name} run (or pair): {np.round(s[1], 2)}")


if __name__ == "__main__":
    main()
