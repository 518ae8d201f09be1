"""Exceptions of physml that are neither a bad value nor a file problem (those raise
:class:`ValueError` and :class:`OSError`); the command line reports all of them as one line."""

from __future__ import annotations

__all__ = ["TrainingDiverged"]


class TrainingDiverged(RuntimeError):
    """Training stopped on a non-finite loss (the message says which tensor went bad)."""
