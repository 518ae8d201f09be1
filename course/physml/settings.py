"""The lecture's settings, one home each: every module, notebook and benchmark reads them
from here (nothing is imported here, so any layer may import this module).

Units follow the package conventions: masses in Msun/h, lengths in box units of the
periodic unit cube unless stated.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "BATCH_SIZE",
    "DEFAULT_AVERAGE",
    "DEFAULT_EPOCHS",
    "FAST_EPOCHS",
    "LECTURE_LR",
    "LECTURE_SIZES",
    "MASS_CUT",
    "R_LINK",
    "TARGETS",
    "Y_COLUMNS",
    "cache_root",
    "fast_mode",
]

#: Smallest halo mass kept, Msun/h: a fixed absolute cut, so that the smallest halo does not
#: give Omega_m away through the particle mass (make-dataset and the graphs apply it).
MASS_CUT = 2e11
#: Linking radius of the halo graphs, box units (0.2 = 5 Mpc/h in a 25 Mpc/h box).
R_LINK = 0.2
#: Columns of the target tensor ``data.y``, in order.
Y_COLUMNS = ("sigma_8", "Omega_m")
#: Target name -> parameters predicted, a prefix of :data:`Y_COLUMNS`.
TARGETS = {"sigma8": ("sigma_8",), "both": ("sigma_8", "Omega_m")}
#: The lecture model's sizes (the source notebook trained with these).
LECTURE_SIZES = {"node_emb_size": 8, "edge_emb_size": 8, "hidden_size": 32, "n_layers": 2}
#: The lecture model's AdamW learning rate.
LECTURE_LR = 1e-3
#: Graphs per training batch.
BATCH_SIZE = 16
#: Most epochs of a training run (early stopping may end it sooner), and in fast mode.
DEFAULT_EPOCHS = 100
FAST_EPOCHS = 2
#: Weight averaging of the lecture recipe: ``"ema"`` validates and checkpoints an
#: exponential moving average of the weights (:class:`physml.training.WeightAverage`).
#: With :data:`DEFAULT_EPOCHS` it is the recipe whose seed spread
#: ``benchmarks/bench_information.py`` measured lowest (see the README).
DEFAULT_AVERAGE = "ema"


def fast_mode() -> bool:
    """True when ``PHYSML_FAST`` is set to a true value (CI, nbval): small subsets, few epochs.

    The one place the environment variable is read; also importable as
    ``physml.fast_mode``, ``physml.graphdata.fast_mode`` and ``physml.datasets.fast_mode``."""
    return os.environ.get("PHYSML_FAST", "").strip().lower() in ("1", "true", "yes", "on")


def cache_root() -> Path:
    """physml's cache folder, ``$XDG_CACHE_HOME/physml`` (default ``~/.cache/physml``): the
    one place every cache (graphs, reference results, simulated boxes) is rooted."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "physml"
