"""A hybrid physical-neural particle-mesh solver: a learned isotropic Fourier filter on the
PM potential, after Lanzieri et al. 2022 (arXiv:2207.05509).

The coarse solver's potential phi_k = G(k) delta_k is multiplied by (1 + f_theta(a, |k|)).
f is a natural cubic spline in |k| through ``n_knots`` equally spaced knots from 0 to the
mesh's largest |k| (its corner, sqrt(3) pi n / L); the spline's values at the knots are
the output of a small network of the scale factor a. Only |k| enters, so the correction
is isotropic, and it is exactly the plain PM force when the network outputs zero (it is
initialised so). The corrected solver plugs into :func:`physml.simulation.nbody` as its
``solver`` and reuses the integrator unchanged.

It is trained on ONE box against a reference run of the same initial conditions: the
same particles on a 4x finer PM mesh with 4x more time steps (:class:`HybridConfig`:
32^3 particles in 25 Mpc/h; coarse = 32^3 mesh, 20 steps, P(k) 9-23 % low between a
quarter and a half of the Nyquist wavenumber k_N = 4.0 h/Mpc (mean of four seeds);
reference = 128^3 mesh, 80 steps, within 0.5 % of 160 steps up to k_N). The loss
compares positions (minimum image) and P(k) at every coarse step.
Validation uses the P(k) ratio to the reference and the cross-correlation coefficient
r(k) = P_xr / sqrt(P_xx P_rr) at a = 1 on other seeds and at another Omega_m.

Units: Mpc/h for positions and box, h/Mpc for k, (Mpc/h)^3 for P(k).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from ..cosmology import Cosmology
from ..settings import cache_root
from .mesh import cross_power_spectrum, overdensity, power_spectrum, wavenumbers
from .nbody import ForceSolver, nbody
from .run import SimulationConfig, initial_conditions

#: bump when the reference runs' content changes, so that old cache files are not reused
REFERENCE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class HybridConfig:
    """Settings of the coarse run, the reference run and the comparison.

    box_size: Mpc/h; n_particles: particles per side (both runs); n_mesh, n_steps: coarse
    PM mesh per side and KDK steps (linear in a from a_start to 1); ref_mesh: reference
    mesh per side; ref_substeps: reference steps per coarse step (so the coarse step
    boundaries are reference step boundaries); n_knots, hidden: spline knots and hidden
    width of the network of a; pk_mesh: mesh on which P(k) is measured (CIC, deconvolved);
    n_bins: P(k) bins, linear up to the coarse Nyquist frequency (:attr:`k_nyquist`);
    pk_weight: weight of the P(k) term of the loss against the position term.
    """

    box_size: float = 25.0
    n_particles: int = 32
    n_mesh: int = 32
    n_steps: int = 20
    ref_mesh: int = 128
    ref_substeps: int = 4
    a_start: float = 0.05
    n_knots: int = 16
    hidden: int = 32
    pk_mesh: int = 64
    n_bins: int = 16
    pk_weight: float = 0.2

    def __post_init__(self):
        for name in ("n_particles", "n_mesh", "ref_mesh", "pk_mesh"):
            v = getattr(self, name)
            if v < 4 or v & (v - 1):
                raise ValueError(f"{name} must be a power of two >= 4, got {v}")
        if self.n_steps < 1 or self.ref_substeps < 1:
            raise ValueError("n_steps and ref_substeps must be >= 1")
        if self.n_knots < 3:
            raise ValueError(f"n_knots must be >= 3, got {self.n_knots}")

    @property
    def k_nyquist(self) -> float:
        """The coarse Nyquist wavenumber pi n / L, h/Mpc, of the particle grid or of the
        coarse mesh, whichever is coarser: no run resolves more than that."""
        return math.pi * min(self.n_particles, self.n_mesh) / self.box_size

    def steps(self, substeps: int = 1) -> np.ndarray:
        """Scale factors of the step boundaries, ``[n_steps * substeps + 1]``."""
        return np.linspace(self.a_start, 1.0, self.n_steps * substeps + 1)

    def simulation_config(self) -> SimulationConfig:
        return SimulationConfig(
            box_size=self.box_size,
            n_particles=self.n_particles,
            n_mesh=self.n_mesh,
            n_steps=self.n_steps,
            a_start=self.a_start,
        )


# ----------------------------------------------------------------------------- spline


def spline_basis(x: torch.Tensor, knots: torch.Tensor) -> torch.Tensor:
    """Natural cubic spline through equally spaced knots as a linear map of the knot values.

    x: ``[...]`` points; knots: ``[K]`` increasing, equally spaced. Returns B ``[..., K]``
    with spline(x) = B @ y for knot values y ``[K]`` (second derivative zero at both
    ends). Points outside [knots[0], knots[-1]] are clamped to the end values.
    """
    n_k = knots.shape[0]
    h = knots[1] - knots[0]
    dtype, device = knots.dtype, knots.device
    # second derivatives m = S y from m[i-1] + 4 m[i] + m[i+1] = 6 / h^2 (y[i-1] - 2 y[i] + y[i+1])
    eye = torch.eye(n_k, dtype=dtype, device=device)
    a = 4.0 * torch.eye(n_k - 2, dtype=dtype, device=device)
    a = a + torch.diag(torch.ones(n_k - 3, dtype=dtype, device=device), 1)
    a = a + torch.diag(torch.ones(n_k - 3, dtype=dtype, device=device), -1)
    d = (eye[:-2] - 2.0 * eye[1:-1] + eye[2:]) * (6.0 / h**2)  # [K-2, K]
    s = torch.zeros(n_k, n_k, dtype=dtype, device=device)
    s[1:-1] = torch.linalg.solve(a, d)
    xc = x.to(dtype).clamp(knots[0], knots[-1])
    j = torch.clamp(((xc - knots[0]) / h).floor().long(), 0, n_k - 2)
    u = ((xc - knots[j]) / h)[..., None]
    c3 = h**2 / 6.0
    return (
        (1.0 - u) * eye[j]
        + u * eye[j + 1]
        + c3 * ((1.0 - u) ** 3 - (1.0 - u)) * s[j]
        + c3 * (u**3 - u) * s[j + 1]
    )


class CorrectionNet(nn.Module):
    """f_theta(a, |k|): a network of the scale factor a gives the values of a spline in |k|.

    n_knots knots equally spaced over [0, k_max] (h/Mpc); hidden: width of the two hidden
    layers. The value at k = 0 is held at zero (the PM force is right on the largest
    scales, as in Lanzieri et al.); the last layer starts at zero, so an untrained net is
    no correction at all.
    """

    def __init__(self, k_max: float, n_knots: int = 16, hidden: int = 32):
        super().__init__()
        self.register_buffer("knots", torch.linspace(0.0, float(k_max), n_knots))
        self.mlp = nn.Sequential(
            nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh()
        )
        self.out = nn.Linear(hidden, n_knots - 1)  # the knot at k = 0 is held at f = 0
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @classmethod
    def for_config(cls, config: HybridConfig) -> CorrectionNet:
        """A net whose knots span the coarse mesh's |k| range (to its corner)."""
        k_corner = math.sqrt(3.0) * math.pi * config.n_mesh / config.box_size
        return cls(k_corner, config.n_knots, config.hidden)

    def forward(self, a) -> torch.Tensor:
        """Knot values ``[K]`` of the filter at scale factor a (float or 0-d tensor)."""
        w = self.out.weight
        a = torch.as_tensor(a, dtype=w.dtype, device=w.device).reshape(1, 1)
        return F.pad(self.out(self.mlp(a))[0], (1, 0))

    def filter(self, a, k: torch.Tensor) -> torch.Tensor:
        """f(a, |k|) at wavenumbers k ``[...]`` h/Mpc; returns ``[...]``."""
        return spline_basis(k, self.knots) @ self(a)


class HybridForceSolver(ForceSolver):
    """The PM force with the potential multiplied by (1 + f(a, |k|)) in Fourier space.

    Args: n_mesh, box_size (Mpc/h), omega_m as in :class:`ForceSolver`; net: the
    :class:`CorrectionNet`. Call as ``solver(pos, a)``; pass it to ``nbody(..., solver=)``.
    """

    def __init__(self, n_mesh: int, box_size: float, omega_m, net: CorrectionNet, device=None):
        super().__init__(n_mesh, box_size, omega_m, device)
        self.net = net
        kx, ky, kz = wavenumbers(n_mesh, box_size, device, net.knots.dtype)
        kk = torch.sqrt(kx**2 + ky**2 + kz**2)
        self.basis = spline_basis(kk, net.knots.to(device))  # [n, n, n // 2 + 1, K]

    def kernel_at(self, a) -> torch.Tensor:
        return self.kernel * (1.0 + self.basis @ self.net(a))


# ----------------------------------------------------------------------------- runs


def _cache_path(kind: dict, cache_dir) -> Path | None:
    if cache_dir is False:
        return None
    root = Path(cache_dir or cache_root())
    key = hashlib.sha256(json.dumps(kind, sort_keys=True).encode()).hexdigest()[:16]
    return root / "hybrid" / f"reference_{key}.npz"


def _snapshots(x, p, cosmo, steps, n_mesh, box, every, solver=None):
    """Positions after every ``every``-th step, ``[len(steps) // every, N, 3]``."""
    out, count = [], [0]

    def keep(_a, xs, _p):
        count[0] += 1
        if count[0] % every == 0:
            out.append(xs)

    nbody(x, p, cosmo, steps, n_mesh, box, callback=keep, solver=solver)
    return torch.stack(out)


def reference_run(
    omega_m: float, sigma_8: float, seed: int, config: HybridConfig, cache_dir=None
) -> torch.Tensor:
    """Positions of the reference run (ref_mesh^3 mesh, n_steps * ref_substeps steps) at
    the coarse step boundaries a > a_start: ``[n_steps, n_particles^3, 3]`` float32,
    Mpc/h. Cached under ``~/.cache/physml/hybrid`` (``cache_dir=False``: no cache), keyed
    by the settings that define the run. About 2 s per run for the defaults on 2 idle CPU
    cores."""
    kind = {
        "v": REFERENCE_FORMAT_VERSION,
        "omega_m": float(omega_m),
        "sigma_8": float(sigma_8),
        "seed": int(seed),
        **{
            k: v
            for k, v in asdict(config).items()
            if k in ("box_size", "n_particles", "n_steps", "ref_mesh", "ref_substeps", "a_start")
        },
    }
    path = _cache_path(kind, cache_dir)
    if path is not None and path.exists():
        try:
            with np.load(path, allow_pickle=False) as f:
                return torch.from_numpy(f["snapshots"])
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache file is recomputed
    cosmo = Cosmology(omega_m, sigma_8)
    with torch.no_grad():
        x, p = initial_conditions(cosmo, seed, config.simulation_config())
        snaps = _snapshots(
            x,
            p,
            cosmo,
            config.steps(config.ref_substeps),
            config.ref_mesh,
            config.box_size,
            config.ref_substeps,
        )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, snapshots=snaps.numpy())
        tmp.replace(path)
    return snaps


def coarse_run(
    omega_m: float,
    sigma_8: float,
    seed: int,
    config: HybridConfig,
    net: CorrectionNet | None,
    ics=None,
) -> torch.Tensor:
    """Positions of the coarse run at its step boundaries a > a_start,
    ``[n_steps, n_particles^3, 3]`` Mpc/h; with the learned correction when ``net`` is
    given (differentiable in the net's parameters), the plain PM force otherwise.
    ics: the (x, p) of :func:`physml.simulation.initial_conditions` if already made."""
    cosmo = Cosmology(omega_m, sigma_8)
    x, p = ics or initial_conditions(cosmo, seed, config.simulation_config())
    solver = None
    if net is not None:
        solver = HybridForceSolver(config.n_mesh, config.box_size, cosmo.omega_m, net)
    return _snapshots(x, p, cosmo, config.steps(), config.n_mesh, config.box_size, 1, solver=solver)


# ----------------------------------------------------------------------------- loss, training


def measured_power(pos: torch.Tensor, config: HybridConfig):
    """(k ``[B]`` h/Mpc, P ``[B]`` (Mpc/h)^3) of particles pos ``[N, 3]`` Mpc/h on the
    pk_mesh, CIC-deconvolved, up to the coarse Nyquist frequency. Differentiable."""
    delta = overdensity(pos, config.pk_mesh, config.box_size)
    k, pk, _ = power_spectrum(
        delta, config.box_size, config.n_bins, config.k_nyquist, deconvolve_cic=True
    )
    return k, pk


def hybrid_loss(
    snaps: torch.Tensor, ref: torch.Tensor, config: HybridConfig, ref_power=None
) -> torch.Tensor:
    """Mean over snapshots of the squared position error (minimum image, Mpc/h^2, per
    coordinate) plus pk_weight times the mean squared log P(k) ratio.

    snaps, ref: ``[S, N, 3]`` Mpc/h, the same particles in the same order; ref_power:
    the reference's P(k) per snapshot ``[S, B]`` if already measured."""
    d = snaps - ref
    d = d - config.box_size * torch.round(d / config.box_size)
    if ref_power is None:
        ref_power = torch.stack([measured_power(r, config)[1] for r in ref])
    pk = torch.stack([measured_power(s, config)[1] for s in snaps])
    return (d**2).mean() + config.pk_weight * torch.log(pk / ref_power).pow(2).mean()


def train_correction(
    config: HybridConfig,
    omega_m: float = 0.3,
    sigma_8: float = 0.8,
    seed: int = 0,
    iterations: int = 60,
    lr: float = 5e-3,
    progress: bool = True,
    cache_dir=None,
):
    """Fit a :class:`CorrectionNet` on one box against its reference run (Adam).

    Returns (net, losses) with losses a list of floats, one per iteration. About 0.35 s per
    iteration for the defaults on 2 idle CPU cores, plus one reference run."""
    ref = reference_run(omega_m, sigma_8, seed, config, cache_dir)
    ref_power = torch.stack([measured_power(r, config)[1] for r in ref])
    ics = initial_conditions(Cosmology(omega_m, sigma_8), seed, config.simulation_config())
    torch.manual_seed(seed)
    net = CorrectionNet.for_config(config)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    losses = []
    bar = tqdm(range(iterations), desc="training the correction", disable=not progress)
    for _ in bar:
        opt.zero_grad()
        snaps = coarse_run(omega_m, sigma_8, seed, config, net, ics)
        loss = hybrid_loss(snaps, ref, config, ref_power)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
    return net, losses


# ----------------------------------------------------------------------------- validation


def power_ratio_and_correlation(pos: torch.Tensor, ref: torch.Tensor, config: HybridConfig):
    """P(k) ratio and cross-correlation of two particle sets (``[N, 3]`` Mpc/h) on the
    pk_mesh up to the coarse Nyquist frequency. Returns (k, P_x / P_ref, r), each ``[B]``,
    r = P_x,ref / sqrt(P_x P_ref)."""
    dx = overdensity(pos, config.pk_mesh, config.box_size)
    dr = overdensity(ref, config.pk_mesh, config.box_size)
    args = (config.box_size, config.n_bins, config.k_nyquist)
    k, pxx, _ = power_spectrum(dx, *args)
    _, prr, _ = power_spectrum(dr, *args)
    _, pxr, _ = cross_power_spectrum(dx, dr, *args)
    return k, pxx / prr, pxr / torch.sqrt(pxx * prr)


@dataclass
class Comparison:
    """Coarse and corrected runs against the reference at a = 1 for some seeds.

    k ``[B]`` h/Mpc; ratio_coarse, ratio_hybrid, r_coarse, r_hybrid ``[S, B]`` (P ratio
    to the reference, cross-correlation with it); k_nyquist: the coarse Nyquist wavenumber.
    """

    omega_m: float
    sigma_8: float
    seeds: list
    k: np.ndarray
    ratio_coarse: np.ndarray
    ratio_hybrid: np.ndarray
    r_coarse: np.ndarray
    r_hybrid: np.ndarray
    k_nyquist: float

    def summary(self) -> dict:
        """The quality-bar figures, from the seed-averaged ratio and r.

        band: bins with k_N/4 <= k <= k_N/2; low: bins with k < k_N/4.
        deficit_coarse / deficit_hybrid: mean of 1 - P/P_ref over the band;
        cut_min: the smallest per-bin fraction of |1 - P/P_ref| removed in the band;
        low_worse_max: the largest increase of |1 - P/P_ref| in a low bin (negative: better);
        r_coarse / r_hybrid: mean r(k) over the band."""
        band = (self.k >= self.k_nyquist / 4) & (self.k <= self.k_nyquist / 2)
        low = self.k < self.k_nyquist / 4
        err_c = np.abs(1.0 - self.ratio_coarse.mean(0))
        err_h = np.abs(1.0 - self.ratio_hybrid.mean(0))
        return {
            "deficit_coarse": float((1.0 - self.ratio_coarse.mean(0))[band].mean()),
            "deficit_hybrid": float((1.0 - self.ratio_hybrid.mean(0))[band].mean()),
            "cut_min": float((1.0 - err_h[band] / err_c[band]).min()),
            "low_worse_max": float((err_h[low] - err_c[low]).max()),
            "r_coarse": float(self.r_coarse.mean(0)[band].mean()),
            "r_hybrid": float(self.r_hybrid.mean(0)[band].mean()),
            "r_raised_everywhere_in_band": bool(
                np.all(self.r_hybrid.mean(0)[band] > self.r_coarse.mean(0)[band])
            ),
        }


def compare(
    net: CorrectionNet,
    config: HybridConfig,
    omega_m: float,
    sigma_8: float,
    seeds,
    progress: bool = True,
    cache_dir=None,
) -> Comparison:
    """Run coarse, corrected and reference boxes for each seed and compare them at a = 1.
    About 2.5 s per seed for the defaults on 2 idle CPU cores, 0.5 s once the reference
    run is cached."""
    rows = []
    for seed in tqdm(list(seeds), desc=f"Omega_m = {omega_m}", disable=not progress):
        ref = reference_run(omega_m, sigma_8, seed, config, cache_dir)[-1]
        with torch.no_grad():
            xc = coarse_run(omega_m, sigma_8, seed, config, None)[-1]
            xh = coarse_run(omega_m, sigma_8, seed, config, net)[-1]
        k, qc, rc = power_ratio_and_correlation(xc, ref, config)
        _, qh, rh = power_ratio_and_correlation(xh, ref, config)
        rows.append((qc, qh, rc, rh))
    cols = [np.stack([r[i].numpy() for r in rows]) for i in range(4)]
    return Comparison(omega_m, sigma_8, list(seeds), k.numpy(), *cols, k_nyquist=config.k_nyquist)


def projected_density(pos: torch.Tensor, config: HybridConfig, depth: float = 5.0):
    """log10(1 + delta) of a slab 0 <= z < depth Mpc/h projected along z on the pk_mesh,
    ``[pk_mesh, pk_mesh]`` numpy (x down, y across), for side-by-side pictures."""
    n = config.pk_mesh
    rho = overdensity(pos, n, config.box_size) + 1.0
    cells = max(1, round(depth / config.box_size * n))
    return np.log10(rho[:, :, :cells].mean(-1).clamp_min(1e-3).numpy())


def format_comparisons(comparisons, per_bin: bool = False) -> str:
    """The quality-bar figures of several :class:`Comparison` s side by side as text; with
    ``per_bin`` also the seed-averaged P ratio and r(k) per k bin."""
    lines = [
        f"{'Omega_m':>7} {'seeds':>5} | {'deficit in band':>22} {'cut (min bin)':>13} | "
        f"{'low-k worse (max)':>17} | {'r in band':>15}",
        f"{'':>7} {'':>5} | {'coarse':>10} {'corrected':>11} {'':>13} | {'':>17} | "
        f"{'coarse':>7} {'corr.':>7}",
    ]
    for c in comparisons:
        s = c.summary()
        lines.append(
            f"{c.omega_m:>7.2f} {len(c.seeds):>5d} | {s['deficit_coarse']:>9.1%} "
            f"{s['deficit_hybrid']:>11.1%} {s['cut_min']:>13.0%} | "
            f"{s['low_worse_max']:>+17.2%} | {s['r_coarse']:>7.4f} {s['r_hybrid']:>7.4f}"
        )
    if per_bin:
        for c in comparisons:
            lines.append(f"\nOmega_m = {c.omega_m}, seeds {c.seeds}, k_N = {c.k_nyquist:.2f} h/Mpc")
            lines.append(f"{'k h/Mpc':>8} {'P/Pref c':>9} {'corr.':>7} {'r c':>8} {'corr.':>8}")
            rows = zip(
                c.k,
                c.ratio_coarse.mean(0),
                c.ratio_hybrid.mean(0),
                c.r_coarse.mean(0),
                c.r_hybrid.mean(0),
                strict=True,
            )
            for k, qc, qh, rc, rh in rows:
                band = "  band" if c.k_nyquist / 4 <= k <= c.k_nyquist / 2 else ""
                lines.append(f"{k:>8.2f} {qc:>9.3f} {qh:>7.3f} {rc:>8.4f} {rh:>8.4f}{band}")
    return "\n".join(lines)
