r"""Task 2 solution models: networks that predict (mean, std) of sigma_8 from a halo graph.

Both take the graphs of :func:`physml.experiment.make_loaders` (``pos`` ``[N, 3]`` box
units, ``x`` ``[N, 1]`` standardised log10 mass, ``edge_index`` ``[2, E]`` the periodic
radius graph, ``u`` ``[B, 1]`` standardised log10 N_halo, optionally ``vel`` ``[N, 3]``
km/s) and return ``(mean, std)``, ``[B, n_targets]`` each, in physical units:

* :class:`EGNN`: the E(n)-equivariant GNN of Satorras, Hoogeboom & Welling (2021,
  arXiv:2102.09844) in a periodic box: messages see only squared distances, coordinates
  are updated along minimum-image displacements, the readout pools invariant node features.
* :class:`VelocityMPGNN`: the lecture network (a subclass of physml's ``MPGNN`` with its
  own embedding), with the halo velocities as extra invariants (speed; radial and
  tangential relative velocity).

The Task 2 notebook trains them with physml's Lightning module (``GNNRegressor`` with its
``model`` swapped for the network).

Symmetries (tested in ``tests/test_solutions.py``): with the periodic unit box, both
predictions are invariant under node permutations, periodic translations and the 48
rotations / reflections of the cube; :meth:`EGNN.propagate`'s coordinates are equivariant.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn import global_add_pool, global_max_pool, global_mean_pool
from torch_geometric.utils import scatter

from physml.graphs import invariant_edge_features, minimum_image
from physml.models import MPGNN, gaussian_output, prior_centre_and_halfwidth
from physml.settings import R_LINK

__all__ = ["EGNN", "EGNNLayer", "VelocityMPGNN", "pair_features"]

#: velocity unit, km/s (the rms of one velocity component of the bundled halos is ~ 80 km/s)
VEL_SCALE = 100.0


def _mlp(n_in: int, hidden: int, n_out: int, act=nn.SiLU) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), act(), nn.Linear(hidden, n_out))


class _GaussianHead(nn.Module):
    r"""Readout of invariant node features to a Gaussian per graph and target.

    Pools the nodes of each graph (mean, max, and sum / 100 ~ sum over the typical few
    hundred halos), appends ``u``, and maps to raw :math:`(a, b)`;
    :math:`\mu = c + s a`, :math:`\sigma = s (\mathrm{softplus}(b) + 10^{-4})` with
    :math:`c, s` the centre and half-width of the prior range, as in
    :class:`physml.models.MPGNN`.
    """

    def __init__(self, hidden: int, n_targets: int = 1, global_in: int = 1):
        super().__init__()
        self.n_targets, self.global_in = n_targets, global_in
        self.mlp = nn.Sequential(
            nn.Linear(3 * hidden + global_in, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, 2 * n_targets),
        )
        centre, halfwidth = prior_centre_and_halfwidth(n_targets)
        self.register_buffer("target_offset", centre)
        self.register_buffer("target_scale", halfwidth)

    def forward(self, h: Tensor, batch: Tensor, u: Tensor | None, num_graphs: int):
        pools = [
            global_mean_pool(h, batch, size=num_graphs),
            global_max_pool(h, batch, size=num_graphs),
            global_add_pool(h, batch, size=num_graphs) / 100.0,
        ]
        if self.global_in:
            pools.append(u)
        out = self.mlp(torch.cat(pools, dim=1))
        return gaussian_output(out, self.target_offset, self.target_scale)


def _graph_inputs(data):
    """(x, pos, edge_index, batch, u, num_graphs) of a Data or a batch."""
    batch = getattr(data, "batch", None)
    if batch is None:
        batch = torch.zeros(data.num_nodes, dtype=torch.long, device=data.pos.device)
        num_graphs = 1
    else:
        num_graphs = int(data.num_graphs)
    return data.x, data.pos, data.edge_index, batch, getattr(data, "u", None), num_graphs


def _velocities(data) -> Tensor:
    vel = getattr(data, "vel", None)
    if vel is None:
        raise ValueError(
            "data: missing attribute 'vel' ([N, 3] km/s); this model was built with "
            "use_velocity=True (catalogs without velocities need use_velocity=False)"
        )
    return vel / VEL_SCALE


# --------------------------------------------------------------------------- EGNN


class EGNNLayer(nn.Module):
    r"""One E(n)-equivariant message-passing layer in a periodic box.

    For an edge :math:`j \to i` (``edge_index[0] = j``, ``edge_index[1] = i``), with
    :math:`\mathbf{r}_{ij} = \mathrm{mi}(\mathbf{x}_i - \mathbf{x}_j)/r_0` the minimum-image
    displacement in units of ``r_scale``:

    .. math::
        \mathbf{m}_{ij} &= \phi_e(\mathbf{h}_i, \mathbf{h}_j, |\mathbf{r}_{ij}|^2), \qquad
        e_{ij} = \sigma(\phi_\mathrm{inf}(\mathbf{m}_{ij})) \\
        \mathbf{x}_i' &= \mathbf{x}_i + r_0\, \mathrm{mean}_j\,
            \frac{\mathbf{r}_{ij}}{|\mathbf{r}_{ij}| + 1}\, \phi_x(\mathbf{m}_{ij})
            \pmod L \\
        \mathbf{h}_i' &= \mathbf{h}_i + \phi_h\big(\mathbf{h}_i, \textstyle\sum_j e_{ij}
            \mathbf{m}_{ij}\big)

    (Satorras et al. 2021, eqs. 3-6, with the normalised coordinate update and edge
    inference). ``phi_x`` ends in ``tanh`` (bounded steps) and starts near zero.

    Args:
        hidden: node feature size.
        edge_in: size of extra invariant edge features (0: none).
        box_size: side :math:`L` of the periodic box in the units of ``x`` (``None``: open).
        r_scale: length unit :math:`r_0` of the displacements (the linking radius).
        update_coords: if ``False``, :math:`\mathbf{x}` is returned unchanged.
    """

    def __init__(
        self,
        hidden: int,
        edge_in: int = 0,
        box_size: float | None = 1.0,
        r_scale: float = 0.2,
        update_coords: bool = True,
    ):
        super().__init__()
        self.box_size, self.r_scale, self.update_coords = box_size, float(r_scale), update_coords
        self.phi_e = nn.Sequential(_mlp(2 * hidden + 1 + edge_in, hidden, hidden), nn.SiLU())
        self.phi_inf = nn.Linear(hidden, 1)
        self.phi_h = _mlp(2 * hidden, hidden, hidden)
        self.norm = nn.LayerNorm(hidden)
        if update_coords:
            last = nn.Linear(hidden, 1, bias=False)
            nn.init.xavier_uniform_(last.weight, gain=1e-3)
            self.phi_x = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), last, nn.Tanh())

    def forward(
        self, h: Tensor, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        r"""
        Args:
            h: ``[N, hidden]`` invariant node features.
            x: ``[N, 3]`` coordinates (box units when periodic).
            edge_index: ``[2, E]`` long, row 0 = source :math:`j`, row 1 = target :math:`i`.
            edge_attr: ``[E, edge_in]`` invariant edge features, or ``None``.

        Returns:
            ``h'`` ``[N, hidden]`` (invariant), ``x'`` ``[N, 3]`` (equivariant).
        """
        j, i = edge_index[0], edge_index[1]
        rel = minimum_image(x[i] - x[j], self.box_size) / self.r_scale  # [E, 3]
        d2 = (rel * rel).sum(-1, keepdim=True)
        inputs = [h[i], h[j], d2] + ([] if edge_attr is None else [edge_attr])
        m = self.phi_e(torch.cat(inputs, dim=-1))  # [E, hidden]
        n = h.size(0)
        if self.update_coords:
            step = rel / (d2.sqrt() + 1.0) * self.phi_x(m)
            x = x + self.r_scale * scatter(step, i, dim=0, dim_size=n, reduce="mean")
            if self.box_size is not None:
                x = torch.remainder(x, self.box_size)
        m_i = scatter(torch.sigmoid(self.phi_inf(m)) * m, i, dim=0, dim_size=n, reduce="sum")
        h = self.norm(h + self.phi_h(torch.cat([h, m_i], dim=-1)))
        return h, x


class EGNN(nn.Module):
    r"""E(n)-equivariant GNN (Satorras et al. 2021) for a periodic box of halos.

    ``x`` (log mass, plus :math:`\log(|\mathbf{v}|/100\,\mathrm{km/s})` with
    ``use_velocity``) is embedded to ``hidden``; ``n_layers`` :class:`EGNNLayer` update
    :math:`(\mathbf{h}, \mathbf{x})` on the precomputed radius graph (``edge_index`` is kept
    as the coordinates move); the Gaussian readout pools the invariant :math:`\mathbf{h}`
    (mean, max, sum) with ``u``. With ``use_velocity`` the edges also carry the radial
    relative velocity :math:`(\mathbf{v}_j - \mathbf{v}_i)\cdot\hat{\mathbf{r}}_{ij}`.

    Args:
        hidden: node feature size.
        n_layers: number of EGNN layers.
        n_targets: 1 (sigma_8) or 2 (sigma_8, Omega_m).
        r_link: radius the graphs were built with, box units (the length unit inside).
        box_size: side of the periodic box in box units (1.0), or ``None``.
        use_velocity: use ``data.vel`` (km/s) too.
        update_coords: update coordinates in the layers (the EGNN proper); ``False`` gives
            the invariant (distance-only) special case.
    """

    def __init__(
        self,
        hidden: int = 64,
        n_layers: int = 4,
        n_targets: int = 1,
        r_link: float = R_LINK,
        box_size: float | None = 1.0,
        use_velocity: bool = False,
        update_coords: bool = True,
    ):
        super().__init__()
        self.n_targets, self.use_velocity = n_targets, use_velocity
        self.box_size, self.r_link = box_size, float(r_link)
        self.embed = _mlp(1 + int(use_velocity), hidden, hidden)
        edge_in = 1 if use_velocity else 0
        self.layers = nn.ModuleList(
            EGNNLayer(hidden, edge_in, box_size, r_link, update_coords) for _ in range(n_layers)
        )
        self.head = _GaussianHead(hidden, n_targets)

    def _edge_attr(self, data, pos: Tensor, edge_index: Tensor) -> Tensor | None:
        if not self.use_velocity:
            return None
        vel = _velocities(data)
        j, i = edge_index[0], edge_index[1]
        rel = minimum_image(pos[j] - pos[i], self.box_size)
        n_ij = rel / torch.linalg.vector_norm(rel, dim=-1, keepdim=True).clamp_min(1e-8)
        return ((vel[j] - vel[i]) * n_ij).sum(-1, keepdim=True)

    def propagate(self, data) -> tuple[Tensor, Tensor]:
        """Node features and coordinates after the layers: ``h`` ``[N, hidden]``
        (invariant), ``x`` ``[N, 3]`` (equivariant)."""
        x_feat, pos, edge_index, _, _, _ = _graph_inputs(data)
        if self.use_velocity:
            speed = torch.linalg.vector_norm(_velocities(data), dim=-1, keepdim=True)
            x_feat = torch.cat([x_feat, torch.log(speed.clamp_min(1e-3))], dim=-1)
        h = self.embed(x_feat)
        edge_attr = self._edge_attr(data, pos, edge_index)
        x = pos
        for layer in self.layers:
            h, x = layer(h, x, edge_index, edge_attr)
        return h, x

    def forward(self, data) -> tuple[Tensor, Tensor]:
        """``(mean, std)``, ``[B, n_targets]`` each, physical units, ``std > 0``."""
        _, _, _, batch, u, num_graphs = _graph_inputs(data)
        h, _ = self.propagate(data)
        return self.head(h, batch, u, num_graphs)


# --------------------------------------------------------------------------- velocities


def pair_features(data, r_link: float = R_LINK, box_size: float | None = 1.0) -> Tensor:
    r"""Invariant edge features :math:`j \to i` (``edge_index[0] = j``): the lecture's
    :math:`(d_{ij}/r_\mathrm{link},\ \mathbf{p}_i\cdot\mathbf{p}_j,\ \mathbf{p}_j\cdot
    \mathbf{n}_{ij})` (:func:`physml.graphs.invariant_edge_features`) and the radial and
    tangential relative velocity, :math:`v_r = (\mathbf{v}_j - \mathbf{v}_i)\cdot
    \mathbf{n}_{ij}` and :math:`v_t = |(\mathbf{v}_j - \mathbf{v}_i) - v_r
    \mathbf{n}_{ij}|`, in units of :data:`VEL_SCALE`.

    Args:
        data: graph or batch with ``pos``, ``edge_index``, ``vel`` (and ``batch``).
        r_link: length unit of :math:`d`, box units.
        box_size: periodic box side (1.0), or ``None``.

    Returns:
        ``[E, 5]``.
    """
    pos, edge_index = data.pos, data.edge_index
    inv = invariant_edge_features(pos, edge_index, getattr(data, "batch", None), box_size)
    j, i = edge_index[0], edge_index[1]
    rel = minimum_image(pos[j] - pos[i], box_size)
    n_ij = rel / inv[:, :1].clamp_min(1e-8)
    vel = _velocities(data)
    dv = vel[j] - vel[i]
    v_r = (dv * n_ij).sum(-1, keepdim=True)
    v_t = torch.linalg.vector_norm(dv - v_r * n_ij, dim=-1, keepdim=True)
    return torch.cat([inv[:, :1] / r_link, inv[:, 1:], v_r, v_t], dim=-1)


class _VelocityEmbedding(nn.Module):
    """The MLPs of :class:`VelocityMPGNN`: 2 node inputs, 5 edge inputs."""

    def __init__(self, node_emb_size: int, edge_emb_size: int, hidden_size: int):
        super().__init__()
        self.node_mlp = _mlp(2, hidden_size, node_emb_size, nn.ReLU)
        self.edge_mlp = _mlp(5, hidden_size, edge_emb_size, nn.ReLU)


class VelocityMPGNN(MPGNN):
    r"""The lecture network (:class:`physml.models.MPGNN`) with the halo velocities as extra
    invariants: only the embedding differs.

    Nodes: (log mass, :math:`\log(|\mathbf{v}|/100\,\mathrm{km/s})`); edges: the five
    :func:`pair_features`. Both are embedded by MLPs, then ``n_layers`` edge / node
    updates and the sum / mean / max readout with ``u``, as in ``MPGNN``. Invariant under
    permutations, periodic translations and the cube's symmetries (velocities transform
    with the positions).

    Args:
        r_link: radius the graphs were built with, box units.
        node_emb_size, edge_emb_size, hidden_size, n_layers: sizes, as in ``MPGNN``.
        n_targets: 1 or 2.
        box_size: periodic box side (1.0), or ``None``.
    """

    def __init__(
        self,
        r_link: float = R_LINK,
        node_emb_size: int = 16,
        edge_emb_size: int = 16,
        hidden_size: int = 48,
        n_layers: int = 2,
        n_targets: int = 1,
        box_size: float | None = 1.0,
    ):
        embedding = _VelocityEmbedding(node_emb_size, edge_emb_size, hidden_size)
        super().__init__(
            r_link,
            node_emb_size,
            edge_emb_size,
            hidden_size,
            n_layers,
            n_targets,
            embedding=embedding,
            box_size=box_size,
        )

    def embed(self, data, x: Tensor, pos: Tensor, edge_index: Tensor, batch: Tensor):
        """(log mass, log speed) and :func:`pair_features`, each through its MLP."""
        speed = torch.linalg.vector_norm(_velocities(data), dim=-1, keepdim=True)
        h = self.embedding.node_mlp(torch.cat([x, torch.log(speed.clamp_min(1e-3))], dim=-1))
        e = self.embedding.edge_mlp(pair_features(data, self.r_link, self.box_size))
        return h, e
