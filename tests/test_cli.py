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


# --------------------------------------------------------------------------- first run (issue 24)
HEAVY = ("torch", "torch_geometric", "pytorch_lightning", "lightning")


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["evaluate", "--help"]])
def test_help_imports_nothing_heavy(argv):
    """``physml --help`` parses before importing: torch, PyG and Lightning stay unloaded."""
    code = (
        "import sys\n"
        "from physml.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "usage: physml" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout.splitlines()[-1]


def _readme_rows() -> dict:
    """README's command table: command -> the text of its row."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = text[text.index("| command | what it does |") :].split("\n\n")[0]
    rows = {}
    for line in table.splitlines()[2:]:
        cmd = line.split("`physml ", 1)[1].split()[0].rstrip("`")
        rows[cmd] = line
    return rows


def test_readme_command_table_matches_help():
    """Every option that ``physml CMD --help`` lists appears in the README row of CMD, and
    every option the row names is one of CMD's."""
    import re

    from physml.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    rows = _readme_rows()
    assert set(rows) == set(SUBCOMMANDS)
    for cmd, sub in subparsers.items():
        options = {o for a in sub._actions for o in a.option_strings if o.startswith("--")}
        options.discard("--help")
        named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", rows[cmd]))
        assert options - named == set(), f"{cmd}: in --help, not in the README row"
        assert named - options == set(), f"{cmd}: in the README row, not in --help"


def test_info_says_which_checksums_it_verified(capsys):
    from physml.datasets import CHECKSUMS_FILE, SET_NAMES, data_dir, set_filename

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    sums = json.loads((data_dir() / CHECKSUMS_FILE).read_text())
    line = out.strip().splitlines()[-1]
    assert line.startswith("sha256 verified against") and CHECKSUMS_FILE in line
    for name in SET_NAMES:
        assert f"{set_filename(name)} {sums[set_filename(name)][:16]}" in line


def test_first_run_prints_only_actionable_output(toy_file, tmp_path):
    """The progress shows epoch k of at most N; Lightning's litlogger tip, its warning
    that the checkpoint directory is not empty and its LeafSpec deprecation are gone."""
    out = tmp_path / "run"
    (out / "csv").mkdir(parents=True)  # a directory that is not empty, as on a rerun
    (out / "csv" / "old.txt").write_text("x")
    proc = subprocess.run(
        [sys.executable, "-m", "physml.cli", "train", "--catalogs", str(toy_file), "--fast"]
        + ["--out", str(out), "--epochs", "2"],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "PYTHONWARNINGS": "default"},
    )
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout + proc.stderr
    for noise in ("litlogger", "Tip", "exists and is not empty", "LeafSpec", "v_num"):
        assert noise not in text, noise
    assert "Epoch 1/2" in text and "Epoch 2/2, at most" in text


def test_evaluate_warns_when_it_scores_training_catalogs(trained, toy_file, tmp_path, capsys):
    """By content, not by file name: the toy catalogs under another name and other labels
    still count as seen; the test split alone does not."""
    from physml.catalogs import load_catalogs

    _, ckpt = trained
    cset = load_catalogs(toy_file)
    order = np.random.default_rng(1).permutation(40)
    renamed = tmp_path / "renamed.npz"
    params = cset.params[order] * np.array([1.0, 0.99])
    save_catalogs(renamed, CatalogSet([cset[int(i)] for i in order], params))
    assert main(["evaluate", "--checkpoint", str(ckpt), "--catalogs", str(renamed)]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("physml evaluate: warning: "), err
    assert "32 of the 40 catalogs" in err and "24 in its training split" in err
    assert "8 in its validation split" in err and "renamed.npz" in err
    test_only = tmp_path / "test_only.npz"
    save_catalogs(test_only, cset[np.arange(32, 40)])
    assert main(["evaluate", "--checkpoint", str(ckpt), "--catalogs", str(test_only)]) == 0
    assert "warning" not in capsys.readouterr().err


# --------------------------------------------------------------------------- edges (issue 23)
def _refused_by_the_parser(argv, capsys, *expected):
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    assert e.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"physml {argv[0]}: error: "), last
    for text in expected:
        assert text in last, last


@pytest.mark.parametrize("box", ["0", "-25", "nan", "inf"])
def test_make_dataset_refuses_a_bad_box_before_simulating(box, tmp_path, capsys):
    out = tmp_path / "data"
    _refused_by_the_parser(["make-dataset", "--out", out, "--box", box], capsys, "--box", "> 0")
    assert not out.exists()


def test_make_dataset_refuses_a_nan_mass_cut_and_a_coarse_mesh(tmp_path, capsys):
    out = tmp_path / "data"
    _refused_by_the_parser(
        ["make-dataset", "--out", out, "--mass-cut", "nan"], capsys, "--mass-cut"
    )
    _fails_in_one_line(
        ["make-dataset", "--out", out, "--particles", "64", "--mesh", "32", "--quiet"],
        capsys,
        "--mesh 32",
        "n_mesh (32) must be >= n_particles (64)",
        "force",
    )
    assert not out.exists()


def test_make_dataset_with_an_empty_plan_names_the_file(tmp_path, capsys):
    (tmp_path / "plan.json").write_text("")
    argv = ["make-dataset", "--out", tmp_path, "--n-lh", "1", "--n-cv", "0", "--n-1p", "0"]
    _fails_in_one_line([*argv, "--quiet"], capsys, str(tmp_path / "plan.json"))


def test_a_three_catalog_set_says_how_many_are_needed(toy_file, tmp_path, capsys):
    from physml.catalogs import load_catalogs

    three = tmp_path / "three.npz"
    save_catalogs(three, load_catalogs(toy_file)[:3])
    _fails_in_one_line(
        ["train", "--catalogs", three, "--fast", "--quiet", "--out", tmp_path / "run"],
        capsys,
        "three.npz",
        "at least 6 catalogs",
    )


def test_an_infinite_edge_limit_is_one_line(trained, toy_file, monkeypatch, capsys):
    _, ckpt = trained
    monkeypatch.setenv("PHYSML_MAX_EDGES", "inf")
    from physml.limits import limit

    with pytest.raises(ValueError, match="PHYSML_MAX_EDGES: expected a positive integer"):
        limit("PHYSML_MAX_EDGES")
    rng = np.random.default_rng(0)
    big = CatalogSet(  # enough halos that the edge count is checked against the limit
        [Catalog(rng.random((1200, 3), dtype=np.float32), 10 ** rng.uniform(1, 3, 1200))],
        np.array([[0.3, 0.8]]),
    )
    path = toy_file.parent / "big.npz"
    save_catalogs(path, big)
    _fails_in_one_line(
        ["evaluate", "--checkpoint", ckpt, "--catalogs", path], capsys, "PHYSML_MAX_EDGES", "inf"
    )


def test_target_both_with_sigma8_labels_names_the_file_and_the_option(toy_file, tmp_path, capsys):
    labels = tmp_path / "si8.npy"
    np.save(labels, np.random.default_rng(0).uniform(0.6, 1.0, 40))
    _fails_in_one_line(
        ["train", "--catalogs", toy_file, "--labels", labels, "--target", "both", "--fast"]
        + ["--quiet", "--out", tmp_path / "run"],
        capsys,
        "toy.npz",
        "si8.npy",
        "--target both",
        "Omega_m",
    )
    assert not (tmp_path / "run" / "best.ckpt").exists()


def test_swapped_labels_are_one_warning_line(trained, toy_file, tmp_path, capsys):
    from physml.catalogs import load_catalogs

    _, ckpt = trained
    swapped = tmp_path / "swapped.npy"
    np.save(swapped, load_catalogs(toy_file).params[32:, ::-1])
    test_only = tmp_path / "test_only.npz"
    save_catalogs(test_only, load_catalogs(toy_file)[np.arange(32, 40)])
    argv = ["evaluate", "--checkpoint", ckpt, "--catalogs", test_only, "--labels", swapped]
    assert main([str(a) for a in argv]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("physml evaluate: warning: "), err
    assert "swapped.npy" in err and "look swapped" in err


def test_a_killed_run_is_neither_finished_nor_evaluated(toy_file, tmp_path, monkeypatch, capsys):
    """Killed after best.ckpt is written and before the completion record: the checkpoint
    says incomplete, evaluate refuses it, a rerun refuses it without --overwrite and
    finishes it with."""
    import torch

    from physml import experiment

    out = tmp_path / "run"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the moment after training, before metrics.json

    monkeypatch.setattr(experiment, "summary", killed)
    argv = ["train", "--catalogs", toy_file, "--fast", "--quiet", "--out", out]
    with pytest.raises(KeyboardInterrupt):
        main([str(a) for a in argv])
    monkeypatch.undo()
    assert (out / "best.ckpt").exists() and not (out / "metrics.json").exists()
    assert torch.load(out / "best.ckpt", weights_only=True)["physml_run"] == "incomplete"
    _fails_in_one_line(
        ["evaluate", "--checkpoint", out / "best.ckpt", "--catalogs", toy_file],
        capsys,
        "best.ckpt",
        "did not finish",
    )
    _fails_in_one_line(argv, capsys, str(out), "incomplete run", "--overwrite")
    assert main([str(a) for a in [*argv, "--overwrite"]]) == 0
    capsys.readouterr()
    assert torch.load(out / "best.ckpt", weights_only=True)["physml_run"] == "complete"
    assert json.loads((out / "metrics.json").read_text())["n_catalogs"] > 0
    assert (
        main(["evaluate", "--checkpoint", str(out / "best.ckpt"), "--catalogs", str(toy_file)]) == 0
    )
