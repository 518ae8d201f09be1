"""Linear cosmology in torch: power spectrum, sigma_R and growth, differentiable in
(Omega_m, sigma_8).

Flat LCDM without radiation. The fixed parameters are the CAMELS values
(Omega_b = 0.049, h = 0.6711, n_s = 0.9624, T_cmb = 2.7255 K).

The transfer function is the Eisenstein & Hu (1998) *zero-baryon* ("no-wiggle") fit,
their eqs. 26-31: the baryon suppression of the shape parameter is kept, the BAO
wiggles are not. It is the same model as colossus' ``eisenstein98_zb``.

Units: k in h/Mpc, lengths in Mpc/h, P(k) in (Mpc/h)^3, all at z = 0 unless a growth
factor is applied. Every method accepts and returns torch tensors (float64 inside);
gradients flow to ``omega_m`` and ``sigma_8`` when they are tensors with
``requires_grad=True``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

OMEGA_B = 0.049
HUBBLE_H = 0.6711
N_S = 0.9624
T_CMB = 2.7255
#: the CAMELS Latin-hypercube priors of the two free parameters
PRIOR_RANGES = {"sigma_8": (0.6, 1.0), "Omega_m": (0.1, 0.5)}
#: critical density today in Msun/h per (Mpc/h)^3
RHO_CRIT = 2.77536627e11

# Quadrature grid for sigma_R: ln k uniformly from 1e-5 to 1e3 h/Mpc.
_LNK = torch.linspace(math.log(1e-5), math.log(1e3), 8193, dtype=torch.float64)
# Gauss-Legendre nodes on [0, 1] for the growth integral.
_GL = np.polynomial.legendre.leggauss(64)
_GL_X, _GL_W = (torch.as_tensor(v, dtype=torch.float64) for v in _GL)
_GL_X, _GL_W = 0.5 * (_GL_X + 1.0), 0.5 * _GL_W


def _as_tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(torch.float64)
    return torch.as_tensor(x, dtype=torch.float64)


def tophat_window(x: torch.Tensor) -> torch.Tensor:
    """Fourier transform of the unit-volume top-hat, W(x) = 3 (sin x - x cos x) / x^3.

    x: any shape, x = k R (dimensionless). A series is used for x < 1e-3, where the
    closed form loses precision.
    """
    x = _as_tensor(x)
    small = x < 1e-3
    xs = torch.where(small, torch.ones_like(x), x)
    closed = 3.0 * (torch.sin(xs) - xs * torch.cos(xs)) / xs**3
    series = 1.0 - x**2 / 10.0 + x**4 / 280.0
    return torch.where(small, series, closed)


class Cosmology:
    """Flat LCDM with free (Omega_m, sigma_8) and the CAMELS fixed parameters.

    Args:
        omega_m: matter density today, float or 0-d tensor.
        sigma_8: rms linear overdensity in 8 Mpc/h top-hat spheres at z = 0.
    """

    def __init__(
        self,
        omega_m=0.3,
        sigma_8=0.8,
        omega_b: float = OMEGA_B,
        h: float = HUBBLE_H,
        n_s: float = N_S,
        t_cmb: float = T_CMB,
    ):
        self.omega_m = _as_tensor(omega_m)
        self.sigma_8 = _as_tensor(sigma_8)
        if not (0.0 < float(self.omega_m.detach()) <= 1.0):
            raise ValueError(f"omega_m must be in (0, 1], got {float(self.omega_m)}")
        if not 0.0 < float(self.sigma_8.detach()) < math.inf:
            raise ValueError(f"sigma_8 must be finite and positive, got {float(self.sigma_8)}")
        self.omega_b, self.h, self.n_s, self.t_cmb = omega_b, h, n_s, t_cmb
        self.omega_l = 1.0 - self.omega_m
        self._amplitude = None

    def __repr__(self) -> str:
        return f"Cosmology(omega_m={float(self.omega_m):.4f}, sigma_8={float(self.sigma_8):.4f})"

    # ------------------------------------------------------------------ power spectrum
    def transfer(self, k) -> torch.Tensor:
        """Eisenstein & Hu (1998) zero-baryon transfer function T(k); k: [...] in h/Mpc."""
        k = _as_tensor(k)
        om, h = self.omega_m, self.h
        omh2, obh2, fb = om * h**2, self.omega_b * h**2, self.omega_b / om
        theta2 = (self.t_cmb / 2.7) ** 2
        s = 44.5 * torch.log(9.83 / omh2) / math.sqrt(1.0 + 10.0 * obh2**0.75)  # Mpc
        alpha = 1.0 - 0.328 * torch.log(431.0 * omh2) * fb + 0.38 * torch.log(22.3 * omh2) * fb**2
        gamma = om * h * (alpha + (1.0 - alpha) / (1.0 + (0.43 * k * h * s) ** 4))
        q = k * theta2 / gamma
        l0 = torch.log(2.0 * math.e + 1.8 * q)
        c0 = 14.2 + 731.0 / (1.0 + 62.5 * q)
        return l0 / (l0 + c0 * q**2)

    def _unnormalised_power(self, k: torch.Tensor) -> torch.Tensor:
        return k**self.n_s * self.transfer(k) ** 2

    def _sigma2_unit(self, r: torch.Tensor, power) -> torch.Tensor:
        """sigma^2(R) = 1/(2 pi^2) int dk k^2 P(k) W^2(kR), on a ln k grid (trapezoid)."""
        lnk = _LNK.to(r.device)
        k = torch.exp(lnk)
        integrand = k**3 * power(k) * tophat_window(k * r[..., None]) ** 2
        return torch.trapezoid(integrand, lnk, dim=-1) / (2.0 * math.pi**2)

    @property
    def amplitude(self) -> torch.Tensor:
        """A in P(k) = A k^n_s T(k)^2, fixed by sigma_R(8 Mpc/h) = sigma_8."""
        if self._amplitude is None:
            s2 = self._sigma2_unit(torch.tensor(8.0, dtype=torch.float64), self._unnormalised_power)
            self._amplitude = self.sigma_8**2 / s2
        return self._amplitude

    def linear_power(self, k) -> torch.Tensor:
        """Linear matter power spectrum at z = 0; k: [...] h/Mpc -> P: [...] (Mpc/h)^3."""
        k = _as_tensor(k)
        return self.amplitude * self._unnormalised_power(k)

    def sigma_r(self, r) -> torch.Tensor:
        """rms linear overdensity in top-hat spheres of radius r at z = 0; r: [...] Mpc/h."""
        r = _as_tensor(r)
        return torch.sqrt(self._sigma2_unit(r, self.linear_power))

    # ------------------------------------------------------------------ background
    def efunc(self, a) -> torch.Tensor:
        """E(a) = H(a) / H0 = sqrt(Omega_m a^-3 + Omega_L); a: [...]."""
        a = _as_tensor(a)
        return torch.sqrt(self.omega_m * a**-3 + self.omega_l)

    def omega_m_a(self, a) -> torch.Tensor:
        """Omega_m(a) = Omega_m a^-3 / E(a)^2; a: [...]."""
        a = _as_tensor(a)
        return self.omega_m * a**-3 / self.efunc(a) ** 2

    def _growth_integral(self, a: torch.Tensor) -> torch.Tensor:
        """I(a) = int_0^a da' / (a' E(a'))^3, by Gauss-Legendre in u = sqrt(a'/a)."""
        u = _GL_X.to(a.device)
        w = _GL_W.to(a.device)
        ap = a[..., None] * u**2  # a' = a u^2, da' = 2 a u du
        integrand = 2.0 * a[..., None] * u * (ap * self.efunc(ap)) ** -3
        return (integrand * w).sum(-1)

    def _growth_unnormalised(self, a: torch.Tensor) -> torch.Tensor:
        return 2.5 * self.omega_m * self.efunc(a) * self._growth_integral(a)

    def growth_factor(self, a) -> torch.Tensor:
        """Linear growth factor D(a) of flat LCDM, normalised to D(1) = 1; a: [...] in (0, 1]."""
        a = _as_tensor(a)
        one = torch.ones((), dtype=torch.float64, device=a.device)
        return self._growth_unnormalised(a) / self._growth_unnormalised(one)

    def growth_derivative(self, a) -> torch.Tensor:
        """dD/da (D(1) = 1), from the closed-form derivative of D = 5/2 Om E I; a: [...]."""
        a = _as_tensor(a)
        one = torch.ones((), dtype=torch.float64, device=a.device)
        e = self.efunc(a)
        de = -1.5 * self.omega_m / (a**4 * e)
        d = 2.5 * self.omega_m * (de * self._growth_integral(a) + e / (a * e) ** 3)
        return d / self._growth_unnormalised(one)

    def growth_rate(self, a) -> torch.Tensor:
        """f = dln D / dln a; a: [...]."""
        a = _as_tensor(a)
        return a * self.growth_derivative(a) / self.growth_factor(a)

    def particle_mass(self, box_size: float, n_per_side: int) -> torch.Tensor:
        """Mass of one of n_per_side^3 particles in a box of side box_size Mpc/h, in Msun/h."""
        return self.omega_m * RHO_CRIT * (box_size / n_per_side) ** 3
