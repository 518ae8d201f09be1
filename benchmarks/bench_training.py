"""Training speed and accuracy of the lecture GNN on the bundled set, side by side with
the summary-statistics baseline and with the source notebook's design.

Prints, in one run:
1. throughput (graphs per second, forward + backward + AdamW step) of physml's
   precomputed-graph model and of the source notebook's design, which rebuilds the radius
   graph inside ``forward`` on every step (reproduced here with physml's fastest CPU
   backend, non-periodic like the source), and their ratio;
2. (unless --throughput-only) full training of the invariant and the Cartesian model on
   the fixed split: wall time, test metrics, and the ratios against the baseline.

    python benchmarks/bench_training.py [--throughput-only] [--epochs N] [--device cuda]

The throughput is measured on ``--device`` (default: CUDA when available, else the CPU);
the full trainings use Lightning's ``accelerator="auto"``, so they also run on a GPU when
there is one.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from physml.datasets import load_bundled, split_indices
from physml.experiment import LECTURE_HPARAMS, baseline, make_loaders, train
from physml.graphs import radius_graph
from physml.models import MPGNN
from physml.training import heteroscedastic_loss


class SourceDesignMPGNN(MPGNN):
    """The source notebook's design: the radius graph is rebuilt in every forward pass
    (open boundaries, as torch_cluster.radius_graph there)."""

    def forward(self, data):
        data = data.clone()
        data.edge_index = radius_graph(data.pos, self.r_link, batch=data.batch)
        return super().forward(data)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(model, loader, device: torch.device, epochs: int = 2) -> float:
    """Graphs per second of forward + backward + AdamW step, host-to-device copies
    included, averaged over ``epochs`` epochs after one warm-up epoch."""
    model = model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4)
    n, t = 0, 0.0
    for epoch in range(epochs + 1):  # the first epoch is a warm-up
        _sync(device)
        start = time.perf_counter()
        for batch in loader:
            batch = batch.to(device)
            mean, std = model(batch)
            loss = heteroscedastic_loss(mean, std, batch.y[:, :1])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if epoch:
                n += batch.num_graphs
        _sync(device)
        if epoch:
            t += time.perf_counter() - start
    return n / t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--throughput-only", action="store_true")
    ap.add_argument("--epochs", type=int, default=None, help="epochs of the full trainings")
    ap.add_argument("--device", default=None, help="device of the throughput runs")
    args = ap.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"torch threads: {torch.get_num_threads()}; throughput device: {device} ({name})")
    cset = load_bundled("lh")
    split = split_indices(len(cset), fast=False)
    loaders, _ = make_loaders(cset, split, LECTURE_HPARAMS["r_link"])
    hp = {k: v for k, v in LECTURE_HPARAMS.items() if k != "lr"}
    rates = {}
    for name, cls, box in (
        ("physml (graphs precomputed)", MPGNN, 1.0),
        ("source design (graph rebuilt in forward)", SourceDesignMPGNN, None),
    ):
        torch.manual_seed(0)
        model = cls(**hp, n_targets=1, embedding="cartesian", box_size=box)
        rates[name] = throughput(model, loaders["train"], device)
        print(f"throughput, {name}: {rates[name]:.0f} graphs/s")
    a, b = rates.values()
    print(f"throughput ratio physml / source design: {a / b:.2f}")
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
