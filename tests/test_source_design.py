"""The throughput benchmark's reproduction of the source notebook's design
(benchmarks/source_design.py) computes the same function as physml's MPGNN.

This checks two things at once: that the benchmark compares like with like, and that
MPGNN's fast path (factorised edge MLP, one scatter for sum and mean, scatter_max) gives
what the plain MetaLayer formulation with three scatters gives, values and gradients.
"""

import sys
from pathlib import Path

import pytest
import torch
from torch_geometric.data import Batch, Data

from physml.graphs import radius_graph
from physml.models import MPGNN

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from source_design import SourceDesign  # noqa: E402

R = 0.2


def _batch(box_size):
    g = torch.Generator().manual_seed(1)
    graphs = []
    for n in (60, 1, 0, 45):
        pos = torch.rand(n, 3, generator=g, dtype=torch.float64)
        graphs.append(
            Data(
                x=torch.randn(n, 1, generator=g, dtype=torch.float64),
                pos=pos,
                edge_index=radius_graph(pos, R, box_size=box_size),
                u=torch.randn(1, 1, generator=g, dtype=torch.float64),
                num_nodes=n,
            )
        )
    return Batch.from_data_list(graphs)


@pytest.mark.parametrize("embedding", ["cartesian", "invariant"])
@pytest.mark.parametrize("periodic", [True, False])
def test_same_outputs_and_gradients(embedding, periodic):
    torch.manual_seed(0)
    box = 1.0 if periodic else None
    net = MPGNN(R, 8, 8, 16, 3, n_targets=2, embedding=embedding, box_size=box).double()
    batch = _batch(box)
    assert batch.num_edges > 0
    results = []
    for model in (
        net,
        SourceDesign(net, periodic=periodic),
        SourceDesign(net, periodic=periodic, rebuild=False),
    ):
        net.zero_grad()
        mean, std = model(batch)
        (mean.square().sum() + std.sum()).backward()
        grads = [p.grad.clone() for p in net.parameters()]
        results.append((mean.detach(), std.detach(), grads))
    m1, s1, g1 = results[0]
    assert len(g1) == len(list(net.parameters()))
    for m2, s2, g2 in results[1:]:
        torch.testing.assert_close(m1, m2, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(s1, s2, rtol=1e-10, atol=1e-12)
        for a, b in zip(g1, g2, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_open_boundaries_give_a_different_graph():
    """The source's open-boundary graph misses the pairs across the faces of the box, so
    its outputs differ from the periodic model's (the benchmark reports both)."""
    torch.manual_seed(0)
    net = MPGNN(R, 8, 8, 16, 2, n_targets=1, embedding="cartesian", box_size=1.0).double()
    batch = _batch(1.0)
    with torch.no_grad():
        assert not torch.allclose(net(batch)[0], SourceDesign(net, periodic=False)(batch)[0])
