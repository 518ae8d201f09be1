r"""The summary-statistics baseline: hand-made catalog statistics fed to a simple regressor.

Every GNN is compared with this yardstick. :func:`summary_statistics` reduces each catalog to
a short feature vector (halo counts above mass thresholds, mean and largest log mass, the
two-point correlation function :math:`\xi(r)`); :func:`fit_baseline` fits a ridge or MLP
regressor that returns a mean and a standard deviation per target; :func:`run_baseline`
does both on a train / validation / test split and scores the test split with
:func:`physml.metrics.summary`.

Units: masses in Msun/h (catalogs store ``1e10 Msun/h``), separations in Mpc/h, positions
in box units.

Why physml owns the regression rather than calling scikit-learn (``StandardScaler``,
``PolynomialFeatures``, ``RidgeCV``): scikit-learn is not a dependency of physml, and the
core install stays lean for students on Colab and laptops; the ridge part is short (an SVD
gives every penalty of the grid, and the exact leave-one-out residuals
:math:`e_i / (1 - H_{ii})` come with it, checked against brute-force refits in
``tests/test_baselines.py``), and the heteroscedastic std is fitted to exactly those
leave-one-out residuals, which a pipeline of scikit-learn estimators does not hand back
without a second, hand-written pass. Switching would also have to reproduce the README's
baseline figures to ~1e-6, which we could not check here (scikit-learn is not installed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import nn

from .catalogs import MASS_UNIT, Catalog, CatalogSet
from .metrics import summary
from .settings import MASS_CUT
from .settings import TARGETS as LECTURE_TARGETS

__all__ = [
    "FEATURE_SETS",
    "KINDS",
    "TARGETS",
    "MLPRegressor",
    "RidgeRegressor",
    "correlation_function",
    "feature_columns",
    "feature_names",
    "fit_baseline",
    "pair_counts",
    "run_baseline",
    "summary_statistics",
    "targets_of",
]

KINDS = ("linear", "quadratic", "mlp")
_PARAMS_COLUMNS = ("Omega_m", "sigma_8")  # CatalogSet.params
#: target name -> (params columns, metric names); params columns are (Omega_m, sigma_8)
TARGETS = {
    name: (tuple(_PARAMS_COLUMNS.index(p) for p in params), params)
    for name, params in LECTURE_TARGETS.items()
}

DEFAULT_MASS_THRESHOLDS = (MASS_CUT, 5e11, 1e12, 3e12, 1e13)  # Msun/h
DEFAULT_SEPARATIONS = (0.5, 1.0, 2.0, 4.0)  # Mpc/h
_ALPHAS = tuple(10.0 ** np.arange(-6, 4))  # ridge penalties tried by leave-one-out
#: subsets of the summary statistics (the information ablation): ``"all"`` (the baseline),
#: ``"abundance"`` (halo counts above the mass thresholds, mean and largest log mass: the
#: mass function) and ``"clustering"`` (:math:`\log_{10}(1 + DD/RR)` at each separation:
#: the two-point function, normalised by the pair count of a random catalog of the same
#: size, so it carries neither the masses nor the number of halos)
FEATURE_SETS = ("all", "abundance", "clustering")


# --------------------------------------------------------------------------- statistics


def pair_counts(pos: np.ndarray, r: Sequence[float]) -> np.ndarray:
    r"""Pair counts :math:`DD(\le r)` in the periodic unit box.

    Args:
        pos: ``[N, 3]`` float, box units in ``[0, 1)``.
        r: ``[R]`` separations, box units, each ``< 0.5``.

    Returns:
        ``[R]`` int64, the number of distinct pairs :math:`i < j` with minimum-image
        separation :math:`\le r` (0 when ``N < 2``).
    """
    r = np.atleast_1d(np.asarray(r, dtype=np.float64))
    if np.any(~np.isfinite(r)) or np.any(r <= 0) or np.any(r >= 0.5):
        raise ValueError(f"r: expected separations in (0, 0.5) box units, got {r.tolist()}")
    x = np.mod(np.asarray(pos, dtype=np.float64).reshape(-1, 3), 1.0)
    x[x >= 1.0] = 0.0
    n = len(x)
    if n < 2:
        return np.zeros(len(r), dtype=np.int64)
    pairs = cKDTree(x, boxsize=1.0).query_pairs(r.max(), output_type="ndarray")
    d = x[pairs[:, 0]] - x[pairs[:, 1]]
    d -= np.round(d)  # minimum image
    dist = np.sort(np.sqrt((d * d).sum(axis=1)))
    return np.searchsorted(dist, r, side="right").astype(np.int64)


def _random_pairs(n: int, r_box: np.ndarray) -> np.ndarray:
    """Analytic random pair count :math:`N(N-1)/2 \\cdot \\tfrac{4}{3}\\pi r^3` (unit volume)."""
    return 0.5 * n * (n - 1) * (4.0 / 3.0) * math.pi * r_box**3


def correlation_function(
    catalog: Catalog, separations: Sequence[float] = DEFAULT_SEPARATIONS, box_size: float = 25.0
) -> np.ndarray:
    r"""Volume-averaged two-point correlation function :math:`\bar\xi(<r) = DD/RR - 1`.

    :math:`DD` from :func:`pair_counts` (periodic), :math:`RR = \frac{N(N-1)}{2}
    \frac{4}{3}\pi r^3 / V` the analytic expectation for a Poisson catalog of the same size.

    Args:
        catalog: the halos.
        separations: ``[R]`` radii, Mpc/h, each ``< box_size / 2``.
        box_size: box side, Mpc/h.

    Returns:
        ``[R]`` float64; 0 when the catalog has fewer than 2 halos.
    """
    r_box = np.asarray(separations, dtype=np.float64) / float(box_size)
    dd = pair_counts(catalog.pos, r_box)
    n = len(catalog)
    if n < 2:
        return np.zeros(len(r_box))
    return dd / _random_pairs(n, r_box) - 1.0


def feature_columns(subset: str, n_thresholds: int, n_separations: int) -> np.ndarray:
    """Indices ``[F]`` of the columns of a :data:`FEATURE_SETS` subset among the
    ``n_thresholds + 2 + n_separations`` columns of all the summary statistics."""
    if subset not in FEATURE_SETS:
        raise ValueError(f"subset: expected one of {FEATURE_SETS}, got {subset!r}")
    n_abundance = n_thresholds + 2
    total = n_abundance + n_separations
    if subset == "abundance":
        return np.arange(n_abundance)
    if subset == "clustering":
        return np.arange(n_abundance, total)
    return np.arange(total)


def feature_names(
    mass_thresholds: Sequence[float] = DEFAULT_MASS_THRESHOLDS,
    separations: Sequence[float] = DEFAULT_SEPARATIONS,
    subset: str = "all",
) -> list[str]:
    """Names of the columns of :func:`summary_statistics`, in order."""
    names = (
        [f"log10(1+N(>{m:.0e}))" for m in mass_thresholds]
        + ["mean_log10_M", "max_log10_M"]
        + [f"log10(1+DD/RR(<{r:g}))" for r in separations]
    )
    return [names[i] for i in feature_columns(subset, len(mass_thresholds), len(separations))]


def summary_statistics(
    cset: CatalogSet,
    mass_thresholds: Sequence[float] = DEFAULT_MASS_THRESHOLDS,
    separations: Sequence[float] = DEFAULT_SEPARATIONS,
    subset: str = "all",
) -> np.ndarray:
    r"""Summary statistics of every catalog of a set (the baseline's features).

    Per catalog, in the order of :func:`feature_names`:

    * :math:`\log_{10}(1 + N(\ge M_k))` for each mass threshold :math:`M_k` (Msun/h);
    * the mean of :math:`\log_{10} M` and :math:`\log_{10} M_\mathrm{max}`, :math:`M` in
      Msun/h; an empty catalog gets :math:`\log_{10}` of the smallest threshold (10 if there
      are no thresholds);
    * :math:`\log_{10}(1 + DD/RR) = \log_{10}(2 + \bar\xi(<r))` at each separation (see
      :func:`correlation_function`); :math:`DD/RR := 1` (no clustering) when ``N < 2``.

    Args:
        cset: ``n`` catalogs; ``cset.box_size`` converts the separations to box units.
        mass_thresholds: ``[K]`` masses, Msun/h.
        separations: ``[R]`` radii, Mpc/h, each ``< cset.box_size / 2``.
        subset: ``"all"``, or only the ``"abundance"`` (``K + 2``) or ``"clustering"``
            (``R``) columns (:data:`FEATURE_SETS`, :func:`feature_columns`).

    Returns:
        ``[n, K + 2 + R]`` float64, finite (fewer columns for a subset).
    """
    thr = np.asarray(mass_thresholds, dtype=np.float64).reshape(-1)
    r_box = np.asarray(separations, dtype=np.float64).reshape(-1) / cset.box_size
    if np.any(~np.isfinite(thr)) or np.any(thr <= 0):
        raise ValueError(f"mass_thresholds: expected masses > 0 Msun/h, got {thr.tolist()}")
    if np.any(~(r_box > 0)) or np.any(r_box >= 0.5):
        raise ValueError(
            f"separations: expected radii in (0, box_size / 2 = {cset.box_size / 2}) Mpc/h, "
            f"got {list(separations)}"
        )
    columns = feature_columns(subset, len(thr), len(r_box))
    empty_log_mass = float(np.log10(thr.min())) if len(thr) else 10.0
    out = np.empty((len(cset), len(thr) + 2 + len(r_box)))
    for i, cat in enumerate(cset.catalogs):
        logm = np.log10(cat.mass.astype(np.float64) * MASS_UNIT)
        n = len(logm)
        logm.sort()
        above = n - np.searchsorted(logm, np.log10(thr), side="left")
        out[i, : len(thr)] = np.log10(1.0 + above)
        out[i, len(thr)] = logm.mean() if n else empty_log_mass
        out[i, len(thr) + 1] = logm[-1] if n else empty_log_mass
        if n >= 2:
            ratio = pair_counts(cat.pos, r_box) / _random_pairs(n, r_box)
        else:
            ratio = np.ones(len(r_box))
        out[i, len(thr) + 2 :] = np.log10(1.0 + ratio)
    return out[:, columns]


def targets_of(cset: CatalogSet, target: str = "sigma8") -> tuple[np.ndarray, list[str]]:
    """Labels for a target: ``"sigma8"`` -> ``[n, 1]`` (sigma_8); ``"both"`` -> ``[n, 2]``
    (sigma_8, Omega_m), reordered from ``cset.params`` = (Omega_m, sigma_8).

    Returns:
        ``(y [n, T] float64, names)``, names as used by :func:`physml.metrics.summary`.
    """
    if target not in TARGETS:
        raise ValueError(f"target: expected one of {tuple(TARGETS)}, got {target!r}")
    cols, names = TARGETS[target]
    return cset.params[:, list(cols)].astype(np.float64), list(names)


# --------------------------------------------------------------------------- regressors


class _Scaler:
    """Column standardisation with statistics of the data it is fitted on (std 0 -> 1)."""

    def __init__(self, x: np.ndarray):
        self.mean = x.mean(axis=0)
        std = x.std(axis=0)
        self.std = np.where(std > 0, std, 1.0)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std


def _check_xy(x, y=None, n_features: int | None = None, name: str = "features"):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or (n_features is not None and x.shape[1] != n_features):
        want = f"[n, {n_features}]" if n_features is not None else "[n, F]"
        raise ValueError(f"{name}: expected shape {want}, got {list(x.shape)}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: contains NaN or inf")
    if y is None:
        return x
    y = np.asarray(y, dtype=np.float64)
    y = y[:, None] if y.ndim == 1 else y
    if y.ndim != 2 or y.shape[0] != x.shape[0]:
        raise ValueError(f"targets: expected shape [{x.shape[0]}, T], got {list(y.shape)}")
    if not np.all(np.isfinite(y)):
        raise ValueError("targets: contain NaN or inf (unknown labels?)")
    return x, y


def _quadratic(z: np.ndarray) -> np.ndarray:
    """``[n, F]`` -> ``[n, F + F(F+1)/2]``: the columns and all degree-2 monomials."""
    i, j = np.triu_indices(z.shape[1])
    return np.concatenate([z, z[:, i] * z[:, j]], axis=1)


def _ridge_loo(phi: np.ndarray, y: np.ndarray, alphas: Sequence[float]):
    r"""Ridge regression with an unpenalised intercept, penalty chosen per target by the
    exact leave-one-out error :math:`e_i / (1 - H_{ii})`.

    Args:
        phi: ``[n, P]`` design (no intercept column); y: ``[n, T]``.

    Returns:
        ``(phi_mean [P], y_mean [T], w [P, T], loo residuals [n, T], alpha [T])``.
    """
    n = len(phi)
    pm, ym = phi.mean(axis=0), y.mean(axis=0)
    u, s, vt = np.linalg.svd(phi - pm, full_matrices=False)
    uty = u.T @ (y - ym)  # [k, T]
    best = None
    for alpha in alphas:
        f = s**2 / (s**2 + alpha)  # shrinkage factors [k]
        fit = u @ (f[:, None] * uty)  # centred fitted values [n, T]
        h = 1.0 / n + (u**2) @ f  # hat diagonal [n]
        loo = (y - ym - fit) / np.clip(1.0 - h, 1e-6, None)[:, None]
        mse = (loo**2).mean(axis=0)
        if best is None:
            best = [mse, np.full(y.shape[1], alpha), loo]
        else:
            better = mse < best[0]
            best[0] = np.where(better, mse, best[0])
            best[1] = np.where(better, alpha, best[1])
            best[2] = np.where(better[None, :], loo, best[2])
    _, alpha, loo = best
    w = np.stack(
        [vt.T @ (s / (s**2 + a) * uty[:, t]) for t, a in enumerate(alpha)], axis=1
    )  # [P, T]
    return pm, ym, w, loo, alpha


class RidgeRegressor:
    r"""Linear or quadratic ridge regression with a heteroscedastic Gaussian uncertainty.

    Fitted by :func:`fit_baseline`. The mean: ridge least squares on the standardised
    features (``"linear"``) or on them and all their degree-2 monomials (``"quadratic"``,
    columns standardised again), intercept unpenalised, targets standardised, the penalty
    :math:`\alpha` per target picked from a grid by exact leave-one-out (LOO) error unless
    given.

    The std (``std_model="linear"``): a ridge regression of :math:`\log e_i^2` on the
    standardised (linear) features, :math:`e_i` the **LOO** residuals on the training set
    (so out-of-sample, not the optimistic in-sample residuals), exponentiated and rescaled
    by one constant per target so that the mean of :math:`e_i^2/\sigma_i^2` over the
    training set is 1 (calibrated :math:`\chi^2`); its log is clipped to the training range
    widened by a factor 4 in variance. ``std_model="constant"``: :math:`\sigma` = the rms
    LOO residual.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        kind: str = "quadratic",
        alpha: float | None = None,
        std_model: str = "linear",
    ):
        if std_model not in ("linear", "constant"):
            raise ValueError(
                f"std_model: expected one of ('linear', 'constant'), got {std_model!r}"
            )
        self.kind = kind
        self.n_features = x.shape[1]
        self.x_scaler = _Scaler(x)
        self.y_scaler = _Scaler(y)
        phi = self._design(x, fit=True)
        alphas = _ALPHAS if alpha is None else (float(alpha),)
        self.phi_mean, self.y_mean, self.w, loo, self.alpha = _ridge_loo(
            phi, self.y_scaler(y), alphas
        )
        self.std_model = std_model
        r2 = loo**2
        if std_model == "constant":
            self.var_w = None
            self.var_scale = r2.mean(axis=0)
        else:
            z = self.x_scaler(x)
            logr2 = np.log(r2 + 1e-12 * max(r2.mean(), 1e-300))
            self.zv_mean, self.lv_mean, self.var_w, _, _ = _ridge_loo(z, logr2, (1.0,))
            g = self._log_var(z)
            self.lv_range = (g.min(axis=0) - math.log(4.0), g.max(axis=0) + math.log(4.0))
            self.var_scale = (r2 / np.exp(g)).mean(axis=0)
        self.var_scale = np.maximum(self.var_scale, 1e-24)

    def _design(self, x: np.ndarray, fit: bool = False) -> np.ndarray:
        z = self.x_scaler(x)
        if self.kind == "linear":
            return z
        phi = _quadratic(z)
        if fit:
            self.phi_scaler = _Scaler(phi)
        return self.phi_scaler(phi)

    def _log_var(self, z: np.ndarray) -> np.ndarray:
        return (z - self.zv_mean) @ self.var_w + self.lv_mean

    def predict(self, features) -> tuple[np.ndarray, np.ndarray]:
        """``features [n, F]`` -> ``(mean [n, T], std [n, T])``, in the targets' units."""
        x = _check_xy(features, n_features=self.n_features)
        mean = (self._design(x) - self.phi_mean) @ self.w + self.y_mean
        if self.var_w is None:
            var = np.broadcast_to(self.var_scale, mean.shape)
        else:
            g = np.clip(self._log_var(self.x_scaler(x)), *self.lv_range)
            var = self.var_scale * np.exp(g)
        std = np.sqrt(var) * self.y_scaler.std
        return mean * self.y_scaler.std + self.y_scaler.mean, std


class MLPRegressor:
    r"""A small MLP with Gaussian outputs, trained full batch on the Gaussian NLL.

    ``F -> hidden -> hidden -> 2T`` (SiLU), mean = first ``T`` outputs, std =
    ``softplus(last T) + 1e-3`` (standardised target units). Adam, ``epochs`` full-batch
    steps, early stopping on the validation set (best NLL kept, ``patience`` steps). The
    validation set is ``(x_val, y_val)`` if given, else a ``val_fraction`` of the training
    set held out at random (``seed``). After training, the std is multiplied by one constant
    per target so that :math:`\chi^2 = 1` on the validation set. Deterministic for a given
    ``seed`` on CPU; torch's global RNG state is left unchanged. Trains on one CPU thread
    (the thread count is restored afterwards): faster for a net this small.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        x_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
        hidden: int = 64,
        epochs: int = 2000,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        patience: int = 200,
        val_fraction: float = 0.2,
        seed: int = 0,
    ):
        if x_val is None:
            if not 0 < val_fraction < 1:
                raise ValueError(f"val_fraction: expected a value in (0, 1), got {val_fraction}")
            perm = np.random.default_rng(seed).permutation(len(x))
            n_val = max(1, int(round(val_fraction * len(x))))
            if len(x) - n_val < 2:
                raise ValueError(f"MLP: {len(x)} training samples are too few to hold some out")
            x, y, x_val, y_val = x[perm[n_val:]], y[perm[n_val:]], x[perm[:n_val]], y[perm[:n_val]]
        self.kind = "mlp"
        self.n_features = x.shape[1]
        self.x_scaler, self.y_scaler = _Scaler(x), _Scaler(y)
        t = y.shape[1]

        def tensor(a):
            return torch.as_tensor(a, dtype=torch.float32)

        xt, yt = tensor(self.x_scaler(x)), tensor(self.y_scaler(y))
        xv, yv = tensor(self.x_scaler(x_val)), tensor(self.y_scaler(y_val))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = nn.Sequential(
                nn.Linear(self.n_features, hidden),
                nn.SiLU(),
                nn.Linear(hidden, hidden),
                nn.SiLU(),
                nn.Linear(hidden, 2 * t),
            )
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a tiny full-batch net: threads only add overhead
        try:
            self._train(xt, yt, xv, yv, epochs, lr, weight_decay, patience)
        finally:
            torch.set_num_threads(threads)
        with torch.no_grad():
            mu, sd = self._forward(xv)
            self.std_scale = torch.sqrt((((mu - yv) / sd) ** 2).mean(dim=0)).numpy()

    def _train(self, xt, yt, xv, yv, epochs, lr, weight_decay, patience) -> None:
        opt = torch.optim.Adam(self.net.parameters(), lr=lr, weight_decay=weight_decay)
        best, best_state, since = math.inf, None, 0
        self.epochs_run = 0
        for _ in range(int(epochs)):
            self.epochs_run += 1
            self.net.train()
            opt.zero_grad()
            loss = self._nll(xt, yt)
            loss.backward()
            opt.step()
            self.net.eval()
            with torch.no_grad():
                val = float(self._nll(xv, yv))
            if val < best:
                best, since = val, 0
                best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
            else:
                since += 1
                if since > patience:
                    break
        if best_state is not None:
            self.net.load_state_dict(best_state)
        self.net.eval()
        self.best_val_nll = best

    def _forward(self, x: torch.Tensor):
        out = self.net(x)
        t = out.shape[1] // 2
        return out[:, :t], nn.functional.softplus(out[:, t:]) + 1e-3

    def _nll(self, x, y):
        mu, sd = self._forward(x)
        return (torch.log(sd) + 0.5 * ((y - mu) / sd) ** 2).mean()

    def predict(self, features) -> tuple[np.ndarray, np.ndarray]:
        """``features [n, F]`` -> ``(mean [n, T], std [n, T])``, in the targets' units."""
        x = _check_xy(features, n_features=self.n_features)
        with torch.no_grad():
            mu, sd = self._forward(torch.as_tensor(self.x_scaler(x), dtype=torch.float32))
        mu, sd = mu.double().numpy(), sd.double().numpy() * self.std_scale
        return mu * self.y_scaler.std + self.y_scaler.mean, sd * self.y_scaler.std


def fit_baseline(
    features_train,
    y_train,
    kind: str = "quadratic",
    features_val=None,
    y_val=None,
    **kwargs,
) -> RidgeRegressor | MLPRegressor:
    r"""Fits a baseline regressor.

    Args:
        features_train: ``[n, F]`` float, e.g. from :func:`summary_statistics`.
        y_train: ``[n]`` or ``[n, T]`` targets.
        kind: ``"linear"`` or ``"quadratic"`` (:class:`RidgeRegressor`; kwargs ``alpha``,
            ``std_model``) or ``"mlp"`` (:class:`MLPRegressor`; kwargs ``hidden``,
            ``epochs``, ``lr``, ``weight_decay``, ``patience``, ``val_fraction``, ``seed``).
            Features (and targets) are standardised with training statistics only.
        features_val, y_val: optional validation set, used by ``"mlp"`` for early stopping
            and std calibration (ignored by the ridge kinds, which use leave-one-out).

    Returns:
        a fitted model; ``model.predict(features [m, F])`` -> ``(mean [m, T], std [m, T])``
        (always 2-D, ``T = 1`` for 1-D ``y_train``).
    """
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    x, y = _check_xy(features_train, y_train, name="features_train")
    if kind == "mlp":
        if features_val is not None:
            if y_val is None:
                raise ValueError("y_val: required with features_val")
            features_val, y_val = _check_xy(
                features_val, y_val, n_features=x.shape[1], name="features_val"
            )
        return MLPRegressor(x, y, features_val, y_val, **kwargs)
    if len(x) < 3:
        raise ValueError(f"features_train: need at least 3 samples, got {len(x)}")
    return RidgeRegressor(x, y, kind=kind, **kwargs)


def run_baseline(
    cset: CatalogSet,
    split: dict,
    target: str = "sigma8",
    kind: str = "quadratic",
    features: np.ndarray | None = None,
    subset: str = "all",
    **kwargs,
) -> dict:
    r"""Fits the baseline on ``split["train"]`` and scores it on ``split["test"]``.

    Args:
        cset: the catalogs with their labels.
        split: ``{"train", "val", "test"}`` integer index arrays into ``cset`` (``"val"``
            optional; used by ``kind="mlp"`` for early stopping).
        target: ``"sigma8"`` (sigma_8) or ``"both"`` (sigma_8, Omega_m).
        kind: see :func:`fit_baseline`.
        features: ``[len(cset), F]`` precomputed :func:`summary_statistics` (computed if
            ``None``).
        subset: the columns computed when ``features`` is ``None``: ``"all"``,
            ``"abundance"`` or ``"clustering"`` (:data:`FEATURE_SETS`).
        **kwargs: passed to :func:`fit_baseline`.

    Returns:
        ``{"metrics": ..., "pred": ..., "std": ..., "true": ..., "names": ..., "model": ...}``:
        ``physml.metrics.summary(...)`` on the test split, the predictions, standard
        deviations and truths ``[n_test, T]``, the target names and the fitted model.
    """
    if target not in TARGETS:
        raise ValueError(f"target: expected one of {tuple(TARGETS)}, got {target!r}")
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    for key in ("train", "test"):
        if key not in split:
            raise ValueError(f"split: missing key {key!r} (has {sorted(split)})")
    if features is None:
        features = summary_statistics(cset, subset=subset)
    features = np.asarray(features, dtype=np.float64)
    if features.shape[0] != len(cset):
        raise ValueError(f"features: {features.shape[0]} rows for {len(cset)} catalogs")
    y, names = targets_of(cset, target)
    idx = {k: np.asarray(v, dtype=np.int64) for k, v in split.items()}
    val = {}
    if kind == "mlp" and "val" in idx and len(idx["val"]):
        val = {"features_val": features[idx["val"]], "y_val": y[idx["val"]]}
    model = fit_baseline(features[idx["train"]], y[idx["train"]], kind=kind, **val, **kwargs)
    pred, std = model.predict(features[idx["test"]])
    true = y[idx["test"]]
    return {
        "metrics": summary(pred, std, true, names),
        "pred": pred,
        "std": std,
        "true": true,
        "names": names,
        "model": model,
    }
