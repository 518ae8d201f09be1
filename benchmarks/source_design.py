"""The source notebook's design of the lecture network, for the throughput benchmark.

The source notebook (``../shared/seeds/000_*.txt``) computes its network like this on
every training step:

* the embedding calls ``radius_graph(pos, r_link, batch=batch)`` (torch-cluster, open
  boundaries) inside ``forward``, so the graph is rebuilt for every batch;
* each layer is a PyG ``MetaLayer``: the edge model gets ``x[row]``, ``x[col]`` and the edge
  features, concatenates them and applies its MLP; the node model pools the new edges with
  three separate scatters (``scatter_add``, ``scatter_max``, ``scatter_mean``);
* a global model pools the nodes and predicts the output.

:class:`SourceDesign` runs an existing :class:`physml.models.MPGNN` (same modules, same
weights) along that path, so that the benchmark compares two implementations of one
function. The only other difference is the graph: with ``periodic=False`` (the source as
written) it is the open-boundary graph, which has fewer edges near the faces of the box;
with ``periodic=True`` it is the same periodic graph that physml precomputes, so the outputs
agree with ``MPGNN`` to float rounding (``tests/test_source_design.py`` checks it).

The three scatters are ``torch_geometric.utils.scatter``, PyG's replacement for the
torch-scatter functions the source imports (torch-scatter is not installed here; PyG uses
it inside ``scatter`` when it is). The radius search is physml's fastest backend for the
device (a scipy KD-tree on the CPU, as torch-cluster's own CPU search; torch-cluster or the
blockwise all-pairs kernel on a GPU).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from physml.graphs import radius_graph
from physml.models import MPGNN, gaussian_output


class SourceDesign(nn.Module):
    """An :class:`MPGNN` computed the source notebook's way (see the module docstring).

    Args:
        net: the network whose modules and weights are used (not copied).
        periodic: rebuild the periodic graph (``True``, physml's graph) or the
            open-boundary one of the source (``False``).
        rebuild: ``False`` uses the precomputed ``data.edge_index`` instead of rebuilding
            the graph: the source's layer code on physml's data, which separates the two
            parts of the difference in the benchmark.
    """

    def __init__(self, net: MPGNN, periodic: bool = False, rebuild: bool = True):
        super().__init__()
        self.net = net
        self.box_size = net.box_size if periodic else None
        self.rebuild = rebuild

    def forward(self, data) -> tuple[Tensor, Tensor]:
        """``mean``, ``std``: ``[B, n_targets]``, from ``data`` with ``x``, ``pos``,
        ``u`` and ``batch``; ``data.edge_index`` is rebuilt here unless ``rebuild`` is
        ``False``."""
        net = self.net
        x, pos, batch, u = data.x, data.pos, data.batch, data.u
        if self.rebuild:
            edge_index = radius_graph(pos, net.r_link, box_size=self.box_size, batch=batch)
        else:
            edge_index = data.edge_index
        h, e = net.embed(data, x, pos, edge_index, batch)
        row, col = edge_index
        for layer in net.layers:
            edge_model, node_model = layer.layer.edge_model, layer.layer.node_model
            # MetaLayer's edge step: gather both end nodes, concatenate, MLP
            e_new = edge_model(h[row], h[col], e, None, None)
            # the source's node model: three scatters, then the MLP
            n = h.size(0)
            pools = [
                scatter(e_new, col, dim=0, dim_size=n, reduce=r) for r in ("sum", "max", "mean")
            ]
            h_new = node_model.node_mlp(torch.cat([*pools, h], dim=1))
            h = h + h_new if layer.node_residual else h_new
            e = e + e_new if layer.edge_residual else e_new
        out = net.readout(h, edge_index, e, u, batch, num_graphs=data.num_graphs)
        return gaussian_output(out, net.target_offset, net.target_scale)
