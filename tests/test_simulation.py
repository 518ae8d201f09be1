"""The particle-mesh simulator: linear growth, initial power, nested phases, FoF, the halo
mass function against Sheth-Tormen / Tinker08 (colossus), and differentiability."""

import math

import numpy as np
import pytest
import torch

from physml.cosmology import Cosmology
from physml.simulation import (
    SimulationConfig,
    friends_of_friends,
    initial_conditions,
    linear_field,
    nbody,
    overdensity,
    power_spectrum,
    simulate,
    white_noise,
)
from physml.simulation.mesh import cic_paint, cic_readout

LECTURE = SimulationConfig()


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_low_amplitude_run_grows_as_linear_theory():
    cosmo = Cosmology(0.3, 0.01)
    x0, p0 = initial_conditions(cosmo, 7, LECTURE)
    x1, _ = nbody(x0, p0, cosmo, LECTURE.steps(), LECTURE.n_mesh, LECTURE.box_size)
    k, p_start, _ = power_spectrum(overdensity(x0, 128, 25.0), 25.0, 12, k_max=1.0)
    _, p_end, _ = power_spectrum(overdensity(x1, 128, 25.0), 25.0, 12, k_max=1.0)
    expected = float(cosmo.growth_factor(1.0) / cosmo.growth_factor(LECTURE.a_start))
    ratio = torch.sqrt(p_end / p_start).numpy() / expected
    assert np.all(np.abs(ratio - 1) < 0.02), dict(
        zip(k.numpy().round(3), ratio.round(4), strict=True)
    )


def test_initial_power_matches_input_within_cosmic_variance():
    cosmo, n, box = Cosmology(0.3, 0.8), 64, 25.0
    delta = linear_field(cosmo, 3, n, box)
    k, p, n_modes = power_spectrum(delta, box, 20)
    # theory averaged over the same modes: whiten the field by the input spectrum
    from physml.simulation.mesh import wavenumbers

    kx, ky, kz = wavenumbers(n, box, dtype=torch.float64)
    kk = torch.sqrt(kx**2 + ky**2 + kz**2).clamp_min(1e-3)
    dk = torch.fft.rfftn(delta.double())
    white = torch.fft.irfftn(dk / torch.sqrt(cosmo.linear_power(kk)), s=(n, n, n))
    _, p_white, _ = power_spectrum(white, box, 20)
    ratio = p_white.numpy()  # E = 1 in every bin, relative scatter 1/sqrt(n_modes)
    sigma = 1 / np.sqrt(n_modes.numpy())
    assert np.all(np.abs(ratio - 1) < 4 * sigma)
    chi2 = np.mean(((ratio - 1) / sigma) ** 2)
    assert 0.3 < chi2 < 2.5
    # and the estimator itself returns the input spectrum where many modes average
    good = n_modes.numpy() > 500
    p_th = cosmo.linear_power(k).numpy()
    assert np.all(np.abs(p.numpy()[good] / p_th[good] - 1) < 0.15)


def test_power_spectrum_of_a_plane_wave():
    n, box, amp, m = 32, 10.0, 0.3, 3
    x = torch.arange(n, dtype=torch.float64) * box / n
    delta = amp * torch.cos(2 * math.pi * m * x / box).view(n, 1, 1).expand(n, n, n)
    k, p, n_modes = power_spectrum(delta, box, n_bins=n // 2)
    # Parseval: <delta^2> = amp^2 / 2 = sum over bins of P * (2 n_modes) / V
    assert torch.isclose(
        (p * 2 * n_modes).sum() / box**3, torch.tensor(amp**2 / 2.0, dtype=torch.float64)
    )
    # all of it in the bin that holds |k| = 2 pi m / L
    width = (math.pi * n / box - 0.5 * 2 * math.pi / box) / (n // 2)
    i = int(torch.argmax(p))
    assert abs(float(k[i]) - 2 * math.pi * m / box) < width
    assert float(p.sum() - p[i]) == 0.0


def test_nested_noise_keeps_large_scale_phases():
    lo, hi = white_noise(11, 32), white_noise(11, 64)
    m = 8  # |k| < 8 on the 32 grid exists on both
    assert torch.equal(lo[:m, :m, :m], hi[:m, :m, :m])
    assert torch.equal(lo[-m + 1 :, -m + 1 :, :m], hi[-m + 1 :, -m + 1 :, :m])
    assert not torch.equal(white_noise(12, 32)[:m, :m, :m], lo[:m, :m, :m])
    # same large-scale density field at two particle counts
    c = Cosmology(0.3, 0.8)
    f32 = torch.fft.rfftn(linear_field(c, 5, 32, 25.0)) / 32**3
    f64 = torch.fft.rfftn(linear_field(c, 5, 64, 25.0)) / 64**3
    assert torch.allclose(f32[1:m, 1:m, 1:m], f64[1:m, 1:m, 1:m], rtol=1e-4, atol=1e-9)


def test_fixed_amplitude_and_paired_noise():
    from physml.simulation import linear_modes, lpt_displacements
    from physml.simulation.mesh import nyquist_mask, wavenumbers

    c, n, box = Cosmology(0.3, 0.8), 16, 25.0
    gauss = linear_modes(c, 4, n, box, dtype=torch.float64)
    fixed = linear_modes(c, 4, n, box, dtype=torch.float64, fixed_amplitude=True)
    kx, ky, kz = wavenumbers(n, box, dtype=torch.float64)
    k = torch.sqrt(kx**2 + ky**2 + kz**2)
    live = nyquist_mask(n).bool() & (k > 0)
    # |delta_k|^2 = n^6 P(k) / V mode by mode, with the Gaussian field's phases
    expected = n**6 * c.linear_power(k[live]) / box**3
    assert torch.allclose(fixed.abs()[live] ** 2, expected, rtol=1e-5)
    assert torch.allclose(fixed[live] / fixed.abs()[live], gauss[live] / gauss.abs()[live])
    assert torch.all(fixed[~live] == 0)
    # the Gaussian field's moduli do scatter (exponential |w|^2), the fixed ones do not
    assert float((gauss.abs()[live] ** 2 / expected).std()) > 0.5
    # the pair: opposite first-order displacements, equal second-order ones
    paired = linear_modes(c, 4, n, box, dtype=torch.float64, fixed_amplitude=True, paired=True)
    assert torch.equal(paired, -fixed)
    (a1, a2), (b1, b2) = lpt_displacements(fixed, box), lpt_displacements(paired, box)
    assert float((a1 + b1).abs().max()) < 1e-12 * float(a1.abs().max())
    assert torch.allclose(a2, b2, rtol=1e-10, atol=1e-14)


def test_cic_paint_readout_are_adjoint_and_conserve_mass():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(300, 3, generator=g, dtype=torch.float64) * 30 - 2.5  # wraps
    mesh = torch.randn(8, 8, 8, generator=g, dtype=torch.float64)
    w = torch.randn(300, generator=g, dtype=torch.float64)
    lhs = (cic_paint(x, 8, 25.0, w) * mesh).sum()
    rhs = (w * cic_readout(mesh, x, 25.0)).sum()
    assert torch.isclose(lhs, rhs, rtol=1e-12)
    assert torch.isclose(cic_paint(x, 8, 25.0).sum(), torch.tensor(300.0, dtype=torch.float64))
    # readout of a field that is linear inside a cell is exact
    grid = torch.arange(8, dtype=torch.float64)
    ramp = grid.view(8, 1, 1).expand(8, 8, 8).clone()
    pts = torch.tensor([[3.3, 1.0, 2.0], [5.75, 7.0, 0.5]], dtype=torch.float64) * 25.0 / 8
    assert torch.allclose(
        cic_readout(ramp, pts, 25.0), torch.tensor([3.3, 5.75], dtype=torch.float64)
    )


def _blob(rng, centre, n, spread, box):
    return np.mod(centre + rng.normal(0, spread, (n, 3)), box)


def test_fof_finds_exactly_the_hand_made_groups():
    rng = np.random.default_rng(1)
    box, ll = 10.0, 0.3
    # a chain of points 0.15 apart across the x face is one group; 0.35 apart is not
    chain = np.stack([np.linspace(8.5, 8.5 + 0.15 * 24, 25), np.full(25, 5.0), np.full(25, 5.0)], 1)
    chain[:, 0] = np.mod(chain[:, 0], box)
    loose = np.stack([np.full(25, 8.0), np.linspace(0.5, 0.5 + 0.35 * 24, 25), np.full(25, 2.0)], 1)
    loose[:, 1] = np.mod(loose[:, 1], box)
    # a tight group straddling the corner of the box (all three faces)
    corner = _blob(rng, np.zeros(3), 30, 0.03, box)
    small = _blob(rng, np.array([5.0, 1.0, 8.0]), 10, 0.02, box)  # below min_members
    pos = np.concatenate([chain, loose, corner, small])
    vel = np.zeros_like(pos)
    vel[25:50] = 1.0
    vel[50:80] = [[3.0, -1.0, 2.0]]
    g = friends_of_friends(pos, box, ll, min_members=20, vel=vel)
    assert sorted(g.n_members.tolist()) == [25, 30]
    # membership exactly
    assert set(np.flatnonzero(g.members == g.members[0]).tolist()) in (
        set(range(25)),
        set(range(50, 80)),
    )
    assert np.all(g.members[25:50] == -1) and np.all(g.members[80:] == -1)
    i_corner = int(np.argmax(g.n_members == 30))
    # centre of mass of the corner group, computed with unwrapped coordinates
    unwrapped = corner - box * (corner > box / 2)
    expect = np.mod(unwrapped.mean(0), box)
    d = np.abs(g.pos[i_corner] - expect)
    assert np.all(np.minimum(d, box - d) < 1e-9)
    assert np.allclose(g.vel[i_corner], [3.0, -1.0, 2.0])
    i_chain = 1 - i_corner
    assert np.allclose(g.pos[i_chain], [8.5 + 0.15 * 12 - box, 5.0, 5.0])


def test_fof_against_brute_force_on_random_points():
    from scipy.sparse.csgraph import connected_components

    rng = np.random.default_rng(3)
    box, ll = 1.0, 0.06
    pos = rng.random((400, 3))
    d = pos[:, None] - pos[None]
    d -= box * np.round(d / box)
    adj = (np.sqrt((d**2).sum(-1)) <= ll).astype(int)
    _, labels = connected_components(adj, directed=False)
    sizes = np.bincount(labels)
    g = friends_of_friends(pos, box, ll, min_members=3)
    assert sorted(g.n_members.tolist()) == sorted(sizes[sizes >= 3].tolist())
    for gi in range(len(g.n_members)):
        members = np.flatnonzero(g.members == gi)
        assert len(set(labels[members])) == 1
        assert sizes[labels[members[0]]] == len(members)


def test_fof_empty_and_bad_input():
    g = friends_of_friends(np.zeros((0, 3)), 1.0, 0.1)
    assert len(g.n_members) == 0
    with pytest.raises(ValueError, match="linking_length"):
        friends_of_friends(np.zeros((5, 3)), 1.0, 0.6)


def test_simulation_is_deterministic_and_has_catalog_units():
    cfg = SimulationConfig(n_particles=32, n_mesh=64, n_steps=8, mass_cut=0.0)
    a = simulate(0.3, 0.9, 4, cfg).catalog
    b = simulate(0.3, 0.9, 4, cfg).catalog
    assert np.array_equal(a.pos, b.pos) and np.array_equal(a.mass, b.mass)
    assert len(a) > 0 and a.pos.min() >= 0 and a.pos.max() < 1
    m_p = float(Cosmology(0.3, 0.9).particle_mass(25.0, 32)) / 1e10
    # every FoF mass is an integer number (>= 20) of particle masses
    ratio = a.mass / m_p
    assert np.allclose(ratio, np.round(ratio), atol=1e-3) and ratio.min() >= 20 - 1e-3


def test_mass_cut_is_absolute():
    cfg = SimulationConfig(n_particles=32, n_mesh=64, n_steps=8, mass_cut=2e12)
    for om in (0.15, 0.45):
        cat = simulate(om, 0.9, 2, cfg).catalog
        assert np.all(cat.mass >= 2e12 / 1e10)


def test_gradients_flow_through_the_pm_steps():
    cfg = SimulationConfig(n_particles=16, n_mesh=32, n_steps=3)

    def final_power(s8):
        cosmo = Cosmology(0.3, s8)
        x, p = initial_conditions(cosmo, 1, cfg)
        x, _ = nbody(x.double(), p.double(), cosmo, cfg.steps(), cfg.n_mesh, cfg.box_size)
        return (overdensity(x, 32, cfg.box_size) ** 2).mean()

    s8 = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(final_power(s8), s8)
    h = 1e-3
    fd = (final_power(torch.tensor(0.8 + h)) - final_power(torch.tensor(0.8 - h))) / (2 * h)
    assert torch.isfinite(grad) and grad > 0
    assert torch.isclose(grad, fd.double(), rtol=0.05)


@pytest.mark.slow
def test_halo_mass_function_matches_sheth_tormen_or_tinker():
    mass_function = pytest.importorskip("colossus.lss.mass_function")
    from colossus.cosmology import cosmology

    n_boxes = 10
    cfg = SimulationConfig(mass_cut=0.0)
    masses = np.concatenate(
        [simulate(0.3, 0.8, 5000 + i, cfg).catalog.mass * 1e10 for i in range(n_boxes)]
    )
    cosmology.setCosmology(
        "physml_hmf",
        params=dict(
            flat=True, H0=67.11, Om0=0.3, Ob0=0.049, sigma8=0.8, ns=0.9624, relspecies=False
        ),
    )
    m_p = float(Cosmology(0.3, 0.8).particle_mass(25.0, 64))
    edges = m_p * np.geomspace(40, 2000, 7)
    counts, _ = np.histogram(masses, edges)
    volume = n_boxes * 25.0**3
    ratios = {}
    for model, mdef in (("sheth99", "fof"), ("tinker08", "200m")):
        expected = []
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            m = np.geomspace(lo, hi, 16)
            dn = mass_function.massFunction(
                m, 0.0, mdef=mdef, model=model, q_out="dndlnM", ps_args={"model": "eisenstein98_zb"}
            )
            expected.append(np.trapezoid(dn, np.log(m)) * volume)
        ratios[model] = counts / np.array(expected)
    best = np.minimum(np.abs(ratios["sheth99"] - 1), np.abs(ratios["tinker08"] - 1))
    assert np.all(best < 0.25), {k: v.round(3).tolist() for k, v in ratios.items()}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    cfg = SimulationConfig(n_particles=32, n_mesh=64, n_steps=4, mass_cut=0.0)
    cpu = simulate(0.3, 0.8, 1, cfg, keep_particles=True)
    gpu = simulate(0.3, 0.8, 1, cfg, device="cuda", keep_particles=True)
    assert torch.allclose(cpu.x, gpu.x.cpu(), atol=1e-3)
