# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Task 2: beat the lecture model
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/physml-course/physml/blob/main/lecture14_gnn/04_task2_open_ended.ipynb)
#
# *Lecture 14, Graph Neural Networks.* An open-ended task: build a model that infers
# $\sigma_8$ from the halo catalogs with a smaller relative error $\epsilon$ than the
# lecture's message-passing network. The rules keep the comparison fair:
#
# * the same data and the same fixed train / validation / test split
#   (`physml.graphdata.split_indices`);
# * choose architectures and hyperparameters on the **validation** split (its loss is
#   logged during training); touch the test split once, at the end;
# * report $\epsilon$, $R^2$ and $\chi^2$ on the test split, next to the lecture model and
#   the summary-statistics baseline, with the harness below.

# %% tags=["nbval-ignore-output"]
# Colab: install physml (and what Colab lacks); elsewhere nothing happens.
import subprocess
import sys

PHYSML_INSTALL = "git+https://github.com/physml-course/physml.git@main"
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", PHYSML_INSTALL], check=True)

# %% [markdown]
# ## Ideas
#
# Any of these is a good start; combining two is better.
#
# * **Other graph layers.** PyTorch Geometric has dozens of
#   [convolution layers](https://pytorch-geometric.readthedocs.io/en/latest/modules/nn.html#convolutional-layers)
#   that take `(x, edge_index)` and often `edge_attr`:
#   [`PNAConv`](https://pytorch-geometric.readthedocs.io/en/latest/generated/torch_geometric.nn.conv.PNAConv.html)
#   (several aggregators at once, scaled by the node degree: Corso et al. 2020),
#   [`GATv2Conv`](https://pytorch-geometric.readthedocs.io/en/latest/generated/torch_geometric.nn.conv.GATv2Conv.html)
#   (attention over the neighbours: Brody et al. 2022),
#   [`EdgeConv`](https://pytorch-geometric.readthedocs.io/en/latest/generated/torch_geometric.nn.conv.EdgeConv.html)
#   (an MLP on $[\mathbf{h}_i, \mathbf{h}_j - \mathbf{h}_i]$: Wang et al. 2019) and
#   [`PointNetConv`](https://pytorch-geometric.readthedocs.io/en/latest/generated/torch_geometric.nn.conv.PointNetConv.html)
#   (an MLP on the neighbour's features and relative position: Qi et al. 2017). Feed them
#   invariant edge features (Task 1), pool the nodes per catalog
#   (`torch_geometric.nn.global_mean_pool`, `global_max_pool`, ...) and end with two
#   outputs per target, a mean and a positive standard deviation.
# * **An E(n)-equivariant GNN** (Satorras, Hoogeboom & Welling 2021,
#   [arXiv:2102.09844](https://arxiv.org/abs/2102.09844)). Instead of fixing invariant
#   features by hand, each layer updates node features $\mathbf{h}_i$ *and* coordinates
#   $\mathbf{x}_i$ so that rotating / translating the input rotates / translates the
#   coordinates and leaves the features alone:
#
#   $$
#   \begin{aligned}
#   \mathbf{m}_{ij} &= \phi_e\big(\mathbf{h}_i, \mathbf{h}_j,
#     |\mathbf{x}_i - \mathbf{x}_j|^2\big), \\
#   \mathbf{x}_i' &= \mathbf{x}_i + \sum_{j \neq i}
#       \frac{\mathbf{x}_i - \mathbf{x}_j}{|\mathbf{x}_i - \mathbf{x}_j| + 1}\,
#       \phi_x(\mathbf{m}_{ij}), \\
#   \mathbf{h}_i' &= \phi_h\Big(\mathbf{h}_i, \sum_{j \neq i} e_{ij}\,\mathbf{m}_{ij}\Big),
#   \end{aligned}
#   $$
#
#   with MLPs $\phi_e, \phi_x, \phi_h$ and learned edge weights $e_{ij} \in (0, 1)$. In the
#   periodic box, $\mathbf{x}_i - \mathbf{x}_j$ is the minimum image and $\mathbf{x}_i'$ is
#   wrapped back into the box; a readout that pools the invariant $\mathbf{h}_i$ gives an
#   invariant $\sigma_8$.
# * **Halo velocities.** Each graph also carries `vel`, the halos' peculiar velocities in
#   km/s. Gravity makes halos fall towards each other at a rate set by the growth of
#   structure, $f\sigma_8$ with $f \approx \Omega_m^{0.55}$, while the clustering
#   of positions depends on $\sigma_8$ and $\Omega_m$ in another combination: velocities
#   can break that degeneracy. Use invariants: the speed $|\mathbf{v}_i|$ and the radial
#   relative velocity $(\mathbf{v}_j - \mathbf{v}_i)\cdot\mathbf{n}_{ij}$. (Real CAMELS
#   `halos.npz` files have no velocities.)
# * **Augmentation.** A network that is not invariant by construction (the Cartesian one
#   of the source notebook, a `PointNetConv` on raw displacements) can learn the symmetry
#   from randomly rotated and translated copies of the training catalogs:
#   `make_loaders(..., augment=True)` or `physml.experiment.train(..., augment=True)` apply
#   `physml.graphdata.RandomCubeSymmetry` on the fly. (For an invariant network it changes
#   nothing.)
# * **Hyperparameters.** `physml.experiment.train(out, **hparams)` trains the lecture
#   network with other sizes (`hidden_size`, `n_layers`, `node_emb_size`,
#   `edge_emb_size`), linking radius (`r_link`, box units: the graphs are rebuilt and
#   cached), learning rate (`lr`), `weight_decay` or number of `epochs`. Compare runs by
#   their validation loss. Predicting both parameters (`target="both"`) is worth a try.

# %% [markdown]
# ## The harness
#
# A model takes a batch of graphs from `physml.experiment.make_loaders` (`x`: log mass
# `[N, 1]`, `pos` `[N, 3]` in box units, `edge_index` `[2, E]` the periodic radius graph
# with $r_\mathrm{link} = 0.2$, `u` `[B, 1]` log number of halos, `vel` `[N, 3]` km/s,
# `batch` `[N]`) and returns `(mean, std)`, each `[B, 1]`, for $\sigma_8$.
# `physml.experiment.evaluate_on_test_split(model)` runs it on the test split and returns
# the metrics; `leaderboard({name: metrics, ...})` prints them as a table. The two reference
# rows come from `reference_metrics`, which trains the lecture model (or fits the baseline)
# once per machine and afterwards reads the result back from physml's cache folder (it
# trains again if the data, the hyperparameters or the mode have changed).

# %% tags=["nbval-ignore-output"]
import matplotlib.pyplot as plt

from physml.datasets import load_bundled
from physml.experiment import (
    evaluate_on_test_split,
    fit_model,
    leaderboard,
    make_loaders,
    predict_any,
    reference_metrics,
)
from physml.graphdata import split_indices
from physml.plotting import plot_predictions

plt.rcParams["figure.dpi"] = 100

# %% tags=["nbval-ignore-output"]
rows = {
    "baseline (summary statistics)": reference_metrics("baseline"),
    "lecture GNN (invariant features)": reference_metrics("lecture"),
}
print(leaderboard(rows))

# %% [markdown]
# `physml.experiment.fit_model` trains any such network with the lecture's recipe:
# physml's Lightning module `GNNRegressor` (heteroscedastic loss, AdamW with the lecture's
# learning rate, cosine schedule, best checkpoint on the validation loss) with its network
# swapped for yours. It returns the best checkpoint's model. `make_trainer` seeds every
# random generator, which is why `fit_model` takes a function that builds the network
# rather than the network itself.


# %% [markdown]
# ## Your model
#
# Write your network (an `nn.Module`) and return it from `build_your_model`. The next
# cell trains it with `fit_model` and adds its row to the table; until you fill it in,
# it skips the training. The quickest start is the lecture network with other sizes, e.g.
# `physml.models.MPGNN(r_link=0.2, node_emb_size=16, edge_emb_size=16, hidden_size=64,
# n_layers=3, n_targets=1)`.


# %%
def build_your_model():
    """Your network: an nn.Module, forward(batch) -> (mean, std), each [B, 1]."""
    # TODO: return your network (see the ideas above). While this returns None, the next
    # TODO: cell skips the training.
    return None


# %% tags=["nbval-ignore-output"]
if build_your_model() is None:
    print("build_your_model() returns None: write your model above, then run this again.")
    yours = None
else:
    yours = fit_model(build_your_model, "runs/task2-yours")
    rows["your model"] = evaluate_on_test_split(yours)
print(leaderboard(rows))

# %% [markdown]
# ## Results
#
# The final table, and the predictions of your model on the test catalogs.

# %% tags=["nbval-ignore-output"]
print(leaderboard(rows))
if yours is not None:
    cset = load_bundled("lh")
    loaders, _ = make_loaders(cset, split_indices(len(cset)))
    mean, std, true = predict_any(yours, loaders["test"])
    plot_predictions(true[:, 0], mean[:, 0], std[:, 0], "sigma_8")
    plt.show()

# %% [markdown]
# ## How to read the table
#
# * The test split is small (15 % of the catalogs), so $\epsilon$ itself has an error of a
#   few tenths of a percent: retrain with another `seed` (an argument of `fit_model`)
#   before believing a small difference.
# * $\chi^2 \approx 1$ and coverages near 0.68 / 0.95 mean the predicted uncertainties are
#   honest; a model with a smaller $\epsilon$ but $\chi^2 \gg 1$ is overconfident.
# * A 25 Mpc/h box holds a few hundred halos, and two boxes with the same $\sigma_8$ differ
#   by cosmic variance: no model reaches $\epsilon = 0$. Where the floor lies is a good
#   question to explore with the cosmic-variance set, `load_bundled("cv")` (27 catalogs
#   with the same parameters and different initial seeds).
# * The networks here see the halos' positions, masses (and velocities), each from one
#   simulation code: how well they transfer to other simulations is a separate question
#   (`physml.experiment.evaluate` runs a checkpoint on real CAMELS files).
