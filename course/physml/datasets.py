"""Data sets of simulated halo catalogs: the bundled sets, ``make-dataset``, fast mode.

The bundled sets were made by :func:`make_dataset` with the lecture settings
(:class:`physml.simulation.SimulationConfig` defaults) and ship as package data:

- ``lh``: a Latin hypercube over Omega_m in [0.1, 0.5], sigma_8 in [0.6, 1.0] (the CAMELS
  LH priors), one seed per catalog;
- ``cv``: 27 catalogs at (0.3, 0.8) with different seeds (cosmic variance);
- ``1p``: sigma_8 stepped over [0.6, 1.0] at Omega_m = 0.3 and one fixed seed, so the same
  volume is seen at each sigma_8.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from importlib import resources
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from scipy.stats import qmc
from torch_geometric.data import Data
from torch_geometric.data import Dataset as PygDataset
from torch_geometric.transforms import BaseTransform
from tqdm import tqdm

from . import __version__, fast_mode  # fast_mode: re-exported, its home is physml
from .catalogs import Catalog, CatalogSet, checksum_file, load_catalogs, save_catalogs
from .cosmology import PRIOR_RANGES, Cosmology
from .graphs import radius_graph
from .simulation import SimulationConfig, linear_field, simulate

SET_NAMES = ("lh", "cv", "1p")
OMEGA_M_RANGE = PRIOR_RANGES["Omega_m"]
SIGMA_8_RANGE = PRIOR_RANGES["sigma_8"]
FIDUCIAL = (0.3, 0.8)
#: seed offsets per set, so that no two catalogs of different sets share a seed
SEED_OFFSETS = {"lh": 0, "cv": 100_000, "1p": 200_000}
CHECKSUMS_FILE = "checksums.json"


def set_filename(name: str) -> str:
    """File name of a set, e.g. ``halos_lh.npz``."""
    if name not in SET_NAMES:
        raise ValueError(f"unknown set {name!r}; accepted: {', '.join(SET_NAMES)}")
    return f"halos_{name}.npz"


# --------------------------------------------------------------------------- bundled data
def data_dir() -> Path:
    """The package data directory holding the bundled sets."""
    return Path(str(resources.files("physml") / "data"))


def load_bundled(name: str = "lh", verify: bool = True) -> CatalogSet:
    """Load a bundled set (``"lh"``, ``"cv"`` or ``"1p"``), checking its sha256 first.

    Raises ValueError when the file's checksum does not match ``data/checksums.json``.
    """
    path = data_dir() / set_filename(name)
    if verify:
        sums_path = data_dir() / CHECKSUMS_FILE
        try:
            expected = json.loads(sums_path.read_text())[path.name]
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f"{sums_path}: missing; the bundled data is incomplete"
            ) from err
        except (KeyError, json.JSONDecodeError) as err:
            raise ValueError(f"{sums_path}: no valid entry for key {path.name!r}") from err
        actual = checksum_file(path)
        if actual != expected:
            raise ValueError(
                f"{path}: sha256 {actual} does not match {expected} recorded in {sums_path}; "
                "the file is corrupt or was changed (regenerate it with physml make-dataset)"
            )
    return load_catalogs(path)


def write_checksums(directory) -> dict:
    """Write ``checksums.json`` with the sha256 of every set file in ``directory``."""
    directory = Path(directory)
    sums = {
        set_filename(n): checksum_file(directory / set_filename(n))
        for n in SET_NAMES
        if (directory / set_filename(n)).exists()
    }
    _atomic_write_text(directory / CHECKSUMS_FILE, json.dumps(sums, indent=1, sort_keys=True))
    return sums


# --------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Job:
    """One catalog to simulate: set name, index within the set, parameters, seed."""

    set_name: str
    index: int
    omega_m: float
    sigma_8: float
    seed: int

    @property
    def part_name(self) -> str:
        return f"{self.set_name}_{self.index:05d}.npz"


def latin_hypercube(n: int, seed: int = 0) -> np.ndarray:
    """n points of a Latin hypercube over the LH priors, ``[n, 2]`` = (Omega_m, sigma_8)."""
    if n == 0:
        return np.zeros((0, 2))
    unit = qmc.LatinHypercube(d=2, seed=seed).random(n)
    lo = np.array([OMEGA_M_RANGE[0], SIGMA_8_RANGE[0]])
    hi = np.array([OMEGA_M_RANGE[1], SIGMA_8_RANGE[1]])
    return qmc.scale(unit, lo, hi)


def plan_jobs(n_lh: int = 1000, n_cv: int = 27, n_1p: int = 11, design_seed: int = 0) -> list[Job]:
    """The catalogs of a data set, in a fixed order (lh, cv, 1p)."""
    for name, v in (("n_lh", n_lh), ("n_cv", n_cv), ("n_1p", n_1p)):
        if v < 0:
            raise ValueError(f"{name} must be >= 0, got {v}")
    jobs = [
        Job("lh", i, float(om), float(s8), SEED_OFFSETS["lh"] + i)
        for i, (om, s8) in enumerate(latin_hypercube(n_lh, design_seed))
    ]
    jobs += [Job("cv", i, *FIDUCIAL, SEED_OFFSETS["cv"] + i) for i in range(n_cv)]
    s8_steps = np.linspace(*SIGMA_8_RANGE, n_1p) if n_1p > 1 else np.array([FIDUCIAL[1]] * n_1p)
    jobs += [
        Job("1p", i, FIDUCIAL[0], float(s8), SEED_OFFSETS["1p"]) for i, s8 in enumerate(s8_steps)
    ]
    return jobs


# --------------------------------------------------------------------------- make-dataset
def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _init_worker() -> None:
    torch.set_num_threads(1)


def _run_job(job: Job, config_dict: dict, parts_dir: str) -> tuple[str, dict]:
    """Simulate one catalog and write it atomically as a one-catalog .npz part."""
    result = simulate(job.omega_m, job.sigma_8, job.seed, SimulationConfig(**config_dict))
    meta = {"job": job.__dict__, "timings": result.timings, "particle_mass": result.particle_mass}
    cset = CatalogSet(
        [result.catalog],
        np.array([[job.omega_m, job.sigma_8]]),
        box_size=config_dict["box_size"],
        meta=meta,
    )
    save_catalogs(Path(parts_dir) / job.part_name, cset)
    return job.part_name, result.timings


def _part_ok(path: Path, job: Job) -> bool:
    """A finished part loads cleanly and holds the job's parameters and seed."""
    try:
        part = load_catalogs(path)
    except (ValueError, OSError):
        return False
    return part.meta.get("job", {}).get("seed") == job.seed and np.allclose(
        part.params[0], [job.omega_m, job.sigma_8]
    )


def make_dataset(
    out,
    n_lh: int = 1000,
    n_cv: int = 27,
    n_1p: int = 11,
    workers: int = 1,
    config=None,
    design_seed: int = 0,
    progress: bool = True,
) -> dict[str, Path]:
    """Simulate the LH, CV and 1P sets into ``out`` (one ``halos_<set>.npz`` each).

    Each catalog is first written atomically as its own part under ``out/parts``; a killed
    run, started again with the same arguments, skips the finished parts, so nothing done
    is lost or half-written. ``out/plan.json`` records the settings; a rerun with other
    settings is refused. Each set file's ``meta`` records the generator settings, the
    package version and every seed. Returns the paths of the set files written.
    """
    config = config or SimulationConfig()
    out = Path(out)
    parts_dir = out / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    jobs = plan_jobs(n_lh, n_cv, n_1p, design_seed)
    plan = {
        "generator": "physml.simulation.simulate",
        "config": config.to_dict(),
        "design_seed": design_seed,
        "counts": {"lh": n_lh, "cv": n_cv, "1p": n_1p},
    }
    plan_path = out / "plan.json"
    if plan_path.exists():
        old = json.loads(plan_path.read_text())
        if old != plan:
            raise ValueError(
                f"{plan_path}: this directory holds a data set made with other settings "
                f"({old}); use another --out or delete it"
            )
    else:
        _atomic_write_text(plan_path, json.dumps(plan, indent=1))

    todo = [j for j in jobs if not _part_ok(parts_dir / j.part_name, j)]
    t0 = time.perf_counter()
    if todo:
        bar = tqdm(
            total=len(jobs), initial=len(jobs) - len(todo), desc="catalogs", disable=not progress
        )
        cfg = config.to_dict()
        if workers <= 1:
            _init_worker()
            for job in todo:
                _run_job(job, cfg, str(parts_dir))
                bar.update()
        else:
            ctx = get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker) as pool:
                futures = [pool.submit(_run_job, j, cfg, str(parts_dir)) for j in todo]
                for fut in futures:
                    fut.result()
                    bar.update()
        bar.close()
    elapsed = time.perf_counter() - t0

    written = {}
    for name in SET_NAMES:
        set_jobs = [j for j in jobs if j.set_name == name]
        if not set_jobs:
            continue
        catalogs, timings = [], []
        for j in set_jobs:
            part = load_catalogs(parts_dir / j.part_name)
            catalogs.append(part[0])
            timings.append(part.meta["timings"])
        meta = {
            **plan,
            "set": name,
            "physml_version": __version__,
            "seeds": [j.seed for j in set_jobs],
            "mean_seconds": {k: float(np.mean([t[k] for t in timings])) for k in timings[0]},
        }
        params = np.array([[j.omega_m, j.sigma_8] for j in set_jobs])
        path = out / set_filename(name)
        save_catalogs(path, CatalogSet(catalogs, params, config.box_size, meta))
        written[name] = path
    if progress:
        print(f"wrote {', '.join(str(p) for p in written.values())} ({elapsed:.0f} s simulating)")
    return written


def regenerate(cset: CatalogSet, index: int) -> Catalog:
    """Re-simulate catalog ``index`` of a set made by :func:`make_dataset`, from its recorded
    seed, parameters and generator settings.

    On the platform that made the set the result is the same catalog. On another CPU or
    torch build, float32 rounding in the N-body run can move a particle or two between
    neighbouring FoF groups, so a few halos may differ by a particle or so (2 of 348 on an
    x86 GPU machine, run on its CPU); the rest match to float32 precision."""
    try:
        seed = cset.meta["seeds"][index]
        config = SimulationConfig(**cset.meta["config"])
    except (KeyError, IndexError, TypeError) as err:
        raise ValueError(f"{cset.source}: meta lacks the seeds or config to regenerate") from err
    om, s8 = cset.params[index]
    return simulate(float(om), float(s8), int(seed), config).catalog


def linear_field_of(cset: CatalogSet, index: int, n: int | None = None):
    """The z = 0 linear density contrast of catalog ``index``'s initial conditions,
    ``[n, n, n]`` float32 on the particle grid (n defaults to the run's particle count)."""
    config = cset.meta.get("config")
    if config is None or "seeds" not in cset.meta:
        raise ValueError(f"{cset.source}: meta lacks the seeds or config of a simulated set")
    om, s8 = cset.params[index]
    n = n or config["n_particles"]
    return linear_field(Cosmology(om, s8), cset.meta["seeds"][index], n, config["box_size"])


# --------------------------------------------------------------------------- graphs for GNNs
TARGET_NAMES = ("sigma_8", "Omega_m")  # the column order of Data.y
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "physml"
GRAPH_FORMAT_VERSION = 1  # bump when the cached graph layout changes


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


def catalog_digest(cset: CatalogSet) -> str:
    """sha256 of a set's arrays (positions, masses, labels, box size): the cache key's data part."""
    h = hashlib.sha256()
    h.update(np.float64(cset.box_size).tobytes())
    h.update(np.ascontiguousarray(cset.params, dtype=np.float64).tobytes())
    for c in cset:
        h.update(np.int64(len(c)).tobytes())
        h.update(np.ascontiguousarray(c.as_array()).tobytes())
    return h.hexdigest()


def _build_edges(cset: CatalogSet, r_link: float) -> tuple[np.ndarray, np.ndarray]:
    """Periodic radius graphs of every catalog: concatenated edge_index [2, E] int64 and
    offsets [n + 1] into it."""
    edges, offsets = [], [0]
    for c in cset:
        ei = radius_graph(torch.from_numpy(c.pos), r_link, box_size=1.0).numpy()
        edges.append(ei)
        offsets.append(offsets[-1] + ei.shape[1])
    return np.concatenate(edges, 1) if edges else np.zeros((2, 0), np.int64), np.array(offsets)


def cached_edges(cset: CatalogSet, r_link: float, cache_dir=None) -> list[np.ndarray]:
    """Edge indices ``[2, E_i]`` of every catalog's periodic radius graph (r_link in box
    units), built once and cached in ``cache_dir`` (default ``~/.cache/physml``) under a
    key of (r_link, box size, data digest, format version). ``cache_dir=False`` disables
    the cache. The cache is an ``.npz`` of integer arrays, loaded without pickle."""
    key = hashlib.sha256(
        json.dumps(
            [GRAPH_FORMAT_VERSION, float(r_link), float(cset.box_size), catalog_digest(cset)]
        ).encode()
    ).hexdigest()[:20]
    path = None if cache_dir is False else Path(cache_dir or DEFAULT_CACHE) / f"graphs_{key}.npz"
    edges = offsets = None
    if path is not None and path.exists():
        try:
            with np.load(path, allow_pickle=False) as f:
                edges, offsets = f["edge_index"], f["offsets"]
            if offsets.shape != (len(cset) + 1,) or edges.shape != (2, offsets[-1]):
                edges = None
        except (OSError, ValueError, KeyError):
            edges = None  # a damaged cache file is rebuilt
    if edges is None:
        edges, offsets = _build_edges(cset, r_link)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
            np.savez(tmp, edge_index=edges, offsets=offsets)
            os.replace(tmp, path)
    return [edges[:, a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]


class HaloDataset(PygDataset):
    """Halo catalogs as PyG graphs with precomputed periodic radius graphs.

    Each item is a ``Data`` with ``pos`` ``[N, 3]`` (box units), ``x`` ``[N, 1]``
    (standardised log10 mass), ``edge_index`` ``[2, E]`` (all pairs closer than
    ``r_link`` box units, minimum image, both directions), ``u`` ``[1, 1]`` (standardised
    log10 N_halo), ``y`` ``[1, 2]`` = (sigma_8, Omega_m), ``vel`` ``[N, 3]`` km/s when
    the catalog has velocities, and ``idx`` (the catalog's index in the set).

    Args:
        cset: catalogs from :func:`physml.catalogs.load_catalogs` or
            :func:`load_bundled`.
        r_link: linking radius in box units (0.2 = 5 Mpc/h for a 25 Mpc/h box).
        norm: feature standardisation from :func:`feature_norm`; compute it on the
            training catalogs and pass the same dict for every split. Default: from cset.
        mass_cut: halos lighter than this (Msun/h) are dropped first, as in training.
        cache_dir: where graphs are cached (see :func:`cached_edges`).
        transform: a PyG transform applied on access (e.g. :class:`RandomCubeSymmetry`).
    """

    def __init__(
        self,
        cset: CatalogSet,
        r_link: float = 0.2,
        norm: dict | None = None,
        mass_cut: float | None = 2e11,
        cache_dir=None,
        transform=None,
    ):
        super().__init__(None, transform)
        if not 0 < r_link < 0.5:
            raise ValueError(f"r_link must be in (0, 0.5) box units, got {r_link}")
        if mass_cut:
            cset = cset.with_mass_cut(mass_cut)
        self.cset, self.r_link, self.mass_cut = cset, float(r_link), mass_cut
        self.norm = norm or feature_norm(cset)
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
        data = data.clone()
        perm = torch.randperm(3, generator=self.gen)
        sign = torch.randint(0, 2, (3,), generator=self.gen) * 2 - 1
        pos = data.pos[:, perm] * sign
        if self.translate:
            pos = pos + torch.rand(3, generator=self.gen)
        data.pos = torch.remainder(pos, 1.0)
        data.pos[data.pos >= 1.0] = 0.0
        if getattr(data, "vel", None) is not None:
            data.vel = data.vel[:, perm] * sign
        return data
