"""CAMELS files: the FoF group catalogs (``groups_NNN.hdf5``) and the parameter tables
(``CosmoAstroSeed_*.txt``). :func:`physml.catalogs.load_catalogs` reads them into a
:class:`~physml.catalogs.CatalogSet`; this module reads and checks one file at a time.

CAMELS FoF group files (``groups_NNN.hdf5``; older name ``fof_subhalo_tab_NNN.hdf5``)
    ``Group/GroupPos`` ``[N, 3]`` kpc/h, ``Group/GroupMass`` ``[N]`` 1e10 Msun/h,
    ``Group/GroupVel`` ``[N, 3]`` km/s/a (optional), ``Header`` attributes ``BoxSize``
    (kpc/h, the same units as the positions), ``Time`` (scale factor in (0, 1]) and
    ``Redshift`` (optional, consistent with ``Time``).

CAMELS parameter tables (``CosmoAstroSeed_*.txt``), read by :func:`read_camels_params`.

Every reader refuses bad input with a :class:`ValueError` naming the file and the key;
a dataset longer than ``PHYSML_MAX_HALOS`` rows is refused before it is read.
"""

from __future__ import annotations

import os
import re

import numpy as np

from ._checks import (
    _as_float32,
    _check_finite,
    _check_positive_mass,
    _describe,
    _first_bad,
    _require_file,
)
from .limits import over_limit

__all__ = ["group_files_in", "is_hdf5", "read_camels_params", "read_group_file"]

_GROUP_FILE = re.compile(r"(groups|fof_subhalo_tab)_[0-9]+\.hdf5")
_OMEGA_M_NAMES = {
    "omega_m",
    "omegam",
    "omega_m0",
    "omegam0",
    "omega_0",
    "omega0",
    "om",
    "om0",
    "omega_matter",
}
_SIGMA_8_NAMES = {"sigma_8", "sigma8", "si8", "s8", "sigma_8_0", "sigma80"}


def read_camels_params(path) -> np.ndarray:
    """Read a CAMELS parameter table (``CosmoAstroSeed_*.txt``).

    Whitespace-separated text; blank lines and lines starting with ``#`` are skipped. A
    ``#`` line before the data naming the columns (``#Name Omega_m sigma_8 A_SN1 ...``)
    locates Omega_m and sigma_8; without one, the columns are (name, Omega_m, sigma_8, ...)
    when the first column is not a number and (Omega_m, sigma_8, ...) when it is.

    Returns:
        ``[n, 2]`` float64 = (Omega_m, sigma_8), one row per simulation, in file order.
    """
    name = _require_file(path)
    try:
        with open(name, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"{name}: not a text parameter table ({e})") from e

    header: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []
    for lineno, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        if text.startswith("#"):
            tokens = [t.lower() for t in text.lstrip("#").split()]
            if not rows and header is None and (_OMEGA_M_NAMES | _SIGMA_8_NAMES) & set(tokens):
                header = tokens
            continue
        rows.append((lineno, text.split()))
    if not rows:
        raise ValueError(f"{name}: no data rows in parameter table")

    if header is not None:
        i_om = next((i for i, t in enumerate(header) if t in _OMEGA_M_NAMES), None)
        i_s8 = next((i for i, t in enumerate(header) if t in _SIGMA_8_NAMES), None)
        if i_om is None or i_s8 is None:
            missing, names = (
                ("sigma_8", _SIGMA_8_NAMES) if i_s8 is None else ("Omega_m", _OMEGA_M_NAMES)
            )
            raise ValueError(
                f"{name}: header names no column '{missing}' (columns: {' '.join(header)}); "
                f"accepted names: {', '.join(sorted(names))}"
            )
        ncols = len(header)
    else:
        try:
            float(rows[0][1][0])
            i_om, i_s8 = 0, 1
        except ValueError:
            i_om, i_s8 = 1, 2
        ncols = len(rows[0][1])

    out = np.empty((len(rows), 2), dtype=np.float64)
    for r, (lineno, tokens) in enumerate(rows):
        if len(tokens) != ncols:
            raise ValueError(f"{name}: line {lineno}: expected {ncols} columns, got {len(tokens)}")
        for c, (i, col) in enumerate(((i_om, "Omega_m"), (i_s8, "sigma_8"))):
            if i >= len(tokens):
                raise ValueError(f"{name}: line {lineno}: column '{col}' missing")
            try:
                out[r, c] = float(tokens[i])
            except ValueError:
                raise ValueError(
                    f"{name}: line {lineno}: column '{col}': cannot parse {tokens[i]!r} as a number"
                ) from None
    for c, col in enumerate(("Omega_m", "sigma_8")):
        bad = ~(np.isfinite(out[:, c]) & (out[:, c] > 0))
        if bad.any():
            lineno = rows[_first_bad(bad)][0]
            raise ValueError(
                f"{name}: line {lineno}: column '{col}': expected a finite value > 0, "
                f"got {float(out[_first_bad(bad), c])}"
            )
    return out


def is_hdf5(name: str) -> bool:
    """HDF5 files with a user block keep their signature at offset 512, 1024, ..."""
    import h5py

    return bool(h5py.is_hdf5(name))


def _natural_key(text: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"([0-9]+)", text)]


def group_files_in(directory: str) -> list[str]:
    names = sorted((n for n in os.listdir(directory) if _GROUP_FILE.fullmatch(n)), key=_natural_key)
    if not names:
        raise ValueError(
            f"{directory}: no CAMELS group files (groups_NNN.hdf5 or fof_subhalo_tab_NNN.hdf5)"
        )
    return [os.path.join(directory, n) for n in names]


def _scalar_attr(attrs, key: str, name: str, required: bool) -> float | None:
    if key not in attrs:
        if required:
            raise ValueError(f"{name}: key 'Header/{key}': missing attribute")
        return None
    value = np.asarray(attrs[key])
    if value.dtype.kind not in "fiu" or value.size != 1 or not np.isfinite(value).all():
        raise ValueError(
            f"{name}: key 'Header/{key}': expected a finite number, got {_describe(value)}"
        )
    return float(value.reshape(()))


def _check_links(f, key: str, name: str, depth: int = 0) -> None:
    """Refuse, before anything is opened through it, an HDF5 external link on the way to
    ``key`` (``Header``, ``Group/GroupPos``, ...): it would read another file. Soft links
    inside the file are followed (their targets checked the same way)."""
    import h5py

    parts = [p for p in key.split("/") if p]
    for i in range(len(parts)):
        path = "/".join(parts[: i + 1])
        link = f.get(path, getlink=True)
        if link is None:
            return  # missing: the caller says so
        if isinstance(link, h5py.ExternalLink):
            raise ValueError(
                f"{name}: key '{path}': an HDF5 external link to {link.filename}:{link.path}; "
                "external links are not followed (copy the data into this file)"
            )
        if isinstance(link, h5py.SoftLink):
            if depth > 8:
                raise ValueError(f"{name}: key '{path}': soft links nested too deep")
            _check_links(f, link.path, name, depth + 1)


def read_group_file(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, float, dict]:
    """One CAMELS FoF file -> (pos ``[N, 3]`` box units, mass ``[N]`` 1e10 Msun/h, vel
    ``[N, 3]`` km/s or None, box size in Mpc/h, per-file meta), all checked."""
    import h5py

    _require_file(name)
    try:
        f = h5py.File(name, "r")
    except OSError as e:
        raise ValueError(f"{name}: not a valid HDF5 file ({e})") from e
    with f:
        for key in ("Header", "Group/GroupPos", "Group/GroupMass", "Group/GroupVel"):
            _check_links(f, key, name)
        if "Header" not in f:
            raise ValueError(f"{name}: key 'Header': missing group")
        attrs = f["Header"].attrs
        box_kpc = _scalar_attr(attrs, "BoxSize", name, required=True)
        if not box_kpc > 0:
            raise ValueError(f"{name}: key 'Header/BoxSize': expected > 0 kpc/h, got {box_kpc}")
        a = _scalar_attr(attrs, "Time", name, required=False)
        z = _scalar_attr(attrs, "Redshift", name, required=False)
        if a is not None and not 0 < a <= 1 + 1e-6:
            raise ValueError(
                f"{name}: key 'Header/Time': expected a scale factor in (0, 1], got {a}"
            )
        if z is not None and not -1e-6 <= z < 1e4:
            raise ValueError(f"{name}: key 'Header/Redshift': expected a redshift >= 0, got {z}")
        if a is not None and z is not None and not np.isclose(a, 1 / (1 + z), rtol=1e-3):
            raise ValueError(
                f"{name}: key 'Header/Time': scale factor {a} disagrees with "
                f"'Header/Redshift' {z} (expected a = 1 / (1 + z) = {1 / (1 + z):.6g})"
            )
        if a is None and z is not None:
            a = 1.0 / (1.0 + z)
        n_total = _scalar_attr(attrs, "Ngroups_Total", name, required=False)

        def read(key: str, shape_text: str, ncols: int | None) -> np.ndarray:
            obj = f.get(key)
            if not isinstance(obj, h5py.Dataset):
                raise ValueError(f"{name}: key '{key}': missing dataset")
            if obj.dtype.kind not in "fiu" or obj.ndim != (1 if ncols is None else 2):
                raise ValueError(
                    f"{name}: key '{key}': expected float array of shape {shape_text}, "
                    f"got {obj.dtype} array of shape {obj.shape}"
                )
            msg = over_limit("PHYSML_MAX_HALOS", int(obj.shape[0]), f"{name}: key '{key}'")
            if msg:
                raise ValueError(msg)
            try:
                data = obj[()]
            except OSError as e:  # declared larger than the file holds, bad filter, ...
                raise ValueError(f"{name}: key '{key}': corrupt dataset ({e})") from e
            return _as_float32(np.asarray(data), shape_text, ncols, f"{name}: key '{key}'")

        if "Group/GroupPos" not in f and n_total == 0:
            # Subfind omits the Group datasets when no group was found.
            pos_kpc = np.zeros((0, 3), np.float32)
            mass = np.zeros((0,), np.float32)
            vel = None
        else:
            pos_kpc = read("Group/GroupPos", "[N, 3]", 3)
            mass = read("Group/GroupMass", "[N]", None)
            if mass.shape[0] != pos_kpc.shape[0]:
                raise ValueError(
                    f"{name}: key 'Group/GroupMass': has {mass.shape[0]} rows, "
                    f"'Group/GroupPos' has {pos_kpc.shape[0]}"
                )
            vel = None
            if "Group/GroupVel" in f:
                vel = read("Group/GroupVel", "[N, 3]", 3)
                if vel.shape[0] != pos_kpc.shape[0]:
                    raise ValueError(
                        f"{name}: key 'Group/GroupVel': has {vel.shape[0]} rows, "
                        f"'Group/GroupPos' has {pos_kpc.shape[0]}"
                    )
                _check_finite(vel, f"{name}: key 'Group/GroupVel'")
                if a is not None:  # GroupVel is in km/s/a: peculiar velocity = GroupVel / a
                    vel = (vel.astype(np.float64) / a).astype(np.float32)

    _check_finite(pos_kpc, f"{name}: key 'Group/GroupPos'")
    _check_finite(mass, f"{name}: key 'Group/GroupMass'")
    _check_positive_mass(mass, f"{name}: key 'Group/GroupMass'")
    _check_position_units(pos_kpc, box_kpc, name)
    pos = np.mod(pos_kpc.astype(np.float64) / box_kpc, 1.0).astype(np.float32)
    pos[pos >= 1] = 0  # float32 rounding of values just below 1
    info = {"file": os.path.basename(name), "redshift": z, "scale_factor": a}
    return pos, mass, vel, box_kpc / 1000.0, info


def _check_position_units(pos_kpc: np.ndarray, box_kpc: float, name: str) -> None:
    """Positions and ``BoxSize`` must share units (kpc/h): positions outside the box by more
    than half of it (slightly outside is a periodic image, wrapped), or 20+ halos all within
    1 % of it from the origin, mean they do not."""
    if not len(pos_kpc):
        return
    lo, hi = float(pos_kpc.min()), float(pos_kpc.max())
    if lo < -0.5 * box_kpc or hi > 1.5 * box_kpc:
        raise ValueError(
            f"{name}: key 'Group/GroupPos': positions from {lo:g} to {hi:g} do not lie in the "
            f"box [0, {box_kpc:g}] of 'Header/BoxSize'; positions and BoxSize must both be in "
            "kpc/h"
        )
    if len(pos_kpc) >= 20 and hi < 0.01 * box_kpc:
        raise ValueError(
            f"{name}: key 'Group/GroupPos': all {len(pos_kpc)} positions lie below {hi:g}, "
            f"within 1 % of the box side {box_kpc:g} of 'Header/BoxSize'; positions and "
            "BoxSize must both be in kpc/h (are the positions in Mpc/h?)"
        )
