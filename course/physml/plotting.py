r"""Figures for the lecture: halos and graphs in 3D, predictions, training curves,
calibration, the halo mass function, the information ablation.

Every function takes an optional ``ax`` (or ``fig``) to draw into, returns the
:class:`~matplotlib.figure.Figure`, and never calls ``plt.show()``; all work with the Agg
backend. Units: positions in box units, masses in ``1e10 Msun/h`` (catalogs) or Msun/h
(mass-function axes), box sizes in Mpc/h.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from mpl_toolkits.mplot3d.art3d import Line3DCollection

from . import metrics
from .catalogs import MASS_UNIT, Catalog, CatalogSet
from .cosmology import PRIOR_RANGES

__all__ = [
    "ABLATION_FILE",
    "PRIOR_RANGES",
    "MASS_CMAP",
    "mass_function",
    "plot_calibration",
    "plot_graph_3d",
    "plot_halos_3d",
    "plot_halos_projected",
    "plot_information_ablation",
    "plot_mass_function",
    "plot_predictions",
    "plot_predictions_grid",
    "plot_training_curves",
    "undirected_edges",
]

#: CAMELS LH prior ranges, used for the axis limits of :func:`plot_predictions`
_ALIASES = {"sigma8": "sigma_8", "s8": "sigma_8", "omega_m": "Omega_m", "Om": "Omega_m"}
_TEX = {"sigma_8": r"$\sigma_8$", "Omega_m": r"$\Omega_m$"}
_GREY = (0.7, 0.7, 0.7, 0.7)
#: the measured information ablation shipped with the package (summary of
#: ``benchmarks/results/information.json``, written by ``benchmarks/bench_information.py``)
ABLATION_FILE = os.path.join(os.path.dirname(__file__), "data", "information_ablation.json")


def _canonical(name: str) -> str:
    return _ALIASES.get(name, name)


def _new_ax(ax, figsize=(6, 6)):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


# --------------------------------------------------------------------------- 3D views


def _dark_3d_axes(ax=None, title: str | None = None, figsize=(10, 6)):
    """A 3D axes in the source notebook's dark style: black figure and axes, white labels,
    ticks and title, light grey axis lines, limits ``[0, 1]`` (box units).

    Creates a new figure when ``ax`` is ``None``; otherwise ``ax`` must be a 3D axes.
    """
    if ax is None:
        fig = plt.figure(figsize=figsize)
        ax = fig.add_subplot(111, projection="3d")
    elif getattr(ax, "name", None) != "3d":
        raise ValueError("ax: expected a 3D axes (fig.add_subplot(projection='3d'))")
    ax.figure.patch.set_facecolor("black")
    ax.set_facecolor("black")
    for axis, name in zip((ax.xaxis, ax.yaxis, ax.zaxis), "xyz", strict=True):
        axis.line.set_color(_GREY)
        axis.label.set_color("white")
        axis.set_pane_color((1.0, 1.0, 1.0, 0.04))
        ax.tick_params(axis=name, colors="white")
    ax.set_xlabel("x [box]")
    ax.set_ylabel("y [box]")
    ax.set_zlabel("z [box]")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_zlim(0, 1)
    if title is not None:
        ax.set_title(title, color="white")
    return ax


#: colour map of halo masses in every halo plot (with a logarithmic norm)
MASS_CMAP = "inferno"


def _mass_norm(mass: np.ndarray) -> LogNorm:
    if len(mass) == 0:
        return LogNorm(1.0, 10.0)
    lo, hi = float(mass.min()), float(mass.max())
    if hi <= lo:
        lo, hi = lo / 2, hi * 2
    return LogNorm(lo, hi)


def _halos_3d(catalog: Catalog, ax, title, size_scale: float, alpha: float):
    """Scatter the halos into a dark 3D axes with a white mass colourbar; returns the axes."""
    ax = _dark_3d_axes(ax, title)
    mass = np.asarray(catalog.mass, dtype=np.float64)
    pos = np.asarray(catalog.pos, dtype=np.float64)
    sc = ax.scatter(
        pos[:, 0],
        pos[:, 1],
        pos[:, 2],
        c=mass,
        cmap=MASS_CMAP,
        norm=_mass_norm(mass),
        s=size_scale * np.cbrt(mass),
        alpha=alpha,
    )
    cb = ax.figure.colorbar(sc, ax=ax, shrink=0.7, pad=0.1)
    cb.set_label("Mass [1e10 Msun/h]", color="white")
    cb.ax.yaxis.set_tick_params(which="both", color="white", labelcolor="white")
    cb.outline.set_edgecolor(_GREY)
    return ax


def plot_halos_3d(
    catalog: Catalog,
    ax=None,
    title: str = "Dark matter halos",
    size_scale: float = 5.0,
    alpha: float = 0.8,
) -> Figure:
    r"""The halos of one catalog as a 3D scatter (the source notebook's figure).

    Colour = mass (``inferno``, :class:`~matplotlib.colors.LogNorm`), marker area
    ``size_scale * mass**(1/3)`` (mass in 1e10 Msun/h), dark theme.

    Args:
        catalog: ``pos`` ``[N, 3]`` box units, ``mass`` ``[N]`` 1e10 Msun/h (``N = 0`` ok).
        ax: a 3D axes to draw into, or ``None`` for a new figure.
        title: axes title.
    """
    return _halos_3d(catalog, ax, title, size_scale, alpha).figure


def plot_halos_projected(
    catalogs: Sequence[Catalog],
    titles: Sequence[str] | None = None,
    size_scale: float = 4.0,
    panel_size: float = 3.2,
) -> Figure:
    r"""Several catalogs side by side, each projected along z: one panel per catalog,
    x and y in box units, colour = mass on one logarithmic scale for all panels
    (:data:`MASS_CMAP`, the colour map of :func:`plot_halos_3d`) with one colour bar, marker
    area ``size_scale * mass**(1/3)``.

    Args:
        catalogs: ``pos`` ``[N, 3]`` box units, ``mass`` ``[N]`` 1e10 Msun/h each.
        titles: one per panel, or ``None``.
        size_scale: marker area per (1e10 Msun/h)^(1/3).
        panel_size: inches per panel.
    """
    catalogs = list(catalogs)
    if not catalogs:
        raise ValueError("catalogs: expected at least one catalog")
    titles = list(titles) if titles is not None else [None] * len(catalogs)
    if len(titles) != len(catalogs):
        raise ValueError(f"titles: {len(titles)} for {len(catalogs)} catalogs")
    norm = _mass_norm(np.concatenate([np.asarray(c.mass, np.float64) for c in catalogs]))
    fig, axes = plt.subplots(
        1,
        len(catalogs),
        figsize=(panel_size * len(catalogs) + 0.8, panel_size + 0.5),
        layout="constrained",
        squeeze=False,
    )
    for ax, c, title in zip(axes[0], catalogs, titles, strict=True):
        mass = np.asarray(c.mass, dtype=np.float64)
        sc = ax.scatter(
            c.pos[:, 0],
            c.pos[:, 1],
            s=size_scale * np.cbrt(mass),
            c=mass,
            cmap=MASS_CMAP,
            norm=norm,
        )
        ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal", xlabel="x [box]", title=title)
    axes[0, 0].set_ylabel("y [box]")
    fig.colorbar(sc, ax=axes[0, -1], label=r"halo mass [$10^{10}\,M_\odot/h$]")
    return fig


def undirected_edges(edge_index) -> np.ndarray:
    """``[2, E]`` edge index (numpy or torch, one or both directions) -> ``[E_u, 2]`` int64
    unique pairs ``(i, j)`` with ``i < j``, sorted; self-loops dropped."""
    ei = edge_index.detach().cpu().numpy() if hasattr(edge_index, "detach") else edge_index
    ei = np.asarray(ei, dtype=np.int64)
    if ei.ndim != 2 or ei.shape[0] != 2:
        raise ValueError(f"edge_index: expected shape [2, E], got {list(ei.shape)}")
    pairs = np.sort(ei.T, axis=1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(0, 2)


def _exit_fraction(start: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Largest ``t`` in ``[0, 1]`` with ``start + t * d`` inside the unit box, per row."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(d > 0, (1.0 - start) / d, np.where(d < 0, -start / d, np.inf))
    return np.clip(t.min(axis=1), 0.0, 1.0)


def _edge_segments(pos: np.ndarray, pairs: np.ndarray, periodic: bool) -> np.ndarray:
    """``[S, 2, 3]`` segments: one per edge, or for an edge that wraps around the periodic
    box two, each from one end along the minimum-image displacement up to the box face."""
    a, b = pos[pairs[:, 0]], pos[pairs[:, 1]]
    if not periodic:
        return np.stack([a, b], axis=1)
    raw = b - a
    d = raw - np.round(raw)
    wrap = np.any(d != raw, axis=1)
    direct = np.stack([a[~wrap], b[~wrap]], axis=1)
    aw, bw, dw = a[wrap], b[wrap], d[wrap]
    ends_a = aw + _exit_fraction(aw, dw)[:, None] * dw
    ends_b = bw - _exit_fraction(bw, -dw)[:, None] * dw
    halves = np.concatenate([np.stack([aw, ends_a], 1), np.stack([bw, ends_b], 1)])
    return np.concatenate([direct, halves])


def plot_graph_3d(
    catalog: Catalog,
    edge_index,
    box_periodic: bool = True,
    ax=None,
    max_edges: int = 20000,
    title: str = "Halo graph",
    edge_color=(0.8, 0.8, 0.8, 0.5),
    linewidth: float = 0.6,
) -> Figure:
    r"""The halos (as :func:`plot_halos_3d`) and the edges of their graph.

    Each undirected edge is drawn once, in one
    :class:`~mpl_toolkits.mplot3d.art3d.Line3DCollection`. In a periodic box an edge whose
    minimum image crosses a face is drawn as **two** segments, one from each end along the
    minimum-image displacement up to the face it leaves by, never across the whole box; so
    the collection holds ``E_direct + 2 E_wrap`` segments.

    Args:
        catalog: the halos, positions in box units.
        edge_index: ``[2, E]`` int (numpy or torch), e.g. from
            :func:`physml.graphs.radius_graph` on ``catalog.pos`` with ``box_size=1``.
        box_periodic: whether the edges use the minimum image of the unit box.
        ax: a 3D axes, or ``None``.
        max_edges: at most this many undirected edges are drawn (an evenly spaced subset of
            the sorted pairs, for speed).
        title: axes title.
    """
    pairs = undirected_edges(edge_index)
    if len(pairs) and pairs.max() >= len(catalog):
        raise ValueError(
            f"edge_index: node id {int(pairs.max())} out of range for {len(catalog)} halos"
        )
    if len(pairs) > max_edges:
        pairs = pairs[np.linspace(0, len(pairs) - 1, int(max_edges)).astype(np.int64)]
    ax = _halos_3d(catalog, ax, title, 5.0, 0.8)
    segments = _edge_segments(np.asarray(catalog.pos, np.float64), pairs, box_periodic)
    lines = Line3DCollection(segments, colors=[edge_color], linewidths=linewidth)
    lines.set_label("edges")
    ax.add_collection3d(lines, autolim=False)  # limits are the unit box already
    return ax.figure


# --------------------------------------------------------------------------- predictions


def _axis_limits(name: str, *arrays: np.ndarray, margin: float = 0.05) -> tuple[float, float]:
    data = np.concatenate([np.ravel(a) for a in arrays])
    lo, hi = float(data.min()), float(data.max())
    if name in PRIOR_RANGES:
        lo, hi = min(lo, PRIOR_RANGES[name][0]), max(hi, PRIOR_RANGES[name][1])
    pad = margin * (hi - lo) if hi > lo else 0.05 * max(abs(hi), 1.0)
    return lo - pad, hi + pad


def plot_predictions(
    true, pred, std, name: str = "sigma_8", ax=None, stats: Mapping | None = None
) -> Figure:
    r"""Predicted mean :math:`\pm 1\sigma` against the truth, with the line :math:`y = x` and
    a text box of :math:`\epsilon` (in %), :math:`R^2` and :math:`\chi^2`.

    Args:
        true, pred, std: ``[n]`` true values, predicted means and standard deviations.
        name: the target; ``"sigma_8"`` / ``"Omega_m"`` get TeX titles and axis limits that
            include the prior range (0.6-1.0 / 0.1-0.5) with a 5 % margin; otherwise the
            data range.
        ax: axes to draw into, or ``None``.
        stats: ``{"epsilon", "r2", "chi2"}`` (e.g. ``physml.metrics.summary(...)[name]``);
            computed with :mod:`physml.metrics` when ``None``.
    """
    true, pred, std = (np.asarray(a, dtype=np.float64).ravel() for a in (true, pred, std))
    if not len(true) == len(pred) == len(std):
        raise ValueError(f"true, pred, std: lengths differ ({len(true)}, {len(pred)}, {len(std)})")
    key = _canonical(name)
    if stats is None:
        stats = {
            "epsilon": metrics.epsilon(pred, true),
            "r2": metrics.r2(pred, true),
            "chi2": metrics.chi2(pred, std, true),
        }
    ax = _new_ax(ax)
    ax.errorbar(true, pred, yerr=std, fmt="o", ms=3, alpha=0.6, label="predictions")
    lo, hi = _axis_limits(key, true, pred)
    ax.plot([lo, hi], [lo, hi], "r--", label="$y = x$")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.set_title(_TEX.get(key, name), fontsize=16)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left")
    text = "\n".join(
        [
            rf"$\epsilon$ = {100 * stats['epsilon']:.2f} %",
            r"$R^2$ = n/a" if stats["r2"] is None else rf"$R^2$ = {stats['r2']:.3f}",
            rf"$\chi^2$ = {stats['chi2']:.2f}",
        ]
    )
    ax.text(
        0.95,
        0.05,
        text,
        transform=ax.transAxes,
        ha="right",
        va="bottom",
        fontsize=12,
        bbox={"boxstyle": "round", "facecolor": "wheat", "alpha": 0.5},
    )
    return ax.figure


def plot_predictions_grid(
    true, pred, std, names: Sequence[str], fig=None, stats: Mapping | None = None
) -> Figure:
    r""":func:`plot_predictions` for ``T`` targets, one panel each, side by side.

    Args:
        true, pred, std: ``[n, T]``.
        names: ``T`` target names.
        fig: figure to draw into (its contents are kept; panels are added), or ``None``.
        stats: ``{name: {"epsilon", "r2", "chi2"}}`` (e.g. ``physml.metrics.summary``), or
            ``None`` to compute.
    """
    true, pred, std = (np.asarray(a, dtype=np.float64) for a in (true, pred, std))
    true, pred, std = (a[:, None] if a.ndim == 1 else a for a in (true, pred, std))
    names = [names] if isinstance(names, str) else list(names)
    if true.shape != pred.shape or true.shape != std.shape or true.shape[1] != len(names):
        raise ValueError(
            f"true, pred, std: expected equal shapes [n, {len(names)}], got "
            f"{list(true.shape)}, {list(pred.shape)}, {list(std.shape)}"
        )
    if fig is None:
        fig = plt.figure(figsize=(5.5 * len(names), 5.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(names), squeeze=False)[0])
    for t, (ax, name) in enumerate(zip(axes, names, strict=True)):
        s = None if stats is None else stats[name]
        plot_predictions(true[:, t], pred[:, t], std[:, t], name=name, ax=ax, stats=s)
    return fig


# --------------------------------------------------------------------------- training


def _float_or_nan(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _read_metrics(source) -> dict[str, np.ndarray]:
    """Columns of a Lightning ``metrics.csv`` (empty cells -> NaN) or a dict of lists."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            raise ValueError(f"{path}: no rows")
        return {k: np.array([_float_or_nan(r.get(k)) for r in rows]) for k in rows[0]}
    if isinstance(source, Mapping):
        return {k: np.array([_float_or_nan(v) for v in vals]) for k, vals in source.items()}
    raise TypeError(f"expected a metrics.csv path or a dict of lists, got {type(source)}")


def _curve(cols: dict, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """(epochs, values) of the first present column of ``keys``; rows with NaN dropped, the
    last value kept per epoch."""
    key = next((k for k in keys if k in cols and np.isfinite(cols[k]).any()), None)
    if key is None:
        return None
    values = cols[key]
    epochs = cols["epoch"] if "epoch" in cols else np.arange(len(values), dtype=np.float64)
    ok = np.isfinite(values) & np.isfinite(epochs)
    out: dict[float, float] = {}
    for e, v in zip(epochs[ok], values[ok], strict=True):
        out[float(e)] = float(v)
    e = np.array(sorted(out))
    return e, np.array([out[k] for k in e])


def plot_training_curves(metrics_csv_or_dict, ax=None, logy: bool = False) -> Figure:
    """Training and validation loss against epoch.

    Args:
        metrics_csv_or_dict: path of a Lightning ``CSVLogger`` ``metrics.csv`` (columns
            ``epoch``, ``train_loss_epoch`` (or ``train_loss``), ``val_loss``; a row may hold
            only some of them) or a dict of equal-length lists with the same keys (without
            ``epoch``, the list index is the epoch). NaN / empty entries are skipped; with
            several rows per epoch the last one counts.
        ax: axes to draw into, or ``None``.
        logy: logarithmic loss axis (only for positive losses; the Gaussian NLL may be < 0).
    """
    cols = _read_metrics(metrics_csv_or_dict)
    curves = {
        "train": _curve(cols, ("train_loss_epoch", "train_loss")),
        "val": _curve(cols, ("val_loss", "val_loss_epoch")),
    }
    if all(c is None for c in curves.values()):
        raise ValueError(
            f"no train_loss_epoch / train_loss / val_loss values; columns: {sorted(cols)}"
        )
    ax = _new_ax(ax, (6, 4))
    for label, c in curves.items():
        if c is not None:
            ax.plot(c[0], c[1], "o-" if len(c[0]) < 30 else "-", ms=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if logy:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return ax.figure


# --------------------------------------------------------------------------- calibration


def plot_calibration(
    pred, std, true, ax=None, names: Sequence[str] | None = None, levels=None
) -> Figure:
    r"""Observed coverage of the central Gaussian intervals against their nominal level.

    For each level :math:`p` (default 0.05, 0.10, ..., 0.95) the fraction of true values
    within :math:`\hat y \pm z_p \sigma` (:func:`physml.metrics.coverage`); one line per
    target; the diagonal is perfect calibration, below it over-confident.

    Args:
        pred, std, true: ``[n]`` or ``[n, T]``.
        ax: axes, or ``None``.
        names: ``T`` labels (default ``target 0..``).
        levels: nominal levels in (0, 1).
    """
    pred, std, true = (np.asarray(a, dtype=np.float64) for a in (pred, std, true))
    pred, std, true = (a[:, None] if a.ndim == 1 else a for a in (pred, std, true))
    levels = np.linspace(0.05, 0.95, 19) if levels is None else np.asarray(levels, float)
    cov = np.stack([metrics.coverage(pred, std, true, p) for p in levels])  # [L, T]
    names = [f"target {t}" for t in range(pred.shape[1])] if names is None else list(names)
    if len(names) != pred.shape[1]:
        raise ValueError(f"names: {len(names)} names for {pred.shape[1]} targets")
    ax = _new_ax(ax, (5, 5))
    ax.plot([0, 1], [0, 1], "k:", label="perfect calibration")
    for t, name in enumerate(names):
        ax.plot(levels, cov[:, t], "o-", ms=3, label=_TEX.get(_canonical(name), name))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("nominal coverage")
    ax.set_ylabel("observed coverage")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left")
    return ax.figure


# --------------------------------------------------------------------------- mass function


def _catalog_list(obj, box_size: float) -> tuple[list[Catalog], float]:
    if isinstance(obj, CatalogSet):
        return list(obj.catalogs), obj.box_size
    if isinstance(obj, Catalog):
        return [obj], float(box_size)
    cats = list(obj)
    if not all(isinstance(c, Catalog) for c in cats):
        raise TypeError("expected a CatalogSet, a Catalog or a sequence of Catalogs")
    return cats, float(box_size)


def _log_masses(cats: Sequence[Catalog]) -> np.ndarray:
    if not cats:
        return np.empty(0)
    return np.log10(np.concatenate([c.mass.astype(np.float64) for c in cats]) * MASS_UNIT)


def mass_function(
    catalogs, box_size: float = 25.0, bins=15
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Halo mass function :math:`dn/d\log_{10}M`, averaged over catalogs.

    :math:`dn/d\log_{10}M = N_\mathrm{bin} / (n_\mathrm{cat} V \Delta\log_{10}M)` with
    :math:`N_\mathrm{bin}` the halos in the bin summed over the ``n_cat`` catalogs,
    :math:`V = L^3`; error :math:`\sqrt{N_\mathrm{bin}}/(n_\mathrm{cat} V
    \Delta\log_{10}M)` (Poisson).

    Args:
        catalogs: a :class:`CatalogSet` (its ``box_size`` is used), a :class:`Catalog` or a
            sequence of them.
        box_size: :math:`L`, Mpc/h, for catalogs not in a set.
        bins: bin edges in :math:`\log_{10}(M / (M_\odot/h))`, or a number of equal bins
            spanning the masses present.

    Returns:
        ``(log10_m [B], dndlog10m [B], err [B])``: bin centres (log10 Msun/h), values and
        errors in :math:`(h/\mathrm{Mpc})^3`.
    """
    cats, box = _catalog_list(catalogs, box_size)
    if not cats:
        raise ValueError("catalogs: no catalogs")
    logm = _log_masses(cats)
    if np.ndim(bins) == 0:
        if len(logm) == 0:
            raise ValueError("catalogs: no halos to choose bins from; pass bin edges")
        lo, hi = float(logm.min()), float(logm.max())
        hi = hi + 1e-9 * max(abs(hi), 1.0) if hi > lo else lo + 0.1
        bins = np.linspace(lo, hi, int(bins) + 1)
    edges = np.asarray(bins, dtype=np.float64)
    counts, _ = np.histogram(logm, edges)
    norm = len(cats) * box**3 * np.diff(edges)
    return 0.5 * (edges[1:] + edges[:-1]), counts / norm, np.sqrt(counts) / norm


def _as_sets(obj) -> list:
    if isinstance(obj, (CatalogSet, Catalog)):
        return [obj]
    items = list(obj)
    if items and all(isinstance(c, Catalog) for c in items):
        return [items]
    return items


def plot_mass_function(
    csets_or_catalogs,
    labels: Sequence[str] | None = None,
    box_size: float = 25.0,
    ax=None,
    bins=15,
) -> Figure:
    r"""Halo mass functions :math:`dn/d\log_{10}M` [:math:`(h/\mathrm{Mpc})^3`], log-log,
    one line with Poisson error bars per set (see :func:`mass_function`).

    Args:
        csets_or_catalogs: a :class:`CatalogSet`, a :class:`Catalog`, a sequence of
            catalogs (one set), or a sequence of sets (each a :class:`CatalogSet` or a
            sequence of catalogs).
        labels: one legend label per set.
        box_size: Mpc/h, for sets given as plain catalogs.
        ax: axes, or ``None``.
        bins: common bin edges in log10(M / (Msun/h)), or a number of equal bins spanning
            the masses of all sets. Empty bins are not drawn.
    """
    sets = _as_sets(csets_or_catalogs)
    if labels is not None and len(labels) != len(sets):
        raise ValueError(f"labels: {len(labels)} labels for {len(sets)} sets")
    if np.ndim(bins) == 0:
        logm = np.concatenate([_log_masses(_catalog_list(s, box_size)[0]) for s in sets])
        if len(logm) == 0:
            raise ValueError("csets_or_catalogs: no halos")
        lo, hi = float(logm.min()), float(logm.max())
        bins = np.linspace(lo, hi + 1e-9 * max(abs(hi), 1.0) if hi > lo else lo + 0.1, bins + 1)
    ax = _new_ax(ax, (6, 4.5))
    for i, s in enumerate(sets):
        x, y, err = mass_function(s, box_size, bins)
        keep = y > 0
        label = None if labels is None else labels[i]
        ax.errorbar(10 ** x[keep], y[keep], yerr=err[keep], fmt="o-", ms=3, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"$M$ [$M_\odot/h$]")
    ax.set_ylabel(r"$dn/d\log_{10}M$ [$(h/\mathrm{Mpc})^3$]")
    ax.grid(True, which="both", alpha=0.3)
    if labels is not None:
        ax.legend()
    return ax.figure


# --------------------------------------------------------------------------- ablation


def plot_information_ablation(
    source=None, params: Sequence[str] = ("sigma_8", "Omega_m"), fig=None
) -> Figure:
    r"""The information ablation (``benchmarks/bench_information.py``): epsilon and
    :math:`R^2` of every arm, one column per parameter.

    Each arm is a row: the dot is the mean over the seeds, the thick bar :math:`\pm` one
    standard deviation over the seeds (none for the deterministic summary-statistics
    fits), the thin whisker the bootstrap 68 % interval of the seed mean over the test
    catalogs. An arm that does not predict a parameter leaves its row empty there.

    Args:
        source: the results JSON written by the benchmark (a path; default
            :data:`ABLATION_FILE`, the measured one shipped with physml), its dict, or its
            ``"summary"`` dict ``{arm: {"label", param: {"epsilon_mean", "epsilon_std",
            "epsilon_68", "r2_mean", "r2_std", "r2_68"}}}``.
        params: the parameters, one column each.
        fig: a figure to draw into, or ``None``.
    """
    if source is None:
        source = ABLATION_FILE
    if isinstance(source, str | os.PathLike):
        import json

        with open(source) as f:
            source = json.load(f)
    inner = source.get("summary")
    # the results dict holds the summary under "summary"; an arm row (with its "label")
    # under that key is the summary dict's own "summary" arm (summary statistics)
    summary = inner if isinstance(inner, dict) and "label" not in inner else source
    arms = [a for a, row in summary.items() if any(p in row for p in params)]
    if not arms:
        raise ValueError(f"source: no arm predicts any of {list(params)}")
    if fig is None:
        fig = plt.figure(figsize=(4.2 * len(params) + 2.5, 0.45 * len(arms) + 3.2))
    axes = fig.subplots(2, len(params), squeeze=False, sharey=True)
    y = np.arange(len(arms))[::-1]
    for col, param in enumerate(params):
        for row, (key, scale, label) in enumerate(
            [("epsilon", 100.0, r"$\epsilon$ (%)"), ("r2", 1.0, r"$R^2$")]
        ):
            ax = axes[row, col]
            for yi, arm in zip(y, arms, strict=True):
                r = summary[arm].get(param)
                if r is None:
                    continue
                mean = scale * r[f"{key}_mean"]
                lo, hi = (scale * v for v in r[f"{key}_68"])
                gnn = not summary[arm].get("deterministic", False)
                colour = "C0" if gnn else "0.45"
                ax.errorbar(
                    mean, yi, xerr=[[mean - lo], [hi - mean]], fmt="none", ecolor=colour, lw=1
                )
                std = r.get(f"{key}_std")
                ax.errorbar(
                    mean,
                    yi,
                    xerr=None if std is None else scale * std,
                    fmt="o",
                    color=colour,
                    ecolor=colour,
                    elinewidth=4,
                    ms=5,
                )
            ax.set_xlabel(f"{label}, {_TEX.get(_canonical(param), param)}")
            ax.grid(True, axis="x", alpha=0.3)
            ax.set_yticks(y)
            ax.set_yticklabels([summary[a].get("label", a) for a in arms])
    fig.suptitle("information ablation: seed mean, +- seed std (thick), 68 % bootstrap (thin)")
    fig.set_layout_engine("constrained")
    return fig
