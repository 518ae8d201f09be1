"""Value and file checks shared by the catalog readers (:mod:`physml.catalogs`,
:mod:`physml.camels`). Every message starts with ``where`` (the file and the key)."""

from __future__ import annotations

import math
import numbers
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


# --------------------------------------------------------------------------- argument checks
# Checks of the arguments of library functions (hmc, fisher, grf, npe, flows, bias). Every
# message starts with ``where`` (the function) and names the argument: "hmc: step_size must
# be a finite number > 0, got nan".


def _check_count(value, name: str, where: str, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``; floats (even 2.0), bools and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{where}: {name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{where}: {name} must be an integer >= {minimum}, got {value}")
    return int(value)


def _interval_text(low, high, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high}"
    return ""


def _check_real(
    value,
    name: str,
    where: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = True,
    high_open: bool = True,
) -> float:
    """``value`` (a real number or a one-element tensor / array) as a finite float, optionally
    inside an interval; e.g. ``low=0`` asks for a number > 0."""
    text = f"a finite number {_interval_text(low, high, low_open, high_open)}".rstrip()
    if isinstance(value, bool) or isinstance(value, (str, bytes)):
        raise ValueError(f"{where}: {name} must be {text}, got {value!r}")
    try:
        x = float(value.detach() if hasattr(value, "detach") else value)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{where}: {name} must be {text}, got {value!r}") from None
    bad = not math.isfinite(x)
    if low is not None:
        bad = bad or (x <= low if low_open else x < low)
    if high is not None:
        bad = bad or (x >= high if high_open else x > high)
    if bad:
        raise ValueError(f"{where}: {name} must be {text}, got {x}")
    return x


def _check_shape(x, name: str, where: str, shape: tuple, text: str) -> tuple:
    """``x`` (a torch tensor or numpy array) has ``len(shape)`` dimensions, each equal to the
    entry of ``shape`` where that is an int (None: any size >= 1). ``text`` describes the
    expected shape, e.g. ``"[chains, dim]"``. Returns the shape."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise ValueError(
            f"{where}: {name} must be an array of shape {text}, got {type(x).__name__}"
        )
    actual = tuple(x.shape)
    ok = len(actual) == len(shape) and all(
        (s is None and a >= 1) or s == a for s, a in zip(shape, actual, strict=False)
    )
    if not ok:
        raise ValueError(f"{where}: {name} must have shape {text}, got {list(actual)}")
    return actual


def _check_finite_values(x, name: str, where: str) -> None:
    """Every entry of ``x`` (a torch tensor or numpy array) is finite. One reduction; on a GPU
    tensor one synchronisation, so call it once at entry, never in a loop."""
    if hasattr(x, "detach"):  # torch
        import torch

        if not x.is_floating_point() and not x.is_complex():
            return
        finite = torch.isfinite(x.detach())
        if bool(finite.all()):
            return
        bad = ~finite.cpu().numpy()
        values = x.detach().cpu().numpy()
    else:
        values = np.asarray(x)
        if values.dtype.kind not in "fc":
            return
        bad = ~np.isfinite(values)
        if not bad.any():
            return
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    at = first[0] if len(first) == 1 else list(first)
    raise ValueError(
        f"{where}: {name} must be finite; {int(bad.sum())} of {bad.size} values are not, "
        f"first at index {at}: {values[first]}"
    )


def _check_within(x, name: str, where: str, low, high, what: str, tol: float = 0.0) -> None:
    """Every entry of ``x`` ``[..., K]`` lies in [low_j, high_j] (lists of K bounds) to within
    ``tol`` times the width; ``what`` names the interval (e.g. "the prior box")."""
    arr = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    lo = np.atleast_1d(np.asarray(low, dtype=np.float64))
    hi = np.atleast_1d(np.asarray(high, dtype=np.float64))
    slack = tol * (hi - lo)
    bad = (arr < lo - slack) | (arr > hi + slack)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        bounds = [[float(a), float(b)] for a, b in zip(lo, hi, strict=True)]
        raise ValueError(
            f"{where}: {name} must lie in {what} {bounds}; {int(bad.sum())} value(s) do not, "
            f"first at index {list(first)}: {arr[first]}"
        )
