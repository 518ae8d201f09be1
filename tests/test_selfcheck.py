"""physml.selfcheck: the Task notebooks' self-checks say what differs, where and by how much."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch_geometric.data import Batch, Data

from physml.graphs import radius_graph
from physml.models import MPGNN
from physml.selfcheck import FEATURE_NAMES, check_invariant_features, check_model, difference


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(0)
    graphs = []
    for _ in range(3):
        pos = torch.rand(40, 3, generator=gen)
        edge_index = radius_graph(pos, r=0.3, box_size=1.0)
        graphs.append(
            Data(
                x=torch.randn(40, 1, generator=gen),
                pos=pos,
                vel=100 * torch.randn(40, 3, generator=gen),
                edge_index=edge_index,
                u=torch.randn(1, 1, generator=gen),
            )
        )
    return Batch.from_data_list(graphs)


def test_difference_names_the_column_the_count_the_size_and_the_first_edge():
    expected = torch.zeros(5, 3)
    yours = expected.clone()
    yours[3, 2], yours[4, 2] = 0.5, -0.25
    edge_index = torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 4, 0]])
    batch = torch.tensor([0, 0, 1, 1, 1])
    assert difference(expected, expected.clone(), FEATURE_NAMES) is None
    msg = difference(yours, expected, FEATURE_NAMES, "edge", edge_index, batch)
    assert msg == (
        "column 2 (p_j . n_ij) differs on 2 of 5 edges, by up to 0.5; first at edge 3 "
        "(j = 3 -> i = 4, catalog 1 of the batch): 0.5 instead of 0"
    )
    yours[0, 0] = 1.0
    assert "column 0 (d_ij)" in difference(yours, expected, FEATURE_NAMES)
    assert "also differs: p_j . n_ij" in difference(yours, expected, FEATURE_NAMES)
    assert difference(yours[:, :2], expected, FEATURE_NAMES) == "shape [5, 2], expected [5, 3]"


def _brute_force_features(pos, edge_index, batch, source_convention):
    """(d, p_i . p_j, p . n) with numpy loops: minimum image, circular-mean centres."""
    pos, batch = pos.double().numpy(), batch.numpy()
    centres = {}
    for b in np.unique(batch):
        theta = 2 * math.pi * pos[batch == b]
        angle = np.arctan2(np.sin(theta).mean(0), np.cos(theta).mean(0))
        centres[b] = np.mod(angle / (2 * math.pi), 1.0)

    def unit(v):
        return v / np.linalg.norm(v)

    def mic(v):
        return v - np.round(v)

    rows = []
    for j, i in edge_index.T.tolist():
        r = mic(pos[j] - pos[i])
        p_i, p_j = (unit(mic(pos[k] - centres[batch[k]])) for k in (i, j))
        p = p_i if source_convention else p_j
        rows.append([np.linalg.norm(r), p_i @ p_j, p @ unit(r)])
    return torch.tensor(rows)


@pytest.mark.parametrize("source_convention", [False, True])
def test_either_convention_of_the_third_feature_passes(batch, source_convention):
    mine = _brute_force_features(batch.pos, batch.edge_index, batch.batch, source_convention)
    ok, msg = check_invariant_features(mine, batch.pos, batch.edge_index, batch.batch)
    assert ok, msg
    assert ("p_i . n_ij" in msg) == source_convention


def test_a_wrong_feature_fails_and_says_where(batch):
    mine = _brute_force_features(batch.pos, batch.edge_index, batch.batch, False)
    mine[:, 1] = 0.0  # forgot p_i . p_j
    ok, msg = check_invariant_features(mine, batch.pos, batch.edge_index, batch.batch)
    assert not ok and msg.startswith("column 1 (p_i . p_j) differs on")
    assert "catalog" in msg and "j = " in msg
    # no minimum image: the distance is wrong for the edges that cross a face
    j, i = batch.edge_index
    open_d = torch.linalg.vector_norm(batch.pos[j] - batch.pos[i], dim=-1)
    mine = _brute_force_features(batch.pos, batch.edge_index, batch.batch, False)
    mine[:, 0] = open_d.double()
    ok, msg = check_invariant_features(mine, batch.pos, batch.edge_index, batch.batch)
    crossing = int((~torch.isclose(open_d.double(), _d(batch), rtol=1e-4, atol=1e-5)).sum())
    assert crossing > 0 and not ok and f"column 0 (d_ij) differs on {crossing} of" in msg


def _d(batch):
    j, i = batch.edge_index
    rel = batch.pos[j] - batch.pos[i]
    return torch.linalg.vector_norm(rel - rel.round(), dim=-1).double()


class _NegativeStd(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, data):
        n = data.num_graphs
        return torch.zeros(n, 1) + self.w, -torch.ones(n, 1)


class _Flat(_NegativeStd):
    def forward(self, data):
        return torch.zeros(data.num_graphs), torch.ones(data.num_graphs)


def test_check_model_passes_the_invariant_network_and_explains_failures(batch):
    torch.manual_seed(0)
    invariant = MPGNN(0.3, 4, 4, 8, 1, n_targets=1, embedding="invariant").train()
    ok, text = check_model(invariant, batch)
    assert ok, text
    assert invariant.training  # mode restored
    assert text.count(": ok") == 3 + 4

    cartesian = MPGNN(0.3, 4, 4, 8, 1, n_targets=1, embedding="cartesian")
    ok, text = check_model(cartesian, batch)
    lines = dict(line.split(": ", 1) for line in text.splitlines())
    assert not ok
    assert lines["unchanged under periodic translation by (0.3, 0.6, 0.9)"] == "ok"
    assert lines["unchanged under (x, y, z) -> (y, x, z)"].startswith("FAIL, column ")
    assert "catalog" in lines["unchanged under (x, y, z) -> (y, x, z)"]

    ok, text = check_model(_NegativeStd(), batch)
    assert not ok and "std > 0: FAIL for 3 of 3 values, first on catalog 0" in text
    ok, text = check_model(_Flat(), batch)
    assert not ok and "FAIL, expected [3, 1] or [3, 2] each" in text
