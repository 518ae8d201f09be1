"""The inference modules (hmc, fisher, grf, npe, flows, bias) refuse what would give a silent
wrong answer (issue 22): one probe per item of the issue, the condition number of a
covariance against numpy's SVD-based one, stuck samplers, and a table that each refusal is
one ValueError line naming the function and its argument."""

import math
import warnings

import numpy as np
import pytest
import torch

from physml import bias, fisher, flows, grf, hmc
from physml.errors import TrainingDiverged

F64 = torch.float64


def _gaussian(q):
    return 0.5 * (q * q).sum(-1)


# --------------------------------------------------------------------------- hmc


def test_hmc_refuses_a_potential_that_is_nan_everywhere():
    """Before: the warm-up shrank the step to 4.6e-8 and every 'sample' was the start."""
    with pytest.raises(ValueError, match=r"hmc: potential .*not finite at init.*\[0, 1\]"):
        hmc.hmc(lambda q: q.sum(-1) * math.nan, torch.zeros(2, 3, dtype=F64), 10, progress=False)


def test_hmc_refuses_a_nan_step_size_and_names_only_it():
    """Before: NaN passed `step_size <= 0` and returned zeros; the message listed every
    argument."""
    with pytest.raises(ValueError) as err:
        hmc.hmc(_gaussian, torch.zeros(2, 3, dtype=F64), 10, step_size=math.nan, progress=False)
    msg = str(err.value)
    assert msg.startswith("hmc: step_size") and "nan" in msg
    assert "n_samples" not in msg and "n_steps" not in msg


def test_hmc_whose_chains_never_move_raises_instead_of_returning_the_start():
    """A step 100 times the width and no warm-up to shrink it: every trajectory diverges
    (energy errors of ~1e8 nats), no proposal is accepted."""

    def stiff(q):
        return 0.5 * 1e4 * (q * q).sum(-1)

    with pytest.raises(hmc.ChainsStuck, match=r"no chain accepted any of its 20 proposals"):
        hmc.hmc(stiff, torch.full((3, 2), 0.01, dtype=F64), 20, n_warmup=0, step_size=1.0,
                n_steps=3, progress=False)  # fmt: skip


def test_hmc_warns_about_the_chains_that_never_move():
    """Chain 1 starts on a flat island of finite potential of radius 1e-6 around q = 10 that
    every leapfrog step leaves for the NaN region (one step of 0.5 would need a momentum
    below -10 to reach the finite half-plane q_0 < 5); chain 0 samples the Gaussian there."""

    def island(q):
        left = q[:, 0] < 5
        on_island = ((q - 10).abs() < 1e-6).all(-1)
        u = torch.where(left, _gaussian(q), torch.zeros_like(q[:, 0]))
        return torch.where(left | on_island, u, torch.full_like(u, math.nan))

    init = torch.tensor([[0.0, 0.0], [10.0, 10.0]], dtype=F64)
    with pytest.warns(RuntimeWarning, match=r"chain\(s\) \[1\] of 2 accepted none"):
        res = hmc.hmc(island, init, 30, n_warmup=0, step_size=0.5, n_steps=1, progress=False)
    assert float(res.accept_rate[0]) > 0.5 and float(res.accept_rate[1]) == 0.0
    assert torch.equal(res.samples[1], init[1].expand(30, 2))


def test_valid_hmc_runs_draw_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = hmc.hmc(_gaussian, torch.zeros(2, 2, dtype=F64), 50, n_warmup=50, progress=False)
    assert (res.accept_rate > 0.5).all()


def test_find_map_and_laplace_refuse_non_finite_starts():
    with pytest.raises(ValueError, match="find_map: potential is not finite at init"):
        hmc.find_map(lambda q: (q * math.nan).sum(), torch.zeros(2, dtype=F64))
    with pytest.raises(ValueError, match="find_map: potential is not finite at init"):
        hmc.find_map(lambda q: (q * math.nan).sum(), torch.zeros(2, dtype=F64), n_adam=3)
    with pytest.raises(ValueError, match="laplace: theta_map must be finite"):
        hmc.laplace(lambda q: (q * q).sum(), torch.tensor([0.0, math.inf], dtype=F64))
    with pytest.raises(ValueError, match="whiten: cov must be symmetric positive definite"):
        hmc.whiten(_gaussian, torch.zeros(2, dtype=F64), -torch.eye(2, dtype=F64))
    with pytest.raises(ValueError, match="split_rhat: samples must be finite"):
        hmc.split_rhat(np.full((2, 10, 1), np.nan))


# --------------------------------------------------------------------------- fisher


def test_fisher_refuses_the_sample_covariance_of_fewer_simulations_than_bins():
    """Before: 5 simulations, 10 bins, no n_sims: entries of about 1e16, errors near zero."""
    rng = np.random.default_rng(0)
    cov = np.cov(rng.normal(size=(5, 10)), rowvar=False)
    dmu = rng.normal(size=(2, 10))
    with pytest.raises(ValueError, match=r"fisher_matrix: cov is singular.*more than 12 sim"):
        fisher.fisher_matrix(dmu, cov)
    with pytest.raises(ValueError, match=r"fisher_matrix: n_sims = 5 simulations.*10 bins"):
        fisher.fisher_matrix(dmu, cov, n_sims=5)


def test_fisher_warns_about_an_ill_conditioned_covariance_with_its_condition_number():
    """Two bins correlated to 1 - 1e-9, in units a factor 1e3 apart: the condition number
    quoted is that of the correlation matrix, as numpy's SVD-based np.linalg.cond gives it."""
    rho, sd = 1 - 1e-9, np.array([1.0, 1e3])
    corr = np.array([[1.0, rho], [rho, 1.0]])
    cov = corr * np.outer(sd, sd)
    with pytest.warns(RuntimeWarning, match="ill-conditioned") as rec:
        fisher.fisher_matrix(np.eye(2), cov)
    quoted = float(str(rec[0].message).split("condition number ")[1].split()[0])
    assert quoted == pytest.approx(np.linalg.cond(corr), rel=1e-3)
    assert quoted > fisher.ILL_CONDITIONED
    # a well-conditioned covariance (correlation 0.9) draws no warning, the result unchanged
    cov = np.array([[1.0, 0.9e3], [0.9e3, 1e6]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f = fisher.fisher_matrix(np.eye(2), cov)
    np.testing.assert_array_equal(f, np.linalg.inv(cov))


def test_fisher_refuses_bad_values_and_forecast_bad_counts():
    cov = np.eye(3)
    with pytest.raises(ValueError, match="fisher_matrix: cov must be finite"):
        fisher.fisher_matrix(np.ones((2, 3)), np.where(cov == 1, np.nan, 0.0))
    with pytest.raises(ValueError, match="fisher_matrix: cov must be symmetric"):
        fisher.fisher_matrix(np.ones((2, 3)), np.triu(np.ones((3, 3))))
    with pytest.raises(ValueError, match="fisher_matrix: cov must have variances > 0"):
        fisher.fisher_matrix(np.ones((2, 3)), np.diag([1.0, 0.0, 1.0]))
    pk = np.random.default_rng(1).normal(size=(20, 3))
    with pytest.raises(ValueError, match="forecast: n_sims_list entry 5 must lie between"):
        fisher.forecast(pk, np.ones((20, 2, 3)), [5])
    with pytest.raises(ValueError, match="marginal_errors: fisher is singular"):
        fisher.marginal_errors(np.ones((2, 2)))


# --------------------------------------------------------------------------- npe, grf, flows


def test_unit_to_theta_refuses_nan_and_points_outside_the_prior_box():
    """Before: NaN passed through, u = 2.0 gave Omega_m = 0.7, outside [0.1, 0.5]."""
    pytest.importorskip("zuko")
    from physml import npe

    with pytest.raises(ValueError, match="unit_to_theta: u must be finite"):
        npe.unit_to_theta(torch.tensor([[math.nan, 0.0]]))
    with pytest.raises(ValueError, match=r"unit_to_theta: u must lie in the unit box.*2\.0"):
        npe.unit_to_theta(torch.tensor([[2.0, 0.0]]))
    # the box's corners, through float32 rounding, still map onto the box's corners
    corners = torch.tensor([[0.1, 0.6], [0.5, 1.0]])
    back = npe.unit_to_theta(flows.theta_to_unit(corners))
    torch.testing.assert_close(back, corners)


def test_grf_log_likelihood_refuses_a_non_finite_field():
    """Before: NaN returned for a non-finite field."""
    x = grf.sample_field(0.3, 0.8, 4, seed=0)
    x[1, 2, 3] = math.inf
    with pytest.raises(
        ValueError, match=r"log_likelihood: delta must be finite; 1 of 64.*\[1, 2, 3\]"
    ):
        grf.log_likelihood(x, 0.3, 0.8)
    lam = grf.eigenvalues(grf.power_on_modes(0.3, 0.8, 4, grf.GRF_BOX), 4, grf.GRF_BOX)
    with pytest.raises(ValueError, match="log_likelihood_eigen: lam .* must be > 0"):
        grf.log_likelihood_eigen(grf.sample_field(0.3, 0.8, 4, seed=0), -lam)
    with pytest.raises(ValueError, match="ShellStatistics: delta must be finite"):
        grf.ShellStatistics(x)
    with pytest.raises(ValueError, match="sample_fields: table was made for n = 4"):
        grf.sample_fields(torch.tensor([[0.3, 0.8]]), 8, table=grf.PowerTable(4, n_omega=3))


def test_flow_training_stops_on_a_non_finite_loss():
    flow = flows.FourierFlow(4, grf.GRF_BOX)
    fields = grf.sample_fields(torch.tensor([[0.3, 0.8]] * 2, dtype=F64), 4)
    with pytest.raises(TrainingDiverged, match=r"fit: the loss is (nan|inf) at step [0-9]"):
        flows.fit(flow, lambda step: (fields, None), 5, lr=1e30, progress=False)
    with pytest.raises(ValueError, match="FourierFlow.log_prob: x must be finite"):
        flow.log_prob(fields * math.nan)
    with pytest.raises(ValueError, match=r"fit \(batches\): x must be finite"):
        flows.fit(flow, lambda step: (fields * math.nan, None), 3, progress=False)
    cflow = flows.ConditionalFourierFlow(4, grf.GRF_BOX, hidden=4)
    with pytest.raises(ValueError, match="ConditionalFourierFlow.log_prob: theta must be > 0"):
        cflow.log_prob(fields, torch.tensor([[0.3, 0.8], [-0.3, 0.8]], dtype=F64))
    with pytest.raises(ValueError, match="ConditionalFourierFlow.forward: theta must be finite"):
        cflow(fields, torch.tensor([[0.3, 0.8], [math.inf, 0.8]], dtype=F64))
    with pytest.raises(ValueError, match="grid_posterior: log_like is NaN at 4 grid points"):
        flows.grid_posterior(lambda t: t[:, 0] * math.nan, [0.1, 0.6], [0.5, 1.0], n_grid=2)


# --------------------------------------------------------------------------- bias


def _halo_field(**change):
    n = 4
    kw = dict(
        x=torch.zeros(1, n, n, n, dtype=F64),
        halo_box=torch.zeros(2, dtype=torch.int64),
        halo_voxel=torch.tensor([[0, 1, 2], [3, 3, 3]]),
        log_mass=torch.full((2,), 27.0, dtype=F64),
        voxel_volume=1.0,
    )
    kw.update(change)
    return bias.HaloField(**kw)


def test_bias_data_are_checked_once_when_made():
    assert _halo_field().n_halos == 2
    with pytest.raises(ValueError, match="HaloField: x must be finite"):
        _halo_field(x=torch.full((1, 4, 4, 4), math.nan, dtype=F64))
    with pytest.raises(ValueError, match=r"HaloField: halo_voxel must lie in \[0, n_grid = 4\)"):
        _halo_field(halo_voxel=torch.tensor([[0, 1, 2], [3, 4, 3]]))
    with pytest.raises(ValueError, match="HaloField: halo_box must be integers in"):
        _halo_field(halo_box=torch.tensor([0, 1]))
    data = _halo_field()
    samples = torch.zeros(3, bias.n_params("power_law", bias.IDENTIFIABLE), dtype=F64)
    samples[1, 0] = math.nan
    with pytest.raises(ValueError, match="posterior_log_likelihood: samples must be finite"):
        bias.posterior_log_likelihood("power_law", samples, data, bias.IDENTIFIABLE)
    with pytest.raises(ValueError, match="mass_function: edges must be > 0 and increasing"):
        bias.mass_function("power_law", samples[:1], data, [1e12, 1e11], bias.IDENTIFIABLE)


# --------------------------------------------------------------------------- one line, named

_X4 = grf.sample_field(0.3, 0.8, 4, seed=0)
_FLOW = flows.FourierFlow(4, grf.GRF_BOX)

#: (call that must fail, the function named first, the argument the message must name)
CASES = [
    (lambda: hmc.hmc(_gaussian, torch.zeros(2, 2), 1.5), "hmc", "n_samples"),
    (lambda: hmc.hmc(_gaussian, torch.zeros(2, 2), 5, n_warmup=-1), "hmc", "n_warmup"),
    (lambda: hmc.hmc(_gaussian, torch.zeros(2, 2), 5, n_steps=0), "hmc", "n_steps"),
    (lambda: hmc.hmc(_gaussian, torch.zeros(2, 2), 5, step_size=-0.1), "hmc", "step_size"),
    (lambda: hmc.hmc(_gaussian, torch.zeros(2, 2), 5, target_accept=1.0), "hmc", "target_accept"),
    (lambda: hmc.hmc(_gaussian, torch.zeros(2, 2), 5, inv_mass=torch.zeros(2)), "hmc", "inv_mass"),
    (lambda: hmc.hmc(_gaussian, torch.full((2, 2), math.nan), 5), "hmc", "init"),
    (lambda: hmc.hmc(_gaussian, torch.zeros(2), 5), "hmc", "init"),
    (lambda: hmc.hmc("U", torch.zeros(2, 2), 5), "hmc", "potential"),
    (
        lambda: hmc.leapfrog(_gaussian, *[torch.zeros(1, 2)] * 3, math.inf, 3, torch.ones(2)),
        "leapfrog",
        "step_size",
    ),  # fmt: skip
    (lambda: hmc.find_map(_gaussian, torch.zeros(2), lr=0), "find_map", "lr"),
    (lambda: hmc.find_map(_gaussian, torch.zeros(2), max_iter=2.0), "find_map", "max_iter"),
    (lambda: hmc.summarize(np.zeros((2, 8, 2)), names=["a"]), "summarize", "names"),
    (lambda: hmc.whiten(_gaussian, torch.zeros(2), torch.eye(3)), "whiten", "cov"),
    (lambda: fisher.fisher_matrix(np.ones(3), np.eye(3)), "fisher_matrix", "dmu"),
    (lambda: fisher.fisher_matrix(np.ones((2, 3)), np.eye(2)), "fisher_matrix", "cov"),
    (lambda: fisher.fisher_matrix(np.ones((2, 3)), np.eye(3), 10.5), "fisher_matrix", "n_sims"),
    (lambda: fisher.hartlap_factor(4, 3), "hartlap_factor", "n_sims"),
    (lambda: fisher.finite_difference((0.3, 0.8), 1, None, 0.0), "finite_difference", "step"),
    (lambda: fisher.simulated_power((math.nan, 0.8), 1, None), "simulated_power", "Omega_m"),
    (lambda: fisher.confidence_ellipse([0, 0], np.eye(2), -1), "confidence_ellipse", "n_sigma"),
    (lambda: grf.log_likelihood(_X4, 0.3, math.inf), "power_on_modes", "sigma_8"),
    (lambda: grf.log_likelihood(_X4, 0.3, 0.8, box_size=0), "kmag", "box_size"),
    (lambda: grf.sample_field(0.3, 0.8, n=5), "sample_field", "n"),
    (lambda: grf.sample_prior(0), "sample_prior", "n_samples"),
    (lambda: grf.sample_fields(torch.tensor([[0.3, math.nan]]), 4), "sample_fields", "theta"),
    (lambda: grf.PowerTable(4, n_omega=1), "PowerTable", "n_omega"),
    (lambda: flows.FourierFlow(4, grf.GRF_BOX, n_layers=1.5), "FourierFlow", "n_layers"),
    (lambda: flows.FourierFlow(4, -1.0), "FourierFlow", "box_size"),
    (lambda: flows.FourierFlow(4, grf.GRF_BOX, bound=math.nan), "FourierFlow", "bound"),
    (lambda: flows.theta_to_unit(torch.tensor([[math.nan, 0.8]])), "theta_to_unit", "theta"),
    (lambda: flows.log_theta_to_unit(torch.tensor([[-0.3, 0.8]])), "log_theta_to_unit", "theta"),
    (lambda: flows.fit(_FLOW, lambda s: (_X4[None], None), 0), "fit", "steps"),
    (
        lambda: flows.fit(_FLOW, lambda s: (_X4[None], None), 4, average_from=1.0),
        "fit",
        "average_from",
    ),  # fmt: skip
    (lambda: flows.zoomed_posterior(lambda t: t[:, 0], width=0), "zoomed_posterior", "width"),
    (
        lambda: flows.grid_posterior(lambda t: t[:, 0], [0.5, 0.6], [0.1, 1.0]),
        "grid_posterior",
        "hi[0]",
    ),  # fmt: skip
    (lambda: bias.EngineConstants(n_gaussians=1.5), "EngineConstants", "n_gaussians"),
    (lambda: bias.EngineConstants(prior_width=0.0), "EngineConstants", "prior_width"),
    (lambda: bias.load_boxes(0), "load_boxes", "n_boxes"),
    (lambda: bias.simulate_box(1, n_grid=2), "simulate_box", "n_grid"),
    (lambda: _halo_field(voxel_volume=-1.0), "HaloField", "voxel_volume"),
    (
        lambda: bias.log_likelihood("power_law", torch.zeros(3), _halo_field(), bias.IDENTIFIABLE),
        "log_likelihood('power_law')",
        "theta",
    ),  # fmt: skip
    (
        lambda: bias.expected_count(torch.zeros(1), torch.zeros(1), torch.ones(1), 1.0, 0.5),
        "expected_count",
        "u_hi",
    ),  # fmt: skip
]


def _npe_cases():
    pytest.importorskip("zuko")
    from physml import npe

    samples = np.zeros((5, 3, 2))
    return [
        (lambda: npe.unit_to_theta(torch.tensor([[0.0, -1.5]])), "unit_to_theta", "u"),
        (lambda: npe.tarp_coverage(samples, np.zeros((4, 2))), "tarp_coverage", "theta"),
        (lambda: npe.sbc_ranks(samples * np.nan, np.zeros((3, 2))), "sbc_ranks", "samples"),
        (lambda: npe.tarp_noise(samples, np.zeros((3, 2)), n_draws=0), "tarp_noise", "n_draws"),
        (lambda: npe.rank_histogram_chi2(np.full((3, 2), 9), 5), "rank_histogram_chi2", "ranks"),
        (lambda: npe.banana_coordinate(np.array([-0.1, 0.8])), "banana_coordinate", "Omega_m"),
        (lambda: npe.NPE(npe.SummaryEmbedding(3), lr=-1.0), "NPE", "lr"),
        (lambda: npe.SummaryEmbedding(0), "SummaryEmbedding", "n_features"),
    ]


@pytest.mark.parametrize("case", range(len(CASES) + 8))
def test_each_refusal_is_one_line_naming_the_function_and_the_argument(case):
    cases = CASES + (_npe_cases() if case >= len(CASES) else [])
    call, where, argument = cases[case]
    with pytest.raises(ValueError) as err:
        call()
    msg = str(err.value)
    assert msg.startswith(f"{where}: "), msg
    assert argument in msg, msg
    assert "\n" not in msg, msg
