"""Gaussian random fields: the rfft likelihood against a dense multivariate normal."""

import math

import pytest
import torch

from physml import grf
from physml.simulation.mesh import power_spectrum


def _dense_covariance(lam, n):
    # the colouring map applied to every unit vector: C = A A^T, no mode pairing involved
    eye = torch.eye(n**3, dtype=torch.float64).view(-1, n, n, n)
    a = grf.colour(eye, lam).reshape(n**3, -1).T
    return a @ a.T


@pytest.mark.parametrize("theta", [(0.3, 0.8), (0.15, 0.95)])
def test_log_likelihood_matches_dense_gaussian(theta):
    n, box = 4, grf.GRF_BOX
    lam = grf.eigenvalues(grf.power_on_modes(*theta, n, box), n, box)
    cov = _dense_covariance(lam, n)
    mvn = torch.distributions.MultivariateNormal(
        torch.zeros(n**3, dtype=torch.float64), covariance_matrix=cov
    )
    for seed in range(3):
        x = grf.sample_field(0.3, 0.8, n, box, seed=seed)
        ref = mvn.log_prob(x.reshape(-1))
        assert torch.allclose(grf.log_likelihood(x, *theta, box), ref, rtol=0, atol=1e-8)
        shells = grf.ShellStatistics(x, box).log_likelihood(*theta)
        assert torch.allclose(shells, ref, rtol=0, atol=1e-8)


def test_dense_covariance_is_stationary_and_symmetric():
    n = 4
    lam = grf.eigenvalues(grf.power_on_modes(0.3, 0.8, n, grf.GRF_BOX), n, grf.GRF_BOX)
    cov = _dense_covariance(lam, n)
    assert torch.allclose(cov, cov.T, atol=1e-10)
    # translation invariance: C(x, y) depends on x - y only
    c = cov.view(n, n, n, n, n, n)
    assert torch.allclose(c[1, 2, 3, 0, 1, 1], c[2, 3, 0, 1, 2, 2], atol=1e-10)
    # the variance is the sum of the eigenvalues over N
    w = grf.mode_weights(n)
    assert torch.allclose(
        cov.diagonal(), (w * lam).sum() / n**3 * torch.ones(n**3, dtype=torch.float64)
    )


def test_sampled_fields_have_the_input_power_spectrum():
    n, box = 32, grf.GRF_BOX
    x = torch.stack([grf.sample_field(0.3, 0.8, n, box, seed=s) for s in range(8)])
    ps = [power_spectrum(f, box, n_bins=8) for f in x]
    k, n_modes = ps[0][0], ps[0][2]
    pk = torch.stack([p[1] for p in ps]).mean(0)
    from physml.cosmology import Cosmology

    ref = Cosmology(0.3, 0.8).linear_power(k)
    # bin average vs P at the mean |k|: allow the scatter of 8 boxes plus 5 % curvature
    tol = 4 / torch.sqrt(8 * n_modes) + 0.05
    assert torch.all((pk / ref - 1).abs() < tol)


def test_bad_field_shape():
    with pytest.raises(ValueError, match="field"):
        grf.log_likelihood(torch.zeros(4, 4, 5), 0.3, 0.8)
    with pytest.raises(ValueError, match="even"):
        grf.log_likelihood(torch.zeros(5, 5, 5), 0.3, 0.8)
    assert math.isfinite(float(grf.log_likelihood(torch.zeros(4, 4, 4), 0.3, 0.8)))


def test_power_table_and_vectorised_likelihood_match_the_exact_ones():
    n = 8
    table = grf.PowerTable(n)
    theta = grf.sample_prior(6, torch.Generator().manual_seed(0))
    x = grf.sample_field(0.3, 0.8, n, seed=4)
    shells = grf.ShellStatistics(x)
    fast = shells.log_likelihood_table(theta, table)
    exact = torch.stack([grf.log_likelihood(x, om, s8) for om, s8 in theta.tolist()])
    # ln P interpolated to < 3e-5: at most 512 cells * 3e-5 nats apart
    assert torch.allclose(fast, exact, atol=0.02, rtol=0)
    with pytest.raises(ValueError, match="Omega_m outside"):
        table.log_power(torch.tensor([[0.6, 0.8]], dtype=torch.float64))
