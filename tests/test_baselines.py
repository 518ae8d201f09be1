"""Tests for physml.baselines: summary statistics against hand counts and brute force,
regressors that must recover known relations and give calibrated intervals."""

import math

import numpy as np
import pytest
import torch

from physml.baselines import (
    KINDS,
    correlation_function,
    feature_names,
    fit_baseline,
    pair_counts,
    run_baseline,
    summary_statistics,
    targets_of,
)
from physml.catalogs import Catalog, CatalogSet
from physml.metrics import coverage, r2

# --------------------------------------------------------------------------- helpers


def brute_pairs(pos, r):
    """Distinct pairs with minimum-image separation <= r in the unit box (numpy, O(N^2))."""
    x = np.asarray(pos, dtype=np.float64)
    d = x[:, None, :] - x[None, :, :]
    d -= np.round(d)
    dist = np.sqrt((d**2).sum(-1))[np.triu_indices(len(x), k=1)]
    return np.array([(dist <= ri).sum() for ri in np.atleast_1d(r)])


def make_catalog(rng, n_by_mass):
    """Uniform positions; ``n_by_mass`` = [(count, lo, hi)] masses in 1e10 Msun/h, log-uniform."""
    masses = [10 ** rng.uniform(np.log10(lo), np.log10(hi), n) for n, lo, hi in n_by_mass]
    mass = np.concatenate(masses).astype(np.float32)
    return Catalog(rng.random((len(mass), 3)).astype(np.float32), mass)


def synthetic_set(n=150, seed=0, omega_halos=True):
    """sigma_8 sets N(1e12..3e12 Msun/h) = 200 s8; Omega_m sets N(3e12..1e13) = 100 Om
    (if ``omega_halos``); a random number of small halos (< 2e11) adds noise that no count
    feature sees."""
    rng = np.random.default_rng(seed)
    om, s8 = rng.uniform(0.1, 0.5, n), rng.uniform(0.6, 1.0, n)
    cats = [
        make_catalog(
            rng,
            [
                (int(round(200 * s)), 100.0, 299.0),
                (int(round(100 * o)) if omega_halos else 0, 301.0, 999.0),
                (rng.integers(20, 80), 2.0, 19.0),
            ],
        )
        for o, s in zip(om, s8, strict=True)
    ]
    return CatalogSet(cats, np.stack([om, s8], axis=1))


SPLIT = {"train": np.arange(100), "val": np.arange(100, 115), "test": np.arange(115, 150)}


@pytest.fixture(scope="module")
def cset():
    return synthetic_set()


@pytest.fixture(scope="module")
def features(cset):
    return summary_statistics(cset)


# --------------------------------------------------------------------------- statistics


def test_pair_counts_match_brute_force():
    rng = np.random.default_rng(1)
    pos = rng.random((300, 3))
    # pairs across every face and a corner, so the minimum image matters
    pos[:6] = [[0.005, 0.5, 0.5], [0.995, 0.5, 0.5], [0.3, 0.002, 0.7], [0.3, 0.99, 0.7],
               [0.001, 0.001, 0.001], [0.999, 0.999, 0.999]]  # fmt: skip
    r = np.array([0.01, 0.02, 0.05, 0.1, 0.2])
    np.testing.assert_array_equal(pair_counts(pos, r), brute_pairs(pos, r))
    assert pair_counts(pos[:1], r).tolist() == [0] * len(r)


def test_correlation_function_hand_made():
    # one pair 0.5 Mpc/h apart across the x face, two halos far from everything
    box = 25.0
    pos = [[0.01, 0.5, 0.5], [0.99, 0.5, 0.5], [0.25, 0.25, 0.25], [0.75, 0.75, 0.25]]
    cat = Catalog(np.array(pos, np.float32), np.ones(4, np.float32))
    seps = np.array([0.4, 1.0, 2.0])  # Mpc/h; the pair separation is 0.02 box = 0.5 Mpc/h
    dd = np.array([0, 1, 1])
    rr = 4 * 3 / 2 * 4 / 3 * math.pi * (seps / box) ** 3
    np.testing.assert_allclose(correlation_function(cat, seps, box), dd / rr - 1, rtol=1e-6)
    feats = summary_statistics(CatalogSet([cat], [[0.3, 0.8]], box), (1e10,), seps)
    np.testing.assert_allclose(feats[0, 3:], np.log10(1 + dd / rr), rtol=1e-6)


def test_correlation_function_poisson_is_zero():
    rng = np.random.default_rng(2)
    n = 3000
    cat = Catalog(rng.random((n, 3)).astype(np.float32), np.ones(n, np.float32))
    seps = np.array([1.0, 2.0, 4.0])
    xi = correlation_function(cat, seps, 25.0)
    rr = n * (n - 1) / 2 * 4 / 3 * math.pi * (seps / 25.0) ** 3
    assert np.all(np.abs(xi) < 4 / np.sqrt(rr)), (xi, 1 / np.sqrt(rr))


def test_summary_statistics_hand_made():
    mass = np.array([1.0, 30.0, 60.0, 200.0, 5000.0], np.float32)  # 1e10 Msun/h
    cat = Catalog(np.random.default_rng(3).random((5, 3)).astype(np.float32), mass)
    feats = summary_statistics(CatalogSet([cat], [[0.3, 0.8]]))
    names = feature_names()
    assert feats.shape == (1, len(names)) == (1, 11)
    n_above = np.array([4, 3, 2, 1, 1])  # above 2e11, 5e11, 1e12, 3e12, 1e13
    np.testing.assert_allclose(feats[0, :5], np.log10(1 + n_above))
    np.testing.assert_allclose(feats[0, 5], np.mean(np.log10(mass * 1e10)), rtol=1e-6)
    np.testing.assert_allclose(feats[0, 6], np.log10(5000.0 * 1e10), rtol=1e-6)


def test_summary_statistics_empty_and_single_halo():
    empty = Catalog(np.zeros((0, 3), np.float32), np.zeros(0, np.float32))
    one = Catalog(np.full((1, 3), 0.5, np.float32), np.array([50.0], np.float32))
    feats = summary_statistics(CatalogSet([empty, one], [[0.3, 0.8], [0.3, 0.9]]))
    assert feats.shape == (2, 11) and np.all(np.isfinite(feats))
    np.testing.assert_allclose(feats[0, :5], 0.0)
    np.testing.assert_allclose(feats[0, 5:7], np.log10(2e11))  # the smallest mass cut
    np.testing.assert_allclose(feats[1, 5:7], np.log10(5e11), rtol=1e-6)
    np.testing.assert_allclose(feats[:, 7:], np.log10(2.0))  # DD/RR := 1 for N < 2


def test_summary_statistics_rejects_large_separation(cset):
    with pytest.raises(ValueError, match="separations"):
        summary_statistics(cset[:2], separations=(13.0,))


def test_features_finite(features, cset):
    assert features.shape == (len(cset), len(feature_names()))
    assert np.all(np.isfinite(features))


# --------------------------------------------------------------------------- regressors


def test_linear_recovers_count():
    # N(>1e12) = 200 sigma_8 exactly (up to rounding); log10(1 + N) is close to linear
    cset = synthetic_set(seed=7, omega_halos=False)
    out = run_baseline(cset, SPLIT, "sigma8", "linear")
    assert out["metrics"]["sigma_8"]["r2"] > 0.99, out["metrics"]


def test_quadratic_recovers_both(cset, features):
    # the cumulative counts mix both labels non-linearly in log space: quadratic needed
    out = run_baseline(cset, SPLIT, "both", "quadratic", features=features)
    # column order is (sigma_8, Omega_m), reordered from params = (Omega_m, sigma_8)
    np.testing.assert_array_equal(out["true"][:, 0], cset.sigma_8[SPLIT["test"]])
    np.testing.assert_array_equal(out["true"][:, 1], cset.omega_m[SPLIT["test"]])
    assert out["pred"].shape == out["std"].shape == (35, 2) and np.all(out["std"] > 0)
    assert out["names"] == ["sigma_8", "Omega_m"]
    m = out["metrics"]
    assert m["n_catalogs"] == 35
    assert m["sigma_8"]["r2"] > 0.99 and m["Omega_m"]["r2"] > 0.99, m


def test_sigma8_target_shape(cset, features):
    out = run_baseline(cset, SPLIT, "sigma8", "linear", features=features)
    assert out["pred"].shape == (35, 1) and list(out["metrics"]) == ["sigma_8", "n_catalogs"]


def test_quadratic_fits_quadratic_exactly():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(200, 3))
    y = 1.0 + x[:, 0] * x[:, 1] - 0.5 * x[:, 2] ** 2
    model = fit_baseline(x[:150], y[:150], "quadratic")
    mean, _ = model.predict(x[150:])
    assert r2(mean[:, 0], y[150:]) > 0.999
    lin, _ = fit_baseline(x[:150], y[:150], "linear").predict(x[150:])
    assert r2(lin[:, 0], y[150:]) < 0.5  # a linear model cannot


def test_ridge_std_is_calibrated_and_heteroscedastic():
    rng = np.random.default_rng(5)
    n = 4000
    x = rng.normal(size=(n, 3))
    sigma = np.where(x[:, 0] > 0, 0.1, 0.05)
    y = x @ [0.3, -0.2, 0.1] + sigma * rng.normal(size=n)
    tr, te = slice(0, n // 2), slice(n // 2, n)
    mean, std = fit_baseline(x[tr], y[tr], "linear").predict(x[te])
    assert abs(coverage(mean, std, y[te, None], 0.68)[0] - 0.68) < 0.04
    assert abs(coverage(mean, std, y[te, None], 0.95)[0] - 0.95) < 0.03
    hi, lo = x[te, 0] > 0.5, x[te, 0] < -0.5
    assert 1.4 < np.median(std[hi]) / np.median(std[lo]) < 2.6  # truth: 2
    _, const = fit_baseline(x[tr], y[tr], "linear", std_model="constant").predict(x[te])
    np.testing.assert_allclose(const, np.sqrt(np.mean(sigma**2)), rtol=0.05)


def test_mlp_fits_and_is_deterministic():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(300, 3))
    y = np.stack([x[:, 0] + 0.5 * x[:, 1], np.tanh(x[:, 2])], 1) + 0.05 * rng.normal(size=(300, 2))
    state = torch.get_rng_state()
    kw = {"epochs": 300, "seed": 3}
    mean1, std1 = fit_baseline(x[:200], y[:200], "mlp", **kw).predict(x[200:])
    mean2, std2 = fit_baseline(x[:200], y[:200], "mlp", **kw).predict(x[200:])
    assert torch.equal(state, torch.get_rng_state())
    np.testing.assert_array_equal(mean1, mean2)
    np.testing.assert_array_equal(std1, std2)
    assert mean1.shape == std1.shape == (100, 2) and np.all(std1 > 0)
    assert np.all(r2(mean1, y[200:]) > 0.9)


def test_run_baseline_mlp_uses_val(cset, features):
    out = run_baseline(cset, SPLIT, "sigma8", "mlp", features=features, epochs=30)
    assert out["pred"].shape == (35, 1) and np.all(np.isfinite(out["pred"]))
    assert out["model"].epochs_run <= 30


def test_targets_of_reorders(cset):
    y, names = targets_of(cset, "both")
    np.testing.assert_array_equal(y, cset.params[:, ::-1])
    assert names == ["sigma_8", "Omega_m"]


def test_bad_kind_and_target(cset, features):
    x, y = features[:20], cset.sigma_8[:20]
    with pytest.raises(ValueError, match="linear.*quadratic.*mlp"):
        fit_baseline(x, y, kind="cubic")
    with pytest.raises(ValueError, match="sigma8.*both"):
        run_baseline(cset, SPLIT, target="h", features=features)
    with pytest.raises(ValueError, match="kind"):
        run_baseline(cset, SPLIT, kind="svm", features=features)
    with pytest.raises(ValueError, match="features"):
        fit_baseline(x, y, "linear").predict(x[:, :3])
    assert set(KINDS) == {"linear", "quadratic", "mlp"}


def test_ridge_leave_one_out_residuals_match_brute_force_refits():
    """The closed-form LOO residuals e_i / (1 - H_ii) (unpenalised intercept) equal those of
    n explicit refits without catalog i, for each penalty."""
    from physml.baselines import _ridge_loo

    rng = np.random.default_rng(3)
    phi = rng.normal(size=(25, 4))
    y = phi @ rng.normal(size=(4, 2)) + 0.3 * rng.normal(size=(25, 2)) + 1.5
    for alpha in (1e-3, 0.7, 20.0):
        _, _, _, loo, _ = _ridge_loo(phi, y, (alpha,))
        brute = np.empty_like(y)
        for i in range(len(y)):
            keep = np.arange(len(y)) != i
            a = np.hstack([np.ones((keep.sum(), 1)), phi[keep]])
            pen = alpha * np.eye(5)
            pen[0, 0] = 0.0  # the intercept is not penalised
            coef = np.linalg.solve(a.T @ a + pen, a.T @ y[keep])
            brute[i] = y[i] - np.concatenate([[1.0], phi[i]]) @ coef
        np.testing.assert_allclose(loo, brute, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------- feature subsets


def test_feature_subsets_carry_what_they_claim():
    """Clustering columns do not change when the masses change (and the abundance ones
    do); abundance columns do not change when the halos move (and the clustering ones
    do); the subsets are the matching columns of all the statistics, with their names."""
    from physml.baselines import FEATURE_SETS, feature_columns

    cset = synthetic_set(20, seed=3)
    rng = np.random.default_rng(1)
    reweighed = CatalogSet(
        [Catalog(c.pos, (c.mass * rng.uniform(0.3, 3.0, len(c))).astype(np.float32)) for c in cset],
        cset.params,
    )
    moved = CatalogSet(
        [Catalog(rng.random((len(c), 3)).astype(np.float32), c.mass) for c in cset], cset.params
    )
    full = summary_statistics(cset)
    for subset in FEATURE_SETS:
        cols = feature_columns(subset, 5, 4)
        np.testing.assert_array_equal(summary_statistics(cset, subset=subset), full[:, cols])
        assert feature_names(subset=subset) == [feature_names()[i] for i in cols]
    clustering = summary_statistics(cset, subset="clustering")
    abundance = summary_statistics(cset, subset="abundance")
    assert clustering.shape == (20, 4) and abundance.shape == (20, 7)
    assert all("DD/RR" in name for name in feature_names(subset="clustering"))
    assert not any("DD/RR" in name for name in feature_names(subset="abundance"))
    np.testing.assert_array_equal(summary_statistics(reweighed, subset="clustering"), clustering)
    assert np.abs(summary_statistics(reweighed, subset="abundance") - abundance).max() > 0.01
    np.testing.assert_array_equal(summary_statistics(moved, subset="abundance"), abundance)
    assert np.abs(summary_statistics(moved, subset="clustering") - clustering).max() > 0.01
    with pytest.raises(ValueError, match="subset"):
        summary_statistics(cset, subset="velocities")


def test_run_baseline_on_a_subset_uses_only_those_columns():
    """The abundance-only baseline recovers sigma_8 from the counts of synthetic_set (as
    the full one does); the clustering-only one cannot (positions are uniform)."""
    cset = synthetic_set(150)
    split = {"train": np.arange(100), "test": np.arange(100, 150)}
    full = run_baseline(cset, split)["metrics"]["sigma_8"]["r2"]
    abundance = run_baseline(cset, split, subset="abundance")["metrics"]["sigma_8"]["r2"]
    clustering = run_baseline(cset, split, subset="clustering")["metrics"]["sigma_8"]["r2"]
    assert abundance > 0.9 and full > 0.9
    assert clustering < 0.2
