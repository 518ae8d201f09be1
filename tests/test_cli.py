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


# --------------------------------------------------------------------------- one error path
@pytest.fixture(scope="module")
def trained(toy_file, tmp_path_factory):
    """A finished one-epoch run on the toy catalogs: (output directory, checkpoint)."""
    from physml.catalogs import load_catalogs
    from physml.experiment import train

    out = tmp_path_factory.mktemp("trained")
    split = {"train": np.arange(24), "val": np.arange(24, 32), "test": np.arange(32, 40)}
    train(out, epochs=1, cset=load_catalogs(toy_file), split=split, progress=False)
    return out, out / "best.ckpt"


def _fails_in_one_line(argv, capsys, *expected):
    """Runs the command in this process: exit code 2, one line on stderr naming it."""
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"physml {argv[0]}: error: "), err
    for text in expected:
        assert text in err, err
    return err


def _toy_variant(toy_file, path, box_size=None, mass_scale=1.0):
    from physml.catalogs import load_catalogs

    cset = load_catalogs(toy_file)
    cats = [Catalog(c.pos, c.mass * np.float32(mass_scale)) for c in cset]
    save_catalogs(path, CatalogSet(cats, cset.params, box_size or cset.box_size))
    return path


def test_expected_failures_end_in_one_line(trained, toy_file, tmp_path, capsys):
    import torch

    out, ckpt = trained
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    _fails_in_one_line(
        ["evaluate", "--checkpoint", ckpt, "--catalogs", tmp_path / "nope.npz"],
        capsys,
        "nope.npz",
    )
    other_box = _toy_variant(toy_file, tmp_path / "box50.npz", box_size=50.0)
    _fails_in_one_line(
        ["evaluate", "--checkpoint", ckpt, "--catalogs", other_box], capsys, "box50.npz", "50"
    )
    state = torch.load(ckpt, weights_only=True)
    state["hyper_parameters"]["feature_norm"] = {}
    torch.save(state, tmp_path / "nonorm.ckpt")
    _fails_in_one_line(
        ["evaluate", "--checkpoint", tmp_path / "nonorm.ckpt", "--catalogs", toy_file],
        capsys,
        "nonorm.ckpt",
        "feature_norm",
    )
    # a finished run is not overwritten without --overwrite
    _fails_in_one_line(
        ["train", "--catalogs", toy_file, "--fast", "--quiet", "--out", out],
        capsys,
        str(out),
        "--overwrite",
    )
    # an output directory that cannot be made (a file is in the way): OSError, one line
    _fails_in_one_line(
        ["train", "--catalogs", toy_file, "--fast", "--quiet", "--out", blocker / "run"],
        capsys,
        "a_file",
    )
    _fails_in_one_line(["make-dataset", "--out", blocker / "data", "--quiet"], capsys, "a_file")


def test_a_run_into_a_held_directory_is_refused(toy_file, tmp_path, capsys):
    from physml.training import run_directory

    with run_directory(tmp_path / "run"):
        _fails_in_one_line(
            ["train", "--catalogs", toy_file, "--fast", "--quiet", "--out", tmp_path / "run"],
            capsys,
            "another training run",
        )


@pytest.mark.parametrize("epochs", ["-1", "0", "two"])
def test_epochs_below_one_are_refused_by_the_parser(toy_file, tmp_path, capsys, epochs):
    with pytest.raises(SystemExit) as e:
        main(["train", "--fast", "--epochs", epochs, "--out", str(tmp_path)])
    assert e.value.code == 2
    assert "--epochs: expected an integer >= 1" in capsys.readouterr().err


def test_diverged_training_is_one_line_and_a_bug_keeps_its_traceback(monkeypatch, capsys):
    from physml import cli
    from physml.errors import TrainingDiverged

    def diverge(args):
        raise TrainingDiverged("non-finite train loss at epoch 3, batch 1: mean has 4 NaN")

    monkeypatch.setitem(cli.COMMANDS, "info", diverge)
    _fails_in_one_line(["info"], capsys, "epoch 3")

    def bug(args):
        return {}["no such key"]

    monkeypatch.setitem(cli.COMMANDS, "info", bug)
    with pytest.raises(KeyError):
        main(["info"])


def test_evaluate_with_an_unwritable_cache(trained, toy_file, tmp_path):
    from physml.experiment import evaluate

    _, ckpt = trained
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.warns(UserWarning, match="not cached"):
        got = evaluate(ckpt, toy_file, cache_dir=blocker / "cache")
    assert got == evaluate(ckpt, toy_file, cache_dir=False)


def test_evaluate_warns_on_masses_in_other_units(trained, toy_file, tmp_path):
    from physml.experiment import evaluate

    _, ckpt = trained
    msun = _toy_variant(toy_file, tmp_path / "msun.npz", mass_scale=1e10)
    with pytest.warns(UserWarning, match="Msun/h\\?"):
        evaluate(ckpt, msun, cache_dir=False)


def test_ablation_options(tmp_path, capsys):
    """physml baseline --features (a bad name lists the accepted ones) and physml train
    --average (argparse refuses other values)."""
    assert main(["baseline", "--fast", "--features", "masses", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "features" in err and "abundance" in err and "clustering" in err
    with pytest.raises(SystemExit):
        main(["train", "--fast", "--average", "swa", "--out", str(tmp_path / "t")])
    assert "ema" in capsys.readouterr().err
