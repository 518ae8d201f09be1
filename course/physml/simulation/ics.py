"""Initial conditions: nested white noise, the linear density field and 2LPT.

The white noise is *nested*: the Fourier modes of an n^3 grid that also exist on the
(n/2)^3 grid are copied from it, recursively down to an 8^3 base grid. So one seed gives
the same large-scale phases at every particle count, and a higher-resolution run only
adds small-scale modes.
"""

from __future__ import annotations

import torch

from ..cosmology import Cosmology
from .mesh import nyquist_mask, wavenumbers

_BASE_N = 8


def _level_seed(seed: int, n: int) -> int:
    return (int(seed) * 1_000_003 + n * 7_919) % (2**63 - 1)


def white_noise(
    seed: int, n: int, device=None, fixed_amplitude: bool = False, paired: bool = False
) -> torch.Tensor:
    """Unit-variance complex white noise on an rfftn grid, ``[n, n, n // 2 + 1]`` complex64.

    Each mode has E|w|^2 = 1 (``norm="ortho"``); the k = 0 mode and the Nyquist planes are
    zero. Modes with |k_i| < n/4 in every axis equal those of ``white_noise(seed, n // 2)``.
    Drawn on the CPU (so results do not depend on the device) and moved to ``device``.

    fixed_amplitude: set every mode's modulus to exactly 1, keeping the seed's phases
    (Angulo & Pontzen 2016): the field has no cosmic-variance scatter in its initial
    power, which makes seed-averaged *derivatives* far less noisy. Its statistics are not
    Gaussian, so a covariance must still come from ordinary (Gaussian) seeds.
    paired: flip every phase by pi (w -> -w), the partner of a fixed pair
    (Villaescusa-Navarro et al. 2018); averaging the pair cancels the odd orders in w.
    """
    if n < 2 or n & (n - 1):
        raise ValueError(f"grid size must be a power of two >= 2, got {n}")
    gen = torch.Generator().manual_seed(_level_seed(seed, n))
    w = torch.fft.rfftn(torch.randn(n, n, n, generator=gen), norm="ortho")
    if n > _BASE_N:
        low = white_noise(seed, n // 2)
        m = n // 4  # the coarse grid's modes strictly below its Nyquist frequency
        for sx in (slice(0, m), slice(-m + 1, None)):
            for sy in (slice(0, m), slice(-m + 1, None)):
                w[sx, sy, :m] = low[sx, sy, :m]
    w = w * nyquist_mask(n)
    if fixed_amplitude:
        w = torch.where(w.abs() > 0, w / w.abs().clamp_min(1e-30), w)
    if paired:
        w = -w
    return w.to(device) if device is not None else w


def linear_modes(
    cosmo: Cosmology,
    seed: int,
    n: int,
    box_size: float,
    device=None,
    dtype=torch.float32,
    fixed_amplitude: bool = False,
    paired: bool = False,
):
    """Fourier modes of the z = 0 linear density contrast, ``[n, n, n // 2 + 1]`` complex.

    Normalised as the unnormalised DFT, delta_k = n^3 sqrt(P(k) / V) w_k, so that
    ``torch.fft.irfftn`` gives delta(x) on the grid. Differentiable in the cosmology.
    dtype: the real dtype (float32 -> complex64, float64 -> complex128; the white noise
    itself is drawn in float32 either way, so both dtypes give the same field).
    fixed_amplitude, paired: see :func:`white_noise` (``|delta_k|^2 = n^6 P(k) / V`` exactly
    for a fixed field).
    """
    w = white_noise(seed, n, device, fixed_amplitude, paired)
    return linear_modes_from_noise(cosmo, w, box_size, dtype)


def linear_modes_from_noise(
    cosmo: Cosmology | None, w: torch.Tensor, box_size: float, dtype=None, power=None
):
    """:func:`linear_modes` from given white-noise modes instead of a seed.

    w: ``[n, n, n // 2 + 1]`` complex unit-variance modes, ``rfftn(s, norm="ortho")`` of a
    real white-noise field s, with the k = 0 mode and the Nyquist planes set to zero (as
    :func:`white_noise` returns them; differentiable in w, so that s can be a sampled
    variable). dtype: real dtype of the result (float32 ->
    complex64, float64 -> complex128; default: that of w). power: optional P(k) (Mpc/h)^3 on
    the rfft modes ``[n, n, n // 2 + 1]`` used instead of ``cosmo.linear_power`` (for
    instance interpolated from a table; ``cosmo`` may then be None). Returns delta_k
    ``[n, n, n // 2 + 1]`` = n^3 sqrt(P(k) / V) w_k, differentiable in w and the cosmology.
    """
    n = w.shape[0]
    if w.dim() != 3 or tuple(w.shape) != (n, n, n // 2 + 1) or not w.is_complex():
        raise ValueError(f"w: expected complex [n, n, n // 2 + 1] modes, got {list(w.shape)}")
    if dtype is None:
        dtype = w.real.dtype
    if power is None:
        kx, ky, kz = wavenumbers(n, box_size, w.device, torch.float64)
        k = torch.sqrt(kx**2 + ky**2 + kz**2)
        k[0, 0, 0] = 1.0  # the k = 0 mode of w is zero anyway
        power = cosmo.linear_power(k)
    amp = torch.sqrt(power / box_size**3) * n**3
    return w.to(torch.complex64 if dtype == torch.float32 else torch.complex128) * amp.to(dtype)


def linear_field(cosmo: Cosmology, seed: int, n: int, box_size: float, device=None):
    """The z = 0 linear density contrast on the grid, ``[n, n, n]`` float32.

    Grid point (i, j, l) sits at (i, j, l) * box_size / n Mpc/h, the Lagrangian position
    of particle (i, j, l).
    """
    return torch.fft.irfftn(linear_modes(cosmo, seed, n, box_size, device), s=(n, n, n))


def lpt_displacements(delta_k: torch.Tensor, box_size: float):
    """First- and second-order Lagrangian displacement fields from linear modes.

    delta_k: ``[n, n, n // 2 + 1]`` complex (from :func:`linear_modes`). Returns
    (psi1, psi2), each ``[n^3, 3]`` Mpc/h per unit growth, in the convention
    x = q + D1 psi1 + D2 psi2 with D2 = -3/7 D1^2: psi1 = -grad phi1, psi2 = grad phi2,
    lap phi1 = delta, lap phi2 = sum_{i<j} (phi1_ii phi1_jj - phi1_ij^2).
    """
    n = delta_k.shape[0]
    ks = wavenumbers(n, box_size, delta_k.device, delta_k.real.dtype)
    k2 = ks[0] ** 2 + ks[1] ** 2 + ks[2] ** 2
    k2[0, 0, 0] = 1.0
    phi1 = -delta_k / k2
    shape = (n, n, n)

    def grad(phi):
        return torch.stack([torch.fft.irfftn(1j * k * phi, s=shape) for k in ks], -1).view(-1, 3)

    psi1 = -grad(phi1)
    hess = {}
    for i in range(3):
        for j in range(i, 3):
            hess[i, j] = torch.fft.irfftn(-ks[i] * ks[j] * phi1, s=shape)
    src = (
        hess[0, 0] * hess[1, 1]
        + hess[0, 0] * hess[2, 2]
        + hess[1, 1] * hess[2, 2]
        - hess[0, 1] ** 2
        - hess[0, 2] ** 2
        - hess[1, 2] ** 2
    )
    src_k = torch.fft.rfftn(src) * nyquist_mask(n, delta_k.device)
    psi2 = grad(-src_k / k2)
    return psi1, psi2


def second_order_growth(cosmo: Cosmology, a):
    """D2(a) = -3/7 D1(a)^2 Omega_m(a)^(-1/143) and its derivative dD2/da (~ 2 D2 D1'/D1)."""
    d1 = cosmo.growth_factor(a)
    d2 = -3.0 / 7.0 * d1**2 * cosmo.omega_m_a(a) ** (-1.0 / 143.0)
    return d2, 2.0 * d2 * cosmo.growth_derivative(a) / d1
