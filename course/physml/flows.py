"""A Fourier-space normalizing flow for periodic 3D fields (TRENF, Dai & Seljak 2022),
unconditional and conditional on the cosmological parameters.

One layer maps a field ``x`` ``[B, n, n, n]`` to

    y = psi( F^-1 T(|k|) F x ),

a convolution with an isotropic filter ``T`` (a cubic spline of log |k| through
``n_knots`` learned values of log T, knots uniform in log k from the fundamental to the
corner of the rfft cube) followed by a pointwise monotone rational-quadratic spline ``psi``
(Durkan et al. 2019; ``n_bins`` bins on [-bound, bound], identity outside). Both pieces
are invertible and their log-determinants are exact:

    log |det dy/dx| = sum_k log T(|k|)  (full FFT grid: rfft planes 0 < k_z < n/2 count
                                          twice)  +  sum_cells log psi'(u).

The flow maps data to a standard normal latent field z, so
``log p(x) = log N(z; 0, I) + sum_layers log |det|``. For a Gaussian random field with
spectrum P(k), the optimum is T(k) ~ 1 / sqrt(P(k)) and psi linear (the flow then
reproduces the analytic likelihood of :mod:`physml.grf`).

:class:`ConditionalFourierFlow` makes every layer's spline values a function of
theta = (Omega_m, sigma_8) through a small MLP, so that it models p(x | theta).
Tensors follow the device of their inputs; the flows work in the dtype of their
parameters (float64 by default: log-likelihoods of 32^3 fields are ~1e5 nats).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from ._checks import _check_count, _check_finite_values, _check_real, _check_shape
from .cosmology import PRIOR_RANGES
from .errors import TrainingDiverged
from .grf import kmag, mode_weights

#: order of the parameters everywhere in this module
THETA_NAMES = ("Omega_m", "sigma_8")
_MIN_BIN = 1e-3
_MIN_DERIV = 1e-3


# --------------------------------------------------------------------------- 1-D splines
def cubic_spline(u: Tensor, values: Tensor) -> Tensor:
    """Catmull-Rom cubic spline through ``values`` ``[B, K]`` at the knots 0, 1, ..., K-1,
    evaluated at ``u`` ``[M]`` (clamped to [0, K-1]). Returns ``[B, M]``. K >= 2.
    (Shapes are checked, not values: this is the inner loop of the flows.)"""
    _check_shape(u, "u", "cubic_spline", (None,), "[M]")
    _check_shape(values, "values", "cubic_spline", (None, None), "[B, K]")
    if values.shape[-1] < 2:
        raise ValueError(f"cubic_spline: values must have K >= 2 knots, got {values.shape[-1]}")
    k = values.shape[-1]
    u = u.clamp(0.0, k - 1.0)
    i = u.floor().long().clamp(max=k - 2)
    t = u - i
    # end tangents by one-sided differences, interior by central differences
    pad = torch.cat(
        [2 * values[:, :1] - values[:, 1:2], values, 2 * values[:, -1:] - values[:, -2:-1]], -1
    )
    p0, p1, p2, p3 = (pad[:, i + j] for j in range(4))
    m1, m2 = 0.5 * (p2 - p0), 0.5 * (p3 - p1)
    t2, t3 = t * t, t * t * t
    return ((2 * t3 - 3 * t2 + 1) * p1 + (t3 - 2 * t2 + t) * m1 + (-2 * t3 + 3 * t2) * p2) + (
        t3 - t2
    ) * m2


def n_rq_params(n_bins: int) -> int:
    """Number of unconstrained parameters of a rational-quadratic spline with n_bins bins."""
    _check_count(n_bins, "n_bins", "n_rq_params")
    return 3 * n_bins - 1


def rq_spline(x: Tensor, params: Tensor, bound: float) -> tuple[Tensor, Tensor]:
    """Monotone rational-quadratic spline (Durkan et al. 2019, eqs. 4-6) on [-bound, bound],
    identity outside, applied elementwise.

    x: ``[B, M]``; params: ``[B, 3 n_bins - 1]`` unconstrained (widths, heights, interior
    derivatives; all zero gives the identity). Returns (y ``[B, M]``, log dy/dx ``[B, M]``).
    (Shapes are checked, not values: this is the inner loop of the flows.)
    """
    _check_shape(x, "x", "rq_spline", (None, None), "[B, M]")
    _check_shape(params, "params", "rq_spline", (x.shape[0], None), f"[{x.shape[0]}, 3 n_bins - 1]")
    if (params.shape[-1] + 1) % 3:
        raise ValueError(
            f"rq_spline: params must have 3 n_bins - 1 columns, got {params.shape[-1]}"
        )
    _check_real(bound, "bound", "rq_spline", low=0)
    nb = (params.shape[-1] + 1) // 3
    w_raw, h_raw, d_raw = params[:, :nb], params[:, nb : 2 * nb], params[:, 2 * nb :]
    widths = _MIN_BIN + (1 - _MIN_BIN * nb) * torch.softmax(w_raw, -1)
    heights = _MIN_BIN + (1 - _MIN_BIN * nb) * torch.softmax(h_raw, -1)
    # softplus(x + log(e - 1)) = 1 at x = 0, so zero parameters give unit slopes
    d_int = _MIN_DERIV + F.softplus(d_raw + math.log(math.e - 1.0)) * (1 - _MIN_DERIV)
    ones = torch.ones_like(d_int[:, :1])
    derivs = torch.cat([ones, d_int, ones], -1)
    xk = F.pad(torch.cumsum(widths, -1), (1, 0)) * 2 * bound - bound
    yk = F.pad(torch.cumsum(heights, -1), (1, 0)) * 2 * bound - bound
    xk[:, -1], yk[:, -1] = bound, bound
    inside = (x > -bound) & (x < bound)
    xc = x.clamp(-bound, bound)
    idx = (torch.searchsorted(xk[:, 1:-1].contiguous(), xc.contiguous(), right=True)).clamp(
        0, nb - 1
    )
    x0, x1 = xk.gather(-1, idx), xk.gather(-1, idx + 1)
    y0, y1 = yk.gather(-1, idx), yk.gather(-1, idx + 1)
    d0, d1 = derivs.gather(-1, idx), derivs.gather(-1, idx + 1)
    wb, hb = x1 - x0, y1 - y0
    s = hb / wb
    xi = (xc - x0) / wb
    om = xi * (1 - xi)
    denom = s + (d1 + d0 - 2 * s) * om
    y_in = y0 + hb * (s * xi * xi + d0 * om) / denom
    dy = s * s * (d1 * xi * xi + 2 * s * om + d0 * (1 - xi) ** 2) / denom**2
    y = torch.where(inside, y_in, x)
    logd = torch.where(inside, torch.log(dy), torch.zeros_like(x))
    return y, logd


# --------------------------------------------------------------------------- the flow
class FourierFlow(nn.Module):
    """Stack of Fourier-space flow layers [rFFT, x T(|k|), inverse FFT, psi pointwise].

    Args:
        n: cells per side of the fields (even).
        box_size: side of the periodic box, Mpc/h.
        n_layers: number of layers.
        n_knots: spline knots of log T(|k|) per layer.
        n_bins: bins of the monotone spline psi per layer.
        bound: psi is a spline on [-bound, bound] and the identity outside.
        dtype: dtype of the parameters and of the computation.
    """

    def __init__(
        self,
        n: int,
        box_size: float,
        n_layers: int = 1,
        n_knots: int = 12,
        n_bins: int = 8,
        bound: float = 4.0,
        dtype=torch.float64,
    ):
        super().__init__()
        where = type(self).__name__
        n = _check_count(n, "n", where, minimum=2)
        if n % 2:
            raise ValueError(f"{where}: n: expected an even number of cells per side, got {n}")
        _check_real(box_size, "box_size", where, low=0)
        _check_count(n_layers, "n_layers", where)
        _check_count(n_knots, "n_knots", where, minimum=2)
        _check_count(n_bins, "n_bins", where)
        _check_real(bound, "bound", where, low=0)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"{where}: dtype must be a floating torch dtype, got {dtype!r}")
        self.n, self.box_size, self.n_layers = n, float(box_size), n_layers
        self.n_knots, self.n_bins, self.bound = n_knots, n_bins, float(bound)
        k = kmag(n, box_size, dtype=dtype)
        lk = torch.log(k)
        lo, hi = math.log(2 * math.pi / box_size), math.log(math.sqrt(3) * math.pi * n / box_size)
        self.register_buffer("log_k_lo", torch.tensor(lo, dtype=dtype))
        self.register_buffer("log_k_hi", torch.tensor(hi, dtype=dtype))
        # knot coordinate of every rfft mode, flattened [n * n * (n//2+1)]
        self.register_buffer("u_modes", ((lk - lo) / (hi - lo) * (n_knots - 1)).reshape(-1))
        self.register_buffer("weights", mode_weights(n, dtype=dtype).expand_as(k).reshape(-1))
        self.n_psi = n_rq_params(n_bins)
        self.params_per_layer = n_knots + self.n_psi
        self.base = nn.Parameter(torch.zeros(n_layers, self.params_per_layer, dtype=dtype))

    # the parameters of every layer for a batch: [B, n_layers, params_per_layer]
    def layer_params(self, batch: int, theta: Tensor | None = None) -> Tensor:
        return self.base.expand(batch, -1, -1)

    def _check(self, x: Tensor, where: str) -> None:
        n = self.n
        if not torch.is_tensor(x) or x.dim() != 4 or tuple(x.shape[1:]) != (n, n, n):
            shape = list(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"{where}: x: expected shape [B, {n}, {n}, {n}], got {shape}")
        _check_finite_values(x, "x", where)

    def _check_condition(self, theta: Tensor | None, where: str) -> None:
        """theta for :meth:`forward` and :meth:`log_prob`; ignored by the unconditional flow."""

    def layer(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """One layer: x ``[B, n, n, n]``, params ``[B, params_per_layer]`` ->
        (y ``[B, n, n, n]``, log |det dy/dx| ``[B]``)."""
        n, b = self.n, x.shape[0]
        log_t = cubic_spline(self.u_modes, params[:, : self.n_knots])  # [B, modes]
        xk = torch.fft.rfftn(x, dim=(-3, -2, -1))
        u = torch.fft.irfftn(xk * torch.exp(log_t).view(b, n, n, n // 2 + 1), s=(n, n, n))
        y, logd = rq_spline(u.reshape(b, -1), params[:, self.n_knots :], self.bound)
        logdet = (self.weights * log_t).sum(-1) + logd.sum(-1)
        return y.view(b, n, n, n), logdet

    def forward(self, x: Tensor, theta: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Data to latent: x ``[B, n, n, n]`` -> (z ``[B, n, n, n]``, log |det| ``[B]``).
        x (and theta) are checked once here; the layers do not check again."""
        where = f"{type(self).__name__}.forward"
        self._check(x, where)
        self._check_condition(theta, where)
        return self._forward(x, theta)

    def _forward(self, x: Tensor, theta: Tensor | None) -> tuple[Tensor, Tensor]:
        x = x.to(self.base.dtype)
        params = self.layer_params(x.shape[0], theta)
        logdet = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for i in range(self.n_layers):
            x, ld = self.layer(x, params[:, i])
            logdet = logdet + ld
        return x, logdet

    def log_prob(self, x: Tensor, theta: Tensor | None = None) -> Tensor:
        """log p(x) (or log p(x | theta)) in nats, ``[B]``; x ``[B, n, n, n]``."""
        where = f"{type(self).__name__}.log_prob"
        self._check(x, where)
        self._check_condition(theta, where)
        return self._log_prob(x, theta)

    def _log_prob(self, x: Tensor, theta: Tensor | None) -> Tensor:
        """:meth:`log_prob` without the checks (the training loop of :func:`fit`)."""
        z, logdet = self._forward(x, theta)
        n3 = z[0].numel()
        return -0.5 * (z**2).sum(dim=(-3, -2, -1)) - 0.5 * n3 * math.log(2 * math.pi) + logdet

    def log_filter(self, k: Tensor, theta: Tensor | None = None) -> Tensor:
        """log of the product of all layers' filters, sum_l log T_l(k); k ``[M]`` h/Mpc.
        Returns ``[B, M]`` (B = 1, or the number of theta rows)."""
        where = f"{type(self).__name__}.log_filter"
        _check_shape(k, "k", where, (None,), "[M]")
        _check_finite_values(k, "k", where)
        if not bool((k > 0).all()):
            raise ValueError(f"{where}: k must be > 0 (h/Mpc)")
        self._check_condition(theta, where)
        b = 1 if theta is None else theta.shape[0]
        params = self.layer_params(b, theta)
        u = (torch.log(k.to(self.base)) - self.log_k_lo) / (self.log_k_hi - self.log_k_lo)
        u = u * (self.n_knots - 1)
        return sum(cubic_spline(u, params[:, i, : self.n_knots]) for i in range(self.n_layers))

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Data-dependent start: flat filters that give the first layer unit variance,
        psi the identity. x: ``[B, n, n, n]`` training fields (not all equal)."""
        where = f"{type(self).__name__}.initialize"
        self._check(x, where)
        std = x.to(self.base).std()
        if not std > 0:
            raise ValueError(f"{where}: x must vary (its standard deviation is {float(std)})")
        self.base.zero_()
        self.base[0, : self.n_knots] = -torch.log(std)


def _check_theta(theta, where: str) -> None:
    if not torch.is_tensor(theta) or not theta.is_floating_point():
        raise ValueError(f"{where}: theta must be a float tensor [B, 2] = (Omega_m, sigma_8)")
    if theta.dim() < 1 or theta.shape[-1] != 2:
        raise ValueError(
            f"{where}: theta must have shape [B, 2] = (Omega_m, sigma_8), got {list(theta.shape)}"
        )
    _check_finite_values(theta, "theta", where)


def theta_to_unit(theta: Tensor) -> Tensor:
    """(Omega_m, sigma_8) ``[B, 2]`` -> [-1, 1]^2 over the CAMELS prior box (points outside
    the box map outside [-1, 1]^2); theta must be finite."""
    _check_theta(theta, "theta_to_unit")
    return _theta_to_unit(theta)


def _theta_to_unit(theta: Tensor) -> Tensor:
    """:func:`theta_to_unit` without the check (inside the NPE's training loop)."""
    lo = torch.tensor([PRIOR_RANGES[k][0] for k in THETA_NAMES], dtype=theta.dtype)
    hi = torch.tensor([PRIOR_RANGES[k][1] for k in THETA_NAMES], dtype=theta.dtype)
    lo, hi = lo.to(theta.device), hi.to(theta.device)
    return 2 * (theta - lo) / (hi - lo) - 1


def log_theta_to_unit(theta: Tensor) -> Tensor:
    """(Omega_m, sigma_8) ``[B, 2]`` -> log theta scaled to [-1, 1]^2 over the CAMELS prior
    box (the input of the conditional flow's network: P(k) varies smoothly with log theta).
    theta must be finite and > 0."""
    _check_positive_theta(theta, "log_theta_to_unit")
    return _log_theta_to_unit(theta)


def _check_positive_theta(theta, where: str) -> None:
    """theta ``[B, 2]``, finite and > 0 (one reduction, one synchronisation on a GPU)."""
    if not torch.is_tensor(theta) or not theta.is_floating_point():
        raise ValueError(f"{where}: theta must be a float tensor [B, 2] = (Omega_m, sigma_8)")
    _check_shape(theta, "theta", where, (None, 2), "[B, 2] = (Omega_m, sigma_8)")
    if not bool((theta > 0).all()):  # False for NaN too
        _check_finite_values(theta, "theta", where)
        raise ValueError(f"{where}: theta must be > 0 (its logarithm is taken)")
    if not bool(torch.isfinite(theta).all()):
        _check_finite_values(theta, "theta", where)


def _log_theta_to_unit(theta: Tensor) -> Tensor:
    lo = torch.tensor([PRIOR_RANGES[k][0] for k in THETA_NAMES], dtype=theta.dtype)
    hi = torch.tensor([PRIOR_RANGES[k][1] for k in THETA_NAMES], dtype=theta.dtype)
    lo, hi = torch.log(lo.to(theta.device)), torch.log(hi.to(theta.device))
    return 2 * (torch.log(theta) - lo) / (hi - lo) - 1


class ConditionalFourierFlow(FourierFlow):
    """:class:`FourierFlow` whose spline values depend on theta = (Omega_m, sigma_8):
    params(theta) = base + MLP(log theta scaled to [-1, 1]^2, :func:`log_theta_to_unit`);
    the MLP's last layer starts at zero. Same arguments as :class:`FourierFlow` plus
    ``hidden`` (MLP width). The log input halves the error of the learned posterior widths
    against a linear input (measured on 8^3 fields, notebook 07's setting otherwise)."""

    def __init__(self, *args, hidden: int = 64, **kwargs):
        super().__init__(*args, **kwargs)
        _check_count(hidden, "hidden", "ConditionalFourierFlow")
        dt = self.base.dtype
        out = self.n_layers * self.params_per_layer
        self.net = nn.Sequential(
            nn.Linear(2, hidden, dtype=dt),
            nn.Tanh(),
            nn.Linear(hidden, hidden, dtype=dt),
            nn.Tanh(),
            nn.Linear(hidden, out, dtype=dt),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def _check_condition(self, theta: Tensor | None, where: str) -> None:
        if theta is None:
            raise ValueError(f"{where}: theta: expected [B, 2] = (Omega_m, sigma_8), got None")
        _check_positive_theta(theta, where)

    def layer_params(self, batch: int, theta: Tensor | None = None) -> Tensor:
        if theta is None or theta.dim() != 2 or theta.shape[-1] != 2:
            got = "None" if theta is None else list(theta.shape)
            raise ValueError(
                f"ConditionalFourierFlow: theta: expected [B, 2] = (Omega_m, sigma_8), got {got}"
            )
        d = self.net(_log_theta_to_unit(theta.to(self.base)))
        d = d.view(-1, self.n_layers, self.params_per_layer)
        return (self.base + d).expand(batch, -1, -1)


# --------------------------------------------------------------------------- training
def fit(
    flow: FourierFlow,
    batches: Callable[[int], tuple[Tensor, Tensor | None]],
    steps: int,
    lr: float = 2e-2,
    average_from: float = 0.75,
    progress: bool = True,
) -> list[float]:
    """Maximum-likelihood training with Adam and a cosine learning-rate decay; the final
    parameters are the average of the iterates over the last ``1 - average_from`` of the
    steps (Polyak-Ruppert averaging, which removes most of the minibatch noise).

    batches(step) -> (x ``[B, n, n, n]``, theta ``[B, 2]`` or None). Returns the loss per
    step, -log p per cell in nats. A non-finite loss stops the training with
    :class:`physml.errors.TrainingDiverged`.
    """
    if not isinstance(flow, FourierFlow):
        raise ValueError(f"fit: flow must be a FourierFlow, got {type(flow).__name__}")
    if not callable(batches):
        raise ValueError("fit: batches must be a function step -> (x, theta)")
    steps = _check_count(steps, "steps", "fit")
    _check_real(lr, "lr", "fit", low=0)
    _check_real(average_from, "average_from", "fit", low=0, high=1, low_open=False)
    if int(average_from * steps) >= steps:
        raise ValueError(
            f"fit: average_from = {average_from} leaves no step to average over {steps} steps"
        )
    opt = torch.optim.Adam(flow.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    losses = []
    n3 = flow.n**3
    start = int(average_from * steps)
    avg = [torch.zeros_like(p) for p in flow.parameters()]
    for step in tqdm(range(steps), disable=not progress, desc="flow training"):
        x, theta = batches(step)
        if step == 0:  # the first batch in full; later ones through the loss
            flow._check(x, "fit (batches)")
            flow._check_condition(theta, "fit (batches)")
        loss = -flow._log_prob(x, theta).mean() / n3  # checked through the loss below
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]):
            raise TrainingDiverged(
                f"fit: the loss is {losses[-1]} at step {step} (lr = {lr}): too large a learning "
                f"rate, or fields / theta from batches outside the flow's reach"
            )
        if step >= start:
            with torch.no_grad():
                for a, p in zip(avg, flow.parameters(), strict=True):
                    a += p
    with torch.no_grad():
        for a, p in zip(avg, flow.parameters(), strict=True):
            p.copy_(a / (steps - start))
    return losses


# --------------------------------------------------------------------------- checks
def filter_times_sqrt_power(
    flow: FourierFlow, power: Tensor, theta: Tensor | None = None, n_bins: int = 24
) -> tuple[Tensor, Tensor, Tensor]:
    """The learned filter against the optimum: T(k) sqrt(P(k)) averaged over the modes of
    linear |k| bins, divided by its mode-weighted mean (1 everywhere for the optimum).

    power: P on the rfft modes ``[n, n, n // 2 + 1]`` (:func:`physml.grf.power_on_modes`);
    theta: ``[1, 2]`` for a conditional flow. Returns (k ``[n_bins]`` mean |k| per bin
    h/Mpc, ratio ``[n_bins]``, n_modes ``[n_bins]``, independent modes per bin).
    """
    where = "filter_times_sqrt_power"
    n = flow.n
    _check_shape(power, "power", where, (n, n, n // 2 + 1), f"[{n}, {n}, {n // 2 + 1}]")
    _check_finite_values(power, "power", where)
    if not bool((power > 0).all()):
        raise ValueError(f"{where}: power must be > 0 ((Mpc/h)^3)")
    _check_count(n_bins, "n_bins", where)
    k = kmag(flow.n, flow.box_size, power.device).reshape(-1)
    w = flow.weights.to(power.device)
    with torch.no_grad():
        r = torch.exp(flow.log_filter(k, theta)[0]) * power.reshape(-1).sqrt()
    edges = torch.linspace(0.0, float(k.max()) * (1 + 1e-9), n_bins + 1, dtype=k.dtype)
    idx = (torch.bucketize(k, edges.to(k.device)) - 1).clamp(0, n_bins - 1)
    cnt = torch.zeros(n_bins, dtype=k.dtype, device=k.device).index_add(0, idx, w)
    rs = torch.zeros_like(cnt).index_add(0, idx, w * r)
    ks = torch.zeros_like(cnt).index_add(0, idx, w * k)
    keep = cnt > 0
    ratio = rs[keep] / cnt[keep]
    return ks[keep] / cnt[keep], ratio / ((w * r).sum() / w.sum()), cnt[keep] / 2


# --------------------------------------------------------------------------- posteriors
def grid_posterior(log_like: Callable[[Tensor], Tensor], lo, hi, n_grid: int = 41):
    """Posterior under a flat prior on a 2-D grid over the box [lo, hi] (2 values each).

    log_like(theta ``[G, 2]``) -> ``[G]`` nats. Returns a dict with ``grid`` (two 1-D axes),
    ``post`` ``[n_grid, n_grid]`` (normalised, index [i_param0, i_param1]), ``mean`` ``[2]``
    and ``std`` ``[2]``. A log_like that is NaN anywhere, or -inf everywhere, is refused.
    """
    where = "grid_posterior"
    if not callable(log_like):
        raise ValueError(f"{where}: log_like must be a function theta [G, 2] -> [G]")
    for name, v in (("lo", lo), ("hi", hi)):
        if len(v) != 2:
            raise ValueError(f"{where}: {name} must hold 2 values, got {list(v)}")
    for j in range(2):
        a = _check_real(lo[j], f"lo[{j}]", where)
        _check_real(hi[j], f"hi[{j}]", where, low=a)
    n_grid = _check_count(n_grid, "n_grid", where, minimum=2)
    axes = [
        torch.linspace(float(a), float(b), n_grid, dtype=torch.float64)
        for a, b in zip(lo, hi, strict=True)
    ]
    g0, g1 = torch.meshgrid(*axes, indexing="ij")
    theta = torch.stack([g0.reshape(-1), g1.reshape(-1)], -1)
    logp = log_like(theta)
    if not torch.is_tensor(logp) or logp.shape != (len(theta),):
        got = list(logp.shape) if torch.is_tensor(logp) else type(logp).__name__
        raise ValueError(f"{where}: log_like must return [G] = [{len(theta)}], got {got}")
    logp = logp.detach().to(torch.float64).cpu().reshape(n_grid, n_grid)
    if bool(torch.isnan(logp).any()) or not bool(torch.isfinite(logp.max())):
        raise ValueError(
            f"{where}: log_like is NaN at {int(torch.isnan(logp).sum())} grid points or -inf "
            f"(or +inf) at its maximum {float(logp.max())}: no posterior on the grid"
        )
    post = torch.exp(logp - logp.max())
    post = post / post.sum()
    mean = torch.stack([(post * g0).sum(), (post * g1).sum()])
    var = torch.stack([(post * (g0 - mean[0]) ** 2).sum(), (post * (g1 - mean[1]) ** 2).sum()])
    return {"grid": axes, "post": post, "mean": mean, "std": var.sqrt()}


def likelihood_on(flow: FourierFlow, x: Tensor, chunk: int = 256) -> Callable[[Tensor], Tensor]:
    """theta ``[G, 2]`` -> log p(x | theta) ``[G]`` of a conditional flow for one field x
    ``[n, n, n]``, evaluated in chunks of ``chunk`` parameter points (no gradients)."""
    if not isinstance(flow, ConditionalFourierFlow):
        raise ValueError(
            f"likelihood_on: flow must be a ConditionalFourierFlow, got {type(flow).__name__}"
        )
    if not torch.is_tensor(x):
        raise ValueError(f"likelihood_on: x must be a tensor [{flow.n}, {flow.n}, {flow.n}]")
    flow._check(x.unsqueeze(0), "likelihood_on")
    _check_count(chunk, "chunk", "likelihood_on")

    def log_like(theta: Tensor) -> Tensor:
        flow._check_condition(theta, "likelihood_on (log_like)")
        with torch.no_grad():
            parts = [
                flow._log_prob(x.unsqueeze(0).expand(len(t), -1, -1, -1), t.to(x.device))
                for t in theta.split(chunk)
            ]
        return torch.cat(parts)

    return log_like


def zoomed_posterior(
    log_like: Callable[[Tensor], Tensor], n_coarse: int = 25, n_fine: int = 41, width: float = 6.0
):
    """:func:`grid_posterior` on a coarse grid over the prior box (the CAMELS ranges, flat
    prior), then twice on a fine grid of +- ``width`` standard deviations (at least two
    steps of the previous grid) around the previous mean, cut to the prior box."""
    _check_count(n_coarse, "n_coarse", "zoomed_posterior", minimum=2)
    _check_count(n_fine, "n_fine", "zoomed_posterior", minimum=2)
    _check_real(width, "width", "zoomed_posterior", low=0)
    lo = [PRIOR_RANGES[k][0] for k in THETA_NAMES]
    hi = [PRIOR_RANGES[k][1] for k in THETA_NAMES]
    res = grid_posterior(log_like, lo, hi, n_coarse)
    for _ in range(2):
        step = torch.stack([a[1] - a[0] for a in res["grid"]])
        half = torch.maximum(width * res["std"], 2 * step)
        new_lo = [max(lo[i], float(res["mean"][i] - half[i])) for i in range(2)]
        new_hi = [min(hi[i], float(res["mean"][i] + half[i])) for i in range(2)]
        res = grid_posterior(log_like, new_lo, new_hi, n_fine)
    return res
