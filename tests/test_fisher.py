"""physml.fisher and the differentiable simulation: autodiff against linear theory, finite
differences, gradcheck, the other AD mode, checkpointing; Fisher matrices against closed
forms."""

import math

import numpy as np
import pytest
import torch

from physml import fisher
from physml.fisher import (
    FIDUCIAL,
    confidence_ellipse,
    finite_difference,
    fisher_matrix,
    forecast,
    hartlap_factor,
    marginal_errors,
    power_derivatives,
    simulated_power,
)
from physml.simulation import SimulationConfig
from physml.simulation.mesh import cic_readout, cic_readout_padded

TINY = SimulationConfig(n_particles=8, n_mesh=16, n_steps=3)
SMALL = SimulationConfig(n_particles=16, n_mesh=32, n_steps=10)


def test_linear_response_early():
    """At a = 0.1 the field is linear on the largest scales: d ln P / d sigma_8 = 2 / sigma_8
    in the lowest k bin (k_f = 0.25 h/Mpc), seed by seed."""
    cfg = SimulationConfig(n_particles=32, n_mesh=64, n_steps=5)
    for seed in (1, 2, 3):
        _, pk, dpk = power_derivatives(FIDUCIAL, seed, cfg, a_end=0.1, params=(1,))
        assert dpk[0, 0] / pk[0] == pytest.approx(2.0 / FIDUCIAL[1], rel=0.03)


def test_forward_equals_reverse_mode():
    """Forward mode (gathered CIC readout) and reverse mode (grid_sample) agree."""
    _, pf, df = power_derivatives(FIDUCIAL, 1, TINY, method="forward")
    _, pr, dr = power_derivatives(FIDUCIAL, 1, TINY, method="reverse")
    assert torch.allclose(pf, pr, rtol=1e-5)
    assert torch.allclose(df, dr, rtol=1e-4, atol=1e-4 * dr.abs().max().item())


def test_gathered_readout_matches_grid_sample():
    gen = torch.Generator().manual_seed(0)
    mesh = torch.randn(2, 8, 8, 8, generator=gen, dtype=torch.float64)
    pos = torch.rand(50, 3, generator=gen, dtype=torch.float64) * 5.0
    ref = cic_readout(mesh, pos, 5.0)
    import torch.autograd.forward_ad as fwAD

    with fwAD.dual_level():
        dual = fwAD.make_dual(pos, torch.zeros_like(pos))
        padded = torch.nn.functional.pad(mesh[None], (0, 1, 0, 1, 0, 1), mode="circular")[0]
        out = fwAD.unpack_dual(cic_readout_padded(padded, dual, 5.0)).primal
    assert torch.allclose(out, ref, rtol=1e-12, atol=1e-12)


def test_finite_differences_agree_with_autodiff():
    cfg = SimulationConfig(n_particles=8, n_mesh=16, n_steps=5)
    _, pk, dpk = power_derivatives(FIDUCIAL, 2, cfg, dtype=torch.float64)
    fd = finite_difference(FIDUCIAL, 2, cfg, 1e-5, dtype=torch.float64)
    assert torch.allclose(fd, dpk, rtol=1e-3, atol=1e-3 * dpk.abs().max().item())


def test_gradcheck_float64_tiny_box():
    def f(om, s8):
        return simulated_power((om, s8), 5, TINY, dtype=torch.float64)[1]

    th = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in FIDUCIAL]
    assert torch.autograd.gradcheck(f, th, eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_checkpoint_gives_equal_gradients(dtype):
    grads = []
    for ckpt in (False, True):
        th = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in FIDUCIAL]
        _, pk = simulated_power(th, 4, SMALL, dtype=dtype, checkpoint=ckpt)
        grads.append(torch.stack(torch.autograd.grad(pk.log().sum(), th)))
    assert torch.allclose(grads[0], grads[1], rtol=1e-10, atol=0.0)


def test_fisher_of_linear_gaussian_model():
    """mu = A theta + noise N(0, C): F = A C^-1 A^T (closed form); from 4000 samples the
    Hartlap-corrected estimate is within a few per cent."""
    rng = np.random.default_rng(0)
    b = 6
    a = rng.normal(size=(2, b))
    l = rng.normal(size=(b, b)) * 0.3 + np.eye(b)
    cov = l @ l.T
    exact = a @ np.linalg.inv(cov) @ a.T
    assert np.allclose(fisher_matrix(a, cov), exact)
    samples = rng.multivariate_normal(np.zeros(b), cov, size=4000)
    ((_, f, err),) = forecast(samples, np.broadcast_to(a, (4000, 2, b)))
    assert np.allclose(f, exact, rtol=0.05)
    assert np.allclose(err, np.sqrt(np.diag(np.linalg.inv(exact))), rtol=0.03)
    assert hartlap_factor(4000, b) == pytest.approx((4000 - b - 2) / 3999)
    # derivatives from fewer runs than the covariance (e.g. fixed-and-paired pairs): the
    # first round(n M / N) of them go with the first n seeds
    d = a + rng.normal(size=(40, 2, b))
    for n, f_n, _ in forecast(samples, d, [100, 4000]):
        m = round(n * 40 / 4000)
        expect = fisher_matrix(d[:m].mean(0), np.cov(samples[:n], rowvar=False), n_sims=n)
        assert np.allclose(f_n, expect)
    with pytest.raises(ValueError, match="more simulations"):
        hartlap_factor(7, b)


def test_confidence_ellipse_holds_its_probability():
    cov = np.array([[2.0, 0.8], [0.8, 1.0]])
    for n_sigma, level in ((1, 2.2957), (2, 6.1801)):
        pts = confidence_ellipse([0.0, 0.0], cov, n_sigma)
        chi2 = np.einsum("ni,ij,nj->n", pts, np.linalg.inv(cov), pts)
        assert np.allclose(chi2, level, rtol=1e-3)
    # Monte Carlo: the 1-sigma region holds 68.3 % of Gaussian draws
    rng = np.random.default_rng(1)
    x = rng.multivariate_normal([0, 0], cov, size=20000)
    inside = np.einsum("ni,ij,nj->n", x, np.linalg.inv(cov), x) < 2.2957
    assert inside.mean() == pytest.approx(math.erf(1 / math.sqrt(2)), abs=0.01)
    assert marginal_errors(np.linalg.inv(cov)) == pytest.approx(np.sqrt(np.diag(cov)))


def test_checkpoint_with_a_custom_time_dependent_solver():
    """nbody(checkpoint=True) recomputes a user solver(pos, a) too: equal gradients, also for
    a parameter that only the solver holds."""
    from physml.cosmology import Cosmology
    from physml.simulation import ForceSolver, initial_conditions, nbody

    grads = []
    for ckpt in (False, True):
        s8 = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
        w = torch.tensor(0.1, requires_grad=True)
        cosmo = Cosmology(0.3, s8)
        base = ForceSolver(SMALL.n_mesh, SMALL.box_size, cosmo.omega_m)

        def solver(pos, a, base=base, w=w):
            return base(pos, a) * (1.0 + w * a.float())

        x, p = initial_conditions(cosmo, 6, SMALL)
        x, _ = nbody(x, p, cosmo, SMALL.steps(), SMALL.n_mesh, SMALL.box_size, solver=solver,
                     checkpoint=ckpt)  # fmt: skip
        loss = torch.sin(x).sum()
        grads.append(torch.stack([g.double() for g in torch.autograd.grad(loss, [s8, w])]))
    assert torch.allclose(grads[0], grads[1], rtol=1e-10, atol=0.0)


def test_seed_responses_cache_and_spectra_only(tmp_path, monkeypatch):
    """P(k) without derivatives equals the P(k) of the autodiff path; the cache returns
    what was computed; fixed-amplitude ICs are a different run with its own cache key."""
    monkeypatch.setattr(fisher, "cache_dir", lambda: tmp_path)
    k, pk, dpk = fisher.seed_responses([1, 2], TINY)
    k2, pk2, none = fisher.seed_responses([1, 2], TINY, derivatives=False)
    assert none is None and dpk.shape == (2, 2, len(k))
    np.testing.assert_allclose(pk2, pk, rtol=1e-5)
    np.testing.assert_array_equal(fisher.seed_responses([1, 2], TINY)[2], dpk)  # cached
    _, pkx, _ = fisher.seed_responses([1, 2], TINY, derivatives=False, fixed_amplitude=True)
    assert not np.allclose(pkx, pk)
    assert len(list(tmp_path.iterdir())) == 3


def test_prior_fisher_is_the_uniform_variance():
    # alone: the marginal errors are the standard deviations of the uniform priors
    errs = fisher.marginal_errors(fisher.prior_fisher())
    np.testing.assert_allclose(errs, [0.4 / math.sqrt(12), 0.4 / math.sqrt(12)], rtol=1e-12)
    # with a degenerate data Fisher matrix: by brute force, the posterior covariance of the
    # product of the two Gaussians (precision matrices add), sampled
    f_data = np.array([[17.9, 28.1], [28.1, 46.9]])
    prior = fisher.prior_fisher({"Omega_m": (0.1, 0.5), "sigma_8": (0.6, 1.0)})
    gen = np.random.default_rng(0)
    x = gen.multivariate_normal([0, 0], np.linalg.inv(f_data), size=400_000)
    w = np.exp(-0.5 * np.einsum("ni,ij,nj->n", x, prior, x))  # importance weights: the prior
    m = (w[:, None] * x).sum(0) / w.sum()
    sd = np.sqrt((w[:, None] * (x - m) ** 2).sum(0) / w.sum())
    np.testing.assert_allclose(fisher.marginal_errors(f_data + prior), sd, rtol=0.02)
    with pytest.raises(ValueError, match="hi > lo"):
        fisher.prior_fisher({"Omega_m": (0.5, 0.1), "sigma_8": (0.6, 1.0)})
    with pytest.raises(ValueError, match="sigma_8"):
        fisher.prior_fisher({"Omega_m": (0.1, 0.5)})
