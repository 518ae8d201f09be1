"""Gathers and pools over the edges of a lecture-sized batch: physml.aggregation against
what autograd gives for PyG's ``scatter`` and for ``x[index]``, side by side in one run.

    python benchmarks/bench_aggregation.py [--device cuda] [--repeats 30]

Shapes are those of one training batch of the lecture model (16 catalogs): N = 4475 nodes,
E = 79612 edges, 32 features; targets sorted (as physml's graphs), sources not. Each line
prints the median time of forward + backward (the gradient with respect to the input) and
the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch_geometric.utils import scatter

from physml.aggregation import Incidence, gather, scatter_max, scatter_sum

N_NODES, N_EDGES, N_FEATURES = 4475, 79612, 32


def _median_ms(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    targets = torch.randint(0, N_NODES, (N_EDGES,), generator=g).sort().values.to(device)
    sources = torch.randint(0, N_NODES, (N_EDGES,), generator=g).to(device)
    edges = torch.randn(N_EDGES, N_FEATURES, generator=g).to(device).requires_grad_()
    nodes = torch.randn(N_NODES, N_FEATURES, generator=g).to(device).requires_grad_()
    grad_nodes = torch.randn(N_NODES, N_FEATURES, generator=g).to(device)
    grad_edges = torch.randn(N_EDGES, N_FEATURES, generator=g).to(device)
    by_target, by_source = Incidence(targets, N_NODES), Incidence(sources, N_NODES)

    def pool(fn):
        return lambda: torch.autograd.grad(fn(), edges, grad_nodes)

    def spread(fn):
        return lambda: torch.autograd.grad(fn(), nodes, grad_edges)

    cases = [
        (
            "max pool",
            pool(lambda: scatter(edges, targets, 0, dim_size=N_NODES, reduce="max")),
            pool(lambda: scatter_max(edges, by_target)),
        ),
        (
            "sum pool",
            pool(lambda: scatter(edges, targets, 0, dim_size=N_NODES, reduce="sum")),
            pool(lambda: scatter_sum(edges, by_target)),
        ),
        (
            "gather, sorted",
            spread(lambda: nodes[targets]),
            spread(lambda: gather(nodes, by_target)),
        ),
        (
            "gather, unsorted",
            spread(lambda: nodes[sources]),
            spread(lambda: gather(nodes, by_source)),
        ),
    ]
    build = _median_ms(lambda: Incidence(sources, N_NODES), device, args.repeats)
    print(f"device {device}, torch threads {torch.get_num_threads()}, N={N_NODES}, E={N_EDGES}")
    print(f"Incidence of unsorted indices (once per batch): {build:.2f} ms")
    for name, reference, ours in cases:
        t_ref = _median_ms(reference, device, args.repeats)
        t_ours = _median_ms(ours, device, args.repeats)
        print(
            f"{name:17s} forward + backward: autograd {t_ref:6.2f} ms, "
            f"physml.aggregation {t_ours:6.2f} ms, ratio {t_ref / t_ours:4.1f}"
        )


if __name__ == "__main__":
    main()
