"""The Task 2 solution networks (solutions/task2_models.py): symmetries of the periodic box
and the EGNN layer against a direct, pair-by-pair evaluation of its equations."""

import importlib.util
import itertools
from pathlib import Path

import pytest
import torch
from torch_geometric.data import Batch, Data

from physml.graphs import minimum_image, radius_graph

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "task2_models", ROOT / "solutions" / "task2_models.py"
)
task2_models = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(task2_models)

R_LINK = 0.2
# the 48 symmetries of the cube: axis permutation and sign flips, x -> x[:, perm] * sign
CUBE = [
    (list(perm), torch.tensor(sign, dtype=torch.float64))
    for perm in itertools.permutations(range(3))
    for sign in itertools.product((1.0, -1.0), repeat=3)
]


def _graph(n: int, seed: int) -> Data:
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(n, 3, generator=g, dtype=torch.float64)
    pos[:6, 0] = torch.tensor([0.01, 0.02, 0.98, 0.99, 0.005, 0.995])  # edges across x = 0
    return Data(
        pos=pos,
        x=torch.randn(n, 1, generator=g, dtype=torch.float64),
        u=torch.randn(1, 1, generator=g, dtype=torch.float64),
        vel=300 * torch.randn(n, 3, generator=g, dtype=torch.float64),
        edge_index=radius_graph(pos, R_LINK, box_size=1.0),
        y=torch.rand(1, 2, generator=g, dtype=torch.float64),
    )


@pytest.fixture(scope="module")
def batch():
    b = Batch.from_data_list([_graph(70, 1), _graph(55, 2)])
    assert b.edge_index.size(1) > 200
    return b


def _transform(b, perm, sign, shift):
    """Cube symmetry then periodic translation; velocities rotate with the positions."""
    out = b.clone()
    out.pos = torch.remainder(b.pos[:, perm] * sign + shift, 1.0)
    out.vel = b.vel[:, perm] * sign
    return out


def _permute(b, seed=0):
    n = b.num_nodes
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    new_id = torch.empty_like(perm)
    new_id[perm] = torch.arange(n)
    out = b.clone()
    for key in ("pos", "x", "vel", "batch"):
        out[key] = b[key][perm]
    out.edge_index = new_id[b.edge_index]
    return out, perm


def _models():
    torch.manual_seed(0)
    return {
        "egnn": task2_models.EGNN(hidden=16, n_layers=3).double().eval(),
        "egnn+vel": task2_models.EGNN(hidden=16, n_layers=2, use_velocity=True).double().eval(),
        "velocity-mpgnn": task2_models.VelocityMPGNN(
            hidden_size=16, node_emb_size=8, edge_emb_size=8
        )
        .double()
        .eval(),
    }


def _close(a, b, tol=1e-9):
    return torch.allclose(a, b, rtol=tol, atol=tol)


@torch.no_grad()
@pytest.mark.parametrize("name", ["egnn", "egnn+vel", "velocity-mpgnn"])
def test_prediction_invariant_under_box_symmetries(batch, name):
    model = _models()[name]
    mean, std = model(batch)
    assert mean.shape == std.shape == (2, 1) and bool((std > 0).all())
    g = torch.Generator().manual_seed(5)
    for perm, sign in CUBE:
        shift = torch.rand(3, generator=g, dtype=torch.float64)
        m2, s2 = model(_transform(batch, perm, sign, shift))
        assert _close(m2, mean) and _close(s2, std), (name, perm, sign)
    permuted, _ = _permute(batch)
    m3, s3 = model(permuted)
    assert _close(m3, mean) and _close(s3, std)


@torch.no_grad()
@pytest.mark.parametrize("name", ["egnn", "egnn+vel", "velocity-mpgnn"])
def test_prediction_depends_on_the_catalog(batch, name):
    """Not trivially invariant: moving some halos (not a symmetry) changes the prediction,
    and so does rotating the velocities without the positions."""
    model = _models()[name]
    mean, _ = model(batch)
    bumped = batch.clone()
    bumped.pos = torch.remainder(batch.pos + 0.01 * torch.randn_like(batch.pos), 1.0)
    assert not _close(model(bumped)[0], mean, 1e-6)
    if name != "egnn":
        turned = batch.clone()
        turned.vel = batch.vel[:, [1, 2, 0]] * torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64)
        assert not _close(model(turned)[0], mean, 1e-6)


@torch.no_grad()
def test_egnn_coordinates_equivariant_features_invariant(batch):
    model = _models()["egnn"]
    h, x = model.propagate(batch)
    assert minimum_image(x - batch.pos, 1.0).abs().max() > 1e-6  # the coordinates do move
    assert bool(((x >= 0) & (x < 1)).all())  # and stay in the box
    g = torch.Generator().manual_seed(7)
    for perm, sign in CUBE:
        shift = torch.rand(3, generator=g, dtype=torch.float64)
        h2, x2 = model.propagate(_transform(batch, perm, sign, shift))
        expected = torch.remainder(x[:, perm] * sign + shift, 1.0)
        assert minimum_image(x2 - expected, 1.0).abs().max() < 1e-9, (perm, sign)
        assert _close(h2, h)
    permuted, perm = _permute(batch)
    h3, x3 = model.propagate(permuted)
    assert _close(h3, h[perm]) and _close(x3, x[perm])


@torch.no_grad()
def test_egnn_needs_the_minimum_image(batch):
    """Control: the same layers without the periodic box (plain differences) are not
    translation invariant, because edges across the boundary get wrong lengths."""
    model = _models()["egnn"]
    for layer in model.layers:
        layer.box_size = None
    shifted = _transform(batch, [0, 1, 2], torch.ones(3, dtype=torch.float64), 0.5)
    assert not _close(model(shifted)[0], model(batch)[0], 1e-6)


@torch.no_grad()
def test_graphs_of_a_batch_do_not_interact(batch):
    model = _models()["egnn+vel"]
    mean, std = model(batch)
    alone = Batch.from_data_list([batch.get_example(1)])
    m1, s1 = model(alone)
    assert _close(m1, mean[1:]) and _close(s1, std[1:])


@torch.no_grad()
def test_egnn_layer_matches_its_equations():
    """EGNNLayer against a loop over nodes and neighbours (Satorras et al. 2021, eqs. 3-6
    with the mean coordinate update, r_scale units and wrap-around)."""
    torch.manual_seed(3)
    data = _graph(25, 9)
    hidden, r0 = 8, 0.3
    layer = task2_models.EGNNLayer(hidden, box_size=1.0, r_scale=r0).double()
    # a larger last layer of phi_x than its near-zero initialisation, so x really moves
    torch.nn.init.normal_(layer.phi_x[2].weight, std=0.5)
    h = torch.randn(data.num_nodes, hidden, dtype=torch.float64)
    ei = radius_graph(data.pos, r0, box_size=1.0)
    h_out, x_out = layer(h, data.pos, ei)

    for i in range(data.num_nodes):
        nbrs = ei[0, ei[1] == i].tolist()
        m_sum = torch.zeros(hidden, dtype=torch.float64)
        step = torch.zeros(3, dtype=torch.float64)
        for j in nbrs:
            d = data.pos[i] - data.pos[j]
            d = (d - torch.round(d)) / r0  # minimum image, units of r0
            m = layer.phi_e(torch.cat([h[i], h[j], (d * d).sum()[None]]))
            m_sum += torch.sigmoid(layer.phi_inf(m)) * m
            step += d / (d.norm() + 1) * layer.phi_x(m)
        x_i = data.pos[i] + (r0 * step / len(nbrs) if nbrs else 0.0)
        h_i = layer.norm(h[i] + layer.phi_h(torch.cat([h[i], m_sum])))
        assert torch.allclose(h_out[i], h_i, atol=1e-10)
        assert torch.allclose(x_out[i], torch.remainder(x_i, 1.0), atol=1e-10)
    assert (x_out - data.pos).abs().max() > 1e-4


def test_missing_velocities_fail_clearly(batch):
    b = batch.clone()
    del b.vel
    with pytest.raises(ValueError, match="vel"):
        _models()["velocity-mpgnn"](b)
