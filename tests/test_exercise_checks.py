"""The self-checks of the exercises (physml.selfcheck; notebooks 01, 02 and the supplements):
a right answer, written here independently of physml's implementation, passes; each usual
mistake, a stub and a function that raises fail with a line that says what is wrong."""

import numpy as np
import pytest
import torch

from physml import selfcheck as sc
from physml.cosmology import Cosmology


# --------------------------------------------------------------------- 05: log response
def _autograd_response(k, log=True, times_theta=True):
    theta = torch.tensor([0.3, 0.8], dtype=torch.float64)

    def f(t):
        power = Cosmology(t[0], t[1]).linear_power(k)
        return torch.log(power) if log else power

    jac = torch.autograd.functional.jacobian(f, theta)  # [K, 2]
    return (jac * theta if times_theta else jac).T


def test_linear_log_response_is_two_for_sigma8_and_matches_autograd():
    k = torch.tensor(sc.RESPONSE_K, dtype=torch.float64)
    ref = sc.linear_log_response(k)
    assert np.allclose(ref[1], 2.0, atol=1e-7)  # P proportional to sigma_8^2, exactly
    assert np.allclose(ref, _autograd_response(k).numpy(), rtol=1e-6)
    assert (ref[0] != ref[0, 0]).any()  # the Omega_m response depends on k


@pytest.mark.parametrize(
    "answer, words",
    [
        (lambda k: _autograd_response(k, log=False, times_theta=False), "dP / dtheta"),
        (lambda k: _autograd_response(k, times_theta=False), "d ln P / dtheta"),
        (lambda k: _autograd_response(k, log=False), "dP / d ln theta"),
        (lambda k: _autograd_response(k).flip(0), "swapped"),
        (lambda k: torch.zeros(2, len(k), dtype=torch.float64), "0 instead of"),
        (lambda k: torch.zeros(len(k), 2), "shape [5, 2], expected [2, 5]"),
        (lambda k: 1 / 0, "raised ZeroDivisionError"),
    ],
)
def test_check_log_response(answer, words):
    assert sc.check_log_response(_autograd_response)[0]
    passed, why = sc.check_log_response(answer)
    assert not passed and words in why and "\n" not in why


# ------------------------------------------------------------------ 05: marginal errors
def _errors(dmu, cov, n_sims, f_prior, hartlap=True, prior=True, marginal=True, root=True):
    b = cov.shape[0]
    factor = (n_sims - b - 2) / (n_sims - 1) if hartlap else 1.0
    f = dmu @ np.linalg.solve(cov, dmu.T) * factor + (f_prior if prior else 0.0)
    var = np.diag(np.linalg.inv(f)) if marginal else 1 / np.diag(f)
    return np.sqrt(var) if root else var


@pytest.mark.parametrize(
    "answer, words",
    [
        (lambda *a: _errors(*a, marginal=False), "other parameter fixed"),
        (lambda *a: _errors(*a, prior=False), "prior is missing"),
        (lambda *a: _errors(*a, hartlap=False), "Hartlap"),
        (lambda *a: _errors(*a, root=False), "square root"),
        (lambda *a: np.zeros(2), "instead of"),
        (lambda *a: np.full(2, np.nan), "not finite"),
    ],
)
def test_check_marginal_errors(answer, words):
    passed, why = sc.check_marginal_errors(_errors)
    assert passed, why
    passed, why = sc.check_marginal_errors(answer)
    assert not passed and words in why and "\n" not in why


def test_forecast_case_is_degenerate_enough_to_tell_marginal_from_conditional():
    dmu, cov, n_sims, f_prior = sc._forecast_case()
    marginal, conditional = (
        _errors(dmu, cov, n_sims, f_prior),
        _errors(dmu, cov, n_sims, f_prior, marginal=False),
    )
    assert (marginal > 1.5 * conditional).all()


# ------------------------------------------------------------------------ 06: leapfrog
def _leapfrog(grad_u, q, p, eps, n_steps, inv_mass, first=0.5, last=0.5, mass=True, sign=1):
    """Velocity Verlet with the kicks as arguments (the mistakes are variants of it)."""
    p = p - sign * first * eps * grad_u(q)
    for i in range(n_steps):
        q = q + eps * (inv_mass if mass else 1.0) * p
        p = p - sign * (eps if i < n_steps - 1 else last * eps) * grad_u(q)
    return q, p


def test_leapfrog_reference_conserves_energy_to_second_order():
    """The right answer here is the integrator: its energy error falls as step^2."""
    a, q, p, inv_mass = sc._quadratic_case()

    def energy(x, m):
        return 0.5 * ((x @ a) * x).sum(-1) + 0.5 * (inv_mass * m * m).sum(-1)

    errors = []
    for eps in (0.04, 0.02):
        qe, pe = _leapfrog(lambda x: x @ a, q, p, eps, int(round(0.8 / eps)), inv_mass)
        errors.append(float((energy(qe, pe) - energy(q, p)).abs().max()))
    assert 3.0 < errors[0] / errors[1] < 5.0


@pytest.mark.parametrize(
    "answer, words",
    [
        (lambda *a: _leapfrog(*a, first=1.0, last=0.0), "a full kick, then a drift"),
        (lambda *a: _leapfrog(*a, first=0.0, last=1.0), "a drift, then a full kick"),
        (lambda *a: _leapfrog(*a, first=0.0), "first half kick is missing"),
        (lambda *a: _leapfrog(*a, last=0.0), "last half kick is missing"),
        (lambda *a: _leapfrog(*a, mass=False), "ignores the mass"),
        (lambda *a: _leapfrog(*a, sign=-1), "uphill"),
        (lambda g, q, p, *a: (q, p), "nothing moved"),
        (lambda g, q, p, *a: (q + 0.01, p), "largest gap"),
        (lambda g, q, p, *a: q, "expected a tuple (q, p)"),
    ],
)
def test_check_leapfrog(answer, words):
    passed, why = sc.check_leapfrog(_leapfrog)
    assert passed, why
    passed, why = sc.check_leapfrog(answer)
    assert not passed and words in why and "\n" not in why


# ------------------------------------------------------------------------- 06: R-hat
def _rhat_by_loops(x, split=True, root=True, ddof=1):
    """Split R-hat (BDA3 eq. 11.4) written with explicit loops over the (half) chains."""
    chains = []
    for c in range(x.shape[0]):
        if split:
            half = x.shape[1] // 2
            chains += [x[c, :half], x[c, -half:]]
        else:
            chains.append(x[c])
    out = []
    for d in range(x.shape[2]):
        cols = [ch[:, d] for ch in chains]
        n = len(cols[0])
        means = np.array([c.mean() for c in cols])
        w = np.mean([((c - c.mean()) ** 2).sum() / (n - ddof) for c in cols])
        b = n * ((means - means.mean()) ** 2).sum() / (len(cols) - ddof)
        r = ((n - 1) / n * w + b / n) / w
        out.append(np.sqrt(r) if root else r)
    return np.array(out)


@pytest.mark.parametrize(
    "answer, words",
    [
        (lambda x: _rhat_by_loops(x, split=False), "not split into halves"),
        (lambda x: _rhat_by_loops(x, root=False), "R-hat squared"),
        (lambda x: _rhat_by_loops(x, ddof=0), "ddof = 0"),
        (lambda x: np.ones(3), "trend in every chain"),
        (lambda x: np.ones((3, 1)), "shape [3, 1], expected [3]"),
    ],
)
def test_check_split_rhat(answer, words):
    passed, why = sc.check_split_rhat(_rhat_by_loops)
    assert passed, why
    passed, why = sc.check_split_rhat(answer)
    assert not passed and words in why and "\n" not in why


def test_chains_case_needs_the_split():
    x = sc._chains_case()
    split, whole = _rhat_by_loops(x), _rhat_by_loops(x, split=False)
    assert split[2] > 1.03 and whole[2] < 1.01  # the trend shows only in the halves


# ------------------------------------------------------------------- 07: log density
def _log_density(x, psi, jacobian=+1.0, base_at_x=False):
    """log q(x) with psi' from autograd, elementwise."""
    x = x.clone().requires_grad_(True)
    z = psi(x)
    (dz,) = torch.autograd.grad(z.sum(), x)
    base = torch.distributions.Normal(0.0, 1.0).log_prob(x if base_at_x else z)
    return (base + jacobian * torch.log(dz)).sum(-1).detach()


@pytest.mark.parametrize(
    "answer, words",
    [
        (lambda x, psi: _log_density(x, psi, jacobian=0.0), "log-determinant is missing"),
        (lambda x, psi: _log_density(x, psi, jacobian=-1.0), "wrong sign"),
        (lambda x, psi: _log_density(x, psi, base_at_x=True), "instead of at z = psi(x)"),
        (lambda x, psi: _log_density(x, psi)[:, None], "shape [4, 1], expected [4]"),
        (lambda x, psi: torch.zeros(x.shape[0]), "largest gap at row"),
    ],
)
def test_check_log_density(answer, words):
    passed, why = sc.check_log_density(_log_density)
    assert passed, why
    passed, why = sc.check_log_density(answer)
    assert not passed and words in why and "\n" not in why


def test_spline_case_is_not_the_identity():
    x, psi, log_dpsi = sc._spline_case()
    assert (psi(x) - x).abs().max() > 0.1 and log_dpsi.abs().max() > 0.1


# ------------------------------------------------------------------------- 07: ranks
def _ranks_by_loops(samples, theta):
    out = np.zeros(theta.shape, dtype=int)
    for i in range(theta.shape[0]):
        for j in range(theta.shape[1]):
            out[i, j] = sum(1 for s in samples[:, i, j] if s < theta[i, j])
    return out


@pytest.mark.parametrize(
    "answer, words",
    [
        (lambda s, t: len(s) - _ranks_by_loops(s, t), "above the truth"),
        (lambda s, t: _ranks_by_loops(s, t) / len(s), "fractions"),
        (lambda s, t: _ranks_by_loops(s, t) + (np.arange(30) == 4)[:, None], "first at item 4"),
        (lambda s, t: (s < t).sum(1), "shape [100, 2], expected [30, 2]"),
    ],
)
def test_check_sbc_ranks(answer, words):
    passed, why = sc.check_sbc_ranks(_ranks_by_loops)
    assert passed, why
    passed, why = sc.check_sbc_ranks(answer)
    assert not passed and words in why and "\n" not in why


# ------------------------------------------------------------ 01: mean aggregation
def _scatter_mean(h, edge_index):
    from torch_geometric.utils import scatter

    return scatter(h[edge_index[0]], edge_index[1], dim=0, dim_size=h.size(0), reduce="mean")


def _mean_with_nan(h, edge_index):
    total = torch.zeros_like(h).index_add_(0, edge_index[1], h[edge_index[0]])
    count = torch.zeros(h.size(0), dtype=h.dtype).index_add_(
        0, edge_index[1], torch.ones(edge_index.size(1), dtype=h.dtype)
    )
    return total / count[:, None]  # 0 / 0 where nothing arrives


@pytest.mark.parametrize(
    "answer, words",
    [
        (
            lambda h, e: torch.zeros_like(h).index_add_(0, e[1], h[e[0]]),
            "sum of the messages",
        ),
        (lambda h, e: _scatter_mean(h, e.flip(0)), "aggregated at the senders"),
        (
            lambda h, e: _scatter_mean(
                h, torch.cat([e, torch.arange(h.size(0)).repeat(2, 1)], dim=1)
            ),
            "node itself",
        ),
        (_mean_with_nan, "NaN (0 / 0)"),
        (lambda h, e: _scatter_mean(h, e)[:, :2], "shape [7, 2], expected [7, 3]"),
        (lambda h, e: _scatter_mean(h, e) * 1.01, "largest gap at node"),
        (lambda h, e: h.missing, "raised AttributeError"),
    ],
)
def test_check_mean_aggregation(answer, words):
    passed, why = sc.check_mean_aggregation(_scatter_mean)
    assert passed, why
    passed, why = sc.check_mean_aggregation(answer)
    assert not passed and words in why and "\n" not in why


# ------------------------------------------------------------ 01: receptive field
def _pyg_k_hop(edge_index, num_nodes, node, k):
    from torch_geometric.utils import k_hop_subgraph

    return k_hop_subgraph(node, k, edge_index, num_nodes=num_nodes)[0]


def _bfs(edge_index, node, k, reverse=False, keep=True):
    """Breadth-first search, k steps against (or along, ``reverse``) the edges."""
    senders = {}
    for j, i in edge_index.T.tolist():
        a, b = (j, i) if reverse else (i, j)
        senders.setdefault(a, set()).add(b)
    seen, frontier = {node}, {node}
    for _ in range(k):
        frontier = {m for n in frontier for m in senders.get(n, ())}
        seen = seen | frontier if keep else frontier
    return sorted(seen)


def test_k_hop_reference_agrees_with_pyg_for_every_node_and_depth():
    _, edge_index = sc._toy_graph()
    for node in range(sc.TOY_NODES):
        for k in range(4):
            assert sc.check_k_hop_nodes(_pyg_k_hop, node=node, k=k)[0]
            assert sc.check_k_hop_nodes(lambda e, n, v, d: _bfs(e, v, d), node=node, k=k)[0]


@pytest.mark.parametrize(
    "answer, words",
    [
        (lambda e, n, v, k: _bfs(e, v, k, keep=False), "exactly 2 steps"),
        (lambda e, n, v, k: [u for u in _bfs(e, v, k) if u != v], "node itself is missing"),
        (lambda e, n, v, k: _bfs(e, v, k, reverse=True), "wrong way"),
        (lambda e, n, v, k: _bfs(e, v, k - 1), "1 steps"),
        (lambda e, n, v, k: _bfs(e, v, k) + [6], "[6] do not reach it"),
        (lambda e, n, v, k: [0.5], "integers from 0 to 6"),
        (lambda e, n, v, k: None, "integers from 0 to 6"),
    ],
)
def test_check_k_hop_nodes(answer, words):
    passed, why = sc.check_k_hop_nodes(answer)
    assert not passed and words in why and "\n" not in why


# ------------------------------------------------------------ 02: Gaussian NLL
def _nll(mean, std, true, constant=True):
    nll = -torch.distributions.Normal(mean, std).log_prob(true)
    if not constant:
        nll = nll - 0.5 * np.log(2 * np.pi)
    return nll.mean(dim=0).sum()


@pytest.mark.parametrize("constant", [True, False])
def test_check_gaussian_nll_passes_with_or_without_the_constant(constant):
    passed, why = sc.check_gaussian_nll(lambda m, s, t: _nll(m, s, t, constant))
    assert passed and ("with the" if constant else "without the") in why


@pytest.mark.parametrize(
    "answer, words",
    [
        (lambda m, s, t: -_nll(m, s, t), "log-likelihood"),
        (lambda m, s, t: _nll(m, s, t, False) * len(t), "summed over the batch"),
        (lambda m, s, t: _nll(m, s, t) / t.shape[1], "averaged over the targets"),
        (
            lambda m, s, t: (torch.log(s**2) + 0.5 * ((t - m) / s) ** 2).mean(0).sum(),
            "log sigma^2 without the 1/2",
        ),
        (
            lambda m, s, t: (torch.log(s) + ((t - m) / s) ** 2).mean(0).sum(),
            "lacks its 1/2",
        ),
        (lambda m, s, t: _nll(m, s, t).detach(), "no gradient"),
        (lambda m, s, t: -torch.distributions.Normal(m, s).log_prob(t), "scalar tensor"),
        (lambda m, s, t: float(_nll(m, s, t).detach()), "scalar tensor"),
        (lambda m, s, t: _nll(m, s, t) * 1.01, "instead of"),
    ],
)
def test_check_gaussian_nll(answer, words):
    passed, why = sc.check_gaussian_nll(answer)
    assert not passed and words in why and "\n" not in why


# ------------------------------------------------------------ 02: coverage
def _coverage(mean, std, true, level):
    from physml.metrics import coverage

    return coverage(mean, std, true, level)


def _coverage_by_ppf(mean, std, true, level, q):
    from scipy.stats import norm

    return float(np.mean(np.abs(mean - true) <= norm.ppf(q(level)) * std))


@pytest.mark.parametrize(
    "answer, words",
    [
        (lambda m, s, t, p: _coverage_by_ppf(m, s, t, p, lambda p: p), "one-sided"),
        (lambda m, s, t, p: 1 - _coverage(m, s, t, p), "outside"),
        (lambda m, s, t, p: 100 * _coverage(m, s, t, p), "percent"),
        (lambda m, s, t, p: float(np.mean(np.abs(m - t) <= s)), "one standard deviation"),
        (lambda m, s, t, p: _coverage(m, s, t, p) + (p == 0.4) * 0.01, "level 0.4"),
        (lambda m, s, t, p: [0.1, 0.2], "one number"),
        (lambda m, s, t, p: 1 / 0, "raised ZeroDivisionError"),
    ],
)
def test_check_coverage(answer, words):
    passed, why = sc.check_coverage(_coverage)
    assert passed, why
    passed, why = sc.check_coverage(answer)
    assert not passed and words in why and "\n" not in why


def test_coverage_case_is_not_calibrated_and_the_levels_differ():
    mean, std, true = sc._coverage_case()
    got = [_coverage(mean, std, true, p) for p in (0.4, 0.68, 0.95)]
    assert got[0] < got[1] < got[2] and got[1] < 0.66  # over-confident errors, on purpose
