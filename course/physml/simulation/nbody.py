"""FastPM-style particle-mesh N-body integration in torch.

Units: comoving positions x in Mpc/h, time in 1/H0, momentum p = a^2 dx/dt / H0
(Mpc/h). The equations of motion are dx/da = p / (a^3 E), dp/da = F / (a^2 E) with
F = -grad phi and lap phi = 3/2 Omega_m delta. Kick and drift factors are
growth-consistent (Feng et al. 2016): a particle on the linear growing mode moves
exactly as linear theory says, whatever the step size.

The force uses a CIC paint, an FFT Poisson solve and a *finite-difference* gradient in
real space, read back with CIC. The mesh is finer than the particle lattice, so the
painted lattice itself carries large modes at the mesh Nyquist frequency: the central
difference gives them exactly zero force, while an exact k-space gradient turns them into
spurious forces that spoil linear growth. The Green's function -1/k^2 is divided by the
squared CIC window below 3/4 of the mesh Nyquist frequency (sharper halos) and left alone
above it (deconvolving there amplifies the lattice modes too). A low-amplitude run grows
as D(a) to about 1 % up to k = 1 h/Mpc (tests/test_simulation.py).
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint as _checkpoint

from ..cosmology import Cosmology
from .mesh import (
    cic_paint,
    cic_readout_padded,
    cic_window,
    fd_gradient_padded,
    nyquist_mask,
    wavenumbers,
)


class ForceSolver:
    """PM force on particles; precomputes the Green's function for an n^3 mesh.

    Args:
        n_mesh: mesh cells per side; box_size: Mpc/h; omega_m: float or 0-d tensor;
        dtype: real dtype of the Green's function (that of the particle positions).
    """

    def __init__(self, n_mesh: int, box_size: float, omega_m, device=None, dtype=torch.float32):
        self.n, self.box = n_mesh, box_size
        kx, ky, kz = wavenumbers(n_mesh, box_size, device, dtype)
        k2 = kx**2 + ky**2 + kz**2
        k2[0, 0, 0] = 1.0
        green = -nyquist_mask(n_mesh, device).to(dtype) / k2
        # Undo the CIC paint and readout smoothing, but only below 3/4 of the mesh Nyquist
        # frequency: the painted lattice's own modes near the mesh Nyquist must not be
        # amplified (see the module docstring).
        w2 = cic_window(n_mesh, box_size, device, dtype) ** 2
        k_max = 0.75 * torch.pi * n_mesh / box_size
        low = (kx.abs() < k_max) & (ky.abs() < k_max) & (kz.abs() < k_max)
        green = torch.where(low, green / w2, green)
        self.kernel = green * (1.5 * omega_m)  # keeps omega_m's autograd graph
        self.kernel = self.kernel.to(dtype)

    def __call__(self, pos: torch.Tensor, a=None) -> torch.Tensor:
        """Force F = -grad phi at the particles; pos ``[N, 3]`` Mpc/h -> ``[N, 3]``.
        ``a`` (the scale factor) is unused here; solvers whose force depends on time, such
        as a learned correction, take it from :func:`nbody`."""
        n, cell = self.n, self.box / self.n
        delta = cic_paint(pos, n, self.box) * (n**3 / pos.shape[0]) - 1.0
        phi = torch.fft.irfftn(torch.fft.rfftn(delta) * self.kernel_at(a), s=(n, n, n))
        return -cic_readout_padded(fd_gradient_padded(phi, cell), pos, self.box)

    def kernel_at(self, a) -> torch.Tensor:
        """Fourier kernel ``[n, n, n // 2 + 1]`` that turns delta_k into phi_k at scale
        factor ``a``; the same at every a here. A subclass that overrides it (a learned
        correction, :mod:`physml.simulation.hybrid`) reuses the paint, solve and readout."""
        return self.kernel


class GrowthTable:
    """Background functions the integrator needs, as float64 tensors in a (0-d)."""

    def __init__(self, cosmo: Cosmology):
        self.c = cosmo

    def d(self, a):
        return self.c.growth_factor(a)

    def g_p(self, a):  # momentum per unit displacement on the growing mode: a^3 E dD/da
        return a**3 * self.c.efunc(a) * self.c.growth_derivative(a)

    def drift_factor(self, ai, ac, af):
        """Delta x = p(ac) * factor for a drift from ai to af."""
        return (self.d(af) - self.d(ai)) / self.g_p(ac)

    def kick_factor(self, ai, ac, af):
        """Delta p = F(ac) * factor for a kick from ai to af with the force at ac."""
        return (self.g_p(af) - self.g_p(ai)) / (1.5 * self.c.omega_m * self.d(ac))


def nbody(
    x: torch.Tensor,
    p: torch.Tensor,
    cosmo: Cosmology,
    steps,
    n_mesh: int,
    box_size: float,
    callback=None,
    solver=None,
    checkpoint: bool = False,
):
    """Kick-drift-kick leapfrog through the scale factors ``steps``.

    x, p: ``[N, 3]`` positions (Mpc/h) and momenta at ``steps[0]``. steps: increasing
    scale factors (float sequence). Returns (x, p) at ``steps[-1]``; positions are
    wrapped into [0, box_size). ``callback(a, x, p)`` is called after each step.
    ``solver(pos, a)`` returns the force ``[N, 3]`` at scale factor ``a`` (0-d float64
    tensor); default :class:`ForceSolver` on an ``n_mesh**3`` mesh, in the dtype of x.
    Differentiable in x, p and the cosmology.

    ``checkpoint=True`` recomputes each step during the backward pass
    (``torch.utils.checkpoint``) instead of storing its intermediate meshes: autograd then
    keeps only (x, p, force) per step, ``3 x [N, 3]``, rather than the paint, FFT and
    gradient meshes, at the price of one more forward pass. It is the discrete analogue of
    the adjoint method and gives the same gradients (``benchmarks/bench_memory.py``).
    """
    if solver is None:
        solver = ForceSolver(n_mesh, box_size, cosmo.omega_m, x.device, x.dtype)
    table = GrowthTable(cosmo)
    a = [torch.tensor(float(s), dtype=torch.float64) for s in steps]
    force = solver(x, a[0])
    for ai, af in zip(a[:-1], a[1:], strict=True):
        ac = torch.sqrt(ai * af)
        k1 = table.kick_factor(ai, ai, ac).to(x.dtype)
        dr = table.drift_factor(ai, ac, af).to(x.dtype)
        k2 = table.kick_factor(ac, af, af).to(x.dtype)
        args = (x, p, force, k1, dr, k2, af, solver, box_size)
        if checkpoint and torch.is_grad_enabled():
            x, p, force = _checkpoint(_kdk_step, *args, use_reentrant=False)
        else:
            x, p, force = _kdk_step(*args)
        if callback is not None:
            callback(float(af), x, p)
    return x, p


def _kdk_step(x, p, force, k1, dr, k2, af, solver, box_size):
    """One kick-drift-kick step; force is that at the step's start. Returns (x, p, force)."""
    p = p + force * k1
    x = torch.remainder(x + p * dr, box_size)
    force = solver(x, af)
    return x, p + force * k2, force
