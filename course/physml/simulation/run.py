"""One simulated halo catalog: ICs -> 2LPT -> PM N-body -> FoF -> mass cut."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..catalogs import Catalog
from ..cosmology import Cosmology
from ..settings import MASS_CUT
from .fof import friends_of_friends
from .ics import linear_modes, lpt_displacements, second_order_growth
from .nbody import nbody


def _finite(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class SimulationConfig:
    """Generator settings. The defaults are the lecture settings.

    box_size: Mpc/h; n_particles: particles per side; n_mesh: PM cells per side;
    n_steps: KDK steps, linear in a from a_start to a = 1; linking_length: FoF, in units
    of the mean inter-particle separation; min_members: smallest FoF group kept;
    mass_cut: smallest halo mass kept in the catalog, Msun/h (a fixed absolute mass, so
    that the smallest halo does not reveal Omega_m through the particle mass).
    """

    box_size: float = 25.0
    n_particles: int = 64
    n_mesh: int = 128
    n_steps: int = 20
    a_start: float = 0.05
    linking_length: float = 0.2
    min_members: int = 20
    mass_cut: float = MASS_CUT

    def __post_init__(self):
        for name, what in (
            ("box_size", "a finite length > 0 (Mpc/h)"),
            ("linking_length", "a finite number > 0"),
            ("mass_cut", "a finite mass >= 0 (Msun/h)"),
        ):
            v = getattr(self, name)
            if not (_finite(v) and (v >= 0 if name == "mass_cut" else v > 0)):
                raise ValueError(f"{name} must be {what}, got {v!r}")
        for name in ("n_particles", "n_mesh", "n_steps", "min_members"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"{name} must be an integer, got {v!r}")
        for name in ("n_particles", "n_mesh"):
            v = getattr(self, name)
            if v < 8 or v & (v - 1):
                raise ValueError(f"{name} must be a power of two >= 8, got {v}")
        if self.n_mesh < self.n_particles:
            raise ValueError(
                f"n_mesh ({self.n_mesh}) must be >= n_particles ({self.n_particles}): a PM mesh "
                "coarser than the particle grid smooths the force over more than the mean "
                "particle separation, so the small halos that FoF links at 0.2 of that "
                "separation do not form"
            )
        if self.n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {self.n_steps}")
        if self.min_members < 1:
            raise ValueError(f"min_members must be >= 1, got {self.min_members}")
        if not 0 < self.a_start < 1:
            raise ValueError(f"a_start must be in (0, 1), got {self.a_start}")

    def steps(self) -> np.ndarray:
        """Scale factors of the step boundaries, ``[n_steps + 1]``."""
        return np.linspace(self.a_start, 1.0, self.n_steps + 1)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SimulationResult:
    """A finished run. catalog: halos above the mass cut; particle_mass in Msun/h;
    timings: seconds spent in 'ics', 'pm', 'fof'; x, p: final particle positions (Mpc/h)
    and momenta ``[n^3, 3]`` when kept."""

    catalog: Catalog
    particle_mass: float
    timings: dict = field(default_factory=dict)
    x: torch.Tensor | None = None
    p: torch.Tensor | None = None


def initial_conditions(
    cosmo: Cosmology,
    seed: int,
    config: SimulationConfig,
    device=None,
    dtype=torch.float32,
    fixed_amplitude: bool = False,
    paired: bool = False,
):
    """2LPT particle positions and momenta at a_start, each ``[n^3, 3]`` of ``dtype``.

    Particles start on a lattice at q = (i, j, l) * L / n, the grid of
    :func:`physml.simulation.linear_field`. Differentiable in the cosmology.
    fixed_amplitude, paired: fixed-amplitude / phase-flipped white noise
    (:func:`physml.simulation.white_noise`).
    """
    n, box = config.n_particles, config.box_size
    modes = linear_modes(cosmo, seed, n, box, device, dtype, fixed_amplitude, paired)
    psi1, psi2 = lpt_displacements(modes, box)
    i = torch.arange(n, device=device, dtype=dtype) * (box / n)
    q = torch.stack(torch.meshgrid(i, i, i, indexing="ij"), -1).view(-1, 3)
    a0 = torch.tensor(config.a_start, dtype=torch.float64)
    d1, dd1 = cosmo.growth_factor(a0), cosmo.growth_derivative(a0)
    d2, dd2 = second_order_growth(cosmo, a0)
    a3e = a0**3 * cosmo.efunc(a0)
    x = q + d1.to(dtype) * psi1 + d2.to(dtype) * psi2
    p = (a3e * dd1).to(dtype) * psi1 + (a3e * dd2).to(dtype) * psi2
    return torch.remainder(x, box), p


def simulate(
    omega_m: float,
    sigma_8: float,
    seed: int,
    config: SimulationConfig | None = None,
    device=None,
    keep_particles: bool = False,
) -> SimulationResult:
    """Run one box and return its halo catalog (positions in box units, masses in
    1e10 Msun/h, velocities in km/s), keeping halos with mass >= config.mass_cut."""
    config = config or SimulationConfig()
    cosmo = Cosmology(omega_m, sigma_8)
    box, n = config.box_size, config.n_particles
    t0 = time.perf_counter()
    with torch.no_grad():
        x, p = initial_conditions(cosmo, seed, config, device)
        t1 = time.perf_counter()
        x, p = nbody(x, p, cosmo, config.steps(), config.n_mesh, box)
    t2 = time.perf_counter()
    xn = x.double().cpu().numpy()
    vel = p.double().cpu().numpy() * 100.0  # v = a dx/dt = 100 p / a km/s, a = 1
    groups = friends_of_friends(
        xn, box, config.linking_length * box / n, config.min_members, vel=vel
    )
    m_p = float(cosmo.particle_mass(box, n))
    mass = groups.n_members * m_p
    keep = mass >= config.mass_cut
    pos = (groups.pos[keep] / box).astype(np.float32)
    pos[pos >= 1.0] = 0.0
    cat = Catalog(
        pos=pos,
        mass=(mass[keep] / 1e10).astype(np.float32),
        vel=groups.vel[keep].astype(np.float32),
    )
    t3 = time.perf_counter()
    timings = {"ics": t1 - t0, "pm": t2 - t1, "fof": t3 - t2}
    if keep_particles:
        return SimulationResult(cat, m_p, timings, x, p)
    return SimulationResult(cat, m_p, timings)
