"""The physml command: help texts, train / evaluate / baseline end to end on small data,
and clear errors for bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

from physml.catalogs import Catalog, CatalogSet, save_catalogs
from physml.cli import main

SUBCOMMANDS = ["train", "evaluate", "baseline", "info", "make-dataset"]


def _physml(*args, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "physml.cli", *args], capture_output=True, text=True
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.mark.parametrize("sub", [None, *SUBCOMMANDS])
def test_help(sub, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"] if sub is None else [sub, "--help"])
    assert e.value.code == 0
    assert "usage: physml" in capsys.readouterr().out


@pytest.fixture(scope="module")
def toy_file(tmp_path_factory):
    """40 random catalogs whose halo count grows with sigma_8 (something to learn)."""
    rng = np.random.default_rng(0)
    params = np.stack([rng.uniform(0.1, 0.5, 40), rng.uniform(0.6, 1.0, 40)], 1)
    cats = []
    for s8 in params[:, 1]:
        n = int(30 + 60 * (s8 - 0.6) / 0.4)
        cats.append(
            Catalog(
                rng.random((n, 3)).astype(np.float32),
                (20 * 10 ** rng.uniform(0, 2, n)).astype(np.float32),
            )
        )
    path = tmp_path_factory.mktemp("toy") / "toy.npz"
    save_catalogs(path, CatalogSet(cats, params))
    return path


def test_train_then_evaluate(toy_file, tmp_path):
    out = tmp_path / "run"
    proc = _physml("train", "--catalogs", str(toy_file), "--fast", "--out", str(out), "--quiet")
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    written = json.loads((out / "metrics.json").read_text())
    assert metrics == written
    assert set(metrics) == {"sigma_8", "n_catalogs"}
    assert set(metrics["sigma_8"]) == {"epsilon", "r2", "chi2", "coverage_68", "coverage_95"}
    assert (out / "predictions.png").stat().st_size > 1000
    proc = _physml("evaluate", "--checkpoint", str(out / "best.ckpt"), "--catalogs", str(toy_file))
    line = json.loads(proc.stdout)
    assert set(line) == set(metrics) and line["n_catalogs"] == 40


def test_train_both_targets(toy_file, tmp_path):
    from physml.catalogs import load_catalogs
    from physml.experiment import train

    cset = load_catalogs(toy_file)
    split = {"train": np.arange(24), "val": np.arange(24, 32), "test": np.arange(32, 40)}
    res = train(
        tmp_path, target="both", epochs=1, cset=cset, split=split, progress=False, cache_dir=False
    )
    assert set(res["metrics"]) == {"sigma_8", "Omega_m", "n_catalogs"}
    assert res["metrics"]["n_catalogs"] == 8


def test_bad_names_list_accepted_values(toy_file, tmp_path):
    proc = _physml(
        "train",
        "--catalogs",
        str(toy_file),
        "--fast",
        "--embedding",
        "spherical",
        "--out",
        str(tmp_path),
        check=False,
    )
    assert proc.returncode == 2 and "cartesian" in proc.stderr and "invariant" in proc.stderr
    proc = _physml(
        "train",
        "--catalogs",
        str(toy_file),
        "--fast",
        "--target",
        "h0",
        "--out",
        str(tmp_path),
        check=False,
    )
    assert proc.returncode == 2 and "sigma8" in proc.stderr and "both" in proc.stderr


def test_evaluate_refuses_a_non_checkpoint(toy_file, tmp_path):
    bogus = tmp_path / "model.ckpt"
    bogus.write_bytes(b"not a checkpoint")
    proc = _physml("evaluate", "--checkpoint", str(bogus), "--catalogs", str(toy_file), check=False)
    assert proc.returncode == 2 and "model.ckpt" in proc.stderr


def test_evaluate_refuses_bad_catalogs(toy_file, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, sim_0=np.zeros((3, 2), np.float32), params=np.array([[0.3, 0.8]]))
    proc = _physml(
        "evaluate",
        "--checkpoint",
        str(tmp_path / "missing.ckpt"),
        "--catalogs",
        str(bad),
        check=False,
    )
    assert proc.returncode == 2
