"""Derivatives of a simulated statistic with respect to cosmology, and Fisher forecasts.

The statistic is the matter power spectrum P(k) of one particle-mesh run
(:mod:`physml.simulation`: 2LPT initial conditions, KDK leapfrog, CIC paint), binned
linearly in k from k_f / 2 to the particle Nyquist wavenumber k_Ny = pi n_p / L with bins
one fundamental k_f = 2 pi / L wide. The parameters are theta = (Omega_m, sigma_8).

Derivatives d P / d theta come three ways, all *seed-matched* (the same white noise):

- forward-mode autodiff (:func:`power_derivatives`, ``method="forward"``): one
  Jacobian-vector product per parameter, so its cost does not grow with the number of
  k bins;
- reverse-mode autodiff (``method="reverse"``): one backward pass per k bin;
- central finite differences (:func:`finite_difference`) with an absolute step h.

The Fisher matrix of a Gaussian likelihood with a parameter-independent covariance is
F_ab = dmu_a^T C^-1 dmu_b (:func:`fisher_matrix`), with C^-1 debiased by the Hartlap
factor (N - B - 2) / (N - 1) when C is estimated from N simulations of B bins.

Units: k in h/Mpc, P in (Mpc/h)^3; theta dimensionless.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD

from ._checks import _check_count, _check_finite_values, _check_real, _check_shape
from .cosmology import Cosmology
from .settings import cache_root
from .simulation import SimulationConfig, initial_conditions, nbody, overdensity, power_spectrum

#: parameter names, in the order of every theta and every derivative axis
PARAMS = ("Omega_m", "sigma_8")
#: the fiducial cosmology of the forecasts
FIDUCIAL = (0.3, 0.8)
#: a covariance whose correlation matrix has a larger condition number draws a warning
#: (its inverse has lost more than half of the 16 digits of float64)
ILL_CONDITIONED = 1e8


def _check_config(config, where: str) -> None:
    if not isinstance(config, SimulationConfig):
        raise ValueError(f"{where}: config must be a SimulationConfig, got {config!r}")


def _check_theta(theta, where: str) -> None:
    """theta = (Omega_m, sigma_8): two finite numbers (floats, 0-d tensors, dual tensors)."""
    if not hasattr(theta, "__len__") or len(theta) != 2:
        raise ValueError(f"{where}: theta must be (Omega_m, sigma_8), got {theta!r}")
    for name, t in zip(PARAMS, theta, strict=True):
        _check_real(t, f"theta ({name})", where, low=0)


def nyquist(config: SimulationConfig) -> float:
    """Particle Nyquist wavenumber pi n_p / L, h/Mpc."""
    _check_config(config, "nyquist")
    return math.pi * config.n_particles / config.box_size


def simulated_power(
    theta,
    seed: int,
    config: SimulationConfig,
    a_end: float = 1.0,
    dtype=torch.float32,
    checkpoint: bool = False,
    device=None,
    fixed_amplitude: bool = False,
    paired: bool = False,
):
    """P(k) of one PM run at scale factor ``a_end``, differentiable in theta.

    theta: (Omega_m, sigma_8), floats or 0-d tensors (dual tensors under forward-mode AD).
    The run integrates ``config.n_steps`` steps linear in a from ``config.a_start`` to
    ``a_end`` on a ``config.n_mesh``^3 mesh; the density is painted on that mesh.
    dtype: float32 (the lecture's) or float64 (for finite differences at small steps).
    fixed_amplitude, paired: fixed-amplitude (and phase-flipped) initial conditions, see
    :func:`physml.simulation.white_noise`; for low-noise derivatives, not for covariances.
    Returns (k ``[B]`` h/Mpc, P ``[B]`` (Mpc/h)^3 float64), B = n_particles / 2.
    """
    _check_theta(theta, "simulated_power")
    _check_count(seed, "seed", "simulated_power", minimum=0)
    _check_config(config, "simulated_power")
    if not config.a_start < a_end <= 1.0:
        raise ValueError(f"a_end must be in (a_start={config.a_start}, 1], got {a_end}")
    cosmo = Cosmology(*theta)
    x, p = initial_conditions(cosmo, seed, config, device, dtype, fixed_amplitude, paired)
    steps = np.linspace(config.a_start, a_end, config.n_steps + 1)
    x, _ = nbody(x, p, cosmo, steps, config.n_mesh, config.box_size, checkpoint=checkpoint)
    delta = overdensity(x, config.n_mesh, config.box_size)
    n_bins = config.n_particles // 2
    k, pk, _ = power_spectrum(delta, config.box_size, n_bins=n_bins, k_max=nyquist(config))
    return k, pk


def power_derivatives(
    theta,
    seed: int,
    config: SimulationConfig,
    method: str = "forward",
    params=(0, 1),
    **kwargs,
):
    """P(k) and its autodiff derivatives d P / d theta for one seed.

    method: "forward" (one Jacobian-vector product per parameter) or "reverse" (one
    backward pass per k bin). params: indices of the parameters to differentiate by
    (forward mode only; 0 = Omega_m, 1 = sigma_8). kwargs go to :func:`simulated_power`.
    Returns (k ``[B]``, P ``[B]``, dP ``[len(params), B]``), float64 tensors without
    autograd history.
    """
    _check_theta(theta, "power_derivatives")
    params = tuple(params)
    if not params or len(set(params)) != len(params) or not set(params) <= {0, 1}:
        raise ValueError(
            f"power_derivatives: params must be distinct indices among 0 (Omega_m) and 1 "
            f"(sigma_8), got {params}"
        )
    theta0 = [torch.as_tensor(float(t), dtype=torch.float64) for t in theta]
    if method == "forward":
        rows = []
        for i in params:
            with fwAD.dual_level():
                th = [
                    fwAD.make_dual(t, torch.ones_like(t)) if j == i else t
                    for j, t in enumerate(theta0)
                ]
                k, pk = simulated_power(th, seed, config, **kwargs)
                primal, tangent = fwAD.unpack_dual(pk)
                rows.append(tangent)
        return k, primal.detach(), torch.stack(rows).detach()
    if method == "reverse":
        if tuple(params) != (0, 1):
            raise ValueError("method='reverse' differentiates by both parameters")
        th = [t.clone().requires_grad_(True) for t in theta0]
        k, pk = simulated_power(th, seed, config, **kwargs)
        cols = [
            torch.stack(torch.autograd.grad(pk[b], th, retain_graph=b < len(pk) - 1))
            for b in range(len(pk))
        ]
        return k, pk.detach(), torch.stack(cols, 1)
    raise ValueError(f"method must be 'forward' or 'reverse', got {method!r}")


def finite_difference(theta, seed: int, config: SimulationConfig, step: float, **kwargs):
    """Central finite differences (P(theta + h e_i) - P(theta - h e_i)) / 2h, seed-matched.

    step: absolute step h in each parameter. kwargs go to :func:`simulated_power`.
    Returns dP ``[2, B]`` float64 (4 runs).
    """
    _check_theta(theta, "finite_difference")
    _check_real(step, "step", "finite_difference", low=0)
    rows = []
    with torch.no_grad():
        for i in range(len(theta)):
            up = [float(t) + (step if j == i else 0.0) for j, t in enumerate(theta)]
            dn = [float(t) - (step if j == i else 0.0) for j, t in enumerate(theta)]
            rows.append(
                (
                    simulated_power(up, seed, config, **kwargs)[1]
                    - simulated_power(dn, seed, config, **kwargs)[1]
                )
                / (2.0 * step)
            )
    return torch.stack(rows)


# --------------------------------------------------------------------------- Fisher


def hartlap_factor(n_sims: int, n_bins: int) -> float:
    """(N - B - 2) / (N - 1): debiases the inverse of a covariance estimated from N sims."""
    return _hartlap(n_sims, n_bins, "hartlap_factor")


def _hartlap(n_sims, n_bins, where: str) -> float:
    n_sims = _check_count(n_sims, "n_sims", where)
    n_bins = _check_count(n_bins, "n_bins", where)
    if n_sims <= n_bins + 2:
        raise ValueError(
            f"{where}: n_sims = {n_sims} simulations are too few for a covariance of "
            f"{n_bins} bins: need more simulations than bins + 2 (n_sims > {n_bins + 2}); "
            f"with fewer the sample covariance is singular or its inverse cannot be debiased"
        )
    return (n_sims - n_bins - 2) / (n_sims - 1)


def _float_array(x, name: str, shape: tuple, text: str, where: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{where}: {name} must be a float array of shape {text}, got {arr.dtype}")
    _check_shape(arr, name, where, shape, text)
    _check_finite_values(arr, name, where)
    return arr.astype(np.float64)


def _check_covariance(cov: np.ndarray, name: str, where: str, hint: str = "") -> float:
    """Refuse a covariance ``[B, B]`` that is not symmetric, has a variance <= 0 or is
    singular (not positive definite to float64 precision: the smallest eigenvalue of its
    correlation matrix is below B eps times the largest, the rank test of
    ``numpy.linalg.matrix_rank``); warn when the condition number of its correlation matrix
    exceeds :data:`ILL_CONDITIONED`. The correlation matrix makes the test independent of
    the units of the bins. Returns that condition number."""
    scale = np.abs(cov).max()
    if np.abs(cov - cov.T).max() > 1e-10 * scale:
        raise ValueError(f"{where}: {name} must be symmetric")
    var = np.diag(cov)
    if not (var > 0).all():
        i = int(np.argmin(var > 0))
        raise ValueError(
            f"{where}: {name} must have variances > 0 on its diagonal; bin {i} has {var[i]}"
        )
    sd = np.sqrt(var)
    evals = np.linalg.eigvalsh(cov / np.outer(sd, sd))
    n = len(var)
    cond = evals[-1] / evals[0] if evals[0] > 0 else math.inf
    if evals[0] <= n * np.finfo(np.float64).eps * evals[-1]:
        raise ValueError(
            f"{where}: {name} is singular or not positive definite (smallest eigenvalue of "
            f"its correlation matrix {evals[0]:.3g}, condition number {cond:.3g}){hint}"
        )
    if cond > ILL_CONDITIONED:
        warnings.warn(
            f"{where}: {name} is ill-conditioned (condition number {cond:.3g} of its "
            f"correlation matrix): its inverse keeps about {max(0.0, 16 - math.log10(cond)):.0f} "
            f"of 16 significant digits; bins that are (nearly) linear combinations of others "
            f"make it so",
            RuntimeWarning,
            stacklevel=3,
        )
    return cond


def fisher_matrix(dmu, cov, n_sims: int | None = None) -> np.ndarray:
    """Fisher matrix F_ab = dmu_a^T C^-1 dmu_b.

    dmu: ``[P, B]`` derivatives of the mean statistic; cov: ``[B, B]`` its covariance.
    n_sims: when C is estimated from n_sims simulations, C^-1 is multiplied by the
    Hartlap factor (n_sims > B + 2 needed). Returns ``[P, P]`` float64.

    A singular covariance (e.g. a sample covariance of fewer simulations than bins) is
    refused and an ill-conditioned one warned about, with the condition number of its
    correlation matrix (see :data:`ILL_CONDITIONED`).
    """
    where = "fisher_matrix"
    dmu = _float_array(dmu, "dmu", (None, None), "[P, B]", where)
    b = dmu.shape[1]
    cov = _float_array(cov, "cov", (b, b), f"[{b}, {b}] (B = dmu.shape[1])", where)
    factor = None if n_sims is None else _hartlap(n_sims, b, where)
    hint = (
        "; a covariance estimated from N simulations has rank at most N - 1, so it needs "
        f"more than {b + 2} simulations for {b} bins (pass n_sims to have this checked)"
        if n_sims is None
        else ""
    )
    _check_covariance(cov, "cov", where, hint)
    prec = np.linalg.inv(cov)
    if factor is not None:
        prec = prec * factor
    return dmu @ prec @ dmu.T


def marginal_errors(fisher) -> np.ndarray:
    """Marginal 1-sigma errors sqrt(diag(F^-1)), ``[P]``. The Fisher matrix ``[P, P]`` must
    be symmetric positive definite (a singular one is refused, an ill-conditioned one warned
    about, as in :func:`fisher_matrix`)."""
    fisher = _float_array(fisher, "fisher", (None, None), "[P, P]", "marginal_errors")
    p = fisher.shape[0]
    _check_shape(fisher, "fisher", "marginal_errors", (p, p), "[P, P]")
    _check_covariance(fisher, "fisher", "marginal_errors")
    return np.sqrt(np.diag(np.linalg.inv(fisher)))


def prior_fisher(ranges=None) -> np.ndarray:
    """The Fisher matrix ``[P, P]`` of a Gaussian prior with the variance of a uniform prior
    on each parameter's range, diag(12 / width^2) (a uniform on [lo, hi] has variance
    width^2 / 12). ranges: ``{name: (lo, hi)}`` for the names of :data:`PARAMS`; default
    the CAMELS box, :data:`physml.cosmology.PRIOR_RANGES`. Add it to a data Fisher matrix
    to forecast the posterior rather than the likelihood alone."""
    from .cosmology import PRIOR_RANGES

    ranges = PRIOR_RANGES if ranges is None else ranges
    widths = []
    for name in PARAMS:
        if name not in ranges:
            raise ValueError(f"prior_fisher: ranges needs an entry for {name!r}")
        lo, hi = (float(v) for v in ranges[name])
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
            raise ValueError(
                f"prior_fisher: ranges[{name!r}] must be finite (lo, hi) with hi > lo, "
                f"got ({lo}, {hi})"
            )
        widths.append(hi - lo)
    return np.diag(12.0 / np.square(widths))


def forecast(pk, dpk, n_sims_list=None):
    """Fisher forecasts from per-seed spectra and derivatives, for growing seed counts.

    pk: ``[N, B]`` P(k) of N seeds (for the covariance); dpk: ``[M, P, B]`` derivatives
    (averaged for dmu), from the same seeds (M = N) or from other runs, e.g. M fixed-and-
    paired pairs. n_sims_list: the seed counts n to use (the first n seeds for the
    covariance, with the first round(n M / N) derivatives, at least one); default all N.
    Returns a list of (n, F ``[P, P]``, marginal errors ``[P]``).
    """
    where = "forecast"
    pk = _float_array(pk, "pk", (None, None), "[N, B]", where)
    n_all, b = pk.shape
    dpk = _float_array(dpk, "dpk", (None, None, b), f"[M, P, {b}] (B = pk.shape[1])", where)
    ns = [_check_count(n, "n_sims_list entry", where) for n in n_sims_list or [n_all]]
    for n in ns:
        if not b + 2 < n <= n_all:
            raise ValueError(
                f"{where}: n_sims_list entry {n} must lie between n_bins + 3 = {b + 3} and "
                f"the number of simulations in pk, {n_all} (more simulations than bins + 2)"
            )
    out = []
    for n in ns:
        m = max(1, round(n * len(dpk) / len(pk)))
        f = fisher_matrix(dpk[:m].mean(0), np.cov(pk[:n], rowvar=False), n_sims=n)
        out.append((n, f, marginal_errors(f)))
    return out


def confidence_ellipse(center, cov, n_sigma: float = 1.0, n_points: int = 200) -> np.ndarray:
    """Boundary of the 2-parameter Gaussian region holding the probability of +-n_sigma.

    center: ``[2]``; cov: ``[2, 2]`` parameter covariance (F^-1). The level is
    Delta chi^2 = -2 ln(1 - erf(n_sigma / sqrt 2)), 2.30 for 1 sigma and 6.18 for 2.
    Returns ``[n_points, 2]``.
    """
    where = "confidence_ellipse"
    center = _float_array(center, "center", (2,), "[2]", where)
    cov = _float_array(cov, "cov", (2, 2), "[2, 2]", where)
    _check_real(n_sigma, "n_sigma", where, low=0)
    _check_count(n_points, "n_points", where, minimum=2)
    _check_covariance(cov, "cov", where)
    p = math.erf(n_sigma / math.sqrt(2.0))
    radius = math.sqrt(-2.0 * math.log(1.0 - p))
    vals, vecs = np.linalg.eigh(np.asarray(cov, dtype=np.float64))
    t = np.linspace(0.0, 2.0 * math.pi, n_points)
    circle = np.stack([np.cos(t), np.sin(t)])
    return np.asarray(center) + (vecs @ (np.sqrt(vals)[:, None] * circle)).T * radius


# --------------------------------------------------------------------------- cache


def cache_dir() -> Path:
    """``cache_root()/fisher``, i.e. ``~/.cache/physml/fisher`` by default (created on
    demand)."""
    return cache_root() / "fisher"


def seed_responses(
    seeds,
    config: SimulationConfig,
    theta=FIDUCIAL,
    progress=None,
    derivatives: bool = True,
    **kwargs,
):
    """P(k) and forward-mode d P / d theta for many seeds, cached on disk per seed.

    Each seed's result is stored in :func:`cache_dir` under a key of (config, theta,
    kwargs, seed), so a second call, or a larger seed list, only runs what is new.
    progress: optional wrapper of the seed iterable (e.g. tqdm). derivatives: False runs
    P(k) alone (no autodiff; about 4 times cheaper), e.g. for a covariance. kwargs go to
    :func:`simulated_power` (e.g. ``fixed_amplitude=True`` for low-noise derivatives).
    Returns (k ``[B]``, P ``[N, B]``, dP ``[N, 2, B]`` or None) numpy.
    """
    _check_theta(theta, "seed_responses")
    _check_config(config, "seed_responses")
    seeds = [_check_count(s, "seeds entry", "seed_responses", minimum=0) for s in seeds]
    if not seeds:
        raise ValueError("seed_responses: seeds must hold at least one seed")
    settings = {"config": asdict(config), "theta": [float(t) for t in theta]}
    if not derivatives:
        settings["derivatives"] = False
    settings.update({k: str(v) for k, v in sorted(kwargs.items())})
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    folder = cache_dir() / key
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(json.dumps(settings, indent=1))
    pks, dpks, k = [], [], None
    for seed in progress(seeds) if progress else seeds:
        path = folder / f"seed{int(seed)}.npz"
        if path.exists():
            with np.load(path, allow_pickle=False) as z:
                k, pk, dpk = z["k"], z["pk"], z["dpk"] if derivatives else None
        elif derivatives:
            k, pk, dpk = (v.cpu().numpy() for v in power_derivatives(theta, seed, config, **kwargs))
            np.savez(path, k=k, pk=pk, dpk=dpk)
        else:
            with torch.no_grad():
                k, pk = (v.cpu().numpy() for v in simulated_power(theta, seed, config, **kwargs))
            dpk = None
            np.savez(path, k=k, pk=pk)
        pks.append(pk)
        dpks.append(dpk)
    return k, np.stack(pks), np.stack(dpks) if derivatives else None
