"""Neural posterior estimation (NPE) of theta = (Omega_m, sigma_8) from halo catalogs.

A conditional normalizing flow q(theta | c) (``zuko``'s neural spline flow) is trained
on simulated pairs (theta, catalog) by maximising log q(theta | c(catalog)), where the
context c is either

* the lecture GNN's graph embedding (:class:`GraphEmbedding`: the ``MPGNN`` with a wider
  readout, trained end to end with the flow), or
* an MLP of the summary statistics of :mod:`physml.baselines` (:class:`SummaryEmbedding`),

so that the two summaries are compared with one inference method. Diagnostics: marginal
widths, the TARP coverage test (``tarp``, Lemos et al. 2023) and SBC rank statistics.

theta is always ordered (Omega_m, sigma_8) here (the graphs' ``y`` is (sigma_8, Omega_m)).
Needs the optional extra ``supplements`` (zuko, tarp).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import zuko
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from ._checks import (
    _check_count,
    _check_finite_values,
    _check_real,
    _check_shape,
    _check_within,
)
from .baselines import summary_statistics
from .cosmology import PRIOR_RANGES
from .experiment import LECTURE_HPARAMS  # the lecture model's sizes
from .flows import THETA_NAMES, _theta_to_unit
from .models import MPGNN, GlobalModel
from .training import LossHistory, make_trainer

_LO = torch.tensor([PRIOR_RANGES[k][0] for k in THETA_NAMES], dtype=torch.float32)
_HI = torch.tensor([PRIOR_RANGES[k][1] for k in THETA_NAMES], dtype=torch.float32)
#: how close to the prior's edge (in units of the half width) a training theta is taken
_EDGE = 1e-6


def unit_to_theta(u: Tensor) -> Tensor:
    """Inverse of :func:`physml.flows.theta_to_unit`: [-1, 1]^2 -> (Omega_m, sigma_8).

    u: ``[..., 2]``, finite and inside [-1, 1]^2 (to a few float eps): a u outside would
    give a theta outside the prior box. Returns ``[..., 2]``."""
    where = "unit_to_theta"
    if not torch.is_tensor(u) or not u.is_floating_point() or u.dim() < 1 or u.shape[-1] != 2:
        got = list(u.shape) if torch.is_tensor(u) else type(u).__name__
        raise ValueError(f"{where}: u must be a float tensor [..., 2], got {got}")
    _check_finite_values(u, "u", where)
    tol = 8 * torch.finfo(u.dtype).eps
    _check_within(u, "u", where, [-1, -1], [1, 1], "the unit box", tol=tol)
    lo, hi = _LO.to(u), _HI.to(u)
    return lo + (u + 1) * (hi - lo) / 2


class GraphEmbedding(nn.Module):
    """The lecture GNN up to its readout, with a readout of ``context`` features.

    forward(batch of graphs) -> ``[B, context]``. Sizes: :data:`LECTURE_HPARAMS`.
    """

    def __init__(self, context: int = 16, embedding: str = "invariant"):
        super().__init__()
        _check_count(context, "context", "GraphEmbedding")
        h = {k: v for k, v in LECTURE_HPARAMS.items() if k != "lr"}
        self.gnn = MPGNN(**h, n_targets=2, embedding=embedding)
        self.gnn.readout = GlobalModel(h["hidden_size"], 1, h["hidden_size"], context)

    def forward(self, batch) -> Tensor:
        return self.gnn.readout_features(batch)


class SummaryEmbedding(nn.Module):
    """MLP of standardised summary statistics ``[B, F]`` -> ``[B, context]``."""

    def __init__(self, n_features: int, context: int = 16, hidden: int = 64):
        super().__init__()
        _check_count(n_features, "n_features", "SummaryEmbedding")
        _check_count(context, "context", "SummaryEmbedding")
        _check_count(hidden, "hidden", "SummaryEmbedding")
        self.net = nn.Sequential(
            nn.Linear(n_features, hidden), nn.SiLU(), nn.Linear(hidden, context)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def _inputs_and_theta(batch) -> tuple[object, Tensor]:
    if isinstance(batch, (list, tuple)):  # summary statistics: (features, theta)
        return batch[0], batch[1]
    y = batch.y  # graphs: y = (sigma_8, Omega_m)
    return batch, torch.stack([y[:, 1], y[:, 0]], -1)


class NPE(pl.LightningModule):
    """q(theta | embedding(x)): a ``zuko`` neural spline flow, its context from
    ``embedding``; trained with AdamW on -log q.

    The flow acts on v = atanh(u), u = theta scaled to [-1, 1]^2 (the prior box), so
    that q has the prior's support: no posterior mass leaks outside the box (an
    unbounded flow over u put mass below Omega_m = 0.1), and log q(theta) carries the
    Jacobians of both maps; it is -inf outside the box.

    Args:
        embedding: :class:`GraphEmbedding` or :class:`SummaryEmbedding`.
        context: its output size.
        transforms: spline transforms of the flow; hidden: their MLP width.
        lr, weight_decay: AdamW.
    """

    def __init__(
        self,
        embedding: nn.Module,
        context: int = 16,
        transforms: int = 3,
        hidden: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
    ):
        super().__init__()
        if not isinstance(embedding, nn.Module):
            raise ValueError(f"NPE: embedding must be an nn.Module, got {type(embedding).__name__}")
        for name, v in (("context", context), ("transforms", transforms), ("hidden", hidden)):
            _check_count(v, name, "NPE")
        _check_real(lr, "lr", "NPE", low=0)
        _check_real(weight_decay, "weight_decay", "NPE", low=0, low_open=False)
        self.save_hyperparameters(ignore=["embedding"])
        self.embedding = embedding
        self.flow = zuko.flows.NSF(2, context, transforms=transforms, hidden_features=[hidden] * 2)
        # log |d u / d theta| of the scaling to [-1, 1]^2
        self.log_jac = float(torch.log(2 / (_HI - _LO)).sum())

    def log_prob(self, batch) -> Tensor:
        """log q(theta_true | x) ``[B]`` in nats per unit of (Omega_m, sigma_8); -inf
        outside the prior box (and for a NaN theta). Shapes are checked, values not (this is
        the training loop; :func:`summary_loaders` checks the labels once)."""
        x, theta = _inputs_and_theta(batch)
        _check_shape(theta, "theta", "NPE.log_prob", (None, 2), "[B, 2] = (Omega_m, sigma_8)")
        u = _theta_to_unit(theta.float())
        inside = (u.abs() < 1).all(-1)
        u = u.clamp(-1 + _EDGE, 1 - _EDGE)
        # log |dv / du| = -sum log(1 - u^2) for v = atanh(u)
        lp = self.flow(self.embedding(x)).log_prob(torch.atanh(u)) - torch.log1p(-u * u).sum(-1)
        return torch.where(inside, lp + self.log_jac, torch.full_like(lp, -torch.inf))

    def _step(self, batch, stage: str) -> Tensor:
        loss = -self.log_prob(batch).mean()
        n = batch[0].shape[0] if isinstance(batch, (list, tuple)) else batch.num_graphs
        on_bar = stage == "val"
        self.log(f"{stage}_loss", loss, prog_bar=on_bar, on_step=False, on_epoch=True, batch_size=n)
        return loss

    def training_step(self, batch, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> Tensor:
        return self._step(batch, "val")

    def configure_optimizers(self):
        return torch.optim.AdamW(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )

    @torch.no_grad()
    def sample(self, loader, n_samples: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """Posterior samples for every item of a loader.

        Returns (samples ``[n_samples, n_items, 2]``, theta_true ``[n_items, 2]``), both in
        (Omega_m, sigma_8), numpy float64.
        """
        _check_count(n_samples, "n_samples", "NPE.sample")
        self.eval()
        out, true = [], []
        for batch in loader:
            batch = (
                batch.to(self.device)
                if hasattr(batch, "to")
                else [b.to(self.device) for b in batch]
            )
            x, theta = _inputs_and_theta(batch)
            v = self.flow(self.embedding(x)).sample((n_samples,))
            out.append(unit_to_theta(torch.tanh(v)).cpu())
            true.append(theta.cpu())
        return torch.cat(out, 1).double().numpy(), torch.cat(true).double().numpy()


# --------------------------------------------------------------------------- data
def summary_loaders(cset, split: dict, batch_size: int = 32, features=None) -> dict:
    """DataLoaders of (standardised summary statistics ``[F]``, theta ``[2]``) per part of
    the split; standardised with the training part's mean and std. The labels (Omega_m,
    sigma_8) must be finite (no unknown Omega_m) and the features finite."""
    where = "summary_loaders"
    _check_count(batch_size, "batch_size", where)
    if not isinstance(split, dict) or "train" not in split:
        raise ValueError(f"{where}: split must be a dict of index arrays with a 'train' part")
    f = summary_statistics(cset) if features is None else np.asarray(features)
    _check_shape(f, "features", where, (len(cset.params), None), f"[{len(cset.params)}, F]")
    _check_finite_values(f, "features", where)
    _check_finite_values(
        np.asarray(cset.params)[:, [0, 1]], "cset.params (Omega_m, sigma_8)", where
    )
    tr = f[split["train"]]
    mean, std = tr.mean(0), tr.std(0) + 1e-8
    theta = cset.params[:, [0, 1]]  # params = (Omega_m, sigma_8)
    loaders = {}
    for part, idx in split.items():
        ds = TensorDataset(
            torch.tensor((f[idx] - mean) / std, dtype=torch.float32),
            torch.tensor(theta[idx], dtype=torch.float32),
        )
        loaders[part] = DataLoader(ds, batch_size=batch_size, shuffle=part == "train")
    return loaders


def fit_npe(
    kind: str,
    loaders: dict,
    epochs: int,
    out_dir,
    seed: int = 0,
    fast: bool = False,
    progress: bool = False,
    n_features: int | None = None,
    lr: float = 1e-3,
    patience: int = 10,
) -> NPE:
    """Trains an NPE (``kind`` = ``"gnn"`` or ``"summary"``) with Lightning on
    ``loaders["train"]``, early stopping on ``loaders["val"]`` after ``patience`` epochs
    without improvement; returns the best model (lowest validation loss), with its loss
    curves as ``model.history``: ``{"train": [...], "val": [...], "best_epoch": k}``, the
    epoch means of -log q(theta | x) (nats per item) and the 1-based epoch whose weights
    were kept. Augmentation, if any, is the loaders' (``make_loaders(..., augment=True)``)."""
    if kind not in ("gnn", "summary"):
        raise ValueError(f"fit_npe: kind: expected 'gnn' or 'summary', got {kind!r}")
    if not isinstance(loaders, dict) or not {"train", "val"} <= set(loaders):
        raise ValueError("fit_npe: loaders must be a dict with 'train' and 'val' loaders")
    _check_count(epochs, "epochs", "fit_npe")
    _check_count(seed, "seed", "fit_npe", minimum=0)
    _check_real(lr, "lr", "fit_npe", low=0)
    _check_count(patience, "patience", "fit_npe")
    if kind == "summary":
        _check_count(n_features, "n_features (needed for kind='summary')", "fit_npe")
    trainer = make_trainer(
        epochs,
        Path(out_dir),
        patience=patience,
        fast=fast,
        progress=progress,
        seed=seed,
        average="none",  # the flow's validation loss judges the raw weights
        logger=False,
    )
    history = LossHistory()
    trainer.callbacks.append(history)
    if kind == "gnn":
        emb = GraphEmbedding()
    else:
        emb = SummaryEmbedding(n_features)
    model = NPE(emb, lr=lr)
    trainer.fit(model, loaders["train"], loaders["val"])
    best = trainer.checkpoint_callback.best_model_path
    if best:
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        model.load_state_dict(state)
    model.history = history.as_dict()
    return model.cpu()


# --------------------------------------------------------------------------- diagnostics
def _check_posteriors(samples, theta, where: str, min_samples: int = 1):
    """samples ``[S, n, 2]`` and theta ``[n, 2]``, numbers, finite; returns them as arrays."""
    samples, theta = np.asarray(samples), np.asarray(theta)
    for name, arr in (("samples", samples), ("theta", theta)):
        if arr.dtype.kind not in "fiu":
            raise ValueError(f"{where}: {name} must be numbers, got {arr.dtype}")
    _check_shape(samples, "samples", where, (None, None, 2), "[S, n, 2]")
    n_samples, n_items = samples.shape[:2]
    if n_samples < min_samples:
        raise ValueError(f"{where}: samples: need S >= {min_samples} samples, got {n_samples}")
    _check_shape(theta, "theta", where, (n_items, 2), f"[n, 2] with n = {n_items} (samples)")
    _check_finite_values(samples, "samples", where)
    _check_finite_values(theta, "theta", where)
    return samples, theta


def tarp_coverage(samples: np.ndarray, theta: np.ndarray, seed: int = 0):
    """TARP expected coverage (``tarp.get_tarp_coverage`` with random references in the
    normalised parameter box). samples ``[S, n, 2]``, theta ``[n, 2]``.
    Returns (credibility levels alpha, expected coverage ecp), ``[n // 10 + 1]`` each."""
    import tarp

    samples, theta = _check_posteriors(samples, theta, "tarp_coverage")
    _check_count(seed, "seed", "tarp_coverage", minimum=0)

    lo, hi = _LO.double().numpy(), _HI.double().numpy()
    s = (samples - lo) / (hi - lo)
    t = (theta - lo) / (hi - lo)
    ecp, alpha = tarp.get_tarp_coverage(s, t, references="random", metric="euclidean", seed=seed)
    return alpha, ecp


def tarp_deviation(samples: np.ndarray, theta: np.ndarray, seed: int = 0) -> float:
    """Largest distance of the TARP curve from the diagonal, max |ecp - alpha|, of
    :func:`tarp_coverage`. samples ``[S, n, 2]``, theta ``[n, 2]``."""
    alpha, ecp = tarp_coverage(samples, theta, seed=seed)
    return float(np.abs(ecp - alpha).max())


def tarp_noise(
    samples: np.ndarray, theta: np.ndarray, n_draws: int = 200, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """How much :func:`tarp_deviation` scatters at this number of test items, two ways.

    * bootstrap ``[n_draws]``: the deviation for the test items resampled with
      replacement (fresh reference points each draw): the uncertainty of the measured
      deviation;
    * calibrated ``[n_draws]``: the deviation when each item's truth is replaced by one of
      its own posterior samples (taken out of the samples), so that the posteriors are
      calibrated by construction: what a perfect posterior would show with this many items.

    samples ``[S, n, 2]``, theta ``[n, 2]``, S >= 2.
    """
    samples, theta = _check_posteriors(samples, theta, "tarp_noise", min_samples=2)
    n_draws = _check_count(n_draws, "n_draws", "tarp_noise")
    _check_count(seed, "seed", "tarp_noise", minimum=0)
    n_samples, n_items = samples.shape[:2]
    rng = np.random.default_rng(seed)
    items = np.arange(n_items)
    boot, calibrated = np.empty(n_draws), np.empty(n_draws)
    for d in range(n_draws):
        idx = rng.integers(0, n_items, n_items)
        boot[d] = tarp_deviation(samples[:, idx], theta[idx], seed=seed + 1 + d)
        j = rng.integers(0, n_samples, n_items)
        fake = samples[j, items]
        rest = samples.copy()
        rest[j, items] = samples[-1, items]  # the drawn sample leaves, the last one fills in
        calibrated[d] = tarp_deviation(rest[:-1], fake, seed=seed + 1 + d)
    return boot, calibrated


def sbc_ranks(samples: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Rank of each true value among its posterior samples, per parameter: ``[n, 2]``
    integers in [0, S]; uniform for a calibrated posterior (simulation-based calibration)."""
    samples, theta = _check_posteriors(samples, theta, "sbc_ranks")
    return (samples < theta[None]).sum(0)


def marginal_widths(samples: np.ndarray) -> np.ndarray:
    """Posterior standard deviation of each parameter for each item, ``[n, 2]``; samples
    ``[S >= 2, n, 2]``."""
    samples = np.asarray(samples)
    _check_shape(samples, "samples", "marginal_widths", (None, None, 2), "[S, n, 2]")
    if samples.shape[0] < 2:
        raise ValueError(f"marginal_widths: samples: need S >= 2, got {samples.shape[0]}")
    _check_finite_values(samples, "samples", "marginal_widths")
    return samples.std(0)


def rank_histogram_chi2(ranks: np.ndarray, n_samples: int, n_bins: int = 10) -> np.ndarray:
    """Pearson chi^2 of the rank histogram against uniform, per parameter ``[2]``
    (expected value n_bins - 1 for calibrated posteriors). ranks: ``[n, P]`` integers in
    [0, n_samples] (:func:`sbc_ranks`)."""
    where = "rank_histogram_chi2"
    n_samples = _check_count(n_samples, "n_samples", where)
    n_bins = _check_count(n_bins, "n_bins", where)
    ranks = np.asarray(ranks)
    _check_shape(ranks, "ranks", where, (None, None), "[n, P]")
    if ranks.dtype.kind not in "iu" or ranks.min() < 0 or ranks.max() > n_samples:
        raise ValueError(
            f"{where}: ranks must be integers in [0, n_samples = {n_samples}], got "
            f"{ranks.dtype} in [{ranks.min()}, {ranks.max()}]"
        )
    edges = np.linspace(0, n_samples + 1, n_bins + 1)
    out = []
    for j in range(ranks.shape[1]):
        h, _ = np.histogram(ranks[:, j], edges)
        e = len(ranks) / n_bins
        out.append(float(((h - e) ** 2 / e).sum()))
    return np.array(out)


def banana_coordinate(theta: np.ndarray) -> np.ndarray:
    """S_8-like combination sigma_8 Omega_m^0.5 of theta ``[..., 2]``: the direction the
    halo catalogs constrain best. Omega_m must be >= 0."""
    theta = np.asarray(theta)
    if theta.ndim < 1 or theta.shape[-1] != 2:
        raise ValueError(
            f"banana_coordinate: theta must have shape [..., 2], got {list(theta.shape)}"
        )
    _check_finite_values(theta, "theta", "banana_coordinate")
    if (theta[..., 0] < 0).any():
        raise ValueError("banana_coordinate: theta: Omega_m must be >= 0")
    return theta[..., 1] * np.sqrt(theta[..., 0])
