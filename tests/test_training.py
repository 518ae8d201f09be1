"""Tests of physml.training: losses, the NaN guard, a tiny fit, checkpoints, prediction."""

import functools
import json
import math

import numpy as np
import pytest
import torch
from pytorch_lightning.loggers import CSVLogger
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader

import physml.training as training
from physml.graphs import radius_graph
from physml.training import (
    GNNRegressor,
    gaussian_nll,
    heteroscedastic_loss,
    load_model,
    make_loss,
    make_trainer,
    predict,
)

SMALL = dict(node_emb_size=4, edge_emb_size=4, hidden_size=8, n_layers=1)
NORM = {"log_mass_mean": 11.8, "log_mass_std": 0.45, "log_n_mean": 2.6, "log_n_std": 0.1}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is faster, and robust to a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_graphs(n_graphs=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_graphs):
        n = int(torch.randint(0, 16, (1,), generator=g))
        pos = torch.rand(n, 3, generator=g)
        y = torch.stack(
            [0.6 + 0.4 * torch.rand(1, generator=g), 0.1 + 0.4 * torch.rand(1, generator=g)], 1
        )
        out.append(
            Data(
                x=torch.randn(n, 1, generator=g),
                pos=pos,
                edge_index=radius_graph(pos, 0.2, box_size=1.0),
                u=torch.full((1, 1), (n - 8) / 5.0),
                y=y,
            )
        )
    return out


# --------------------------------------------------------------------------- losses


def test_heteroscedastic_loss_by_hand():
    mean = torch.tensor([[1.0, 0.3], [2.0, 0.1]])
    std = torch.tensor([[1.0, 0.1], [1.0, 0.2]])
    true = torch.zeros(2, 2)
    # target 0: residuals^2 = (1, 4): mean 2.5; (r^2 - s^2)^2 = (0, 9): mean 4.5
    # target 1: residuals^2 = (0.09, 0.01): mean 0.05; (0.08^2, 0.03^2): mean 0.00365
    expected = math.log(2.5) + math.log(4.5) + math.log(0.05) + math.log(0.00365)
    assert float(heteroscedastic_loss(mean, std, true)) == pytest.approx(expected, rel=1e-6)
    # the second term decreases as std -> |residual| (and is -inf exactly there)
    res = torch.tensor([[1.0], [2.0]])
    losses = [float(heteroscedastic_loss(res, res * f, torch.zeros(2, 1))) for f in (2, 1.5, 1.1)]
    assert losses[0] > losses[1] > losses[2]
    assert float(heteroscedastic_loss(res, res, torch.zeros(2, 1))) == -math.inf


def test_gaussian_nll_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mean, true = torch.randn(7, 2, generator=g), torch.randn(7, 2, generator=g)
    std = torch.rand(7, 2, generator=g) + 0.1
    ref = -torch.distributions.Normal(mean, std).log_prob(true).mean(0).sum()
    torch.testing.assert_close(gaussian_nll(mean, std, true), ref)


def test_make_loss():
    assert make_loss("heteroscedastic") is heteroscedastic_loss
    assert make_loss("gaussian_nll") is gaussian_nll
    with pytest.raises(ValueError, match="heteroscedastic.*gaussian_nll"):
        make_loss("mse")
    with pytest.raises(ValueError, match="shapes"):
        heteroscedastic_loss(torch.zeros(3, 1), torch.zeros(3, 1), torch.zeros(3))


# --------------------------------------------------------------------------- module


def test_hyperparameter_validation():
    for kwargs, match in [
        ({"target": "omega"}, "sigma8"),
        ({"loss": "mse"}, "heteroscedastic"),
        ({"embedding": "polar"}, "cartesian"),
        ({"scheduler": "step"}, "cosine"),
        ({"feature_norm": {"log_mass_mean": "a"}}, "feature_norm"),
    ]:
        with pytest.raises(ValueError, match=match):
            GNNRegressor(**kwargs)
    m = GNNRegressor(**SMALL, target="both", feature_norm=NORM)
    assert m.target_names == ("sigma_8", "Omega_m")
    json.dumps(dict(m.hparams))  # primitives only


def test_non_finite_loss_raises_with_location():
    model = GNNRegressor(**SMALL)
    batch = Batch.from_data_list(tiny_graphs(4))

    def nan_forward(data):
        mean = torch.full((data.num_graphs, 1), float("nan"))
        return mean, torch.ones(data.num_graphs, 1)

    model.model.forward = nan_forward
    with pytest.raises(
        RuntimeError, match=r"train loss \(heteroscedastic\).*epoch 0, batch 3.*mean"
    ):
        model.training_step(batch, 3)

    model = GNNRegressor(**SMALL, loss="gaussian_nll")
    batch.y[1, 0] = float("inf")
    with pytest.raises(RuntimeError, match=r"val loss \(gaussian_nll\).*batch 0.*y has 1"):
        model.validation_step(batch, 0)


def test_nan_stops_a_lightning_fit(tmp_path):
    graphs = tiny_graphs(6)
    for d in graphs:
        d.y[0, 0] = float("nan")
    trainer = make_trainer(5, tmp_path, fast=True, progress=False, logger=False)
    with pytest.raises(RuntimeError, match="epoch 0, batch 0"):
        trainer.fit(GNNRegressor(**SMALL), DataLoader(graphs, batch_size=3))


def test_optimizer_and_schedules():
    opt = GNNRegressor(**SMALL).configure_optimizers()
    assert isinstance(opt["optimizer"], torch.optim.AdamW)
    assert opt["lr_scheduler"]["scheduler"].T_max == 100  # no trainer attached
    plateau = GNNRegressor(**SMALL, scheduler="plateau").configure_optimizers()
    assert plateau["lr_scheduler"]["monitor"] == "val_loss"
    assert isinstance(
        GNNRegressor(**SMALL, scheduler="none").configure_optimizers(), torch.optim.AdamW
    )


def test_make_trainer(tmp_path, monkeypatch):
    trainer = make_trainer(50, tmp_path / "a", fast=True, progress=False)
    assert trainer.max_epochs == training.FAST_MAX_EPOCHS
    assert trainer.checkpoint_callback.monitor == "val_loss"
    monkeypatch.setattr(training, "_tensorboard_available", lambda: False)
    trainer = make_trainer(50, tmp_path / "b", progress=False)
    assert trainer.max_epochs == 50
    assert isinstance(trainer.logger, CSVLogger)


# --------------------------------------------------------------------------- fit, checkpoints


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    out = tmp_path_factory.mktemp("fit")
    graphs = tiny_graphs(20)
    # raw weights: the checkpoint round trip of the model as trained (the moving average
    # that the lecture recipe checkpoints instead has its own test below)
    trainer = make_trainer(2, out, fast=True, progress=False, seed=1, average="none")
    model = GNNRegressor(**SMALL, target="both", feature_norm=NORM)
    train = DataLoader(graphs[:15], batch_size=5, shuffle=True)
    val = DataLoader(graphs[15:], batch_size=5)
    trainer.fit(model, train, val)
    last = out / "last.ckpt"
    trainer.save_checkpoint(last)
    return out, model, last, graphs


def test_fit_writes_best_checkpoint(fitted):
    out, model, _, graphs = fitted
    best = out / "best.ckpt"
    assert best.is_file()
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    hp = ckpt["hyper_parameters"]
    assert hp["feature_norm"] == NORM and hp["target"] == "both" and hp["hidden_size"] == 8
    loaded = load_model(best)
    assert not loaded.training
    mean, std, true = predict(loaded, DataLoader(graphs, batch_size=7))
    assert mean.shape == std.shape == true.shape == (20, 2) and mean.dtype == np.float64
    assert np.all(np.isfinite(mean)) and np.all(std > 0)
    np.testing.assert_allclose(true, torch.cat([d.y for d in graphs]).numpy(), rtol=1e-6)


def test_load_model_reproduces_predictions(fitted):
    _, model, last, graphs = fitted
    loader = DataLoader(graphs, batch_size=6)
    model.train()
    ref = predict(model, loader)
    assert model.training  # mode restored
    got = predict(load_model(last), loader)
    for a, b in zip(ref, got, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-7)
    # an MPGNN alone also works with predict
    np.testing.assert_allclose(predict(model.model, loader)[0], ref[0], atol=1e-7)


def test_load_model_errors(fitted, tmp_path):
    _, _, last, _ = fitted
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_model(tmp_path / "missing.ckpt")

    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(np.random.default_rng(0).bytes(256))
    with pytest.raises(ValueError, match="junk.ckpt: not a physml checkpoint"):
        load_model(junk)

    ckpt = torch.load(last, map_location="cpu", weights_only=True)

    tampered = dict(ckpt, hyper_parameters=dict(ckpt["hyper_parameters"], hidden_size=12))
    torch.save(tampered, tmp_path / "tampered.ckpt")
    with pytest.raises(ValueError, match="mismatch"):
        load_model(tmp_path / "tampered.ckpt")

    for key in ("hyper_parameters", "state_dict"):
        torch.save({k: v for k, v in ckpt.items() if k != key}, tmp_path / "nokey.ckpt")
        with pytest.raises(ValueError, match=f"missing key '{key}'"):
            load_model(tmp_path / "nokey.ckpt")

    extra = dict(ckpt, hyper_parameters=dict(ckpt["hyper_parameters"], dropout=0.1))
    torch.save(extra, tmp_path / "extra.ckpt")
    with pytest.raises(ValueError, match="dropout"):
        load_model(tmp_path / "extra.ckpt")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fit_and_predict_on_cuda(tmp_path, fitted):
    """accelerator="auto" trains on the GPU; a checkpoint moves between devices."""
    graphs = tiny_graphs(20)
    trainer = make_trainer(1, tmp_path, fast=True, progress=False, seed=1)
    model = GNNRegressor(**SMALL, target="sigma8", feature_norm=NORM)
    trainer.fit(model, DataLoader(graphs[:15], batch_size=5), DataLoader(graphs[15:], 5))
    assert trainer.strategy.root_device.type == "cuda"
    _, _, last, _ = fitted
    loader = DataLoader(graphs, batch_size=6)
    cpu = predict(load_model(last), loader)
    gpu_model = load_model(last, map_location="cuda")
    assert next(gpu_model.parameters()).is_cuda
    for a, b in zip(cpu, predict(gpu_model, loader), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- boundaries


def test_load_model_refuses_sizes_before_allocating(fitted, tmp_path, monkeypatch):
    """hidden_size = 10**6 would allocate terabytes: refused from the shapes alone (the
    network is first built on the meta device), with the limit and how to raise it."""
    _, _, last, _ = fitted
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    huge = dict(ckpt, hyper_parameters=dict(ckpt["hyper_parameters"], hidden_size=10**6))
    torch.save(huge, tmp_path / "huge.ckpt")
    built = []
    real_init = GNNRegressor.__init__

    @functools.wraps(real_init)  # keeps the signature load_model checks keys against
    def spy(self, *args, **kwargs):
        built.append(torch.empty(0).device.type)  # the default device at construction
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(GNNRegressor, "__init__", spy)
    with pytest.raises(ValueError, match="PHYSML_MAX_PARAMS"):
        load_model(tmp_path / "huge.ckpt")
    assert built == ["meta"]  # nothing was built on a real device


def test_load_model_refuses_weights_of_the_other_embedding(fitted, tmp_path):
    _, _, last, _ = fitted
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["physml_embedding"] == ckpt["hyper_parameters"]["embedding"]
    other = "cartesian" if ckpt["physml_embedding"] == "invariant" else "invariant"
    swapped = dict(ckpt, hyper_parameters=dict(ckpt["hyper_parameters"], embedding=other))
    torch.save(swapped, tmp_path / "swapped.ckpt")
    with pytest.raises(ValueError, match="embedding"):
        load_model(tmp_path / "swapped.ckpt")


@pytest.mark.parametrize("epochs", [-1, 0])
def test_make_trainer_refuses_epochs_below_one(tmp_path, epochs):
    for fast in (False, True):  # --fast --epochs -1 trained without limit
        with pytest.raises(ValueError, match="epochs"):
            make_trainer(epochs, tmp_path, fast=fast, progress=False)


def test_run_directory_lock_and_overwrite(tmp_path):
    import subprocess
    import sys

    from physml.training import run_directory

    out = tmp_path / "run"
    with run_directory(out):
        with pytest.raises(FileExistsError, match="another training run"):
            with run_directory(out):
                pass
    (out / "best.ckpt").write_bytes(b"x")
    # best.ckpt without the completion record: a run killed midway, never taken as finished
    with pytest.raises(FileExistsError, match="incomplete run.*--overwrite"):
        with run_directory(out, overwrite=False):
            pass
    (out / "metrics.json").write_text("{}")
    with pytest.raises(FileExistsError, match="finished run"):
        with run_directory(out, overwrite=False):
            pass
    with run_directory(out, overwrite=True):
        # the old record goes first: a rerun stopped now must not look finished
        assert not (out / "metrics.json").exists()
    # a lock left by a process that died is taken over
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    lock = out.resolve().with_name(f".{out.name}.physml-lock")
    lock.write_text(dead + "\n")
    with run_directory(out):
        assert lock.read_text().split()[0] != dead
    assert not lock.exists()


def test_progress_description_counts_epochs_and_bounds_the_time_left(monkeypatch):
    from types import SimpleNamespace

    bar = training.EpochProgressBar()
    trainer = SimpleNamespace(current_epoch=0, max_epochs=10)
    bar._start, bar._first_epoch = 100.0, 0
    monkeypatch.setattr(training.time, "perf_counter", lambda: 100.0)
    assert bar.description(trainer) == "Epoch 1/10"  # nothing measured yet
    trainer.current_epoch = 2  # two epochs took 8 s: 4 s each, 8 epochs still allowed
    monkeypatch.setattr(training.time, "perf_counter", lambda: 108.0)
    assert bar.description(trainer) == "Epoch 3/10, at most 32 s left"
    trainer.current_epoch = 5  # 5 epochs in 150 s: 30 s each, 5 left
    monkeypatch.setattr(training.time, "perf_counter", lambda: 250.0)
    assert bar.description(trainer) == "Epoch 6/10, at most 2.5 min left"


# --------------------------------------------------------------------------- weight average


def test_weight_average_is_the_ema_of_the_steps(tmp_path):
    """WeightAverage against an EMA computed by hand from the raw weights after every
    step: validation runs with the average, checkpoints store it, training goes on from
    the raw weights."""
    import pytorch_lightning as pl

    decay = 0.6
    raw, at_validation = [], []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            raw.append({k: v.detach().clone() for k, v in pl_module.model.state_dict().items()})

        def on_validation_batch_start(self, trainer, pl_module, *args):
            at_validation.append(
                {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}
            )

    graphs = tiny_graphs(20)
    trainer = make_trainer(
        2,
        tmp_path,
        progress=False,
        seed=1,
        average="none",  # the one average is this test's, at its own decay
        logger=False,
        num_sanity_val_steps=0,
    )
    trainer.callbacks[:0] = [training.WeightAverage(decay), Record()]
    model = GNNRegressor(**SMALL, feature_norm=NORM)
    train = DataLoader(graphs[:15], batch_size=5, shuffle=True)
    trainer.fit(model, train, DataLoader(graphs[15:], batch_size=5))
    assert len(raw) == 6 and len(at_validation) == 2  # 3 steps and 1 val batch per epoch

    def ema(steps):
        avg = {k: v.clone() for k, v in steps[0].items()}
        for step in steps[1:]:
            for k in avg:
                avg[k] = decay * avg[k] + (1 - decay) * step[k]
        return avg

    for epoch, seen in enumerate(at_validation):
        want = ema(raw[: 3 * (epoch + 1)])
        for k in want:
            torch.testing.assert_close(seen[k], want[k], rtol=1e-6, atol=1e-7)
    for k, v in model.model.state_dict().items():  # training weights are the raw ones
        assert torch.equal(v, raw[-1][k])
    last = tmp_path / "last.ckpt"
    trainer.save_checkpoint(last)
    stored = torch.load(last, weights_only=True)["state_dict"]
    want = ema(raw)
    assert any(not torch.equal(want[k], raw[-1][k]) for k in want)
    for k in want:
        torch.testing.assert_close(stored[f"model.{k}"], want[k], rtol=1e-6, atol=1e-7)


def test_make_trainer_average_option(tmp_path):
    trainer = make_trainer(3, tmp_path / "a", progress=False, average="ema")
    assert sum(isinstance(c, training.WeightAverage) for c in trainer.callbacks) == 1
    trainer = make_trainer(3, tmp_path / "b", progress=False, average="none")
    assert not any(isinstance(c, training.WeightAverage) for c in trainer.callbacks)
    # the lecture recipe's default (physml.settings.DEFAULT_AVERAGE) is the average
    trainer = make_trainer(3, tmp_path / "d", progress=False)
    assert sum(isinstance(c, training.WeightAverage) for c in trainer.callbacks) == 1
    with pytest.raises(ValueError, match="average"):
        make_trainer(3, tmp_path / "c", progress=False, average="swa")
    with pytest.raises(ValueError, match="decay"):
        training.WeightAverage(1.0)


def test_load_model_refuses_a_checkpoint_without_its_embedding_key(fitted, tmp_path):
    """A Cartesian state_dict in a checkpoint that says invariant has the same shapes: only
    the embedding key tells them apart, so a checkpoint without it is refused."""
    _, _, last, _ = fitted
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    other = "cartesian" if ckpt["physml_embedding"] == "invariant" else "invariant"
    relabelled = {k: v for k, v in ckpt.items() if k != "physml_embedding"}
    relabelled["hyper_parameters"] = dict(ckpt["hyper_parameters"], embedding=other)
    torch.save(relabelled, tmp_path / "relabelled.ckpt")
    with pytest.raises(ValueError, match="relabelled.ckpt.*missing key 'physml_embedding'"):
        load_model(tmp_path / "relabelled.ckpt")
