"""Seed and hyperparameter sweep of the GNNs on the fixed split: one JSON line per run.

Each run trains with the lecture's recipe (``physml.experiment``: heteroscedastic loss,
AdamW, cosine schedule, early stopping, best checkpoint on the validation loss) and
prints the test-split sigma_8 metrics. Runs go in parallel processes with one torch
thread each; on a GPU machine they share the GPU (``accelerator="auto"``). The README's
sweep figures come from runs of this script on an H100 (16 CPU cores):

    python benchmarks/sweep_gnn.py --procs 14                        # every lecture variant
    python benchmarks/sweep_gnn.py --configs egnn_vel,egnn,lecture --seeds 0,1,2,3

On a 2-core CPU one run takes about 8 to 20 minutes; use ``--procs 2`` and few configs.
``--fast`` (or ``PHYSML_FAST=1``) runs the small subset for 2 epochs, a smoke test.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: name -> keyword arguments of physml.experiment.train (lecture network variants)
LECTURE_VARIANTS = {
    "lecture": {},
    "ep100": {"epochs": 100},
    "h64e16": {"hidden_size": 64, "node_emb_size": 16, "edge_emb_size": 16},
    "l3": {"n_layers": 3},
    "r015": {"r_link": 0.15},
    "r025": {"r_link": 0.25},
    "both": {"target": "both"},
    "aug": {"augment": True},
    "lr3e-3": {"lr": 3e-3},
    "nll": {"loss": "gaussian_nll"},
    "wd1e-2": {"weight_decay": 1e-2},
    "big": {
        "hidden_size": 64,
        "node_emb_size": 16,
        "edge_emb_size": 16,
        "n_layers": 3,
        "epochs": 100,
        "augment": True,
    },
    "aug_ep100": {"augment": True, "epochs": 100},
    "both_aug_ep100": {"target": "both", "augment": True, "epochs": 100},
}
#: name -> use_velocity of the Task 2 solution's EGNN (solutions/task2_models.py)
EGNN_VARIANTS = {"egnn_vel": True, "egnn": False}


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _train_egnn(out: str, use_velocity: bool, seed: int) -> dict:
    sys.path.insert(0, str(ROOT / "solutions"))
    import task2_models

    from physml.experiment import evaluate_on_test_split, fit_model

    model = fit_model(
        lambda: task2_models.EGNN(hidden=32, n_layers=3, use_velocity=use_velocity),
        out,
        seed=seed,
    )
    return evaluate_on_test_split(model)


def run(job: tuple[str, int]) -> dict:
    """Trains one (config, seed) and returns its test-split sigma_8 metrics."""
    name, seed = job
    import torch

    torch.set_num_threads(1)
    _quiet()
    from physml.experiment import train

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        try:
            if name in EGNN_VARIANTS:
                metrics = _train_egnn(out, EGNN_VARIANTS[name], seed)
            else:
                cfg = LECTURE_VARIANTS[name]
                metrics = train(out, progress=False, seed=seed, **cfg)["metrics"]
        except Exception as err:  # report and go on with the other runs
            return {"config": name, "seed": seed, "error": f"{type(err).__name__}: {err}"}
    m = metrics["sigma_8"]
    return {
        "config": name,
        "seed": seed,
        "epsilon": m["epsilon"],
        "r2": m["r2"],
        "chi2": m["chi2"],
        "coverage_68": m["coverage_68"],
        "minutes": (time.perf_counter() - start) / 60,
    }


def main() -> None:
    known = [*LECTURE_VARIANTS, *EGNN_VARIANTS]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default=",".join(LECTURE_VARIANTS), help=f"of {known}")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    ap.add_argument("--procs", type=int, default=2, help="parallel runs")
    ap.add_argument("--fast", action="store_true", help="fast mode: a smoke test of the script")
    args = ap.parse_args()
    if args.fast:
        os.environ["PHYSML_FAST"] = "1"  # read by the workers too (spawned, same environment)
    configs = [c for c in args.configs.split(",") if c]
    unknown = sorted(set(configs) - set(known))
    if unknown:
        ap.error(f"--configs: unknown {unknown}; accepted: {known}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    from physml.datasets import load_bundled
    from physml.graphdata import make_loaders, split_indices

    cset = load_bundled("lh")  # build the graph caches once, before the workers start
    for r in sorted({LECTURE_VARIANTS.get(c, {}).get("r_link", 0.2) for c in configs}):
        make_loaders(cset, split_indices(len(cset)), r)
    jobs = [(c, s) for s in seeds for c in configs]
    with mp.get_context("spawn").Pool(args.procs) as pool:
        for result in pool.imap_unordered(run, jobs):
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
