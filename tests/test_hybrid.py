"""The hybrid physical-neural PM correction: identity at f = 0, the spline against scipy,
isotropy, gradients (gradcheck in float64), the cross-power and r(k) in closed form."""

import math

import numpy as np
import pytest
import torch
from scipy.interpolate import CubicSpline

from physml.cosmology import Cosmology
from physml.simulation import (
    ForceSolver,
    cross_power_spectrum,
    initial_conditions,
    nbody,
    power_spectrum,
)
from physml.simulation.hybrid import (
    Comparison,
    CorrectionNet,
    HybridConfig,
    HybridForceSolver,
    coarse_run,
    hybrid_loss,
    power_ratio_and_correlation,
    reference_run,
    spline_basis,
)
from physml.simulation.mesh import wavenumbers

BOX = 25.0
TINY = HybridConfig(n_particles=8, n_mesh=8, n_steps=2, ref_mesh=16, ref_substeps=2, pk_mesh=8)


def _random_net(config, seed=0, scale=0.3, dtype=torch.float32):
    torch.manual_seed(seed)
    net = CorrectionNet.for_config(config).to(dtype)
    with torch.no_grad():
        net.out.weight.normal_(0.0, scale)
        net.out.bias.normal_(0.0, scale)
    return net


def _particles(n=2000, seed=1, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, generator=gen, dtype=dtype) * BOX


def test_zero_correction_is_the_plain_solver_exactly():
    cfg = HybridConfig()
    net = CorrectionNet.for_config(cfg)  # its last layer starts at zero
    omega_m = torch.tensor(0.3, dtype=torch.float64)
    hybrid = HybridForceSolver(cfg.n_mesh, BOX, omega_m, net)
    plain = ForceSolver(cfg.n_mesh, BOX, omega_m)
    pos, a = _particles(), torch.tensor(0.5, dtype=torch.float64)
    assert torch.equal(hybrid(pos, a), plain(pos, a))
    cosmo = Cosmology(0.3, 0.8)
    x, p = pos, torch.zeros_like(pos)
    steps = np.linspace(0.1, 1.0, 4)
    xh, _ = nbody(x, p, cosmo, steps, cfg.n_mesh, BOX, solver=hybrid)
    xp, _ = nbody(x, p, cosmo, steps, cfg.n_mesh, BOX)
    assert torch.equal(xh, xp)


def test_corrected_force_is_the_plain_force_with_a_filtered_kernel():
    # knot values (0, c, c, ...): the Green's function times 1 + the natural spline through
    # them, evaluated independently with scipy at every |k| of the mesh
    cfg, c = HybridConfig(), 0.37
    net = CorrectionNet.for_config(cfg)
    with torch.no_grad():
        net.out.bias.fill_(c)  # every knot but k = 0, which is held at zero
    hybrid = HybridForceSolver(cfg.n_mesh, BOX, 0.3, net)
    plain = ForceSolver(cfg.n_mesh, BOX, 0.3)
    knots = net.knots.double().numpy()
    spline = CubicSpline(knots, np.r_[0.0, np.full(len(knots) - 1, c)], bc_type="natural")
    kx, ky, kz = wavenumbers(cfg.n_mesh, BOX, dtype=torch.float64)
    kk = torch.sqrt(kx**2 + ky**2 + kz**2).numpy()
    plain.kernel = plain.kernel * torch.from_numpy(1.0 + spline(kk)).float()
    pos, a = _particles(), torch.tensor(0.7, dtype=torch.float64)
    torch.testing.assert_close(hybrid(pos, a), plain(pos, a), rtol=1e-4, atol=1e-5)


def test_spline_interpolates_its_knots_and_matches_scipy():
    knots = torch.linspace(0.0, 7.0, 16, dtype=torch.float64)
    assert torch.allclose(spline_basis(knots, knots), torch.eye(16, dtype=torch.float64))
    y = torch.randn(16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x = torch.rand(500, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * 7
    ours = spline_basis(x, knots) @ y
    ref = CubicSpline(knots.numpy(), y.numpy(), bc_type="natural")(x.numpy())
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-10, atol=1e-10)
    # a natural cubic spline reproduces a straight line exactly; clamped outside the knots
    line = spline_basis(x, knots) @ (2.0 * knots - 1.0)
    torch.testing.assert_close(line, 2.0 * x - 1.0)
    out = spline_basis(torch.tensor([-1.0, 9.0], dtype=torch.float64), knots) @ y
    torch.testing.assert_close(out, y[[0, -1]])


def test_corrected_force_is_isotropic():
    # the filter depends on |k| only: permuting or flipping the axes of the particle set
    # permutes or flips the force
    cfg = HybridConfig()
    solver = HybridForceSolver(cfg.n_mesh, BOX, 0.3, _random_net(cfg))
    pos, a = _particles(), torch.tensor(0.6, dtype=torch.float64)
    force = solver(pos, a)
    assert force.abs().max() > 0
    perm = [2, 0, 1]
    torch.testing.assert_close(solver(pos[:, perm], a), force[:, perm], rtol=1e-4, atol=1e-4)
    flip = torch.tensor([-1.0, 1.0, 1.0])
    mirrored = torch.remainder(pos * flip, BOX)
    torch.testing.assert_close(solver(mirrored, a), force * flip, rtol=1e-4, atol=1e-4)


def test_gradcheck_through_a_tiny_run_in_float64():
    cfg = TINY
    net = _random_net(cfg, scale=0.1, dtype=torch.float64)
    cosmo = Cosmology(0.3, 0.8)
    x, p = (t.double() for t in initial_conditions(cosmo, 5, cfg.simulation_config()))
    bias = net.out.bias.detach().clone().requires_grad_(True)
    del net.out.bias  # from here on a plain tensor attribute: the run is a function of it

    def run(b):
        net.out.bias = b
        solver = HybridForceSolver(cfg.n_mesh, cfg.box_size, cosmo.omega_m, net)
        xf, _ = nbody(x, p, cosmo, cfg.steps(), cfg.n_mesh, cfg.box_size, solver=solver)
        return xf[:40]

    assert torch.autograd.gradcheck(run, (bias,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradient_reaches_every_network_parameter():
    cfg = TINY
    net = _random_net(cfg, scale=0.1)
    ref = reference_run(0.3, 0.8, 2, cfg, cache_dir=False)
    loss = hybrid_loss(coarse_run(0.3, 0.8, 2, cfg, net), ref, cfg)
    loss.backward()
    for name, prm in net.named_parameters():
        assert prm.grad is not None and prm.grad.abs().sum() > 0, name


def test_reference_cache_round_trip(tmp_path):
    fresh = reference_run(0.3, 0.8, 1, TINY, cache_dir=tmp_path)
    assert len(list((tmp_path / "hybrid").glob("*.npz"))) == 1
    cached = reference_run(0.3, 0.8, 1, TINY, cache_dir=tmp_path)
    assert torch.equal(fresh, cached)
    assert fresh.shape == (TINY.n_steps, TINY.n_particles**3, 3)
    other = reference_run(0.3, 0.8, 2, TINY, cache_dir=tmp_path)  # another key
    assert not torch.equal(fresh, other)


def test_identical_fields_give_ratio_and_correlation_one():
    pos = _particles(4000)
    _, ratio, r = power_ratio_and_correlation(pos, pos.clone(), HybridConfig())
    torch.testing.assert_close(ratio, torch.ones_like(ratio))
    torch.testing.assert_close(r, torch.ones_like(r))


def test_cross_power_closed_forms():
    n = 32
    gen = torch.Generator().manual_seed(0)
    d = torch.randn(n, n, n, generator=gen, dtype=torch.float64)
    _, p, _ = power_spectrum(d, BOX, 8)
    _, pab, _ = cross_power_spectrum(d, -2.5 * d, BOX, 8)
    torch.testing.assert_close(pab, -2.5 * p)
    # two plane waves of the same k, phase-shifted by phi: r = cos(phi) in their bin
    i = torch.arange(n, dtype=torch.float64)
    kx = 2 * math.pi * 3 / n
    phi = 0.9
    a = torch.cos(kx * i)[:, None, None].expand(n, n, n)
    b = torch.cos(kx * i + phi)[:, None, None].expand(n, n, n)
    args = (BOX, 8)
    _, paa, _ = power_spectrum(a, *args)
    _, pbb, _ = power_spectrum(b, *args)
    _, pab, _ = cross_power_spectrum(a, b, *args)
    hit = paa > 1e-8 * paa.max()
    assert hit.sum() == 1
    torch.testing.assert_close(
        pab[hit] / torch.sqrt(paa[hit] * pbb[hit]), torch.tensor([0.9]).double().cos()
    )
    with pytest.raises(ValueError, match="differ in shape"):
        cross_power_spectrum(a, b[:-1], *args)


def test_summary_figures_in_closed_form():
    k = np.array([0.5, 1.0, 1.5, 2.0, 3.0])
    ones = np.ones((2, 5))
    cmp = Comparison(
        0.3,
        0.8,
        [1, 2],
        k,
        ratio_coarse=ones * [0.98, 0.9, 0.8, 0.7, 0.5],
        ratio_hybrid=ones * [0.985, 0.95, 0.92, 0.88, 0.8],
        r_coarse=ones * 0.9,
        r_hybrid=ones * 0.95,
        k_nyquist=4.0,
    )
    s = cmp.summary()  # band: k in [1, 2]; low: k = 0.5
    assert s["deficit_coarse"] == pytest.approx(0.2)
    assert s["deficit_hybrid"] == pytest.approx((0.05 + 0.08 + 0.12) / 3)
    assert s["cut_min"] == pytest.approx(0.5)
    assert s["low_worse_max"] == pytest.approx(-0.005)
    assert s["r_hybrid"] > s["r_coarse"] and s["r_raised_everywhere_in_band"]


def test_bad_config_fails_at_the_boundary():
    with pytest.raises(ValueError, match="n_mesh"):
        HybridConfig(n_mesh=48)
