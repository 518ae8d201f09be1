"""Tests of physml.experiment.reference_metrics: computed once, reused only for the same recipe."""

import json

import pytest

import physml.experiment as experiment


@pytest.fixture
def counted(monkeypatch):
    calls = []

    def fake_train(out, fast=None, progress=False, cset=None):
        calls.append(("lecture", fast))
        return {"metrics": {"sigma_8": {"epsilon": 0.1}, "n_catalogs": 3}}

    def fake_baseline(out, fast=None, cset=None):
        calls.append(("baseline", fast))
        return {"sigma_8": {"epsilon": 0.2}, "n_catalogs": 3}

    monkeypatch.setattr(experiment, "train", fake_train)
    monkeypatch.setattr(experiment, "baseline", fake_baseline)
    return calls


def test_reference_metrics_computed_once_per_recipe(tmp_path, counted, monkeypatch):
    out = tmp_path / "ref"
    first = experiment.reference_metrics("lecture", out=out, fast=True)
    again = experiment.reference_metrics("lecture", out=out, fast=True)
    assert first == again == {"sigma_8": {"epsilon": 0.1}, "n_catalogs": 3}
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
    with pytest.raises(ValueError, match="accepted: lecture, baseline"):
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
