"""Explicit vs implicit inference (notebook 08): the cost of each route to a converged
posterior, and the calibration of the 2LPT field-level posterior by ranks over mocks.

``--part cost``: on one linear 16^3 field, field-level HMC (physml.hmc.hmc_adapted) and
pyro's NUTS, each checked against the exact posterior, and the power-spectrum NPE
(simulations, training, then one posterior); the gradient evaluations, simulations and
seconds each took, and the ESS of theta reached. Written to
``benchmarks/results/fieldlevel_cost.json``.

``--part calibration --mocks A:B``: for mocks A..B-1 (theta from the prior, 2LPT on 8^3,
noise 0.5 as in notebook 08), field-level HMC and the rank of the true theta among the
thinned posterior draws; appended to ``benchmarks/results/fieldlevel_calibration.json`` (one
entry per mock, so that the run can be split into short jobs). ``--print`` reads both files
and prints the figures: rank histogram, chi^2 against uniform, coverage of the central 68 %
and 95 % intervals.

    python benchmarks/bench_fieldlevel.py --part cost
    python benchmarks/bench_fieldlevel.py --part calibration --mocks 0:5   # ... 20:25
    python benchmarks/bench_fieldlevel.py --print
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from physml import fieldlevel, grf, hmc

RESULTS = Path(__file__).resolve().parent / "results"
COST = RESULTS / "fieldlevel_cost.json"
CALIBRATION = RESULTS / "fieldlevel_calibration.json"
LPT = {"n": 8, "kind": "lpt", "noise_std": 0.5}
LPT_HMC = {"n_chains": 2, "n_samples": 400, "n_steps": 30, "windows": (40, 80, 160), "n_warmup": 80}
THIN = 4  # keep every THIN-th draw for the ranks (draws closer together are correlated)


def cost() -> dict:
    model = fieldlevel.ForwardModel(n=16, noise_std=1.0)
    _, d = model.simulate(
        torch.tensor([[0.3, 0.8]], dtype=torch.float64), torch.Generator().manual_seed(1)
    )
    d = d[0]
    exact = fieldlevel.exact_posterior(model, d)
    out = {"mesh": 16, "model": "linear", "noise_std": 1.0}
    run = fieldlevel.sample_field_posterior(model, d, seed=0)
    check = fieldlevel.compare_with_exact(run.theta, exact)
    out["hmc"] = {
        "gradient_evaluations": run.gradient_evaluations,
        "seconds": run.seconds,
        "ess_theta": check["ess"].tolist(),
        "rhat_theta": check["rhat"].tolist(),
        "shift": check["shift"].tolist(),
        "std_ratio": check["ratio"].tolist(),
        "passed": check["passed"],
        "divergences": int(run.divergences.sum()),
    }
    post = fieldlevel.FieldPosterior(model, d)
    counted = hmc.CountingPotential(post)
    gen = torch.Generator().manual_seed(2)
    res = hmc.nuts(counted, post.initial_points(2, gen), 400, 300, max_tree_depth=7)
    check = fieldlevel.compare_with_exact(fieldlevel.u_to_theta(res.samples[..., -2:]), exact)
    out["nuts"] = {
        "gradient_evaluations": counted.count,
        "seconds": res.seconds,
        "ess_theta": check["ess"].tolist(),
        "shift": check["shift"].tolist(),
        "std_ratio": check["ratio"].tolist(),
        "passed": check["passed"],
        "divergences": int(res.divergences.sum()),
    }
    t0 = time.perf_counter()
    train = fieldlevel.simulate_dataset(model, 20000, seed=1)
    val = fieldlevel.simulate_dataset(model, 2000, seed=2)
    t1 = time.perf_counter()
    net = fieldlevel.make_npe("power", train)
    fieldlevel.train_npe(
        net, (train["summary"], train["theta"]), (val["summary"], val["theta"]), 40
    )
    t2 = time.perf_counter()
    samples = fieldlevel.npe_samples(net, fieldlevel.power_summary(d[None], model.box_size), 1000)
    t3 = time.perf_counter()
    sd = exact["std"].numpy()
    out["npe_power"] = {
        "simulations": 22000,
        "simulation_seconds": t1 - t0,
        "training_seconds": t2 - t1,
        "posterior_seconds": t3 - t2,
        "shift": ((samples[:, 0].mean(0) - exact["mean"].numpy()) / sd).tolist(),
        "std_ratio": (samples[:, 0].std(0) / sd).tolist(),
    }
    return out


def calibration(start: int, stop: int) -> list[dict]:
    model = fieldlevel.ForwardModel(**LPT)
    gen = torch.Generator().manual_seed(1000)
    theta = grf.sample_prior(100, gen)  # a fixed list: mock i has theta[i] whatever the split
    rows = []
    for i in range(start, stop):
        _, d = model.simulate(theta[i : i + 1], torch.Generator().manual_seed(2000 + i))
        run = fieldlevel.sample_field_posterior(model, d[0], seed=3000 + i, **LPT_HMC)
        draws = run.theta[:, ::THIN].reshape(-1, 2)
        summ = hmc.summarize(run.theta)
        rows.append(
            {
                "mock": i,
                "theta": theta[i].tolist(),
                "rank": (draws < theta[i]).sum(0).tolist(),
                "n_draws": len(draws),
                "ess": summ["ess"].tolist(),
                "rhat": summ["rhat"].tolist(),
                "divergences": int(run.divergences.sum()),
                "gradient_evaluations": run.gradient_evaluations,
                "seconds": run.seconds,
            }
        )
        print(
            f"mock {i}: rank {rows[-1]['rank']} of {len(draws)}, R-hat {summ['rhat'].max():.3f}, "
            f"ESS {summ['ess'].min():.0f}, {run.seconds:.0f} s",
            flush=True,
        )
    return rows


def report() -> None:
    if COST.exists():
        c = json.loads(COST.read_text())
        for k in ("hmc", "nuts"):
            r = c[k]
            ess = min(r["ess_theta"])
            per = r["gradient_evaluations"] / ess
            verdict = "PASS" if r["passed"] else "FAIL"
            print(
                f"{k}: {r['gradient_evaluations']} gradients, {r['seconds']:.0f} s, ESS(theta) "
                f"{ess:.0f} ({per:.0f} gradients per effective draw); vs exact: shift "
                f"{np.round(r['shift'], 3).tolist()} std, std ratio "
                f"{np.round(r['std_ratio'], 3).tolist()}; {verdict}"
            )
        r = c["npe_power"]
        print(
            f"npe (power spectrum): {r['simulations']} simulations in "
            f"{r['simulation_seconds']:.0f} s, training {r['training_seconds']:.0f} s, then "
            f"{r['posterior_seconds']:.2f} s per posterior; vs exact on this field: shift "
            f"{np.round(r['shift'], 3).tolist()} std, std ratio "
            f"{np.round(r['std_ratio'], 3).tolist()}"
        )
    if CALIBRATION.exists():
        rows = json.loads(CALIBRATION.read_text())
        ranks = np.array([r["rank"] for r in rows])
        n_draws = rows[0]["n_draws"]
        u = (ranks + 0.5) / (n_draws + 1)
        rhat = max(max(r["rhat"]) for r in rows)
        ess = min(min(r["ess"]) for r in rows)
        div = sum(r["divergences"] for r in rows)
        print(f"2LPT field-level calibration, {len(rows)} mocks ({n_draws} thinned draws each):")
        print(f"  R-hat max {rhat:.3f}, ESS min {ess:.0f}, divergences {div}")
        for j, name in enumerate(("Omega_m", "sigma_8")):
            h, _ = np.histogram(u[:, j], bins=5, range=(0, 1))
            e = len(u) / 5
            chi2 = float(((h - e) ** 2 / e).sum())
            c68 = float(np.mean(np.abs(u[:, j] - 0.5) < 0.34))
            c95 = float(np.mean(np.abs(u[:, j] - 0.5) < 0.475))
            print(
                f"  {name}: rank histogram (5 bins) {h.tolist()}, chi^2 {chi2:.1f} (4 dof; "
                f"above 13.3 in 1 % of calibrated cases); central 68 % interval covers "
                f"{c68:.2f}, 95 % covers {c95:.2f}"
            )
        secs = np.mean([r["seconds"] for r in rows])
        grads = np.mean([r["gradient_evaluations"] for r in rows])
        print(f"  per mock: {grads:.0f} gradients, {secs:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("cost", "calibration"))
    ap.add_argument("--mocks", default="0:5", help="A:B, the mocks of the calibration part")
    ap.add_argument("--print", action="store_true", help="print the figures from the results")
    args = ap.parse_args()
    torch.set_num_threads(1)  # small tensors: threads wait for each other more than they work
    RESULTS.mkdir(exist_ok=True)
    if args.part == "cost":
        COST.write_text(json.dumps(cost(), indent=1))
    elif args.part == "calibration":
        start, stop = (int(v) for v in args.mocks.split(":"))
        old = json.loads(CALIBRATION.read_text()) if CALIBRATION.exists() else []
        new = calibration(start, stop)
        done = {r["mock"] for r in new}
        rows = sorted([r for r in old if r["mock"] not in done] + new, key=lambda r: r["mock"])
        CALIBRATION.write_text(json.dumps(rows, indent=1))
    if args.print or args.part is None:
        report()


if __name__ == "__main__":
    main()
