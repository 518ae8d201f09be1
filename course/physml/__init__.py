"""physml: the Lecture 14 course library (cosmology, simulation, halo graphs, GNNs)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("physml")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

# The fast-mode switch (CI, nbval) at the package root, so that notebooks needing no graph
# code (the supplements) can read it without importing torch_geometric; its home is
# physml.settings, which imports nothing heavy.
from .settings import fast_mode  # noqa: E402

__all__ = ["__version__", "fast_mode"]
