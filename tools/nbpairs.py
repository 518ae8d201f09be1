"""Notebook pairs as files: finding them, reading the ``.py`` (percent format), writing a
``.py`` and its ``.ipynb`` together (outputs kept where the source is unchanged), and
checking that a pair is in sync and that the ``.ipynb`` carries outputs."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import jupytext
import nbconfig as cfg
import nbformat
from jupytext.combine import combine_inputs_with_outputs
from jupytext.config import load_jupytext_configuration_file


def _rel(path) -> str:
    """Path relative to the root, with forward slashes (as given when outside the root)."""
    path = Path(path).resolve()
    return path.relative_to(cfg.ROOT).as_posix() if cfg.ROOT in path.parents else path.as_posix()


def _config():
    return load_jupytext_configuration_file(str(cfg.ROOT / "jupytext.toml"))


def notebook_paths() -> list[Path]:
    """The ``.py`` side of every notebook pair, sorted."""
    out = []
    for d in cfg.NOTEBOOK_DIRS:
        for p in sorted((cfg.ROOT / d).glob("*.py")):
            if re.search(r"^# %%", p.read_text(encoding="utf-8"), re.MULTILINE):
                out.append(p)
    return out


def read_py(path) -> nbformat.NotebookNode:
    """A notebook from its ``.py`` (percent format)."""
    return jupytext.read(str(path), fmt=cfg.TEXT_FORMAT, config=_config())


def _two_blank_lines_where_pep8_wants_them(text: str) -> str:
    """Two blank lines before a ``# %%`` header that ends a ``def`` / ``class`` or opens a
    cell with one, as ``ruff format`` wants (jupytext writes one after a markdown cell)."""
    block = re.compile(r"(def|class|async def|@)\W")
    lines = text.split("\n")
    out: list[str] = []
    last_top = None  # the last top-level code line so far
    for k, line in enumerate(lines):
        if line.startswith("# %%") and last_top is not None:
            prev = next(x for x in reversed(out) if x.strip())
            first = lines[k + 1] if k + 1 < len(lines) else ""
            ends_block = prev[:1].isspace() and block.match(last_top) is not None
            if ends_block or block.match(first):
                body = _rstrip_blank(out)
                if len(out) - len(body) < 2:
                    out = body + ["", ""]
        if line.strip() and not line[:1].isspace() and not line.startswith("#"):
            last_top = line
        out.append(line)
    return "\n".join(out)


def _rstrip_blank(lines: list[str]) -> list[str]:
    end = len(lines)
    while end and not lines[end - 1].strip():
        end -= 1
    return lines[:end]


def py_text(nb) -> str:
    """The ``.py`` text of a notebook, as jupytext writes it with the repository config
    (and the blank lines ``ruff format`` wants between cells)."""
    nb = copy.deepcopy(nb)
    nb.metadata["kernelspec"] = dict(cfg.KERNELSPEC)
    text = jupytext.writes(nb, fmt=cfg.TEXT_FORMAT, config=_config())
    return _two_blank_lines_where_pep8_wants_them(text)


def write_pair(nb, py_path) -> None:
    """Write ``py_path`` and its ``.ipynb``, keeping the outputs of the ``.ipynb`` cells whose
    source is unchanged."""
    py_path = Path(py_path)
    text = py_text(nb)
    py_path.write_text(text, encoding="utf-8")
    inputs = jupytext.reads(text, fmt=cfg.TEXT_FORMAT, config=_config())
    ipynb = py_path.with_suffix(".ipynb")
    if ipynb.exists():
        inputs = combine_inputs_with_outputs(inputs, nbformat.read(str(ipynb), as_version=4))
    inputs.metadata["kernelspec"] = dict(cfg.KERNELSPEC)
    inputs.metadata.pop("jupytext", None)
    nbformat.write(inputs, str(ipynb))


def _cells_signature(nb) -> list[tuple[str, str, tuple[str, ...]]]:
    return [
        (c.cell_type, c.source.strip("\n"), tuple(c.metadata.get("tags", []))) for c in nb.cells
    ]


def pair_problems(py_path) -> list[str]:
    """Differences between the cells of a ``.py`` and of its ``.ipynb`` (type, source,
    tags); empty when in sync."""
    py_path = Path(py_path)
    ipynb = py_path.with_suffix(".ipynb")
    if not ipynb.exists():
        return [f"{_rel(ipynb)} is missing"]
    a = _cells_signature(read_py(py_path))
    b = _cells_signature(jupytext.read(str(ipynb)))
    problems = []
    if len(a) != len(b):
        problems.append(f"{len(a)} cells in the .py, {len(b)} in the .ipynb")
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            problems.append(f"cell {i} differs between the .py and the .ipynb")
            break
    return problems


def output_problems(py_path) -> list[str]:
    """Code cells of the ``.ipynb`` that were never executed (nbval compares against the
    stored outputs, so the committed notebook must carry them)."""
    ipynb = Path(py_path).with_suffix(".ipynb")
    if not ipynb.exists():
        return [f"{_rel(ipynb)} is missing"]
    nb = nbformat.read(str(ipynb), as_version=4)
    missing = [
        i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.execution_count is None
    ]
    if missing:
        return [f"code cells {missing} have no outputs: run tools/notebooks.py execute"]
    return []


#: a number as printed: decimal digits with an optional exponent
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?![\w.])")
#: smallest magnitude that a compared output may print: below it, a figure is round-off
ROUNDOFF_FLOOR = 1e-10


def sanitizers(cfg_path=None) -> list[tuple[re.Pattern, str]]:
    """The (regex, replacement) pairs of nbval's sanitize file (``tests/nbval_sanitize.cfg``),
    in file order, as ``pytest --nbval-sanitize-with`` applies them."""
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    parser.read(cfg_path or cfg.ROOT / "tests" / "nbval_sanitize.cfg", encoding="utf-8")
    return [(re.compile(parser[s]["regex"]), parser[s]["replace"]) for s in parser.sections()]


def roundoff_figures(text: str) -> list[str]:
    """The printed numbers of ``text`` that only round-off could give: a nonzero magnitude
    below :data:`ROUNDOFF_FLOOR`, or a zero in exponent notation (``0.0e+00``, a difference
    that happened to vanish here)."""
    found = []
    for m in _NUMBER.finditer(text):
        s = m.group(0)
        value = abs(float(s))
        if (0.0 < value < ROUNDOFF_FLOOR) or (value == 0.0 and "e" in s.lower()):
            found.append(s)
    return found


def roundoff_problems(py_path, cfg_path=None) -> list[str]:
    """Compared outputs (code cells not tagged :data:`nbconfig.IGNORE_OUTPUT_TAG`) of the
    ``.ipynb`` that print a round-off-sized figure after nbval's sanitizers: such digits
    change with the BLAS kernels, the thread count and the load, so nbval would fail on
    another machine. Print a verdict against a tolerance instead (``< 1e-10: ok``)."""
    ipynb = Path(py_path).with_suffix(".ipynb")
    nb = nbformat.read(str(ipynb), as_version=4)
    subs = sanitizers(cfg_path)
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or cfg.IGNORE_OUTPUT_TAG in cell.metadata.get("tags", []):
            continue
        for out in cell.get("outputs", []):
            text = out.get("text", "") if out.output_type == "stream" else ""
            text += str(out.get("data", {}).get("text/plain", ""))
            for regex, replace in subs:
                text = regex.sub(replace, text)
            figures = roundoff_figures(text)
            if figures:
                problems.append(
                    f"cell {i} prints round-off-sized figures {figures[:3]} in a compared "
                    "output: print a verdict against a tolerance, or tag the cell "
                    f"{cfg.IGNORE_OUTPUT_TAG}"
                )
    return problems
