"""The neural physical engine and the power-law bias model: the l = 0 kernel and its index
map, the periodic convolution (against np.roll), the closed-form expected count (against
scipy quadrature), the symmetry of the likelihood under the 48 cube symmetries, and the
data boxes (on a tiny simulation)."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from physml.bias import (
    IDENTIFIABLE,
    PAPER,
    Box,
    EngineConstants,
    HaloField,
    cube_symmetries,
    engine_network,
    expected_count,
    expected_counts,
    fill_kernel,
    kernel_index_map,
    load_boxes,
    log_intensity,
    log_likelihood,
    mass_function,
    measured_mass_function,
    mixture_fields,
    mixture_params,
    param_names,
    periodic_conv3d,
    posterior_log_likelihood,
    potential,
    simulate_box,
)
from physml.simulation import SimulationConfig

F64 = torch.float64
CUBE_SYMMETRIES = cube_symmetries()


def test_kernel_index_map_counts_and_positions():
    idx, widx = kernel_index_map()
    assert idx.shape == (27, 3) and widx.shape == (27,)
    assert torch.bincount(widx).tolist() == [1, 6, 12, 8]  # centre, faces, edges, corners
    # every position once; weight = squared distance from the centre (0, 1, 2, 3)
    assert len({tuple(r) for r in idx.tolist()}) == 27
    assert torch.equal(widx, ((idx - 1) ** 2).sum(-1))
    assert idx[widx == 0].tolist() == [[1, 1, 1]]


def test_fill_kernel_places_weights_and_is_cube_symmetric():
    w = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=F64)
    k = fill_kernel(w)
    assert k[1, 1, 1] == 1 and k[0, 1, 1] == 2 and k[0, 0, 1] == 3 and k[2, 0, 2] == 4
    assert k.sum() == 1 + 6 * 2 + 12 * 3 + 8 * 4
    for perm, flips in CUBE_SYMMETRIES:
        t = k.permute(perm).flip([d for d in range(3) if flips[d]] or [])
        assert torch.equal(t, k)
    assert fill_kernel(torch.randn(5, 2, 4)).shape == (5, 2, 3, 3, 3)
    with pytest.raises(ValueError, match="weights"):
        fill_kernel(torch.zeros(3))


def test_periodic_conv3d_matches_np_roll():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(2, 6, 6, 6))
    k = rng.normal(size=(3, 3, 3))
    want = np.zeros_like(f)
    for o in itertools.product((-1, 0, 1), repeat=3):
        # out[v] += k[o + 1] f[v + o]
        want += k[o[0] + 1, o[1] + 1, o[2] + 1] * np.roll(f, [-o[0], -o[1], -o[2]], (1, 2, 3))
    got = periodic_conv3d(torch.tensor(f), torch.tensor(k)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    both = periodic_conv3d(torch.tensor(f), torch.tensor(np.stack([k, 2 * k])))
    np.testing.assert_allclose(both[:, 1].numpy(), 2 * want, rtol=1e-12, atol=1e-12)


def _toy_field(n=8, n_boxes=2, n_halos=40, seed=0):
    """A lognormal field and halos placed preferentially in dense voxels."""
    g = torch.Generator().manual_seed(seed)
    smooth = periodic_conv3d(
        torch.randn(n_boxes, n, n, n, generator=g, dtype=F64),
        fill_kernel(torch.tensor([1.0, 0.5, 0.25, 0.1], dtype=F64)),
    )
    x = 0.5 * smooth
    flat = torch.multinomial(x.exp().flatten(), n_halos, replacement=True, generator=g)
    b, rest = flat // n**3, flat % n**3
    voxel = torch.stack([rest // n**2, (rest // n) % n, rest % n], -1)
    log_mass = math.log(2e11) + torch.rand(n_halos, generator=g, dtype=F64) * 4.0
    return HaloField(x=x, halo_box=b, halo_voxel=voxel, log_mass=log_mass, voxel_volume=0.5)


def _theta(seed=1):
    g = torch.Generator().manual_seed(seed)
    return 0.5 * torch.randn(len(param_names("engine")), generator=g, dtype=F64)


def test_shell_features_equal_the_convolution():
    data = _toy_field()
    theta = _theta()[None]
    a = engine_network(theta, data)
    b = engine_network(theta, data, kernel=fill_kernel(theta[:, :4]))
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_transformed_halos_sit_on_the_transformed_field():
    data = _toy_field()
    for perm, flips in CUBE_SYMMETRIES:
        t = data.transformed(perm, flips)
        torch.testing.assert_close(t.at_halos(t.x), data.at_halos(data.x), rtol=0, atol=0)


def test_log_likelihood_invariant_under_the_48_cube_symmetries():
    data = _toy_field()
    theta = _theta()
    ref = log_likelihood("engine", theta, data)
    kernel = fill_kernel(theta[:4])[None]
    rel = [
        abs(float(log_likelihood("engine", theta, data.transformed(p, f), kernel=kernel) - ref))
        / abs(float(ref))
        for p, f in CUBE_SYMMETRIES
    ]
    assert max(rel) < 1e-6  # measured: ~1e-16
    # the power-law model sees each voxel alone: invariant too
    tp = 0.3 * torch.ones(len(param_names("power_law")), dtype=F64)
    refp = log_likelihood("power_law", tp, data)
    for p, f in CUBE_SYMMETRIES:
        got = log_likelihood("power_law", tp, data.transformed(p, f))
        assert abs(float(got - refp)) < 1e-6 * abs(float(refp))


def test_log_likelihood_changes_under_a_non_symmetric_kernel():
    data = _toy_field()
    theta = _theta()
    g = torch.Generator().manual_seed(5)
    kernel = torch.randn(1, 3, 3, 3, generator=g, dtype=F64)
    ref = log_likelihood("engine", theta, data, kernel=kernel)
    rel = [
        abs(float(log_likelihood("engine", theta, data.transformed(p, f), kernel=kernel) - ref))
        / abs(float(ref))
        for p, f in CUBE_SYMMETRIES[1:]  # all but the identity
    ]
    assert min(rel) > 1e-4


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_expected_count_matches_quadrature(seed):
    rng = np.random.default_rng(seed)
    alpha = rng.uniform(1e-3, 1e-1, 2)
    mu = math.log(2e11) + rng.uniform(-3.0, 2.0, 2)
    sigma = rng.uniform(0.3, 2.5, 2)
    volume, u_lo, u_hi = 0.477, math.log(2e11), math.log(5e12)

    def m_n_of_mass(u):  # M times the mass function per unit mass and volume, times V
        return volume * sum(
            a * math.exp(u - m + stats.norm.logpdf(u, m, s))
            for a, m, s in zip(alpha, mu, sigma, strict=True)
        )

    t = [torch.tensor(v, dtype=F64) for v in (np.log(alpha), mu, sigma)]
    for hi in (None, u_hi):
        # integrate in ln M (dM = M dlnM), where the integrand is smooth
        want, _ = integrate.quad(
            m_n_of_mass, u_lo, np.inf if hi is None else hi, epsabs=0, epsrel=1e-13, limit=200
        )
        got = float(expected_count(*t, u_lo, hi, volume))
        assert abs(got - want) < 1e-8 * want
    # log_intensity is ln of V M n(M)
    u = math.log(7e11)
    assert (
        abs(float(log_intensity(torch.tensor(u, dtype=F64), *t, volume)) - math.log(m_n_of_mass(u)))
        < 1e-12
    )


def test_expected_counts_are_the_integral_of_the_intensity():
    data = _toy_field(n=4, n_boxes=1, n_halos=5)
    const = EngineConstants()
    for model, n_par in (("engine", 17), ("power_law", 7)):
        theta = 0.3 * torch.ones(n_par, dtype=F64)
        lo, hi = 3e11, 2e12
        counts = expected_counts(model, theta, data, const, (lo, hi))
        # intensity at every voxel: treat each voxel as a halo of mass M
        n = data.x.shape[-1]
        vox = torch.tensor(list(itertools.product(range(n), repeat=3)))

        def intensity(u, vox=vox, model=model, theta=theta):
            d = HaloField(
                x=data.x,
                halo_box=torch.zeros(len(vox), dtype=torch.int64),
                halo_voxel=vox,
                log_mass=torch.full((len(vox),), u, dtype=F64),
                voxel_volume=data.voxel_volume,
            )
            _, halos = mixture_fields(model, theta[None], d, const)
            return log_intensity(d.log_mass, *halos, d.voxel_volume)[0].exp().numpy()

        us = np.linspace(math.log(lo), math.log(hi), 2001)
        vals = np.stack([intensity(float(u)) for u in us])
        want = integrate.simpson(vals, x=us, axis=0)
        np.testing.assert_allclose(counts.flatten().numpy(), want, rtol=1e-8)


def test_power_law_counts_scale_as_a_power_of_the_density():
    data = _toy_field()
    theta = torch.tensor([1.7, 0.1, -0.2, -1.0, 0.5, 0.3, 0.1], dtype=F64)
    n = expected_counts("power_law", theta, data)
    ratio = n / torch.exp(1.7 * data.x)
    torch.testing.assert_close(ratio, ratio.flatten()[0].expand_as(ratio), rtol=1e-12, atol=0)


def test_potential_and_gradients_are_finite_and_batched():
    data = _toy_field()
    u = potential("engine", data)
    thetas = torch.stack([_theta(1), _theta(2)]).requires_grad_(True)
    vals = u(thetas)
    vals.sum().backward()
    assert vals.shape == (2,) and torch.isfinite(thetas.grad).all()
    assert torch.allclose(vals[1], u(_theta(2)))
    with pytest.raises(ValueError, match="model"):
        potential("linear", data)
    with pytest.raises(ValueError, match=r"\[17\]"):
        log_likelihood("engine", torch.zeros(7, dtype=F64), data)


TINY = SimulationConfig(n_particles=16, n_mesh=32, n_steps=4, min_members=8, mass_cut=1e12)


def test_simulated_box_and_cache(tmp_path):
    box = simulate_box(400_000, n_grid=8, config=TINY)
    assert box.delta_lpt.shape == box.delta_pm.shape == (8, 8, 8)
    # CIC conserves mass: the mean density contrast is zero
    assert abs(box.delta_pm.mean()) < 1e-5 and abs(box.delta_lpt.mean()) < 1e-5
    assert box.halo_voxel.shape == (len(box.halo_mass), 3)
    assert (box.halo_voxel >= 0).all() and (box.halo_voxel < 8).all()
    assert (box.halo_mass >= TINY.mass_cut).all()
    assert box.counts().sum() == len(box.halo_mass)
    # 2LPT and PM fields are the same structures
    assert np.corrcoef(box.delta_lpt.ravel(), box.delta_pm.ravel())[0, 1] > 0.5
    boxes = load_boxes(2, n_grid=8, config=TINY, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.rglob("box_*.npz"))) == 2
    again = load_boxes(2, n_grid=8, config=TINY, cache_dir=tmp_path, progress=False)
    for a, b in zip(boxes, again, strict=True):
        assert isinstance(b, Box) and a.seed == b.seed
        np.testing.assert_array_equal(a.delta_pm, b.delta_pm)
        np.testing.assert_array_equal(a.halo_voxel, b.halo_voxel)
    np.testing.assert_array_equal(boxes[0].delta_pm, box.delta_pm)
    data = HaloField.from_boxes(boxes, field="lpt")
    assert data.x.shape == (2, 8, 8, 8) and data.n_halos == sum(len(b.halo_mass) for b in boxes)
    with pytest.raises(ValueError, match="field"):
        HaloField.from_boxes(boxes, field="linear")
    with pytest.raises(ValueError, match="n_boxes"):
        load_boxes(0)


def test_threshold_head_reads_amplitude_and_slope_at_the_threshold():
    """The "threshold" head: ln of the intensity per unit volume at M_th is c0 and its
    log-slope d ln(lambda) / d ln M there is c1 (finite differences)."""
    const = EngineConstants(n_gaussians=1, head="threshold", initial_amplitude=-3.0)
    slopes = torch.zeros(1, 3, 1, dtype=F64)
    biases = torch.tensor([[[0.4], [-0.7], [0.3]]], dtype=F64)  # c0 - a0, c1, width
    log_alpha, mu, sigma = mixture_params(0.0, slopes, biases, const)
    u0, eps = const.log_mass_threshold, 1e-5

    def log_lam(u):
        return float(log_intensity(torch.tensor(u, dtype=F64), log_alpha, mu, sigma))

    assert abs(log_lam(u0) - (-3.0 + 0.4)) < 1e-12
    assert abs((log_lam(u0 + eps) - log_lam(u0 - eps)) / (2 * eps) - (-0.7)) < 1e-8
    assert abs(float(sigma) - math.log1p(math.exp(0.3 + const.initial_width))) < 1e-12


def test_parameter_sets_and_fixed_parameters():
    assert len(param_names("engine", PAPER)) == 17  # the paper's count
    assert len(param_names("power_law", PAPER)) == 7
    names = param_names("engine", IDENTIFIABLE)
    assert "a_1" not in names and "a'_1" not in names and len(names) == 9
    # a fixed parameter is the same as passing its value in the full vector
    data = _toy_field()
    free = 0.2 * torch.ones(9, dtype=F64)
    full_const = EngineConstants(
        initial_amplitude=IDENTIFIABLE.initial_amplitude, n_gaussians=1, head="threshold"
    )
    full = torch.cat([free[:5], torch.tensor([1.0, 0.0], dtype=F64), free[5:]])
    torch.testing.assert_close(
        log_likelihood("engine", free, data, IDENTIFIABLE),
        log_likelihood("engine", full, data, full_const),
    )
    with pytest.raises(ValueError, match="unknown"):
        param_names("engine", EngineConstants(engine_fixed=(("w_x", 1.0),)))
    with pytest.raises(ValueError, match="head"):
        EngineConstants(head="other")


def test_expected_count_is_finite_where_the_plain_formula_overflows():
    """alpha exp(sigma^2 / 2) = e^793 overflows float64 for sigma = 40, erfc(30) underflows;
    their product is finite. Reference: ln erfc(z) = ln 2 + ln Phi(-sqrt(2) z) (scipy)."""
    from scipy.special import log_ndtr

    u_lo, sigma, z = math.log(2e11), 40.0, 30.0
    mu = u_lo - sigma**2 - z * math.sqrt(2.0) * sigma
    t = [torch.tensor([v], dtype=F64) for v in (math.log(1e-3), mu, sigma)]
    got = float(expected_count(*t, u_lo))
    log_want = math.log(0.5e-3) + 0.5 * sigma**2 + math.log(2.0) + log_ndtr(-math.sqrt(2.0) * z)
    assert math.isfinite(got) and got > 0
    assert abs(math.log(got) - log_want) < 1e-10


def test_mass_function_bins_add_up_and_measured_counts():
    data = _toy_field()
    draws = torch.stack([_theta(1), _theta(2)])
    edges = [2e11, 1e12, 5e12, 1e300]  # the last bin reaches far enough for all of it
    per_bin = mass_function("engine", draws, data, edges, chunk=1)
    total = expected_counts("engine", draws, data).flatten(1).sum(-1)
    torch.testing.assert_close(per_bin.sum(-1), total, rtol=1e-10, atol=0)
    ll = posterior_log_likelihood("engine", draws, data, chunk=1)
    torch.testing.assert_close(ll, log_likelihood("engine", draws, data))
    counts = measured_mass_function(data, edges)
    assert counts.sum() == data.n_halos
