"""physml: the Lecture 14 course library (cosmology, simulation, halo graphs, GNNs)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("physml")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
