# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lecture 14, part 1: Graphs and message passing — solution
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/physml-course/physml/blob/main/solutions/01_graphs_and_message_passing.ipynb)
#
# Images, videos and spectra live on regular grids, and convolutional networks exploit that
# regularity. A great deal of physics data does not: particles in a detector, atoms in a
# molecule, stars in a galaxy, or the **dark-matter halos** of a cosmological simulation are
# sets of objects with positions and properties, and what matters is how they relate to their
# neighbours. The natural data structure for such data is a **graph**, and the networks that
# learn on graphs are **graph neural networks (GNNs)**.
#
# This notebook builds up the ideas of the lecture slides, each with a few lines of runnable
# code, on the same halo catalogs we use in part 2 to infer the cosmological parameter
# $\sigma_8$:
#
# 1. graphs, adjacency matrices and what a relabelling of the nodes does;
# 2. permutation invariance and equivariance, checked on a real halo graph;
# 3. node-, edge- and graph-level tasks;
# 4. the receptive field of a GNN, hop by hop;
# 5. simple message passing (Algorithm 13.1), written from scratch and with PyG;
# 6. sum, mean and max aggregation, and what each of them cannot see;
# 7. the edge / node / global message-passing network (Algorithm 13.2) with `MetaLayer`;
# 8. explicit vs implicit inference, and why differentiable simulators matter.
#
# Two exercises (after sections 4 and 6) ask you to write a piece yourself; a self-check
# under each says PASS, or what is wrong and why.
#
# Everything here runs on a laptop CPU in well under a minute (the whole notebook, in full
# mode: 9 seconds for the solution and 11 for the student version on a 2-core CPU);
# nothing is trained.

# %% [markdown] tags=["solution"]
# **Instructor version.** The student notebook
# `lecture14_gnn/01_graphs_and_message_passing.ipynb` is generated from this file by
# `python tools/notebooks.py students`: cells tagged `solution` (like this one) are
# dropped and the code between `# SOLUTION START` and `# SOLUTION END` of each exercise
# is replaced by a stub that still runs, so that the student version runs to the end and
# its self-checks print what is missing.

# %% tags=["nbval-ignore-output"]
# Colab: install physml (and what Colab lacks); elsewhere nothing happens.
import sys

PHYSML_INSTALL = "physml @ git+https://github.com/physml-course/physml.git@main"
HELP = """physml could not be installed from {target} (pip's output is above). What to do:
 * The repository is not published there yet, or is private: the instructor sets REPO and
   BRANCH in tools/nbconfig.py to the published repository and runs
   `python tools/notebooks.py sync`, which rewrites this cell and the Colab badge.
 * Or install from a wheel: in a clone of the course repository run
   `pip wheel . --no-deps -w dist` (or `python -m build`), upload dist/physml-*.whl to this
   Colab session (Files panel, left), and run this cell again: an uploaded physml wheel
   is installed first, with the libraries it needs."""


def install_physml():
    """pip-install physml: an uploaded physml-*.whl first, else PHYSML_INSTALL."""
    import glob
    import os
    import subprocess

    wheels = sorted(glob.glob("physml-*.whl"))
    target = PHYSML_INSTALL
    if wheels:
        target = f"physml @ file://{os.path.abspath(wheels[-1])}"
    run = [sys.executable, "-m", "pip", "install", target]
    done = subprocess.run(run, capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stdout + done.stderr, file=sys.stderr)
        raise RuntimeError(HELP.format(target=target))
    print(f"physml installed from {target}")


if "google.colab" in sys.modules:
    install_physml()

# %% [markdown]
# We use PyTorch, [PyTorch Geometric](https://pytorch-geometric.readthedocs.io) (PyG) for
# the graph operations, and the course library `physml` for the halo catalogs, their graphs,
# the GNN building blocks of the lecture model, plotting, and a small differentiable
# cosmology and particle-mesh simulation.

# %% tags=["nbval-ignore-output"]
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn
from torch_geometric.data import Batch
from torch_geometric.nn import MessagePassing, MetaLayer, global_mean_pool
from torch_geometric.utils import degree, is_undirected, k_hop_subgraph, scatter, to_dense_adj

from physml.cosmology import Cosmology
from physml.datasets import load_bundled
from physml.experiment import LECTURE_HPARAMS
from physml.graphdata import HaloDataset
from physml.models import MPGNN, CartesianEmbedding, EdgeModel, GlobalModel, NodeModel
from physml.plotting import plot_graph_3d
from physml.selfcheck import check_k_hop_nodes, check_mean_aggregation
from physml.simulation import SimulationConfig, initial_conditions, nbody, overdensity

torch.manual_seed(0)
torch.set_printoptions(precision=4, sci_mode=False)

# %% [markdown]
# ## 1. What is a graph?
#
# A graph is a pair $\mathcal{G} = (\mathcal{V}, \mathcal{E})$: a set of **nodes** (vertices)
# $\mathcal{V}$ and a set of **edges** $\mathcal{E}$, pairs of nodes $(n, m)$. Often a third
# element is added, a **global** feature $\mathbf{u}$ of the whole graph, so that
# $\mathcal{G} = (\mathcal{V}, \mathcal{E}, \mathbf{u})$. Each of the three can carry a
# vector of features: node features $\mathbf{h}_n$ (a halo's mass), edge features
# $\mathbf{e}_{nm}$ (the distance between two halos) and graph features $\mathbf{g}$ (the
# number of halos in the catalog). Edges can be directed (a one-way street) or undirected
# (a chemical bond); an undirected edge is simply stored as two directed ones.
#
# PyG stores a graph with $N$ nodes and $E$ (directed) edges as tensors:
#
# | tensor | shape | meaning |
# |---|---|---|
# | `x` | $[N, F_x]$ | node features |
# | `edge_index` | $[2, E]$ | row 0: source node $m$, row 1: target node $n$ of each edge |
# | `edge_attr` | $[E, F_e]$ | edge features |
# | `u` | $[1, F_u]$ | graph features |
#
# `edge_index` is the *coordinate (COO) list* of the non-zero entries of the **adjacency
# matrix** $A$, the $N \times N$ matrix with $A_{nm} = 1$ if there is an edge between $n$
# and $m$ and $0$ otherwise. For a graph with a few neighbours per node, the edge list is
# far smaller than the $N^2$ matrix, which is why GNN libraries never build $A$.
#
# Here is a small undirected graph with five nodes:

# %%
pairs = torch.tensor([[0, 1], [0, 2], [1, 2], [2, 3], [3, 4]])  # undirected edges
edge_index = torch.cat([pairs.T, pairs.T.flip(0)], dim=1)  # store both directions
A = to_dense_adj(edge_index, max_num_nodes=5)[0]

print("edge_index:\n", edge_index)
print("adjacency matrix:\n", A.int())
print("A is symmetric (undirected graph):", torch.equal(A, A.T))
print("number of neighbours (degree) of each node:", A.sum(1).int().tolist())

# %% [markdown]
# ### Relabelling the nodes
#
# The numbering of the nodes is arbitrary: nothing about a molecule or a halo catalog
# changes if we list its atoms or halos in another order. A relabelling is a permutation
# $\pi$: new node $i$ is old node $\pi(i)$. With the **permutation matrix**
# $P_{i, \pi(i)} = 1$ (zero elsewhere) the node features and the adjacency matrix become
#
# $$ X' = P X, \qquad A' = P A P^\top . $$
#
# The same graph, in another order (Bishop, Fig. 13.2). Let us check that relabelling the
# edge list gives exactly $P A P^\top$: old node $j$ gets the new label $\pi^{-1}(j)$.

# %%
perm = torch.tensor([3, 0, 4, 1, 2])  # new node i is old node perm[i]
P = torch.zeros(5, 5)
P[torch.arange(5), perm] = 1.0
inv = torch.argsort(perm)  # old node j -> new label inv[j]

edge_index_perm = inv[edge_index]
A_perm = to_dense_adj(edge_index_perm, max_num_nodes=5)[0]
print("relabelled edge list gives P A P^T:", torch.equal(A_perm, P @ A @ P.T))


# %% [markdown]
# Drawn side by side: the two drawings are the same graph, the two adjacency matrices look
# different.


# %%
def draw_graph(edge_index, labels, ax, title):
    """Nodes on a circle, labelled; each undirected edge drawn once."""
    n = len(labels)
    angle = 2 * np.pi * np.arange(n) / n
    xy = np.stack([np.cos(angle), np.sin(angle)], 1)
    for a, b in edge_index.T.tolist():
        if a < b:
            ax.plot(*xy[[a, b]].T, color="0.5", zorder=1)
    ax.scatter(*xy.T, s=500, color="tab:orange", zorder=2)
    for (x, y), label in zip(xy, labels, strict=True):
        ax.text(x, y, label, ha="center", va="center", fontsize=12)
    ax.set_title(title)
    ax.set_aspect("equal")
    ax.axis("off")


names = np.array(list("ABCDE"))  # a name for each physical node, whatever its label
fig, axes = plt.subplots(2, 2, figsize=(7, 7), layout="constrained")
draw_graph(edge_index, [f"{i}:{c}" for i, c in enumerate(names)], axes[0, 0], "order 1")
draw_graph(edge_index_perm, [f"{i}:{c}" for i, c in enumerate(names[perm])], axes[0, 1], "order 2")
for ax, adj, order in ((axes[1, 0], A, names), (axes[1, 1], A_perm, names[perm])):
    ax.imshow(adj, cmap="Greys")
    ax.set_xticks(range(5), order)
    ax.set_yticks(range(5), order)
    ax.set_title("adjacency matrix")
plt.show()

# %% [markdown]
# ## 2. Permutation invariance and equivariance
#
# Because the order of the nodes carries no information, a network that predicts a property
# of the **whole graph** must give the same answer for every order. It should be
# **invariant**:
#
# $$ f(P X, P A P^\top) = f(X, A) \quad \text{for every permutation } P . $$
#
# A network that outputs one vector per **node** should instead relabel its output in the
# same way as its input. It should be **equivariant**:
#
# $$ F(P X, P A P^\top) = P\, F(X, A) . $$
#
# These symmetries are an *inductive bias*: they are built into the architecture instead of
# being learned from data. A plain MLP on the concatenated node features has neither.
#
# Let us check both on a real graph. `physml` ships simulated halo catalogs; the `cv` set
# holds catalogs at the fiducial cosmology ($\Omega_m = 0.3$, $\sigma_8 = 0.8$). A
# `HaloDataset` turns each catalog into a PyG `Data` object: node feature `x` = the
# (standardised) log halo mass, `pos` = the positions in units of the 25 Mpc/h box, and
# `edge_index` = all pairs of halos closer than $r = 0.2$ box = 5 Mpc/h (part 2 explains
# these choices).

# %%
cv = load_bundled("cv")
halos = HaloDataset(cv[:2], r_link=0.2)
data = halos[0]
print(data)
print("undirected:", is_undirected(data.edge_index))

# %% [markdown]
# The lecture's GNN (`physml.models.MPGNN`, built piece by piece in part 2), untrained,
# predicts a mean and a standard deviation of $\sigma_8$ for this catalog. We feed it the
# same catalog with the halos listed in a random order:


# %%
def permute_nodes(data, perm):
    """The same graph with new node i = old node perm[i]."""
    out = data.clone()
    out.x, out.pos = data.x[perm], data.pos[perm]
    out.edge_index = torch.argsort(perm)[data.edge_index]
    return out


# the lecture model's sizes (LECTURE_HPARAMS also holds its training settings)
ARCH = ("r_link", "node_emb_size", "edge_emb_size", "hidden_size", "n_layers")
sizes = {key: LECTURE_HPARAMS[key] for key in ARCH}
model = MPGNN(**sizes, n_targets=1, embedding="cartesian").eval()
perm = torch.randperm(data.num_nodes)
data_perm = permute_nodes(data, perm)

with torch.no_grad():
    mean, std = model(data)
    mean_p, std_p = model(data_perm)
    h, e = model.embedding(data.x, data.pos, data.edge_index)  # node-level outputs
    h_p, e_p = model.embedding(data_perm.x, data_perm.pos, data_perm.edge_index)
    for layer in model.layers:
        h, e = layer(h, data.edge_index, e)
        h_p, e_p = layer(h_p, data_perm.edge_index, e_p)

print("graph level, invariant:  ", torch.allclose(mean, mean_p) and torch.allclose(std, std_p))
print("node level, equivariant: ", torch.allclose(h[perm], h_p, atol=1e-5))

# %% [markdown]
# (`allclose` rather than exact equality: the sums over neighbours are added up in another
# order, which changes the last bits of a float.) An MLP that reads the node features as
# one long vector is not invariant: it has one weight per *position in the list*.

# %%
mlp = nn.Linear(data.num_nodes, 1)
with torch.no_grad():
    print("MLP on the node list, invariant:", torch.allclose(mlp(data.x.T), mlp(data_perm.x.T)))

# %% [markdown]
# ## 3. Node-, edge- and graph-level tasks
#
# A GNN layer maps a graph to a graph with new features on the same nodes and edges. Stacking
# layers gives a deep GNN; what we read out at the end depends on the task:
#
# * **node level**: a property of each node. *Halos*: predict each halo's mass or velocity
#   from its surroundings. Elsewhere: the type of an atom, the community of a user.
# * **edge level**: a property of each pair, or whether an edge should exist (link
#   prediction). *Halos*: do two halos belong to the same group? Elsewhere: does a drug
#   bind to a protein, will two people become friends?
# * **graph level**: one output for the whole graph, after a permutation-invariant
#   **pooling** (sum, mean or max over nodes). *Halos*: the cosmological parameters of the
#   simulation, our task. Elsewhere: the energy of a molecule, the class of a jet.
#
# The same node and edge embeddings serve all three; only the small "head" on top differs:

# %%
node_head = nn.Linear(h.size(1), 1)  # one number per node
edge_head = nn.Linear(2 * h.size(1) + e.size(1), 1)  # one number per edge, from both ends
graph_head = nn.Linear(h.size(1), 1)  # one number per graph, after pooling

src, dst = data.edge_index
with torch.no_grad():
    node_out = node_head(h)
    edge_out = edge_head(torch.cat([h[src], h[dst], e], dim=1))
    graph_out = graph_head(global_mean_pool(h, batch=None))
print(f"{data.num_nodes} nodes, {data.num_edges} edges")
print("node level: ", list(node_out.shape))
print("edge level: ", list(edge_out.shape))
print("graph level:", list(graph_out.shape))

# %% [markdown]
# ## 4. The receptive field
#
# In one message-passing layer a node hears from its direct neighbours. In the next layer
# those neighbours pass on what *they* heard, so after $L$ layers a node's embedding depends
# on every node within $L$ hops: its **receptive field** grows with depth, as for a CNN
# (Bishop, Fig. 13.4).
#
# PyG's `k_hop_subgraph` finds the nodes within $k$ hops. Here they are for one halo of our
# catalog, together with the fraction of the catalog they cover:

# %%
centre = int(torch.argmax(data.x))  # the most massive halo
n_halos = data.num_nodes
hops = {}
for k in range(5):
    subset, sub_edges, _, _ = k_hop_subgraph(
        centre, k, data.edge_index, relabel_nodes=True, num_nodes=n_halos
    )
    hops[k] = (subset, sub_edges)
    print(f"{k} hops: {len(subset):4d} halos ({len(subset) / n_halos:6.1%} of the catalog)")

# %% [markdown]
# and drawn in 3D with `physml.plotting.plot_graph_3d` (each panel shows only the halos
# within $k$ hops and the edges between them; colour and size = mass; an edge that leaves
# the periodic box re-enters on the opposite face):

# %%
catalog = halos.cset[0]  # the catalog behind `data` (after the mass cut)
fig = plt.figure(figsize=(15, 4.5))
for i, k in enumerate((1, 2, 3)):
    ax = fig.add_subplot(1, 3, i + 1, projection="3d")
    subset, sub_edges = hops[k]
    plot_graph_3d(
        catalog.subset(subset.numpy()), sub_edges, ax=ax, title=f"{k} hop(s): {len(subset)} halos"
    )
plt.show()

# %% [markdown]
# The receptive field is not just a picture: it is exactly the set of inputs a node's output
# depends on. With a 3-layer MPGNN, the gradient of halo `centre`'s embedding after $L$
# layers with respect to the input features is non-zero on precisely the $L$-hop
# neighbourhood. (We project the embedding on a random direction: the `LayerNorm` at the end
# of each node update makes the plain *sum* of the embedding a constant.)

# %%
deep = MPGNN(**{**sizes, "n_layers": 3}, n_targets=1, embedding="cartesian")
direction = torch.randn(max(sizes["node_emb_size"], sizes["hidden_size"]))
for n_layers in range(4):
    x = data.x.clone().requires_grad_(True)
    h_l, e_l = deep.embedding(x, data.pos, data.edge_index)
    for layer in deep.layers[:n_layers]:
        h_l, e_l = layer(h_l, data.edge_index, e_l)
    (h_l[centre] * direction[: h_l.size(1)]).sum().backward()
    depends_on = set((x.grad.abs().sum(1) > 0).nonzero().flatten().tolist())
    same = depends_on == set(hops[n_layers][0].tolist())
    print(f"{n_layers} layers: output depends exactly on the {n_layers}-hop set:", same)

# %% [markdown]
# **Physics.** Edges link halos closer than 5 Mpc/h, so $L$ layers see halos up to about
# $5L$ Mpc/h away. The lecture model has two layers: each halo's embedding summarises a
# sphere of about 10 Mpc/h radius, close to the 8 Mpc/h spheres that define $\sigma_8$. The
# final pooling over all halos then averages these local summaries over the whole box.

# %% [markdown]
# ### Exercise 1: the receptive field, by hand
#
# Write `my_k_hop_nodes(edge_index, num_nodes, node, k)`: the nodes whose features can
# influence `node`'s output after `k` message-passing layers, the node itself included,
# without `k_hop_subgraph`. Messages travel along the edges, from `edge_index[0]` (the
# sender $j$) to `edge_index[1]` (the receiver $i$), one step per layer. (Hint: start
# from `{node}` and, `k` times, add every sender of an edge whose receiver is already in
# the set.) The self-check runs it on a small *directed* graph, where the direction of the
# edges matters (our halo graphs are undirected, so there it does not), and names the
# usual slips. Then compare with the gradient test above: why is the set after $L$ layers
# the same as the nodes on which the gradient of the output is non-zero?


# %%
def my_k_hop_nodes(edge_index, num_nodes, node, k):
    """The receptive field of `node` after `k` layers.

    Args:
        edge_index: [2, E] integer tensor, row 0 the senders j, row 1 the receivers i.
        num_nodes: N, the number of nodes.
        node: the node's index, 0 <= node < N.
        k: the number of layers (message-passing steps), >= 0.

    Returns:
        The indices of the nodes within k steps of `node` (it included), a list or a 1-D
        tensor, in any order.
    """
    # SOLUTION START
    # TODO: grow the set from {node}: k times, add the senders of the edges that arrive in it.
    # TODO: for now this returns the node alone.
    # STUDENT: return [node]
    senders, receivers = edge_index
    inside = torch.zeros(num_nodes, dtype=torch.bool)
    inside[node] = True
    for _ in range(k):
        inside[senders[inside[receivers]]] = True  # senders of edges that end inside
    return inside.nonzero().flatten()
    # SOLUTION END


passed, why = check_k_hop_nodes(my_k_hop_nodes)
print("PASS:" if passed else "FAIL:", why)
if passed:  # and on our halo graph, against PyG
    ours = {int(v) for v in my_k_hop_nodes(data.edge_index, n_halos, centre, 2)}
    print(
        "on the halo graph, 2 hops from the most massive halo, same as k_hop_subgraph:",
        ours == set(hops[2][0].tolist()),
    )

# %% [markdown] tags=["solution"]
# **Answer.** A layer computes each node's new features from its own and its senders'
# current features, so after one layer node $i$ depends on $i$ and its senders, after two
# on those and *their* senders, and so on: the set the loop grows is exactly the set of
# inputs that the output can depend on. The gradient test finds the same set because each
# layer's functions (MLPs, sums, max) depend on every input they are given, so the
# derivative is non-zero on every node inside the set (for generic weights) and zero
# outside, where the output does not depend on the input at all.

# %% [markdown]
# ## 5. Simple message passing (Algorithm 13.1)
#
# The simplest GNN that respects the symmetry alternates two steps for every node $n$, in
# every layer $l$:
#
# $$
# \mathbf{z}_n^{(l)}
#   = \operatorname{Aggregate}\big(\{\mathbf{h}_m^{(l)} : m \in \mathcal{N}(n)\}\big),
# \qquad
# \mathbf{h}_n^{(l+1)} = \operatorname{Update}\big(\mathbf{h}_n^{(l)}, \mathbf{z}_n^{(l)}\big),
# $$
#
# starting from $\mathbf{h}_n^{(0)} = \mathbf{x}_n$, with $\mathcal{N}(n)$ the neighbours of
# $n$. *Aggregate* must not depend on the order of the neighbours (a sum, mean or max), and
# *Update* is the same small MLP for every node. Both facts together make the layer
# permutation equivariant, for graphs of any size.
#
# ### From scratch
#
# With the edge list, aggregation is a **scatter**: gather the source features
# `h[src]` (one row per edge) and add each row into the slot of its target node `dst`.
# `torch.Tensor.index_add_` does exactly that; `torch_geometric.utils.scatter` does the
# same and also offers `mean`, `max` and `min`.

# %%
h0 = torch.randn(n_halos, 8)  # some node embeddings, [N, 8]
src, dst = data.edge_index

z_index_add = torch.zeros_like(h0).index_add_(0, dst, h0[src])
z_scatter = scatter(h0[src], dst, dim=0, dim_size=n_halos, reduce="sum")
print("index_add_ == scatter(sum):", torch.allclose(z_index_add, z_scatter, atol=1e-6))

# %% [markdown]
# One layer of Algorithm 13.1, with $\operatorname{Update}(\mathbf{h}, \mathbf{z}) =
# \mathrm{MLP}([\mathbf{h}, \mathbf{z}])$ on the concatenation:


# %%
class SimpleMPLayer(nn.Module):
    """Algorithm 13.1, one layer: z_n = Aggregate(h_m, m in N(n)); h_n' = MLP([h_n, z_n])."""

    def __init__(self, n_in, n_out, aggr="sum"):
        super().__init__()
        self.aggr = aggr
        self.mlp = nn.Sequential(nn.Linear(2 * n_in, n_out), nn.ReLU(), nn.Linear(n_out, n_out))

    def forward(self, h, edge_index):
        src, dst = edge_index  # messages flow from src (neighbour m) to dst (node n)
        z = scatter(h[src], dst, dim=0, dim_size=h.size(0), reduce=self.aggr)
        return self.mlp(torch.cat([h, z], dim=1))


# %% [markdown]
# ### With PyG's `MessagePassing`
#
# PyG packages this pattern in the base class `MessagePassing`: you write `message` (what
# an edge sends, here just the neighbour's features $\mathbf{h}_m$, which PyG calls `h_j`),
# choose `aggr`, and `propagate` does the gathering and scattering. We reuse the same MLP,
# so the two layers must agree to rounding for every aggregation:


# %%
class SimpleMPConv(MessagePassing):
    """Algorithm 13.1 with PyG: the message is the neighbour's embedding h_j."""

    def __init__(self, mlp, aggr="sum"):
        super().__init__(aggr=aggr)  # flow="source_to_target": edge_index[0] sends
        self.mlp = mlp

    def forward(self, h, edge_index):
        z = self.propagate(edge_index, h=h)
        return self.mlp(torch.cat([h, z], dim=1))

    def message(self, h_j):
        return h_j


for aggr in ("sum", "mean", "max"):
    scratch = SimpleMPLayer(8, 16, aggr)
    pyg = SimpleMPConv(scratch.mlp, aggr)
    with torch.no_grad():
        same = torch.allclose(scratch(h0, data.edge_index), pyg(h0, data.edge_index), atol=1e-6)
    print(f"{aggr:>4}: from scratch == MessagePassing:", same)

# %% [markdown]
# Algorithm 13.1 is then just a loop over layers:

# %%
layers = nn.ModuleList([SimpleMPLayer(1, 16), SimpleMPLayer(16, 16), SimpleMPLayer(16, 16)])
h_l = data.x
with torch.no_grad():
    for layer in layers:
        h_l = layer(h_l, data.edge_index)
print("final node embeddings:", list(h_l.shape))

# %% [markdown]
# ## 6. Sum, mean or max?
#
# The common aggregations are
#
# $$
# \sum_{m \in \mathcal{N}(n)} \mathbf{h}_m, \qquad
# \frac{1}{|\mathcal{N}(n)|} \sum_{m \in \mathcal{N}(n)} \mathbf{h}_m, \qquad
# \max_{m \in \mathcal{N}(n)} \mathbf{h}_m \ \text{(per component)} .
# $$
#
# Each forgets something. Take two nodes whose neighbours all carry the same feature,
# $h = 1$: node 0 has two neighbours, node 1 has four. The mean and the max are 1 for both:
# **they cannot count**. The sum can (2 vs 4), but it cannot tell one neighbour with $h = 2$
# (node 2) from two neighbours with $h = 1$ (node 0).

# %%
#            node 0 <- {1, 1}   node 1 <- {1, 1, 1, 1}   node 2 <- {2}
h_toy = torch.tensor([[0.0], [0.0], [0.0], [1], [1], [1], [1], [1], [1], [2]])
src_toy = torch.tensor([3, 4, 5, 6, 7, 8, 9])
dst_toy = torch.tensor([0, 0, 1, 1, 1, 1, 2])

print("node:   0     1     2")
for reduce in ("sum", "mean", "max"):
    z = scatter(h_toy[src_toy], dst_toy, dim=0, dim_size=3, reduce=reduce)
    print(f"{reduce:>4}:", "  ".join(f"{v:4.1f}" for v in z[:, 0].tolist()))

# %% [markdown]
# Counting matters for us: summing the constant 1 over the neighbours of a halo gives its
# **degree**, the number of halos within 5 Mpc/h: a local measure of how strongly the halos
# cluster (averaged over halos it is the pair count, i.e. the correlation function, a
# classic cosmological statistic). A mean-only GNN could not compute it. The lecture model
# therefore concatenates all three ("multipooling", as in the source notebook), and lets
# the MLP of the update pick what it needs.

# %%
ones = torch.ones(data.num_edges, 1)
deg_by_sum = scatter(ones, dst, dim=0, dim_size=n_halos, reduce="sum")[:, 0]
print("sum of ones == degree:", torch.equal(deg_by_sum, degree(dst, n_halos)))
print(f"mean number of halos within 5 Mpc/h: {deg_by_sum.mean():.1f}")

# %% [markdown]
# ### Exercise 2: mean aggregation from a sum
#
# Write `my_mean_aggregation(h, edge_index)`: for every node $i$, the mean of the features
# $\mathbf{h}_j$ of its senders (the edges $j \to i$, `edge_index[0]` to `edge_index[1]`),
# using only `index_add_` (the scatter-sum of section 5), not `scatter(..., reduce="mean")`.
# A node that receives nothing gets zeros, as in PyG. (Hint: the mean is a sum divided by
# a count, and the count is the sum of ones you just saw.) The self-check compares it with
# a loop over the edges of a small directed graph that has a node without senders. Then:
# which of the three toy nodes above would your mean tell apart, and which would it not?


# %%
def my_mean_aggregation(h, edge_index):
    """Mean of the senders' features at each receiver.

    Args:
        h: [N, F] node features.
        edge_index: [2, E] integer tensor, row 0 the senders j, row 1 the receivers i.

    Returns:
        [N, F]: row i the mean of h[j] over the edges j -> i; zeros where there is none.
    """
    # SOLUTION START
    # TODO: sum the senders' rows into their receivers, count the edges each receives,
    # TODO: and divide (a node without senders must get 0, not 0 / 0). For now: zeros.
    # STUDENT: return torch.zeros_like(h)
    senders, receivers = edge_index
    total = torch.zeros_like(h).index_add_(0, receivers, h[senders])
    count = torch.zeros(h.size(0), dtype=h.dtype).index_add_(
        0, receivers, torch.ones(len(receivers), dtype=h.dtype)
    )
    return total / count.clamp(min=1)[:, None]
    # SOLUTION END


passed, why = check_mean_aggregation(my_mean_aggregation)
print("PASS:" if passed else "FAIL:", why)
if passed:  # and on the halo graph, against PyG's scatter mean
    same = torch.allclose(
        my_mean_aggregation(h0, data.edge_index),
        scatter(h0[src], dst, dim=0, dim_size=n_halos, reduce="mean"),
        atol=1e-6,
    )
    print("on the halo graph, same as scatter(..., reduce='mean'):", same)

# %% [markdown] tags=["solution"]
# **Answer.** The mean is 1 at node 0 (neighbours {1, 1}), 1 at node 1 ({1, 1, 1, 1}) and
# 2 at node 2 ({2}): it tells node 2 apart from the other two, but not node 0 from node 1,
# which differ only in how many neighbours they have. The sum does the opposite for nodes 0
# and 2 (2 and 2). Dividing by the count is exactly what removes the number of neighbours.

# %% [markdown]
# ## 7. Edge, node and global updates (Algorithm 13.2)
#
# The general **message-passing network** of Battaglia et al. (2018,
# [arXiv:1806.01261](https://arxiv.org/abs/1806.01261)) keeps embeddings on the edges and on
# the whole graph too, and updates all three in every layer:
#
# $$
# \begin{aligned}
# \mathbf{e}_{nm}^{(l+1)} &= \operatorname{Update}_\text{edge}\big(\mathbf{e}_{nm}^{(l)},
#     \mathbf{h}_n^{(l)}, \mathbf{h}_m^{(l)}, \mathbf{g}^{(l)}\big) && (13.32)\\
# \mathbf{z}_n^{(l+1)} &= \operatorname{Aggregate}_\text{node}\big(\{\mathbf{e}_{nm}^{(l+1)}
#     : m \in \mathcal{N}(n)\}\big) && (13.33)\\
# \mathbf{h}_n^{(l+1)} &= \operatorname{Update}_\text{node}\big(\mathbf{h}_n^{(l)},
#     \mathbf{z}_n^{(l+1)}, \mathbf{g}^{(l)}\big) && (13.34)\\
# \mathbf{g}^{(l+1)} &= \operatorname{Update}_\text{graph}\big(\mathbf{g}^{(l)},
#     \{\mathbf{h}_n^{(l+1)}\}, \{\mathbf{e}_{nm}^{(l+1)}\}\big) && (13.35)
# \end{aligned}
# $$
#
# The messages are now the updated **edges**, which can depend on both end points and on
# the edge's own features (for halos: their separation vector). PyG's `MetaLayer` calls
# three user modules in this order. `physml.models` has the lecture's versions:
#
# | equation | physml module | what it computes |
# |---|---|---|
# | 13.32 | `EdgeModel` | MLP of $[\mathbf{h}_m, \mathbf{h}_n, \mathbf{e}_{nm}]$ |
# | 13.33 | `NodeModel` | sum, max and mean of the incoming $\mathbf{e}_{nm}$ |
# | 13.34 | `NodeModel` | LayerNorm(MLP of $[\text{the three pools}, \mathbf{h}_n]$) |
# | 13.35 | `GlobalModel` | MLP of [sum/100, mean, max of the $\mathbf{h}_n$; $\mathbf{u}$] |
#
# A simplification, as in the source notebook: the edge and node updates do not read
# $\mathbf{g}$, and the graph update reads the input graph feature $\mathbf{u}$ (the log
# number of halos) instead of its previous output. The sum over a few hundred halos is
# divided by 100 so that it enters the MLP on the same scale as the mean and the max.
#
# We run one such layer on a **batch** of two halo graphs. PyG batches graphs by putting
# them side by side as one big disconnected graph; the vector `batch` says which graph each
# node belongs to, so that the global pools stay per graph.

# %%
batch = Batch.from_data_list([halos[0], halos[1]])
print(batch)

embed = CartesianEmbedding(r_link=0.2, node_emb_size=16, edge_emb_size=16, hidden_size=32)
meta = MetaLayer(
    edge_model=EdgeModel(node_in=16, edge_in=16, hidden_size=32, edge_out=32),
    node_model=NodeModel(node_in=16, edge_in=32, hidden_size=32, node_out=32),
    global_model=GlobalModel(node_in=32, global_in=1, hidden_size=32, global_out=8),
)
with torch.no_grad():
    h_in, e_in = embed(batch.x, batch.pos, batch.edge_index, batch.batch)
    h_out, e_out, g_out = meta(h_in, batch.edge_index, e_in, u=batch.u, batch=batch.batch)
print(f"nodes  h: {list(h_in.shape)} -> {list(h_out.shape)}")
print(f"edges  e: {list(e_in.shape)} -> {list(e_out.shape)}")
print(f"graph  u: {list(batch.u.shape)} -> g: {list(g_out.shape)}")

# %% [markdown]
# The same layer written out equation by equation, with the MLPs of the three modules,
# gives the same numbers, which shows exactly what `MetaLayer` does:

# %%
src, dst = batch.edge_index
with torch.no_grad():
    # (13.32) edge update from both end nodes and the edge itself
    e_new = meta.edge_model.edge_mlp(torch.cat([h_in[src], h_in[dst], e_in], dim=1))
    # (13.33) aggregate the new edges arriving at each node: sum, max and mean
    n_nodes = batch.num_nodes
    z = [scatter(e_new, dst, dim=0, dim_size=n_nodes, reduce=r) for r in ("sum", "max", "mean")]
    # (13.34) node update
    h_new = meta.node_model.node_mlp(torch.cat([*z, h_in], dim=1))
    # (13.35) graph update from the pooled nodes of each graph and the graph feature u
    pools = [scatter(h_new, batch.batch, dim=0, reduce=r) for r in ("sum", "mean", "max")]
    pools[0] = pools[0] * meta.global_model.sum_scale  # physml scales the sum by 1/100
    g_new = meta.global_model.mlp(torch.cat([*pools, batch.u], dim=1))

print("edges:", torch.allclose(e_new, e_out, atol=1e-5))
print("nodes:", torch.allclose(h_new, h_out, atol=1e-5))
print("graph:", torch.allclose(g_new, g_out, atol=1e-5))

# %% [markdown]
# **The same edge update with less work.** The first linear layer of the edge MLP multiplies
# the concatenation $[\mathbf{h}_m, \mathbf{h}_n, \mathbf{e}_{nm}]$ by a matrix $W$. Split
# $W$ into three blocks, one per piece:
#
# $$ W[\mathbf{h}_m, \mathbf{h}_n, \mathbf{e}_{nm}] = (W_s\mathbf{h})_m +
# (W_d\mathbf{h})_n + W_e\,\mathbf{e}_{nm}. $$
#
# The products $W_s\mathbf{h}$ and $W_d\mathbf{h}$ are needed once per **node**, not once per
# edge, and a halo graph has about 15 edges per node (printed below). physml's
# `EdgeModel.message` (used by `GraphLayer` inside `MPGNN`) computes the edge update this
# way; likewise the mean pool is the sum pool divided by the number of incoming edges. Same
# numbers, a fraction of the arithmetic:

# %%
w = meta.edge_model.edge_mlp[0].weight  # [hidden, 16 + 16 + 16]
w_s, w_d, w_e = w[:, :16], w[:, 16:32], w[:, 32:]
with torch.no_grad():
    first_cat = torch.cat([h_in[src], h_in[dst], e_in], dim=1) @ w.T
    first_split = (h_in @ w_s.T)[src] + (h_in @ w_d.T)[dst] + e_in @ w_e.T
    e_fast = meta.edge_model.message(h_in, batch.edge_index, e_in)
print("split W:", torch.allclose(first_cat, first_split, atol=1e-5))
print("EdgeModel.message:", torch.allclose(e_fast, e_out, atol=1e-5))
n_edges, n_nodes = batch.num_edges, batch.num_nodes
flops_cat = n_edges * w.shape[1] * w.shape[0]
flops_split = (2 * n_nodes * 16 + n_edges * 16) * w.shape[0]
print(f"{n_edges} edges, {n_nodes} nodes: {n_edges / n_nodes:.1f} edges per node")
print(f"multiply-adds in the first layer: {flops_cat:,} -> {flops_split:,}")

# %% [markdown]
# The lecture model of part 2 (`MPGNN`) is: an embedding of the raw features, two such
# layers without the global model (plus residual connections), and the global model once at
# the end as the readout.
#
# ### Frameworks
#
# We use **PyG** (PyTorch Geometric). Its documentation has a long list of ready-made layers
# (`GCNConv`, `GATConv`, `EdgeConv`, `PointNetConv`, ...), all subclasses of
# `MessagePassing` like our `SimpleMPConv`, which is a good place to start for Task 2.
# The JAX world has **jraph**, TensorFlow has **TF-GNN**; the concepts carry over one to one.
# GNNs are used across physics: event reconstruction at the LHC and in IceCube, learned
# particle simulators, and cosmological inference from galaxies, which is what we do next.

# %% [markdown]
# ## 8. Explicit vs implicit inference, and differentiable simulators
#
# Our goal in part 2 is **inference**: from data $\mathbf{d}$ (a halo catalog) learn the
# parameters $\theta$ ($\sigma_8$) that produced it. We have a simulator: given $\theta$ and
# random initial conditions $\mathbf{s}$, it produces a catalog. How do we turn a simulator
# into a posterior $p(\theta \mid \mathbf{d})$?
#
# * Most simulators are **implicit models**: we can draw samples $\mathbf{d} \sim
#   p(\mathbf{d} \mid \theta)$, but we cannot evaluate the likelihood $\mathcal{L}(\mathbf{d}
#   \mid \theta)$: it would require integrating over all initial conditions that could have
#   led to the data, $p(\mathbf{d} \mid \theta) = \int d\mathbf{s}\, p(\mathbf{d},
#   \mathbf{s} \mid \theta)$. **Simulation-based (implicit) inference** learns from pairs
#   $(\theta_i, \mathbf{d}_i)$ instead: the GNN of part 2, trained on hundreds of simulations
#   to output a mean and a standard deviation of $\sigma_8$, learns the first two moments
#   of the posterior, without ever writing down a likelihood.
# * **Explicit inference** (forward modelling, Bayesian hierarchical modelling) writes the
#   likelihood of the data given *both* the parameters and the initial conditions. For data
#   $\mathbf{d} = f(\mathbf{s}, \theta) + \mathbf{n}$ with Gaussian noise of covariance
#   $N$:
#
# $$ -\log \mathcal{L}(\mathbf{d} \mid \mathbf{s}, \theta) = \tfrac12 \big(f(\mathbf{s},
# \theta) - \mathbf{d}\big)^\top N^{-1} \big(f(\mathbf{s}, \theta) - \mathbf{d}\big) +
# \text{const}, $$
#
#   and then samples the posterior of $\theta$ *and* $\mathbf{s}$ jointly. $\mathbf{s}$ has
#   millions of dimensions (one per grid cell), far too many for ordinary MCMC. Samplers
#   that work there, Hamiltonian Monte Carlo (HMC) and variational inference, need the
#   **gradient** of the likelihood with respect to all of $\mathbf{s}$ and $\theta$, so the
#   forward model must be **differentiable**. This is why differentiable simulators
#   (FlowPM, differentiable N-body codes with the adjoint method) are an active topic.
#
# `physml`'s cosmology and its particle-mesh simulation are written in PyTorch, so autograd
# differentiates through them.
#
# ### Gradients of the linear theory
#
# $\sigma_R$, the rms density contrast in spheres of radius $R$, is proportional to
# $\sigma_8$ at fixed shape of the power spectrum, so $\partial \sigma_R / \partial \sigma_8
# = \sigma_R / \sigma_8$ exactly. Autograd agrees:

# %%
s8 = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
radii = torch.tensor([5.0, 8.0, 12.5], dtype=torch.float64)  # Mpc/h
sigma_R = Cosmology(omega_m=0.3, sigma_8=s8).sigma_r(radii)
grad = torch.stack([torch.autograd.grad(s, s8, retain_graph=True)[0] for s in sigma_R])
print("sigma_R          :", sigma_R.detach().numpy().round(4))
print("d sigma_R/d s8   :", grad.numpy().round(4))
print("equals sigma_R/s8:", torch.allclose(grad, sigma_R.detach() / 0.8))

# %% [markdown]
# The derivative with respect to $\Omega_m$ is less obvious: $\Omega_m$ moves the turnover
# of $P(k)$ (matter-radiation equality), while $\sigma_8$ pins the amplitude at 8 Mpc/h.
# Autograd gives $\partial \ln P / \partial \Omega_m$ at all $k$ at once; a central finite
# difference confirms it.

# %%
k = torch.logspace(-3, 1, 200, dtype=torch.float64)  # h/Mpc


def ln_power(omega_m):
    return torch.log(Cosmology(omega_m=omega_m, sigma_8=0.8).linear_power(k))


om = torch.tensor(0.3, dtype=torch.float64)
dlnp_dom = torch.autograd.functional.jacobian(ln_power, om)  # [200], one derivative per k

step = 1e-4
finite_diff = (ln_power(0.3 + step) - ln_power(0.3 - step)) / (2 * step)
print("autograd == finite difference:", torch.allclose(dlnp_dom, finite_diff, atol=1e-6))

fig, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
ax.semilogx(k, dlnp_dom, label="autograd")
ax.semilogx(k[::10], finite_diff[::10], "o", ms=4, label="finite difference")
ax.axhline(0, color="0.6", lw=0.8)
ax.axvline(2 * math.pi / 25, color="0.6", ls=":", label="box mode $2\\pi/25$ h/Mpc")
ax.set_xlabel("$k$ [h/Mpc]")
ax.set_ylabel(r"$\partial \ln P(k) / \partial \Omega_m$")
ax.legend()
plt.show()

# %% [markdown]
# ### A gradient through an N-body simulation
#
# Now the full forward model $f(\mathbf{s}, \theta)$: Gaussian initial conditions
# $\mathbf{s}$ (a seed), second-order Lagrangian perturbation theory, and a particle-mesh
# N-body run to today, painted on a grid. We use a toy resolution ($16^3$ particles on a
# $16^3$ mesh, 5 time steps; part 2's catalogs use $64^3$ particles, a $128^3$ mesh and 20
# steps) so that one run and its gradient take a fraction of a second.
#
# We make "observed" data $\mathbf{d}$: the density field at $\sigma_8 = 0.85$ plus Gaussian
# noise. Then, keeping the initial conditions fixed (as if $\mathbf{s}$ were known), we scan
# $\sigma_8$ and compute the $\chi^2$ and its derivative $d\chi^2 / d\sigma_8$ by
# backpropagating through every time step of the simulation.

# %%
toy = SimulationConfig(n_particles=16, n_mesh=16, n_steps=5)


def forward_model(sigma_8, omega_m=0.3, seed=42):
    """Density contrast today on the 16^3 mesh, [16, 16, 16], differentiable in sigma_8."""
    cosmo = Cosmology(omega_m, sigma_8)
    x, p = initial_conditions(cosmo, seed, toy)
    x, p = nbody(x, p, cosmo, toy.steps(), toy.n_mesh, toy.box_size)
    return overdensity(x, toy.n_mesh, toy.box_size)


noise = 0.5
with torch.no_grad():
    d_obs = forward_model(0.85) + noise * torch.randn(16, 16, 16)


def chi2(sigma_8):
    return ((forward_model(sigma_8) - d_obs) ** 2).sum() / noise**2


grid = torch.linspace(0.70, 1.00, 6, dtype=torch.float64)  # 0.70, 0.76, ..., 1.00
values, slopes = [], []
for s in grid:
    s = s.clone().requires_grad_(True)
    c = chi2(s)
    (g,) = torch.autograd.grad(c, s)
    values.append(float(c.detach()))
    slopes.append(float(g))
values, slopes = np.array(values), np.array(slopes)

# check one gradient against a central finite difference
with torch.no_grad():
    fd = (chi2(grid[1] + 1e-3) - chi2(grid[1] - 1e-3)) / 2e-3
print(
    f"autograd slope at {grid[1]:.2f} agrees with a finite difference to 2%:",
    abs(slopes[1] / float(fd) - 1) < 0.02,
)
i = int(np.argmax(slopes > 0))
print(f"the slope changes sign between sigma_8 = {grid[i - 1]:.2f} and {grid[i]:.2f}")

# %% [markdown]
# The $\chi^2$ curve with its autograd slopes drawn as short tangents: the gradient points
# downhill towards the true $\sigma_8 = 0.85$.

# %%
fig, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
ax.plot(grid, values - values.min(), "o-", label=r"$\chi^2 - \chi^2_\mathrm{min}$")
half = 0.015
for s, v, g in zip(grid.numpy(), values - values.min(), slopes, strict=True):
    ax.plot([s - half, s + half], [v - g * half, v + g * half], color="tab:red", lw=2)
ax.plot([], [], color="tab:red", lw=2, label=r"slope $d\chi^2/d\sigma_8$ (autograd)")
ax.axvline(0.85, color="0.5", ls=":", label=r"true $\sigma_8$")
ax.set_xlabel(r"$\sigma_8$")
ax.legend()
plt.show()

# %% [markdown]
# With the initial conditions known, this is a one-dimensional fit. In real explicit
# inference $\mathbf{s}$ is unknown, and HMC explores the joint posterior of
# $(\mathbf{s}, \theta)$ in $16^3 + 1$ dimensions here, billions in a survey, using exactly
# these gradients. The alternative is the implicit route of part 2: learn $p(\sigma_8 \mid
# \text{catalog})$ directly from many simulations with a GNN.
#
# ## Summary
#
# * A graph is nodes, edges and (optionally) a global feature; PyG stores it as `x`,
#   `edge_index`, `edge_attr` and `u`. Relabelling the nodes maps $A \to P A P^\top$.
# * Graph-level outputs must be permutation **invariant**, node-level outputs
#   **equivariant**; message passing with an order-independent aggregation guarantees both.
# * After $L$ layers a node sees its $L$-hop neighbourhood.
# * Sum, mean and max each lose information (mean and max cannot count); combining them
#   helps.
# * Algorithm 13.2 updates edges, nodes and the graph in turn; `MetaLayer` wires
#   `EdgeModel`, `NodeModel` and `GlobalModel` together.
# * Explicit inference needs differentiable forward models; implicit (simulation-based)
#   inference only needs samples, which is what the GNN of
#   [part 2](02_sigma8_gnn.ipynb) learns from.

# %% [markdown] tags=["solution"]
# **Notes for instructors.** The student version runs top to bottom with the two stubs;
# their self-checks print FAIL with what is missing ("expected [0, 1, 2, 3, 4], got [4]";
# "largest gap at node ...: 0 instead of ..."), and the comparisons with PyG on the halo
# graph are skipped until a check passes. The mistakes the checks name, each with its
# reason: for the receptive field, the nodes exactly $k$ steps away instead of within $k$,
# a set without the node itself, edges followed from receiver to sender (the toy graph is
# directed for this; on the undirected halo graphs the two agree), and $k - 1$ steps; for
# the mean, the plain sum, aggregation at the senders, the node counted as its own
# neighbour, and NaN at a node without senders (0 / 0). `tests/test_exercise_checks.py`
# feeds each of these mistakes to the checks. The questions after each exercise have their
# answers in this version only.
