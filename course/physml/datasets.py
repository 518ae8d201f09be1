"""Data sets of simulated halo catalogs: the bundled sets, ``make-dataset``, regeneration,
checksums. (The graph data for the GNN built from them is :mod:`physml.graphdata`.)

Nothing of :mod:`physml.graphdata` is re-exported here: physml never pickles its objects
(checkpoints load with ``weights_only=True``, graph caches are ``.npz``), so no stored file
refers to ``physml.datasets.HaloDataset`` and the like. Only :func:`fast_mode` (defined in
:mod:`physml.settings`) stays importable from here, for notebooks written before the split.

The bundled sets were made by :func:`make_dataset` with the lecture settings
(:class:`physml.simulation.SimulationConfig` defaults) and ship as package data:

- ``lh``: a Latin hypercube over Omega_m in [0.1, 0.5], sigma_8 in [0.6, 1.0] (the CAMELS
  LH priors), one seed per catalog;
- ``cv``: 27 catalogs at (0.3, 0.8) with different seeds (cosmic variance);
- ``1p``: sigma_8 stepped over [0.6, 1.0] at Omega_m = 0.3 and one fixed seed, so the same
  volume is seen at each sigma_8.
"""

from __future__ import annotations

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
from tqdm import tqdm

from . import __version__
from .catalogs import Catalog, CatalogSet, checksum_file, load_catalogs, save_catalogs
from .cosmology import PRIOR_RANGES, Cosmology
from .settings import fast_mode  # noqa: F401  (kept importable here, see the docstring)
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


def verify_bundled(name: str = "lh") -> tuple[Path, str, Path]:
    """Check the sha256 of a bundled set's file against ``data/checksums.json``; returns
    (the set's file, its sha256 in hex, the checksums file).

    Raises ValueError when the file's checksum does not match."""
    path = data_dir() / set_filename(name)
    sums_path = data_dir() / CHECKSUMS_FILE
    try:
        expected = json.loads(sums_path.read_text())[path.name]
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{sums_path}: missing; the bundled data is incomplete") from err
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"{sums_path}: no valid entry for key {path.name!r}") from err
    actual = checksum_file(path)
    if actual != expected:
        raise ValueError(
            f"{path}: sha256 {actual} does not match {expected} recorded in {sums_path}; "
            "the file is corrupt or was changed (regenerate it with physml make-dataset)"
        )
    return path, actual, sums_path


def load_bundled(name: str = "lh", verify: bool = True) -> CatalogSet:
    """Load a bundled set (``"lh"``, ``"cv"`` or ``"1p"``), checking its sha256 first
    (:func:`verify_bundled`; ``verify=False`` skips it)."""
    if verify:
        path = verify_bundled(name)[0]
    else:
        path = data_dir() / set_filename(name)
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


GENERATOR = "physml.simulation.simulate"


def _part_settings(config_dict: dict) -> dict:
    """What a part records of the run that made it, beside its job: compared on resume."""
    return {"generator": GENERATOR, "config": config_dict}


def _run_job(job: Job, config_dict: dict, parts_dir: str) -> tuple[str, dict]:
    """Simulate one catalog and write it atomically as a one-catalog .npz part that records
    its job, its full generator settings and its timings."""
    result = simulate(job.omega_m, job.sigma_8, job.seed, SimulationConfig(**config_dict))
    meta = {
        "job": job.__dict__,
        "settings": _part_settings(config_dict),
        "timings": result.timings,
        "particle_mass": result.particle_mass,
    }
    cset = CatalogSet(
        [result.catalog],
        np.array([[job.omega_m, job.sigma_8]]),
        box_size=config_dict["box_size"],
        meta=meta,
    )
    save_catalogs(Path(parts_dir) / job.part_name, cset)
    return job.part_name, result.timings


def _part_ok(path: Path, job: Job, config_dict: dict) -> bool:
    """True when ``path`` is a finished part of ``job`` made with ``config_dict``; False when
    it is missing or damaged (unreadable, truncated, a stream that does not inflate): it is
    then simulated again. A readable part made for another job or with other settings is
    refused (ValueError): it belongs to another run, whose catalogs must not be mixed in."""
    if not path.exists():
        return False
    try:
        part = load_catalogs(path)
    except (ValueError, OSError):
        return False
    where = f"{path}: this part"
    recorded = part.meta.get("settings")
    if recorded != _part_settings(config_dict):
        what = (
            "records no generator settings"
            if recorded is None
            else (f"was simulated with other settings ({recorded.get('config')})")
        )
        raise ValueError(
            f"{where} {what}, not this run's ({config_dict}); use another --out, or delete "
            f"{path.parent} to simulate every catalog again"
        )
    job_meta = part.meta.get("job", {})
    if job_meta.get("seed") != job.seed or not np.allclose(
        part.params[0], [job.omega_m, job.sigma_8]
    ):
        raise ValueError(
            f"{where} holds another catalog (seed {job_meta.get('seed')}, parameters "
            f"{part.params[0].tolist()}) than this run's job (seed {job.seed}, parameters "
            f"{[job.omega_m, job.sigma_8]}); use another --out, or delete {path.parent}"
        )
    return True


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
    package version and every seed. Each part records its full settings, so a part made
    with other settings is refused even when ``plan.json`` is gone; a damaged part is
    simulated again. The set files hold no timings (the mean time per step of each set goes
    to ``out/timings.json``), so two runs with the same settings write identical files.
    Returns the paths of the set files written.
    """
    config = config or SimulationConfig()
    out = Path(out)
    parts_dir = out / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    jobs = plan_jobs(n_lh, n_cv, n_1p, design_seed)
    plan = {
        "generator": GENERATOR,
        "config": config.to_dict(),
        "design_seed": design_seed,
        "counts": {"lh": n_lh, "cv": n_cv, "1p": n_1p},
    }
    plan_path = out / "plan.json"
    if plan_path.exists():
        try:
            old = json.loads(plan_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(
                f"{plan_path}: not a plan written by physml make-dataset (invalid JSON: {err}); "
                "it records the settings of the data set in this directory: delete it (and "
                "parts/ if its catalogs are not this run's) or use another --out"
            ) from err
        if old != plan:
            raise ValueError(
                f"{plan_path}: this directory holds a data set made with other settings "
                f"({old}); use another --out or delete it"
            )
    else:
        _atomic_write_text(plan_path, json.dumps(plan, indent=1))

    cfg = config.to_dict()
    todo = [j for j in jobs if not _part_ok(parts_dir / j.part_name, j, cfg)]
    t0 = time.perf_counter()
    if todo:
        bar = tqdm(
            total=len(jobs), initial=len(jobs) - len(todo), desc="catalogs", disable=not progress
        )
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

    written, mean_seconds = {}, {}
    for name in SET_NAMES:
        set_jobs = [j for j in jobs if j.set_name == name]
        if not set_jobs:
            continue
        catalogs, timings = [], []
        for j in set_jobs:
            part = load_catalogs(parts_dir / j.part_name)
            catalogs.append(part[0])
            timings.append(part.meta.get("timings") or {})
        meta = {
            **plan,
            "set": name,
            "physml_version": __version__,
            "seeds": [j.seed for j in set_jobs],
        }
        keys = set.intersection(*(set(t) for t in timings))
        mean_seconds[name] = {k: float(np.mean([t[k] for t in timings])) for k in sorted(keys)}
        params = np.array([[j.omega_m, j.sigma_8] for j in set_jobs])
        path = out / set_filename(name)
        save_catalogs(path, CatalogSet(catalogs, params, config.box_size, meta))
        written[name] = path
    _atomic_write_text(out / "timings.json", json.dumps({"mean_seconds": mean_seconds}, indent=1))
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
