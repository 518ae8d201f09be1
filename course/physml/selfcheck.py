"""Self-checks of the Task notebooks that explain a failure: which column differs, by how
much, on which edge or catalog, rather than a bare ``False``.

* :func:`difference` compares two tables row by row (edges or catalogs);
* :func:`check_invariant_features` compares a student's Task 1 edge features with
  :func:`physml.graphs.invariant_edge_features`, accepting either convention for the third
  feature (``p_j . n_ij`` as physml, or ``p_i . n_ij`` as the source notebook);
* :func:`check_model` runs a Task 2 model on a sample batch: output shapes, std > 0,
  invariance under cube symmetries and a periodic translation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .graphdata import cube_symmetry
from .graphs import invariant_edge_features

#: names of the three Task 1 features, in column order (physml's convention)
FEATURE_NAMES = ("d_ij", "p_i . p_j", "p_j . n_ij")
#: the third feature in the source notebook's convention, accepted as well
SOURCE_THIRD_FEATURE = "p_i . n_ij"
#: cube symmetries (new axis k = old axis perm[k] * sign[k]) and a translation that
#: :func:`check_model` tries, named as the map of the coordinates
SYMMETRIES = (
    ("(x, y, z) -> (z, -x, y)", (2, 0, 1), (1, -1, 1), None),
    ("(x, y, z) -> (y, x, z)", (1, 0, 2), (1, 1, 1), None),
    ("(x, y, z) -> (-x, y, -z)", (0, 1, 2), (-1, 1, -1), None),
    ("periodic translation by (0.3, 0.6, 0.9)", (0, 1, 2), (1, 1, 1), (0.3, 0.6, 0.9)),
)


def _edge_name(row: int, edge_index: Tensor | None, batch: Tensor | None) -> str:
    if edge_index is None:
        return f"row {row}"
    j, i = (int(v) for v in edge_index[:, row])
    where = f", catalog {int(batch[i])} of the batch" if batch is not None else ""
    return f"edge {row} (j = {j} -> i = {i}{where})"


def difference(
    yours: Tensor,
    expected: Tensor,
    names=None,
    rows: str = "edge",
    edge_index: Tensor | None = None,
    batch: Tensor | None = None,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> str | None:
    """``None`` when ``yours`` and ``expected`` (``[R, C]``) agree within ``atol + rtol *
    |expected|``; otherwise one line: the first column that differs (by ``names``), on how
    many of the rows, by how much at most, and the first such row with both values. Rows
    are edges (named ``j -> i`` and catalog when ``edge_index`` ``[2, R]`` and ``batch``
    ``[N]`` are given) or catalogs (``rows="catalog"``)."""
    yours, expected = torch.as_tensor(yours), torch.as_tensor(expected)
    if yours.shape != expected.shape:
        return f"shape {list(yours.shape)}, expected {list(expected.shape)}"
    yours = yours.detach().double().cpu().reshape(len(yours), -1)
    expected = expected.detach().double().cpu().reshape(len(expected), -1)
    names = list(names) if names is not None else [str(c) for c in range(yours.shape[1])]
    bad = ~(torch.isclose(yours, expected, rtol=rtol, atol=atol))
    if not bad.any():
        return None
    col = int(bad.any(dim=0).nonzero()[0])
    rows_bad = bad[:, col].nonzero()[:, 0]
    first = int(rows_bad[0])
    gap = (yours[:, col] - expected[:, col]).abs()
    gap = gap[torch.isfinite(gap)]
    largest = f"by up to {float(gap.max()):.3g}" if len(gap) else "(not finite)"
    where = _edge_name(first, edge_index, batch) if rows == "edge" else f"{rows} {first}"
    other = [names[c] for c in bad.any(dim=0).nonzero()[:, 0].tolist() if c != col]
    also = f"; also differs: {', '.join(other)}" if other else ""
    return (
        f"column {col} ({names[col]}) differs on {len(rows_bad)} of {len(yours)} {rows}s, "
        f"{largest}; first at {where}: {float(yours[first, col]):.4g} instead of "
        f"{float(expected[first, col]):.4g}{also}"
    )


def check_invariant_features(
    yours: Tensor, pos: Tensor, edge_index: Tensor, batch: Tensor, box_size: float | None = 1.0
) -> tuple[bool, str]:
    """Compare a student's invariant edge features ``[E, 3]`` with physml's
    :func:`~physml.graphs.invariant_edge_features` on the same graph. Either convention of
    the third feature passes: ``p_j . n_ij`` (physml) or ``p_i . n_ij`` (the source
    notebook). Returns ``(passed, one line)``."""
    expected = invariant_edge_features(pos, edge_index, batch, box_size)
    source = expected.clone()  # p_i . n_ij: the reversed edge's p . n, with n_ji = -n_ij
    source[:, 2] = -invariant_edge_features(pos, edge_index.flip(0), batch, box_size)[:, 2]
    names_source = (*FEATURE_NAMES[:2], SOURCE_THIRD_FEATURE)
    found = difference(yours, expected, FEATURE_NAMES, "edge", edge_index, batch)
    if found is None:
        return True, f"matches physml (third feature {FEATURE_NAMES[2]})"
    if difference(yours, source, names_source, "edge", edge_index, batch) is None:
        return True, f"matches physml with the source's third feature {SOURCE_THIRD_FEATURE}"
    return False, found


def _outputs(model, data) -> tuple:
    out = model(data)
    if not (isinstance(out, tuple | list) and len(out) == 2):
        raise TypeError(f"the model returns {type(out).__name__}, expected a tuple (mean, std)")
    return tuple(o.detach() for o in out)


def check_model(model, batch, symmetries=SYMMETRIES) -> tuple[bool, str]:
    """Run a Task 2 model (``forward(batch) -> (mean, std)``) on a sample batch of ``B``
    catalogs in eval mode, without gradients, and check: shapes ``[B, 1]`` (sigma_8) or
    ``[B, 2]`` (sigma_8, Omega_m), finite means, std > 0, and the same prediction after each
    of ``symmetries`` (cube rotations / reflections and a periodic translation; velocities
    turn with the positions). Returns ``(all passed, one line per check)``. The batch is
    moved to the model's device; the model's train / eval mode is restored."""
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = batch.pos.device
    batch = batch.to(device)
    n = batch.num_graphs
    lines, passed = [], True
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            mean, std = _outputs(model, batch)
            shape_ok = mean.shape == std.shape and tuple(mean.shape) in ((n, 1), (n, 2))
            lines.append(
                f"shapes: mean {list(mean.shape)}, std {list(std.shape)}: "
                + ("ok" if shape_ok else f"FAIL, expected [{n}, 1] or [{n}, 2] each")
            )
            finite = bool(torch.isfinite(mean).all())
            lines.append("mean finite: " + ("ok" if finite else "FAIL (NaN or inf)"))
            bad = ~(std > 0)
            if bad.any():
                k = int(bad.reshape(n, -1).any(dim=1).nonzero()[0])
                lines.append(
                    f"std > 0: FAIL for {int(bad.sum())} of {std.numel()} values, first on "
                    f"catalog {k}: {std[k].tolist()} (map the raw output through a softplus)"
                )
            else:
                lines.append("std > 0: ok")
            passed = shape_ok and finite and not bad.any()
            if not shape_ok:
                return False, "\n".join(lines)
            before = torch.cat([mean, std], dim=1)
            names = [f"{kind}[{t}]" for kind in ("mean", "std") for t in range(mean.shape[1])]
            for name, perm, sign, shift in symmetries:
                after = torch.cat(_outputs(model, cube_symmetry(batch, perm, sign, shift)), 1)
                found = difference(after, before, names, "catalog")
                lines.append(f"unchanged under {name}: " + ("ok" if found is None else "FAIL, "))
                if found is not None:
                    lines[-1] += found
                    passed = False
    finally:
        model.train(was)
    return passed, "\n".join(lines)
