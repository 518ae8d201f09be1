"""Tests for physml.plotting: every figure builds and draws with Agg, holds the expected
artists, and the numbers it shows are the right ones (hand counts, physml.metrics)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import LogNorm, to_rgba  # noqa: E402
from matplotlib.container import ErrorbarContainer  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from mpl_toolkits.mplot3d.art3d import Line3DCollection  # noqa: E402

from physml import metrics  # noqa: E402
from physml.catalogs import Catalog, CatalogSet  # noqa: E402
from physml.graphs import radius_graph  # noqa: E402
from physml.plotting import (  # noqa: E402
    MASS_CMAP,
    mass_function,
    plot_calibration,
    plot_graph_3d,
    plot_halos_3d,
    plot_halos_projected,
    plot_mass_function,
    plot_predictions,
    plot_predictions_grid,
    plot_training_curves,
    undirected_edges,
)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def random_catalog(n, seed=0):
    rng = np.random.default_rng(seed)
    return Catalog(rng.random((n, 3)).astype(np.float32), (10 ** rng.uniform(0, 3, n)).astype("f4"))


def edge_lines(fig):
    (lc,) = [c for c in fig.axes[0].collections if isinstance(c, Line3DCollection)]
    return np.asarray(lc._segments3d)  # 3D segments (get_segments() gives the 2D projection)


def errorbar_points(ax, k=0):
    """(x, y, number of error bars) of the k-th errorbar on ``ax``."""
    cont = [c for c in ax.containers if isinstance(c, ErrorbarContainer)][k]
    line, _, (bars,) = cont.lines
    return line.get_xdata(), line.get_ydata(), len(bars.get_segments())


# --------------------------------------------------------------------------- 3D


def test_halos_3d_dark_lognorm():
    cat = random_catalog(50)
    fig = plot_halos_3d(cat, title="sim 0")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.name == "3d"
    assert to_rgba(fig.get_facecolor()) == (0, 0, 0, 1)
    assert to_rgba(ax.get_facecolor()) == (0, 0, 0, 1)
    assert ax.title.get_text() == "sim 0" and to_rgba(ax.title.get_color()) == (1, 1, 1, 1)
    assert ax.get_xlabel() == "x [box]" and to_rgba(ax.xaxis.label.get_color()) == (1, 1, 1, 1)
    sc = ax.collections[0]
    assert isinstance(sc.norm, LogNorm) and sc.get_cmap().name == "inferno"
    np.testing.assert_allclose(sc.get_sizes(), 5 * np.cbrt(cat.mass), rtol=1e-5)
    cbar_ax = fig.axes[1]
    assert cbar_ax.get_ylabel() == "Mass [1e10 Msun/h]"
    assert to_rgba(cbar_ax.yaxis.label.get_color()) == (1, 1, 1, 1)
    fig.canvas.draw()


@pytest.mark.parametrize("n", [0, 1])
def test_halos_3d_tiny_catalogs(n):
    plot_halos_3d(random_catalog(n)).canvas.draw()


def test_halos_3d_into_given_axes():
    fig = plt.figure()
    ax = fig.add_subplot(121, projection="3d")
    assert plot_halos_3d(random_catalog(5), ax=ax) is fig
    with pytest.raises(ValueError, match="3D"):
        plot_halos_3d(random_catalog(5), ax=fig.add_subplot(122))


def test_graph_3d_minimum_image_segments():
    pos = np.array(
        [[0.10, 0.1, 0.1], [0.15, 0.1, 0.1], [0.98, 0.5, 0.5], [0.02, 0.5, 0.5]], np.float32
    )
    cat = Catalog(pos, np.ones(4, np.float32))
    ei = radius_graph(torch.from_numpy(pos), 0.1, box_size=1.0)
    assert undirected_edges(ei).tolist() == [[0, 1], [2, 3]]
    seg = edge_lines(plot_graph_3d(cat, ei))
    assert len(seg) == 3  # one direct edge, the wrapping one as two halves
    np.testing.assert_allclose(seg[0], pos[[0, 1]], atol=1e-6)
    np.testing.assert_allclose(seg[1], [pos[2], [1.0, 0.5, 0.5]], atol=1e-6)
    np.testing.assert_allclose(seg[2], [pos[3], [0.0, 0.5, 0.5]], atol=1e-6)
    # without periodicity the same pairs are drawn straight
    assert len(edge_lines(plot_graph_3d(cat, ei, box_periodic=False))) == 2


def test_graph_3d_random_catalog():
    cat = random_catalog(120, seed=1)
    r = 0.15
    ei = radius_graph(torch.from_numpy(cat.pos), r, box_size=1.0)
    pairs = undirected_edges(ei)
    d = cat.pos[pairs[:, 1]] - cat.pos[pairs[:, 0]]
    n_wrap = int(np.any(np.abs(d) > 0.5, axis=1).sum())
    assert n_wrap > 0
    fig = plot_graph_3d(cat, ei)
    seg = edge_lines(fig)
    assert len(seg) == len(pairs) + n_wrap
    lengths = np.linalg.norm(seg[:, 1] - seg[:, 0], axis=1)
    assert lengths.max() < r  # nothing is drawn across the box
    assert np.all((seg >= -1e-6) & (seg <= 1 + 1e-6))
    fig.canvas.draw()
    few = edge_lines(plot_graph_3d(cat, ei, box_periodic=False, max_edges=10))
    assert len(few) == 10


def test_graph_3d_no_edges_and_bad_ids():
    cat = random_catalog(3)
    plot_graph_3d(cat, torch.empty(2, 0, dtype=torch.long)).canvas.draw()
    with pytest.raises(ValueError, match="out of range"):
        plot_graph_3d(cat, np.array([[0], [7]]))


# --------------------------------------------------------------------------- predictions


def test_predictions_errorbars_and_text():
    rng = np.random.default_rng(2)
    true = rng.uniform(0.6, 1.0, 12)
    pred = true + 0.02 * rng.normal(size=12)
    std = np.full(12, 0.02)
    fig = plot_predictions(true, pred, std, name="sigma_8")
    ax = fig.axes[0]
    x, y, n_bars = errorbar_points(ax)
    assert n_bars == 12
    np.testing.assert_array_equal(x, true)
    np.testing.assert_array_equal(y, pred)
    (text,) = ax.texts
    s = text.get_text()
    assert "R^2" in s and r"\chi^2" in s and r"\epsilon" in s
    assert f"{100 * metrics.epsilon(pred, true):.2f} %" in s
    assert f"{metrics.r2(pred, true):.3f}" in s
    assert f"{metrics.chi2(pred, std, true):.2f}" in s
    np.testing.assert_allclose(ax.get_xlim(), (0.58, 1.02))
    np.testing.assert_allclose(ax.get_ylim(), (0.58, 1.02))
    fig.canvas.draw()


def test_predictions_given_stats_and_other_name():
    true, pred, std = np.array([1.0, 2.0, 3.0]), np.array([1.1, 2.0, 2.9]), np.ones(3)
    fig = plot_predictions(
        true, pred, std, name="h", stats={"epsilon": 0.5, "r2": 0.123, "chi2": 7}
    )
    ax = fig.axes[0]
    s = ax.texts[0].get_text()
    assert "50.00 %" in s and "0.123" in s and "7.00" in s
    lo, hi = ax.get_xlim()
    assert lo < 1.0 and hi > 3.0 and hi < 3.5


def test_predictions_grid_one_panel_per_target():
    rng = np.random.default_rng(3)
    true = np.stack([rng.uniform(0.6, 1, 8), rng.uniform(0.1, 0.5, 8)], 1)
    pred, std = true + 0.01, np.full((8, 2), 0.02)
    stats = metrics.summary(pred, std, true, ["sigma_8", "Omega_m"])
    fig = plot_predictions_grid(true, pred, std, ["sigma_8", "Omega_m"], stats=stats)
    assert len(fig.axes) == 2
    assert [errorbar_points(ax)[2] for ax in fig.axes] == [8, 8]
    assert fig.axes[1].get_title() == r"$\Omega_m$"
    np.testing.assert_allclose(fig.axes[1].get_xlim(), (0.08, 0.52))


# --------------------------------------------------------------------------- training


def test_training_curves_from_lightning_csv(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(
        "epoch,step,train_loss_epoch,train_loss_step,val_loss\n"
        "0,9,,0.9,\n"
        "0,9,,,0.8\n"
        "0,9,1.0,,\n"
        "1,19,,,0.5\n"
        "1,19,0.6,,\n"
        "2,29,,,0.45\n"
        "2,29,0.4,,\n"
    )
    ax = plot_training_curves(path).axes[0]
    (train, val) = ax.get_lines()
    assert train.get_label() == "train" and val.get_label() == "val"
    np.testing.assert_array_equal(train.get_xdata(), [0, 1, 2])
    np.testing.assert_array_equal(train.get_ydata(), [1.0, 0.6, 0.4])
    np.testing.assert_array_equal(val.get_ydata(), [0.8, 0.5, 0.45])


def test_training_curves_from_dict_and_errors():
    ax = plot_training_curves({"train_loss": [3, 2, 1], "val_loss": [4, float("nan"), 2]}).axes[0]
    train, val = ax.get_lines()
    np.testing.assert_array_equal(val.get_xdata(), [0, 2])
    with pytest.raises(ValueError, match="columns"):
        plot_training_curves({"epoch": [0, 1], "lr": [1e-3, 1e-3]})


# --------------------------------------------------------------------------- calibration


def test_calibration_of_exact_gaussians():
    rng = np.random.default_rng(4)
    true = rng.normal(size=(20000, 2))
    pred, std = np.zeros_like(true), np.ones_like(true)
    std[:, 1] = 0.5  # over-confident target
    ax = plot_calibration(pred, std, true, names=["sigma_8", "Omega_m"]).axes[0]
    diag, good, bad = ax.get_lines()
    levels = np.linspace(0.05, 0.95, 19)
    np.testing.assert_allclose(good.get_xdata(), levels)
    np.testing.assert_allclose(good.get_ydata(), levels, atol=0.015)
    assert np.all(bad.get_ydata() < levels)
    np.testing.assert_allclose(diag.get_xydata(), [[0, 0], [1, 1]])


# --------------------------------------------------------------------------- mass function


def test_mass_function_hand_counts():
    # masses in 1e10 Msun/h; bins log10(M / (Msun/h)) = [10, 11), [11, 12), [12, 13)
    a = Catalog(np.full((5, 3), 0.5, np.float32), np.array([1, 1.5, 10, 20, 100], np.float32))
    b = Catalog(np.full((1, 3), 0.5, np.float32), np.array([5], np.float32))
    edges = [10.0, 11.0, 12.0, 13.0]
    volume = 10.0**3
    x, y, err = mass_function([a, b], box_size=10.0, bins=edges)
    np.testing.assert_allclose(x, [10.5, 11.5, 12.5])
    counts = np.array([3, 2, 1])  # 1, 1.5, 5 | 10, 20 | 100
    np.testing.assert_allclose(y, counts / (2 * volume * 1.0))
    np.testing.assert_allclose(err, np.sqrt(counts) / (2 * volume))
    # a CatalogSet uses its own box size
    cset = CatalogSet([a, b], [[0.3, 0.8]] * 2, box_size=10.0)
    np.testing.assert_allclose(mass_function(cset, box_size=99.0, bins=edges)[1], y)

    ax = plot_mass_function([cset, [a]], labels=["both", "a"], bins=edges, box_size=10.0).axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    px, py, n = errorbar_points(ax, 0)
    np.testing.assert_allclose(px, 10 ** np.array([10.5, 11.5, 12.5]))
    np.testing.assert_allclose(py, y)
    _, py_a, _ = errorbar_points(ax, 1)
    np.testing.assert_allclose(py_a, np.array([2, 2, 1]) / volume)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["both", "a"]


def test_mass_function_auto_bins_and_empty_bins():
    cat = random_catalog(200, seed=5)
    fig = plot_mass_function(cat, bins=8)
    x, y, n = errorbar_points(fig.axes[0])
    assert 1 <= n <= 8 and np.all(y > 0)
    centres, dn, _ = mass_function(cat, bins=8)
    total = dn.sum() * 25.0**3 * (centres[1] - centres[0])
    np.testing.assert_allclose(total, 200, rtol=1e-3)  # every halo is in a bin
    fig.canvas.draw()


def test_halos_projected_share_one_mass_scale_with_a_colour_bar():
    rng = np.random.default_rng(0)
    cats = [
        Catalog(
            rng.random((n, 3)).astype(np.float32), (10 ** rng.uniform(1, hi, n)).astype(np.float32)
        )
        for n, hi in ((30, 2), (50, 4))
    ]
    fig = plot_halos_projected(cats, titles=["a", "b"])
    panels = [ax for ax in fig.axes if ax.get_title() in ("a", "b")]
    assert len(panels) == 2 and len(fig.axes) == 3  # two panels and the colour bar
    norms = [ax.collections[0].norm for ax in panels]
    assert norms[0] is norms[1] and isinstance(norms[0], LogNorm)
    all_mass = np.concatenate([c.mass for c in cats])
    assert np.isclose(norms[0].vmin, all_mass.min()) and np.isclose(norms[0].vmax, all_mass.max())
    assert all(ax.collections[0].get_cmap().name == MASS_CMAP for ax in panels)
    assert panels[0].get_xlabel() == "x [box]" and panels[0].get_ylabel() == "y [box]"
    np.testing.assert_allclose(panels[1].collections[0].get_offsets(), cats[1].pos[:, :2])
    with pytest.raises(ValueError, match="2 for 1 catalogs"):
        plot_halos_projected(cats[:1], titles=["a", "b"])
    plt.close("all")


def test_information_ablation_points_bars_and_whiskers(tmp_path):
    """Dots at the seed means, thick bars of +- the seed std, whiskers at the bootstrap
    interval; an arm without Omega_m leaves its row empty there; reads the JSON file."""
    import json

    from physml.plotting import plot_information_ablation

    def row(eps, eps_std, r2, lo, hi):
        return {
            "epsilon_mean": eps, "epsilon_std": eps_std, "epsilon_68": [lo, hi],
            "r2_mean": r2, "r2_std": 0.01, "r2_68": [r2 - 0.05, r2 + 0.05],
        }  # fmt: skip

    summary = {
        "summary": {"label": "baseline", "deterministic": True,
                    "sigma_8": row(0.075, 0.0, 0.56, 0.07, 0.08),
                    "Omega_m": row(0.10, 0.0, 0.9, 0.09, 0.11)},
        "gnn": {"label": "lecture GNN", "sigma_8": row(0.08, 0.005, 0.5, 0.072, 0.088)},
    }  # fmt: skip
    path = tmp_path / "information.json"
    path.write_text(json.dumps({"summary": summary}))
    fig = plot_information_ablation(path)
    axes = fig.axes
    assert len(axes) == 4
    eps_s8 = axes[0]
    assert [t.get_text() for t in eps_s8.get_yticklabels()] == ["baseline", "lecture GNN"]
    bars = [c for c in eps_s8.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 4  # whisker and dot per arm
    whisker, dot = bars[2], bars[3]  # the GNN's, drawn second, at y = 0
    np.testing.assert_allclose(dot.lines[0].get_xydata(), [[8.0, 0.0]])
    seg = dot.lines[2][0].get_segments()[0]
    np.testing.assert_allclose(seg[:, 0], [7.5, 8.5])
    seg = whisker.lines[2][0].get_segments()[0]
    np.testing.assert_allclose(seg[:, 0], [7.2, 8.8])
    eps_om = axes[1]  # the GNN has no Omega_m: one arm drawn
    assert len([c for c in eps_om.containers if isinstance(c, ErrorbarContainer)]) == 2
    plt.close(fig)
    with pytest.raises(ValueError, match="no arm"):
        plot_information_ablation(summary, params=("h",))


def test_shipped_ablation_matches_the_benchmark_runs():
    """The summary shipped with physml (drawn by default) holds the seed means and
    standard deviations of the predictions stored in benchmarks/results/information.json,
    recomputed here with physml.metrics."""
    import json
    from pathlib import Path

    from physml.plotting import ABLATION_FILE, plot_information_ablation

    shipped = json.loads(Path(ABLATION_FILE).read_text())["summary"]
    runs_file = Path(__file__).resolve().parents[1] / "benchmarks/results/information.json"
    if not runs_file.exists():
        pytest.skip("benchmarks/results/information.json is not in this checkout")
    runs = json.loads(runs_file.read_text())["runs"]
    assert set(shipped) == set(runs) and {"summary", "clustering"} <= set(shipped)
    assert {"gnn", "gnn_plain"} & set(shipped)  # the lecture GNN, under its recipe's name
    for arm, by_seed in runs.items():
        for t, name in enumerate(next(iter(by_seed.values()))["names"]):
            eps = [
                metrics.epsilon(np.array(r["mean"])[:, t], np.array(r["true"])[:, t])
                for r in by_seed.values()
            ]
            row = shipped[arm][name]
            assert row["epsilon_mean"] == pytest.approx(np.mean(eps), rel=1e-5)
            if len(eps) > 1:
                assert row["epsilon_std"] == pytest.approx(np.std(eps, ddof=1), rel=1e-4)
    fig = plot_information_ablation()
    assert len(fig.axes) == 4
    plt.close(fig)
