"""Periodic friends-of-friends halo finder (scipy cKDTree + connected components)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree


@dataclass
class Groups:
    """FoF groups. pos ``[G, 3]`` centre of mass (box coordinates, same units as the
    input, in [0, L)); n_members ``[G]`` int; vel ``[G, 3]`` mean velocity or None;
    members: ``[N]`` group index of each particle (-1: in no kept group). Groups are
    sorted by decreasing size."""

    pos: np.ndarray
    n_members: np.ndarray
    vel: np.ndarray | None
    members: np.ndarray


def friends_of_friends(
    pos: np.ndarray,
    box_size: float,
    linking_length: float,
    min_members: int = 20,
    vel: np.ndarray | None = None,
) -> Groups:
    """Friends-of-friends groups of particles in a periodic box.

    pos: ``[N, 3]`` positions in [0, box_size) (any length unit); linking_length: same
    unit (conventionally 0.2 times the mean inter-particle separation); pairs closer than
    or at the linking length are friends. Groups with fewer than ``min_members`` particles
    are dropped. Centres of mass are computed from minimum-image offsets to one member, so
    groups that straddle the boundary get the right centre (valid for groups smaller than
    half the box, which halos are). vel: optional ``[N, 3]``.
    """
    pos = np.asarray(pos, dtype=np.float64)
    n = len(pos)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f"pos must be [N, 3], got {pos.shape}")
    if not 0 < linking_length < box_size / 2:
        raise ValueError(f"linking_length must be in (0, box_size/2), got {linking_length}")
    pos = np.mod(pos, box_size)
    pos[pos >= box_size] = 0.0  # float rounding of tiny negatives
    empty = Groups(
        np.zeros((0, 3)),
        np.zeros(0, dtype=np.int64),
        None if vel is None else np.zeros((0, 3)),
        np.full(n, -1, dtype=np.int64),
    )
    if n == 0:
        return empty
    pairs = cKDTree(pos, boxsize=box_size, balanced_tree=False, compact_nodes=False).query_pairs(
        linking_length, output_type="ndarray"
    )
    adj = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(adj, directed=False)
    sizes = np.bincount(labels)
    keep = np.flatnonzero(sizes >= min_members)
    if len(keep) == 0:
        return empty
    keep = keep[np.argsort(-sizes[keep], kind="stable")]
    remap = np.full(len(sizes), -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    members = remap[labels]
    sel = members >= 0
    g = members[sel]
    ref_idx = np.zeros(len(keep), dtype=np.int64)
    ref_idx[g[::-1]] = np.flatnonzero(sel)[::-1]  # first member of each group
    ref = pos[ref_idx]
    off = pos[sel] - ref[g]
    off -= box_size * np.round(off / box_size)
    counts = sizes[keep]
    centre = np.stack([np.bincount(g, off[:, d], len(keep)) for d in range(3)], 1)
    centre = np.mod(ref + centre / counts[:, None], box_size)
    centre[centre >= box_size] = 0.0
    mean_vel = None
    if vel is not None:
        v = np.asarray(vel, dtype=np.float64)[sel]
        mean_vel = np.stack([np.bincount(g, v[:, d], len(keep)) for d in range(3)], 1)
        mean_vel /= counts[:, None]
    return Groups(centre, counts.astype(np.int64), mean_vel, members)
