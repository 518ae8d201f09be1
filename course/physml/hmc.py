"""Hamiltonian Monte Carlo, short and readable, with its diagnostics.

:func:`hmc` samples ``p(theta) ~ exp(-U(theta))`` for a potential ``U`` written in torch
(gradients by autograd), several chains at once: leapfrog integration with a step size and
a number of steps, a diagonal mass matrix, a Metropolis accept / reject on the change of
the Hamiltonian, and a step size tuned during warm-up towards a target acceptance rate
(dual averaging, Hoffman & Gelman 2014). :func:`laplace` and :func:`whiten` turn a
correlated posterior into a nearly isotropic one (the same as a dense mass matrix).
:func:`split_rhat` and :func:`effective_sample_size` are the usual diagnostics (Gelman et
al., Bayesian Data Analysis, 3rd ed.), and :func:`nuts` runs pyro's NUTS on the same
potential as the independent check (pyro-ppl, the ``supplements`` extra).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ._checks import _check_count, _check_finite_values, _check_real, _check_shape

#: an energy error above this many nats counts as a divergent trajectory (as in Stan, pyro)
DIVERGENCE_THRESHOLD = 1000.0


class ChainsStuck(RuntimeError):
    """No chain of a sampler accepted a single proposal: its "samples" would all be the
    starting points (the message gives the acceptance, the divergences and the step size)."""


@dataclass
class HMCResult:
    """samples: ``[C, S, D]`` (chains, draws, parameters); accept_rate: ``[C]`` over the
    sampling phase; divergences: ``[C]`` counts over the sampling phase; step_size: the
    step size used for sampling (after warm-up); n_steps: maximum leapfrog steps;
    seconds: wall-clock time of warm-up and sampling."""

    samples: torch.Tensor
    accept_rate: torch.Tensor
    divergences: torch.Tensor
    step_size: float
    n_steps: int
    seconds: float = 0.0


def _value_and_grad(potential, q: torch.Tensor):
    q = q.detach().requires_grad_(True)
    with torch.enable_grad():
        u = potential(q)
        (g,) = torch.autograd.grad(u.sum(), q)
    return u.detach(), g


def _check_potential(potential, where: str) -> None:
    if not callable(potential):
        raise ValueError(f"{where}: potential must be callable, got {type(potential).__name__}")


def _check_init(init, where: str, shape: tuple, text: str) -> None:
    if not torch.is_tensor(init) or not init.is_floating_point():
        raise ValueError(f"{where}: init must be a float tensor of shape {text}, got {init!r}")
    _check_shape(init, "init", where, shape, text)
    _check_finite_values(init, "init", where)


def leapfrog(potential, q, p, grad_u, step_size, n_steps: int, inv_mass):
    """``n_steps`` leapfrog steps of size ``step_size`` (a float or ``[C, 1]``) from (q, p)
    with the kinetic energy ``p^T M^-1 p / 2``, M^-1 = diag(inv_mass ``[D]``).
    q, p, grad_u: ``[C, D]``. Returns (q, p, U(q), grad U(q))."""
    _check_potential(potential, "leapfrog")
    for name, x in (("q", q), ("p", p), ("grad_u", grad_u)):
        _check_shape(x, name, "leapfrog", (None, None), "[chains, dim]")
        _check_finite_values(x, name, "leapfrog")
    if q.shape != p.shape or q.shape != grad_u.shape:
        raise ValueError(
            f"leapfrog: q, p and grad_u must have one shape [chains, dim], got "
            f"{list(q.shape)}, {list(p.shape)}, {list(grad_u.shape)}"
        )
    if torch.is_tensor(step_size):
        _check_finite_values(step_size, "step_size", "leapfrog")
        if not bool((step_size > 0).all()):
            raise ValueError(f"leapfrog: step_size must be > 0, got {step_size.tolist()}")
    else:
        _check_real(step_size, "step_size", "leapfrog", low=0)
    n_steps = _check_count(n_steps, "n_steps", "leapfrog")
    inv_mass = _check_inv_mass(inv_mass, q.shape[1], "leapfrog")
    return _leapfrog(potential, q, p, grad_u, step_size, n_steps, inv_mass)


def _check_inv_mass(inv_mass, dim: int, where: str) -> torch.Tensor:
    if not torch.is_tensor(inv_mass):
        raise ValueError(f"{where}: inv_mass must be a tensor [{dim}], got {inv_mass!r}")
    _check_shape(inv_mass, "inv_mass", where, (dim,), f"[{dim}] (one per parameter)")
    _check_finite_values(inv_mass, "inv_mass", where)
    if not bool((inv_mass > 0).all()):
        raise ValueError(f"{where}: inv_mass must be > 0, got {inv_mass.tolist()}")
    return inv_mass


def _leapfrog(potential, q, p, grad_u, step_size, n_steps: int, inv_mass):
    """:func:`leapfrog` without the checks of its arguments (the loop of :func:`hmc`)."""
    p = p - 0.5 * step_size * grad_u
    for i in range(n_steps):
        q = q + step_size * inv_mass * p
        u, grad_u = _value_and_grad(potential, q)
        if i < n_steps - 1:
            p = p - step_size * grad_u
    p = p - 0.5 * step_size * grad_u
    return q, p, u, grad_u


def hmc(
    potential,
    init: torch.Tensor,
    n_samples: int,
    n_warmup: int = 200,
    step_size: float = 0.1,
    n_steps: int = 10,
    inv_mass: torch.Tensor | None = None,
    target_accept: float = 0.8,
    seed: int = 0,
    progress: bool = True,
) -> HMCResult:
    """Sample ``exp(-potential)`` with HMC, all chains at once.

    potential: ``[C, D]`` -> ``[C]`` (differentiable torch function); init: ``[C, D]``
    starting points (one per chain). Each iteration draws momenta p ~ N(0, M), runs a
    leapfrog trajectory of ``L`` steps, L uniform in [1, n_steps] (a random length avoids
    periodic orbits), and accepts the end point with probability min(1, exp(-dH)).
    During the ``n_warmup`` iterations the step size (one per chain) is tuned by dual
    averaging towards ``target_accept``; warm-up draws are discarded. Returns an
    :class:`HMCResult` with ``n_samples`` draws per chain.

    The arguments are checked once, before the first iteration (the potential and its
    gradient must be finite at every starting point). Chains that accept no proposal while
    sampling never moved: if every chain is stuck, :class:`ChainsStuck` is raised instead
    of returning the starting points as samples; if some are, a RuntimeWarning names them.
    """
    _check_potential(potential, "hmc")
    _check_init(init, "hmc", (None, None), "[chains, dim]")
    n_samples = _check_count(n_samples, "n_samples", "hmc")
    n_warmup = _check_count(n_warmup, "n_warmup", "hmc", minimum=0)
    n_steps = _check_count(n_steps, "n_steps", "hmc")
    _check_real(step_size, "step_size", "hmc", low=0)
    _check_real(target_accept, "target_accept", "hmc", low=0, high=1)
    seed = _check_count(seed, "seed", "hmc", minimum=0)
    if inv_mass is not None:
        _check_inv_mass(inv_mass, init.shape[1], "hmc")
    import time

    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    n_chains, dim = init.shape
    gen = torch.Generator(device="cpu").manual_seed(seed)
    inv_mass = torch.ones(dim, dtype=init.dtype) if inv_mass is None else inv_mass
    inv_mass = inv_mass.to(init)
    sqrt_mass = inv_mass.rsqrt()

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=init.dtype).to(init.device)

    def uniform(*shape):
        return torch.rand(*shape, generator=gen, dtype=init.dtype).to(init.device)

    q = init.detach().clone()
    u, g = _value_and_grad(potential, q)
    _check_start(u, g, n_chains, "hmc")
    eps = torch.full((n_chains, 1), float(step_size), dtype=init.dtype, device=init.device)
    # dual averaging state (Hoffman & Gelman 2014, algorithm 5)
    mu, h_bar, log_eps_bar = torch.log(10 * eps), torch.zeros_like(eps), torch.zeros_like(eps)
    gamma, t_0, kappa = 0.05, 10.0, 0.75
    samples = torch.empty(n_chains, n_samples, dim, dtype=init.dtype, device=init.device)
    accepted = torch.zeros(n_chains, dtype=init.dtype, device=init.device)
    divergences = torch.zeros(n_chains, dtype=torch.int64, device=init.device)
    bar = tqdm(range(n_warmup + n_samples), desc="HMC", disable=not progress, mininterval=2.0)
    for it in bar:
        p = randn(n_chains, dim) * sqrt_mass
        h0 = u + 0.5 * (p * p * inv_mass).sum(-1)
        n_leap = int(torch.randint(1, n_steps + 1, (1,), generator=gen))
        q1, p1, u1, g1 = _leapfrog(potential, q, p, g, eps, n_leap, inv_mass)
        h1 = u1 + 0.5 * (p1 * p1 * inv_mass).sum(-1)
        dh = torch.nan_to_num(h1 - h0, nan=math.inf)
        divergent = dh > DIVERGENCE_THRESHOLD
        accept_prob = torch.exp(-dh.clamp(min=0.0))
        accept = uniform(n_chains) < accept_prob
        q = torch.where(accept[:, None], q1, q)
        u = torch.where(accept, u1, u)
        g = torch.where(accept[:, None], g1, g)
        if it < n_warmup:
            m = it + 1
            w = 1.0 / (m + t_0)
            h_bar = (1 - w) * h_bar + w * (target_accept - accept_prob[:, None])
            log_eps = mu - math.sqrt(m) / gamma * h_bar
            eta = m**-kappa
            log_eps_bar = eta * log_eps + (1 - eta) * log_eps_bar
            eps = torch.exp(log_eps_bar if it == n_warmup - 1 else log_eps)
        else:
            samples[:, it - n_warmup] = q
            accepted += accept.to(accepted.dtype)
            divergences += divergent.to(torch.int64)
    _check_moved(accepted / n_samples, divergences, eps.flatten(), n_samples, "hmc")
    return HMCResult(
        samples=samples,
        accept_rate=accepted / n_samples,
        divergences=divergences,
        step_size=float(eps.mean()),
        n_steps=n_steps,
        seconds=time.perf_counter() - t0,
    )


def _check_start(u: torch.Tensor, g: torch.Tensor, n_chains: int, where: str) -> None:
    """The potential ``u`` ``[C]`` and its gradient ``g`` ``[C, D]`` at the starting points."""
    if u.shape != (n_chains,):
        raise ValueError(
            f"{where}: potential must map init [chains, dim] to [chains], got shape "
            f"{list(u.shape)} for {n_chains} chains"
        )
    bad = ~(torch.isfinite(u) & torch.isfinite(g).all(-1))
    if bool(bad.any()):
        chains = torch.nonzero(bad).flatten().tolist()
        raise ValueError(
            f"{where}: potential (or its gradient) is not finite at init for chain(s) "
            f"{chains} of {n_chains} (U = {u[bad].tolist()}); start every chain where the "
            f"potential is finite"
        )


def _check_moved(accept_rate, divergences, step_size, n_samples: int, where: str) -> None:
    """Raise :class:`ChainsStuck` if no chain accepted a proposal while sampling (each
    chain's samples would be its starting point), warn if some did not. accept_rate,
    divergences, step_size: ``[C]``."""
    stuck = (accept_rate == 0).cpu()
    if not bool(stuck.any()):
        return
    chains = torch.nonzero(stuck).flatten().tolist()
    div = divergences.cpu()[stuck].tolist()
    eps = [float(f"{e:.3g}") for e in step_size.detach().cpu()[stuck].tolist()]
    detail = (
        f"(divergent transitions {div} of {n_samples}, step size after warm-up {eps}): "
        f"the potential is probably not finite, or not differentiable, around the chains, or "
        f"step_size / n_warmup do not suit it"
    )
    if bool(stuck.all()):
        raise ChainsStuck(
            f"{where}: no chain accepted any of its {n_samples} proposals {detail}; the "
            f"samples would all be the starting points"
        )
    warnings.warn(
        f"{where}: chain(s) {chains} of {len(stuck)} accepted none of their {n_samples} "
        f"proposals {detail}; their samples are their starting points",
        RuntimeWarning,
        stacklevel=3,
    )


# --------------------------------------------------------------------------- preconditioning


def find_map(
    potential, init: torch.Tensor, max_iter: int = 500, n_adam: int = 0, lr: float = 0.05
) -> torch.Tensor:
    """Minimise the potential (maximum a posteriori) from ``init`` ``[D]``: ``n_adam`` Adam
    steps of learning rate ``lr`` first (robust far from the mode), then L-BFGS with a
    strong-Wolfe line search for at most ``max_iter`` iterations (fast near it). If L-BFGS
    leaves the finite region or ends higher than it started, the Adam point is returned.
    The potential must be finite at ``init``. Returns ``[D]``."""
    _check_potential(potential, "find_map")
    _check_init(init, "find_map", (None,), "[D]")
    _check_count(max_iter, "max_iter", "find_map")
    _check_count(n_adam, "n_adam", "find_map", minimum=0)
    _check_real(lr, "lr", "find_map", low=0)
    q = init.detach().clone().requires_grad_(True)
    if n_adam > 0:
        adam = torch.optim.Adam([q], lr=lr)
        for i in range(n_adam):
            adam.zero_grad()
            u = potential(q)
            if i == 0:
                _check_map_start(u)
            u.backward()
            adam.step()
    start = q.detach().clone()
    with torch.no_grad():
        u0 = potential(start)
    if n_adam == 0:
        _check_map_start(u0)
    u_start = float(u0)
    opt = torch.optim.LBFGS(
        [q],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        history_size=50,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        u = potential(q)
        u.backward()
        return u

    opt.step(closure)
    with torch.no_grad():
        u_end = float(potential(q)) if torch.isfinite(q).all() else math.inf
    if not math.isfinite(u_end) or u_end > u_start:
        if not math.isfinite(u_start):
            raise FloatingPointError("find_map: the potential is not finite at the start")
        return start
    return q.detach()


def _check_map_start(u: torch.Tensor) -> None:
    if u.dim() != 0:
        raise ValueError(f"find_map: potential must map init [D] to a scalar, got {list(u.shape)}")
    if not bool(torch.isfinite(u)):
        raise ValueError(f"find_map: potential is not finite at init (U = {float(u.detach())})")


def laplace(potential, theta_map: torch.Tensor) -> torch.Tensor:
    """Covariance ``[D, D]`` of the Laplace approximation at the mode ``theta_map`` ``[D]``:
    the inverse Hessian of the potential. Fails with a clear message if the Hessian is not
    finite or not positive definite (not a mode, or a flat direction)."""
    _check_potential(potential, "laplace")
    if not torch.is_tensor(theta_map) or not theta_map.is_floating_point():
        raise ValueError(f"laplace: theta_map must be a float tensor [D], got {theta_map!r}")
    _check_shape(theta_map, "theta_map", "laplace", (None,), "[D]")
    _check_finite_values(theta_map, "theta_map", "laplace")
    hess = torch.autograd.functional.hessian(potential, theta_map.detach())
    if not bool(torch.isfinite(hess).all()):
        raise ValueError("laplace: the Hessian of the potential is not finite at theta_map")
    hess = 0.5 * (hess + hess.T)
    evals = torch.linalg.eigvalsh(hess)
    if evals.min() <= 0:
        raise ValueError(
            f"laplace: the Hessian is not positive definite (min eigenvalue "
            f"{float(evals.min()):.3g}); theta_map is not a mode"
        )
    return torch.cholesky_inverse(torch.linalg.cholesky(hess))


def whiten(potential, mean: torch.Tensor, cov: torch.Tensor):
    """Potential in whitened coordinates z, theta = mean + L z with L L^T = cov.

    Returns (potential_z, to_theta): ``potential_z`` maps ``[..., D]`` -> ``[...]``;
    ``to_theta`` maps z ``[..., D]`` to theta. HMC with an identity mass matrix in z is HMC
    with the dense mass matrix cov^-1 in theta.
    """
    _check_potential(potential, "whiten")
    if not torch.is_tensor(mean) or not torch.is_tensor(cov):
        raise ValueError("whiten: mean [D] and cov [D, D] must be tensors")
    (dim,) = _check_shape(mean, "mean", "whiten", (None,), "[D]")
    _check_shape(cov, "cov", "whiten", (dim, dim), f"[{dim}, {dim}] (D = len(mean))")
    _check_finite_values(mean, "mean", "whiten")
    _check_finite_values(cov, "cov", "whiten")
    chol, info = torch.linalg.cholesky_ex(cov)
    if int(info) != 0:
        raise ValueError("whiten: cov must be symmetric positive definite (Cholesky failed)")

    def to_theta(z):
        return mean + z @ chol.T

    def potential_z(z):
        return potential(to_theta(z))

    return potential_z, to_theta


# --------------------------------------------------------------------------- diagnostics


def _as_chains(x, where: str) -> np.ndarray:
    x = x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3 or x.shape[1] < 4 or x.dtype.kind not in "fiu":
        raise ValueError(
            f"{where}: samples must be numbers of shape [chains, draws >= 4, dim], got "
            f"{x.dtype} {list(x.shape)}"
        )
    _check_finite_values(x, "samples", where)
    return x.astype(np.float64)


def split_rhat(samples) -> np.ndarray:
    """Split R-hat of ``[C, S, D]`` (or ``[C, S]``) samples, ``[D]``: each chain is cut in
    two halves, and R-hat = sqrt(((S'-1)/S' W + B/S') / W) with W the mean within-half
    variance and B/S' the variance of the half means (BDA3, eq. 11.4)."""
    x = _as_chains(samples, "split_rhat")
    half = x.shape[1] // 2
    x = np.concatenate([x[:, :half], x[:, -half:]], 0)  # [2C, S', D]
    n = x.shape[1]
    w = x.var(1, ddof=1).mean(0)
    b_over_n = x.mean(1).var(0, ddof=1)
    return np.sqrt(((n - 1) / n * w + b_over_n) / w)


def effective_sample_size(samples) -> np.ndarray:
    """Effective sample size of ``[C, S, D]`` samples, ``[D]``: C S / (1 + 2 sum_t rho_t),
    with the autocorrelations rho_t combined over chains (BDA3, eq. 11.7; Stan's estimator)
    and the sum of pairs rho_2k + rho_2k+1 made positive and monotone (Geyer 1992)."""
    x = _as_chains(samples, "effective_sample_size")
    c, s, d = x.shape
    xc = x - x.mean(1, keepdims=True)
    f = np.fft.rfft(xc, n=2 * s, axis=1)
    acov = np.fft.irfft(f * np.conj(f), n=2 * s, axis=1)[:, :s] / s  # [C, S, D], biased
    w = (acov[:, 0] * s / (s - 1)).mean(0)  # mean within-chain variance
    var_plus = w * (s - 1) / s + (x.mean(1).var(0, ddof=1) if c > 1 else 0.0)
    rho = 1.0 - (w[None] - acov.mean(0)) / var_plus[None]  # [S, D]
    rho[0] = 1.0
    pairs = rho[: 2 * (s // 2)].reshape(s // 2, 2, d).sum(1)  # Gamma_k = rho_2k + rho_2k+1
    # Geyer's initial positive, then monotone sequence (as Stan and pyro)
    tail = np.minimum.accumulate(np.clip(pairs[1:], 0.0, None), axis=0)
    tau = -1.0 + 2.0 * pairs[0] + 2.0 * tail.sum(0)
    ess = c * s / tau
    return ess


def summarize(samples, names=None) -> dict:
    """Posterior mean, sd, Monte Carlo standard errors, ESS and split R-hat of ``[C, S, D]``
    samples, each ``[D]`` (dict of arrays, plus ``names``). ``mcse`` is the standard error of
    the mean, sd / sqrt(ESS); ``mcse_sd`` that of the sd, by the delta method from the ESS of
    the squared deviations (as Stan and ArviZ): sqrt(Var[(x - mean)^2] / ESS_sq) / (2 sd),
    about sd / sqrt(2 ESS) for Gaussian draws."""
    x = _as_chains(samples, "summarize")
    if names is not None and len(names) != x.shape[-1]:
        raise ValueError(
            f"summarize: names must have one entry per parameter ({x.shape[-1]}), got {len(names)}"
        )
    flat = x.reshape(-1, x.shape[-1])
    ess = effective_sample_size(x)
    sd = flat.std(0, ddof=1)
    sq = (x - flat.mean(0)) ** 2  # [C, S, D]
    ess_sq = effective_sample_size(sq)
    out = {
        "mean": flat.mean(0),
        "sd": sd,
        "mcse": sd / np.sqrt(ess),
        "mcse_sd": np.sqrt(sq.reshape(-1, x.shape[-1]).var(0, ddof=1) / ess_sq) / (2 * sd),
        "ess": ess,
        "rhat": split_rhat(x),
    }
    if names is not None:
        out["names"] = list(names)
    return out


# --------------------------------------------------------------------------- pyro's NUTS


@dataclass
class NUTSResult:
    """samples: ``[C, S, D]``; divergences: ``[C]``; accept_prob: ``[C]`` mean Metropolis
    acceptance probability min(1, exp(-dH)) of the kept iterations (what NUTS's step-size
    adaptation targets, 0.8); move_rate: ``[C]`` fraction of kept iterations whose draw
    differs from the previous one (pyro's "acceptance rate", close to 1 for NUTS, which
    samples from the whole trajectory); step_size: ``[C]`` adapted step sizes; seconds:
    wall-clock time."""

    samples: torch.Tensor
    divergences: torch.Tensor
    accept_prob: torch.Tensor
    move_rate: torch.Tensor
    step_size: torch.Tensor
    seconds: float


def nuts(
    potential,
    init: torch.Tensor,
    n_samples: int,
    n_warmup: int = 300,
    seed: int = 0,
    max_tree_depth: int = 8,
    progress: bool = False,
) -> NUTSResult:
    """pyro-ppl's NUTS (``pyro.infer.mcmc.NUTS(potential_fn=...)``) on the same potential,
    one chain after the other from each row of ``init`` ``[C, D]`` (needs the
    ``supplements`` extra). The potential takes ``[D]`` and returns a scalar. As for
    :func:`hmc`, :class:`ChainsStuck` is raised if no chain moved, a warning if some did
    not."""
    _check_potential(potential, "nuts")
    _check_init(init, "nuts", (None, None), "[chains, dim]")
    _check_count(n_samples, "n_samples", "nuts")
    _check_count(n_warmup, "n_warmup", "nuts", minimum=0)
    _check_count(seed, "seed", "nuts", minimum=0)
    _check_count(max_tree_depth, "max_tree_depth", "nuts")
    try:
        import pyro
        from pyro.infer.mcmc import MCMC, NUTS
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError("nuts needs pyro-ppl: pip install 'physml[supplements]'") from err
    import time

    t0 = time.perf_counter()
    draws, div, acc, moved, steps = [], [], [], [], []
    last = {}
    for c, z0 in enumerate(init):
        pyro.set_rng_seed(seed + c)
        kernel = NUTS(
            potential_fn=lambda p: potential(p["z"]),
            max_tree_depth=max_tree_depth,
            adapt_mass_matrix=True,
            full_mass=False,
        )
        mcmc = MCMC(
            kernel,
            num_samples=n_samples,
            warmup_steps=n_warmup,
            initial_params={"z": z0.detach().clone()},
            disable_progbar=not progress,
            hook_fn=_record_accept_prob(last),
        )
        mcmc.run()
        draws.append(mcmc.get_samples()["z"])
        diag = mcmc.diagnostics()  # per chain: divergent iterations, move rate
        div.append(sum(len(v) for v in diag["divergences"].values()))
        moved.append(float(np.mean(list(diag["acceptance rate"].values()))))
        acc.append(last["accept_prob"])
        steps.append(float(kernel.step_size))
    _check_moved(torch.tensor(moved), torch.tensor(div), torch.tensor(steps), n_samples, "nuts")
    return NUTSResult(
        samples=torch.stack(draws),
        divergences=torch.tensor(div),
        accept_prob=torch.tensor(acc),
        move_rate=torch.tensor(moved),
        step_size=torch.tensor(steps),
        seconds=time.perf_counter() - t0,
    )


def _record_accept_prob(store: dict):
    """An MCMC ``hook_fn`` that keeps in ``store["accept_prob"]`` the kernel's running mean
    of min(1, exp(-dH)) over the kept iterations, as pyro's progress bar shows it ("acc.
    prob"); the kernel resets it when the run ends, so it is read while sampling."""

    def hook(kernel, params, stage, i):
        if stage == "Sample":
            store["accept_prob"] = float(kernel.logging()["acc. prob"])

    return hook


# --------------------------------------------------------------------------- adaptation


class CountingPotential:
    """A potential ``[C, D]`` -> ``[C]`` that counts its evaluations: ``count`` is the number
    of rows evaluated (one row of one call = one potential and gradient evaluation in
    :func:`hmc`, whose every evaluation is differentiated). The cost measure of a sampler
    that does not depend on the machine."""

    def __init__(self, potential):
        self.potential, self.count = potential, 0

    def __call__(self, q: torch.Tensor) -> torch.Tensor:
        self.count += q.shape[0] if q.dim() > 1 else 1
        return self.potential(q)


def diagonal_inverse_mass(samples: torch.Tensor, shrink: float = 5.0) -> torch.Tensor:
    """Inverse diagonal mass matrix ``[D]`` from warm-up draws ``[C, S, D]``: the variance of
    each coordinate pooled over chains and draws, shrunk towards 1e-3 as Stan does,
    var * m / (m + shrink) + 1e-3 * shrink / (m + shrink) with m = C S draws."""
    if samples.dim() != 3 or samples.shape[0] * samples.shape[1] < 2:
        raise ValueError(
            f"samples: expected [chains, draws, dim], >= 2 draws, got {tuple(samples.shape)}"
        )
    flat = samples.reshape(-1, samples.shape[-1])
    m = flat.shape[0]
    return flat.var(0) * m / (m + shrink) + 1e-3 * shrink / (m + shrink)


def hmc_adapted(
    potential,
    init: torch.Tensor,
    n_samples: int,
    windows=(50, 100, 200),
    n_warmup: int = 100,
    step_size: float = 0.1,
    n_steps: int = 10,
    target_accept: float = 0.8,
    seed: int = 0,
    progress: bool = True,
) -> HMCResult:
    """:func:`hmc` with a diagonal mass matrix learned during warm-up, in doubling windows
    (as Stan's warm-up, without its fast initial and final step-size windows).

    Each window of ``w`` iterations runs :func:`hmc` with the current mass matrix (unit to
    begin with), tuning the step size by dual averaging over its first half and drawing over
    its second half; the next inverse mass is the pooled variance of those draws
    (:func:`diagonal_inverse_mass`). An estimate from chains that have not yet converged is
    too wide, so the later, longer windows re-estimate it. Then, from the last draws,
    ``n_warmup`` iterations tune the step size with the final mass matrix and ``n_samples``
    draws are kept. Parameters whose posterior widths differ by orders of magnitude
    (cosmological parameters next to unit-scale white-noise modes) then move at one step
    size. init: ``[C, D]``. Returns the last run's :class:`HMCResult` (``seconds`` covers
    all windows)."""
    if len(windows) < 1 or min(windows) < 8:
        raise ValueError(f"hmc_adapted: windows must be >= 8 iterations each, got {windows}")
    q, inv_mass, eps, seconds = init, None, float(step_size), 0.0
    for i, w in enumerate(windows):
        res = hmc(
            potential,
            q,
            n_samples=w - w // 2,
            n_warmup=w // 2,
            step_size=eps,
            n_steps=n_steps,
            inv_mass=inv_mass,
            target_accept=target_accept,
            seed=seed + i,
            progress=progress,
        )
        seconds += res.seconds
        old = torch.ones(q.shape[-1], dtype=q.dtype) if inv_mass is None else inv_mass
        inv_mass = diagonal_inverse_mass(res.samples)
        # the step size that suits the new metric: the old one times the typical scale change
        eps = res.step_size * float((old.to(inv_mass) / inv_mass).sqrt().median())
        q = res.samples[:, -1]
    final = hmc(
        potential,
        q,
        n_samples=n_samples,
        n_warmup=n_warmup,
        step_size=eps,
        n_steps=n_steps,
        inv_mass=inv_mass,
        target_accept=target_accept,
        seed=seed + len(windows),
        progress=progress,
    )
    final.seconds += seconds
    return final
