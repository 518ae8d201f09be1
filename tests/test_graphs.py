"""Tests for physml.graphs: radius graphs against an independent numpy brute force, and the
symmetries of the edge features."""

import math

import numpy as np
import pytest
import torch

from physml import graphs
from physml.graphs import (
    available_backends,
    cartesian_edge_features,
    edge_features,
    graph_centres,
    invariant_edge_features,
    radius_graph,
)

BACKENDS = [b for b in ("kdtree", "torch") if b in available_backends()]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# --------------------------------------------------------------------------- reference


def brute_force(pos, r, box=None, batch=None, loop=False):
    """All pairs in numpy float64, minimum image; returns the sorted [2, E] int64 array
    (row 0 = source j, row 1 = target i), sorted by target then source."""
    x = np.asarray(pos, dtype=np.float64)
    n = len(x)
    d = x[None, :, :] - x[:, None, :]  # [i, j] -> x_j - x_i
    if box is not None:
        d = d - box * np.round(d / box)
    adj = (d**2).sum(-1) < r * r
    if batch is not None:
        b = np.asarray(batch)
        adj &= b[:, None] == b[None, :]
    adj[np.arange(n), np.arange(n)] = loop
    tgt, src = np.nonzero(adj)  # row-major: sorted by target, then source
    return np.stack([src, tgt]).astype(np.int64)


def as_set(edge_index):
    ei = np.asarray(edge_index.cpu() if torch.is_tensor(edge_index) else edge_index)
    return set(zip(ei[0].tolist(), ei[1].tolist(), strict=True))


def random_catalogs(seed, sizes, box=1.0, shuffle=False):
    """Several graphs concatenated; ``shuffle`` mixes their nodes (unsorted batch)."""
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(sum(sizes), 3, generator=g, dtype=torch.float64) * box
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    if shuffle:
        perm = torch.randperm(len(batch), generator=g)
        pos, batch = pos[perm], batch[perm]
    return pos, batch


def random_orthogonal(seed, reflect=True):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    if reflect and torch.det(q) > 0:
        q = q * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    return q


def sorted_by_edges(edge_index, feats):
    """Edges (in original labels) and features, sorted by (target, source)."""
    key = edge_index[1] * (edge_index.max() + 1) + edge_index[0]
    order = torch.argsort(key)
    return edge_index[:, order], feats[order]


# --------------------------------------------------------------------------- radius graph


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("box", [None, 1.0])
@pytest.mark.parametrize("batching", ["none", "sorted", "unsorted"])
def test_matches_brute_force(backend, box, batching, device):
    sizes = [300] if batching == "none" else [120, 1, 0, 80, 150]
    pos, batch = random_catalogs(1, sizes, shuffle=batching == "unsorted")
    if batching == "none":
        batch = None
    r = 0.15
    ref = brute_force(pos, r, box, batch)
    ei = radius_graph(
        pos.to(device),
        r,
        box_size=box,
        batch=None if batch is None else batch.to(device),
        backend=backend,
    )
    assert ei.dtype == torch.long and ei.device.type == device and ei.shape[0] == 2
    assert ei.shape[1] > 0
    assert as_set(ei) == as_set(ref)
    # deterministic order (target, then source): identical to the sorted reference
    assert np.array_equal(ei.cpu().numpy(), ref)


@pytest.mark.parametrize("box", [None, 1.0])
def test_backends_identical_float32(box):
    pos = torch.rand(500, 3, generator=torch.Generator().manual_seed(2))  # float32
    batch = torch.randint(0, 4, (500,), generator=torch.Generator().manual_seed(3))
    out = [radius_graph(pos, 0.12, box, batch, backend=b) for b in BACKENDS]
    out.append(radius_graph(pos, 0.12, box, batch))  # auto
    for ei in out[1:]:
        assert torch.equal(ei, out[0])
    assert as_set(out[0]) == as_set(brute_force(pos.double(), 0.12, box, batch))


@pytest.mark.parametrize("backend", BACKENDS)
def test_small_blocks(backend, monkeypatch):
    """Force the torch backend's row blocks and graph groups to be tiny."""
    monkeypatch.setattr(graphs, "_BLOCK_PAIRS", 700)
    pos, batch = random_catalogs(4, [3, 50, 7, 2, 31], shuffle=True)
    for box in (None, 1.0):
        ei = radius_graph(pos, 0.3, box, batch, backend=backend)
        assert np.array_equal(ei.numpy(), brute_force(pos, 0.3, box, batch))


@pytest.mark.parametrize("backend", BACKENDS)
def test_across_the_boundary(backend):
    pos = torch.tensor(
        [
            [0.01, 0.50, 0.50],
            [0.99, 0.50, 0.50],  # 0.02 from node 0 through x = 0 / 1
            [0.01, 0.01, 0.01],
            [0.99, 0.99, 0.99],  # 0.02 * sqrt(3) from node 2 through the corner
            [0.50, 0.50, 0.97],  # isolated
        ]
    )
    periodic = as_set(radius_graph(pos, 0.05, box_size=1.0, backend=backend))
    assert periodic == {(0, 1), (1, 0), (2, 3), (3, 2)}
    assert radius_graph(pos, 0.05, backend=backend).shape == (2, 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_strictly_less_than_r(backend):
    # distances exactly 0.25 (exact in binary), directly and through the boundary
    pos = torch.tensor([[0.25, 0.5, 0.5], [0.5, 0.5, 0.5], [0.125, 0.2, 0.2], [0.875, 0.2, 0.2]])
    for box in (None, 1.0):
        assert radius_graph(pos, 0.25, box, backend=backend).shape == (2, 0)
    assert as_set(radius_graph(pos, 0.2500001, 1.0, backend=backend)) == {
        (0, 1),
        (1, 0),
        (2, 3),
        (3, 2),
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_loop_adds_n_self_loops(backend):
    pos, batch = random_catalogs(5, [40, 30], shuffle=True)
    plain = radius_graph(pos, 0.2, 1.0, batch, backend=backend)
    looped = radius_graph(pos, 0.2, 1.0, batch, loop=True, backend=backend)
    assert looped.shape[1] == plain.shape[1] + 70
    assert as_set(looped) - as_set(plain) == {(i, i) for i in range(70)}
    assert np.array_equal(looped.numpy(), brute_force(pos, 0.2, 1.0, batch, loop=True))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("box", [None, 1.0])
def test_empty_and_single_node(backend, box):
    empty = torch.empty(0, 3)
    assert radius_graph(empty, 0.1, box, backend=backend).shape == (2, 0)
    assert radius_graph(empty, 0.1, box, loop=True, backend=backend).shape == (2, 0)
    one = torch.tensor([[0.3, 0.3, 0.3]])
    assert radius_graph(one, 0.1, box, backend=backend).shape == (2, 0)
    assert radius_graph(one, 0.1, box, loop=True, backend=backend).tolist() == [[0], [0]]
    # a batch of single-node graphs has no edges either
    pos, batch = random_catalogs(6, [1, 1, 1])
    assert radius_graph(pos, 0.45, box, batch, backend=backend).shape == (2, 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_neighbour_cap(backend):
    g = torch.Generator().manual_seed(7)
    pos = 0.5 + 0.01 * (torch.rand(200, 3, generator=g) - 0.5)  # all within 0.02 of each other
    for box in (None, 1.0):
        ei = radius_graph(pos, 0.1, box, backend=backend)
        assert ei.shape == (2, 200 * 199)


def test_cluster_backend_matches():
    pytest.importorskip("torch_cluster")
    pos, batch = random_catalogs(8, [100, 60, 200], shuffle=True)
    ei = radius_graph(pos, 0.15, batch=batch, backend="cluster")
    assert np.array_equal(ei.numpy(), brute_force(pos, 0.15, None, batch))
    dense = 0.5 + 0.01 * torch.rand(200, 3, dtype=torch.float64)
    assert radius_graph(dense, 0.1, backend="cluster").shape == (2, 200 * 199)


def test_cluster_backend_missing_or_periodic():
    pos = torch.rand(10, 3)
    if "cluster" in available_backends():
        with pytest.raises(ValueError, match="open boundaries"):
            radius_graph(pos, 0.1, box_size=1.0, backend="cluster")
    else:
        with pytest.raises(ImportError, match=r"physml\[cluster\]"):
            radius_graph(pos, 0.1, backend="cluster")


def test_bad_inputs():
    pos = torch.rand(10, 3)
    with pytest.raises(ValueError, match="kdtree.*torch.*cluster"):
        radius_graph(pos, 0.1, backend="ball_tree")
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        radius_graph(torch.rand(10, 2), 0.1)
    with pytest.raises(ValueError, match="floating"):
        radius_graph(torch.ones(10, 3, dtype=torch.long), 0.1)
    for r in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="r: expected"):
            radius_graph(pos, r)
    with pytest.raises(ValueError, match="ambiguous"):
        radius_graph(pos, 0.5, box_size=1.0)
    with pytest.raises(ValueError, match="box_size"):
        radius_graph(pos, 0.1, box_size=-1.0)
    with pytest.raises(ValueError, match="batch"):
        radius_graph(pos, 0.1, batch=torch.zeros(9, dtype=torch.long))
    with pytest.raises(ValueError, match="batch"):
        radius_graph(pos, 0.1, batch=torch.zeros(10))
    with pytest.raises(ValueError, match="NaN"):
        radius_graph(torch.full((3, 3), float("nan")), 0.1)
    ei = radius_graph(pos, 0.3)
    with pytest.raises(ValueError, match="cartesian.*invariant"):
        edge_features("spherical", pos, ei)
    with pytest.raises(ValueError, match="edge_index"):
        edge_features("cartesian", pos, ei.t().contiguous())
    with pytest.raises(ValueError, match="edge_index"):
        edge_features("cartesian", pos, ei + 10)


# --------------------------------------------------------------------------- edge features


def test_invariant_features_hand_example_open():
    pos = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    ei = radius_graph(pos, 2.5)
    assert as_set(ei) == {(a, b) for a in range(3) for b in range(3) if a != b}
    f = invariant_edge_features(pos, ei)
    by_edge = {e: f[k] for k, e in enumerate(zip(ei[0].tolist(), ei[1].tolist(), strict=True))}
    # centroid (2/3, 1/3, 0); p_0 = (-2, -1, 0)/sqrt5, p_1 = (4, -1, 0)/sqrt17,
    # p_2 = (-1, 1, 0)/sqrt2
    # edge source 1 -> target 0: r = x_1 - x_0 = (2, 0, 0)
    expected = torch.tensor([2.0, -7 / math.sqrt(85), 4 / math.sqrt(17)], dtype=torch.float64)
    torch.testing.assert_close(by_edge[(1, 0)], expected)
    # edge source 0 -> target 2: r = x_0 - x_2 = (0, -1, 0)
    expected = torch.tensor([1.0, 1 / math.sqrt(10), 1 / math.sqrt(5)], dtype=torch.float64)
    torch.testing.assert_close(by_edge[(0, 2)], expected)
    torch.testing.assert_close(
        cartesian_edge_features(pos, ei)[list(by_edge).index((1, 0))],
        torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64),
    )


def test_invariant_features_hand_example_periodic():
    # Two nodes across x = 0 / 1. The circular-mean centre is x = 0 (a plain mean would give
    # 0.5 and flip the sign of the last feature).
    pos = torch.tensor([[0.05, 0.5, 0.5], [0.95, 0.5, 0.5]], dtype=torch.float64)
    centre = graph_centres(pos, box_size=1.0)[0]
    assert abs(math.remainder(centre[0].item(), 1.0)) < 1e-12
    torch.testing.assert_close(centre[1:], torch.tensor([0.5, 0.5], dtype=torch.float64))
    ei = radius_graph(pos, 0.2, box_size=1.0)
    assert ei.tolist() == [[1, 0], [0, 1]]
    f = invariant_edge_features(pos, ei, box_size=1.0)
    torch.testing.assert_close(f, torch.tensor([[0.1, -1.0, 1.0]] * 2, dtype=torch.float64))
    torch.testing.assert_close(
        cartesian_edge_features(pos, ei, box_size=1.0),
        torch.tensor([[-0.1, 0.0, 0.0], [0.1, 0.0, 0.0]], dtype=torch.float64),
    )


def test_invariant_under_rotation_reflection_translation_open():
    pos, batch = random_catalogs(10, [150, 90], box=5.0, shuffle=True)
    ei = radius_graph(pos, 0.9, batch=batch)
    f = invariant_edge_features(pos, ei, batch)
    q = random_orthogonal(11)
    assert torch.det(q) < 0  # includes a reflection
    shift = torch.tensor([3.0, -7.0, 0.5], dtype=torch.float64)
    pos2 = pos @ q.T + shift
    assert torch.equal(radius_graph(pos2, 0.9, batch=batch), ei)
    torch.testing.assert_close(invariant_edge_features(pos2, ei, batch), f, atol=1e-5, rtol=0)
    # cartesian features rotate with the positions: they are not invariant
    c, c2 = cartesian_edge_features(pos, ei), cartesian_edge_features(pos2, ei)
    torch.testing.assert_close(c2, c @ q.T)
    assert (c2 - c).abs().max() > 0.1


def test_invariant_under_periodic_translation_with_wrap():
    pos, batch = random_catalogs(12, [200, 150, 120], shuffle=True)
    ei = radius_graph(pos, 0.15, 1.0, batch)
    f = invariant_edge_features(pos, ei, batch, 1.0)
    g = torch.Generator().manual_seed(13)
    shifts = torch.rand(3, 3, generator=g, dtype=torch.float64)  # a different one per graph
    pos2 = torch.remainder(pos + shifts[batch], 1.0)
    assert torch.equal(radius_graph(pos2, 0.15, 1.0, batch), ei)
    torch.testing.assert_close(invariant_edge_features(pos2, ei, batch, 1.0), f, atol=1e-5, rtol=0)
    centres = graph_centres(pos, batch, 1.0)
    moved = graph_centres(pos2, batch, 1.0)
    diff = torch.remainder(moved - centres - shifts + 0.5, 1.0) - 0.5
    assert diff.abs().max() < 1e-9


@pytest.mark.parametrize(
    "transform",
    [
        lambda x: torch.stack([1.0 - x[:, 1], x[:, 0], x[:, 2]], 1),  # 90 deg about z
        lambda x: torch.stack([x[:, 0], x[:, 2], 1.0 - x[:, 1]], 1),  # 90 deg about x
        lambda x: x[:, [1, 2, 0]],  # axis permutation
        lambda x: torch.stack([1.0 - x[:, 0], x[:, 1], x[:, 2]], 1),  # reflection
    ],
    ids=["rot_z", "rot_x", "permute_axes", "reflect_x"],
)
def test_invariant_under_cube_symmetries(transform):
    pos, batch = random_catalogs(14, [250, 100], shuffle=True)
    ei = radius_graph(pos, 0.15, 1.0, batch)
    f = invariant_edge_features(pos, ei, batch, 1.0)
    pos2 = torch.remainder(transform(pos), 1.0)
    assert torch.equal(radius_graph(pos2, 0.15, 1.0, batch), ei)
    torch.testing.assert_close(invariant_edge_features(pos2, ei, batch, 1.0), f, atol=1e-5, rtol=0)


@pytest.mark.parametrize("box", [None, 1.0])
def test_invariant_under_node_permutation(box):
    pos, batch = random_catalogs(15, [180, 140], shuffle=False)
    ei = radius_graph(pos, 0.15, box, batch)
    f = invariant_edge_features(pos, ei, batch, box)
    perm = torch.randperm(len(pos), generator=torch.Generator().manual_seed(16))
    ei_p = radius_graph(pos[perm], 0.15, box, batch[perm])
    f_p = invariant_edge_features(pos[perm], ei_p, batch[perm], box)
    e1, f1 = sorted_by_edges(ei, f)
    e2, f2 = sorted_by_edges(perm[ei_p], f_p)  # back to the original labels
    assert torch.equal(e1, e2)
    torch.testing.assert_close(f2, f1, atol=1e-5, rtol=0)


def test_float32_invariance_and_no_nan():
    pos, batch = random_catalogs(17, [300])
    pos = pos.float()
    ei = radius_graph(pos, 0.15, 1.0, batch, loop=True)  # self-loops: d = 0
    f = invariant_edge_features(pos, ei, batch, 1.0)
    assert torch.isfinite(f).all() and f.dtype == torch.float32
    loops = ei[0] == ei[1]
    assert torch.equal(f[loops, 0], torch.zeros(300)) and torch.equal(f[loops, 2], torch.zeros(300))
    pos2 = torch.remainder(pos + torch.tensor([0.3, 0.7, 0.1]), 1.0)
    f2 = invariant_edge_features(pos2, ei, batch, 1.0)
    torch.testing.assert_close(f2, f, atol=1e-4, rtol=0)
    # a node exactly at the centroid: p = 0, still finite
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]], requires_grad=True)
    ei = radius_graph(pos.detach(), 1.5, loop=True)
    f = edge_features("invariant", pos, ei)
    f.sum().backward()
    assert torch.isfinite(f).all() and torch.isfinite(pos.grad).all()


def test_edge_features_dispatch():
    pos, batch = random_catalogs(18, [60, 40])
    ei = radius_graph(pos, 0.25, 1.0, batch)
    torch.testing.assert_close(
        edge_features("cartesian", pos, ei, batch, 1.0), cartesian_edge_features(pos, ei, 1.0)
    )
    torch.testing.assert_close(
        edge_features("invariant", pos, ei, batch, 1.0),
        invariant_edge_features(pos, ei, batch, 1.0),
    )
    c = edge_features("cartesian", pos, ei, batch, 1.0)
    assert c.shape == (ei.shape[1], 3) and c.abs().max() <= 0.25
    # the cartesian feature's norm is the first invariant feature
    torch.testing.assert_close(c.norm(dim=1), edge_features("invariant", pos, ei, batch, 1.0)[:, 0])


@pytest.mark.parametrize("box", [None, 1.0])
def test_unchecked_hot_path_equals_the_checked_functions(box, monkeypatch):
    """The models' hot path gives the checked functions' features bit for bit and calls none
    of the checks (each reads values back from the device on a GPU)."""
    from physml.models import MPGNN

    g = torch.Generator().manual_seed(0)
    pos = torch.rand(60, 3, generator=g)
    batch = torch.arange(3).repeat_interleave(20)
    ei = graphs.radius_graph(pos, 0.3, box_size=box, batch=batch)
    for kind in graphs.EDGE_FEATURE_KINDS:
        ref = graphs.edge_features(kind, pos, ei, batch, box)
        got = graphs.edge_features_unchecked(kind, pos, ei, batch, box)
        assert torch.equal(ref, got)

    def refuse(*args, **kwargs):
        raise AssertionError("a check ran in the hot path")

    for name in ("_check_pos", "_check_batch", "_check_edge_index", "_check_box"):
        monkeypatch.setattr(graphs, name, refuse)
    from torch_geometric.data import Batch, Data

    data = Batch.from_data_list(
        [
            Data(
                pos=pos[batch == b],
                x=torch.rand(20, 1, generator=g),
                edge_index=ei[:, batch[ei[1]] == b] - 20 * b,
                u=torch.zeros(1, 1),
            )
            for b in range(3)
        ]
    )
    for kind in graphs.EDGE_FEATURE_KINDS:
        net = MPGNN(0.3, 4, 4, 8, 1, 1, embedding=kind, box_size=box)
        mean, std = net.eval()(data)
        assert mean.shape == std.shape == (3, 1)
