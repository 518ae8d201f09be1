"""Periodic Gaussian random fields with a cosmological power spectrum, and their exact
log-likelihood.

A field ``delta`` ``[n, n, n]`` (dimensionless) lives on a periodic box of side
``box_size`` Mpc/h. It is white noise coloured in Fourier space,

    delta = F^-1 ( sqrt(lambda_k) F omega ),   omega ~ N(0, 1) per cell,

with ``F`` the unnormalised DFT and ``lambda_k = P(|k|) / V_cell`` (P in (Mpc/h)^3,
V_cell = (box_size / n)^3), so that the power-spectrum estimator of
:func:`physml.simulation.mesh.power_spectrum` returns P(k) on average. The covariance is
circulant, ``C = F^-1 diag(lambda) F``, hence diagonal in Fourier space:

    log N(delta; 0, C) = -1/2 [ (1/N) sum_k |delta_k|^2 / lambda_k + sum_k log lambda_k
                                + N log 2 pi ],   N = n^3,

the sums running over the full FFT grid. With ``rfftn`` only k_z >= 0 is stored: a mode
with 0 < k_z < n/2 stands for itself and its complex conjugate (weight 2), while the
self-conjugate planes k_z = 0 and k_z = n/2 (Nyquist, n even) appear once (weight 1).
The k = 0 mode, which a periodic box leaves free, is given the power at the fundamental
frequency 2 pi / box_size so that the covariance stays positive definite.
"""

from __future__ import annotations

import math

import torch

from ._checks import _check_count, _check_finite_values, _check_real, _check_shape
from .cosmology import PRIOR_RANGES, Cosmology
from .simulation.mesh import wavenumbers

#: default side of the box of the Gaussian-field examples, Mpc/h
GRF_BOX = 100.0


def _check_field(delta: torch.Tensor, where: str, batch: bool = True) -> int:
    """delta ``[..., n, n, n]`` (``[n, n, n]`` if not batch), n even, finite values."""
    if not torch.is_tensor(delta) or not delta.is_floating_point():
        raise ValueError(f"{where}: delta must be a float tensor [..., n, n, n], got {delta!r}")
    cube = delta.dim() >= 3 and delta.shape[-1] == delta.shape[-2] == delta.shape[-3]
    if not cube or (not batch and delta.dim() != 3):
        text = "[..., n, n, n]" if batch else "[n, n, n]"
        raise ValueError(f"{where}: field delta: expected shape {text}, got {list(delta.shape)}")
    n = delta.shape[-1]
    if n % 2:
        raise ValueError(f"{where}: field delta: n must be even, got n = {n}")
    _check_finite_values(delta, "delta", where)
    return n


def _check_n(n, where: str) -> int:
    n = _check_count(n, "n", where, minimum=2)
    if n % 2:
        raise ValueError(f"{where}: n (cells per side) must be even, got n = {n}")
    return n


def _check_box(box_size, where: str) -> float:
    return _check_real(box_size, "box_size", where, low=0)


def _check_cosmology(omega_m, sigma_8, where: str) -> None:
    _check_real(omega_m, "omega_m", where, low=0, high=1, high_open=False)
    _check_real(sigma_8, "sigma_8", where, low=0)


def mode_weights(n: int, device=None, dtype=torch.float64) -> torch.Tensor:
    """Multiplicity of each rfftn mode in the full FFT grid, ``[n // 2 + 1]`` over k_z:
    1 on the self-conjugate planes k_z = 0 and k_z = n/2, 2 elsewhere (n even)."""
    _check_n(n, "mode_weights")
    w = torch.full((n // 2 + 1,), 2.0, device=device, dtype=dtype)
    w[0] = 1.0
    w[-1] = 1.0
    return w


def kmag(n: int, box_size: float, device=None, dtype=torch.float64) -> torch.Tensor:
    """|k| of every rfftn mode ``[n, n, n // 2 + 1]`` in h/Mpc, with the k = 0 mode set to
    the fundamental 2 pi / box_size (see the module docstring)."""
    _check_n(n, "kmag")
    _check_box(box_size, "kmag")
    kx, ky, kz = wavenumbers(n, box_size, device, dtype)
    k = torch.sqrt(kx**2 + ky**2 + kz**2)
    return k.clamp_min(2.0 * math.pi / box_size)


def power_on_modes(omega_m, sigma_8, n: int, box_size: float, device=None) -> torch.Tensor:
    """Linear P(|k|) (Mpc/h)^3 at z = 0 on the rfftn modes, ``[n, n, n // 2 + 1]`` float64.

    omega_m, sigma_8: floats or 0-d tensors (gradients flow through them).
    P is evaluated once per distinct |k| and scattered back.
    """
    _check_cosmology(omega_m, sigma_8, "power_on_modes")
    k = kmag(n, box_size, device)
    uniq, inverse = torch.unique(k, return_inverse=True)
    p = Cosmology(omega_m, sigma_8).linear_power(uniq.cpu()).to(k.device)
    return p[inverse]


def eigenvalues(power: torch.Tensor, n: int, box_size: float) -> torch.Tensor:
    """Covariance eigenvalues lambda_k = P(k) / V_cell of the field in cell units, elementwise:
    power (Mpc/h)^3 of any shape (e.g. on the rfft modes); box_size in Mpc/h."""
    n = _check_n(n, "eigenvalues")
    _check_box(box_size, "eigenvalues")
    return power / (box_size / n) ** 3


def sample_field(
    omega_m, sigma_8, n: int = 32, box_size: float = GRF_BOX, seed: int = 0, device=None
) -> torch.Tensor:
    """One Gaussian random field ``[n, n, n]`` float64 at (Omega_m, sigma_8), seeded."""
    _check_n(n, "sample_field")
    _check_count(seed, "seed", "sample_field", minimum=0)
    gen = torch.Generator().manual_seed(int(seed))
    omega = torch.randn(n, n, n, generator=gen, dtype=torch.float64).to(device)
    lam = eigenvalues(power_on_modes(omega_m, sigma_8, n, box_size, device), n, box_size)
    return colour(omega, lam)


def colour(omega: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """delta = F^-1 (sqrt(lambda) F omega); omega ``[..., n, n, n]``, lam ``[n, n, n//2+1]``
    (or broadcastable to ``[..., n, n, n//2+1]``); lam >= 0."""
    n = _check_field(omega, "colour")
    _check_eigenvalues(lam, n, "colour", positive=False)
    return torch.fft.irfftn(torch.fft.rfftn(omega, dim=(-3, -2, -1)) * lam.sqrt(), s=(n, n, n))


def log_likelihood_eigen(delta: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Exact log N(delta; 0, C) for a circulant covariance with eigenvalues ``lam``.

    delta: ``[..., n, n, n]``; lam: ``[n, n, n // 2 + 1]`` positive, or broadcastable to
    ``[..., n, n, n // 2 + 1]``. Returns ``[...]`` in nats (float64).
    """
    n = _check_field(delta, "log_likelihood_eigen")
    _check_eigenvalues(lam, n, "log_likelihood_eigen", positive=True)
    return _log_likelihood_eigen(delta, lam, n)


def _check_eigenvalues(lam, n: int, where: str, positive: bool) -> None:
    text = f"[..., {n}, {n}, {n // 2 + 1}]"
    if not torch.is_tensor(lam) or lam.dim() < 3:
        shape = list(lam.shape) if torch.is_tensor(lam) else type(lam).__name__
        raise ValueError(f"{where}: lam must have shape {text}, got {shape}")
    if tuple(lam.shape[-3:]) != (n, n, n // 2 + 1):
        raise ValueError(f"{where}: lam must have shape {text}, got {list(lam.shape)}")
    _check_finite_values(lam, "lam", where)
    if not bool((lam > 0).all() if positive else (lam >= 0).all()):
        raise ValueError(
            f"{where}: lam (covariance eigenvalues) must be {'>' if positive else '>='} 0"
        )


def _log_likelihood_eigen(delta: torch.Tensor, lam: torch.Tensor, n: int) -> torch.Tensor:
    big_n = n**3
    dk = torch.fft.rfftn(delta.to(torch.float64), dim=(-3, -2, -1))
    w = mode_weights(n, delta.device)
    quad = (w * dk.abs() ** 2 / lam).sum(dim=(-3, -2, -1)) / big_n
    logdet = (w * torch.log(lam)).expand(dk.shape).sum(dim=(-3, -2, -1))
    return -0.5 * (quad + logdet + big_n * math.log(2.0 * math.pi))


def log_likelihood(delta: torch.Tensor, omega_m, sigma_8, box_size: float = GRF_BOX):
    """Analytic log p(delta | Omega_m, sigma_8) in nats; delta ``[..., n, n, n]``."""
    n = _check_field(delta, "log_likelihood")
    lam = eigenvalues(power_on_modes(omega_m, sigma_8, n, box_size, delta.device), n, box_size)
    return _log_likelihood_eigen(delta, lam, n)


class ShellStatistics:
    """Sufficient statistics of a field for the analytic likelihood: per distinct |k|,
    the mode count (full grid) and the sum of |delta_k|^2. Evaluating log p on a grid of
    parameters then costs one P(k) per parameter point and distinct |k|.

    delta: ``[n, n, n]``; box_size in Mpc/h.
    """

    def __init__(self, delta: torch.Tensor, box_size: float = GRF_BOX):
        n = _check_field(delta, "ShellStatistics", batch=False)
        _check_box(box_size, "ShellStatistics")
        self.n, self.box_size = n, float(box_size)
        k = kmag(n, box_size, delta.device)
        self.k, inverse = torch.unique(k, return_inverse=True)
        w = mode_weights(n, delta.device).expand_as(k)
        dk2 = torch.fft.rfftn(delta.to(torch.float64)).abs() ** 2
        flat = inverse.reshape(-1)
        self.counts = torch.zeros_like(self.k).index_add(0, flat, w.reshape(-1))
        self.power_sum = torch.zeros_like(self.k).index_add(0, flat, (w * dk2).reshape(-1))

    def log_likelihood_table(self, theta: torch.Tensor, table: PowerTable) -> torch.Tensor:
        """log p(delta | theta) ``[B]`` for theta ``[B, 2]``, P(k) from a :class:`PowerTable`
        of the same n and box (one vectorised evaluation for a whole grid of theta)."""
        _check_table(table, self.n, self.box_size, "log_likelihood_table")
        lam = eigenvalues(torch.exp(table.log_power(theta)), self.n, self.box_size)
        big_n = self.n**3
        quad = (self.power_sum / lam).sum(-1) / big_n
        logdet = (self.counts * torch.log(lam)).sum(-1)
        return -0.5 * (quad + logdet + big_n * math.log(2.0 * math.pi))

    def log_likelihood(self, omega_m, sigma_8) -> torch.Tensor:
        """log p(delta | Omega_m, sigma_8), 0-d float64, equal to :func:`log_likelihood`."""
        _check_cosmology(omega_m, sigma_8, "ShellStatistics.log_likelihood")
        p = Cosmology(omega_m, sigma_8).linear_power(self.k.cpu()).to(self.k.device)
        lam = eigenvalues(p, self.n, self.box_size)
        big_n = self.n**3
        quad = (self.power_sum / lam).sum() / big_n
        logdet = (self.counts * torch.log(lam)).sum()
        return -0.5 * (quad + logdet + big_n * math.log(2.0 * math.pi))


def sample_prior(n_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """theta = (Omega_m, sigma_8) ``[n_samples, 2]`` float64, uniform over the CAMELS box."""
    _check_count(n_samples, "n_samples", "sample_prior")
    lo = torch.tensor([PRIOR_RANGES["Omega_m"][0], PRIOR_RANGES["sigma_8"][0]], dtype=torch.float64)
    hi = torch.tensor([PRIOR_RANGES["Omega_m"][1], PRIOR_RANGES["sigma_8"][1]], dtype=torch.float64)
    return lo + (hi - lo) * torch.rand(n_samples, 2, generator=generator, dtype=torch.float64)


class PowerTable:
    """P(|k| | Omega_m, sigma_8) on the distinct |k| of an rfft mesh, fast for many theta.

    sigma_8 enters exactly as P = sigma_8^2 P(k | Omega_m, 1); ln P(k | Omega_m, 1) from
    :class:`physml.cosmology.Cosmology` is tabulated at ``n_omega`` values of Omega_m over
    the prior range and interpolated linearly (relative error of ln P below 3e-5 with the default
    201 points). ``power(theta)`` costs one interpolation instead of one sigma_8 integral.

    n: cells per side; box_size: Mpc/h.
    """

    def __init__(self, n: int, box_size: float = GRF_BOX, n_omega: int = 201):
        _check_n(n, "PowerTable")
        _check_box(box_size, "PowerTable")
        _check_count(n_omega, "n_omega", "PowerTable", minimum=2)
        self.n, self.box_size = n, float(box_size)
        k = kmag(n, box_size)
        self.k, self.inverse = torch.unique(k, return_inverse=True)
        lo, hi = PRIOR_RANGES["Omega_m"]
        self.omegas = torch.linspace(lo, hi, n_omega, dtype=torch.float64)
        self.log_p = torch.stack(
            [torch.log(Cosmology(float(om), 1.0).linear_power(self.k)) for om in self.omegas]
        )

    def log_power(self, theta: torch.Tensor) -> torch.Tensor:
        """ln P on the distinct |k| (``self.k``), ``[B, K]``; theta ``[B, 2]`` with Omega_m
        inside the table's range (the prior's) and sigma_8 > 0."""
        _check_theta_rows(theta, "PowerTable.log_power")
        om, s8 = theta[:, 0].to(torch.float64), theta[:, 1].to(torch.float64)
        lo, hi = float(self.omegas[0]), float(self.omegas[-1])
        if torch.any(om < lo - 1e-12) or torch.any(om > hi + 1e-12):
            raise ValueError(
                f"PowerTable.log_power: theta: Omega_m outside the table's range [{lo}, {hi}]"
            )
        if not bool((s8 > 0).all()):
            raise ValueError("PowerTable.log_power: theta: sigma_8 must be > 0")
        u = (om - lo) / (hi - lo) * (len(self.omegas) - 1)
        i = u.floor().long().clamp(0, len(self.omegas) - 2)
        t = (u - i).unsqueeze(-1)
        return (1 - t) * self.log_p[i] + t * self.log_p[i + 1] + 2 * torch.log(s8).unsqueeze(-1)

    def eigenvalues(self, theta: torch.Tensor) -> torch.Tensor:
        """Covariance eigenvalues on the rfft modes, ``[B, n, n, n // 2 + 1]``."""
        p = torch.exp(self.log_power(theta))[:, self.inverse]
        return eigenvalues(p, self.n, self.box_size)


def sample_fields(
    theta: torch.Tensor,
    n: int = 32,
    box_size: float = GRF_BOX,
    generator: torch.Generator | None = None,
    table: PowerTable | None = None,
) -> torch.Tensor:
    """One field per row of theta = (Omega_m, sigma_8) ``[B, 2]``: ``[B, n, n, n]`` float64
    (on the CPU; white noise from ``generator``). With a :class:`PowerTable` of the same n
    and box, P(k) is interpolated from it; otherwise computed exactly per row."""
    _check_theta_rows(theta, "sample_fields")
    _check_n(n, "sample_fields")
    _check_box(box_size, "sample_fields")
    if table is not None:
        _check_table(table, n, box_size, "sample_fields")
        lam = table.eigenvalues(theta)
    else:
        lam = torch.stack(
            [
                eigenvalues(power_on_modes(om, s8, n, box_size), n, box_size)
                for om, s8 in theta.tolist()
            ]
        )
    omega = torch.randn(len(theta), n, n, n, generator=generator, dtype=torch.float64)
    return colour(omega, lam)


def _check_theta_rows(theta, where: str) -> None:
    if not torch.is_tensor(theta) or not theta.is_floating_point():
        raise ValueError(f"{where}: theta must be a float tensor [B, 2] = (Omega_m, sigma_8)")
    _check_shape(theta, "theta", where, (None, 2), "[B, 2] = (Omega_m, sigma_8)")
    _check_finite_values(theta, "theta", where)


def _check_table(table, n: int, box_size: float, where: str) -> None:
    if not isinstance(table, PowerTable):
        raise ValueError(f"{where}: table must be a PowerTable, got {type(table).__name__}")
    if table.n != n or table.box_size != float(box_size):
        raise ValueError(
            f"{where}: table was made for n = {table.n}, box_size = {table.box_size}, "
            f"not for n = {n}, box_size = {float(box_size)}"
        )
