"""Self-checks of the Task notebooks that explain a failure: which column differs, by how
much, on which edge or catalog, rather than a bare ``False``.

* :func:`difference` compares two tables row by row (edges or catalogs);
* :func:`check_invariant_features` compares a student's Task 1 edge features with
  :func:`physml.graphs.invariant_edge_features`, accepting either convention for the third
  feature (``p_j . n_ij`` as physml, or ``p_i . n_ij`` as the source notebook);
* :func:`check_model` runs a Task 2 model on a sample batch: output shapes, std > 0,
  invariance under cube symmetries and a periodic translation.

And the exercises of the lecture notebooks and the supplements, each a function of the
student's that the check calls on its own fixed inputs: :func:`check_k_hop_nodes` and
:func:`check_mean_aggregation` (01: the receptive field; mean aggregation from a scatter
sum), :func:`check_gaussian_nll` and :func:`check_coverage` (02: the Gaussian likelihood as
a loss; the coverage of central intervals), :func:`check_log_response` and
:func:`check_marginal_errors` (05: autograd through the linear power spectrum; a Fisher
forecast with a prior), :func:`check_leapfrog` and :func:`check_split_rhat` (06: the
integrator of HMC; its convergence diagnostic), :func:`check_log_density` and
:func:`check_sbc_ranks` (07: the change of variables of a flow; the ranks of
simulation-based calibration).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .graphdata import cube_symmetry
from .graphs import invariant_edge_features

#: names of the three Task 1 features, in column order (physml's convention)
FEATURE_NAMES = ("d_ij", "p_i . p_j", "p_j . n_ij")
#: the third feature in the source notebook's convention, accepted as well
SOURCE_THIRD_FEATURE = "p_i . n_ij"
#: cube symmetries (new axis k = old axis perm[k] * sign[k]) and a translation that
#: :func:`check_model` tries, named as the map of the coordinates
SYMMETRIES = (
    ("(x, y, z) -> (z, -x, y)", (2, 0, 1), (1, -1, 1), None),
    ("(x, y, z) -> (y, x, z)", (1, 0, 2), (1, 1, 1), None),
    ("(x, y, z) -> (-x, y, -z)", (0, 1, 2), (-1, 1, -1), None),
    ("periodic translation by (0.3, 0.6, 0.9)", (0, 1, 2), (1, 1, 1), (0.3, 0.6, 0.9)),
)


def _edge_name(row: int, edge_index: Tensor | None, batch: Tensor | None) -> str:
    if edge_index is None:
        return f"row {row}"
    j, i = (int(v) for v in edge_index[:, row])
    where = f", catalog {int(batch[i])} of the batch" if batch is not None else ""
    return f"edge {row} (j = {j} -> i = {i}{where})"


def difference(
    yours: Tensor,
    expected: Tensor,
    names=None,
    rows: str = "edge",
    edge_index: Tensor | None = None,
    batch: Tensor | None = None,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> str | None:
    """``None`` when ``yours`` and ``expected`` (``[R, C]``) agree within ``atol + rtol *
    |expected|``; otherwise one line: the first column that differs (by ``names``), on how
    many of the rows, by how much at most, and the first such row with both values. Rows
    are edges (named ``j -> i`` and catalog when ``edge_index`` ``[2, R]`` and ``batch``
    ``[N]`` are given) or catalogs (``rows="catalog"``)."""
    yours, expected = torch.as_tensor(yours), torch.as_tensor(expected)
    if yours.shape != expected.shape:
        return f"shape {list(yours.shape)}, expected {list(expected.shape)}"
    yours = yours.detach().double().cpu().reshape(len(yours), -1)
    expected = expected.detach().double().cpu().reshape(len(expected), -1)
    names = list(names) if names is not None else [str(c) for c in range(yours.shape[1])]
    bad = ~(torch.isclose(yours, expected, rtol=rtol, atol=atol))
    if not bad.any():
        return None
    col = int(bad.any(dim=0).nonzero()[0])
    rows_bad = bad[:, col].nonzero()[:, 0]
    first = int(rows_bad[0])
    gap = (yours[:, col] - expected[:, col]).abs()
    gap = gap[torch.isfinite(gap)]
    largest = f"by up to {float(gap.max()):.3g}" if len(gap) else "(not finite)"
    where = _edge_name(first, edge_index, batch) if rows == "edge" else f"{rows} {first}"
    other = [names[c] for c in bad.any(dim=0).nonzero()[:, 0].tolist() if c != col]
    also = f"; also differs: {', '.join(other)}" if other else ""
    return (
        f"column {col} ({names[col]}) differs on {len(rows_bad)} of {len(yours)} {rows}s, "
        f"{largest}; first at {where}: {float(yours[first, col]):.4g} instead of "
        f"{float(expected[first, col]):.4g}{also}"
    )


def check_invariant_features(
    yours: Tensor, pos: Tensor, edge_index: Tensor, batch: Tensor, box_size: float | None = 1.0
) -> tuple[bool, str]:
    """Compare a student's invariant edge features ``[E, 3]`` with physml's
    :func:`~physml.graphs.invariant_edge_features` on the same graph. Either convention of
    the third feature passes: ``p_j . n_ij`` (physml) or ``p_i . n_ij`` (the source
    notebook). Returns ``(passed, one line)``."""
    expected = invariant_edge_features(pos, edge_index, batch, box_size)
    source = expected.clone()  # p_i . n_ij: the reversed edge's p . n, with n_ji = -n_ij
    source[:, 2] = -invariant_edge_features(pos, edge_index.flip(0), batch, box_size)[:, 2]
    names_source = (*FEATURE_NAMES[:2], SOURCE_THIRD_FEATURE)
    found = difference(yours, expected, FEATURE_NAMES, "edge", edge_index, batch)
    if found is None:
        return True, f"matches physml (third feature {FEATURE_NAMES[2]})"
    if difference(yours, source, names_source, "edge", edge_index, batch) is None:
        return True, f"matches physml with the source's third feature {SOURCE_THIRD_FEATURE}"
    return False, found


def _outputs(model, data) -> tuple:
    out = model(data)
    if not (isinstance(out, tuple | list) and len(out) == 2):
        raise TypeError(f"the model returns {type(out).__name__}, expected a tuple (mean, std)")
    return tuple(o.detach() for o in out)


def check_model(model, batch, symmetries=SYMMETRIES) -> tuple[bool, str]:
    """Run a Task 2 model (``forward(batch) -> (mean, std)``) on a sample batch of ``B``
    catalogs in eval mode, without gradients, and check: shapes ``[B, 1]`` (sigma_8) or
    ``[B, 2]`` (sigma_8, Omega_m), finite means, std > 0, and the same prediction after each
    of ``symmetries`` (cube rotations / reflections and a periodic translation; velocities
    turn with the positions). Returns ``(all passed, one line per check)``. The batch is
    moved to the model's device; the model's train / eval mode is restored."""
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = batch.pos.device
    batch = batch.to(device)
    n = batch.num_graphs
    lines, passed = [], True
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            mean, std = _outputs(model, batch)
            shape_ok = mean.shape == std.shape and tuple(mean.shape) in ((n, 1), (n, 2))
            lines.append(
                f"shapes: mean {list(mean.shape)}, std {list(std.shape)}: "
                + ("ok" if shape_ok else f"FAIL, expected [{n}, 1] or [{n}, 2] each")
            )
            finite = bool(torch.isfinite(mean).all())
            lines.append("mean finite: " + ("ok" if finite else "FAIL (NaN or inf)"))
            bad = ~(std > 0)
            if bad.any():
                k = int(bad.reshape(n, -1).any(dim=1).nonzero()[0])
                lines.append(
                    f"std > 0: FAIL for {int(bad.sum())} of {std.numel()} values, first on "
                    f"catalog {k}: {std[k].tolist()} (map the raw output through a softplus)"
                )
            else:
                lines.append("std > 0: ok")
            passed = shape_ok and finite and not bad.any()
            if not shape_ok:
                return False, "\n".join(lines)
            before = torch.cat([mean, std], dim=1)
            names = [f"{kind}[{t}]" for kind in ("mean", "std") for t in range(mean.shape[1])]
            for name, perm, sign, shift in symmetries:
                after = torch.cat(_outputs(model, cube_symmetry(batch, perm, sign, shift)), 1)
                found = difference(after, before, names, "catalog")
                lines.append(f"unchanged under {name}: " + ("ok" if found is None else "FAIL, "))
                if found is not None:
                    lines[-1] += found
                    passed = False
    finally:
        model.train(was)
    return passed, "\n".join(lines)


# --------------------------------------------------------------------------- supplements
# Self-checks of the exercises of supplements 05-07. Each takes the student's function,
# calls it on inputs of its own (seeded, the same on every run, so that the printed verdict
# is too), compares the result with physml's implementation and, on a failure, tries the
# usual mistakes so that the line can name one; otherwise it says where the two differ most.
# Each returns ``(passed, one line)``.


def _call(fn, args: tuple, what: str):
    """``(result, None)``, or ``(None, one line)`` when calling ``fn(*args)`` raises."""
    try:
        return fn(*args), None
    except Exception as err:  # the student's function, whatever it raises
        return None, f"calling it on {what} raised {type(err).__name__}: {err}"


def _numpy(x, dtype=None) -> np.ndarray:
    """A student's result (a tensor, an array, a list) as a numpy array."""
    return np.asarray(x.detach().cpu() if torch.is_tensor(x) else x, dtype=dtype)


def _as_float64(
    x, what: str, shape: tuple, finite: bool = True
) -> tuple[np.ndarray | None, str | None]:
    """``x`` as a float64 array of ``shape``, or ``(None, one line)`` saying what is wrong
    (NaN and inf are wrong unless ``finite=False``)."""
    try:
        arr = _numpy(x, np.float64)
    except (TypeError, ValueError) as err:
        got = type(x).__name__
        return None, f"{what}: expected an array of shape {list(shape)}, got {got} ({err})"
    if arr.shape != tuple(shape):
        return None, f"{what}: shape {list(arr.shape)}, expected {list(shape)}"
    if finite and not np.isfinite(arr).all():
        return None, f"{what}: {int((~np.isfinite(arr)).sum())} values are not finite (NaN or inf)"
    return arr, None


def _named_mistake(yours: np.ndarray, guesses: dict, rtol: float = 1e-4) -> str | None:
    """The description of the first guess that ``yours`` matches, else ``None``."""
    for why, guess in guesses.items():
        guess = np.asarray(guess, dtype=np.float64)
        if guess.shape == yours.shape and np.allclose(yours, guess, rtol=rtol, atol=1e-12):
            return why
    return None


def _worst(yours: np.ndarray, expected: np.ndarray, names) -> str:
    """Where ``yours`` and ``expected`` (same shape) differ most: ``name: got instead of
    expected``; ``names(index)`` names an entry."""
    gap = np.abs(yours - expected) / (np.abs(expected) + 1e-12)
    i = np.unravel_index(int(np.argmax(gap)), gap.shape)
    return f"largest gap at {names(i)}: {yours[i]:.4g} instead of {expected[i]:.4g}"


#: wavenumbers [h/Mpc] at which :func:`check_log_response` asks for the response
RESPONSE_K = (0.01, 0.05, 0.2, 1.0, 5.0)


def linear_log_response(k, theta=(0.3, 0.8), step: float = 1e-4) -> np.ndarray:
    """d ln P_lin(k) / d ln theta for theta = (Omega_m, sigma_8), ``[2, K]``, by central
    differences of step ``step`` in ln theta (float64; error about step^2): the reference
    of :func:`check_log_response`, independent of autograd."""
    from .cosmology import Cosmology

    k = torch.as_tensor(k, dtype=torch.float64)
    rows = []
    for j in range(2):
        ln_p = []
        for sign in (1.0, -1.0):
            t = [float(v) for v in theta]
            t[j] *= math.exp(sign * step)
            ln_p.append(torch.log(Cosmology(*t).linear_power(k)))
        rows.append(((ln_p[0] - ln_p[1]) / (2 * step)).numpy())
    return np.stack(rows)


def check_log_response(fn) -> tuple[bool, str]:
    """Exercise of supplement 05: is ``fn(k)`` (k ``[K]`` h/Mpc, float64 tensor) the
    logarithmic response d ln P_lin(k) / d ln theta, ``[2, K]`` (rows Omega_m, sigma_8), of
    :class:`physml.cosmology.Cosmology`'s linear power spectrum at (0.3, 0.8)? Compared
    with :func:`linear_log_response` at :data:`RESPONSE_K` (relative tolerance 1e-5)."""
    from .cosmology import Cosmology

    k = torch.tensor(RESPONSE_K, dtype=torch.float64)
    got, err = _call(fn, (k,), f"k = {list(RESPONSE_K)}")
    if err:
        return False, err
    yours, err = _as_float64(got, "the response", (2, len(k)))
    if err:
        return False, err + " (rows Omega_m, sigma_8; a column per k)"
    expected = linear_log_response(k)
    if np.allclose(yours, expected, rtol=1e-5, atol=1e-8):
        return True, (
            f"matches central differences of ln P_lin; d ln P / d ln sigma_8 = "
            f"{expected[1, 0]:.4f} at every k (linear theory: P is proportional to sigma_8^2)"
        )
    theta = np.array([[0.3], [0.8]])
    power = Cosmology(0.3, 0.8).linear_power(k).numpy()[None]
    why = _named_mistake(
        yours,
        {
            "you returned dP / dtheta: divide by P and multiply by theta": expected * power / theta,
            "you returned d ln P / dtheta: multiply by theta (d ln theta = dtheta / theta)": (
                expected / theta
            ),
            "you returned dP / d ln theta: divide by P (the derivative of ln P)": expected * power,
            "your rows are swapped: row 0 is Omega_m, row 1 sigma_8": expected[::-1],
        },
    )
    if why:
        return False, why
    names = ("Omega_m", "sigma_8")
    return False, _worst(
        yours, expected, lambda i: f"d ln P / d ln {names[i[0]]}, k = {RESPONSE_K[i[1]]} h/Mpc"
    )


def _forecast_case() -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """A nearly degenerate two-parameter forecast: dmu ``[2, 5]``, a sample covariance
    ``[5, 5]`` of 40 draws, 40, and the CAMELS prior's Fisher matrix ``[2, 2]``."""
    from .fisher import prior_fisher

    rng = np.random.default_rng(5)
    k = np.arange(1, 6)
    dmu = np.stack([3.0e4 / k, 2.4e4 / k**0.9])
    mix = np.eye(5) + 0.6 * rng.standard_normal((5, 5))
    draws = rng.standard_normal((40, 5)) @ mix.T * (400.0 / k)
    return dmu, np.cov(draws, rowvar=False), 40, prior_fisher()


def check_marginal_errors(fn) -> tuple[bool, str]:
    """Exercise of supplement 05: is ``fn(dmu, cov, n_sims, f_prior)`` (dmu ``[P, B]``,
    cov ``[B, B]`` estimated from n_sims simulations, f_prior ``[P, P]``) the marginal
    1-sigma errors ``[P]`` of the posterior forecast, sqrt(diag((F + F_prior)^-1)) with the
    Hartlap-corrected F? Compared with :mod:`physml.fisher` on a nearly degenerate case
    (relative tolerance 1e-6)."""
    from .fisher import PARAMS, fisher_matrix, marginal_errors

    dmu, cov, n_sims, f_prior = _forecast_case()
    got, err = _call(fn, (dmu, cov, n_sims, f_prior), "dmu [2, 5], cov [5, 5], 40, f_prior")
    if err:
        return False, err
    yours, err = _as_float64(got, "the errors", (2,))
    if err:
        return False, err + " (one per parameter: Omega_m, sigma_8)"
    f_data = fisher_matrix(dmu, cov, n_sims)
    f_post = f_data + f_prior
    expected = marginal_errors(f_post)
    if np.allclose(yours, expected, rtol=1e-6):
        return True, (
            f"matches sqrt(diag((F + F_prior)^-1)): sigma = {expected[0]:.4f}, {expected[1]:.4f}"
        )
    why = _named_mistake(
        yours,
        {
            "these are the errors with the other parameter fixed, 1 / sqrt(F_ii): invert the "
            "whole matrix, sqrt(diag(F^-1)), to marginalise": 1 / np.sqrt(np.diag(f_post)),
            "the prior is missing: add f_prior to the data's Fisher matrix": marginal_errors(
                f_data
            ),
            "the Hartlap factor (n_sims - B - 2) / (n_sims - 1) is missing from C^-1": (
                marginal_errors(fisher_matrix(dmu, cov) + f_prior)
            ),
            "these are variances: take the square root": expected**2,
            "C is used where its inverse belongs: F = dmu C^-1 dmu^T": np.sqrt(
                np.abs(np.diag(np.linalg.inv(dmu @ cov @ dmu.T + f_prior)))
            ),
        },
    )
    if why:
        return False, why
    return False, _worst(yours, expected, lambda i: f"sigma({PARAMS[i[0]]})")


def _quadratic_case():
    """U(q) = q^T A q / 2 with an anisotropic A, 3 chains in 2-D, and its gradient."""
    a = torch.tensor([[4.0, 1.5], [1.5, 1.0]], dtype=torch.float64)
    q = torch.tensor([[1.0, -0.5], [0.3, 0.8], [-1.2, 0.1]], dtype=torch.float64)
    p = torch.tensor([[0.2, 1.0], [-0.7, 0.4], [0.5, -0.3]], dtype=torch.float64)
    inv_mass = torch.tensor([0.5, 2.0], dtype=torch.float64)
    return a, q, p, inv_mass


def check_leapfrog(fn, step_size: float = 0.1, n_steps: int = 7) -> tuple[bool, str]:
    """Exercise of supplement 06: is ``fn(grad_u, q, p, step_size, n_steps, inv_mass)`` the
    leapfrog integrator (half kick, then ``n_steps`` drifts and kicks, the last kick a half
    one), returning ``(q, p)`` ``[C, D]`` each? ``grad_u(q) -> [C, D]``; the kinetic energy is
    p^T M^-1 p / 2 with M^-1 = diag(inv_mass ``[D]``). Compared with
    :func:`physml.hmc.leapfrog` on an anisotropic Gaussian (relative tolerance 1e-8)."""
    from .hmc import leapfrog

    a, q, p, inv_mass = _quadratic_case()

    def potential(x):
        return 0.5 * ((x @ a) * x).sum(-1)

    def grad_u(x):
        return x @ a

    def energy(x, m):
        return (potential(x) + 0.5 * (inv_mass * m * m).sum(-1)).numpy()

    got, err = _call(
        fn, (grad_u, q.clone(), p.clone(), step_size, n_steps, inv_mass), "3 chains in 2-D"
    )
    if err:
        return False, err
    if not (isinstance(got, tuple | list) and len(got) == 2):
        return False, f"it returned {type(got).__name__}, expected a tuple (q, p)"
    q_got, err = _as_float64(got[0], "q", q.shape)
    p_got, err2 = _as_float64(got[1], "p", p.shape)
    if err or err2:
        return False, err or err2
    q_ref, p_ref, _, _ = leapfrog(potential, q, p, grad_u(q), step_size, n_steps, inv_mass)
    h0 = energy(q, p)
    yours, expected = np.concatenate([q_got, p_got], 1), torch.cat([q_ref, p_ref], 1).numpy()
    if np.allclose(yours, expected, rtol=1e-8, atol=1e-10):
        dh = np.abs(energy(q_ref, p_ref) - h0).max()
        return True, (
            f"matches physml.hmc.leapfrog; H changes by at most {dh:.2g} over {n_steps} steps"
        )

    def variant(kick_first: float, kick_last: float, use_mass: bool, sign: float):
        x, m = q.clone(), p.clone()
        m = m - sign * kick_first * step_size * grad_u(x)
        for i in range(n_steps):
            x = x + step_size * (inv_mass if use_mass else 1.0) * m
            kick = step_size if i < n_steps - 1 else kick_last * step_size
            m = m - sign * kick * grad_u(x)
        return torch.cat([x, m], 1).numpy()

    why = _named_mistake(
        yours,
        {
            "you returned the starting point: nothing moved": torch.cat([q, p], 1).numpy(),
            "a full kick, then a drift, n_steps times: that is the symplectic Euler "
            "method, whose energy error is of order step_size, not its square; leapfrog "
            "starts and ends with half kicks": variant(1.0, 0.0, True, 1.0),
            "a drift, then a full kick, n_steps times: that is the symplectic Euler "
            "method, whose energy error is of order step_size, not its square; leapfrog "
            "starts and ends with half kicks": variant(0.0, 1.0, True, 1.0),
            "the first half kick is missing": variant(0.0, 0.5, True, 1.0),
            "the last half kick is missing": variant(0.5, 0.0, True, 1.0),
            "the drift ignores the mass: dq/dt = M^-1 p, i.e. inv_mass * p": variant(
                0.5, 0.5, False, 1.0
            ),
            "the kicks push uphill: dp/dt = -grad U": variant(0.5, 0.5, True, -1.0),
        },
        rtol=1e-8,
    )
    if why:
        return False, why
    dh_yours = np.abs(energy(torch.from_numpy(q_got), torch.from_numpy(p_got)) - h0).max()
    return False, (
        _worst(yours, expected, lambda i: ("q", "p")[i[1] // 2] + f"[chain {i[0]}, {i[1] % 2}]")
        + f"; your end point changes H by up to {dh_yours:.3g}"
    )


def _chains_case() -> np.ndarray:
    """``[4, 200, 3]`` chains: well mixed; one chain shifted by 0.5; a trend in each chain
    (each chain drifts from -0.6 to +0.6: the halves differ, the whole chains do not)."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((4, 200, 3))
    x[0, :, 1] += 0.5
    x[:, :, 2] += np.linspace(-0.6, 0.6, 200)
    return x


def check_split_rhat(fn) -> tuple[bool, str]:
    """Exercise of supplement 06: is ``fn(samples)`` (``[C, S, D]`` chains) the split
    R-hat ``[D]``? Compared with :func:`physml.hmc.split_rhat` on three parameters: mixed
    chains, one shifted chain, and chains with a trend (relative tolerance 1e-8)."""
    from .hmc import split_rhat

    x = _chains_case()
    got, err = _call(fn, (x.copy(),), "samples [4, 200, 3]")
    if err:
        return False, err
    yours, err = _as_float64(got, "R-hat", (3,))
    if err:
        return False, err + " (one per parameter)"
    expected = split_rhat(x)
    if np.allclose(yours, expected, rtol=1e-8):
        return True, (
            "matches physml.hmc.split_rhat: "
            + ", ".join(f"{v:.3f}" for v in expected)
            + " (mixed, one chain shifted, a trend in every chain)"
        )

    def rhat(y, ddof=1, root=True):
        n = y.shape[1]
        w = y.var(1, ddof=ddof).mean(0)
        r = ((n - 1) / n * w + y.mean(1).var(0, ddof=ddof)) / w
        return np.sqrt(r) if root else r

    half = x.shape[1] // 2
    halves = np.concatenate([x[:, :half], x[:, -half:]], 0)
    why = _named_mistake(
        yours,
        {
            "the chains are not split into halves: a trend within each chain goes "
            "unnoticed (third parameter)": rhat(x),
            "this is R-hat squared: take the square root": rhat(halves, root=False),
            "the variances use ddof = 0: use the sample variance (ddof = 1)": rhat(halves, 0),
        },
        rtol=1e-8,
    )
    if why:
        return False, why
    names = ("mixed chains", "one chain shifted", "a trend in every chain")
    return False, _worst(yours, expected, lambda i: f"parameter {i[0]} ({names[i[0]]})")


def _spline_case():
    """x ``[4, 6]`` and a fixed monotone rational-quadratic spline psi (``[4, 6] -> [4, 6]``,
    elementwise, identity outside [-2, 2]) with its log psi'."""
    from .flows import n_rq_params, rq_spline

    gen = torch.Generator().manual_seed(3)
    x = 1.5 * torch.randn(4, 6, generator=gen, dtype=torch.float64)
    params = torch.randn(1, n_rq_params(5), generator=gen, dtype=torch.float64)

    def psi(v):
        return rq_spline(v.reshape(-1, 1).T, params, 2.0)[0].T.reshape(v.shape)

    log_dpsi = rq_spline(x.reshape(1, -1), params, 2.0)[1].reshape(x.shape)
    return x, psi, log_dpsi


def check_log_density(fn) -> tuple[bool, str]:
    """Exercise of supplement 07: is ``fn(x, psi)`` the log density ``[B]`` of x ``[B, D]``
    under the flow z = psi(x) (elementwise, monotone) with z ~ N(0, 1) in every cell, i.e.
    sum_cells [log N(psi(x); 0, 1) + log psi'(x)]? Compared with the spline's own analytic
    log-derivative (:func:`physml.flows.rq_spline`), relative tolerance 1e-8."""
    x, psi, log_dpsi = _spline_case()
    got, err = _call(fn, (x.clone(), psi), "x [4, 6] and a spline psi")
    if err:
        return False, err
    yours, err = _as_float64(got, "log q(x)", (x.shape[0],))
    if err:
        return False, err + " (one number per row of x: sum over its cells)"
    with torch.no_grad():
        log_base = torch.distributions.Normal(0.0, 1.0).log_prob(psi(x))
    expected = (log_base + log_dpsi).sum(-1).numpy()
    if np.allclose(yours, expected, rtol=1e-8):
        return True, "matches log N(psi(x)) + log psi'(x), summed over the cells"
    why = _named_mistake(
        yours,
        {
            "the log-determinant is missing: add log psi'(x), the change of volume": (
                log_base.sum(-1).numpy()
            ),
            "the log-determinant has the wrong sign: the density of x is p_z(psi(x)) "
            "times |dpsi/dx|, so log psi' is added": (log_base - log_dpsi).sum(-1).numpy(),
            "the base density is evaluated at x instead of at z = psi(x)": (
                torch.distributions.Normal(0.0, 1.0).log_prob(x) + log_dpsi
            )
            .sum(-1)
            .numpy(),
        },
        rtol=1e-8,
    )
    if why:
        return False, why
    return False, _worst(yours, expected, lambda i: f"row {i[0]}")


def _posterior_case() -> tuple[np.ndarray, np.ndarray]:
    """100 posterior samples ``[100, 30, 2]`` for 30 items and their true values ``[30, 2]``."""
    rng = np.random.default_rng(7)
    theta = rng.uniform([0.1, 0.6], [0.5, 1.0], (30, 2))
    samples = theta[None] + rng.normal(0.0, [0.03, 0.05], (100, 30, 2))
    return samples, theta


def check_sbc_ranks(fn) -> tuple[bool, str]:
    """Exercise of supplement 07: is ``fn(samples, theta)`` (samples ``[S, n, 2]``, theta
    ``[n, 2]``) the SBC rank of every true value among its samples, ``[n, 2]`` integers in
    [0, S] (the number of samples below the truth)? Compared with
    :func:`physml.npe.sbc_ranks` exactly."""
    from .npe import sbc_ranks

    samples, theta = _posterior_case()
    got, err = _call(fn, (samples.copy(), theta.copy()), "samples [100, 30, 2], theta [30, 2]")
    if err:
        return False, err
    yours, err = _as_float64(got, "the ranks", theta.shape)
    if err:
        return False, err + " (one rank per item and parameter)"
    expected = sbc_ranks(samples, theta).astype(np.float64)
    if np.array_equal(yours, expected):
        return True, "matches physml.npe.sbc_ranks on 30 items with 100 samples each"
    s = len(samples)
    why = _named_mistake(
        yours,
        {
            "you counted the samples above the truth: the rank is the number below it": (
                s - expected
            ),
            "these are fractions: the rank is a count of samples, in [0, S]": expected / s,
        },
        rtol=1e-12,
    )
    if why:
        return False, why
    wrong = yours != expected
    i, j = (int(v[0]) for v in np.nonzero(wrong))
    return False, (
        f"{int(wrong.sum())} of {wrong.size} ranks differ; first at item {i}, "
        f"{('Omega_m', 'sigma_8')[j]}: {yours[i, j]:.4g} instead of {int(expected[i, j])}"
    )


# --------------------------------------------------------------------------- lecture
# Self-checks of the exercises of the lecture notebooks 01 (aggregation, receptive field)
# and 02 (the Gaussian likelihood as a loss, interval coverage), in the same form. Their
# references are written out here (a loop over the edges, reachability by powers of the
# adjacency matrix, scipy's normal distribution), not taken from the library functions the
# notebooks teach.

#: the directed graph of :func:`check_mean_aggregation` and :func:`check_k_hop_nodes`:
#: edges ``j -> i`` as rows ``(j, i)`` of 7 nodes; node 6 receives nothing, node 0 sends
#: more than it receives, so that a direction mix-up shows
TOY_EDGES = ((0, 1), (0, 2), (0, 3), (1, 2), (2, 4), (3, 4), (4, 5), (5, 0), (6, 5), (1, 0))
TOY_NODES = 7


def _toy_graph() -> tuple[Tensor, Tensor]:
    """Node features ``[7, 3]`` (seeded) and the edge index ``[2, 10]`` of :data:`TOY_EDGES`
    (row 0 the senders j, row 1 the receivers i, as in PyG)."""
    gen = torch.Generator().manual_seed(11)
    h = torch.randn(TOY_NODES, 3, generator=gen, dtype=torch.float64)
    return h, torch.tensor(TOY_EDGES).T.contiguous()


def _mean_by_loop(h: np.ndarray, edges, receivers: bool = True, self_loop: bool = False):
    """Mean of the senders' rows of ``h`` per receiving node (or per sending node with
    ``receivers=False``), zero where a node has none; with ``self_loop`` the node's own row
    counts as one more neighbour."""
    out = np.zeros_like(h)
    for n in range(len(h)):
        rows = [j if receivers else i for j, i in edges if (i if receivers else j) == n]
        if self_loop:
            rows.append(n)
        if rows:
            out[n] = h[rows].mean(axis=0)
    return out


def check_mean_aggregation(fn) -> tuple[bool, str]:
    """Exercise of notebook 01: is ``fn(h, edge_index)`` (h ``[N, F]``, edge_index
    ``[2, E]`` with row 0 the senders j and row 1 the receivers i) the mean of the senders'
    features at each receiver, ``[N, F]``, zero at a node that receives nothing (PyG's
    convention)? Compared with a loop over the edges of a 7-node directed graph."""
    h, edge_index = _toy_graph()
    got, err = _call(fn, (h.clone(), edge_index.clone()), "h [7, 3], edge_index [2, 10]")
    if err:
        return False, err
    what = "the aggregated features"
    yours, err = _as_float64(got, what, (TOY_NODES, 3), finite=False)
    if err:
        return False, err + " (one row per node)"
    if np.isnan(yours[6]).any():
        return False, (
            "node 6 receives no message and your mean there is NaN (0 / 0): give nodes "
            "without neighbours 0, as PyG does (divide by the count clamped to at least 1)"
        )
    _, err = _as_float64(yours, what, (TOY_NODES, 3))
    if err:
        return False, err
    hn = h.numpy()
    expected = _mean_by_loop(hn, TOY_EDGES)
    if np.allclose(yours, expected, rtol=1e-6, atol=1e-9):
        return True, "matches a loop over the 10 edges of a 7-node directed graph"
    count = np.bincount([i for _, i in TOY_EDGES], minlength=TOY_NODES)[:, None]
    why = _named_mistake(
        yours,
        {
            "this is the sum of the messages: divide by the number each node receives": (
                expected * count
            ),
            "you aggregated at the senders: messages go from edge_index[0] (j) to "
            "edge_index[1] (i)": _mean_by_loop(hn, TOY_EDGES, receivers=False),
            "you counted the node itself as a neighbour: aggregate the senders only": (
                _mean_by_loop(hn, TOY_EDGES, self_loop=True)
            ),
        },
        rtol=1e-6,
    )
    if why:
        return False, why
    return False, _worst(yours, expected, lambda i: f"node {i[0]}, feature {i[1]}")


def _reachable(edges, n_nodes: int, node: int, k: int, exact: bool = False, out=False):
    """Nodes whose messages reach ``node`` in at most ``k`` steps along the edges (exactly
    ``k`` with ``exact``; along the reversed edges with ``out``), by powers of the adjacency
    matrix ``A[i, j] = 1`` for an edge ``j -> i``."""
    a = np.zeros((n_nodes, n_nodes), dtype=np.int64)
    for j, i in edges:
        a[(j, i) if out else (i, j)] = 1
    step = a if exact else a + np.eye(n_nodes, dtype=np.int64)
    reach = np.linalg.matrix_power(step, k)[node] if k > 0 else np.eye(n_nodes)[node]
    return sorted(int(v) for v in np.nonzero(reach)[0])


def check_k_hop_nodes(fn, node: int = 4, k: int = 2) -> tuple[bool, str]:
    """Exercise of notebook 01: is ``fn(edge_index, num_nodes, node, k)`` the receptive
    field of ``node`` after ``k`` layers, the nodes (the node itself included) from which a
    message reaches it in at most ``k`` steps along the edges ``edge_index[0] ->
    edge_index[1]``? Any order, as a list or a 1-D tensor; compared as a set with the
    reachability of a 7-node directed graph by powers of its adjacency matrix."""
    _, edge_index = _toy_graph()
    what = f"the 7-node graph, node {node}, k = {k}"
    got, err = _call(fn, (edge_index.clone(), TOY_NODES, node, k), what)
    if err:
        return False, err
    try:
        flat = _numpy(got).reshape(-1)
        yours = sorted({int(v) for v in flat})
        if not np.all(np.isin(flat, np.arange(TOY_NODES))):
            raise ValueError
    except (TypeError, ValueError):
        return False, (
            f"expected the node indices (integers from 0 to {TOY_NODES - 1}), got {got!r}"
        )
    expected = _reachable(TOY_EDGES, TOY_NODES, node, k)
    if yours == expected:
        return True, f"node {node} hears from nodes {expected} within {k} steps"
    guesses = {
        f"these are the nodes exactly {k} steps away: a layer also keeps what the nearer "
        "nodes sent (and the node's own features)": _reachable(
            TOY_EDGES, TOY_NODES, node, k, exact=True
        ),
        f"the node itself is missing: after {k} layers its output still depends on its own "
        "features": [v for v in expected if v != node],
        "you followed the edges the wrong way: these are the nodes that hear from it; "
        "messages go from edge_index[0] to edge_index[1]": _reachable(
            TOY_EDGES, TOY_NODES, node, k, out=True
        ),
        f"these are {k - 1} steps: count one step per layer": _reachable(
            TOY_EDGES, TOY_NODES, node, k - 1
        ),
    }
    for why, guess in guesses.items():
        if yours == sorted(guess):
            return False, why
    missing = sorted(set(expected) - set(yours))
    extra = sorted(set(yours) - set(expected))
    parts = [f"missing {missing}"] * bool(missing) + [f"{extra} do not reach it"] * bool(extra)
    return False, f"expected {expected}, got {yours} ({'; '.join(parts)})"


def _loss_case() -> tuple[Tensor, Tensor, Tensor]:
    """Predicted means, standard deviations and true values, ``[40, 2]`` each (seeded)."""
    gen = torch.Generator().manual_seed(5)
    true = 0.6 + 0.4 * torch.rand(40, 2, generator=gen, dtype=torch.float64)
    std = 0.02 + 0.06 * torch.rand(40, 2, generator=gen, dtype=torch.float64)
    mean = true + std * torch.randn(40, 2, generator=gen, dtype=torch.float64) * 1.3
    return mean, std, true


def check_gaussian_nll(fn) -> tuple[bool, str]:
    """Exercise of notebook 02: is ``fn(mean, std, true)`` (``[B, T]`` tensors each) the
    Gaussian negative log-likelihood, averaged over the batch and summed over the targets,
    a scalar tensor that autograd can differentiate? With or without the constant
    ``log(2 pi) / 2`` per target. Compared with ``-scipy.stats.norm.logpdf``."""
    from scipy.stats import norm

    mean, std, true = _loss_case()
    mean_in = mean.clone().requires_grad_(True)
    got, err = _call(fn, (mean_in, std.clone(), true.clone()), "mean, std, true [40, 2] each")
    if err:
        return False, err
    if not (torch.is_tensor(got) and got.dim() == 0):
        shape = list(got.shape) if torch.is_tensor(got) else type(got).__name__
        return False, f"expected a scalar tensor (a loss to minimise), got {shape}"
    if not got.requires_grad:
        return False, (
            "the loss does not depend on mean through torch operations (no gradient): "
            "compute it with torch, not numpy or float()"
        )
    yours = float(got.detach())
    m, s, t = (x.numpy() for x in (mean, std, true))
    expected = float(-norm.logpdf(t, loc=m, scale=s).mean(axis=0).sum())
    n_targets = t.shape[1]
    without_constant = expected - n_targets * 0.5 * math.log(2 * math.pi)
    for value, how in ((expected, "with"), (without_constant, "without")):
        if math.isclose(yours, value, rel_tol=1e-6, abs_tol=1e-9):
            return True, (
                f"matches -norm.logpdf, averaged over 40 catalogs and summed over 2 targets, "
                f"{how} the constant log(2 pi) / 2: {yours:.4f}"
            )
    r2 = ((t - m) / s) ** 2
    log_s = np.log(s)
    constant = n_targets * 0.5 * math.log(2 * math.pi)
    for c in (0.0, constant):  # each mistake with and without the constant
        guesses = {
            "this is the log-likelihood: a loss is its negative": -(without_constant + c),
            "you summed over the batch: average over the catalogs (sum over the targets)": (
                (without_constant + c) * len(t)
            ),
            "you averaged over the targets as well: sum over them": (
                (without_constant + c) / n_targets
            ),
            "log sigma^2 without the 1/2: the density has log sigma, or (1/2) log sigma^2": (
                (2 * log_s + 0.5 * r2).mean(axis=0).sum() + c
            ),
            "the squared error lacks its 1/2: the exponent is -(y - mu)^2 / (2 sigma^2)": (
                (log_s + r2).mean(axis=0).sum() + c
            ),
        }
        for why, guess in guesses.items():
            if math.isclose(yours, float(guess), rel_tol=1e-6, abs_tol=1e-9):
                return False, why
    return False, (
        f"{yours:.6g} instead of {expected:.6g} ({without_constant:.6g} without the constant)"
    )


def _coverage_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predicted means, standard deviations and true values, ``[300]`` each (seeded;
    the errors somewhat larger than the predicted std)."""
    rng = np.random.default_rng(3)
    true = rng.uniform(0.6, 1.0, 300)
    std = rng.uniform(0.03, 0.08, 300)
    return true + 1.2 * std * rng.standard_normal(300), std, true


def check_coverage(fn) -> tuple[bool, str]:
    """Exercise of notebook 02: is ``fn(mean, std, true, level)`` (``[n]`` arrays each, a
    probability ``level``) the fraction of true values inside the central ``level``
    interval of the predicted Gaussians? Compared at levels 0.4, 0.68 and 0.95 with a count
    against ``scipy.stats.norm.ppf((1 + level) / 2)``."""
    from scipy.stats import norm

    mean, std, true = _coverage_case()
    levels = (0.4, 0.68, 0.95)
    yours = []
    for level in levels:
        got, err = _call(fn, (mean.copy(), std.copy(), true.copy(), level), f"level {level}")
        if err:
            return False, err
        try:
            yours.append(float(got))
        except (TypeError, ValueError):
            return False, f"level {level}: expected one number (a fraction), got {got!r}"
    yours = np.array(yours)
    z = np.abs(mean - true) / std

    def frac(limit):
        return np.array([np.mean(z <= lim) for lim in limit])

    expected = frac([norm.ppf((1 + p) / 2) for p in levels])
    if np.allclose(yours, expected, atol=1e-12):
        return True, (
            "matches a count inside the central intervals: "
            + ", ".join(f"{p:.0%}: {c:.3f}" for p, c in zip(levels, expected, strict=True))
        )
    why = _named_mistake(
        yours,
        {
            "you used norm.ppf(level), a one-sided quantile: the central interval reaches "
            "norm.ppf((1 + level) / 2) standard deviations on each side": frac(
                [norm.ppf(p) for p in levels]
            ),
            "you used one standard deviation at every level: the central interval reaches "
            "norm.ppf((1 + level) / 2) standard deviations on each side": frac([1.0] * 3),
            "this is the fraction outside the intervals: count the truths inside": 1 - expected,
            "you counted in percent: return a fraction in [0, 1]": 100 * expected,
        },
        rtol=1e-9,
    )
    if why:
        return False, why
    i = int(np.argmax(np.abs(yours - expected)))
    return False, f"level {levels[i]}: {yours[i]:.4g} instead of {expected[i]:.4g}"
