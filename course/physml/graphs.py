r"""Radius graphs in an open or periodic box, and the edge features built on them.

physml owns its graph construction: PyG 2.8's :func:`torch_geometric.nn.radius_graph` needs
``pyg-lib`` (not on PyPI), and torch-cluster (an optional extra, ``pip install
physml[cluster]``) caps every node at ``max_num_neighbors=32`` by default, silently dropping
edges in dense regions. :func:`radius_graph` here has **no neighbour cap**.

Conventions (PyG, ``flow="source_to_target"``):

* ``edge_index[0]`` is the source :math:`j` (the neighbour), ``edge_index[1]`` the target
  :math:`i` (the centre that receives the message);
* every undirected pair appears in both directions, edges are sorted by target, then source;
* two nodes are connected when their (minimum-image) distance is *strictly* less than ``r``.
  All backends decide this with the same float64 arithmetic, so they return identical
  tensors.

Lengths (``pos``, ``r``, ``box_size``) are in any one unit; physml's catalogs use box units.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "BACKENDS",
    "EDGE_FEATURE_KINDS",
    "available_backends",
    "cartesian_edge_features",
    "edge_features",
    "edge_features_unchecked",
    "graph_centres",
    "invariant_edge_features",
    "minimum_image",
    "radius_graph",
]

BACKENDS = ("auto", "kdtree", "torch", "cluster")
EDGE_FEATURE_KINDS = ("cartesian", "invariant")

# Pair entries (rows x columns) evaluated at once by the "torch" backend: ~3 float64 tensors
# of this many entries are alive at a time, i.e. ~50 MB.
_BLOCK_PAIRS = 2**21
# Candidate searches ("kdtree", "cluster") use a slightly larger radius; the exact float64
# test d^2 < r^2 is then applied to the candidates.
_CANDIDATE_SLACK = 1e-5


# --------------------------------------------------------------------------- helpers


def _has_torch_cluster() -> bool:
    try:
        import torch_cluster  # noqa: F401
    except ImportError:
        return False
    return True


def available_backends() -> list[str]:
    r"""Concrete backends usable in this environment (``"cluster"`` only if installed)."""
    out = ["kdtree", "torch"]
    if _has_torch_cluster():
        out.append("cluster")
    return out


def minimum_image(d: Tensor, box_size: float | None = None) -> Tensor:
    r"""Minimum-image convention for displacements in a periodic cube.

    Args:
        d: ``[..., 3]`` (any shape) float, displacements, length units.
        box_size: side :math:`L` of the periodic cube, same units, or ``None`` (open box).

    Returns:
        ``d - L * round(d / L)``, same shape and dtype, each component in :math:`[-L/2, L/2]`;
        ``d`` itself when ``box_size`` is ``None``.
    """
    if box_size is None:
        return d
    return d - box_size * torch.round(d / box_size)


def _sq_dist(xj: Tensor, xi: Tensor, box_size: float | None) -> Tensor:
    """Squared minimum-image distance |x_j - x_i|^2, inputs ``[..., 3]`` broadcastable.

    The one arithmetic every backend uses for the final ``d^2 < r^2`` decision (float64,
    components summed in order x, y, z), so that the backends agree bit for bit.
    """
    d2 = None
    for k in range(3):
        d = minimum_image(xj[..., k] - xi[..., k], box_size)
        d2 = d * d if d2 is None else d2 + d * d
    return d2


def _check_pos(pos: Tensor, name: str = "pos") -> None:
    if not isinstance(pos, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape [N, 3], got {type(pos)}")
    if pos.dim() != 2 or pos.size(1) != 3:
        raise ValueError(f"{name}: expected shape [N, 3], got {list(pos.shape)}")
    if not pos.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got {pos.dtype}")


def _check_box(box_size) -> float | None:
    if box_size is None:
        return None
    box = float(box_size)
    if not math.isfinite(box) or box <= 0:
        raise ValueError(f"box_size: expected None or a finite float > 0, got {box_size!r}")
    return box


def _check_batch(batch: Tensor | None, pos: Tensor) -> Tensor | None:
    if batch is None:
        return None
    if not isinstance(batch, Tensor):
        raise TypeError(f"batch: expected a torch.Tensor of shape [N], got {type(batch)}")
    if batch.dim() != 1 or batch.numel() != pos.size(0):
        raise ValueError(f"batch: expected shape [{pos.size(0)}], got {list(batch.shape)}")
    if batch.is_floating_point() or batch.is_complex() or batch.dtype == torch.bool:
        raise ValueError(f"batch: expected an integer (long) tensor, got {batch.dtype}")
    if batch.device != pos.device:
        raise ValueError(f"batch: on {batch.device}, expected pos's device {pos.device}")
    if batch.numel() and int(batch.min()) < 0:
        raise ValueError("batch: graph ids must be >= 0")
    return batch.long()


def _graph_slices(batch: Tensor | None, n: int) -> tuple[Tensor | None, list[int]]:
    """Permutation that sorts nodes by graph (stable) and the node count of each graph."""
    if batch is None:
        return None, [n]
    perm = torch.argsort(batch, stable=True)
    counts = torch.bincount(batch)
    return perm, [c for c in counts.tolist() if c > 0]


# --------------------------------------------------------------------------- backends


def _pairs_kdtree(pos64: Tensor, batch, r: float, box: float | None) -> tuple[Tensor, Tensor]:
    from scipy.spatial import cKDTree

    x = pos64.detach().cpu()
    perm, counts = _graph_slices(None if batch is None else batch.cpu(), x.size(0))
    xs = x if perm is None else x[perm]
    xs_np = xs.numpy()
    src, dst = [], []
    start = 0
    for n in counts:
        if n > 1:
            xg = xs_np[start : start + n]
            if box is not None:
                xg = np.mod(xg, box)  # cKDTree needs data in [0, box)
                xg[xg >= box] = 0.0
            tree = cKDTree(xg, boxsize=box)
            pairs = tree.query_pairs(r * (1 + _CANDIDATE_SLACK), output_type="ndarray")
            if len(pairs):
                p = torch.from_numpy(pairs.astype(np.int64)) + start
                src.append(p[:, 0])
                dst.append(p[:, 1])
        start += n
    if not src:
        empty = torch.empty(0, dtype=torch.long)
        return empty, empty
    a, b = torch.cat(src), torch.cat(dst)
    keep = _sq_dist(xs[a], xs[b], box) < r * r
    a, b = a[keep], b[keep]
    if perm is not None:
        a, b = perm[a], perm[b]
    return torch.cat([a, b]), torch.cat([b, a])


def _pairs_torch(pos64: Tensor, batch, r: float, box: float | None) -> tuple[Tensor, Tensor]:
    device = pos64.device
    n_all = pos64.size(0)
    perm, counts = _graph_slices(batch, n_all)
    xs = pos64 if perm is None else pos64[perm]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    order = np.argsort(counts, kind="stable")  # small graphs first, packed together

    # Groups of graphs padded to a common size M, with G * M * M <= _BLOCK_PAIRS (a graph
    # larger than that forms a group of its own and is processed in blocks of rows).
    groups, cur = [], []
    for g in order:
        if counts[g] < 2:
            continue
        if cur and (len(cur) + 1) * counts[g] ** 2 > _BLOCK_PAIRS:
            groups.append(cur)
            cur = []
        cur.append(g)
    if cur:
        groups.append(cur)

    r2 = r * r
    src, dst = [], []
    for grp in groups:
        sizes = torch.tensor([counts[g] for g in grp], device=device)
        offs = torch.tensor(starts[grp], device=device)
        m = max(counts[g] for g in grp)
        ar = torch.arange(m, device=device)
        valid = ar[None, :] < sizes[:, None]  # [G, M]
        idx = torch.where(valid, offs[:, None] + ar[None, :], 0)  # [G, M]
        x = xs[idx]  # [G, M, 3]
        rows = max(1, _BLOCK_PAIRS // (len(grp) * m))
        for a in range(0, m, rows):
            b = min(m, a + rows)
            d2 = _sq_dist(x[:, None, :, :], x[:, a:b, None, :], box)  # [G, R, M]
            hit = (d2 < r2) & valid[:, a:b, None] & valid[:, None, :]
            hit &= (ar[a:b, None] != ar[None, :])[None]
            g, i, j = hit.nonzero(as_tuple=True)
            dst.append(offs[g] + a + i)
            src.append(offs[g] + j)
    if not src:
        empty = torch.empty(0, dtype=torch.long, device=device)
        return empty, empty
    s, t = torch.cat(src), torch.cat(dst)
    if perm is not None:
        s, t = perm[s], perm[t]
    return s, t


def _pairs_cluster(pos: Tensor, batch, r: float) -> tuple[Tensor, Tensor]:
    import torch_cluster

    perm, counts = _graph_slices(batch, pos.size(0))
    xs = pos if perm is None else pos[perm]
    bs = None if perm is None else batch[perm]  # torch_cluster wants a sorted batch vector
    ei = torch_cluster.radius_graph(
        xs,
        r * (1 + _CANDIDATE_SLACK),
        batch=bs,
        loop=False,
        max_num_neighbors=max(counts) + 1,  # large enough that nothing is dropped
        flow="source_to_target",
    )
    s, t = ei[0], ei[1]
    x64 = xs.double()
    keep = _sq_dist(x64[s], x64[t], None) < r * r
    s, t = s[keep], t[keep]
    if perm is not None:
        s, t = perm[s], perm[t]
    return s, t


# --------------------------------------------------------------------------- radius graph


def radius_graph(
    pos: Tensor,
    r: float,
    box_size: float | None = None,
    batch: Tensor | None = None,
    loop: bool = False,
    backend: str = "auto",
) -> Tensor:
    r"""Connects every pair of nodes of the same graph closer than ``r``.

    There is **no neighbour cap**: unlike torch-cluster's default ``max_num_neighbors=32``,
    which silently drops edges, every pair at distance :math:`< r` is returned. (PyG 2.8's
    own ``radius_graph`` needs ``pyg-lib``, which is not on PyPI; hence physml owns this.)

    Args:
        pos: ``[N, 3]`` float, node positions, length units. With ``box_size`` set they are
            assumed in :math:`[0, L)`; other values are read modulo :math:`L`.
        r: linking radius, same units; pairs with distance :math:`d_{ij} < r` (strict).
        box_size: side :math:`L` of a periodic cube (minimum-image distances, requires
            :math:`r < L/2`), or ``None`` for open boundaries.
        batch: ``[N]`` long, graph id of each node (sorted or not); edges never cross graphs.
        loop: if ``True``, also adds the self-loop :math:`(i, i)` of every node.
        backend: ``"auto"``, ``"kdtree"`` (scipy ``cKDTree`` on CPU, per graph),
            ``"torch"`` (blockwise all pairs, any device, bounded memory) or ``"cluster"``
            (torch-cluster, open boundaries only). ``"auto"`` picks ``"kdtree"`` for CPU
            tensors, ``"cluster"`` for open-boundary CUDA tensors when torch-cluster is
            installed, ``"torch"`` otherwise.

    Returns:
        ``edge_index``: ``[2, E]`` long on ``pos.device``; row 0 = source :math:`j`
        (neighbour), row 1 = target :math:`i` (centre), sorted by target then source, both
        directions of every pair. All backends return the same tensor.

    Example:
        >>> pos = torch.tensor([[0.01, 0.5, 0.5], [0.99, 0.5, 0.5]])
        >>> radius_graph(pos, 0.05, box_size=1.0)
        tensor([[1, 0],
                [0, 1]])
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    _check_pos(pos)
    r = float(r)
    if not math.isfinite(r) or r <= 0:
        raise ValueError(f"r: expected a finite float > 0, got {r!r}")
    box = _check_box(box_size)
    if box is not None and not r < box / 2:
        raise ValueError(
            f"r = {r} must be < box_size / 2 = {box / 2}: otherwise the minimum image is "
            "ambiguous (a pair would be linked through more than one periodic image)"
        )
    batch = _check_batch(batch, pos)
    if pos.numel() and not bool(torch.isfinite(pos).all()):
        raise ValueError("pos: contains NaN or inf")

    if backend == "auto":
        if pos.device.type == "cpu":
            backend = "kdtree"
        elif box is None and pos.device.type == "cuda" and _has_torch_cluster():
            backend = "cluster"
        else:
            backend = "torch"
    if backend == "cluster":
        if not _has_torch_cluster():
            raise ImportError(
                "backend='cluster' needs torch-cluster: pip install physml[cluster] "
                "(or use backend='torch' / 'kdtree')"
            )
        if box is not None:
            raise ValueError(
                "backend='cluster' supports open boundaries only (box_size=None); "
                "use backend='torch' or 'kdtree' for a periodic box"
            )

    n = pos.size(0)
    device = pos.device
    if n < 2:
        src = dst = torch.empty(0, dtype=torch.long, device=device)
    elif backend == "kdtree":
        src, dst = _pairs_kdtree(pos.double(), batch, r, box)
        src, dst = src.to(device), dst.to(device)
    elif backend == "torch":
        src, dst = _pairs_torch(pos.detach().double(), batch, r, box)
    else:
        src, dst = _pairs_cluster(pos.detach(), batch, r)

    if loop:
        ar = torch.arange(n, device=device)
        src, dst = torch.cat([src, ar]), torch.cat([dst, ar])
    key = dst * max(n, 1) + src
    key, order = torch.sort(key)
    return torch.stack([src[order], dst[order]])


# --------------------------------------------------------------------------- edge features


def _check_edge_index(edge_index: Tensor, pos: Tensor) -> None:
    if not isinstance(edge_index, Tensor):
        raise TypeError(f"edge_index: expected a torch.Tensor [2, E], got {type(edge_index)}")
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"edge_index: expected shape [2, E], got {list(edge_index.shape)}")
    if edge_index.dtype != torch.long:
        raise ValueError(f"edge_index: expected dtype torch.long, got {edge_index.dtype}")
    if edge_index.device != pos.device:
        raise ValueError(f"edge_index: on {edge_index.device}, expected {pos.device}")
    if edge_index.numel():
        lo, hi = int(edge_index.min()), int(edge_index.max())
        if lo < 0 or hi >= pos.size(0):
            raise ValueError(f"edge_index: node ids must lie in [0, {pos.size(0)}), got {lo}..{hi}")


def cartesian_edge_features(
    pos: Tensor, edge_index: Tensor, box_size: float | None = None
) -> Tensor:
    r"""Edge displacement vectors :math:`\mathbf{r}_{ij} = \mathbf{x}_j - \mathbf{x}_i`.

    Source minus target, ``pos[edge_index[0]] - pos[edge_index[1]]``, as the source
    notebook's ``pos[senders] - pos[receivers]``; minimum image when periodic. Not rotation
    invariant (rotates with the positions).

    Args:
        pos: ``[N, 3]`` float, node positions, length units.
        edge_index: ``[2, E]`` long, row 0 = source :math:`j`, row 1 = target :math:`i`.
        box_size: side of the periodic cube, same units, or ``None``.

    Returns:
        ``[E, 3]``, same dtype and device as ``pos``, length units.
    """
    _check_pos(pos)
    _check_edge_index(edge_index, pos)
    return _cartesian(pos, edge_index, _check_box(box_size))


def _cartesian(pos: Tensor, edge_index: Tensor, box: float | None) -> Tensor:
    """:func:`cartesian_edge_features` without the input checks."""
    return minimum_image(pos[edge_index[0]] - pos[edge_index[1]], box)


def graph_centres(
    pos: Tensor,
    batch: Tensor | None = None,
    box_size: float | None = None,
    num_graphs: int | None = None,
) -> Tensor:
    r"""Centre :math:`\hat{\mathbf{x}}` of each graph.

    Open boundaries: the centroid (mean position). Periodic cube of side :math:`L`: the
    *circular mean* per axis, :math:`\hat{x} = \frac{L}{2\pi}\,\mathrm{atan2}(\langle\sin
    \theta\rangle, \langle\cos\theta\rangle) \bmod L` with :math:`\theta = 2\pi x/L`. A plain
    mean is not translation invariant under wrapping; the circular mean moves by exactly the
    translation (mod :math:`L`), and maps with the cube's symmetries (90° rotations, axis
    reflections and permutations). A graph with no nodes gets centre 0.

    Args:
        pos: ``[N, 3]`` float, node positions, length units.
        batch: ``[N]`` long graph ids, or ``None`` (one graph).
        box_size: side :math:`L` of the periodic cube, or ``None``.
        num_graphs: :math:`B`; default ``batch.max() + 1`` (1 without ``batch``).

    Returns:
        ``[B, 3]``, same dtype and device as ``pos``, length units.
    """
    _check_pos(pos)
    box = _check_box(box_size)
    batch = _check_batch(batch, pos)
    if batch is not None and num_graphs is None:
        num_graphs = int(batch.max()) + 1 if batch.numel() else 0
    return _centres(pos, batch, box, num_graphs)


def _centres(pos: Tensor, batch: Tensor | None, box: float | None, num_graphs: int | None):
    """:func:`graph_centres` without the input checks. Without ``num_graphs`` it returns one
    row per node (an upper bound on the graph count: rows past the last graph are unused),
    so that nothing is read back from the device."""
    if batch is None:
        batch = torch.zeros(pos.size(0), dtype=torch.long, device=pos.device)
        num_graphs = 1 if num_graphs is None else num_graphs
    elif num_graphs is None:
        num_graphs = batch.numel()
    if box is None:
        count = torch.zeros(num_graphs, dtype=pos.dtype, device=pos.device)
        count.index_add_(0, batch, torch.ones_like(pos[:, 0]))
        s = torch.zeros(num_graphs, 3, dtype=pos.dtype, device=pos.device)
        s.index_add_(0, batch, pos)
        return s / count.clamp_min(1)[:, None]
    theta = pos * (2 * math.pi / box)
    sin = torch.zeros(num_graphs, 3, dtype=pos.dtype, device=pos.device)
    cos = torch.zeros_like(sin)
    sin.index_add_(0, batch, torch.sin(theta))
    cos.index_add_(0, batch, torch.cos(theta))
    return torch.remainder(torch.atan2(sin, cos) * (box / (2 * math.pi)), box)


def invariant_edge_features(
    pos: Tensor,
    edge_index: Tensor,
    batch: Tensor | None = None,
    box_size: float | None = None,
    eps: float = 1e-8,
) -> Tensor:
    r"""Rotation- and translation-invariant edge features, as in the source notebook.

    With :math:`j` = ``edge_index[0]`` (source), :math:`i` = ``edge_index[1]`` (target),
    :math:`\mathbf{r} = \mathbf{x}_j - \mathbf{x}_i` (minimum image, see
    :func:`cartesian_edge_features`), :math:`d = |\mathbf{r}|`,
    :math:`\mathbf{n} = \mathbf{r}/d`, and
    :math:`\mathbf{p}_k = (\mathbf{x}_k - \hat{\mathbf{x}}) / |\mathbf{x}_k - \hat{\mathbf{x}}|`
    the unit vector from the graph's centre (:func:`graph_centres`; minimum image when
    periodic), the features are

    .. math::
        (d,\; \mathbf{p}_j \cdot \mathbf{p}_i,\; \mathbf{p}_j \cdot \mathbf{n}),

    i.e. the source notebook's ``(dist, unitrow . unitcol, unitrow . unitdiff)`` with
    ``row = edge_index[0]``. Invariant under rotations and reflections about the centre and
    translations (open box); in a periodic box under translations with wrap-around and the
    cube's symmetries (90° rotations, axis reflections and permutations), which are the exact
    symmetries there. Zero lengths (self-loops, a node at the centre) are divided by ``eps``
    instead, giving 0 rather than NaN.

    Args:
        pos: ``[N, 3]`` float, node positions, length units.
        edge_index: ``[2, E]`` long.
        batch: ``[N]`` long graph ids, or ``None`` (one graph).
        box_size: side of the periodic cube, or ``None``.
        eps: floor on lengths used as divisors, length units.

    Returns:
        ``[E, 3]``, same dtype and device as ``pos``: column 0 in length units, columns 1-2
        dimensionless in :math:`[-1, 1]`.
    """
    _check_pos(pos)
    _check_edge_index(edge_index, pos)
    return _invariant(pos, edge_index, _check_batch(batch, pos), _check_box(box_size), eps)


def _invariant(
    pos: Tensor, edge_index: Tensor, batch: Tensor | None, box: float | None, eps: float = 1e-8
) -> Tensor:
    """:func:`invariant_edge_features` without the input checks."""
    src, dst = edge_index[0], edge_index[1]
    rel = minimum_image(pos[src] - pos[dst], box)
    d = torch.linalg.vector_norm(rel, dim=-1)
    n = rel / d.clamp_min(eps)[:, None]
    centres = _centres(pos, batch, box, None)
    p = minimum_image(pos - (centres[0] if batch is None else centres[batch]), box)
    p = p / torch.linalg.vector_norm(p, dim=-1, keepdim=True).clamp_min(eps)
    return torch.stack([d, (p[src] * p[dst]).sum(-1), (p[src] * n).sum(-1)], dim=-1)


def edge_features(
    kind: str,
    pos: Tensor,
    edge_index: Tensor,
    batch: Tensor | None = None,
    box_size: float | None = None,
) -> Tensor:
    r"""Edge features by name: ``"cartesian"`` (:func:`cartesian_edge_features`) or
    ``"invariant"`` (:func:`invariant_edge_features`).

    Args:
        kind: one of :data:`EDGE_FEATURE_KINDS`.
        pos: ``[N, 3]`` float, node positions, length units.
        edge_index: ``[2, E]`` long, row 0 = source, row 1 = target.
        batch: ``[N]`` long graph ids, or ``None``; used by ``"invariant"`` only.
        box_size: side of the periodic cube, or ``None``.

    Returns:
        ``[E, 3]``, same dtype and device as ``pos``.
    """
    if kind == "cartesian":
        return cartesian_edge_features(pos, edge_index, box_size)
    if kind == "invariant":
        return invariant_edge_features(pos, edge_index, batch, box_size)
    raise ValueError(f"kind: expected one of {EDGE_FEATURE_KINDS}, got {kind!r}")


def edge_features_unchecked(
    kind: str,
    pos: Tensor,
    edge_index: Tensor,
    batch: Tensor | None = None,
    box_size: float | None = None,
) -> Tensor:
    r""":func:`edge_features` without the input checks, for the hot path of a model whose
    inputs were built (and checked) once, e.g. by :class:`physml.graphdata.HaloDataset`:
    it reads nothing back from the device. ``batch`` must be a long tensor and
    ``box_size`` ``None`` or a positive float; bad input gives wrong results or an
    indexing error here, where :func:`edge_features` would say what is wrong."""
    if kind == "cartesian":
        return _cartesian(pos, edge_index, box_size)
    if kind == "invariant":
        return _invariant(pos, edge_index, batch, box_size)
    raise ValueError(f"kind: expected one of {EDGE_FEATURE_KINDS}, got {kind!r}")
