"""Field-level inference: the forward models against the simulation code they reuse, the
log posterior's gradient against finite differences, the linear model's exact posterior and
Wiener filter against dense linear algebra, and field-level HMC on a 4^3 mesh against both;
the exercise self-checks fed wrong answers."""

import math

import numpy as np
import pytest
import torch

from physml import fieldlevel as fl
from physml import grf, hmc
from physml.cosmology import Cosmology
from physml.simulation import ics
from physml.simulation.mesh import overdensity, wavenumbers
from physml.simulation.run import SimulationConfig, initial_conditions

F64 = torch.float64
THETA = torch.tensor([0.3, 0.8], dtype=F64)


def test_linear_modes_from_noise_reproduces_the_seeded_modes_bit_for_bit():
    cosmo = Cosmology(0.27, 0.85)
    for n, dtype, fixed in ((8, torch.float32, False), (16, torch.float64, True)):
        w = ics.white_noise(5, n, fixed_amplitude=fixed)
        # the formula of linear_modes before it called linear_modes_from_noise
        kx, ky, kz = wavenumbers(n, 25.0, None, F64)
        k = torch.sqrt(kx**2 + ky**2 + kz**2)
        k[0, 0, 0] = 1.0
        amp = torch.sqrt(cosmo.linear_power(k) / 25.0**3) * n**3
        ref = w.to(torch.complex64 if dtype == torch.float32 else torch.complex128) * amp.to(dtype)
        seeded = ics.linear_modes(cosmo, 5, n, 25.0, dtype=dtype, fixed_amplitude=fixed)
        assert torch.equal(seeded, ref)
        assert torch.equal(ics.linear_modes_from_noise(cosmo, w, 25.0, dtype), ref)
    with pytest.raises(ValueError, match="w: expected complex"):
        ics.linear_modes_from_noise(cosmo, torch.zeros(8, 8, 8), 25.0)


def test_linear_forward_model_is_the_gaussian_field_of_grf():
    model = fl.ForwardModel(n=8)
    s = torch.randn(8, 8, 8, generator=torch.Generator().manual_seed(3), dtype=F64)
    ref = grf.sample_field(0.3, 0.8, 8, grf.GRF_BOX, seed=3)  # the same white noise
    torch.testing.assert_close(model.density(s, THETA), ref, rtol=1e-6, atol=1e-9)
    # the interpolated P(k) against the exact one, inside the prior box
    for om, s8 in ((0.1234, 0.61), (0.4567, 0.99)):
        p = model.power.power_on_modes(torch.tensor([[om, s8]], dtype=F64))[0]
        exact = grf.power_on_modes(om, s8, 8, grf.GRF_BOX)
        assert float((p / exact - 1).abs().max()) < 1e-5


@pytest.mark.parametrize("order", [1, 2])
def test_lpt_forward_model_matches_the_simulations_initial_conditions(order):
    n, box, a0 = 8, 25.0, 0.5
    cosmo = Cosmology(0.3, 0.8)
    config = SimulationConfig(box_size=box, n_particles=n, n_mesh=n, a_start=a0)
    x_ref, _ = initial_conditions(cosmo, 7, config, dtype=F64)
    s = torch.fft.irfftn(ics.white_noise(7, n).to(torch.complex128), s=(n, n, n), norm="ortho")
    model = fl.ForwardModel(n=n, box_size=box, kind="lpt", lpt_order=order, a=a0)
    x = torch.remainder(model.positions(s, THETA), box)
    if order == 1:  # the reference is 2LPT: add its second-order term by hand
        _, psi2 = ics.lpt_displacements(ics.linear_modes(cosmo, 7, n, box, dtype=F64), box)
        d2 = ics.second_order_growth(cosmo, torch.tensor(a0, dtype=F64))[0]
        x = torch.remainder(x + d2 * psi2, box)
    gap = torch.remainder(x - x_ref + box / 2, box) - box / 2  # minimum image
    assert float(gap.abs().max()) < 1e-5  # Mpc/h; the seeded noise is float32
    if order == 2:
        delta = model.density(s, THETA)
        torch.testing.assert_close(delta, overdensity(x_ref, n, box), rtol=0, atol=1e-4)


@pytest.mark.parametrize("kind", ["linear", "lpt"])
def test_log_posterior_gradient_matches_finite_differences(kind):
    model = fl.ForwardModel(n=4, kind=kind, noise_std=0.5)
    gen = torch.Generator().manual_seed(1)
    _, d = model.simulate(THETA[None], gen)
    post = fl.FieldPosterior(model, d[0])
    z = post.initial_points(1, gen)[0]
    zg = z.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(post(zg), zg)
    h = 1e-6
    for v in (torch.randn(post.dim, generator=gen, dtype=F64), torch.eye(post.dim, dtype=F64)[-1]):
        fd = (post(z + h * v) - post(z - h * v)) / (2 * h)
        assert abs(float(fd) - float(g @ v)) < 1e-5 * (1 + abs(float(fd)))


def _dense_colouring(model):
    n3 = model.n**3
    eye = torch.eye(n3, dtype=F64).view(n3, model.n, model.n, model.n)
    return model.density(eye, THETA.expand(n3, 2)).reshape(n3, n3).T  # delta = A s


def test_exact_likelihood_and_wiener_filter_against_dense_linear_algebra():
    model = fl.ForwardModel(n=4, noise_std=0.7)
    _, d = model.simulate(THETA[None], torch.Generator().manual_seed(2))
    d = d[0]
    a = _dense_colouring(model)
    noise = model.noise_std**2 * torch.eye(64, dtype=F64)
    dense = torch.distributions.MultivariateNormal(torch.zeros(64, dtype=F64), a @ a.T + noise)
    exact = fl.exact_log_likelihood(model, d, THETA[None])
    torch.testing.assert_close(exact, dense.log_prob(d.reshape(-1))[None], rtol=1e-9, atol=1e-8)
    prec = torch.eye(64, dtype=F64) + a.T @ a / model.noise_std**2
    mean_dense = torch.linalg.solve(prec, a.T @ d.reshape(-1) / model.noise_std**2)
    mean, var, _ = fl.wiener_filter(model, d, THETA)
    torch.testing.assert_close(mean.reshape(-1), mean_dense, rtol=1e-9, atol=1e-10)
    # the mode variances: the dense posterior covariance is diagonal in Fourier space
    cov = torch.linalg.inv(prec)
    assert abs(float(cov.trace()) - float((grf.mode_weights(4) * var).sum())) < 1e-9


def test_field_level_hmc_matches_the_exact_theta_posterior_on_a_4cube():
    model = fl.ForwardModel(n=4, noise_std=0.5)
    _, d = model.simulate(THETA[None], torch.Generator().manual_seed(0))
    run = fl.sample_field_posterior(
        model, d[0], n_chains=8, n_samples=500, n_steps=12, windows=(40, 80), n_warmup=80
    )
    assert int(run.divergences.sum()) == 0
    assert run.gradient_evaluations > 8 * (40 + 80 + 80 + 500)
    check = fl.compare_with_exact(run.theta, fl.exact_posterior(model, d[0]))
    assert check["rhat"].max() < 1.02
    assert check["passed"], check
    # the check fails for a posterior that is 20 % too wide
    wide = run.theta.mean((0, 1)) + 1.2 * (run.theta - run.theta.mean((0, 1)))
    assert not fl.compare_with_exact(wide, fl.exact_posterior(model, d[0]))["passed"]


def test_hmc_at_fixed_theta_finds_the_wiener_filter():
    model = fl.ForwardModel(n=4, noise_std=0.5)
    gen = torch.Generator().manual_seed(4)
    _, d = model.simulate(THETA[None], gen)
    post = fl.FieldPosterior(model, d[0], theta_fixed=THETA)
    init = torch.randn(4, post.dim, generator=gen, dtype=F64)
    res = hmc.hmc(post, init, 600, n_warmup=150, step_size=0.2, n_steps=10, progress=False)
    mean, var, snr = fl.wiener_filter(model, d[0], THETA)
    modes = torch.fft.rfftn(res.samples.reshape(-1, 4, 4, 4), dim=(-3, -2, -1), norm="ortho")
    got = modes.mean(0)
    want = torch.fft.rfftn(mean, norm="ortho")
    strong = snr > 1
    x = torch.cat([got.real[strong], got.imag[strong]])
    y = torch.cat([want.real[strong], want.imag[strong]])
    keep = y.abs() > 0  # the imaginary parts of self-conjugate modes are zero
    assert float(torch.corrcoef(torch.stack([x[keep], y[keep]]))[0, 1]) >= 0.99
    # and mode by mode within the Monte Carlo error (ESS from the chains, pooled)
    ess = float(np.median(hmc.effective_sample_size(res.samples)))
    z = (got - want).abs() / torch.sqrt(var / 2 / ess)
    assert float(z[strong].max()) < 5.0
    var_hmc = ((modes - got).abs() ** 2).mean(0)
    assert float((var_hmc[strong] / var[strong]).mean()) == pytest.approx(1.0, abs=0.15)


def test_hmc_adapted_learns_scales_that_differ_by_a_thousand():
    scales = torch.tensor([1e-3, 1.0, 0.3], dtype=F64)

    def potential(q):
        return 0.5 * ((q / scales) ** 2).sum(-1)

    counted = hmc.CountingPotential(potential)
    res = hmc.hmc_adapted(counted, torch.zeros(4, 3, dtype=F64), 400, progress=False)
    sd = res.samples.reshape(-1, 3).std(0)
    assert float((sd / scales - 1).abs().max()) < 0.15
    assert counted.count >= 4 * (50 + 100 + 200 + 100 + 400)  # >= 1 gradient per iteration
    with pytest.raises(ValueError, match="samples: expected"):
        hmc.diagonal_inverse_mass(torch.zeros(5, 3))


def test_summaries_and_embedding():
    model = fl.ForwardModel(n=8)
    gen = torch.Generator().manual_seed(5)
    _, d = model.simulate(torch.tensor([[0.3, 0.8], [0.3, 0.6]], dtype=F64), gen)
    summ = fl.power_summary(d, model.box_size, n_bins=4)
    assert summ.shape == (2, 4)
    with pytest.raises(ValueError, match="n_bins"):
        fl.power_summary(d, model.box_size, n_bins=40)
    emb = fl.FieldEmbedding(context=6, channels=4)
    out = emb(d)
    assert out.shape == (2, 6)
    # periodic padding and a mean / std readout: invariant under shifts by the stride (4)
    shifted = torch.roll(d, shifts=(4, -4, 4), dims=(1, 2, 3))
    torch.testing.assert_close(emb(shifted), out, rtol=1e-4, atol=1e-5)
    area = fl.credible_area(np.random.default_rng(0).normal(size=(20000, 2)) * [0.1, 0.2])
    assert area == pytest.approx(math.pi * 2.2788 * 0.02, rel=0.03)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="kind"):
        fl.ForwardModel(kind="nbody")
    with pytest.raises(ValueError, match="noise_std"):
        fl.ForwardModel(noise_std=0.0)
    with pytest.raises(ValueError, match="n: expected a power of two"):
        fl.ForwardModel(n=6)
    model = fl.ForwardModel(n=4)
    with pytest.raises(ValueError, match="s: expected"):
        model.density(torch.zeros(5, 5, 5), THETA)
    with pytest.raises(ValueError, match="d: expected"):
        fl.FieldPosterior(model, torch.zeros(8, 8, 8))
    with pytest.raises(ValueError, match="linear model only"):
        fl.exact_log_likelihood(fl.ForwardModel(n=4, kind="lpt"), torch.zeros(4, 4, 4), THETA[None])


def test_self_checks_accept_the_answer_and_explain_wrong_ones():
    model = fl.ForwardModel(n=8, noise_std=0.5)
    _, d = model.simulate(THETA[None], torch.Generator().manual_seed(6))
    d = d[0]
    lam, noise = model.eigenvalues(THETA), model.noise_std**2
    dk = torch.fft.rfftn(d)

    def filtered(f):
        return torch.fft.irfftn(dk * f, s=(8, 8, 8))

    ok, msg = fl.check_wiener_filter(filtered(lam.sqrt() / (lam + noise)), model, d, THETA)
    assert ok, msg
    ok, msg = fl.check_wiener_filter(filtered(lam / (lam + noise)), model, d, THETA)
    assert not ok and "mean of delta" in msg
    ok, msg = fl.check_wiener_filter(filtered(lam.rsqrt()), model, d, THETA)
    assert not ok and "noise power" in msg
    ok, msg = fl.check_wiener_filter(filtered(lam.sqrt() / (lam + 2 * noise)), model, d, THETA)
    assert not ok and "largest gap" in msg
    ok, msg = fl.check_wiener_filter(d[:4], model, d, THETA)
    assert not ok and "shape" in msg

    def right(theta):
        return fl.exact_log_likelihood(model, d, theta) + 12.0

    def noiseless(theta):
        return grf.log_likelihood_eigen(d.expand(len(theta), -1, -1, -1), model.eigenvalues(theta))

    ok, msg = fl.check_marginal_likelihood(right, model, d)
    assert ok and "constant" in msg
    ok, msg = fl.check_marginal_likelihood(noiseless, model, d)
    assert not ok and "without noise" in msg

    def once(theta):
        lam_n = model.eigenvalues(theta) + noise
        dk2 = torch.fft.rfftn(d).abs() ** 2
        return -0.5 * (dk2 / lam_n / 512 + torch.log(lam_n)).sum((-3, -2, -1))

    ok, msg = fl.check_marginal_likelihood(once, model, d)
    assert not ok and "counted once" in msg
    ok, msg = fl.check_marginal_likelihood(lambda t: right(t) * 1.01, model, d)
    assert not ok and "differs" in msg
    ok, msg = fl.check_marginal_likelihood(lambda t: t.sum(), model, d)
    assert not ok and "shape" in msg
    ok, msg = fl.check_marginal_likelihood(lambda t: 1 / 0, model, d)
    assert not ok and "ZeroDivisionError" in msg


def test_npe_pieces_and_the_gaussian_ellipse():
    model = fl.ForwardModel(n=8)
    a = fl.simulate_dataset(model, 30, seed=1, n_bins=6, keep_fields=True)
    b = fl.simulate_dataset(model, 30, seed=1, n_bins=6)
    assert a["summary"].shape == (30, 6) and a["fields"].shape == (30, 8, 8, 8)
    torch.testing.assert_close(a["summary"], b["summary"])  # seeded
    assert ((a["theta"] >= fl._LO) & (a["theta"] <= fl._HI)).all()  # the flat prior's box
    for kind in ("power", "cnn"):
        net = fl.make_npe(kind, a)
        x = fl.npe_inputs(kind, a)
        assert torch.isfinite(net.log_prob((x, a["theta"].float()))).all()
        assert fl.npe_samples(net, x[:3], 7).shape == (7, 3, 2)
    with pytest.raises(ValueError, match="kind"):
        fl.make_npe("gnn", a)
    # the ellipse: every point at Mahalanobis radius sqrt(chi2_2(0.68)) of the samples
    rng = np.random.default_rng(1)
    samples = rng.multivariate_normal([0.3, 0.8], [[0.01, 0.004], [0.004, 0.003]], 5000)
    pts = fl.gaussian_ellipse(samples, 0.68)
    prec = np.linalg.inv(np.cov(samples.T))
    r2 = np.einsum("ij,jk,ik->i", pts - samples.mean(0), prec, pts - samples.mean(0))
    np.testing.assert_allclose(r2, -2 * math.log(0.32), rtol=1e-9)
