"""physml: the Lecture 14 course library (cosmology, simulation, halo graphs, GNNs)."""

import os
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("physml")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"


def fast_mode() -> bool:
    """True when ``PHYSML_FAST`` is set to a true value (CI, nbval): small subsets, few epochs.

    The one place that reads the variable; it lives here, with no heavy imports, so that
    notebooks that need no graph code (the supplements) need not import
    :mod:`physml.datasets`."""
    return os.environ.get("PHYSML_FAST", "").strip().lower() in ("1", "true", "yes", "on")


__all__ = ["__version__", "fast_mode"]
