"""Calibration of the GNN-embedded NPE of notebook 07 (issue 19): which training recipe makes
its posterior pass SBC and TARP on the test split, side by side with the summary-statistics
NPE in one run.

Arms (each trained with several seeds on the fixed split of the bundled LH set):

* ``gnn20``: notebook 07's recipe, the GNN embedding trained from scratch with the flow for
  at most 20 epochs, early-stopping patience 10, no augmentation;
* ``gnn60``: at most 60 epochs, early-stopping patience 15. (The cube-symmetry
  augmentation of ``make_loaders(augment=True)`` changes nothing here: the invariant
  embedding's inputs do not change under the 48 cube symmetries and periodic shifts, and a
  smoke run with and without it gave identical posteriors.)
* ``summary``: the summary-statistics NPE, at most 100 epochs (notebook 07's).

For every seed: the SBC rank-histogram chi^2 of each parameter (10 bins; the 1 % point of
chi^2 with 9 dof is 21.7), the TARP deviation against the 95 % point of posteriors
calibrated by construction on the same catalogs (``npe.tarp_noise``), the mean marginal
widths, the epochs run and the seconds. Results go to ``--out`` as JSON, one entry per arm
and seed, written after each run (``--resume`` keeps finished runs).

    python benchmarks/bench_npe_calibration.py --arms gnn20,gnn60,summary --seeds 0,1,2
    python benchmarks/bench_npe_calibration.py --print

About 1-3 minutes per GNN run on a 2-core CPU (up to three times longer for gnn60), seconds per
summary run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "npe_calibration.json"
ARMS = {
    "gnn20": {"kind": "gnn", "epochs": 20, "patience": 10},
    "gnn60": {"kind": "gnn", "epochs": 60, "patience": 15},
    "summary": {"kind": "summary", "epochs": 100, "patience": 10},
}
SBC_1PCT = 21.67  # chi^2 with 9 degrees of freedom, upper 1 % point
N_SAMPLES = 1000
N_TARP_DRAWS = 200


def run_arm(name: str, seed: int, fast: bool) -> dict:
    from physml import npe
    from physml.datasets import load_bundled
    from physml.graphdata import make_loaders, split_indices

    arm = ARMS[name]
    cset = load_bundled("lh")
    split = split_indices(len(cset), fast=fast)
    if arm["kind"] == "gnn":
        loaders, _ = make_loaders(cset, split)
        n_features = None
    else:
        loaders = npe.summary_loaders(cset, split)
        n_features = loaders["train"].dataset.tensors[0].shape[1]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        model = npe.fit_npe(
            arm["kind"],
            loaders,
            2 if fast else arm["epochs"],
            run_dir,
            seed=seed,
            fast=fast,
            n_features=n_features,
            patience=arm["patience"],
            progress=True,
        )
    seconds = time.perf_counter() - t0
    samples, truth = model.sample(loaders["test"], 200 if fast else N_SAMPLES)
    chi2 = npe.rank_histogram_chi2(npe.sbc_ranks(samples, truth), samples.shape[0])
    _, calibrated = npe.tarp_noise(samples, truth, 20 if fast else N_TARP_DRAWS, seed=seed)
    return {
        "arm": name,
        "seed": seed,
        "sbc_chi2": {"Omega_m": float(chi2[0]), "sigma_8": float(chi2[1])},
        "tarp": npe.tarp_deviation(samples, truth, seed=seed),
        "tarp_95": float(np.quantile(calibrated, 0.95)),
        "width": dict(
            zip(("Omega_m", "sigma_8"), npe.marginal_widths(samples).mean(0).tolist(), strict=True)
        ),
        "epochs": len(model.history["val"]),
        "seconds": seconds,
        "n_test": int(len(truth)),
    }


def _passes(r: dict) -> bool:
    """Both calibration checks: SBC below its 1 % point for both parameters, TARP below the
    95 % point of a posterior calibrated by construction."""
    return max(r["sbc_chi2"].values()) < SBC_1PCT and r["tarp"] < r["tarp_95"]


def show(results: list[dict]) -> None:
    print(
        f"{'arm':>9} {'seed':>4} {'SBC chi2 Om':>11} {'s8':>6} {'TARP':>6} {'95 % pt':>7} "
        f"{'width Om':>8} {'s8':>7} {'s':>5}  verdict (SBC < {SBC_1PCT}, TARP < 95 % point)"
    )
    for r in results:
        c = r["sbc_chi2"]
        ok = _passes(r)
        print(
            f"{r['arm']:>9} {r['seed']:>4} {c['Omega_m']:11.1f} {c['sigma_8']:6.1f} "
            f"{r['tarp']:6.3f} {r['tarp_95']:7.3f} {r['width']['Omega_m']:8.4f} "
            f"{r['width']['sigma_8']:7.4f} {r['seconds']:5.0f}  {'pass' if ok else 'FAIL'}"
        )
    for arm in dict.fromkeys(r["arm"] for r in results):
        rs = [r for r in results if r["arm"] == arm]
        w = np.array([r["width"]["sigma_8"] for r in rs])
        n_pass = sum(_passes(r) for r in rs)
        print(
            f"{arm}: {n_pass} of {len(rs)} seeds pass both checks; sigma_8 width "
            f"{w.mean():.4f} +- {w.std(ddof=1) if len(w) > 1 else 0:.4f} over the seeds"
        )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--arms", default="gnn20,gnn60,summary", help=f"comma separated of {list(ARMS)}"
    )
    ap.add_argument("--seeds", default="0,1,2", help="comma separated seeds")
    ap.add_argument("--fast", action="store_true", help="smoke test: tiny split, 2 epochs")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results JSON")
    ap.add_argument("--resume", action="store_true", help="keep the runs already in --out")
    ap.add_argument("--print", action="store_true", help="only print the table of --out")
    args = ap.parse_args(argv)
    if args.print:
        show(json.loads(args.out.read_text())["runs"])
        return 0
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    for a in arms:
        if a not in ARMS:
            ap.error(f"--arms: unknown arm {a!r}; expected some of {list(ARMS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = json.loads(args.out.read_text())["runs"] if args.resume and args.out.exists() else []
    done = {(r["arm"], r["seed"]) for r in runs}
    for a in arms:
        for s in seeds:
            if (a, s) in done:
                continue
            print(f"{a}, seed {s} ...", flush=True)
            runs.append(run_arm(a, s, args.fast))
            args.out.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.out.with_suffix(".tmp")
            tmp.write_text(json.dumps({"fast": args.fast, "runs": runs}, indent=1))
            tmp.replace(args.out)
    show(runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
