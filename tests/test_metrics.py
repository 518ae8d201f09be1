"""Tests of physml.metrics against hand-computed values and Gaussian closed forms."""

import json

import numpy as np
import pytest
from scipy.stats import norm

from physml.metrics import chi2, coverage, epsilon, r2, summary


def test_epsilon_relative_to_truth():
    assert epsilon([1.1, 0.9], [1.0, 1.0]) == pytest.approx(0.1)
    # divided by the truth (|2 - 1| / 1), not by the prediction (which would give 0.5)
    assert epsilon([2.0], [1.0]) == pytest.approx(1.0)
    assert epsilon([0.5, 0.6], [0.4, 0.8]) == pytest.approx((0.1 / 0.4 + 0.2 / 0.8) / 2)
    assert isinstance(epsilon([1.0], [2.0]), float)
    with pytest.raises(ValueError, match="zeros"):
        epsilon([1.0], [0.0])


def test_r2():
    true = np.array([1.0, 2.0, 3.0])
    assert r2(true, true) == pytest.approx(1.0)
    assert r2(np.full(3, 2.0), true) == pytest.approx(0.0)  # predicting the mean
    assert r2([1.0, 2.0, 4.0], true) == pytest.approx(1 - 1 / 2)
    assert r2([3.0, 2.0, 1.0], true) == pytest.approx(1 - 8 / 2)
    assert np.isnan(r2([1.0, 2.0], [1.0, 1.0]))  # constant truth: undefined


def test_chi2_and_coverage_by_hand():
    pred = np.array([0.5, 1.5, 2.5])
    std = np.ones(3)
    true = np.zeros(3)
    assert chi2(pred, std, true) == pytest.approx((0.25 + 2.25 + 6.25) / 3)
    assert chi2([1.0, 2.0], [1.0, 2.0], [0.0, 0.0]) == pytest.approx(1.0)
    # z(0.68) = 0.994, z(0.95) = 1.960
    assert coverage(pred, std, true, 0.68) == pytest.approx(1 / 3)
    assert coverage(pred, std, true, 0.95) == pytest.approx(2 / 3)
    assert coverage(pred, 2 * std, true, 0.95) == 1.0  # all |residual| <= 2 * 1.960
    assert coverage([0.99], [1.0], [0.0], 0.68) == 1.0
    assert coverage([1.0], [1.0], [0.0], 0.68) == 0.0


def test_calibrated_gaussian_draws():
    rng = np.random.default_rng(0)
    n = 200_000
    true = rng.uniform(0.6, 1.0, n)
    std = rng.uniform(0.01, 0.05, n)
    pred = true + std * rng.standard_normal(n)
    assert chi2(pred, std, true) == pytest.approx(1.0, abs=0.01)
    assert coverage(pred, std, true, 0.68) == pytest.approx(0.68, abs=0.005)
    assert coverage(pred, std, true, 0.95) == pytest.approx(0.95, abs=0.003)
    # over-confident uncertainties (half the true scatter): chi2 ~ 4, coverage drops
    assert chi2(pred, std / 2, true) == pytest.approx(4.0, rel=0.02)
    z68 = norm.ppf(0.84)
    expected = 2 * norm.cdf(z68 / 2) - 1  # P(|N(0, 1)| <= z / 2) = 0.381
    assert coverage(pred, std / 2, true, 0.68) == pytest.approx(expected, abs=0.005)


def test_columns_and_summary():
    rng = np.random.default_rng(1)
    true = np.column_stack([rng.uniform(0.6, 1.0, 50), rng.uniform(0.1, 0.5, 50)])
    std = np.full_like(true, 0.02)
    pred = true + std * rng.standard_normal(true.shape)
    per_col = epsilon(pred, true)
    assert per_col.shape == (2,)
    for t in range(2):
        assert per_col[t] == pytest.approx(epsilon(pred[:, t], true[:, t]))
        assert r2(pred, true)[t] == pytest.approx(r2(pred[:, t], true[:, t]))
    s = summary(pred, std, true, ["sigma_8", "Omega_m"])
    assert s["n_catalogs"] == 50
    assert set(s) == {"sigma_8", "Omega_m", "n_catalogs"}
    assert set(s["Omega_m"]) == {"epsilon", "r2", "chi2", "coverage_68", "coverage_95"}
    assert s["Omega_m"]["chi2"] == pytest.approx(chi2(pred[:, 1], std[:, 1], true[:, 1]))
    assert s["sigma_8"]["coverage_95"] == coverage(pred[:, 0], std[:, 0], true[:, 0], 0.95)
    json.dumps(s)  # plain Python types
    one = summary(pred[:, 0], std[:, 0], true[:, 0], "sigma_8")
    assert one["sigma_8"] == pytest.approx(s["sigma_8"], rel=1e-12)


def test_validation():
    with pytest.raises(ValueError, match="shape"):
        epsilon([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        r2([np.nan, 1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="std"):
        chi2([1.0], [0.0], [1.0])
    with pytest.raises(ValueError, match="std"):
        coverage([1.0], [-1.0], [1.0], 0.68)
    with pytest.raises(ValueError, match="no entries"):
        chi2([], [], [])
    with pytest.raises(ValueError, match="level"):
        coverage([1.0], [1.0], [1.0], 1.5)
    with pytest.raises(ValueError, match="names"):
        summary(np.ones((3, 2)), np.ones((3, 2)), np.ones((3, 2)), ["sigma_8"])
    with pytest.raises(ValueError, match="shape"):
        summary(np.ones((3, 2, 1)), np.ones((3, 2, 1)), np.ones((3, 2, 1)), ["a", "b"])


def test_summary_is_valid_json_when_r2_is_undefined():
    import json

    from physml.experiment import leaderboard

    out = summary([0.79, 0.81, 0.8], [0.01, 0.01, 0.01], [0.8, 0.8, 0.8], ["sigma_8"])
    assert out["sigma_8"]["r2"] is None
    json.loads(json.dumps(out, allow_nan=False))
    assert "n/a" in leaderboard({"cv": out})


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_interval_of_a_mean_is_sigma_over_sqrt_n():
    """Closed form: the 68 % bootstrap interval of the mean of n Gaussian draws is about
    mean +- sigma / sqrt(n) (the sample std, up to the bootstrap's own noise)."""
    from physml.metrics import bootstrap_interval

    rng = np.random.default_rng(0)
    n, sigma = 400, 2.0
    x = rng.normal(5.0, sigma, n)
    lo, hi = bootstrap_interval(lambda idx: x[idx].mean(), n, n_boot=4000, seed=1)
    half = x.std() / np.sqrt(n)
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.06)
    assert (lo + hi) / 2 == pytest.approx(x.mean(), abs=0.1 * half)
    lo95, hi95 = bootstrap_interval(lambda idx: x[idx].mean(), n, n_boot=4000, level=0.95)
    assert (hi95 - lo95) / 2 == pytest.approx(1.96 * half, rel=0.06)
    # an array statistic gives one interval per entry
    lo2, hi2 = bootstrap_interval(lambda idx: np.array([x[idx].mean(), 2 * x[idx].mean()]), n)
    assert lo2.shape == (2,) and hi2[1] - lo2[1] == pytest.approx(2 * (hi2[0] - lo2[0]))
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval(lambda idx: 0.0, n, level=1.5)


def test_seed_summary_against_summary_of_each_run():
    from physml.metrics import seed_summary

    rng = np.random.default_rng(2)
    true = rng.uniform(0.6, 1.0, (60, 2))
    runs = [
        (true + rng.normal(0, 0.05 * (s + 1), true.shape), np.full(true.shape, 0.05), true)
        for s in range(3)
    ]
    got = seed_summary(runs, ["sigma_8", "Omega_m"], n_boot=500)
    for t, name in enumerate(["sigma_8", "Omega_m"]):
        eps = [summary(p, s, y, ["a", "b"])[["a", "b"][t]]["epsilon"] for p, s, y in runs]
        r2s = [summary(p, s, y, ["a", "b"])[["a", "b"][t]]["r2"] for p, s, y in runs]
        row = got[name]
        assert row["epsilon_mean"] == pytest.approx(np.mean(eps))
        assert row["epsilon_std"] == pytest.approx(np.std(eps, ddof=1))
        assert row["r2_mean"] == pytest.approx(np.mean(r2s))
        assert row["n_seeds"] == 3
        lo, hi = row["epsilon_68"]
        assert lo < row["epsilon_mean"] < hi
    one = seed_summary(runs[:1], ["sigma_8", "Omega_m"], n_boot=100)
    assert one["sigma_8"]["epsilon_std"] is None
    with pytest.raises(ValueError, match="true values differ"):
        seed_summary([runs[0], (runs[1][0], runs[1][1], true + 1)], ["a", "b"], n_boot=10)
