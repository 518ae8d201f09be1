"""Size limits checked before allocating, so that a small hostile or mistaken file cannot
exhaust memory. Each limit has a default and an environment variable that raises it.

=====================  ===================  ==============================================
limit                  default              what it bounds
=====================  ===================  ==============================================
``PHYSML_MAX_HALOS``   10 000 000           rows of one catalog (positions, masses)
``PHYSML_MAX_EDGES``   4 000 000            directed edges of one halo graph
``PHYSML_MAX_PARAMS``  100 000 000          parameters of a network rebuilt from a file
=====================  ===================  ==============================================
"""

from __future__ import annotations

import os

__all__ = ["LIMITS", "limit", "over_limit"]

#: environment variable -> (default, what it counts)
LIMITS = {
    "PHYSML_MAX_HALOS": (10_000_000, "halos per catalog"),
    "PHYSML_MAX_EDGES": (4_000_000, "edges per graph"),
    "PHYSML_MAX_PARAMS": (100_000_000, "network parameters"),
}


def limit(name: str) -> int:
    """The current value of limit ``name`` (a key of :data:`LIMITS`): the environment
    variable of that name when set to a positive integer, else the default."""
    default, _ = LIMITS[name]
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(float(text))  # "4e6" is accepted; "inf" and "nan" are not integers
    except (ValueError, OverflowError):
        raise ValueError(
            f"{name}: expected a positive integer (e.g. {default}), got {text!r}"
        ) from None
    if value < 1:
        raise ValueError(f"{name}: expected a positive integer (e.g. {default}), got {text!r}")
    return value


def over_limit(name: str, value: int, where: str) -> str | None:
    """``None`` when ``value`` is within limit ``name``, else the refusal message: what was
    declared, the limit and how to raise it."""
    cap = limit(name)
    if value <= cap:
        return None
    what = LIMITS[name][1]
    return (
        f"{where}: {value:,} {what} exceeds the limit of {cap:,} (checked before allocating "
        f"memory); if the input is genuine, raise it with the environment variable "
        f"{name}={value}"
    )
