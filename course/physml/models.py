r"""Message-passing graph neural networks for halo catalogs (edge / node / global models).

The network of the source notebook, in PyTorch Geometric style:

.. code-block:: text

    (x, pos, edge_index, u) --embedding--> (h, e) --GraphLayer x n_layers--> (h, e)
                            --GlobalModel(h, u)--> (mean, std) per graph and target

* the **embedding** turns the node feature (standardised log10 halo mass) and an edge
  feature computed from the positions (Cartesian displacement :math:`\mathbf{r}_{ij}`, or the
  rotation-invariant :math:`(d_{ij}, \mathbf{p}_i\cdot\mathbf{p}_j,
  \mathbf{p}_i\cdot\mathbf{n}_{ij})` of Task 1, see :mod:`physml.graphs`) into vectors;
* each :class:`GraphLayer` updates every edge from its two end nodes (:class:`EdgeModel`)
  and then every node from the sum, max and mean of its incoming edges
  (:class:`NodeModel`, "multipooling");
* the :class:`GlobalModel` pools the nodes of each graph (sum, mean, max), appends the graph
  feature ``u`` (standardised log10 of the number of halos) and predicts a mean and a
  standard deviation per target.

Unlike the source notebook, the graph is **not** rebuilt inside ``forward``: ``edge_index``
is precomputed once per catalog (periodic radius graph, :func:`physml.graphs.radius_graph`)
and stored in the data. ``r_link`` is the radius those graphs were built with; the model
records it, scales distances by it and checks that no edge is longer.

Conventions (PyG, ``flow="source_to_target"``): ``edge_index[0]`` is the source :math:`j`,
``edge_index[1]`` the target :math:`i` that receives the message. Positions are in box units
of a periodic unit cube (``box_size=1.0``) or, with ``box_size=None``, in an open volume.
"""

from __future__ import annotations

import abc

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import MetaLayer, global_add_pool, global_max_pool, global_mean_pool

from physml.aggregation import Incidence, gather, scatter_max, scatter_sum
from physml.cosmology import PRIOR_RANGES
from physml.graphs import edge_features_unchecked
from physml.settings import TARGETS, Y_COLUMNS

__all__ = [
    "EMBEDDINGS",
    "INPUTS",
    "PRIOR_RANGES",
    "TARGETS",
    "Y_COLUMNS",
    "CartesianEmbedding",
    "EdgeModel",
    "GlobalModel",
    "GraphLayer",
    "InvariantEmbedding",
    "MPGNN",
    "NodeModel",
    "gaussian_output",
    "make_embedding",
    "prior_centre_and_halfwidth",
    "target_columns",
]

# Y_COLUMNS (columns of ``data.y``) and TARGETS (target name -> parameters predicted, a
# prefix of Y_COLUMNS) live in physml.settings and are re-exported here.
#: Accepted embedding names.
EMBEDDINGS = ("cartesian", "invariant")
#: What an :class:`MPGNN` reads (the information ablation): ``"all"`` (masses, positions
#: and the halo count), ``"positions"`` (the graph only: every node feature set to the same
#: constant, no halo-count graph feature) or ``"masses"`` (no edges: each halo sees only
#: itself before the global pooling, a Deep Set on the masses, with the halo count).
INPUTS = ("all", "positions", "masses")

# Relative slack on "no edge longer than r_link" (float32 recomputation of float64 lengths).
_RADIUS_SLACK = 1e-3


def target_columns(target: str) -> list[int]:
    r"""Columns of ``data.y`` predicted for a target name.

    Args:
        target: ``"sigma8"`` (:math:`\sigma_8` only) or ``"both"`` (:math:`\sigma_8,
            \Omega_m`), a key of :data:`TARGETS`.

    Returns:
        Column indices into ``y`` (``[0]`` or ``[0, 1]``).
    """
    if target not in TARGETS:
        raise ValueError(f"target: expected one of {tuple(TARGETS)}, got {target!r}")
    return [Y_COLUMNS.index(name) for name in TARGETS[target]]


def prior_centre_and_halfwidth(n_targets: int) -> tuple[Tensor, Tensor]:
    """Centre ``c`` and half-width ``s`` (``[n_targets]`` each) of the prior ranges of the
    first ``n_targets`` columns of ``y`` (:data:`PRIOR_RANGES`)."""
    lo_hi = torch.tensor([PRIOR_RANGES[n] for n in Y_COLUMNS[:n_targets]])
    return lo_hi.mean(dim=1), (lo_hi[:, 1] - lo_hi[:, 0]) / 2


def gaussian_output(raw: Tensor, centre: Tensor, halfwidth: Tensor) -> tuple[Tensor, Tensor]:
    r"""Raw readout ``[B, 2T]`` = :math:`(a, b)` to :math:`\mu = c + s\,a` and
    :math:`\sigma = s\,(\mathrm{softplus}(b) + 10^{-4})`, ``[B, T]`` each, with
    :math:`c, s` from :func:`prior_centre_and_halfwidth`: physical units, ``std > 0``."""
    t = centre.numel()
    mean = centre + halfwidth * raw[:, :t]
    std = halfwidth * (F.softplus(raw[:, t:]) + 1e-4)
    return mean, std


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    """Linear -> ReLU -> Linear."""
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out))


def _check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
    return value


# --------------------------------------------------------------------------- embeddings


class _Embedding(nn.Module, abc.ABC):
    r"""Shared part of the embeddings: node MLP on ``x``, edge MLP on 3 edge features.

    Subclasses define :meth:`edge_inputs` (``[E, 3]`` features from the positions).
    """

    kind = ""

    def __init__(
        self,
        r_link: float,
        node_emb_size: int,
        edge_emb_size: int,
        hidden_size: int,
        box_size: float | None = 1.0,
        node_in: int = 1,
    ):
        super().__init__()
        r_link = float(r_link)
        if not r_link > 0:
            raise ValueError(f"r_link: expected a float > 0, got {r_link!r}")
        self.r_link = r_link
        self.box_size = None if box_size is None else float(box_size)
        self.node_mlp = _mlp(node_in, hidden_size, node_emb_size)
        self.edge_mlp = _mlp(3, hidden_size, edge_emb_size)
        self._lengths_checked = False  # see _check_lengths

    def extra_repr(self) -> str:
        return f"r_link={self.r_link}, box_size={self.box_size}"

    @abc.abstractmethod
    def edge_inputs(self, pos: Tensor, edge_index: Tensor, batch: Tensor | None) -> Tensor:
        """Raw edge features ``[E, 3]`` (defined by each embedding)."""

    def _check_lengths(self, d: Tensor) -> None:
        """Raises if an edge is longer than ``r_link``. Reading the maximum back makes the
        host wait for the device, which costs a GPU training step about a quarter of its
        time; so on a GPU (or any device but the CPU) the check runs on the first training
        batch, where graphs built with another radius show up, and on every batch in eval
        mode (evaluation of a checkpoint on foreign graphs); on the CPU on every batch."""
        once = d.device.type != "cpu" and self.training
        if once and getattr(self, "_lengths_checked", False):
            return
        if d.numel() and float(d.max()) > self.r_link * (1 + _RADIUS_SLACK):
            raise ValueError(
                f"edge_index has an edge of length {float(d.max()):.6g} > r_link = "
                f"{self.r_link} (box units): the graphs were built with a larger radius than "
                "this model's r_link; rebuild them or set r_link to the radius used"
            )
        if once:
            self._lengths_checked = True  # only once a batch has passed

    def forward(
        self, x: Tensor, pos: Tensor, edge_index: Tensor, batch: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        r"""Embeds nodes and edges.

        Args:
            x: ``[N, node_in]`` node features (standardised log10 mass).
            pos: ``[N, 3]`` positions, box units.
            edge_index: ``[2, E]`` long, the precomputed radius graph.
            batch: ``[N]`` long graph ids, or ``None`` (one graph).

        Returns:
            ``h``: ``[N, node_emb_size]``; ``e``: ``[E, edge_emb_size]``.
        """
        return self.node_mlp(x), self.edge_mlp(self.edge_inputs(pos, edge_index, batch))


class CartesianEmbedding(_Embedding):
    r"""Edge features :math:`\mathbf{r}_{ij}/r_\mathrm{link}`, :math:`\mathbf{r}_{ij} =
    \mathbf{x}_j - \mathbf{x}_i` (minimum image when periodic), as in the source notebook.

    Translation invariant, **not** rotation invariant: the features rotate with the
    catalog. Node features go through an MLP to ``node_emb_size``, edge features to
    ``edge_emb_size``. Dividing by ``r_link`` puts the components in :math:`[-1, 1]`.
    """

    kind = "cartesian"

    def edge_inputs(self, pos: Tensor, edge_index: Tensor, batch: Tensor | None) -> Tensor:
        """``[E, 3]`` displacements source - target in units of ``r_link``."""
        r = edge_features_unchecked("cartesian", pos, edge_index, box_size=self.box_size)
        self._check_lengths(torch.linalg.vector_norm(r.detach(), dim=-1))
        return r / self.r_link


class InvariantEmbedding(_Embedding):
    r"""Edge features :math:`(d_{ij}/r_\mathrm{link},\ \mathbf{p}_i\cdot\mathbf{p}_j,\
    \mathbf{p}_i\cdot\mathbf{n}_{ij})` of Task 1 (see
    :func:`physml.graphs.invariant_edge_features`; :math:`\mathbf{p}` are unit vectors from
    each graph's centre).

    Invariant under node permutations and, in a periodic box, translations with wrap-around
    and the 48 symmetries of the cube; with ``box_size=None`` under any rotation, reflection
    and translation. Distances are divided by ``r_link`` so that all three features lie in
    :math:`[-1, 1]`.
    """

    kind = "invariant"

    def edge_inputs(self, pos: Tensor, edge_index: Tensor, batch: Tensor | None) -> Tensor:
        """``[E, 3]`` invariant features, distance in units of ``r_link``."""
        f = edge_features_unchecked(
            "invariant", pos, edge_index, batch=batch, box_size=self.box_size
        )
        self._check_lengths(f[:, 0].detach())
        return torch.cat([f[:, :1] / self.r_link, f[:, 1:]], dim=-1)


_EMBEDDING_CLASSES = {"cartesian": CartesianEmbedding, "invariant": InvariantEmbedding}


def make_embedding(
    kind: str,
    r_link: float,
    node_emb_size: int,
    edge_emb_size: int,
    hidden_size: int,
    box_size: float | None = 1.0,
    node_in: int = 1,
) -> _Embedding:
    """Embedding by name: ``"cartesian"`` (:class:`CartesianEmbedding`) or ``"invariant"``
    (:class:`InvariantEmbedding`); arguments as their constructors."""
    if kind not in _EMBEDDING_CLASSES:
        raise ValueError(f"embedding: expected one of {EMBEDDINGS}, got {kind!r}")
    return _EMBEDDING_CLASSES[kind](
        r_link, node_emb_size, edge_emb_size, hidden_size, box_size=box_size, node_in=node_in
    )


# --------------------------------------------------------------------------- blocks


class EdgeModel(nn.Module):
    r"""Edge update :math:`\mathbf{e}'_{ij} = \mathrm{MLP}([\mathbf{h}_j, \mathbf{h}_i,
    \mathbf{e}_{ij}])`, with :math:`j` the source and :math:`i` the target.

    Args:
        node_in: node feature size :math:`F_x`.
        edge_in: edge feature size :math:`F_e`.
        hidden_size: MLP hidden width.
        edge_out: output edge feature size.
    """

    def __init__(self, node_in: int, edge_in: int, hidden_size: int, edge_out: int):
        super().__init__()
        self.edge_mlp = _mlp(2 * node_in + edge_in, hidden_size, edge_out)

    def forward(
        self, src: Tensor, dst: Tensor, edge_attr: Tensor, u: Tensor | None, batch: Tensor | None
    ) -> Tensor:
        r"""
        Args:
            src: ``[E, F_x]`` features of each edge's source node.
            dst: ``[E, F_x]`` features of each edge's target node.
            edge_attr: ``[E, F_e]``.
            u: ``[B, F_u]`` or ``None`` (unused).
            batch: ``[E]`` graph id of each edge, or ``None`` (unused).

        Returns:
            ``[E, edge_out]``.
        """
        return self.edge_mlp(torch.cat([src, dst, edge_attr], dim=1))

    def message(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_attr: Tensor,
        sources: Incidence | None = None,
        targets: Incidence | None = None,
    ) -> Tensor:
        r"""The same edge update from node features and the graph:
        ``forward(x[edge_index[0]], x[edge_index[1]], edge_attr)`` up to float rounding,
        with the same parameters, computed faster.

        The first linear layer splits as :math:`W[\mathbf{h}_j, \mathbf{h}_i,
        \mathbf{e}_{ij}] = (W_s\mathbf{h})_j + (W_d\mathbf{h})_i + W_e\mathbf{e}_{ij}`, so
        the node terms are computed once per node (:math:`N` rows instead of :math:`2E`;
        a halo graph has :math:`E \approx 18N`) and gathered onto the edges with
        :func:`physml.aggregation.gather`; no ``[E, 2F_x + F_e]`` concatenation is built.

        Args:
            x: ``[N, F_x]``.
            edge_index: ``[2, E]`` long (row 0 source :math:`j`, row 1 target :math:`i`).
            edge_attr: ``[E, F_e]``.
            sources, targets: :class:`~physml.aggregation.Incidence` of ``edge_index[0]``
                and ``edge_index[1]``, or ``None`` to build them here.

        Returns:
            ``[E, edge_out]``.
        """
        if sources is None:
            sources = Incidence(edge_index[0], x.size(0), x.dtype)
        if targets is None:
            targets = Incidence(edge_index[1], x.size(0), x.dtype)
        first, act, last = self.edge_mlp
        f = x.size(1)
        w = first.weight  # [H, 2 F_x + F_e]
        h = w.size(0)
        node_terms = x @ torch.cat([w[:, :f], w[:, f : 2 * f]], dim=0).t()  # [N, 2H]
        pre = torch.addmm(first.bias, edge_attr, w[:, 2 * f :].t())
        pre = pre + gather(node_terms[:, :h], sources) + gather(node_terms[:, h:], targets)
        return last(act(pre))


class NodeModel(nn.Module):
    r"""Node update with sum / max / mean "multipooling" of the incoming messages.

    .. math::
        \mathbf{h}'_i = \mathrm{LayerNorm}\Big(\mathrm{MLP}\big([\textstyle\sum_j
        \mathbf{e}_{ij},\ \max_j \mathbf{e}_{ij},\ \mathrm{mean}_j \mathbf{e}_{ij},\
        \mathbf{h}_i]\big)\Big)

    over the edges :math:`j \to i` (``edge_index[1] == i``). A node without incoming edges
    gets zeros for the three pools, never ``-inf``.

    Args:
        node_in: node feature size :math:`F_x`.
        edge_in: edge feature size :math:`F_e` (the messages).
        hidden_size: MLP hidden width.
        node_out: output node feature size.
    """

    def __init__(self, node_in: int, edge_in: int, hidden_size: int, node_out: int):
        super().__init__()
        self.node_mlp = nn.Sequential(
            _mlp(3 * edge_in + node_in, hidden_size, node_out), nn.LayerNorm(node_out)
        )

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_attr: Tensor,
        u: Tensor | None,
        batch: Tensor | None,
        targets: Incidence | None = None,
    ) -> Tensor:
        r"""
        Args:
            x: ``[N, F_x]``.
            edge_index: ``[2, E]`` long, row 1 = receiving node.
            edge_attr: ``[E, F_e]`` messages.
            u: ``[B, F_u]`` or ``None`` (unused).
            batch: ``[N]`` or ``None`` (unused).
            targets: :class:`~physml.aggregation.Incidence` of ``edge_index[1]``, or
                ``None`` to build it here; :class:`MPGNN` builds it once per batch.

        Returns:
            ``[N, node_out]``.

        The pools are :func:`physml.aggregation.scatter_sum` (the mean is the sum divided
        by the in-degree) and :func:`physml.aggregation.scatter_max`.
        """
        if targets is None:
            targets = Incidence(edge_index[1], x.size(0), edge_attr.dtype)
        total = scatter_sum(edge_attr, targets)
        mean = total / targets.degree.clamp(min=1).unsqueeze(1)
        biggest = scatter_max(edge_attr, targets)
        return self.node_mlp(torch.cat([total, biggest, mean, x], dim=1))


class GlobalModel(nn.Module):
    r"""Graph readout :math:`\mathrm{MLP}([s \sum_i \mathbf{h}_i,\ \mathrm{mean}_i
    \mathbf{h}_i,\ \max_i \mathbf{h}_i,\ \mathbf{u}])`, pools over the nodes of each graph.

    The sum is scaled by :math:`s` = ``sum_scale`` (default 1/100, the order of the number
    of halos in a catalog) so that the three pools enter the MLP on similar scales; an
    unscaled sum over hundreds of nodes starts the readout far from the prior range and
    can drive the predicted std to its floor, where the heteroscedastic loss has no
    gradient.

    A graph with no nodes gets zeros for all three pools (PyG's global pools with
    ``size=num_graphs``), so its output depends on ``u`` only and is finite.

    Args:
        node_in: node feature size :math:`F_x`.
        global_in: graph feature size :math:`F_u` (0: no ``u``).
        hidden_size: MLP hidden width.
        global_out: output size per graph.
        sum_scale: factor on the sum pool.
    """

    def __init__(
        self,
        node_in: int,
        global_in: int,
        hidden_size: int,
        global_out: int,
        sum_scale: float = 0.01,
    ):
        super().__init__()
        self.global_in = global_in
        self.sum_scale = float(sum_scale)
        self.mlp = _mlp(3 * node_in + global_in, hidden_size, global_out)

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor | None,
        edge_attr: Tensor | None,
        u: Tensor | None,
        batch: Tensor,
        num_graphs: int | None = None,
    ) -> Tensor:
        r"""
        Args:
            x: ``[N, F_x]``.
            edge_index, edge_attr: unused (``MetaLayer`` signature).
            u: ``[B, F_u]`` graph features, or ``None`` when ``global_in == 0``.
            batch: ``[N]`` long graph ids.
            num_graphs: :math:`B`; default ``u.size(0)``, else ``batch.max() + 1``.

        Returns:
            ``[B, global_out]``.
        """
        if num_graphs is None:
            if u is not None:
                num_graphs = u.size(0)
            else:
                num_graphs = int(batch.max()) + 1 if batch.numel() else 1
        pools = [
            global_add_pool(x, batch, size=num_graphs) * self.sum_scale,
            global_mean_pool(x, batch, size=num_graphs),
            global_max_pool(x, batch, size=num_graphs),
        ]
        if self.global_in:
            pools.append(u)
        return self.mlp(torch.cat(pools, dim=1))


class GraphLayer(nn.Module):
    r"""One message-passing step: :class:`EdgeModel` then :class:`NodeModel`, held in a
    :class:`torch_geometric.nn.MetaLayer` (``self.layer``, the reference implementation;
    :meth:`forward` computes the same with a faster gather, see :meth:`EdgeModel.message`).

    **Residual connection**: the node output is :math:`\mathbf{h} + \mathbf{h}'` when
    ``node_in == node_out`` (and :math:`\mathbf{h}'` otherwise); likewise the edge output
    is :math:`\mathbf{e} + \mathbf{e}'` when ``edge_in == edge_out``. In :class:`MPGNN` the
    first layer changes sizes (embedding -> ``hidden_size``) and has none; later layers do.

    Args:
        node_in, edge_in: input node / edge feature sizes.
        hidden_size: MLP hidden width.
        node_out, edge_out: output node / edge feature sizes.
        residual: set ``False`` to disable the residual connections.
    """

    def __init__(
        self,
        node_in: int,
        edge_in: int,
        hidden_size: int,
        node_out: int,
        edge_out: int,
        residual: bool = True,
    ):
        super().__init__()
        self.layer = MetaLayer(
            edge_model=EdgeModel(node_in, edge_in, hidden_size, edge_out),
            node_model=NodeModel(node_in, edge_out, hidden_size, node_out),
        )
        self.node_residual = residual and node_in == node_out
        self.edge_residual = residual and edge_in == edge_out

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_attr: Tensor,
        batch: Tensor | None = None,
        sources: Incidence | None = None,
        targets: Incidence | None = None,
    ) -> tuple[Tensor, Tensor]:
        r"""
        Args:
            x: ``[N, node_in]``; edge_index: ``[2, E]``; edge_attr: ``[E, edge_in]``;
            batch: ``[N]`` or ``None`` (unused: no global model inside the layer);
            sources, targets: :class:`~physml.aggregation.Incidence` of ``edge_index[0]``
            and ``edge_index[1]`` (built here when ``None``).

        Returns:
            ``x'``: ``[N, node_out]``, ``edge_attr'``: ``[E, edge_out]``.

        Computes what ``self.layer(x, edge_index, edge_attr)`` (the ``MetaLayer``) computes,
        up to float rounding, but with :meth:`EdgeModel.message` instead of the
        ``MetaLayer``'s ``x[row]``, ``x[col]`` gathers and concatenation. It does not call
        the ``MetaLayer`` or ``EdgeModel.forward``: hooks on them, or a subclass that
        overrides ``EdgeModel.forward``, do not take effect here.
        """
        edge_model, node_model = self.layer.edge_model, self.layer.node_model
        if sources is None:
            sources = Incidence(edge_index[0], x.size(0), x.dtype)
        if targets is None:
            targets = Incidence(edge_index[1], x.size(0), x.dtype)
        e_new = edge_model.message(x, edge_index, edge_attr, sources, targets)
        x_new = node_model(x, edge_index, e_new, None, batch, targets=targets)
        if self.node_residual:
            x_new = x + x_new
        if self.edge_residual:
            e_new = edge_attr + e_new
        return x_new, e_new


# --------------------------------------------------------------------------- the network


class MPGNN(nn.Module):
    r"""Message-passing GNN: embedding -> ``n_layers`` :class:`GraphLayer` ->
    :class:`GlobalModel`, predicting a Gaussian (mean, std) per graph and target.

    Targets are the first ``n_targets`` columns of ``y`` = (:math:`\sigma_8, \Omega_m`).
    The readout gives raw values :math:`(a, b)` per target and

    .. math::
        \mu = c + s\,a, \qquad \sigma = s\,(\mathrm{softplus}(b) + 10^{-4}),

    with :math:`c, s` the centre and half-width of the prior range (:data:`PRIOR_RANGES`,
    buffers ``target_offset`` / ``target_scale``), so outputs are in physical units and
    :math:`\sigma > 0` always (the source notebook's std could come out negative).

    Args:
        r_link: radius the graphs were built with, box units (the graph is precomputed in
            the data and **not** rebuilt here; distances are scaled by ``1/r_link`` and no
            edge may be longer).
        node_emb_size: node embedding size.
        edge_emb_size: edge embedding size.
        hidden_size: hidden width of every MLP and the node / edge size in the layers.
        n_layers: number of message-passing layers (>= 0).
        n_targets: 1 (:math:`\sigma_8`) or 2 (:math:`\sigma_8, \Omega_m`).
        embedding: ``"cartesian"`` or ``"invariant"``, or a module of one's own (for a
            subclass that overrides :meth:`embed`).
        box_size: side of the periodic box in the units of ``pos`` (1.0: box units), or
            ``None`` for open boundaries.
        node_in: node feature size (1: log mass).
        global_in: graph feature size of ``data.u`` (1: log number of halos; 0: unused).
        inputs: what the network reads, one of :data:`INPUTS`. ``"positions"``: ``x`` is
            replaced by zeros (all nodes equal) and ``u`` is not read (``global_in`` is
            set to 0); the count of halos still enters through the sum pool, as in any
            graph. ``"masses"``: the edges are dropped (``edge_index`` replaced by an empty
            one, so the layers' message pools are zero and each node is updated from
            itself only) and ``pos`` is not read: a Deep Set on ``x`` and ``u``.
    """

    def __init__(
        self,
        r_link: float,
        node_emb_size: int,
        edge_emb_size: int,
        hidden_size: int,
        n_layers: int,
        n_targets: int,
        embedding: str = "invariant",
        box_size: float | None = 1.0,
        node_in: int = 1,
        global_in: int = 1,
        inputs: str = "all",
    ):
        super().__init__()
        if inputs not in INPUTS:
            raise ValueError(f"inputs: expected one of {INPUTS}, got {inputs!r}")
        if inputs == "positions":
            global_in = 0
        for name, value in [
            ("node_emb_size", node_emb_size),
            ("edge_emb_size", edge_emb_size),
            ("hidden_size", hidden_size),
            ("node_in", node_in),
        ]:
            _check_positive_int(name, value)
        _check_positive_int("n_layers", n_layers, minimum=0)
        _check_positive_int("global_in", global_in, minimum=0)
        if n_targets not in (1, 2):
            raise ValueError(
                f"n_targets: expected 1 or 2 (columns of y: {Y_COLUMNS}), got {n_targets!r}"
            )
        self.r_link = float(r_link)
        self.n_targets = n_targets
        self.node_in = node_in
        self.global_in = global_in
        self.inputs = inputs
        self.box_size = None if box_size is None else float(box_size)
        if isinstance(embedding, nn.Module):
            self.embedding = embedding
        else:
            self.embedding = make_embedding(
                embedding, r_link, node_emb_size, edge_emb_size, hidden_size, box_size, node_in
            )
        layers = []
        node_dim, edge_dim = node_emb_size, edge_emb_size
        for _ in range(n_layers):
            layers.append(GraphLayer(node_dim, edge_dim, hidden_size, hidden_size, hidden_size))
            node_dim = edge_dim = hidden_size
        self.layers = nn.ModuleList(layers)
        self.readout = GlobalModel(node_dim, global_in, hidden_size, 2 * n_targets)
        centre, halfwidth = prior_centre_and_halfwidth(n_targets)
        self.register_buffer("target_offset", centre)
        self.register_buffer("target_scale", halfwidth)

    def _inputs(self, data):
        for key in ("x", "pos", "edge_index"):
            if getattr(data, key, None) is None:
                raise ValueError(
                    f"data: missing attribute {key!r} (expected x, pos, edge_index, u)"
                )
        x, pos, edge_index = data.x, data.pos, data.edge_index
        if x.dim() != 2 or x.size(1) != self.node_in:
            raise ValueError(f"data.x: expected shape [N, {self.node_in}], got {list(x.shape)}")
        if pos.dim() != 2 or pos.size(1) != 3 or pos.size(0) != x.size(0):
            raise ValueError(f"data.pos: expected shape [{x.size(0)}, 3], got {list(pos.shape)}")
        batch = getattr(data, "batch", None)
        num_graphs = getattr(data, "num_graphs", None) if batch is not None else 1
        if batch is None:
            batch = torch.zeros(x.size(0), dtype=torch.long, device=x.device)
        u = None
        if self.global_in:
            u = getattr(data, "u", None)
            if u is None:
                raise ValueError("data: missing attribute 'u' ([B, 1] log10 number of halos)")
            if u.dim() != 2 or u.size(1) != self.global_in:
                raise ValueError(
                    f"data.u: expected shape [B, {self.global_in}], got {list(u.shape)}"
                )
            if num_graphs is None:
                num_graphs = u.size(0)
            elif u.size(0) != num_graphs:
                raise ValueError(f"data.u: {u.size(0)} rows for {num_graphs} graphs")
        if self.inputs == "positions":
            x = torch.zeros_like(x)  # every halo alike: only the graph carries information
        elif self.inputs == "masses":
            edge_index = edge_index[:, :0]  # no edges: each halo sees only itself
            pos = torch.zeros_like(pos)
        return x, pos, edge_index, batch, u, num_graphs

    def forward(self, data) -> tuple[Tensor, Tensor]:
        r"""
        Args:
            data: a :class:`~torch_geometric.data.Data` or a batch of them with ``x``
                ``[N, 1]``, ``pos`` ``[N, 3]`` (box units), ``edge_index`` ``[2, E]``,
                ``u`` ``[B, 1]`` and (for batches) ``batch`` ``[N]``. Graphs with 0 or 1
                node or no edges are allowed.

        Returns:
            ``mean``, ``std``: ``[B, n_targets]`` each, physical units, ``std > 0``.
        """
        return gaussian_output(self.readout_features(data), self.target_offset, self.target_scale)

    def readout_features(self, data) -> Tensor:
        """The readout's raw output ``[B, F]`` (F = 2 n_targets unless ``readout`` was
        replaced, e.g. by a wider :class:`GlobalModel` to embed graphs for a flow)."""
        x, pos, edge_index, batch, u, num_graphs = self._inputs(data)
        h, e = self.embed(data, x, pos, edge_index, batch)
        if len(self.layers):  # the incidence matrices, built once for all layers
            sources = Incidence(edge_index[0], h.size(0), h.dtype)
            targets = Incidence(edge_index[1], h.size(0), h.dtype)
        for layer in self.layers:
            h, e = layer(h, edge_index, e, batch, sources, targets)
        return self.readout(h, edge_index, e, u, batch, num_graphs=num_graphs)

    def embed(self, data, x: Tensor, pos: Tensor, edge_index: Tensor, batch: Tensor):
        """Node and edge embeddings ``[N, node_emb_size]``, ``[E, edge_emb_size]``.

        Here ``self.embedding(x, pos, edge_index, batch)``; a subclass with other inputs
        (e.g. the halo velocities in ``data``) overrides this and keeps the rest."""
        return self.embedding(x, pos, edge_index, batch)
