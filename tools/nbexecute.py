"""Execution: run a notebook top to bottom with :mod:`nbclient` in a kernel of this
interpreter, in the notebook's directory, with ``PHYSML_FAST=1`` unless ``full``, and write
the ``.ipynb`` with the outputs that ``pytest --nbval`` compares against. Stream outputs
are tidied as a terminal shows them: consecutive chunks of one stream are merged and
progress-bar rewrites (carriage returns) collapsed to their last state."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import jupytext
import nbconfig as cfg
import nbformat
from jupytext.combine import combine_inputs_with_outputs
from nbpairs import _config, _rel


def _collapse_cr(text: str) -> str:
    """Terminal rewrites (progress bars): keep what follows the last carriage return."""
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
#: a warning raised inside an installed package: ``.../site-packages/PKG/file.py:21: ...``
_DEPENDENCY_WARNING = re.compile(r"^\S*site-packages/\S+:\d+: ")
_EPOCH = re.compile(r"^(Epoch \d+)(?:/\d+)?[,:]")


def drop_noise(text: str) -> str:
    """What a student cannot act on, removed from a stream's text: ANSI cursor codes,
    warnings raised inside installed packages (with their source line; they also carry the
    machine's paths), Lightning's advertisements and validation sub-bars, blank bar clears;
    and of consecutive bar states of one epoch (``Epoch N:`` or ``Epoch N/M, ...``) only
    the last. Used on cells tagged ``nbval-ignore-output`` only (nbval compares the others
    with a fresh, untidied run)."""
    out: list[str] = []
    skip_source = False
    for line in _ANSI.sub("", text).split("\n"):
        if skip_source and line[:1].isspace() and line.strip():
            skip_source = False
            continue
        skip_source = False
        if _DEPENDENCY_WARNING.match(line):
            skip_source = True
            continue
        if line.startswith(("💡 Tip", "Validation")) or (line and not line.strip()):
            continue
        m = _EPOCH.match(line)
        prev = _EPOCH.match(out[-1]) if m and out else None
        if prev and prev.group(1) == m.group(1):
            out[-1] = line
            continue
        out.append(line)
    return "\n".join(out)


def tidy_streams(outputs: list, noise: bool = False) -> list:
    """``outputs`` with consecutive stream outputs of one name merged and carriage-return
    rewrites collapsed (:func:`_collapse_cr`); with ``noise``, also :func:`drop_noise`, and
    streams left empty removed."""
    merged = []
    for out in outputs:
        if (
            out.output_type == "stream"
            and merged
            and merged[-1].output_type == "stream"
            and merged[-1].name == out.name
        ):
            merged[-1].text += out.text
        else:
            merged.append(out)
    for out in merged:
        if out.output_type == "stream":
            out.text = _collapse_cr(out.text)
            if noise:
                out.text = drop_noise(out.text)
    if noise:
        merged = [o for o in merged if o.output_type != "stream" or o.text.strip()]
    return merged


def tidy_cells(nb) -> None:
    """:func:`tidy_streams` on every code cell of ``nb``, in place, dropping noise in the
    cells tagged ``nbval-ignore-output``."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            noise = cfg.IGNORE_OUTPUT_TAG in cell.metadata.get("tags", [])
            cell.outputs = tidy_streams(cell.outputs, noise=noise)


def tidy(py_path) -> bool:
    """Tidy the committed outputs of a notebook's ``.ipynb`` without running it (as
    :func:`execute` does after a run); returns whether anything changed."""
    ipynb = Path(py_path).with_suffix(".ipynb")
    nb = nbformat.read(str(ipynb), as_version=4)
    before = nbformat.writes(nb)
    tidy_cells(nb)
    if nbformat.writes(nb) == before:
        return False
    nbformat.write(nb, str(ipynb))
    return True


def _this_python_kernel():
    """A kernel manager that starts a kernel of this interpreter (whatever kernels are
    installed), as ``pytest --nbval --nbval-current-env`` does."""
    import ipykernel.kernelspec
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    class _ThisPython(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            return self.kernel_spec_class(
                resource_dir=ipykernel.kernelspec.RESOURCES,
                **ipykernel.kernelspec.get_kernel_dict(),
            )

    return KernelManager(kernel_name="this-python", kernel_spec_manager=_ThisPython())


def execute(py_path, full: bool = False, timeout: float | None = None) -> float:
    """Run a notebook top to bottom (inputs from its ``.py``) and write the ``.ipynb`` with
    the outputs. ``PHYSML_FAST=1`` unless ``full``; ``timeout``: seconds per cell (None: no
    limit). Returns the wall time in seconds.

    Raises RuntimeError (and leaves the ``.ipynb`` as it was) when a cell fails."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    py_path = Path(py_path).resolve()
    ipynb = py_path.with_suffix(".ipynb")
    nb = jupytext.reads(py_path.read_text(encoding="utf-8"), fmt=cfg.TEXT_FORMAT, config=_config())
    if ipynb.exists():  # keep the cell ids (smaller diffs)
        nb = combine_inputs_with_outputs(nb, nbformat.read(str(ipynb), as_version=4))
    env = dict(os.environ)
    env.pop("PHYSML_FAST", None)
    if not full:
        env["PHYSML_FAST"] = "1"
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    client = NotebookClient(
        nb,
        km=_this_python_kernel(),
        timeout=timeout,
        startup_timeout=120,
        allow_errors=False,
        record_timing=False,
        resources={"metadata": {"path": str(py_path.parent)}},
    )
    t0 = time.perf_counter()
    try:
        client.execute(env=env)
    except CellExecutionError as err:
        failed = next(
            (
                i
                for i, c in enumerate(nb.cells)
                if any(o.output_type == "error" for o in c.get("outputs", []))
            ),
            "?",
        )
        raise RuntimeError(f"{_rel(py_path)}: cell {failed} failed:\n{err}") from None
    tidy_cells(nb)
    nb.metadata["kernelspec"] = dict(cfg.KERNELSPEC)
    nb.metadata.pop("jupytext", None)
    nbformat.write(nb, str(ipynb))
    return time.perf_counter() - t0
