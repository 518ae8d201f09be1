"""Tests of physml.models: symmetries of the embeddings, degenerate graphs, the readout.

Invariance checks run in float64, so that a true symmetry shows up as a difference at the
1e-12 level and a broken one as a difference many orders of magnitude larger.
"""

import copy
import itertools

import pytest
import torch
from torch import nn
from torch_geometric.data import Batch, Data

from physml.graphs import radius_graph
from physml.models import (
    EMBEDDINGS,
    MPGNN,
    PRIOR_RANGES,
    TARGETS,
    GlobalModel,
    GraphLayer,
    InvariantEmbedding,
    NodeModel,
    make_embedding,
    target_columns,
)

R = 0.2


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is faster, and robust to a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def graph(pos, x=None, u=None, box_size=1.0, seed=0):
    """A Data object with the radius graph of ``pos`` (periodic unless box_size is None)."""
    g = torch.Generator().manual_seed(seed)
    n = pos.size(0)
    if x is None:
        x = torch.randn(n, 1, generator=g, dtype=pos.dtype)
    if u is None:
        u = torch.randn(1, 1, generator=g, dtype=pos.dtype)
    y = torch.tensor([[0.8, 0.3]], dtype=pos.dtype)
    return Data(x=x, pos=pos, edge_index=radius_graph(pos, R, box_size=box_size), u=u, y=y)


def random_graph(n, seed, dtype=torch.float64, box_size=1.0):
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(n, 3, generator=g, dtype=dtype)
    return graph(pos, box_size=box_size, seed=seed + 1000)


def moved(data, pos, box_size=1.0):
    """Same node features, new positions, graph rebuilt from them (edges are precomputed)."""
    return graph(pos, x=data.x, u=data.u, box_size=box_size)


def model(embedding="invariant", n_targets=2, box_size=1.0, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return MPGNN(R, 8, 8, 16, 2, n_targets, embedding=embedding, box_size=box_size).to(dtype)


def run(net, graphs):
    with torch.no_grad():
        return net(Batch.from_data_list(list(graphs)))


def max_diff(a, b):
    return max(float((a[0] - b[0]).abs().max()), float((a[1] - b[1]).abs().max()))


@pytest.fixture(scope="module")
def graphs():
    return [random_graph(40, seed) for seed in range(3)]


# --------------------------------------------------------------------------- symmetries


def _permute(data, seed):
    g = torch.Generator().manual_seed(seed)
    n = data.num_nodes
    perm = torch.randperm(n, generator=g)  # new node k is old node perm[k]
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(n)
    ei = inv[data.edge_index]
    ei = ei[:, torch.randperm(ei.size(1), generator=g)]  # edge order shuffled too
    return Data(x=data.x[perm], pos=data.pos[perm], edge_index=ei, u=data.u, y=data.y)


@pytest.mark.parametrize("embedding", EMBEDDINGS)
def test_node_permutation_invariance_float32(embedding):
    gs = [random_graph(40, seed, dtype=torch.float32) for seed in range(3)]
    net = model(embedding, dtype=torch.float32)
    ref = run(net, gs)
    out = run(net, [_permute(d, 10 + k) for k, d in enumerate(gs)])
    assert max_diff(ref, out) < 1e-5


@pytest.mark.parametrize("embedding", EMBEDDINGS)
def test_periodic_translation_invariance(graphs, embedding):
    net = model(embedding)
    ref = run(net, graphs)
    for k, shift in enumerate([[0.5, 0.25, 0.9], [0.123, 0.77, 0.31]]):
        t = torch.tensor(shift, dtype=torch.float64)
        new = [moved(d, torch.remainder(d.pos + t, 1.0)) for d in graphs]
        # wrapping moves nodes across the boundary, yet the same pairs are linked
        assert [d.num_edges for d in new] == [d.num_edges for d in graphs]
        assert max_diff(ref, run(net, new)) < 1e-10, k


def _cube_symmetries():
    """The 48 symmetries of the cube as (axis permutation, reflected axes)."""
    for perm in itertools.permutations(range(3)):
        for flips in itertools.product([False, True], repeat=3):
            yield list(perm), flips


def test_invariant_model_cube_symmetries(graphs):
    net = model("invariant")
    ref = run(net, graphs[:2])
    ops = list(_cube_symmetries())
    assert len(ops) == 48
    worst = 0.0
    for perm, flips in ops:
        new = []
        for d in graphs[:2]:
            pos = d.pos[:, perm].clone()
            for axis, flip in enumerate(flips):
                if flip:  # x -> -x, wrapped back into [0, 1)
                    pos[:, axis] = torch.remainder(-pos[:, axis], 1.0)
            new.append(moved(d, pos))
        worst = max(worst, max_diff(ref, run(net, new)))
    assert worst < 1e-10


def _random_orthogonal(seed, det):
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.linalg.det(q) * det < 0:
        q[:, 0] = -q[:, 0]
    return q


@pytest.mark.parametrize("det", [1.0, -1.0])
def test_invariant_model_open_box_rotation_reflection(det):
    gs = [random_graph(40, seed, box_size=None) for seed in range(3)]
    net = model("invariant", box_size=None)
    ref = run(net, gs)
    q = _random_orthogonal(7, det)
    shift = torch.tensor([3.0, -1.5, 0.25], dtype=torch.float64)
    new = [moved(d, d.pos @ q.T + shift, box_size=None) for d in gs]
    assert [d.num_edges for d in new] == [d.num_edges for d in gs]
    assert max_diff(ref, run(net, new)) < 1e-10


def test_cartesian_model_is_not_rotation_invariant():
    gs = [random_graph(40, seed, box_size=None) for seed in range(3)]
    net = model("cartesian", box_size=None)
    ref = run(net, gs)
    q = _random_orthogonal(7, 1.0)
    new = [moved(d, d.pos @ q.T, box_size=None) for d in gs]
    assert max_diff(ref, run(net, new)) > 1e-4
    # ... and in the periodic box a cube symmetry (90 degrees about z) changes it too
    gs = [random_graph(40, seed) for seed in range(3)]
    net = model("cartesian")
    ref = run(net, gs)
    new = [moved(d, torch.stack([1.0 - d.pos[:, 1], d.pos[:, 0], d.pos[:, 2]], 1)) for d in gs]
    assert max_diff(ref, run(net, new)) > 1e-4


# --------------------------------------------------------------------------- degenerate graphs


def _odd_graphs(dtype=torch.float64):
    empty = graph(torch.zeros(0, 3, dtype=dtype), seed=1)
    single = graph(torch.tensor([[0.5, 0.5, 0.5]], dtype=dtype), seed=2)
    apart = graph(torch.tensor([[0.1, 0.1, 0.1], [0.6, 0.6, 0.6]], dtype=dtype), seed=3)
    assert empty.num_edges == single.num_edges == apart.num_edges == 0
    return [empty, single, apart]


@pytest.mark.parametrize("embedding", EMBEDDINGS)
def test_degenerate_graphs_give_finite_outputs(graphs, embedding):
    net = model(embedding)
    odd = _odd_graphs()
    mixed = [graphs[0], odd[0], odd[1], graphs[1], odd[2]]
    mean, std = run(net, mixed)
    assert mean.shape == std.shape == (5, 2)
    assert torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()
    # graphs do not interact: each prediction equals that of the graph alone
    for k, d in enumerate(mixed):
        alone = run(net, [d])
        assert max_diff((mean[k : k + 1], std[k : k + 1]), alone) < 1e-12
    # a single Data object (no batch vector) also works
    with torch.no_grad():
        one = net(odd[0])
    assert max_diff(one, run(net, [odd[0]])) < 1e-12


def test_float32_degenerate_batch_and_gradients():
    net = model("invariant", dtype=torch.float32)
    batch = Batch.from_data_list(_odd_graphs(torch.float32) + [random_graph(30, 5, torch.float32)])
    mean, std = net(batch)
    (mean.sum() + std.sum()).backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_pools_by_hand():
    """NodeModel / GlobalModel pooling with the MLPs replaced by the identity."""
    msgs = torch.tensor([[-1.0, -2.0], [-3.0, -0.5], [4.0, 1.0]])
    edge_index = torch.tensor([[1, 2, 0], [0, 0, 1]])  # node 0 gets msgs 0, 1; node 1 msg 2
    x = torch.tensor([[10.0], [20.0], [30.0]])
    nm = NodeModel(node_in=1, edge_in=2, hidden_size=4, node_out=7)
    nm.node_mlp = nn.Identity()
    out = nm(x, edge_index, msgs, None, None)
    expected = torch.tensor(
        [
            [-4.0, -2.5, -1.0, -0.5, -2.0, -1.25, 10.0],  # sum, max (not 0), mean, x
            [4.0, 1.0, 4.0, 1.0, 4.0, 1.0, 20.0],
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 30.0],  # no incoming edge: zeros, not -inf
        ]
    )
    torch.testing.assert_close(out, expected)

    gm = GlobalModel(node_in=2, global_in=1, hidden_size=4, global_out=7, sum_scale=0.5)
    gm.mlp = nn.Identity()
    h = torch.tensor([[-1.0, -2.0], [-3.0, -0.5], [5.0, 6.0]])
    batch = torch.tensor([0, 0, 2])  # graph 1 has no nodes
    u = torch.tensor([[0.1], [0.2], [0.3]])
    out = gm(h, None, None, u, batch)
    expected = torch.tensor(
        [
            [-2.0, -1.25, -2.0, -1.25, -1.0, -0.5, 0.1],  # sum * 0.5, mean, max, u
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.2],  # empty graph: 0 for max, not -inf
            [2.5, 3.0, 5.0, 6.0, 5.0, 6.0, 0.3],
        ]
    )
    torch.testing.assert_close(out, expected)


# --------------------------------------------------------------------------- layers, readout


def test_graph_layer_residual():
    torch.manual_seed(0)
    x, e = torch.randn(5, 6), torch.randn(4, 6)
    ei = torch.tensor([[0, 1, 2, 3], [1, 0, 3, 2]])
    layer = GraphLayer(6, 6, 8, 6, 6)
    assert layer.node_residual and layer.edge_residual
    x_new, e_new = layer(x, ei, e)
    x_inner, e_inner, _ = layer.layer(x, ei, e)
    torch.testing.assert_close(x_new, x + x_inner)
    torch.testing.assert_close(e_new, e + e_inner)
    first = GraphLayer(3, 4, 8, 6, 6)
    assert not first.node_residual and not first.edge_residual
    assert first(torch.randn(5, 3), ei, torch.randn(4, 4))[0].shape == (5, 6)


def test_readout_centred_on_prior_and_std_positive(graphs):
    net = model("invariant")
    last = net.readout.mlp[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    mean, std = run(net, graphs)
    centre = torch.tensor([sum(PRIOR_RANGES[p]) / 2 for p in ("sigma_8", "Omega_m")])
    half = torch.tensor([(PRIOR_RANGES[p][1] - PRIOR_RANGES[p][0]) / 2 for p in PRIOR_RANGES])
    torch.testing.assert_close(mean, centre.double().expand(3, 2))
    expected_std = half.double() * (torch.log(torch.tensor(2.0, dtype=torch.float64)) + 1e-4)
    torch.testing.assert_close(std, expected_std.expand(3, 2))
    with torch.no_grad():
        last.bias.fill_(-1e4)  # softplus underflows to 0: std stays > 0
    _, std = run(net, graphs)
    assert (std > 0).all()
    torch.testing.assert_close(std, (half.double() * 1e-4).expand(3, 2))


def test_invariant_distance_scaled_by_r_link():
    # two nodes 0.1 apart through the periodic boundary
    pos = torch.tensor([[0.02, 0.5, 0.5], [0.92, 0.5, 0.5]])
    ei = radius_graph(pos, R, box_size=1.0)
    assert ei.size(1) == 2
    emb = InvariantEmbedding(R, 4, 4, 8, box_size=1.0)
    f = emb.edge_inputs(pos, ei, None)
    torch.testing.assert_close(f[:, 0], torch.tensor([0.5, 0.5]))


def test_edges_longer_than_r_link_rejected():
    g = torch.Generator().manual_seed(0)
    pos = torch.rand(40, 3, generator=g)
    data = Data(
        x=torch.randn(40, 1),
        pos=pos,
        edge_index=radius_graph(pos, 0.3, box_size=1.0),
        u=torch.zeros(1, 1),
    )
    for emb in EMBEDDINGS:
        net = MPGNN(R, 4, 4, 8, 1, 1, embedding=emb)
        with pytest.raises(ValueError, match="r_link"):
            net(data)


def test_targets_and_names():
    assert target_columns("sigma8") == [0]
    assert target_columns("both") == [0, 1]
    assert TARGETS["both"] == ("sigma_8", "Omega_m")
    with pytest.raises(ValueError, match="sigma8.*both"):
        target_columns("omega")
    with pytest.raises(ValueError, match="cartesian.*invariant"):
        make_embedding("spherical", R, 4, 4, 8)
    with pytest.raises(ValueError, match="n_targets"):
        MPGNN(R, 4, 4, 8, 1, 3)
    net = MPGNN(R, 4, 4, 8, 1, 1)
    assert net.target_offset.tolist() == pytest.approx([0.8])
    with pytest.raises(ValueError, match="'u'"):
        net(Data(x=torch.zeros(2, 1), pos=torch.rand(2, 3), edge_index=torch.zeros(2, 0).long()))
    with pytest.raises(ValueError, match="data.x"):
        net(Data(x=torch.zeros(2, 2), pos=torch.rand(2, 3), edge_index=torch.zeros(2, 0).long()))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("embedding", EMBEDDINGS)
def test_cuda_matches_cpu(embedding):
    """The same weights give the same outputs and gradients on CUDA as on the CPU."""
    torch.manual_seed(0)
    model = MPGNN(R, 8, 8, 16, 2, n_targets=2, embedding=embedding)
    batch = Batch.from_data_list(
        [random_graph(n, seed=n, dtype=torch.float32) for n in (0, 1, 40, 90)]
    )
    outs = {}
    for device in ("cpu", "cuda"):
        m = copy.deepcopy(model).to(device)
        mean, std = m(batch.to(device))
        (mean.sum() + std.sum()).backward()
        grads = [p.grad.to("cpu", copy=True) for p in m.parameters()]
        outs[device] = (
            mean.detach().to("cpu", copy=True),
            std.detach().to("cpu", copy=True),
            grads,
        )
    for a, b in zip(outs["cpu"][:2], outs["cuda"][:2], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for a, b in zip(outs["cpu"][2], outs["cuda"][2], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_length_check_first_training_batch_and_eval():
    """On a GPU, edges longer than r_link are caught on the first training batch and on
    every batch in eval mode (later training batches skip the host-device sync)."""
    g = torch.Generator().manual_seed(0)
    pos = torch.rand(40, 3, generator=g)

    def data(r):
        ei = radius_graph(pos, r, box_size=1.0)
        return Data(x=torch.randn(40, 1), pos=pos, edge_index=ei, u=torch.zeros(1, 1)).cuda()

    good, bad = data(R), data(0.3)
    net = MPGNN(R, 4, 4, 8, 1, 1).cuda()
    for _ in range(2):  # a failed check is not counted as done
        with pytest.raises(ValueError, match="r_link"):
            net(bad)  # first training batch
    net = MPGNN(R, 4, 4, 8, 1, 1).cuda()
    net(good)
    net(bad)  # later training batches are not checked on a GPU
    net.eval()
    with pytest.raises(ValueError, match="r_link"):
        net(bad)


# --------------------------------------------------------------------------- ablation inputs


def ablation_model(inputs, seed=0):
    torch.manual_seed(seed)
    return MPGNN(R, 8, 8, 16, 2, 2, inputs=inputs).double()


def test_masses_only_model_sees_no_edges(graphs):
    """inputs="masses" is a Deep Set: moving the halos (graph rebuilt from the new
    positions), dropping or adding edges leaves the output unchanged; it equals the same
    weights run as the full model on graphs without edges; the masses still matter."""
    net = ablation_model("masses")
    ref = run(net, graphs)
    g = torch.Generator().manual_seed(7)
    shuffled = [
        moved(d, torch.rand(d.num_nodes, 3, generator=g, dtype=d.pos.dtype)) for d in graphs
    ]
    assert max(d.edge_index.size(1) for d in shuffled) > 0
    assert max_diff(run(net, shuffled), ref) < 1e-12
    no_edges = [Data(x=d.x, pos=d.pos, edge_index=d.edge_index[:, :0], u=d.u) for d in graphs]
    assert max_diff(run(net, no_edges), ref) < 1e-12
    full = ablation_model("all")
    full.load_state_dict(net.state_dict())
    assert max_diff(run(full, no_edges), ref) < 1e-12
    assert max_diff(run(full, graphs), ref) > 1e-4  # the full model does read the edges
    heavier = [Data(x=d.x + 0.5, pos=d.pos, edge_index=d.edge_index, u=d.u) for d in graphs]
    assert max_diff(run(net, heavier), ref) > 1e-4


def test_positions_only_model_gets_constant_node_features(graphs):
    """inputs="positions": the embedding's node input is the same for every halo, the
    output does not change with the masses or the halo-count feature u, and does change
    when the halos move."""
    net = ablation_model("positions")
    assert net.global_in == 0
    seen = []
    net.embedding.node_mlp.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    ref = run(net, graphs)
    assert seen and torch.equal(seen[0], torch.full_like(seen[0], float(seen[0][0, 0])))
    g = torch.Generator().manual_seed(3)
    other = [
        Data(
            x=torch.randn(d.num_nodes, 1, generator=g, dtype=d.x.dtype),
            pos=d.pos,
            edge_index=d.edge_index,
            u=torch.randn(1, 1, generator=g, dtype=d.x.dtype),
        )
        for d in graphs
    ]
    assert max_diff(run(net, other), ref) < 1e-12
    no_u = [Data(x=d.x, pos=d.pos, edge_index=d.edge_index) for d in graphs]
    assert max_diff(run(net, no_u), ref) < 1e-12
    shifted = [moved(d, torch.rand(d.num_nodes, 3, generator=g, dtype=d.pos.dtype)) for d in graphs]
    assert max_diff(run(net, shifted), ref) > 1e-4


def test_unknown_inputs_rejected():
    with pytest.raises(ValueError, match="inputs"):
        MPGNN(R, 8, 8, 16, 2, 1, inputs="velocities")
