"""The hand-written HMC: a Gaussian with known mean and covariance, the Laplace whitening,
the diagnostics against pyro.ops.stats, and agreement with pyro's NUTS on a small
non-Gaussian posterior."""

import math

import numpy as np
import pytest
import torch

from physml.hmc import (
    effective_sample_size,
    find_map,
    hmc,
    laplace,
    leapfrog,
    nuts,
    split_rhat,
    summarize,
    whiten,
)

F64 = torch.float64
MEAN = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
COV = torch.tensor([[1.0, 0.6, 0.0], [0.6, 2.0, -0.3], [0.0, -0.3, 0.25]], dtype=F64)
PREC = torch.linalg.inv(COV)


def gaussian_potential(q):
    d = q - MEAN
    return 0.5 * ((d @ PREC) * d).sum(-1)


def test_leapfrog_is_reversible_and_nearly_conserves_energy():
    q0 = torch.tensor([[0.3, 0.1, -0.2]], dtype=F64)
    p0 = torch.tensor([[1.0, -0.5, 0.2]], dtype=F64)
    inv_mass = torch.tensor([1.0, 0.5, 2.0], dtype=F64)
    q = q0.clone().requires_grad_(True)
    g = torch.autograd.grad(gaussian_potential(q).sum(), q)[0]
    q1, p1, u1, g1 = leapfrog(gaussian_potential, q0, p0, g, 0.05, 40, inv_mass)
    q2, p2, _, _ = leapfrog(gaussian_potential, q1, -p1, g1, 0.05, 40, inv_mass)
    torch.testing.assert_close(q2, q0, rtol=0, atol=1e-12)
    torch.testing.assert_close(-p2, p0, rtol=0, atol=1e-12)

    def energy(q, p):
        return float(gaussian_potential(q) + 0.5 * (p * p * inv_mass).sum())

    assert abs(energy(q1, p1) - energy(q0, p0)) < 1e-2


def test_hmc_recovers_a_known_gaussian():
    init = torch.zeros(4, 3, dtype=F64)
    res = hmc(
        gaussian_potential,
        init,
        n_samples=1500,
        n_warmup=300,
        step_size=0.2,
        n_steps=12,
        seed=0,
        progress=False,
    )
    s = summarize(res.samples)
    assert (s["rhat"] < 1.01).all() and (s["ess"] > 1000).all()
    # means within 4 Monte Carlo standard errors of the closed form
    assert (np.abs(s["mean"] - MEAN.numpy()) < 4 * s["mcse"]).all()
    flat = res.samples.reshape(-1, 3)
    cov = torch.cov(flat.T)
    torch.testing.assert_close(cov, COV, rtol=0, atol=0.12)
    assert int(res.divergences.sum()) == 0
    assert 0.6 < float(res.accept_rate.mean()) < 0.98  # tuned towards 0.8


def test_laplace_and_whitening_are_exact_for_a_gaussian():
    m = find_map(gaussian_potential, torch.zeros(3, dtype=F64))
    torch.testing.assert_close(m, MEAN, rtol=0, atol=1e-6)
    cov = laplace(gaussian_potential, m)
    torch.testing.assert_close(cov, COV, rtol=1e-10, atol=1e-12)
    uz, to_theta = whiten(gaussian_potential, MEAN, cov)
    z = torch.randn(5, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(uz(z), 0.5 * (z * z).sum(-1), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="positive definite"):
        laplace(lambda q: -(q**2).sum(), torch.zeros(2, dtype=F64))


def _ar1_chains(n_chains=4, n=2000, rho=0.8, seed=0, offsets=None):
    rng = np.random.default_rng(seed)
    x = np.zeros((n_chains, n, 2))
    eps = rng.normal(size=(n_chains, n, 2)) * math.sqrt(1 - rho**2)
    for t in range(1, n):
        x[:, t] = rho * x[:, t - 1] + eps[:, t]
    if offsets is not None:
        x = x + np.asarray(offsets)[:, None, None]
    return x


def test_diagnostics_match_pyro_and_ar1_theory():
    from pyro.ops.stats import effective_sample_size as pyro_ess
    from pyro.ops.stats import split_gelman_rubin

    x = _ar1_chains()
    t = torch.tensor(x)
    np.testing.assert_allclose(split_rhat(x), split_gelman_rubin(t).numpy(), rtol=1e-10)
    # pyro divides the lag-k autocovariance by N - k, Stan (and we) by N: 0.3 % apart here
    np.testing.assert_allclose(effective_sample_size(x), pyro_ess(t).numpy(), rtol=0.01)
    # AR(1): ESS = N (1 - rho) / (1 + rho)
    assert np.all(np.abs(effective_sample_size(x) / (8000 * 0.2 / 1.8) - 1) < 0.2)
    assert (split_rhat(x) < 1.01).all()
    # chains stuck at different places: R-hat flags it
    assert (split_rhat(_ar1_chains(offsets=[0, 0, 0, 3])) > 1.1).all()


def _logistic_problem():
    """A small Bayesian logistic regression: 3 weights, prior N(0, 2^2), 60 points."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(60, 3, generator=g, dtype=F64)
    y = (
        torch.rand(60, generator=g, dtype=F64)
        < torch.sigmoid(x @ torch.tensor([1.5, -1.0, 0.5], dtype=F64))
    ).to(F64)

    def potential(w):
        logits = w @ x.T
        ll = (y * logits - torch.nn.functional.softplus(logits)).sum(-1)
        return -(ll - 0.125 * (w * w).sum(-1))

    return potential


def test_hmc_agrees_with_pyro_nuts():
    u = _logistic_problem()
    init = torch.zeros(2, 3, dtype=F64)
    ours = hmc(
        u, init, n_samples=1000, n_warmup=200, step_size=0.2, n_steps=10, seed=1, progress=False
    )
    theirs = nuts(u, init, n_samples=600, n_warmup=200, seed=1)
    a, b = summarize(ours.samples), summarize(theirs.samples)
    for s in (a, b):
        assert (s["rhat"] < 1.01).all() and (s["ess"] > 400).all()
    assert int(ours.divergences.sum()) == 0 and int(theirs.divergences.sum()) == 0
    # posterior means agree within 3 combined Monte Carlo standard errors
    se = np.sqrt(a["mcse"] ** 2 + b["mcse"] ** 2)
    assert (np.abs(a["mean"] - b["mean"]) < 3 * se).all()
    np.testing.assert_allclose(a["sd"], b["sd"], rtol=0.15)
    # and the standard deviations within 4 combined standard errors of the sd
    se_sd = np.sqrt(a["mcse_sd"] ** 2 + b["mcse_sd"] ** 2)
    assert (np.abs(a["sd"] - b["sd"]) < 4 * se_sd).all()
    # NUTS reports the mean Metropolis acceptance probability its adaptation targets (0.8),
    # not the fraction of iterations that moved (which is 1 or close to it)
    assert (theirs.accept_prob > 0.6).all() and (theirs.accept_prob < 0.97).all()
    assert (theirs.move_rate > theirs.accept_prob).all() and (theirs.move_rate <= 1).all()


def test_mcse_sd_matches_the_gaussian_closed_form():
    # iid Gaussian draws: the standard error of the sample sd is sd / sqrt(2 N)
    gen = np.random.default_rng(3)
    x = gen.normal(0.0, 2.0, size=(4, 5000, 3))
    s = summarize(x)
    closed = s["sd"] / np.sqrt(2 * 4 * 5000)
    np.testing.assert_allclose(s["mcse_sd"], closed, rtol=0.1)
    # and it is the spread of the sd over repeated experiments
    sds = gen.normal(0.0, 2.0, size=(400, 2, 500)).std(-1, ddof=1).ravel()
    one = summarize(gen.normal(0.0, 2.0, size=(1, 500, 1)))
    np.testing.assert_allclose(one["mcse_sd"][0], sds.std(), rtol=0.2)


def test_hmc_rejects_bad_input():
    with pytest.raises(ValueError, match="chains, dim"):
        hmc(gaussian_potential, torch.zeros(3, dtype=F64), n_samples=10)
    with pytest.raises(ValueError, match="n_samples"):
        hmc(gaussian_potential, torch.zeros(1, 3, dtype=F64), n_samples=0)
