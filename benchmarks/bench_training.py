"""Training speed and accuracy of the lecture GNN on the bundled set, side by side with
the summary-statistics baseline and with the source notebook's design.

Prints, in one run:
1. throughput (graphs per second, forward + backward + AdamW step, median of ``--rounds``
   epochs taken in turn) of physml's precomputed-graph model and of the source notebook's
   design (``source_design.py``: the same network computed the source's way, with the
   radius graph rebuilt inside ``forward`` on every step), once on the same periodic graph
   and once on the source's open-boundary graph, and the ratios; the source's layer code
   on precomputed graphs splits the ratio into its two factors; the radius graph's cost
   per batch;
2. (unless --throughput-only) full training of the invariant and the Cartesian model on
   the fixed split: wall time, test metrics, and the ratios against the baseline.

    python benchmarks/bench_training.py [--throughput-only] [--epochs N] [--device cuda]
                                         [--rounds R]

The throughput is measured on ``--device`` (default: CUDA when available, else the CPU);
the full trainings use Lightning's ``accelerator="auto"``, so they also run on a GPU when
there is one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch
from source_design import SourceDesign

from physml.datasets import load_bundled
from physml.experiment import LECTURE_HPARAMS, baseline, train
from physml.graphdata import make_loaders, split_indices
from physml.graphs import radius_graph
from physml.models import MPGNN
from physml.settings import BATCH_SIZE
from physml.training import heteroscedastic_loss


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _epoch(model, opt, loader, device: torch.device) -> tuple[int, float]:
    """One epoch of forward + backward + AdamW steps, host-to-device copies included:
    (graphs, seconds)."""
    n = 0
    _sync(device)
    start = time.perf_counter()
    for batch in loader:
        batch = batch.to(device)
        mean, std = model(batch)
        loss = heteroscedastic_loss(mean, std, batch.y[:, :1])
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += batch.num_graphs
    _sync(device)
    return n, time.perf_counter() - start


def throughput(models: dict, loader, device: torch.device, rounds: int = 3) -> dict:
    """Graphs per second of each model (name -> module), measured side by side: after a
    warm-up epoch each, ``rounds`` rounds of one epoch per model in turn, so that a slow
    spell of the machine hits every model alike. Returns name -> median rate."""
    runs = {}
    for name, model in models.items():
        model = model.to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=5e-4)
        _epoch(model, opt, loader, device)  # warm-up
        runs[name] = (model, opt, [])
    for _ in range(rounds):
        for model, opt, rates in runs.values():
            n, t = _epoch(model, opt, loader, device)
            rates.append(n / t)
    return {name: statistics.median(rates) for name, (_, _, rates) in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--throughput-only", action="store_true")
    ap.add_argument("--epochs", type=int, default=None, help="epochs of the full trainings")
    ap.add_argument("--device", default=None, help="device of the throughput runs")
    ap.add_argument("--rounds", type=int, default=3, help="timed epochs per throughput arm")
    args = ap.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"torch threads: {torch.get_num_threads()}; throughput device: {device} ({name})")
    cset = load_bundled("lh")
    split = split_indices(len(cset), fast=False)
    loaders, _ = make_loaders(cset, split, LECTURE_HPARAMS["r_link"])
    hp = {k: v for k, v in LECTURE_HPARAMS.items() if k != "lr"}
    models = {}
    for name, box, wrap in (
        ("physml (graphs precomputed)", 1.0, lambda net: net),
        (
            "source design's layers, graphs precomputed",
            1.0,
            lambda net: SourceDesign(net, True, rebuild=False),
        ),
        (
            "source design, same periodic graph rebuilt in forward",
            1.0,
            lambda net: SourceDesign(net, True),
        ),
        (
            "source design as written (open-boundary graph)",
            None,
            lambda net: SourceDesign(net, False),
        ),
    ):
        torch.manual_seed(0)
        models[name] = wrap(MPGNN(**hp, n_targets=1, embedding="cartesian", box_size=box))
    rates = throughput(models, loaders["train"], device, rounds=args.rounds)
    for name, rate in rates.items():
        print(f"throughput, {name}: {rate:.0f} graphs/s (median of {args.rounds} epochs)")
    ours, layers_only, same_graph, as_written = rates.values()
    print(
        f"throughput ratio physml / source design, same graph: {ours / same_graph:.2f} (bar: >= 2)"
    )
    print(f"throughput ratio physml / source design as written: {ours / as_written:.2f}")
    print(
        f"  of which precomputing the graph: {layers_only / same_graph:.2f}, "
        f"physml's layer code: {ours / layers_only:.2f}"
    )
    radius_ms = {}
    batches = [(b.pos.to(device), b.batch.to(device)) for b in loaders["train"]]
    for box in (1.0, None):
        _sync(device)
        start = time.perf_counter()
        for pos, graph_ids in batches:
            radius_graph(pos, hp["r_link"], box_size=box, batch=graph_ids)
        _sync(device)
        radius_ms[box] = (time.perf_counter() - start) / len(batches) * 1e3
    print(
        f"radius graph per batch of {BATCH_SIZE}: periodic {radius_ms[1.0]:.1f} ms, "
        f"open {radius_ms[None]:.1f} ms"
    )
    if args.throughput_only:
        return
    with tempfile.TemporaryDirectory() as tmp:
        base = baseline(f"{tmp}/baseline", fast=False)
        print("baseline (quadratic, summary statistics):", json.dumps(base))
        results = {}
        for emb in ("invariant", "cartesian"):
            res = train(
                f"{tmp}/{emb}", embedding=emb, epochs=args.epochs, fast=False, progress=False
            )
            results[emb] = res
            m = res["metrics"]["sigma_8"]
            print(
                f"{emb}: {res['seconds'] / 60:.1f} min for {res['epochs_run']} epochs; "
                f"test sigma_8 {json.dumps(m)}"
            )
    b8 = base["sigma_8"]
    inv = results["invariant"]["metrics"]["sigma_8"]
    print(f"epsilon ratio invariant / baseline: {inv['epsilon'] / b8['epsilon']:.3f} (bar: <= 0.9)")
    print(f"R^2 invariant {inv['r2']:.3f} vs baseline {b8['r2']:.3f} (bar: >=)")
    print(
        f"calibration invariant: chi2 {inv['chi2']:.2f} (bar 0.7-1.4), "
        f"coverage_68 {inv['coverage_68']:.2f} (bar 0.60-0.76)"
    )


if __name__ == "__main__":
    main()
