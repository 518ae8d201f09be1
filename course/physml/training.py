r"""Losses, the Lightning module, the trainer factory, checkpoint loading and prediction.

Typical use::

    trainer = make_trainer(max_epochs=100, out_dir="runs/invariant", fast=fast_mode())
    model = GNNRegressor(embedding="invariant", target="sigma8", feature_norm=norm)
    trainer.fit(model, train_loader, val_loader)
    best = load_model("runs/invariant/best.ckpt")
    mean, std, true = predict(best, test_loader)

(:func:`make_trainer` seeds every generator, so build the model after it for a reproducible
initialisation.)
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import logging
import math
import numbers
import os
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import (
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    TQDMProgressBar,
)
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from torch import Tensor

from physml.errors import TrainingDiverged
from physml.limits import over_limit
from physml.models import EMBEDDINGS, MPGNN, target_columns
from physml.settings import (
    DEFAULT_AVERAGE,
    FAST_EPOCHS,
    LECTURE_LR,
    LECTURE_SIZES,
    MASS_CUT,
    R_LINK,
    TARGETS,
)

__all__ = [
    "AVERAGES",
    "FAST_MAX_EPOCHS",
    "EpochProgressBar",
    "LOSSES",
    "SCHEDULERS",
    "GNNRegressor",
    "gaussian_nll",
    "heteroscedastic_loss",
    "load_model",
    "make_loss",
    "make_trainer",
    "mark_complete",
    "predict",
    "run_directory",
    "WeightAverage",
]

#: Epoch cap of :func:`make_trainer` in fast mode (CI, ``PHYSML_FAST=1``).
FAST_MAX_EPOCHS = FAST_EPOCHS
#: Accepted learning-rate schedules of :class:`GNNRegressor`.
SCHEDULERS = ("cosine", "plateau", "none")
#: Accepted weight averages of :func:`make_trainer` (``"ema"``: :class:`WeightAverage`).
AVERAGES = ("none", "ema")


# --------------------------------------------------------------------------- losses


def _check_loss_inputs(mean: Tensor, std: Tensor, true: Tensor) -> None:
    if mean.dim() != 2 or mean.shape != std.shape or mean.shape != true.shape:
        raise ValueError(
            "mean, std, true: expected equal shapes [B, T], got "
            f"{list(mean.shape)}, {list(std.shape)}, {list(true.shape)}"
        )


def heteroscedastic_loss(mean: Tensor, std: Tensor, true: Tensor) -> Tensor:
    r"""The source notebook's loss for a mean and an uncertainty, summed over targets.

    .. math::
        L = \sum_t \Big[\log \big\langle (\mu - y)^2 \big\rangle
            + \log \big\langle \big((\mu - y)^2 - \sigma^2\big)^2 \big\rangle\Big]

    with :math:`\langle\cdot\rangle` the mean over the batch. The first term is the
    (log) mean squared error and fits :math:`\mu`; the second is minimised when
    :math:`\sigma^2` equals the squared residual, i.e. it trains :math:`\sigma` to predict
    the size of the error (moment matching, "heteroscedastic" = per-example variance). The
    logs make the two terms scale-free, so neither dominates as the errors shrink and
    targets of different ranges weigh alike. It does not need :math:`\sigma > 0`, but it is
    :math:`-\infty` for a batch with zero residuals (impossible in practice).

    Args:
        mean: ``[B, T]`` predicted means.
        std: ``[B, T]`` predicted standard deviations.
        true: ``[B, T]`` true values.

    Returns:
        Scalar tensor.
    """
    _check_loss_inputs(mean, std, true)
    res2 = (mean - true) ** 2
    per_target = torch.log(res2.mean(dim=0)) + torch.log(((res2 - std**2) ** 2).mean(dim=0))
    return per_target.sum()


def gaussian_nll(mean: Tensor, std: Tensor, true: Tensor) -> Tensor:
    r"""Gaussian negative log-likelihood, mean over the batch, summed over targets.

    .. math::
        L = \sum_t \Big\langle \log\sigma + \frac{(\mu - y)^2}{2\sigma^2}
            + \tfrac12\log 2\pi \Big\rangle

    The proper scoring rule for a Gaussian prediction (requires :math:`\sigma > 0`).

    Args:
        mean: ``[B, T]`` predicted means.
        std: ``[B, T]`` predicted standard deviations (> 0).
        true: ``[B, T]`` true values.

    Returns:
        Scalar tensor.
    """
    _check_loss_inputs(mean, std, true)
    nll = torch.log(std) + 0.5 * ((mean - true) / std) ** 2 + 0.5 * math.log(2 * math.pi)
    return nll.mean(dim=0).sum()


#: Loss name -> function ``(mean, std, true) -> scalar``.
LOSSES: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "heteroscedastic": heteroscedastic_loss,
    "gaussian_nll": gaussian_nll,
}


def make_loss(name: str) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """Loss function by name, a key of :data:`LOSSES`."""
    if name not in LOSSES:
        raise ValueError(f"loss: expected one of {tuple(LOSSES)}, got {name!r}")
    return LOSSES[name]


# --------------------------------------------------------------------------- module


def _clean_feature_norm(feature_norm) -> dict | None:
    if feature_norm is None:
        return None
    if not isinstance(feature_norm, dict):
        raise ValueError(
            f"feature_norm: expected None or a dict of floats, got {type(feature_norm).__name__}"
        )
    out = {}
    for key, value in feature_norm.items():
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"feature_norm[{key!r}]: expected a float, got {value!r}") from None
        if not math.isfinite(v):
            raise ValueError(f"feature_norm[{key!r}]: expected a finite float, got {value!r}")
        out[str(key)] = v
    return out


class GNNRegressor(pl.LightningModule):
    r"""Lightning wrapper of :class:`~physml.models.MPGNN` predicting (mean, std) of the
    target parameters of each catalog.

    Every argument is a primitive (or a dict of floats) and saved with
    ``save_hyperparameters()``; :func:`load_model` rebuilds the network from the values
    stored in the checkpoint, and the checkpoint loads with ``torch.load(...,
    weights_only=True)``.

    Args:
        r_link: radius the graphs were built with, box units (0.2 = 5 Mpc/h in a 25 Mpc/h
            box).
        node_emb_size, edge_emb_size, hidden_size, n_layers: network sizes (see
            :class:`~physml.models.MPGNN`); the defaults are the lecture model's
            (:data:`physml.settings.LECTURE_SIZES`).
        embedding: ``"invariant"`` or ``"cartesian"``.
        target: ``"sigma8"`` or ``"both"`` (:data:`~physml.models.TARGETS`).
        loss: ``"heteroscedastic"`` or ``"gaussian_nll"`` (:data:`LOSSES`).
        lr: AdamW learning rate (the lecture's, :data:`physml.settings.LECTURE_LR`).
        weight_decay: AdamW (decoupled) weight decay.
        scheduler: ``"cosine"`` (cosine annealing over the trainer's ``max_epochs`` to
            ``lr / 100``), ``"plateau"`` (halve on a 5-epoch ``val_loss`` plateau) or
            ``"none"``.
        feature_norm: the preprocessing constants used to build the data, e.g.
            ``{"log_mass_mean", "log_mass_std", "log_n_mean", "log_n_std"}`` (floats);
            stored so that evaluation uses the same; not used by the network itself.
        mass_cut: halo mass cut of the catalogs, Msun/h (metadata).
        box_size_mpc: box side, Mpc/h (metadata: positions are in box units).
        inputs: what the network reads, ``"all"`` (the lecture model), ``"positions"`` or
            ``"masses"`` (:data:`~physml.models.INPUTS`, the information ablation).
    """

    def __init__(
        self,
        r_link: float = R_LINK,
        node_emb_size: int = LECTURE_SIZES["node_emb_size"],
        edge_emb_size: int = LECTURE_SIZES["edge_emb_size"],
        hidden_size: int = LECTURE_SIZES["hidden_size"],
        n_layers: int = LECTURE_SIZES["n_layers"],
        embedding: str = "invariant",
        target: str = "sigma8",
        loss: str = "heteroscedastic",
        lr: float = LECTURE_LR,
        weight_decay: float = 1e-3,
        scheduler: str = "cosine",
        feature_norm: dict | None = None,
        mass_cut: float = MASS_CUT,
        box_size_mpc: float = 25.0,
        inputs: str = "all",
    ):
        super().__init__()
        if embedding not in EMBEDDINGS:
            raise ValueError(f"embedding: expected one of {EMBEDDINGS}, got {embedding!r}")
        if scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler: expected one of {SCHEDULERS}, got {scheduler!r}")
        self.columns = target_columns(target)
        self.loss_fn = make_loss(loss)
        r_link, lr, weight_decay = float(r_link), float(lr), float(weight_decay)
        mass_cut, box_size_mpc = float(mass_cut), float(box_size_mpc)
        if not lr > 0 or not weight_decay >= 0:
            raise ValueError(f"lr > 0 and weight_decay >= 0 expected, got {lr}, {weight_decay}")
        feature_norm = _clean_feature_norm(feature_norm)
        self.save_hyperparameters()
        self.model = MPGNN(
            r_link=r_link,
            node_emb_size=node_emb_size,
            edge_emb_size=edge_emb_size,
            hidden_size=hidden_size,
            n_layers=n_layers,
            n_targets=len(self.columns),
            embedding=embedding,
            box_size=1.0,
            inputs=inputs,
        )

    @property
    def target_names(self) -> tuple[str, ...]:
        """Names of the predicted parameters, e.g. ``("sigma_8",)``."""
        return TARGETS[self.hparams.target]

    def forward(self, batch) -> tuple[Tensor, Tensor]:
        """``(mean, std)``, ``[B, T]`` each, physical units (see :class:`MPGNN`)."""
        return self.model(batch)

    def _targets(self, batch) -> Tensor:
        y = getattr(batch, "y", None)
        if y is None or y.dim() != 2 or y.size(1) <= max(self.columns):
            shape = None if y is None else list(y.shape)
            raise ValueError(f"batch.y: expected shape [B, 2] (sigma_8, Omega_m), got {shape}")
        return y[:, self.columns]

    def _step(self, batch, batch_idx: int, stage: str) -> Tensor:
        mean, std = self(batch)
        true = self._targets(batch)
        loss = self.loss_fn(mean, std, true)
        if not bool(torch.isfinite(loss)):
            self._raise_non_finite(stage, batch_idx, loss, mean, std, true)
        self.log(
            f"{stage}_loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=int(batch.num_graphs),
        )
        return loss

    def _raise_non_finite(self, stage, batch_idx, loss, mean, std, true) -> None:
        parts = []
        for name, t in (("mean", mean), ("std", std), ("y", true)):
            bad = int((~torch.isfinite(t)).sum())
            if bad:
                parts.append(f"{name} has {bad} non-finite of {t.numel()} entries")
        if not parts:
            parts.append(
                "mean, std and y are finite: the loss itself overflowed (e.g. log of 0, or "
                "std -> 0 with gaussian_nll); try a smaller lr"
            )
        raise TrainingDiverged(
            f"non-finite {stage} loss ({self.hparams.loss}) = {float(loss.detach())} at epoch "
            f"{self.current_epoch}, batch {batch_idx}: {'; '.join(parts)}. Training stopped."
        )

    def training_step(self, batch, batch_idx: int) -> Tensor:
        return self._step(batch, batch_idx, "train")

    def validation_step(self, batch, batch_idx: int) -> Tensor:
        return self._step(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx: int) -> Tensor:
        return self._step(batch, batch_idx, "test")

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        """``{"mean", "std", "y"}``, ``[B, T]`` each (``y``: the true targets)."""
        mean, std = self(batch)
        return {"mean": mean, "std": std, "y": self._targets(batch)}

    def configure_optimizers(self):
        opt = torch.optim.AdamW(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
        kind = self.hparams.scheduler
        if kind == "none":
            return opt
        if kind == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode="min", factor=0.5, patience=5
            )
            return {
                "optimizer": opt,
                "lr_scheduler": {"scheduler": sched, "monitor": "val_loss", "interval": "epoch"},
            }
        max_epochs = getattr(self._trainer, "max_epochs", None)
        t_max = max_epochs if max_epochs and max_epochs > 0 else 100
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=t_max, eta_min=self.hparams.lr / 100
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        from physml import __version__

        checkpoint["physml_version"] = str(__version__)
        # recorded apart from the hyperparameters: load_model checks the two agree, so the
        # weights of one embedding are never run as the other (their shapes match)
        checkpoint["physml_embedding"] = str(self.hparams.embedding)
        # set by physml.experiment.train: the content digests of the training and validation
        # catalogs (evaluate warns when it scores them) and the run's state ("incomplete"
        # until the run has finished; see mark_complete)
        seen = getattr(self, "seen_catalogs", None)
        if seen is not None:
            checkpoint["physml_seen"] = {k: [str(d) for d in v] for k, v in seen.items()}
        if getattr(self, "run_state", None) is not None:
            checkpoint["physml_run"] = str(self.run_state)


# --------------------------------------------------------------------------- history


class LossHistory(pl.Callback):
    """The loss curves of a run, one value per epoch, kept in memory whether or not a logger
    writes them to disk (append it to ``trainer.callbacks``): ``train`` and ``val``, the
    epoch means of the logged ``train_loss`` and ``val_loss`` (the sanity check's
    validation is left out). :meth:`as_dict` adds ``best_epoch``, the 1-based epoch of the
    lowest ``val``."""

    def __init__(self):
        self.train: list[float] = []
        self.val: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        value = trainer.callback_metrics.get("train_loss")
        if value is not None:
            self.train.append(float(value))

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        value = trainer.callback_metrics.get("val_loss")
        if value is not None and not trainer.sanity_checking:
            self.val.append(float(value))

    def as_dict(self) -> dict:
        """``{"train": [...], "val": [...], "best_epoch": k or None}``."""
        best = int(np.argmin(self.val)) + 1 if self.val else None
        return {"train": list(self.train), "val": list(self.val), "best_epoch": best}


# --------------------------------------------------------------------------- averaging


class WeightAverage(pl.Callback):
    r"""Exponential moving average (EMA) of the network's weights, validated and
    checkpointed in place of the raw weights.

    After every optimiser step :math:`\bar\theta \leftarrow d\,\bar\theta + (1 - d)\,
    \theta` (:class:`torch.optim.swa_utils.AveragedModel` with
    :func:`~torch.optim.swa_utils.get_ema_multi_avg_fn`, buffers included; the first step
    copies :math:`\theta`). Each validation epoch runs with :math:`\bar\theta` swapped
    into ``pl_module.model`` (the raw weights go back afterwards and training continues
    from them), so early stopping and the best-checkpoint choice judge the averaged
    network, and every checkpoint stores :math:`\bar\theta` under the usual keys:
    :func:`load_model` returns the averaged network. The average smooths the step-to-step
    noise of the weights over about :math:`1 / (1 - d)` steps (200 for ``d = 0.995``,
    4.5 epochs of the lecture's 44 batches).

    Args:
        decay: :math:`d` in (0, 1).
    """

    def __init__(self, decay: float = 0.995):
        decay = float(decay)
        if not 0 < decay < 1:
            raise ValueError(f"decay: expected a float in (0, 1), got {decay!r}")
        self.decay = decay
        self.average = None
        self._raw = None

    def on_fit_start(self, trainer, pl_module) -> None:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        self.average = AveragedModel(
            pl_module.model, multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=True
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.average.update_parameters(pl_module.model)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if self.average is None:
            return
        self._raw = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}
        pl_module.model.load_state_dict(self.average.module.state_dict())

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self._raw is not None:
            pl_module.model.load_state_dict(self._raw)
            self._raw = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if self.average is None:
            return
        state = checkpoint["state_dict"]
        for key, value in self.average.module.state_dict().items():
            state[f"model.{key}"] = value.detach().clone()


# --------------------------------------------------------------------------- trainer


def _minutes_text(seconds: float) -> str:
    """``"40 s"`` below two minutes, else ``"3.2 min"``."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


class EpochProgressBar(TQDMProgressBar):
    """Lightning's progress bar, one line per epoch: ``Epoch k/N`` (1-based, N the most
    epochs the run may take; early stopping may end it sooner) and, from the second epoch
    on, ``at most T left``: the mean time per epoch so far times the epochs still allowed.
    The validation and sanity-check sub-bars and the logger's version number are left
    out."""

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        self._start = time.perf_counter()
        self._first_epoch = trainer.current_epoch

    def on_train_epoch_start(self, trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(self.description(trainer))

    def description(self, trainer) -> str:
        """``"Epoch k/N"``, with ``", at most T left"`` once an epoch has finished."""
        epoch, most = trainer.current_epoch, trainer.max_epochs
        text = f"Epoch {epoch + 1}/{most}"
        done = epoch - getattr(self, "_first_epoch", epoch)
        if done > 0 and most and most > 0:
            per_epoch = (time.perf_counter() - self._start) / done
            text += f", at most {_minutes_text(per_epoch * max(most - epoch, 0))} left"
        return text

    def get_metrics(self, trainer, pl_module) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items

    def init_validation_tqdm(self) -> Tqdm:
        return Tqdm(disable=True)

    def init_sanity_tqdm(self) -> Tqdm:
        return Tqdm(disable=True)


class _DropLightningTip(logging.Filter):
    """Drops Lightning's advertisement (``💡 Tip: ... litlogger``) and nothing else."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg)


def _quiet_lightning_noise() -> None:
    """Filter, at their source, the first-run messages no student can act on: Lightning's
    litlogger tip (its rank-zero logger), the warning that the checkpoint directory is not
    empty (physml writes its logs there, and a rerun replaces the checkpoint on purpose)
    and Lightning's own use of torch's deprecated ``LeafSpec`` (a FutureWarning raised
    inside Lightning's ``_pytree``). Other warnings are untouched."""
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropLightningTip) for f in log.filters):
            log.addFilter(_DropLightningTip())
    warnings.filterwarnings(
        "ignore",
        message=r"Checkpoint directory .* exists and is not empty",
        module=r"(pytorch_lightning|lightning\.pytorch)\.callbacks\.model_checkpoint",
    )
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"(pytorch_lightning|lightning\.pytorch)\.utilities\._pytree",
    )


def _tensorboard_available() -> bool:
    return any(importlib.util.find_spec(m) is not None for m in ("tensorboard", "tensorboardX"))


def make_trainer(
    max_epochs: int,
    out_dir,
    patience: int = 20,
    fast: bool = False,
    progress: bool = True,
    seed: int = 0,
    average: str = DEFAULT_AVERAGE,
    **trainer_kwargs,
) -> pl.Trainer:
    r"""A :class:`pytorch_lightning.Trainer` set up for the course.

    * ``accelerator="auto"``, ``devices=1`` (GPU if there is one, else CPU);
    * :class:`ModelCheckpoint` on ``val_loss`` (min), keeping the best model only as
      ``out_dir/best.ckpt`` (overwritten when rerun in the same directory);
    * :class:`EarlyStopping` on ``val_loss`` after ``patience`` epochs without improvement;
    * a CSV logger in ``out_dir/csv`` (a TensorBoard logger in ``out_dir/tb`` instead when
      tensorboard is installed, as with the ``dev`` extra) and the learning rate logged
      every epoch;
    * with ``progress``, :class:`EpochProgressBar` (epoch k of at most N, time left);
      Lightning's first-run messages that no student can act on are filtered at their
      source (:func:`_quiet_lightning_noise`);
    * ``pl.seed_everything(seed, workers=True)`` (called here, so build the model after this
      call for reproducible weights) and ``deterministic="warn"`` (deterministic algorithms
      where PyTorch has them, a warning elsewhere).

    Args:
        max_epochs: maximum number of epochs, an integer >= 1.
        out_dir: directory for the checkpoint and logs (created).
        patience: early-stopping patience, epochs.
        fast: fast mode (CI): at most :data:`FAST_MAX_EPOCHS` epochs, no sanity validation,
            no model summary.
        progress: show the progress bar and model summary.
        seed: global seed.
        average: ``"none"`` or ``"ema"`` (:data:`AVERAGES`; default
            :data:`~physml.settings.DEFAULT_AVERAGE`, the lecture recipe's ``"ema"``):
            ``"ema"`` validates and checkpoints an exponential moving average of the
            weights (:class:`WeightAverage`, decay 0.995), ``"none"`` the raw weights.
        **trainer_kwargs: passed on to :class:`pytorch_lightning.Trainer` (override the
            above, e.g. ``limit_train_batches``).

    Returns:
        The trainer; its ``checkpoint_callback.best_model_path`` is the best checkpoint.
    """
    if isinstance(max_epochs, bool) or not isinstance(max_epochs, numbers.Integral):
        raise ValueError(f"epochs: expected an integer >= 1, got {max_epochs!r}")
    max_epochs = int(max_epochs)
    if max_epochs < 1:
        raise ValueError(f"epochs: expected an integer >= 1, got {max_epochs!r}")
    if average not in AVERAGES:
        raise ValueError(f"average: expected one of {AVERAGES}, got {average!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _quiet_lightning_noise()
    pl.seed_everything(seed, workers=True, verbose=False)
    if fast:
        max_epochs = min(max_epochs, FAST_MAX_EPOCHS)
    if _tensorboard_available():
        logger = TensorBoardLogger(save_dir=str(out_dir), name="tb", default_hp_metric=False)
    else:
        logger = CSVLogger(save_dir=str(out_dir), name="csv")
    callbacks = [
        ModelCheckpoint(
            dirpath=str(out_dir),
            filename="best",
            monitor="val_loss",
            mode="min",
            save_top_k=1,
            enable_version_counter=False,
        ),
        EarlyStopping(monitor="val_loss", mode="min", patience=patience),
    ]
    if average == "ema":
        callbacks.append(WeightAverage())
    if progress and "callbacks" not in trainer_kwargs:
        callbacks.append(EpochProgressBar())
    if trainer_kwargs.get("logger", logger) not in (None, False):
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    kwargs = dict(
        max_epochs=max_epochs,
        accelerator="auto",
        devices=1,
        callbacks=callbacks,
        logger=logger,
        log_every_n_steps=1,
        enable_progress_bar=progress,
        enable_model_summary=progress and not fast,
        deterministic="warn",
        default_root_dir=str(out_dir),
    )
    if fast:
        kwargs["num_sanity_val_steps"] = 0
    kwargs.update(trainer_kwargs)
    return pl.Trainer(**kwargs)


def _lock_holder(lock: Path) -> int | None:
    """pid recorded in a lock file when that process is alive, else ``None`` (stale lock)."""
    try:
        pid = int(lock.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return -1  # unreadable or half-written: treat as held
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's
    return pid


#: the file a training run writes last, atomically (:func:`physml.experiment.train`): a
#: run directory without it holds no finished run
COMPLETION_RECORD = "metrics.json"


@contextlib.contextmanager
def run_directory(out_dir, overwrite: bool = True) -> Iterator[Path]:
    """Hold ``out_dir`` for one training run: a lock file ``.NAME.physml-lock`` next to the
    directory ``NAME`` (created atomically, holding the pid; outside the directory, which
    Lightning expects empty) refuses a second run into the same directory while the first
    is alive; a lock left by a dead process is taken over. With ``overwrite=False`` a
    directory that already holds a finished run (its :data:`COMPLETION_RECORD`) or an
    incomplete one (``best.ckpt`` without the record: a run killed midway) is refused too;
    with ``overwrite=True`` the old record is removed first, so that a rerun stopped
    midway is not taken as finished. Raises :class:`FileExistsError` naming the
    directory."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lock = out.resolve().with_name(f".{out.resolve().name}.physml-lock")
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            holder = _lock_holder(lock)
            if holder is not None:
                raise FileExistsError(
                    f"{out}: another training run (pid {holder}) is writing into this "
                    f"directory (lock file {lock}); wait for it or use another --out "
                    "(delete the lock file only if no such run is alive)"
                ) from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
    else:
        raise FileExistsError(f"{out}: cannot take the lock file {lock}")
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()}\n")
    try:
        record = out / COMPLETION_RECORD
        if overwrite:
            record.unlink(missing_ok=True)  # a rerun killed midway must not look finished
        elif record.exists():
            raise FileExistsError(
                f"{out}: holds a finished run ({COMPLETION_RECORD}); use another --out, or "
                "--overwrite to replace it"
            )
        elif (out / "best.ckpt").exists():
            raise FileExistsError(
                f"{out}: holds an incomplete run (best.ckpt but no {COMPLETION_RECORD}: it "
                "was stopped before it finished); use --overwrite to train again from the "
                "start, or another --out"
            )
        yield out
    finally:
        lock.unlink(missing_ok=True)


# --------------------------------------------------------------------------- loading


def _check_sizes(path: Path, hparams: dict, state_dict) -> None:
    """Refuse hyperparameters whose network does not have the stored weights' shapes, or
    exceeds ``PHYSML_MAX_PARAMS``, before allocating it: the network is first built on the
    ``meta`` device (shapes only, no memory)."""
    if not isinstance(state_dict, dict):
        raise ValueError(f"{path}: 'state_dict' is a {type(state_dict).__name__}, not a dict")
    try:
        with torch.device("meta"):
            skeleton = GNNRegressor(**hparams)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: invalid hyper_parameters {hparams}: {err}") from err
    shapes = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    n_params = sum(math.prod(s) for s in shapes.values())
    msg = over_limit("PHYSML_MAX_PARAMS", n_params, f"{path}: hyper_parameters {hparams}")
    if msg:
        raise ValueError(msg)
    stored = {k: tuple(v.shape) for k, v in state_dict.items() if isinstance(v, Tensor)}
    if stored != shapes:
        bad = sorted(k for k in set(shapes) | set(stored) if shapes.get(k) != stored.get(k))
        raise ValueError(
            f"{path}: state_dict mismatched with the stored hyper_parameters {hparams}: "
            f"{len(bad)} tensor(s) differ, first {bad[0]!r}: expected "
            f"{shapes.get(bad[0])}, stored {stored.get(bad[0])}"
        )


def load_model(checkpoint_path, map_location="cpu") -> GNNRegressor:
    r"""Rebuilds a :class:`GNNRegressor` from a checkpoint, with the hyperparameters
    **stored in the checkpoint** (the source notebook reloaded with other ones).

    The file is read with ``torch.load(..., weights_only=True)`` (no arbitrary code runs) and
    the weights are loaded strictly. The model is returned in eval mode.

    Args:
        checkpoint_path: a ``.ckpt`` written by Lightning (e.g. ``out_dir/best.ckpt``).
        map_location: device for the weights (``"cpu"``, ``"cuda"``, ...).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not a physml checkpoint (unreadable with ``weights_only=True``, or
            missing the ``"hyper_parameters"``, ``"state_dict"`` or ``"physml_embedding"``
            key, the last needed to tell the two embeddings' weights apart), invalid
            hyperparameters, or weights mismatched with the hyperparameters.
    """
    path = Path(checkpoint_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # UnpicklingError, RuntimeError, EOFError, ...
        raise ValueError(
            f"{path}: not a physml checkpoint (torch.load(weights_only=True) failed: "
            f"{type(err).__name__}: {err})"
        ) from err
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: not a physml checkpoint (a {type(ckpt).__name__}, not a dict)")
    for key in ("hyper_parameters", "state_dict"):
        if key not in ckpt:
            raise ValueError(f"{path}: not a physml checkpoint (missing key {key!r})")
    if not isinstance(ckpt["hyper_parameters"], dict):
        raise ValueError(
            f"{path}: not a physml checkpoint ('hyper_parameters' is a "
            f"{type(ckpt['hyper_parameters']).__name__}, expected a dict)"
        )
    hparams = dict(ckpt["hyper_parameters"])
    accepted = set(inspect.signature(GNNRegressor.__init__).parameters) - {"self"}
    unknown = sorted(set(hparams) - accepted)
    if unknown:
        raise ValueError(
            f"{path}: hyper_parameters has keys GNNRegressor does not accept: {unknown}"
        )
    recorded = ckpt.get("physml_embedding")
    if recorded is None:
        raise ValueError(
            f"{path}: not a physml checkpoint (missing key 'physml_embedding', which "
            "GNNRegressor records on saving): the weights of the cartesian and the invariant "
            "embedding have the same shapes, so hyper_parameters alone cannot tell which "
            "these are"
        )
    if recorded != hparams.get("embedding", "invariant"):
        raise ValueError(
            f"{path}: the weights were trained with the {recorded!r} embedding but "
            f"hyper_parameters says {hparams.get('embedding')!r}"
        )
    _check_sizes(path, hparams, ckpt["state_dict"])
    try:
        model = GNNRegressor(**hparams)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: invalid hyper_parameters {hparams}: {err}") from err
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"{path}: state_dict mismatched with the stored hyper_parameters {hparams}: {err}"
        ) from err
    model.to(map_location if isinstance(map_location, str | torch.device) else "cpu")
    seen = ckpt.get("physml_seen")
    model.seen_catalogs = (
        {str(k): [str(d) for d in v] for k, v in seen.items() if isinstance(v, list)}
        if isinstance(seen, dict)
        else None
    )
    model.run_state = ckpt.get("physml_run")
    return model.eval()


#: value of a checkpoint's ``physml_run`` key while the run that writes it is going on
RUN_INCOMPLETE = "incomplete"
#: ... and once it has finished (written by :func:`mark_complete`)
RUN_COMPLETE = "complete"


def mark_complete(checkpoint_path) -> None:
    """Record in a checkpoint that the run that wrote it has finished (its ``physml_run``
    key set to :data:`RUN_COMPLETE`), atomically: written to a temporary file in the same
    directory and moved into place with :func:`os.replace`."""
    path = Path(checkpoint_path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    ckpt["physml_run"] = RUN_COMPLETE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(ckpt, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- prediction


def predict(model, loader) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Predictions over a loader, without a Lightning trainer.

    Runs on the model's device, in eval mode, under ``torch.no_grad()`` (the model's
    training mode is restored afterwards).

    Args:
        model: a :class:`GNNRegressor` (targets: its ``target``) or an
            :class:`~physml.models.MPGNN` (targets: the first ``n_targets`` columns of ``y``).
        loader: iterable of PyG batches with ``y`` ``[B, 2]``.

    Returns:
        ``mean``, ``std``, ``true``: float64 arrays ``[n, T]`` (``n`` graphs, ``T`` targets).
    """
    if isinstance(model, GNNRegressor):
        columns = model.columns
    elif isinstance(model, MPGNN):
        columns = list(range(model.n_targets))
    else:
        raise TypeError(f"model: expected a GNNRegressor or MPGNN, got {type(model).__name__}")
    param = next(model.parameters())
    device = param.device
    was_training = model.training
    means, stds, trues = [], [], []
    model.eval()
    try:
        with torch.no_grad():
            for batch in loader:
                batch = batch.to(device)
                mean, std = model(batch)
                y = getattr(batch, "y", None)
                if y is None or y.dim() != 2 or y.size(1) <= max(columns):
                    shape = None if y is None else list(y.shape)
                    raise ValueError(f"batch.y: expected shape [B, 2], got {shape}")
                means.append(mean.double().cpu())
                stds.append(std.double().cpu())
                trues.append(y[:, columns].double().cpu())
    finally:
        model.train(was_training)
    if not means:
        empty = np.zeros((0, len(columns)))
        return empty, empty.copy(), empty.copy()
    return tuple(torch.cat(t).numpy() for t in (means, stds, trues))
