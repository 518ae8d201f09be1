"""Value and file checks shared by the catalog readers (:mod:`physml.catalogs`,
:mod:`physml.camels`). Every message starts with ``where`` (the file and the key)."""

from __future__ import annotations

import os
import tokenize
import warnings

import numpy as np


def _first_bad(bad: np.ndarray) -> int:
    """Row of the first True entry of ``bad`` (``[N]`` or ``[N, k]`` bool)."""
    return int(np.argwhere(bad)[0][0])


def _check_finite(arr: np.ndarray, where: str) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(
            f"{where}: {int(bad.sum())} non-finite value(s), first at row {_first_bad(bad)}"
        )


def _check_positive_mass(mass: np.ndarray, where: str) -> None:
    bad = ~(mass > 0)
    if bad.any():
        row = _first_bad(bad)
        raise ValueError(
            f"{where}: masses must be > 0 (1e10 Msun/h); {int(bad.sum())} are not, "
            f"first at row {row}: {float(mass[row])}"
        )


def _check_unit_box(pos: np.ndarray, where: str) -> np.ndarray:
    """Check ``pos`` ``[N, 3]`` float32 lies in ``[0, 1]``; return it with 1.0 wrapped to 0.0."""
    bad = (pos < 0) | (pos > 1)
    if bad.any():
        row = _first_bad(bad)
        raise ValueError(
            f"{where}: positions must lie in [0, 1] box units; {int(bad.any(axis=1).sum())} "
            f"halo(s) do not, first at row {row}: {pos[row].tolist()}"
        )
    one = pos == 1
    if one.any():
        pos = np.where(one, np.float32(0), pos).astype(np.float32)
    return pos


def _check_catalog_arrays(
    pos: np.ndarray, mass: np.ndarray, vel: np.ndarray | None, where: str
) -> np.ndarray:
    """Value checks on float32 ``pos`` ``[N, 3]``, ``mass`` ``[N]``, ``vel`` ``[N, 3]``.

    Returns ``pos`` with coordinates equal to 1.0 wrapped to 0.0.
    """
    _check_finite(pos, where)
    _check_finite(mass, where)
    _check_positive_mass(mass, where)
    pos = _check_unit_box(pos, where)
    if vel is not None:
        _check_finite(vel, where)
    return pos


def _check_labels(params: np.ndarray, where: str) -> None:
    """``params`` ``[n, 2]`` float64: sigma_8 finite and > 0; Omega_m NaN or finite and > 0."""
    s8 = params[:, 1]
    bad = ~(np.isfinite(s8) & (s8 > 0))
    if bad.any():
        row = _first_bad(bad)
        raise ValueError(
            f"{where}: sigma_8 must be finite and > 0; {int(bad.sum())} value(s) are not, "
            f"first at row {row}: {float(s8[row])}"
        )
    om = params[:, 0]
    bad = ~(np.isnan(om) | (np.isfinite(om) & (om > 0)))
    if bad.any():
        row = _first_bad(bad)
        raise ValueError(
            f"{where}: Omega_m must be finite and > 0 (or NaN when unknown); "
            f"first bad value at row {row}: {float(om[row])}"
        )


#: what numpy raises on a damaged ``.npy`` (also inside an ``.npz``): a corrupt header is
#: parsed with :mod:`tokenize` and :func:`ast.literal_eval`, which raise these two besides
#: ValueError
NPY_HEADER_ERRORS = (tokenize.TokenError, SyntaxError)


def _check_prior_box(params: np.ndarray, where: str) -> None:
    """Warn (the input may be intended) when labels ``params`` ``[n, 2]`` = (Omega_m,
    sigma_8) lie outside the CAMELS prior box of the parameter each column claims to be
    (:data:`physml.cosmology.PRIOR_RANGES`), saying which column looks like which
    parameter (e.g. swapped columns). NaN entries (unknown values) are skipped."""
    from .cosmology import PRIOR_RANGES

    names = ("Omega_m", "sigma_8")
    inside = {}  # (column, parameter) -> every finite value of the column in its prior

    def within(v: np.ndarray, name: str) -> np.ndarray:
        lo, hi = PRIOR_RANGES[name]
        slack = 1e-6 * (hi - lo)
        return (v >= lo - slack) & (v <= hi + slack)

    columns = {}
    for i, name in enumerate(names):
        v = params[:, i][np.isfinite(params[:, i])]
        if len(v):
            columns[name] = v
            for other in names:
                inside[name, other] = bool(within(v, other).all())
    parts = []
    for i, name in enumerate(names):
        if name not in columns or inside[name, name]:
            continue
        v = columns[name]
        lo, hi = PRIOR_RANGES[name]
        k = int((~within(v, name)).sum())
        what = f"column {i} ({name})" if len(columns) == 2 else f"the {name} labels"
        text = (
            f"{what} has {k} of {len(v)} values outside its prior [{lo}, {hi}] (they run "
            f"from {v.min():.3g} to {v.max():.3g})"
        )
        other = names[1 - i]
        if inside[name, other]:
            text += f"; they all lie in the prior of {other}, {list(PRIOR_RANGES[other])}"
        parts.append(text)
    if not parts:
        return
    swapped = all(inside.get((n, names[1 - i]), False) for i, n in enumerate(names))
    hint = (
        "the two columns look swapped; labels are (Omega_m, sigma_8)"
        if swapped
        else "labels are (Omega_m, sigma_8), or sigma_8 alone in a 1-d array"
    )
    warnings.warn(
        f"{where}: labels outside the CAMELS prior box: {'; '.join(parts)}; {hint}",
        stacklevel=3,
    )


def _describe(arr: np.ndarray) -> str:
    return f"{arr.dtype} array of shape {arr.shape}"


def _as_float32(x, shape_text: str, ncols: int | None, where: str) -> np.ndarray:
    """``x`` as a float32 array of shape ``[N]`` (``ncols=None``) or ``[N, ncols]``."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise ValueError(
            f"{where}: expected float array of shape {shape_text}, got {_describe(arr)}"
        )
    ok = arr.ndim == 1 if ncols is None else (arr.ndim == 2 and arr.shape[1] == ncols)
    if not ok:
        raise ValueError(
            f"{where}: expected float array of shape {shape_text}, got {_describe(arr)}"
        )
    return np.asarray(arr, dtype=np.float32)


def _require_file(path) -> str:
    name = os.fspath(path)
    if not os.path.exists(name):
        raise FileNotFoundError(f"{name}: no such file")
    if os.path.isdir(name):
        raise ValueError(f"{name}: is a directory, expected a file")
    return name


def _magic(name: str, n: int = 8) -> bytes:
    with open(name, "rb") as f:
        return f.read(n)
