"""Graph data for the GNN: the fixed split, fast mode, feature standardisation, the cached
periodic radius graphs, :class:`HaloDataset`, the cube-symmetry augmentation and the loaders.

Everything here starts from a :class:`~physml.catalogs.CatalogSet` (the simulated sets of
:mod:`physml.datasets`, or real CAMELS files read by :mod:`physml.catalogs`).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data
from torch_geometric.data import Dataset as PygDataset
from torch_geometric.loader import DataLoader
from torch_geometric.transforms import BaseTransform
from tqdm import tqdm

from ._checks import NPY_HEADER_ERRORS
from .catalogs import CatalogSet
from .graphs import radius_graph
from .limits import over_limit
from .settings import BATCH_SIZE, MASS_CUT, R_LINK, Y_COLUMNS, cache_root, fast_mode

__all__ = [
    "DEFAULT_CACHE",
    "NORM_KEYS",
    "TARGET_NAMES",
    "HaloDataset",
    "RandomCubeSymmetry",
    "cached_edges",
    "catalog_digest",
    "check_feature_norm",
    "fast_mode",
    "feature_norm",
    "make_loaders",
    "split_indices",
]

TARGET_NAMES = Y_COLUMNS  # the column order of Data.y
DEFAULT_CACHE = cache_root()
GRAPH_FORMAT_VERSION = 2  # bump when the cached graph layout changes
#: keys of the feature standardisation dict (:func:`feature_norm`)
NORM_KEYS = ("log_mass_mean", "log_mass_std", "log_n_mean", "log_n_std")
#: catalogs larger than this (halos) count as large inputs: building their graphs shows progress
LARGE_CATALOG = 5000


def split_indices(
    n: int = 1000, seed: int = 0, fractions=(0.7, 0.15, 0.15), fast: bool | None = None
) -> dict[str, np.ndarray]:
    """The fixed, disjoint train / val / test split of ``n`` catalogs (indices, sorted).

    Every notebook, solution and benchmark uses this with the defaults on the bundled LH
    set. In fast mode (``fast=None`` reads :func:`fast_mode`) each part is cut to a small
    prefix (64 / 16 / 16) of the same split, so fast runs test on a subset of the test set.
    """
    if not np.isclose(sum(fractions), 1.0) or min(fractions) < 0:
        raise ValueError(f"fractions must be >= 0 and sum to 1, got {fractions}")
    perm = np.random.default_rng(seed).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    parts = {
        "train": perm[:n_train],
        "val": perm[n_train : n_train + n_val],
        "test": perm[n_train + n_val :],
    }
    if fast_mode() if fast is None else fast:
        parts = {k: v[:m] for (k, v), m in zip(parts.items(), (64, 16, 16), strict=True)}
    return {k: np.sort(v) for k, v in parts.items()}


def feature_norm(cset: CatalogSet) -> dict:
    """Mean and std of log10 halo mass (over all halos) and of log10 N_halo (over catalogs),
    for standardising the node and graph features. JSON-serialisable (stored in models)."""
    logm = np.concatenate([np.log10(c.mass) for c in cset] + [np.zeros(0, np.float32)])
    logn = np.log10(np.maximum(cset.n_halos, 1))
    if len(logm) < 2:
        raise ValueError(f"{cset.source or 'catalog set'}: too few halos to standardise features")
    return {
        "log_mass_mean": float(logm.mean()),
        "log_mass_std": float(logm.std() + 1e-8),
        "log_n_mean": float(logn.mean()),
        "log_n_std": float(logn.std() + 1e-8),
    }


def check_feature_norm(norm, where: str = "norm") -> dict:
    """``norm`` if it is a standardisation dict of :func:`feature_norm` (the four
    :data:`NORM_KEYS`, finite, stds > 0), else :class:`ValueError` naming ``where``.

    An empty or partial dict is refused rather than replaced by the data's own statistics:
    a model must see its inputs standardised as in training."""
    if not isinstance(norm, dict):
        raise ValueError(f"{where}: expected a dict with keys {NORM_KEYS}, got {norm!r}")
    missing = [k for k in NORM_KEYS if k not in norm]
    if missing:
        raise ValueError(
            f"{where}: missing {', '.join(missing)} (expected the training catalogs' "
            f"standardisation {NORM_KEYS}; it is never recomputed from the data evaluated)"
        )
    out = {}
    for k in NORM_KEYS:
        try:
            v = float(norm[k])
        except (TypeError, ValueError):
            v = float("nan")
        if not np.isfinite(v) or (k.endswith("_std") and not v > 0):
            raise ValueError(
                f"{where}[{k!r}]: expected a finite float (> 0 for a std), got {norm[k]!r}"
            )
        out[k] = v
    return out


def catalog_digest(cset: CatalogSet) -> str:
    """sha256 of a set's arrays (positions, masses, labels, box size): the cache key's data part."""
    h = hashlib.sha256()
    h.update(np.float64(cset.box_size).tobytes())
    h.update(np.ascontiguousarray(cset.params, dtype=np.float64).tobytes())
    for c in cset:
        h.update(np.int64(len(c)).tobytes())
        h.update(np.ascontiguousarray(c.as_array()).tobytes())
    return h.hexdigest()


def _check_graph_sizes(cset: CatalogSet, r_link: float) -> None:
    """Refuse, before building, a catalog whose graph would exceed the edge limit
    (``PHYSML_MAX_EDGES``). Large catalogs are counted exactly with a KD-tree (no pairs
    are stored); small ones cannot reach the limit."""
    from scipy.spatial import cKDTree

    for i, c in enumerate(cset):
        n = len(c)
        if n * (n - 1) <= 1_000_000:  # fewer possible edges than any sane limit
            continue
        pos = np.mod(c.pos.astype(np.float64), 1.0)
        pos[pos >= 1.0] = 0.0
        tree = cKDTree(pos, boxsize=1.0)
        n_edges = int(tree.count_neighbors(tree, r_link)) - n
        msg = over_limit(
            "PHYSML_MAX_EDGES",
            n_edges,
            f"{cset.source or 'catalogs'}: catalog {i} ({n} halos) at r_link {r_link}",
        )
        if msg:
            raise ValueError(msg + "; or apply a mass cut or a smaller r_link")


def _build_edges(cset: CatalogSet, r_link: float) -> tuple[np.ndarray, np.ndarray]:
    """Periodic radius graphs of every catalog: concatenated edge_index [2, E] int64 and
    offsets [n + 1] into it. Shows progress for large catalogs."""
    _check_graph_sizes(cset, r_link)
    large = len(cset) and int(cset.n_halos.max()) > LARGE_CATALOG
    edges, offsets = [], [0]
    for c in tqdm(cset, desc="radius graphs", disable=not large, unit="catalog"):
        ei = radius_graph(torch.from_numpy(c.pos), r_link, box_size=1.0).numpy()
        edges.append(ei)
        offsets.append(offsets[-1] + ei.shape[1])
    return np.concatenate(edges, 1) if edges else np.zeros((2, 0), np.int64), np.array(offsets)


def _edges_digest(edges: np.ndarray, offsets: np.ndarray) -> str:
    h = hashlib.sha256(np.ascontiguousarray(edges, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(offsets, dtype=np.int64).tobytes())
    return h.hexdigest()


def _cache_problem(f, key_text: str, cset: CatalogSet, r_link: float) -> str | None:
    """Why a cache file's content does not belong to its key (``None`` if it does): the
    recorded key, the digest of the arrays, their shapes, index ranges and edge lengths."""
    if "key" not in f or str(f["key"]) != key_text:
        return "it records another key"
    edges, offsets = f["edge_index"], f["offsets"]
    if edges.dtype.kind not in "iu" or offsets.dtype.kind not in "iu":
        return "its arrays are not integer"
    if offsets.shape != (len(cset) + 1,) or edges.shape != (2, offsets[-1]):
        return "its arrays have the wrong shapes"
    if np.any(np.diff(offsets) < 0) or offsets[0] != 0:
        return "its offsets are not increasing"
    if str(f["digest"]) != _edges_digest(edges, offsets):
        return "its arrays do not match their recorded sha256"
    n_halos = cset.n_halos
    counts = np.diff(offsets)
    if counts.any():
        graph = np.repeat(np.arange(len(cset)), counts)
        if np.any(edges < 0) or np.any(edges >= n_halos[graph]):
            return "an edge points past the end of its catalog"
        start = np.concatenate([[0], np.cumsum(n_halos)])[graph]
        pos = np.concatenate([c.pos for c in cset]).astype(np.float64)
        d = pos[edges[0] + start] - pos[edges[1] + start]
        d -= np.round(d)
        if np.any((d**2).sum(1) >= r_link**2 * (1 + 1e-6)):
            return f"an edge is longer than r_link = {r_link}"
    return None


def cached_edges(cset: CatalogSet, r_link: float, cache_dir=None) -> list[np.ndarray]:
    """Edge indices ``[2, E_i]`` of every catalog's periodic radius graph (r_link in box
    units), built once and cached in ``cache_dir`` (default ``~/.cache/physml``) under a
    key of (r_link, box size, data digest, format version). ``cache_dir=False`` disables
    the cache. The cache is an ``.npz`` of integer arrays, loaded without pickle; it records
    its key and the sha256 of its arrays, and a file whose content does not match its key
    (another key, altered arrays, out-of-range or too long edges) is rebuilt with a warning.
    A cache directory that cannot be written (read-only) is skipped with a warning."""
    key_text = json.dumps(
        [GRAPH_FORMAT_VERSION, float(r_link), float(cset.box_size), catalog_digest(cset)]
    )
    key = hashlib.sha256(key_text.encode()).hexdigest()[:20]
    path = None if cache_dir is False else Path(cache_dir or DEFAULT_CACHE) / f"graphs_{key}.npz"
    edges = offsets = None
    if path is not None and path.exists():
        try:
            with np.load(path, allow_pickle=False) as f:
                problem = _cache_problem(f, key_text, cset, float(r_link))
                if problem is None:
                    edges, offsets = f["edge_index"], f["offsets"]
        except (OSError, ValueError, KeyError, EOFError, *NPY_HEADER_ERRORS) as err:
            problem = f"it cannot be read ({type(err).__name__}: {err})"
        if problem is not None:
            warnings.warn(f"{path}: graph cache ignored and rebuilt: {problem}", stacklevel=2)
    if edges is None:
        edges, offsets = _build_edges(cset, r_link)
        if path is not None:
            _write_cache(path, key_text, edges, offsets)
    return [edges[:, a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]


def _write_cache(path: Path, key_text: str, edges: np.ndarray, offsets: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            tmp,
            edge_index=edges,
            offsets=offsets,
            key=np.array(key_text),
            digest=np.array(_edges_digest(edges, offsets)),
        )
        os.replace(tmp, path)
    except OSError as err:  # read-only or full cache directory: go on without the cache
        warnings.warn(
            f"{path.parent}: cannot write the graph cache ({err.strerror or err}); "
            "graphs are not cached",
            stacklevel=3,
        )
        if tmp.exists():
            tmp.unlink()


class HaloDataset(PygDataset):
    """Halo catalogs as PyG graphs with precomputed periodic radius graphs.

    Each item is a ``Data`` with ``pos`` ``[N, 3]`` (box units), ``x`` ``[N, 1]``
    (standardised log10 mass), ``edge_index`` ``[2, E]`` (all pairs closer than
    ``r_link`` box units, minimum image, both directions), ``u`` ``[1, 1]`` (standardised
    log10 N_halo), ``y`` ``[1, 2]`` = (sigma_8, Omega_m), ``vel`` ``[N, 3]`` km/s when
    the catalog has velocities, and ``idx`` (the catalog's index in the set).

    Args:
        cset: catalogs from :func:`physml.catalogs.load_catalogs` or
            :func:`physml.datasets.load_bundled`.
        r_link: linking radius in box units (0.2 = 5 Mpc/h for a 25 Mpc/h box).
        norm: feature standardisation from :func:`feature_norm`; compute it on the
            training catalogs and pass the same dict for every split. ``None``: from cset.
            A dict without the four keys is refused (see :func:`check_feature_norm`).
        mass_cut: halos lighter than this (Msun/h) are dropped first, as in training.
        cache_dir: where graphs are cached (see :func:`cached_edges`).
        transform: a PyG transform applied on access (e.g. :class:`RandomCubeSymmetry`).
    """

    def __init__(
        self,
        cset: CatalogSet,
        r_link: float = R_LINK,
        norm: dict | None = None,
        mass_cut: float | None = MASS_CUT,
        cache_dir=None,
        transform=None,
    ):
        super().__init__(None, transform)
        if not 0 < r_link < 0.5:
            raise ValueError(f"r_link must be in (0, 0.5) box units, got {r_link}")
        if mass_cut:
            cset = cset.with_mass_cut(mass_cut)
        self.cset, self.r_link, self.mass_cut = cset, float(r_link), mass_cut
        self.norm = feature_norm(cset) if norm is None else check_feature_norm(norm)
        edges = cached_edges(cset, r_link, cache_dir)
        n = self.norm
        self.graphs = []
        for i, (c, ei) in enumerate(zip(cset, edges, strict=True)):
            logm = (np.log10(c.mass) - n["log_mass_mean"]) / n["log_mass_std"]
            logn = (np.log10(max(len(c), 1)) - n["log_n_mean"]) / n["log_n_std"]
            om, s8 = cset.params[i]
            data = Data(
                pos=torch.from_numpy(c.pos),
                x=torch.from_numpy(logm.astype(np.float32)).view(-1, 1),
                edge_index=torch.from_numpy(ei).long(),
                u=torch.tensor([[logn]], dtype=torch.float32),
                y=torch.tensor([[s8, om]], dtype=torch.float32),
                idx=torch.tensor([i]),
            )
            if c.vel is not None:
                data.vel = torch.from_numpy(c.vel)
            self.graphs.append(data)

    def len(self) -> int:
        return len(self.graphs)

    def get(self, idx: int) -> Data:
        return self.graphs[idx]


def cube_symmetry(data: Data, perm, sign, shift=None) -> Data:
    """A copy of ``data`` (one graph or a batch) under a symmetry of the periodic unit box:
    new axis ``k`` is old axis ``perm[k]`` times ``sign[k]`` (one of the cube's 48 rotations
    and reflections), then a translation by ``shift`` ``[3]`` (box units) with wrap-around.
    ``vel`` (km/s) turns with ``pos``; ``edge_index`` and the node order are unchanged."""
    perm = torch.as_tensor(perm, device=data.pos.device)
    sign = torch.as_tensor(sign, dtype=data.pos.dtype, device=data.pos.device)
    data = data.clone()
    pos = data.pos[:, perm] * sign
    if shift is not None:
        pos = pos + torch.as_tensor(shift, dtype=pos.dtype, device=pos.device)
    data.pos = torch.remainder(pos, 1.0)
    data.pos[data.pos >= 1.0] = 0.0
    if getattr(data, "vel", None) is not None:
        data.vel = data.vel[:, perm] * sign.to(data.vel.dtype)
    return data


class RandomCubeSymmetry(BaseTransform):
    """Random symmetry of the periodic unit box: one of the cube's 48 rotations and
    reflections (axis permutation and sign flips) and a random periodic translation.

    These are isometries of the periodic box, so precomputed minimum-image edges stay
    exact; arbitrary rotations are not (they do not map the periodic box onto itself).
    ``vel`` is rotated with ``pos``. Seeded for reproducibility.
    """

    def __init__(self, seed: int | None = None, translate: bool = True):
        self.gen = torch.Generator().manual_seed(seed if seed is not None else torch.seed() % 2**63)
        self.translate = translate

    def forward(self, data: Data) -> Data:
        perm = torch.randperm(3, generator=self.gen)
        sign = torch.randint(0, 2, (3,), generator=self.gen) * 2 - 1
        shift = torch.rand(3, generator=self.gen) if self.translate else None
        return cube_symmetry(data, perm, sign, shift)


def make_loaders(
    cset: CatalogSet,
    split: dict,
    r_link: float = R_LINK,
    mass_cut: float | None = MASS_CUT,
    batch_size: int = BATCH_SIZE,
    augment: bool = False,
    seed: int = 0,
    cache_dir=None,
):
    """DataLoaders over the split of a catalog set, features standardised with the
    training catalogs' statistics. Returns (loaders dict, norm dict)."""
    train_set = cset[split["train"]].with_mass_cut(mass_cut) if mass_cut else cset[split["train"]]
    norm = feature_norm(train_set)
    loaders = {}
    for part, idx in split.items():
        transform = RandomCubeSymmetry(seed) if (augment and part == "train") else None
        ds = HaloDataset(cset[idx], r_link, norm, mass_cut, cache_dir, transform)
        loaders[part] = DataLoader(ds, batch_size=batch_size, shuffle=part == "train")
    return loaders, norm


def check_masses(cset: CatalogSet, mass_cut: float | None, where: str) -> None:
    """Warn when the masses of ``cset`` look like other units than 1e10 Msun/h (Msun/h, or
    log10 of a mass) or when ``mass_cut`` (Msun/h) removes most or all halos: either would
    silently leave the model nothing, or the wrong thing, to read."""
    masses = np.concatenate([c.mass for c in cset] + [np.zeros(0, np.float32)])
    if not len(masses):
        return
    median = float(np.median(masses))
    if median > 1e5:
        warnings.warn(
            f"{where}: median halo mass {median:.3g} x 1e10 Msun/h = {median * 1e10:.3g} Msun/h; "
            "are the masses in Msun/h? catalogs hold masses in units of 1e10 Msun/h",
            stacklevel=2,
        )
    elif len(masses) >= 50 and masses.max() < 3 * masses.min():
        warnings.warn(
            f"{where}: the {len(masses)} halo masses span less than a factor 3 "
            f"({masses.min():.3g} to {masses.max():.3g} x 1e10 Msun/h); are they log10 of "
            "the mass? catalogs hold masses in units of 1e10 Msun/h",
            stacklevel=2,
        )
    if mass_cut:
        removed = float(np.mean(masses.astype(np.float64) * 1e10 < mass_cut))
        if removed >= 0.9:
            what = "all" if removed == 1 else f"{100 * removed:.0f} % of"
            warnings.warn(
                f"{where}: the mass cut {mass_cut:g} Msun/h removes {what} the halos; "
                "check the mass units (1e10 Msun/h expected)",
                stacklevel=2,
            )
