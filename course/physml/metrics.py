r"""Scores of point predictions with uncertainties: :math:`\epsilon`, :math:`r^2`,
:math:`\chi^2`, coverage.

Inputs are numpy arrays (or anything :func:`numpy.asarray` takes) of shape ``[n]`` (one
target) or ``[n, T]`` (``T`` targets, one column each): ``pred`` the predicted means,
``std`` the predicted standard deviations (> 0), ``true`` the true values. A ``[n]`` input
gives a Python ``float``; a ``[n, T]`` input gives a float64 array ``[T]``, one value per
column. :func:`summary` collects everything in a plain (JSON-serialisable) dict.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm

__all__ = [
    "bootstrap_interval",
    "chi2",
    "coverage",
    "epsilon",
    "r2",
    "seed_summary",
    "summary",
]


def _arrays(**named) -> list[np.ndarray]:
    """float64 copies, checked: same shape, 1-D or 2-D, at least one row, all finite."""
    out = []
    shape = None
    for name, value in named.items():
        a = np.asarray(value, dtype=np.float64)
        if a.ndim not in (1, 2):
            raise ValueError(f"{name}: expected shape [n] or [n, T], got {list(a.shape)}")
        if shape is None:
            shape = a.shape
        elif a.shape != shape:
            first = next(iter(named))
            raise ValueError(f"{name}: shape {list(a.shape)} differs from {first}'s {list(shape)}")
        if a.shape[0] == 0:
            raise ValueError(f"{name}: no entries (shape {list(a.shape)})")
        if not np.all(np.isfinite(a)):
            raise ValueError(
                f"{name}: contains NaN or inf ({int(np.sum(~np.isfinite(a)))} entries)"
            )
        out.append(a)
    return out


def _check_std(std: np.ndarray) -> None:
    if np.any(std <= 0):
        raise ValueError(f"std: expected > 0 everywhere, got min {std.min():.6g}")


def _out(v):
    v = np.asarray(v, dtype=np.float64)
    return float(v) if v.ndim == 0 else v


def epsilon(pred, true):
    r"""Mean relative error :math:`\epsilon = \frac{1}{n}\sum_k |\hat y_k - y_k| / |y_k|`.

    Relative to the **truth** :math:`y_k` (the source notebook divided by the prediction
    :math:`\hat y_k`, which rewards over-prediction). A fraction, not a percentage.

    Args:
        pred: ``[n]`` or ``[n, T]`` predictions.
        true: same shape, true values (non-zero).

    Returns:
        ``float`` (1-D input) or ``[T]`` array.
    """
    pred, true = _arrays(pred=pred, true=true)
    if np.any(true == 0):
        raise ValueError("true: contains zeros, the relative error is undefined")
    return _out(np.mean(np.abs(pred - true) / np.abs(true), axis=0))


def r2(pred, true):
    r"""Coefficient of determination :math:`r^2 = 1 - \sum_k (\hat y_k - y_k)^2 /
    \sum_k (y_k - \bar y)^2`.

    1 for perfect predictions, 0 for always predicting the mean :math:`\bar y` of the truth,
    negative for worse. NaN for a column whose truth is constant (e.g. ``n = 1``).

    Args:
        pred: ``[n]`` or ``[n, T]`` predictions.
        true: same shape, true values.

    Returns:
        ``float`` (1-D input) or ``[T]`` array.
    """
    pred, true = _arrays(pred=pred, true=true)
    ss_res = np.sum((pred - true) ** 2, axis=0)
    ss_tot = np.sum((true - true.mean(axis=0)) ** 2, axis=0)
    # constant up to rounding (e.g. float32 labels of one cosmology) counts as constant
    varies = ss_tot > 1e-20 * len(true) * np.max(true**2, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(varies, 1 - ss_res / np.where(varies, ss_tot, 1), np.nan)
    return _out(value)


def chi2(pred, std, true):
    r"""Reduced :math:`\chi^2 = \frac{1}{n}\sum_k \big((\hat y_k - y_k)/\sigma_k\big)^2`.

    About 1 when the residuals are Gaussian with the predicted :math:`\sigma_k`; > 1 when
    the uncertainties are too small (over-confident), < 1 when too large.

    Args:
        pred: ``[n]`` or ``[n, T]`` predicted means.
        std: same shape, predicted standard deviations (> 0).
        true: same shape, true values.

    Returns:
        ``float`` (1-D input) or ``[T]`` array.
    """
    pred, std, true = _arrays(pred=pred, std=std, true=true)
    _check_std(std)
    return _out(np.mean(((pred - true) / std) ** 2, axis=0))


def coverage(pred, std, true, level: float = 0.68):
    r"""Fraction of true values inside the central ``level`` Gaussian interval:
    :math:`\frac{1}{n}\#\{k : |\hat y_k - y_k| \le z\,\sigma_k\}` with
    :math:`z = \Phi^{-1}\big((1 + \text{level})/2\big)` (:math:`z = 0.994` for 0.68,
    :math:`1.960` for 0.95).

    Equal to ``level`` (within sampling noise) for calibrated Gaussian uncertainties.

    Args:
        pred: ``[n]`` or ``[n, T]`` predicted means.
        std: same shape, predicted standard deviations (> 0).
        true: same shape, true values.
        level: interval probability in (0, 1).

    Returns:
        ``float`` (1-D input) or ``[T]`` array.
    """
    level = float(level)
    if not 0 < level < 1:
        raise ValueError(f"level: expected a probability in (0, 1), got {level!r}")
    pred, std, true = _arrays(pred=pred, std=std, true=true)
    _check_std(std)
    z = norm.ppf((1 + level) / 2)
    return _out(np.mean(np.abs(pred - true) <= z * std, axis=0))


def summary(pred, std, true, names) -> dict:
    r"""All metrics per target.

    Args:
        pred: ``[n, T]`` (or ``[n]`` for ``T = 1``) predicted means.
        std: same shape, predicted standard deviations (> 0).
        true: same shape, true values.
        names: ``T`` target names, e.g. ``["sigma_8", "Omega_m"]`` (a single string is
            accepted for ``T = 1``).

    Returns:
        ``{name: {"epsilon", "r2", "chi2", "coverage_68", "coverage_95"}, ...}`` plus
        ``"n_catalogs": n``, with Python floats; ``r2`` is ``None`` where it is undefined
        (constant truth, e.g. the CV set), so the dict is valid JSON.
    """
    pred, std, true = _arrays(pred=pred, std=std, true=true)
    if pred.ndim == 1:
        pred, std, true = pred[:, None], std[:, None], true[:, None]
    names = [names] if isinstance(names, str) else list(names)
    if len(names) != pred.shape[1]:
        raise ValueError(f"names: {len(names)} names for {pred.shape[1]} target columns")
    if len(set(names)) != len(names) or "n_catalogs" in names:
        raise ValueError(f"names: expected distinct names other than 'n_catalogs', got {names}")
    columns = {
        "epsilon": epsilon(pred, true),
        "r2": r2(pred, true),
        "chi2": chi2(pred, std, true),
        "coverage_68": coverage(pred, std, true, 0.68),
        "coverage_95": coverage(pred, std, true, 0.95),
    }
    out: dict = {}
    for t, name in enumerate(names):
        row = {key: float(values[t]) for key, values in columns.items()}
        out[str(name)] = {k: (v if math.isfinite(v) else None) for k, v in row.items()}
    out["n_catalogs"] = int(pred.shape[0])
    return out


def bootstrap_interval(statistic, n: int, n_boot: int = 2000, level: float = 0.68, seed: int = 0):
    r"""Percentile bootstrap interval of a statistic of ``n`` items (e.g. test catalogs).

    Draws ``n_boot`` resamples of the indices ``0..n-1`` with replacement, evaluates
    ``statistic(idx)`` on each and returns the central ``level`` quantiles of the values:
    the range that the statistic spans over data sets like this one. For the mean of ``n``
    draws with standard deviation :math:`\sigma` the 68 % interval is about
    :math:`\bar x \pm \sigma/\sqrt{n}`.

    Args:
        statistic: function ``idx [n] int64 -> float`` or ``-> [K]`` array.
        n: number of items, >= 1.
        n_boot: number of resamples.
        level: central probability of the interval, in (0, 1).
        seed: seed of the resampling.

    Returns:
        ``(lo, hi)``: floats, or ``[K]`` arrays for an array statistic.
    """
    level = float(level)
    if not 0 < level < 1:
        raise ValueError(f"level: expected a probability in (0, 1), got {level!r}")
    if int(n) < 1 or int(n_boot) < 2:
        raise ValueError(f"n >= 1 and n_boot >= 2 expected, got n={n}, n_boot={n_boot}")
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, size=n)) for _ in range(int(n_boot))])
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return _out(lo), _out(hi)


def seed_summary(runs, names, n_boot: int = 2000, level: float = 0.68, seed: int = 0) -> dict:
    r"""Seed mean and spread of the scores of one model trained with several seeds, and a
    bootstrap interval over the test catalogs.

    Args:
        runs: a list of ``(pred, std, true)``, one per seed, each ``[n, T]`` (or ``[n]``),
            the same ``n`` test catalogs (``true`` equal in every run).
        names: ``T`` target names.
        n_boot, level, seed: of :func:`bootstrap_interval`.

    Returns:
        ``{name: {...}}`` with the keys ``epsilon_mean``, ``epsilon_std``, ``r2_mean``,
        ``r2_std``, ``chi2_mean``, ``coverage_68_mean``, ``epsilon_68``, ``r2_68`` and
        ``n_seeds``: means over the seeds, standard deviations over the seeds (``ddof=1``;
        ``None`` for a single run), and
        ``[lo, hi]`` the bootstrap ``level`` interval of the seed-mean epsilon and r^2 when
        the test catalogs are resampled (the same resample for every seed). Python floats.
    """
    if not len(runs):
        raise ValueError("runs: expected at least one (pred, std, true)")
    names = [names] if isinstance(names, str) else list(names)
    rows = [summary(p, s, t, names) for p, s, t in runs]
    pred = np.stack([np.asarray(p, dtype=np.float64).reshape(len(p), -1) for p, _, _ in runs])
    true = np.asarray(runs[0][2], dtype=np.float64).reshape(pred.shape[1], -1)
    if any(
        not np.array_equal(np.asarray(t, np.float64).reshape(true.shape), true) for *_, t in runs
    ):
        raise ValueError("runs: the true values differ between runs (not the same test set)")

    def scores(idx):
        p, t = pred[:, idx], true[idx]
        eps = np.mean(np.abs(p - t) / np.abs(t), axis=1).mean(axis=0)
        ss_res = np.sum((p - t) ** 2, axis=1)
        ss_tot = np.sum((t - t.mean(axis=0)) ** 2, axis=0)
        return np.concatenate([eps, (1 - ss_res / ss_tot).mean(axis=0)])

    lo, hi = bootstrap_interval(scores, true.shape[0], n_boot, level, seed)
    lo, hi = np.atleast_1d(lo), np.atleast_1d(hi)
    out = {}
    for k, name in enumerate(names):
        row = {}
        for key in ("epsilon", "r2", "chi2", "coverage_68"):
            values = np.array([r[name][key] for r in rows], dtype=np.float64)
            row[f"{key}_mean"] = float(values.mean())
            if key in ("epsilon", "r2"):
                row[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else None
        t = len(names)
        row["epsilon_68"] = [float(lo[k]), float(hi[k])]
        row["r2_68"] = [float(lo[t + k]), float(hi[t + k])]
        row["n_seeds"] = len(runs)
        out[name] = row
    return out
