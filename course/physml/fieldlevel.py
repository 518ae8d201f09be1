"""Field-level (explicit) inference: a differentiable forward model from white noise and
theta = (Omega_m, sigma_8) to a noisy observed density field, its joint posterior over
(s, theta), the exact posterior of the linear case, and the summaries for the implicit
(NPE) route on the same simulator.

The latent variables are a real white-noise field s ``[n, n, n]`` (one N(0, 1) number per
cell: the *non-centred* parametrisation, in which the prior of every mode has unit scale
whatever theta is) and theta. The forward model f(s, theta) is

* ``"linear"``: delta = F^-1 (sqrt(lambda_k(theta)) F s), the Gaussian random field of
  :mod:`physml.grf` (lambda_k = P(k) / V_cell, the k = 0 mode at the fundamental's power);
* ``"lpt"``: the linear modes of :func:`physml.simulation.ics.linear_modes_from_noise` (the
  k = 0 mode and Nyquist planes of s removed), particles on the n^3 lattice displaced by
  the Zel'dovich (``lpt_order=1``) or second-order (2) Lagrangian displacement to the
  scale factor ``a``, painted with CIC onto the n^3 mesh: the density contrast of
  :func:`physml.simulation.mesh.overdensity`.

The data are d = f(s, theta) + noise, white Gaussian noise of standard deviation
``noise_std`` per cell (density-contrast units). The prior of theta is uniform over the
CAMELS box; HMC runs on the unbounded u = logit((theta - lo) / (hi - lo)), with the
Jacobian in the potential. Everything is float64.

For the linear model p(theta | d) is known in closed form: d is a Gaussian field whose
covariance eigenvalues are lambda_k(theta) + noise_std^2 (:func:`exact_log_likelihood`),
and at fixed theta the posterior of s is Gaussian with the Wiener-filter mean
(:func:`wiener_filter`). These are the checks of the field-level sampler.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from . import grf
from .cosmology import PRIOR_RANGES, Cosmology
from .flows import THETA_NAMES, cubic_spline, zoomed_posterior
from .simulation.ics import linear_modes_from_noise, lpt_displacements, second_order_growth
from .simulation.mesh import nyquist_mask, overdensity, power_spectrum

F64 = torch.float64
#: the forward models of :class:`ForwardModel`
KINDS = ("linear", "lpt")
_LO = torch.tensor([PRIOR_RANGES[k][0] for k in THETA_NAMES], dtype=F64)
_HI = torch.tensor([PRIOR_RANGES[k][1] for k in THETA_NAMES], dtype=F64)


# --------------------------------------------------------------------------- forward model
@dataclass(frozen=True)
class ForwardModel:
    """d = f(s, theta) + noise on an n^3 mesh of side ``box_size`` Mpc/h.

    kind: ``"linear"`` or ``"lpt"`` (module docstring); noise_std: per-cell standard
    deviation of the Gaussian noise (density contrast); lpt_order: 1 (Zel'dovich) or 2
    (2LPT, the default: :func:`physml.simulation.ics.lpt_displacements` computes both
    orders anyway); a: scale factor of the LPT displacement (growth D(a), D(1) = 1).
    """

    n: int = 16
    box_size: float = grf.GRF_BOX
    kind: str = "linear"
    noise_std: float = 1.0
    lpt_order: int = 2
    a: float = 1.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind: expected one of {KINDS}, got {self.kind!r}")
        if self.n < 2 or self.n & (self.n - 1):
            raise ValueError(f"n: expected a power of two >= 2, got {self.n}")
        if not self.noise_std > 0:
            raise ValueError(f"noise_std: expected > 0, got {self.noise_std}")
        if self.lpt_order not in (1, 2):
            raise ValueError(f"lpt_order: expected 1 or 2, got {self.lpt_order}")
        if not 0 < self.a <= 1:
            raise ValueError(f"a: expected a scale factor in (0, 1], got {self.a}")

    @property
    def dim(self) -> int:
        """Number of latent variables, n^3 white-noise values + 2 parameters."""
        return self.n**3 + 2

    def _check(self, s: Tensor, theta: Tensor) -> tuple[Tensor, Tensor, bool]:
        n = self.n
        single = s.dim() == 3
        s, theta = (s[None], theta[None]) if single else (s, theta)
        if s.dim() != 4 or tuple(s.shape[1:]) != (n, n, n):
            raise ValueError(
                f"s: expected [B, {n}, {n}, {n}] or [{n}, {n}, {n}], got {list(s.shape)}"
            )
        if theta.shape != (s.shape[0], 2):
            raise ValueError(
                f"theta: expected [{s.shape[0]}, 2] = (Omega_m, sigma_8), got {list(theta.shape)}"
            )
        return s.to(F64), theta.to(F64), single

    @property
    def power(self) -> SmoothPower:
        """The model's P(k | theta) on its mesh (:class:`SmoothPower`, built once per mesh)."""
        return _smooth_power(self.n, float(self.box_size))

    def eigenvalues(self, theta: Tensor) -> Tensor:
        """lambda_k ``[B, n, n, n // 2 + 1]`` (or ``[n, n, n // 2 + 1]`` for theta ``[2]``) of
        the linear field at theta ``[B, 2]`` (cell units), differentiable in theta."""
        theta = torch.as_tensor(theta, dtype=F64)
        lam = grf.eigenvalues(
            self.power.power_on_modes(theta.reshape(-1, 2)), self.n, self.box_size
        )
        return lam[0] if theta.dim() == 1 else lam

    def density(self, s: Tensor, theta: Tensor) -> Tensor:
        """f(s, theta): s ``[B, n, n, n]`` (or ``[n, n, n]``) white noise, theta ``[B, 2]``
        (or ``[2]``) -> density contrast of the same shape as s, float64, differentiable
        in both."""
        s, theta, single = self._check(s, theta)
        if self.kind == "linear":
            out = grf.colour(s, self.eigenvalues(theta))
        else:
            power = self.power.power_on_modes(theta)
            x = [self._positions(*args) for args in zip(s, theta, power, strict=True)]
            out = torch.stack([overdensity(xi, self.n, self.box_size) for xi in x])
        return out[0] if single else out

    def positions(self, s: Tensor, theta: Tensor) -> Tensor:
        """LPT particle positions ``[n^3, 3]`` Mpc/h (not wrapped into the box) for one s
        ``[n, n, n]`` and theta ``[2]``, in the order of :func:`lattice`."""
        s, theta, _ = self._check(s, theta)
        return self._positions(s[0], theta[0], self.power.power_on_modes(theta)[0])

    def _positions(self, s: Tensor, theta: Tensor, power: Tensor) -> Tensor:
        n, box = self.n, self.box_size
        cosmo = Cosmology(theta[0], theta[1])  # growth only; P(k) comes from the table
        w = torch.fft.rfftn(s, norm="ortho") * nyquist_mask(n, s.device)
        modes = linear_modes_from_noise(None, w, box, F64, power=power)
        psi1, psi2 = lpt_displacements(modes, box)
        a = torch.tensor(self.a, dtype=F64)
        x = lattice(n, box, s.device) + cosmo.growth_factor(a) * psi1
        if self.lpt_order == 2:
            x = x + second_order_growth(cosmo, a)[0] * psi2
        return x

    def simulate(self, theta: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """One mock per row of theta ``[B, 2]``: (s ``[B, n, n, n]``, d ``[B, n, n, n]``),
        float64 on the CPU, white noise and pixel noise from ``generator``."""
        theta = torch.as_tensor(theta, dtype=F64).reshape(-1, 2)
        shape = (len(theta), self.n, self.n, self.n)
        s = torch.randn(*shape, generator=generator, dtype=F64)
        noise = torch.randn(*shape, generator=generator, dtype=F64) * self.noise_std
        with torch.no_grad():
            return s, self.density(s, theta) + noise

    def log_likelihood(self, d: Tensor, s: Tensor, theta: Tensor) -> Tensor:
        """log p(d | s, theta) in nats, ``[B]`` (or 0-d); d, s ``[B, n, n, n]``."""
        r = (d.to(F64) - self.density(s, theta)) / self.noise_std
        n3 = self.n**3
        return -0.5 * (r**2).sum((-3, -2, -1)) - n3 * math.log(
            self.noise_std * math.sqrt(2 * math.pi)
        )


class SmoothPower:
    """P(k | Omega_m, sigma_8) on the rfft modes of an n^3 mesh, fast and smooth in theta.

    The tabulation of :class:`physml.grf.PowerTable` (ln P(k | Omega_m, 1) at 201 values of
    Omega_m over the prior range, sigma_8 exact as sigma_8^2), interpolated in Omega_m with
    a Catmull-Rom cubic (:func:`physml.flows.cubic_spline`) rather than linearly: its first
    derivative is continuous, which the energy conservation of HMC's leapfrog needs (a
    linear interpolation has a kink at every node). One batched evaluation for all chains
    replaces a sigma_8 integral per chain and call. n: cells per side; box_size: Mpc/h.
    """

    def __init__(self, n: int, box_size: float, n_omega: int = 201):
        self.table = grf.PowerTable(n, box_size, n_omega)

    def log_power(self, theta: Tensor) -> Tensor:
        """ln P on the distinct |k| of the mesh (``table.k``), ``[B, K]``; theta ``[B, 2]``
        inside the prior box (differentiable)."""
        t = self.table
        lo, hi = float(t.omegas[0]), float(t.omegas[-1])
        u = (theta[:, 0].to(F64) - lo) / (hi - lo) * (len(t.omegas) - 1)
        return cubic_spline(u, t.log_p.T).T + 2 * torch.log(theta[:, 1].to(F64)).unsqueeze(-1)

    def power_on_modes(self, theta: Tensor) -> Tensor:
        """P(|k|) (Mpc/h)^3 on the rfft modes, ``[B, n, n, n // 2 + 1]``; theta ``[B, 2]``
        (the k = 0 mode at the fundamental's power, as :func:`physml.grf.kmag`)."""
        return torch.exp(self.log_power(theta))[:, self.table.inverse]


@functools.lru_cache(maxsize=8)
def _smooth_power(n: int, box_size: float) -> SmoothPower:
    return SmoothPower(n, box_size)


def lattice(n: int, box_size: float, device=None) -> Tensor:
    """Lagrangian positions q = (i, j, l) box_size / n of the n^3 particles, ``[n^3, 3]``
    float64 Mpc/h, in the order of :func:`physml.simulation.ics.lpt_displacements`."""
    i = torch.arange(n, device=device, dtype=F64) * (box_size / n)
    return torch.stack(torch.meshgrid(i, i, i, indexing="ij"), -1).view(-1, 3)


# --------------------------------------------------------------------------- posterior
def theta_to_u(theta: Tensor) -> Tensor:
    """(Omega_m, sigma_8) inside the prior box ``[..., 2]`` -> unbounded u = logit of theta
    scaled to [0, 1]."""
    t = (theta.to(F64) - _LO.to(theta.device)) / (_HI - _LO).to(theta.device)
    return torch.log(t) - torch.log1p(-t)


def u_to_theta(u: Tensor) -> Tensor:
    """Inverse of :func:`theta_to_u`, ``[..., 2]``."""
    return _LO.to(u.device) + (_HI - _LO).to(u.device) * torch.sigmoid(u)


class FieldPosterior:
    """-log p(s, theta | d) + const as an HMC potential over z = (s flattened, u).

    z: ``[C, n^3 + 2]`` (or ``[C, n^3]`` when ``theta_fixed`` ``[2]`` is given: the
    posterior of s at that theta). U(z) = |s|^2 / 2 + |d - f(s, theta)|^2 / (2 sigma^2)
    - log |d theta / d u| (flat prior on theta over the CAMELS box).
    d: ``[n, n, n]`` observed field.
    """

    def __init__(self, model: ForwardModel, d: Tensor, theta_fixed: Tensor | None = None):
        n = model.n
        if tuple(d.shape) != (n, n, n):
            raise ValueError(f"d: expected [{n}, {n}, {n}] (the model's mesh), got {list(d.shape)}")
        self.model, self.d = model, d.to(F64)
        self.theta_fixed = None if theta_fixed is None else torch.as_tensor(theta_fixed, dtype=F64)
        self.dim = n**3 + (2 if theta_fixed is None else 0)

    def split(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """z ``[C, dim]`` -> (s ``[C, n, n, n]``, theta ``[C, 2]``)."""
        n = self.model.n
        s = z[:, : n**3].reshape(-1, n, n, n)
        if self.theta_fixed is not None:
            return s, self.theta_fixed.to(z).expand(len(z), 2)
        return s, u_to_theta(z[:, n**3 :])

    def pack(self, s: Tensor, theta: Tensor | None = None) -> Tensor:
        """(s ``[C, n, n, n]``, theta ``[C, 2]``) -> z ``[C, dim]``."""
        z = s.reshape(len(s), -1).to(F64)
        if self.theta_fixed is None:
            z = torch.cat([z, theta_to_u(theta)], -1)
        return z

    def __call__(self, z: Tensor) -> Tensor:
        single = z.dim() == 1
        z = z[None] if single else z
        s, theta = self.split(z)
        u = -self.model.log_likelihood(self.d, s, theta) + 0.5 * (s**2).sum((-3, -2, -1))
        if self.theta_fixed is None:
            v = z[:, -2:]  # log |d theta / d u| = sum log(width sigma(v) (1 - sigma(v)))
            u = u - (torch.nn.functional.logsigmoid(v) + torch.nn.functional.logsigmoid(-v)).sum(-1)
        return u[0] if single else u

    def initial_points(self, n_chains: int, generator: torch.Generator) -> Tensor:
        """Starting points ``[n_chains, dim]``: s drawn from its prior, theta from the middle
        half of the prior box (over-dispersed with respect to the posterior, as R-hat needs)."""
        n = self.model.n
        s = torch.randn(n_chains, n, n, n, generator=generator, dtype=F64)
        t = 0.25 + 0.5 * torch.rand(n_chains, 2, generator=generator, dtype=F64)
        return self.pack(s, _LO + (_HI - _LO) * t)


# --------------------------------------------------------------------------- exact (linear)
def exact_log_likelihood(model: ForwardModel, d: Tensor, theta: Tensor, chunk: int = 128) -> Tensor:
    """log p(d | theta) of the linear model, s integrated out: a Gaussian field with
    eigenvalues lambda_k(theta) + noise_std^2 (:func:`physml.grf.log_likelihood_eigen`).
    d ``[n, n, n]``, theta ``[G, 2]`` -> ``[G]`` nats (P(k) from the model's
    :class:`SmoothPower`, as in the sampler)."""
    if model.kind != "linear":
        raise ValueError(
            f"exact_log_likelihood: exists for the linear model only, got {model.kind!r}"
        )
    parts = []
    for t in theta.to(F64).split(chunk):
        lam = model.eigenvalues(t) + model.noise_std**2
        parts.append(grf.log_likelihood_eigen(d.to(F64).expand(len(t), -1, -1, -1), lam))
    return torch.cat(parts)


def exact_posterior(model: ForwardModel, d: Tensor) -> dict:
    """p(theta | d) of the linear model under the flat prior, on a grid zoomed onto the
    mode (:func:`physml.flows.zoomed_posterior`): dict with grid, post, mean ``[2]`` and
    std ``[2]``."""
    return zoomed_posterior(lambda t: exact_log_likelihood(model, d, t))


def wiener_filter(model: ForwardModel, d: Tensor, theta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Posterior of s given d at fixed theta ``[2]``, linear model: per rfft mode of s
    (``norm="ortho"``) the mean sqrt(lambda) / (lambda + N) d_k and the variance
    N / (lambda + N), N = noise_std^2. Returns (mean s ``[n, n, n]``, variance
    ``[n, n, n // 2 + 1]``, signal-to-noise lambda / N ``[n, n, n // 2 + 1]``)."""
    if model.kind != "linear":
        raise ValueError(f"wiener_filter: exact for the linear model only, got {model.kind!r}")
    lam = model.eigenvalues(torch.as_tensor(theta, dtype=F64))
    noise = model.noise_std**2
    n = model.n
    dk = torch.fft.rfftn(d.to(F64))
    mean = torch.fft.irfftn(dk * lam.sqrt() / (lam + noise), s=(n, n, n))
    return mean, noise / (lam + noise), lam / noise


# --------------------------------------------------------------------------- sampling
@dataclass
class FieldLevelRun:
    """A field-level HMC run. theta: ``[C, S, 2]`` draws of (Omega_m, sigma_8); pixels:
    ``[C, S, 4]`` draws of four cells of s (diagnostics of the modes); s_mean, s_std:
    ``[n, n, n]`` posterior mean and standard deviation of s; s_mean_k: ``[n, n, n//2+1]``
    posterior mean of the rfft modes of s (``norm="ortho"``); gradient_evaluations: of
    the potential, summed over chains; seconds: wall time; accept_rate, divergences:
    ``[C]``; step_size: after warm-up."""

    theta: Tensor
    pixels: Tensor
    s_mean: Tensor
    s_std: Tensor
    s_mean_k: Tensor
    gradient_evaluations: int
    seconds: float
    accept_rate: Tensor
    divergences: Tensor
    step_size: float


#: cells of s whose chains :class:`FieldLevelRun` keeps (as fractions of n per axis)
_TRACKED = ((0, 0, 0), (0.25, 0.5, 0.75), (0.5, 0.5, 0.5), (0.75, 0.25, 0.0))


def sample_field_posterior(
    model: ForwardModel,
    d: Tensor,
    n_chains: int = 4,
    n_samples: int = 1000,
    n_steps: int = 40,
    windows=(50, 100, 200),
    n_warmup: int = 100,
    seed: int = 0,
    progress: bool = False,
) -> FieldLevelRun:
    """Field-level HMC over (s, theta) given d ``[n, n, n]``: :func:`physml.hmc.hmc_adapted`
    (a diagonal mass matrix from doubling warm-up windows) on :class:`FieldPosterior`,
    chains started from :meth:`FieldPosterior.initial_points`; trajectories of 1 to
    ``n_steps`` leapfrog steps. Returns a :class:`FieldLevelRun`."""
    from .hmc import CountingPotential, hmc_adapted

    post = FieldPosterior(model, d)
    gen = torch.Generator().manual_seed(seed)
    counted = CountingPotential(post)
    res = hmc_adapted(
        counted,
        post.initial_points(n_chains, gen),
        n_samples,
        windows=windows,
        n_warmup=n_warmup,
        n_steps=n_steps,
        seed=seed,
        progress=progress,
    )
    s, theta = post.split(res.samples.reshape(-1, post.dim))
    n = model.n
    cells = [tuple(int(f * n) for f in c) for c in _TRACKED]
    pixels = torch.stack([s[:, i, j, k] for i, j, k in cells], -1)
    return FieldLevelRun(
        theta=theta.reshape(n_chains, n_samples, 2),
        pixels=pixels.reshape(n_chains, n_samples, len(cells)),
        s_mean=s.mean(0),
        s_std=s.std(0),
        s_mean_k=torch.fft.rfftn(s, dim=(-3, -2, -1), norm="ortho").mean(0),
        gradient_evaluations=counted.count,
        seconds=res.seconds,
        accept_rate=res.accept_rate,
        divergences=res.divergences,
        step_size=res.step_size,
    )


#: the bars of the Gaussian check: |mean - exact| / exact std, |std / exact std - 1|
MEAN_BAR, STD_BAR = 0.2, 0.10


def compare_with_exact(theta_samples: Tensor, exact: dict) -> dict:
    """Sampled theta ``[C, S, 2]`` against the exact posterior (a :func:`exact_posterior`
    dict), per parameter ``[2]``: shift = (mean - exact mean) / exact std, its Monte Carlo
    error mcse_shift; ratio = std / exact std, its relative Monte Carlo error
    1 / sqrt(2 ESS); ``passed`` when |shift| + 2 mcse_shift <= :data:`MEAN_BAR` and
    |ratio - 1| + 2 ratio_error <= :data:`STD_BAR` for both (the bars hold with the Monte
    Carlo error added, not subtracted); ess, rhat."""
    from .hmc import summarize

    summ = summarize(theta_samples)
    sd = exact["std"].numpy()
    shift = (summ["mean"] - exact["mean"].numpy()) / sd
    mcse = summ["mcse"] / sd
    ratio = summ["sd"] / sd
    ratio_err = 1.0 / np.sqrt(2.0 * summ["ess"])
    ok = (np.abs(shift) + 2 * mcse <= MEAN_BAR) & (np.abs(ratio - 1) + 2 * ratio_err <= STD_BAR)
    return {
        "shift": shift,
        "mcse_shift": mcse,
        "ratio": ratio,
        "ratio_error": ratio_err,
        "ess": summ["ess"],
        "rhat": summ["rhat"],
        "passed": bool(ok.all()),
    }


# --------------------------------------------------------------------------- summaries (NPE)
def power_summary(d: Tensor, box_size: float, n_bins: int = 12) -> Tensor:
    """log of the binned power spectrum of each field, ``[B, n_bins]`` float32; d
    ``[B, n, n, n]``. Linear bins of :func:`physml.simulation.mesh.power_spectrum` up to the
    corner of the Fourier cube, sqrt(3) times the Nyquist frequency, so that every mode
    counts (stopping at the Nyquist frequency drops half of them). For a Gaussian field
    with white noise the power in |k| shells is sufficient; these bins merge neighbouring
    shells."""
    n = d.shape[-1]
    k_max = math.sqrt(3.0) * math.pi * n / box_size * (1 + 1e-9)
    rows = [torch.log(power_spectrum(x, box_size, n_bins=n_bins, k_max=k_max)[1]) for x in d]
    lengths = {len(r) for r in rows}
    if len(lengths) != 1 or lengths.pop() != n_bins:
        raise ValueError(f"n_bins: {n_bins} bins leave some empty on an {n}^3 mesh; use fewer")
    return torch.stack(rows).float()


class FieldEmbedding(nn.Module):
    """A small 3D CNN summary of a field for NPE: ``[B, n, n, n]`` -> ``[B, context]``.

    Three periodic (circular-padded) 3x3x3 convolutions with SiLU, the last two with
    stride 2, then the mean and the standard deviation of each channel over the mesh (a
    translation-invariant readout) and a linear layer. The input is divided by ``scale``.
    """

    def __init__(self, context: int = 16, channels: int = 16, scale: float = 1.0):
        super().__init__()
        c = channels

        def conv(i, o, stride):
            return nn.Conv3d(i, o, 3, stride=stride, padding=1, padding_mode="circular")

        self.net = nn.Sequential(conv(1, c, 1), nn.SiLU(), conv(c, c, 2), nn.SiLU(), conv(c, c, 2))
        self.head = nn.Linear(2 * c, context)
        self.scale = float(scale)

    def forward(self, x: Tensor) -> Tensor:
        h = self.net((x / self.scale).unsqueeze(1).float())
        h = torch.cat([h.mean((-3, -2, -1)), h.std((-3, -2, -1))], -1)
        return self.head(h)


class Standardize(nn.Module):
    """(x - mean) / std with fixed buffers ``[F]`` (the training set's), x ``[B, F]``."""

    def __init__(self, mean: Tensor, std: Tensor):
        super().__init__()
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float())

    def forward(self, x: Tensor) -> Tensor:
        return (x.float() - self.mean) / self.std


def simulate_dataset(
    model: ForwardModel, n_sims: int, seed: int, n_bins: int = 12, keep_fields: bool = False
) -> dict:
    """Simulated pairs for NPE: theta ``[M, 2]`` from the flat prior, the power summary of
    each mock d (:func:`power_summary`, ``[M, n_bins]``) and, with ``keep_fields``, the mocks
    themselves ``[M, n, n, n]`` float32. Drawn in chunks of 500 (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    theta = grf.sample_prior(n_sims, gen)
    summaries, fields = [], []
    for t in theta.split(500):
        _, d = model.simulate(t, gen)
        summaries.append(power_summary(d, model.box_size, n_bins))
        if keep_fields:
            fields.append(d.float())
    out = {"theta": theta, "summary": torch.cat(summaries)}
    if keep_fields:
        out["fields"] = torch.cat(fields)
    return out


def make_npe(kind: str, train: dict, context: int = 16):
    """A :class:`physml.npe.NPE` for the field-level mocks: ``kind="power"``, an MLP of the
    standardised power summary (:class:`physml.npe.SummaryEmbedding` after
    :class:`Standardize` with the training set's mean and std); ``"cnn"``, the
    :class:`FieldEmbedding` of the field itself (scaled by the training fields' std).
    train: a :func:`simulate_dataset` dict (with ``fields`` for ``"cnn"``)."""
    from .npe import NPE, SummaryEmbedding

    if kind == "power":
        x = train["summary"]
        emb = nn.Sequential(
            Standardize(x.mean(0), x.std(0) + 1e-8), SummaryEmbedding(x.shape[1], context)
        )
    elif kind == "cnn":
        emb = FieldEmbedding(context, scale=float(train["fields"].std()))
    else:
        raise ValueError(f"kind: expected 'power' or 'cnn', got {kind!r}")
    return NPE(emb, context=context)


def npe_inputs(kind: str, data: dict) -> Tensor:
    """The inputs of a :func:`make_npe` model of ``kind`` from a :func:`simulate_dataset`
    dict: the summaries ``[M, F]`` or the fields ``[M, n, n, n]``."""
    return data["summary"] if kind == "power" else data["fields"]


def train_npe(
    model: nn.Module,
    train: tuple[Tensor, Tensor],
    val: tuple[Tensor, Tensor],
    epochs: int,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    progress: bool = False,
) -> list[float]:
    """Fits a :class:`physml.npe.NPE` on (x ``[M, ...]``, theta ``[M, 2]``) pairs held in
    memory: AdamW with a cosine decay, the parameters of the epoch with the lowest
    validation -log q kept. Returns the validation loss per epoch (nats)."""
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x, theta = train
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * max(1, len(x) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    best, best_state, history = math.inf, None, []
    for _ in tqdm(range(epochs), desc="NPE", disable=not progress, mininterval=2.0):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        for idx in perm[: len(x) // batch_size * batch_size].view(-1, batch_size):
            loss = -model.log_prob((x[idx], theta[idx].float())).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            v = float(
                -torch.cat(
                    [
                        model.log_prob((a, b.float()))
                        for a, b in zip(val[0].split(512), val[1].split(512), strict=True)
                    ]
                ).mean()
            )
        history.append(v)
        if v < best:
            best, best_state = v, {k: t.detach().clone() for k, t in model.state_dict().items()}
    model.load_state_dict(best_state)
    model.eval()
    return history


@torch.no_grad()
def npe_samples(model: nn.Module, x: Tensor, n_samples: int = 1000) -> np.ndarray:
    """Posterior samples ``[n_samples, B, 2]`` (Omega_m, sigma_8) of an NPE for inputs x
    ``[B, ...]`` (in chunks; float64 numpy, as :meth:`physml.npe.NPE.sample`)."""
    from .npe import unit_to_theta

    model.eval()
    out = [
        unit_to_theta(torch.tanh(model.flow(model.embedding(c)).sample((n_samples,))))
        for c in x.split(256)
    ]
    return torch.cat(out, 1).double().numpy()


# --------------------------------------------------------------------------- comparisons
def credible_area(samples: np.ndarray, level: float = 0.68) -> float:
    """Area of the ``level`` credible ellipse of 2-D samples ``[S, 2]`` under a Gaussian
    approximation: pi chi2_2(level) sqrt(det Cov) (units of Omega_m x sigma_8)."""
    cov = np.cov(np.asarray(samples, dtype=np.float64).T)
    return float(math.pi * -2.0 * math.log(1.0 - level) * math.sqrt(max(np.linalg.det(cov), 0.0)))


def gaussian_ellipse(samples: np.ndarray, level: float = 0.68, n_points: int = 100) -> np.ndarray:
    """The ``level`` credible ellipse of 2-D samples ``[S, 2]`` under a Gaussian
    approximation (the one whose area :func:`credible_area` gives), ``[n_points, 2]``."""
    samples = np.asarray(samples, dtype=np.float64)
    cov = np.cov(samples.T)
    r = math.sqrt(-2.0 * math.log(1.0 - level))
    phi = np.linspace(0, 2 * np.pi, n_points)
    circle = np.stack([np.cos(phi), np.sin(phi)], -1) * r
    return samples.mean(0) + circle @ np.linalg.cholesky(cov).T


# --------------------------------------------------------------------------- self-checks
def check_wiener_filter(yours: Tensor, model: ForwardModel, d: Tensor, theta) -> tuple[bool, str]:
    """Exercise self-check: is ``yours`` ``[n, n, n]`` the posterior mean of the white noise s
    given d at theta (linear model)? Returns ``(passed, one line)``; on a failure the line
    names the likely mistake (the mean of delta instead of s, the noise or the square root
    left out) or the mode where the two differ most."""
    expected, _, _ = wiener_filter(model, d, theta)
    yours = torch.as_tensor(yours, dtype=F64)
    if tuple(yours.shape) != tuple(expected.shape):
        return (
            False,
            f"shape {list(yours.shape)}, expected {list(expected.shape)} (the white noise s)",
        )
    if torch.allclose(yours, expected, rtol=1e-6, atol=1e-8 * float(expected.abs().max())):
        return True, "matches the Wiener filter sqrt(lambda) / (lambda + N) d_k"
    lam = model.eigenvalues(torch.as_tensor(theta, dtype=F64))
    noise = model.noise_std**2
    dk = torch.fft.rfftn(d.to(F64))
    n = model.n
    of_delta = "you computed the mean of delta, lambda / (lambda + N) d_k, not of s: "
    no_noise = "you computed d_k / sqrt(lambda): the noise power N is missing from the "
    guesses = {
        of_delta + "divide by sqrt(lambda)": lam / (lam + noise),
        no_noise + "denominator": lam.rsqrt(),
    }
    for why, filt in guesses.items():
        guess = torch.fft.irfftn(dk * filt, s=(n, n, n))
        if torch.allclose(yours, guess, rtol=1e-6, atol=1e-8 * float(guess.abs().max())):
            return False, why
    yk, ek = torch.fft.rfftn(yours, norm="ortho"), torch.fft.rfftn(expected, norm="ortho")
    ratio = (yk.abs() / ek.abs().clamp_min(1e-300)).reshape(-1)
    worst = int((yk - ek).abs().reshape(-1).argmax())
    where = tuple(int(i) for i in np.unravel_index(worst, yk.shape))
    return False, (
        f"differs from sqrt(lambda) / (lambda + N) d_k: largest gap at rfft mode {where} "
        f"(|yours| / |expected| = {float(ratio[worst]):.3g}, signal-to-noise lambda / N there "
        f"{float((lam / noise).reshape(-1)[worst]):.3g})"
    )


def check_marginal_likelihood(yours, model: ForwardModel, d: Tensor) -> tuple[bool, str]:
    """Exercise self-check: is ``yours`` (theta ``[G, 2]`` -> log p(d | theta) ``[G]``) the
    likelihood of the linear model with s integrated out? It is compared with
    :func:`exact_log_likelihood` at 25 points over the prior box; a constant offset passes
    (the posterior does not see it). Returns ``(passed, one line)``; a failure names the
    likely mistake (the noise power left out, every rfft mode counted once) or the worst
    point."""
    g = torch.linspace(0.0, 1.0, 5, dtype=F64)
    t = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    theta = _LO + (_HI - _LO) * (0.05 + 0.9 * t)
    expected = exact_log_likelihood(model, d, theta)
    try:
        got = torch.as_tensor(yours(theta), dtype=F64).detach().reshape(-1)
    except Exception as err:  # the student's function, whatever it raises
        return False, f"calling it on theta [25, 2] raised {type(err).__name__}: {err}"
    if got.shape != expected.shape:
        return False, f"returned shape {list(got.shape)} for theta [25, 2], expected [25]"

    def same_up_to_constant(a, b):
        diff = a - b
        return float((diff - diff.mean()).abs().max()) < 1e-6 * (1.0 + float(b.abs().max()))

    if same_up_to_constant(got, expected):
        gap = float((got - expected).mean())
        return True, "matches log N(d; 0, lambda + N)" + (
            f" up to a constant {gap:.3g} nats" if abs(gap) > 1e-6 else ""
        )
    lam = model.eigenvalues(theta)
    dd = d.to(F64).expand(len(theta), -1, -1, -1)
    if same_up_to_constant(got, grf.log_likelihood_eigen(dd, lam)):
        return (
            False,
            "this is the likelihood without noise: the eigenvalues are lambda_k + noise_std^2",
        )
    dk2 = torch.fft.rfftn(dd, dim=(-3, -2, -1)).abs() ** 2
    lam_n = lam + model.noise_std**2
    once = -0.5 * (dk2 / lam_n / model.n**3 + torch.log(lam_n)).sum((-3, -2, -1))
    if same_up_to_constant(got, once):
        return (
            False,
            "every rfft mode counted once: modes with 0 < k_z < n/2 stand for two (weight 2)",
        )
    diff = got - expected
    diff = diff - diff.mean()
    i = int(diff.abs().argmax())
    return False, (
        f"differs from log N(d; 0, lambda + N) by {float(diff[i]):.4g} nats (after removing "
        f"the mean offset) at theta = ({float(theta[i, 0]):.3f}, {float(theta[i, 1]):.3f})"
    )
