"""Halo catalogs: the :class:`Catalog` and :class:`CatalogSet` types, their readers and writers.

Units follow the package conventions: positions in box units ``[0, 1)``, masses in
``1e10 Msun/h``, velocities in ``km/s`` (peculiar), box sizes in ``Mpc/h``.

File formats read by :func:`load_catalogs`:

``.npz`` (the source notebook's format, written by :func:`save_catalogs`)
    ``sim_0 .. sim_{n-1}``: float32 ``[N_i, 4]`` = (x, y, z in box units, mass in 1e10 Msun/h).
    ``params`` (optional): float64 ``[n, 2]`` = (Omega_m, sigma_8).
    ``vel_i`` (optional, per catalog): float32 ``[N_i, 3]``, km/s.
    ``box_size`` (optional, default 25.0): float64 scalar, Mpc/h.
    ``meta`` (optional): 0-d unicode array holding a JSON object.

CAMELS FoF group files and parameter tables: read by :mod:`physml.camels` (see there).

Every reader refuses bad input with a :class:`ValueError` naming the file and the key;
nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ._checks import (
    NPY_HEADER_ERRORS,
    _as_float32,
    _check_catalog_arrays,
    _check_finite,
    _check_labels,
    _check_prior_box,
    _describe,
    _first_bad,
    _magic,
    _require_file,
)
from .camels import group_files_in, is_hdf5, read_camels_params, read_group_file
from .limits import over_limit

__all__ = [
    "Catalog",
    "CatalogSet",
    "checksum_file",
    "load_catalogs",
    "read_camels_params",
    "save_catalogs",
]

DEFAULT_BOX_SIZE = 25.0  # Mpc/h
MASS_UNIT = 1e10  # Msun/h per catalog mass unit

_NPZ_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_MAGIC = b"\x93NUMPY"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_SIM_KEY = re.compile(r"sim_(0|[1-9][0-9]*)")
_VEL_KEY = re.compile(r"vel_(0|[1-9][0-9]*)")
_DEFLATE_MAX_RATIO = 1032  # the most a deflate stream can inflate (bytes out per byte in)


# --------------------------------------------------------------------------------------------
# types
# --------------------------------------------------------------------------------------------


@dataclass(eq=False, repr=False)
class Catalog:
    r"""One halo catalog in a periodic box.

    Args:
        pos: ``[N, 3]`` float32, box units in ``[0, 1)`` (a coordinate equal to 1.0 is
            wrapped to 0.0).
        mass: ``[N]`` float32, ``1e10 Msun/h``, ``> 0``.
        vel: ``[N, 3]`` float32, km/s (peculiar), or ``None``.

    Inputs are converted to float32 (without a copy when they already are) and checked;
    a bad input raises :class:`ValueError`. ``N = 0`` is legal.
    """

    pos: np.ndarray
    mass: np.ndarray
    vel: np.ndarray | None = None

    def __post_init__(self) -> None:
        pos = _as_float32(self.pos, "[N, 3]", 3, "Catalog.pos")
        mass = _as_float32(self.mass, "[N]", None, "Catalog.mass")
        vel = None if self.vel is None else _as_float32(self.vel, "[N, 3]", 3, "Catalog.vel")
        if mass.shape[0] != pos.shape[0]:
            raise ValueError(f"Catalog.mass: has {mass.shape[0]} rows, pos has {pos.shape[0]}")
        if vel is not None and vel.shape[0] != pos.shape[0]:
            raise ValueError(f"Catalog.vel: has {vel.shape[0]} rows, pos has {pos.shape[0]}")
        self.pos = _check_catalog_arrays(pos, mass, vel, "Catalog")
        self.mass = mass
        self.vel = vel

    def __len__(self) -> int:
        return int(self.pos.shape[0])

    def __repr__(self) -> str:
        return f"Catalog(n_halos={len(self)}, vel={self.vel is not None})"

    @property
    def n_halos(self) -> int:
        """Number of halos ``N``."""
        return int(self.pos.shape[0])

    def digest(self) -> str:
        """sha256 (hex) of the catalog's content: the halo count, then positions and masses
        as float32 (velocities and labels left out), so the same halos give the same digest
        whatever file or label they come with."""
        h = hashlib.sha256(np.int64(len(self)).tobytes())
        h.update(np.ascontiguousarray(self.pos, dtype=np.float32).tobytes())
        h.update(np.ascontiguousarray(self.mass, dtype=np.float32).tobytes())
        return h.hexdigest()

    def as_array(self) -> np.ndarray:
        """``[N, 4]`` float32 = (x, y, z in box units, mass in 1e10 Msun/h); a new array."""
        return np.concatenate([self.pos, self.mass[:, None]], axis=1).astype(np.float32)

    def subset(self, keep: np.ndarray) -> Catalog:
        """The halos selected by ``keep`` (``[N]`` bool mask or integer indices)."""
        return Catalog(
            self.pos[keep], self.mass[keep], None if self.vel is None else self.vel[keep]
        )


@dataclass(eq=False, repr=False)
class CatalogSet:
    r"""``n`` halo catalogs with their labels.

    Args:
        catalogs: ``n`` :class:`Catalog` objects.
        params: ``[n, 2]`` float64 = (Omega_m, sigma_8). A NaN marks an unknown value
            (Omega_m when only sigma_8 labels are known; both for unlabelled CAMELS files).
        box_size: box side length, Mpc/h.
        meta: JSON-serialisable dict (generator settings, version, seeds).
        source: the path the set was read from (``""`` if built in memory).

    Indexing with an ``int`` gives a :class:`Catalog`; a slice, integer array or bool mask
    gives a :class:`CatalogSet` sharing the catalogs, with copied ``params`` and ``meta``.
    """

    catalogs: list[Catalog]
    params: np.ndarray
    box_size: float = DEFAULT_BOX_SIZE
    meta: dict = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        self.catalogs = list(self.catalogs)
        for i, cat in enumerate(self.catalogs):
            if not isinstance(cat, Catalog):
                raise ValueError(f"CatalogSet.catalogs[{i}]: expected Catalog, got {type(cat)}")
        params = np.asarray(self.params)
        if params.dtype.kind not in "fiu" or params.shape != (len(self.catalogs), 2):
            raise ValueError(
                f"CatalogSet.params: expected float array of shape [{len(self.catalogs)}, 2], "
                f"got {_describe(params)}"
            )
        self.params = np.asarray(params, dtype=np.float64)
        bad = ~(np.isnan(self.params) | (np.isfinite(self.params) & (self.params > 0)))
        if bad.any():
            raise ValueError(
                f"CatalogSet.params: values must be > 0 or NaN (unknown), "
                f"first bad row {_first_bad(bad)}: {self.params[_first_bad(bad)].tolist()}"
            )
        box_size = float(self.box_size)
        if not (np.isfinite(box_size) and box_size > 0):
            raise ValueError(f"CatalogSet.box_size: expected finite > 0 Mpc/h, got {box_size!r}")
        self.box_size = box_size
        if not isinstance(self.meta, dict):
            raise ValueError(f"CatalogSet.meta: expected dict, got {type(self.meta)}")
        self.source = os.fspath(self.source)

    def __len__(self) -> int:
        return len(self.catalogs)

    def __repr__(self) -> str:
        n = self.n_halos
        halos = f"{n.min()}..{n.max()}" if len(n) else "-"
        return (
            f"CatalogSet(n={len(self)}, n_halos={halos}, box_size={self.box_size}, "
            f"source={self.source!r})"
        )

    def __iter__(self):
        return iter(self.catalogs)

    def __getitem__(self, index) -> Catalog | CatalogSet:
        if isinstance(index, (int, np.integer)):
            return self.catalogs[index]
        if isinstance(index, slice):
            idx = np.arange(len(self))[index]
        else:
            idx = np.asarray(index)
            if idx.size == 0:
                idx = idx.astype(np.int64)
            if idx.dtype == bool:
                if idx.shape != (len(self),):
                    raise IndexError(f"bool mask of shape {idx.shape}, expected ({len(self)},)")
                idx = np.flatnonzero(idx)
            elif idx.dtype.kind not in "iu" or idx.ndim != 1:
                raise IndexError(f"expected int, slice, bool mask or 1-d int array, got {index!r}")
        return CatalogSet(
            [self.catalogs[i] for i in idx.tolist()],
            self.params[idx].copy(),
            self.box_size,
            dict(self.meta),
            self.source,
        )

    @property
    def sigma_8(self) -> np.ndarray:
        """``[n]`` float64 view of ``params[:, 1]``."""
        return self.params[:, 1]

    @property
    def omega_m(self) -> np.ndarray:
        """``[n]`` float64 view of ``params[:, 0]`` (NaN where unknown)."""
        return self.params[:, 0]

    @property
    def n_halos(self) -> np.ndarray:
        """``[n]`` int64, number of halos per catalog."""
        return np.array([len(c) for c in self.catalogs], dtype=np.int64)

    def with_mass_cut(self, min_mass_msun_h: float) -> CatalogSet:
        """Keep the halos with ``mass * 1e10 >= min_mass_msun_h`` (Msun/h) in every catalog.

        Catalogs may end up empty. ``params`` and ``meta`` are copied; ``meta`` is unchanged.
        """
        cut = float(min_mass_msun_h)
        if np.isnan(cut):
            raise ValueError("with_mass_cut: min_mass_msun_h is NaN")
        cats = [c.subset(c.mass.astype(np.float64) * MASS_UNIT >= cut) for c in self.catalogs]
        return CatalogSet(cats, self.params.copy(), self.box_size, dict(self.meta), self.source)


# --------------------------------------------------------------------------------------------
# helpers for files
# --------------------------------------------------------------------------------------------


def checksum_file(path, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of the bytes of ``path`` as a hex string, read in ``chunk_size`` chunks."""
    name = _require_file(path)
    h = hashlib.sha256()
    with open(name, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# labels
# --------------------------------------------------------------------------------------------


def _read_labels(labels) -> tuple[np.ndarray, str]:
    """``labels`` (path to .npy / CAMELS table, or an array) -> (``[m, 2]`` float64, where)."""
    if isinstance(labels, (str, os.PathLike)):
        name = _require_file(labels)
        where = f"labels {name}"
        if _magic(name, 6) == _NPY_MAGIC:
            try:
                arr = np.load(name, allow_pickle=False)
            except (ValueError, OSError, EOFError, *NPY_HEADER_ERRORS) as e:
                raise ValueError(f"{name}: cannot read labels as .npy without pickle ({e})") from e
        elif _magic(name, 4) in _NPZ_MAGIC or _magic(name) == _HDF5_MAGIC:
            raise ValueError(f"{name}: labels must be a .npy array or a CAMELS parameter table")
        else:
            arr = read_camels_params(name)
            _check_prior_box(arr, where)
            return arr, where
    else:
        where = "labels argument"
        arr = np.asarray(labels)
    if (
        arr.dtype.kind not in "fiu"
        or arr.ndim not in (1, 2)
        or (arr.ndim == 2 and arr.shape[1] != 2)
    ):
        raise ValueError(
            f"{where}: expected float array of shape [n] (sigma_8) or [n, 2] "
            f"(Omega_m, sigma_8), got {_describe(arr)}"
        )
    arr = arr.astype(np.float64)
    if arr.ndim == 1:
        arr = np.stack([np.full_like(arr, np.nan), arr], axis=1)
    _check_labels(arr, where)
    _check_prior_box(arr, where)
    return arr, where


def _match_labels(params: np.ndarray, where: str, n: int, name: str) -> np.ndarray:
    if params.shape[0] != n:
        raise ValueError(
            f"{name}: {n} catalog(s) but {where} has {params.shape[0]} row(s); counts must match"
        )
    return params


# --------------------------------------------------------------------------------------------
# .npz
# --------------------------------------------------------------------------------------------


def save_catalogs(path, cset: CatalogSet, compress: bool = True) -> None:
    """Write ``cset`` to ``path`` in the ``.npz`` catalog format (see the module docstring).

    ``params`` is omitted when every label is NaN (an unlabelled set); a partly-NaN
    sigma_8 column is refused. The file is written to a temporary name in the same
    directory and moved into place with :func:`os.replace`, so readers never see a
    partial file. ``path`` is used as given (no ``.npz`` suffix is appended). The same set
    always gives the same bytes (entries carry a fixed time stamp).
    """
    name = os.fspath(path)
    if not isinstance(cset, CatalogSet):
        raise ValueError(f"{name}: expected a CatalogSet, got {type(cset)}")
    if len(cset) == 0:
        raise ValueError(f"{name}: refusing to write an empty CatalogSet")
    try:
        meta_json = json.dumps(cset.meta, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: key 'meta': not JSON-serialisable ({e})") from e

    arrays: dict[str, np.ndarray] = {}
    for i, cat in enumerate(cset.catalogs):
        key = f"sim_{i}"
        arr = cat.as_array()
        _check_catalog_arrays(arr[:, :3], arr[:, 3], cat.vel, f"{name}: key '{key}'")
        arrays[key] = arr
        if cat.vel is not None:
            arrays[f"vel_{i}"] = np.ascontiguousarray(cat.vel, dtype=np.float32)
    if not np.isnan(cset.params).all():
        _check_labels(cset.params, f"{name}: key 'params'")
        arrays["params"] = np.ascontiguousarray(cset.params, dtype=np.float64)
    arrays["box_size"] = np.array(cset.box_size, dtype=np.float64)
    arrays["meta"] = np.array(meta_json, dtype=np.str_)

    directory = os.path.dirname(os.path.abspath(name))
    tmp = os.path.join(
        directory, f".{os.path.basename(name)}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    )
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            _write_npz(f, arrays, compress)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, name)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _write_npz(f, arrays: dict[str, np.ndarray], compress: bool) -> None:
    """``np.savez`` / ``np.savez_compressed`` with a fixed time stamp on every entry, so
    that the same arrays always give the same bytes (and the same sha256)."""
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(f, "w", compression=method, allowZip64=True) as zf:
        for key, arr in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(arr), allow_pickle=False)


def _npz_declared(npz, key: str, name: str) -> None:
    """Check what the ``.npy`` header of entry ``key`` declares before numpy allocates it:
    a size the compressed entry cannot hold is a corrupt entry, and a catalog longer than
    ``PHYSML_MAX_HALOS`` rows is refused."""
    zf = getattr(npz, "zip", None)
    if zf is None:
        return
    try:
        info = zf.getinfo(f"{key}.npy")
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    except (
        KeyError,
        ValueError,
        OSError,
        EOFError,
        zipfile.BadZipFile,
        zlib.error,
        *NPY_HEADER_ERRORS,
    ) as e:
        raise ValueError(
            f"{name}: key '{key}': corrupt entry (its .npy header cannot be read: "
            f"{type(e).__name__}: {e})"
        ) from e
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if info.compress_type == zipfile.ZIP_STORED:
        room = info.compress_size
    elif info.compress_type == zipfile.ZIP_DEFLATED:
        room = info.compress_size * _DEFLATE_MAX_RATIO + 1024
    else:
        room = None
    if room is not None and nbytes > room:
        raise ValueError(
            f"{name}: key '{key}': corrupt entry (its header declares shape {shape}, "
            f"{nbytes:,} bytes, but the entry can hold at most {room:,})"
        )
    if key.startswith(("sim_", "vel_")) and len(shape) >= 1:
        msg = over_limit("PHYSML_MAX_HALOS", int(shape[0]), f"{name}: key '{key}'")
        if msg:
            raise ValueError(msg)


def _npz_get(npz, key: str, name: str) -> np.ndarray:
    _npz_declared(npz, key, name)
    try:
        return npz[key]
    except ValueError as e:  # object arrays need pickle
        raise ValueError(
            f"{name}: key '{key}': cannot be loaded without pickle (object arrays are refused; {e})"
        ) from e
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise ValueError(f"{name}: key '{key}': corrupt entry ({e})") from e


def _load_npz(name: str, labels) -> CatalogSet:
    try:
        npz = np.load(name, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{name}: not a valid .npz file ({e})") from e
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"{name}: not a valid .npz file")
    with npz:
        keys = set(npz.files)
        sim_idx, vel_idx = set(), set()
        for key in keys:
            if key.startswith("sim_"):
                if not _SIM_KEY.fullmatch(key):
                    raise ValueError(f"{name}: key '{key}': unexpected name, expected sim_<i>")
                sim_idx.add(int(key[4:]))
            elif key.startswith("vel_"):
                if not _VEL_KEY.fullmatch(key):
                    raise ValueError(f"{name}: key '{key}': unexpected name, expected vel_<i>")
                vel_idx.add(int(key[4:]))
        if not sim_idx:
            raise ValueError(f"{name}: key 'sim_0': missing (no sim_<i> catalogs in file)")
        n = max(sim_idx) + 1
        if len(sim_idx) != n:  # a gap; found without building range(n) (n may be huge)
            first = next(i for i, k in enumerate(sorted(sim_idx)) if i != k)
            raise ValueError(
                f"{name}: key 'sim_{first}': missing (sim_i keys must run 0..{n - 1} "
                f"without gaps; {n - len(sim_idx)} missing)"
            )
        orphans = sorted(vel_idx - sim_idx)
        if orphans:
            raise ValueError(f"{name}: key 'vel_{orphans[0]}': no matching 'sim_{orphans[0]}'")

        catalogs = []
        for i in range(n):
            key = f"sim_{i}"
            arr = _as_float32(_npz_get(npz, key, name), "[N, 4]", 4, f"{name}: key '{key}'")
            vel = None
            if i in vel_idx:
                vkey = f"vel_{i}"
                vel = _as_float32(_npz_get(npz, vkey, name), "[N, 3]", 3, f"{name}: key '{vkey}'")
                if vel.shape[0] != arr.shape[0]:
                    raise ValueError(
                        f"{name}: key '{vkey}': has {vel.shape[0]} rows, '{key}' has {arr.shape[0]}"
                    )
                _check_finite(vel, f"{name}: key '{vkey}'")
            pos = np.ascontiguousarray(arr[:, :3])
            mass = np.ascontiguousarray(arr[:, 3])
            pos = _check_catalog_arrays(pos, mass, None, f"{name}: key '{key}'")
            catalogs.append(Catalog(pos, mass, vel))

        if labels is not None:
            params, where = _read_labels(labels)
            params = _match_labels(params, where, n, name)
        elif "params" in keys:
            params = _npz_get(npz, "params", name)
            if params.dtype.kind not in "fiu" or params.shape != (n, 2):
                raise ValueError(
                    f"{name}: key 'params': expected float array of shape [{n}, 2] "
                    f"(Omega_m, sigma_8), got {_describe(params)}"
                )
            params = params.astype(np.float64)
            _check_labels(params, f"{name}: key 'params'")
            _check_prior_box(params, f"{name}: key 'params'")
        else:
            raise ValueError(
                f"{name}: key 'params': missing, and no labels given; pass labels= "
                f"(a .npy of sigma_8 [n] or (Omega_m, sigma_8) [n, 2], or a CAMELS table)"
            )

        box_size = DEFAULT_BOX_SIZE
        if "box_size" in keys:
            b = _npz_get(npz, "box_size", name)
            if b.dtype.kind not in "fiu" or b.size != 1 or not (np.isfinite(b).all() and b > 0):
                raise ValueError(
                    f"{name}: key 'box_size': expected a finite scalar > 0 (Mpc/h), "
                    f"got {_describe(b)}"
                )
            box_size = float(b.reshape(()))

        meta: dict = {}
        if "meta" in keys:
            m = _npz_get(npz, "meta", name)
            if m.dtype.kind != "U" or m.ndim != 0:
                raise ValueError(
                    f"{name}: key 'meta': expected a 0-d unicode array holding JSON, "
                    f"got {_describe(m)}"
                )
            try:
                meta = json.loads(str(m))
            except json.JSONDecodeError as e:
                raise ValueError(f"{name}: key 'meta': invalid JSON ({e})") from e
            if not isinstance(meta, dict):
                raise ValueError(f"{name}: key 'meta': expected a JSON object, got {type(meta)}")

    return CatalogSet(catalogs, params, box_size, meta, name)


def _load_group_files(files: list[str], labels, name: str) -> CatalogSet:
    catalogs, infos = [], []
    box_size = None
    for file in files:
        pos, mass, vel, box, info = read_group_file(file)
        cat = Catalog(pos, mass, vel)
        if box_size is not None and not np.isclose(box, box_size, rtol=1e-6, atol=0):
            raise ValueError(
                f"{file}: key 'Header/BoxSize': {box * 1000} kpc/h differs from "
                f"{box_size * 1000} kpc/h in {files[0]}"
            )
        box_size = box if box_size is None else box_size
        catalogs.append(cat)
        infos.append(info)
    if labels is not None:
        params, where = _read_labels(labels)
        params = _match_labels(params, where, len(catalogs), name)
    else:
        params = np.full((len(catalogs), 2), np.nan)
    meta = {
        "format": "camels-fof",
        "files": [i["file"] for i in infos],
        "redshift": [i["redshift"] for i in infos],
        "velocity": "peculiar km/s (GroupVel / a)"
        if all(i["scale_factor"] is not None for i in infos)
        else "GroupVel as stored (km/s/a; no scale factor in Header)",
    }
    return CatalogSet(catalogs, params, box_size, meta, name)


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------


def load_catalogs(path, labels=None) -> CatalogSet:
    """Read halo catalogs from ``path``.

    Args:
        path: one of

            - an ``.npz`` in the catalog format (see the module docstring);
            - a CAMELS FoF group HDF5 file (``groups_NNN.hdf5``, ``fof_subhalo_tab_NNN.hdf5``);
            - a directory: every group file in it, one catalog per file, sorted by name
              (numbers compared numerically);
            - a list of group files: one catalog per file, in the order given.

            The format is detected from the file's first bytes, not its suffix.
        labels: ``None``, or labels overriding any ``params`` in the file: a path to a
            ``.npy`` of sigma_8 ``[n]`` (Omega_m set to NaN) or (Omega_m, sigma_8)
            ``[n, 2]``, a path to a CAMELS ``CosmoAstroSeed_*.txt`` table, or such an array.

    Returns:
        :class:`CatalogSet` with positions in box units ``[0, 1)``, masses in 1e10 Msun/h,
        velocities in km/s and ``box_size`` in Mpc/h. HDF5 positions (kpc/h) are divided by
        ``Header/BoxSize`` and wrapped into ``[0, 1)``; ``GroupVel`` (km/s/a) is divided by
        the scale factor ``Header/Time``.

    An ``.npz`` without ``params`` needs ``labels`` (else :class:`ValueError`). HDF5 files
    without ``labels`` load with all-NaN ``params``: the caller decides whether that is fine.

    Raises:
        FileNotFoundError: ``path`` (or a listed file, or ``labels``) does not exist.
        ValueError: malformed input; the message names the file and the key.
    """
    if isinstance(path, Sequence) and not isinstance(path, (str, bytes)):
        files = [os.fspath(p) for p in path]
        if not files:
            raise ValueError("load_catalogs: empty list of files")
        where = files[0] if len(files) == 1 else f"{files[0]} (+{len(files) - 1} more files)"
        return _load_group_files(files, labels, where)
    name = os.fspath(path)
    if not os.path.exists(name):
        raise FileNotFoundError(f"{name}: no such file or directory")
    if os.path.isdir(name):
        return _load_group_files(group_files_in(name), labels, name)
    head = _magic(name)
    if head[:4] in _NPZ_MAGIC:
        return _load_npz(name, labels)
    if head == _HDF5_MAGIC or is_hdf5(name):
        return _load_group_files([name], labels, name)
    raise ValueError(f"{name}: not a valid .npz or HDF5 file (unrecognised leading bytes)")
