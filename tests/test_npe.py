"""NPE diagnostics against exact posteriors of a conjugate Gaussian model; the GNN context."""

import numpy as np
import pytest
import torch

pytest.importorskip("zuko")
pytest.importorskip("tarp")

from physml import npe  # noqa: E402


def _conjugate(n_sims=400, n_samples=300, width_factor=1.0, seed=0):
    # theta ~ N(0.3, 0.8; 0.05^2), x = theta + N(0, 0.03^2): the posterior is Gaussian
    rng = np.random.default_rng(seed)
    mu0, s0, sn = np.array([0.3, 0.8]), 0.05, 0.03
    theta = mu0 + s0 * rng.standard_normal((n_sims, 2))
    x = theta + sn * rng.standard_normal((n_sims, 2))
    var = 1 / (1 / s0**2 + 1 / sn**2)
    mean = var * (mu0 / s0**2 + x / sn**2)
    samples = mean + width_factor * np.sqrt(var) * rng.standard_normal((n_samples, n_sims, 2))
    return samples, theta


def test_tarp_and_sbc_pass_exact_posteriors_and_fail_narrow_ones():
    samples, theta = _conjugate()
    alpha, ecp = npe.tarp_coverage(samples, theta, seed=0)
    assert np.abs(ecp - alpha).max() < 0.1
    chi2 = npe.rank_histogram_chi2(npe.sbc_ranks(samples, theta), samples.shape[0])
    assert np.all(chi2 < 30)  # 9 degrees of freedom
    narrow, theta = _conjugate(width_factor=0.4)
    alpha, ecp = npe.tarp_coverage(narrow, theta, seed=0)
    assert np.abs(ecp - alpha).max() > 0.2
    chi2 = npe.rank_histogram_chi2(npe.sbc_ranks(narrow, theta), narrow.shape[0])
    assert np.all(chi2 > 50)
    assert np.allclose(
        npe.marginal_widths(samples).mean(0), np.sqrt(1 / (1 / 0.05**2 + 1 / 0.03**2)), rtol=0.05
    )


def test_unit_scaling_round_trip_and_log_prob_jacobian():
    theta = torch.tensor([[0.1, 0.6], [0.5, 1.0], [0.3, 0.8]])
    from physml.flows import theta_to_unit

    u = theta_to_unit(theta)
    assert torch.allclose(u[0], torch.tensor([-1.0, -1.0])) and torch.allclose(u[1], torch.ones(2))
    assert torch.allclose(npe.unit_to_theta(u), theta, atol=1e-6)
    # the density in theta integrates to 1 over the prior box (both Jacobians; midpoint rule)
    torch.manual_seed(0)
    model = npe.NPE(npe.SummaryEmbedding(3, context=4), context=4, transforms=1, hidden=8)
    feats = torch.zeros(1, 3)
    grid, cell = _box_midpoints(400)
    with torch.no_grad():
        lp = model.log_prob([feats.expand(len(grid), -1), grid])
    assert abs(float(torch.exp(lp).sum()) * cell - 1.0) < 0.01


def _box_midpoints(n: int):
    """Midpoints of an n x n grid over the prior box ``[n*n, 2]`` and the cell area."""
    lo, hi = npe._LO, npe._HI
    edges = [torch.linspace(float(lo[i]), float(hi[i]), n + 1) for i in range(2)]
    mids = [(e[1:] + e[:-1]) / 2 for e in edges]
    grid = torch.stack(torch.meshgrid(*mids, indexing="ij"), -1).reshape(-1, 2)
    return grid, float((hi - lo).prod()) / n**2


def test_posterior_has_the_prior_support():
    """q(theta | x) is a density on the prior box: samples never leave it, log q is -inf
    outside, and the change of variables u -> atanh(u) is accounted for (the density of
    a sample set matches a histogram of the samples)."""
    torch.manual_seed(1)
    model = npe.NPE(npe.SummaryEmbedding(3, context=4), context=4, transforms=1, hidden=8)
    feats = torch.randn(1, 3)
    loader = [[feats, torch.tensor([[0.3, 0.8]])]]
    samples, _ = model.sample(loader, n_samples=20000)
    lo, hi = npe._LO.double().numpy(), npe._HI.double().numpy()
    assert (samples > lo).all() and (samples < hi).all()
    outside = torch.tensor([[0.05, 0.8], [0.3, 1.05], [0.6, 0.5]])
    with torch.no_grad():
        assert torch.isneginf(model.log_prob([feats.expand(3, -1), outside])).all()
    # the probability of each of 4 x 4 boxes: sample fraction against the integrated density
    n_sub = 100
    grid, cell = _box_midpoints(4 * n_sub)
    with torch.no_grad():
        dens = torch.exp(model.log_prob([feats.expand(len(grid), -1), grid]))
    prob = dens.reshape(4, n_sub, 4, n_sub).sum((1, 3)).double().numpy() * cell
    h, _, _ = np.histogram2d(
        samples[:, 0, 0], samples[:, 0, 1], bins=4, range=[[lo[0], hi[0]], [lo[1], hi[1]]]
    )
    frac = h / h.sum()
    err = np.sqrt(prob * (1 - prob) / h.sum())  # binomial standard error
    assert np.all(np.abs(frac - prob) < 5 * err + 1e-3)


def test_graph_embedding_shape():
    from torch_geometric.data import Batch, Data

    graphs = []
    for n in (5, 8):
        pos = torch.rand(n, 3)
        ei = torch.tensor([[i, j] for i in range(n) for j in range(n) if i != j]).T
        d = pos[ei[0]] - pos[ei[1]]
        d = d - torch.round(d)
        ei = ei[:, d.norm(dim=1) < 0.2]
        graphs.append(Data(pos=pos, x=torch.randn(n, 1), edge_index=ei, u=torch.zeros(1, 1)))
    emb = npe.GraphEmbedding(context=7)
    assert emb(Batch.from_data_list(graphs)).shape == (2, 7)


def test_tarp_noise_matches_independent_test_sets():
    # the "calibrated" draws of tarp_noise should scatter like the TARP deviation of exact
    # posteriors on independent test sets of the same size (brute force)
    n_sims, n_samples = 100, 200
    brute = [
        npe.tarp_deviation(*_conjugate(n_sims, n_samples, seed=s), seed=s) for s in range(100, 300)
    ]
    samples, theta = _conjugate(n_sims, n_samples, seed=1)
    boot, calibrated = npe.tarp_noise(samples, theta, n_draws=200, seed=0)
    assert abs(np.median(calibrated) / np.median(brute) - 1) < 0.15
    assert abs(np.quantile(calibrated, 0.9) / np.quantile(brute, 0.9) - 1) < 0.2
    # for a miscalibrated posterior the bootstrap spread is that of independent test sets,
    # and the calibrated draws still show the noise floor, well below the deviation
    narrow = [
        npe.tarp_deviation(*_conjugate(n_sims, n_samples, 0.5, seed=s), seed=s)
        for s in range(100, 300)
    ]
    samples, theta = _conjugate(n_sims, n_samples, 0.5, seed=1)
    boot, calibrated = npe.tarp_noise(samples, theta, n_draws=200, seed=0)
    assert 0.6 < np.std(boot) / np.std(narrow) < 1.6
    assert np.median(calibrated) < 0.5 * np.median(narrow)


def test_fit_npe_checks_its_options_before_training(tmp_path):
    loaders = {"train": [], "val": []}  # never read: the options are refused first
    with pytest.raises(ValueError, match="patience"):
        npe.fit_npe("summary", loaders, 5, tmp_path, n_features=3, patience=0)
    with pytest.raises(ValueError, match="kind"):
        npe.fit_npe("cnn", loaders, 5, tmp_path)


def test_fit_npe_records_loss_curves_and_keeps_the_best_epoch(tmp_path):
    """model.history: one train and one val value per epoch; the kept weights are those of
    best_epoch, so their validation loss, recomputed here, is the curve's minimum."""
    from torch.utils.data import DataLoader, TensorDataset

    rng = np.random.default_rng(0)
    theta = rng.uniform([0.1, 0.6], [0.5, 1.0], (96, 2))
    feats = np.concatenate([theta, rng.standard_normal((96, 1))], 1) * 3.0
    data = TensorDataset(torch.tensor(feats, dtype=torch.float32), torch.tensor(theta).float())
    loaders = {
        "train": DataLoader(torch.utils.data.Subset(data, range(64)), batch_size=16),
        "val": DataLoader(torch.utils.data.Subset(data, range(64, 96)), batch_size=32),
    }
    model = npe.fit_npe("summary", loaders, 6, tmp_path, n_features=3, patience=10, lr=3e-3)
    hist = model.history
    assert len(hist["train"]) == len(hist["val"]) == 6
    assert hist["best_epoch"] == int(np.argmin(hist["val"])) + 1
    model.eval()
    with torch.no_grad():
        x, t = next(iter(loaders["val"]))
        val = float(-model.log_prob([x, t]).mean())
    assert abs(val - min(hist["val"])) < 1e-4
    assert hist["train"][-1] < hist["train"][0]  # it trained
