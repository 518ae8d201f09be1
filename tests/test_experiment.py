"""Tests of physml.experiment.reference_metrics: computed once, reused only for the same recipe."""

import json

import pytest

import physml.experiment as experiment


@pytest.fixture
def counted(monkeypatch):
    calls = []

    def fake_train(out, embedding="invariant", fast=None, progress=False, cset=None):
        calls.append(("lecture" if embedding == "invariant" else embedding, fast))
        return {"metrics": {"sigma_8": {"epsilon": 0.1}, "n_catalogs": 3}, "checkpoint": "x"}

    def fake_baseline(out, fast=None, cset=None):
        calls.append(("baseline", fast))
        return {"sigma_8": {"epsilon": 0.2}, "n_catalogs": 3}

    class FakeModel:
        target_names = ["sigma_8"]

    def fake_val(model, part, *args, **kwargs):
        assert part == "val"
        return {"sigma_8": {"epsilon": 0.3}, "n_catalogs": 2}

    monkeypatch.setattr(experiment, "train", fake_train)
    monkeypatch.setattr(experiment, "baseline", fake_baseline)
    monkeypatch.setattr(experiment, "load_model", lambda ckpt: FakeModel())
    monkeypatch.setattr(experiment, "evaluate_on_split", fake_val)
    monkeypatch.setattr(
        experiment, "run_baseline", lambda cset, split: {"metrics": fake_val(None, "val")}
    )
    return calls


def test_reference_metrics_computed_once_per_recipe(tmp_path, counted, monkeypatch):
    out = tmp_path / "ref"
    first = experiment.reference_metrics("lecture", out=out, fast=True)
    again = experiment.reference_metrics("lecture", out=out, fast=True)
    assert first == again == {"sigma_8": {"epsilon": 0.1}, "n_catalogs": 3}
    val = experiment.reference_metrics("lecture", out=out, fast=True, part="val")
    assert val == {"sigma_8": {"epsilon": 0.3}, "n_catalogs": 2}  # stored with the test result
    assert counted == [("lecture", True)]
    stored = json.loads((out / "reference.json").read_text())
    assert stored["recipe"]["hparams"] == experiment.LECTURE_HPARAMS
    assert len(stored["recipe"]["data"]) == 64  # sha256 of the catalogs

    # another mode or other hyperparameters: trained again
    experiment.reference_metrics("lecture", out=out, fast=False)
    monkeypatch.setitem(experiment.LECTURE_HPARAMS, "hidden_size", 64)
    experiment.reference_metrics("lecture", out=out, fast=False)
    assert counted == [("lecture", True), ("lecture", False), ("lecture", False)]

    # a damaged file is recomputed, not trusted
    (out / "reference.json").write_text("{not json")
    experiment.reference_metrics("lecture", out=out, fast=False)
    assert len(counted) == 4


def test_reference_metrics_default_folder_is_keyed(tmp_path, counted, monkeypatch):
    monkeypatch.setattr(experiment, "DEFAULT_CACHE", tmp_path)
    experiment.reference_metrics("baseline", fast=True)
    experiment.reference_metrics("baseline", fast=False)
    experiment.reference_metrics("baseline", fast=True)
    folders = sorted(p.name for p in (tmp_path / "reference").iterdir())
    assert len(folders) == 2 and all(f.startswith("baseline-") for f in folders)
    assert counted == [("baseline", True), ("baseline", False)]
    with pytest.raises(ValueError, match="accepted: lecture, cartesian, baseline"):
        experiment.reference_metrics("nope", out=tmp_path / "x")


def test_fit_model_trains_the_built_network_and_returns_the_best_checkpoint(tmp_path):
    import torch

    from physml.models import MPGNN

    built = []

    def build():
        built.append(MPGNN(0.2, 4, 4, 8, 1, n_targets=1))
        return built[-1]

    model = experiment.fit_model(build, tmp_path, epochs=1, fast=True)
    assert len(built) == 1 and model.model is built[0] and not model.training
    best = torch.load(next(tmp_path.glob("best*.ckpt")), weights_only=True)["state_dict"]
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value.cpu(), best[key].cpu())  # fit on a GPU when there is one


def test_cartesian_reference_is_trained_with_cartesian_edges_and_kept_apart(tmp_path, counted):
    a = experiment.reference_metrics("cartesian", out=tmp_path / "c", fast=True, progress=True)
    b = experiment.reference_metrics("cartesian", out=tmp_path / "c", fast=True)
    assert a == b and counted == [("cartesian", True)]
    recipes = {n: experiment.reference_recipe(n, fast=True) for n in ("lecture", "cartesian")}
    assert recipes["cartesian"]["embedding"] == "cartesian"
    assert recipes["lecture"]["embedding"] == "invariant"


class _Forbidden:
    """A loader that fails when anything iterates over it."""

    def __iter__(self):
        raise AssertionError("the test split was read")


@pytest.fixture
def test_split_forbidden(monkeypatch):
    """make_loaders whose test loader (when one is asked for) fails on use."""
    real = experiment.make_loaders
    asked = []

    def guarded(cset, split, *args, **kwargs):
        asked.append(sorted(split))
        loaders, norm = real(cset, split, *args, **kwargs)
        if "test" in loaders:
            loaders["test"] = _Forbidden()
        return loaders, norm

    monkeypatch.setattr(experiment, "make_loaders", guarded)
    return asked


def test_selection_never_reads_the_test_split(tmp_path, test_split_forbidden):
    """train(evaluate_on="val"), fit_model and evaluate_on_split(part="val") score the
    validation split and do not even build the test split's loader; the final evaluations
    (train's default, evaluate_on_test_split) read it, which the guard detects."""
    from physml.graphdata import split_indices

    split = split_indices(1000, fast=True)
    res = experiment.train(tmp_path / "a", epochs=1, fast=True, progress=False, evaluate_on="val")
    assert res["split"] == "val" and res["metrics"]["n_catalogs"] == len(split["val"])
    model = experiment.fit_model(lambda: _small_mpgnn(), tmp_path / "b", epochs=1, fast=True)
    val = experiment.evaluate_on_split(model, "val", fast=True)
    assert val["n_catalogs"] == len(split["val"])
    assert all("test" not in parts for parts in test_split_forbidden)
    with pytest.raises(AssertionError, match="test split was read"):
        experiment.evaluate_on_test_split(model, fast=True)
    with pytest.raises(AssertionError, match="test split was read"):
        experiment.train(tmp_path / "c", epochs=1, fast=True, progress=False)
    with pytest.raises(ValueError, match="accepted: val, test"):
        experiment.evaluate_on_split(model, "train", fast=True)
    both = experiment.fit_model(
        lambda: _small_mpgnn(n_targets=2), tmp_path / "d", epochs=1, fast=True, target="both"
    )
    assert set(experiment.evaluate_on_split(both, "val", fast=True)) == {
        "sigma_8",
        "Omega_m",
        "n_catalogs",
    }


def _small_mpgnn(n_targets=1):
    from physml.models import MPGNN

    return MPGNN(0.2, 4, 4, 8, 1, n_targets=n_targets)
