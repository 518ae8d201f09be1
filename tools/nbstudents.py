"""Student versions generated from the solution notebooks (:data:`nbconfig.STUDENT_VERSIONS`):
cells tagged ``solution`` are dropped; in code cells the lines from ``# SOLUTION START`` to
``# SOLUTION END`` are replaced by the region's ``# TODO ...`` lines and its
``# STUDENT: code`` lines uncommented (a stub that still runs); a title ending in
`` — solution`` loses that suffix."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import nbconfig as cfg
import nbformat
from nbheader import apply_header
from nbpairs import _rel, py_text, read_py, write_pair

_START_RE = re.compile(r"^\s*# SOLUTION START\s*$")
_END_RE = re.compile(r"^\s*# SOLUTION END\s*$")
_STUDENT_RE = re.compile(r"^(\s*)# STUDENT:(?: (.*))?$")
_TODO_RE = re.compile(r"^\s*# TODO\b")


def strip_solutions(source: str, where: str = "cell") -> str:
    """A code cell's source with every ``# SOLUTION START`` ... ``# SOLUTION END`` region
    replaced by its ``# TODO`` lines and its ``# STUDENT:`` lines uncommented."""
    out, inside, start_line = [], False, 0
    for n, line in enumerate(source.split("\n"), 1):
        if _START_RE.match(line):
            if inside:
                raise ValueError(f"{where}: nested '# SOLUTION START' at line {n}")
            inside, start_line = True, n
        elif _END_RE.match(line):
            if not inside:
                raise ValueError(f"{where}: '# SOLUTION END' without a start at line {n}")
            inside = False
        elif not inside:
            out.append(line)
        elif _TODO_RE.match(line):
            out.append(line)
        elif m := _STUDENT_RE.match(line):
            out.append(m.group(1) + (m.group(2) or ""))
    if inside:
        raise ValueError(f"{where}: '# SOLUTION START' at line {start_line} is never closed")
    return "\n".join(out)


def make_student(solution_nb, student_py) -> nbformat.NotebookNode:
    """The student version of a solution notebook, with the badge and setup cell of
    ``student_py``."""
    nb = copy.deepcopy(solution_nb)
    cells = []
    for i, cell in enumerate(nb.cells):
        if cfg.SOLUTION_TAG in cell.metadata.get("tags", []):
            continue
        if cell.cell_type == "code":
            cell.source = strip_solutions(cell.source, f"cell {i}")
            cell.outputs, cell.execution_count = [], None
        cells.append(cell)
    nb.cells = cells
    if cells and cells[0].cell_type == "markdown":
        title, sep, rest = cells[0].source.partition("\n")
        cells[0].source = title.removesuffix(cfg.SOLUTION_SUFFIX) + sep + rest
    return apply_header(nb, student_py)


def student_text(solution_py) -> str:
    """The ``.py`` text the student version of ``solution_py`` should have."""
    student_py = cfg.ROOT / cfg.STUDENT_VERSIONS[_rel(solution_py)]
    return py_text(make_student(read_py(solution_py), student_py))


def students() -> list[Path]:
    """Regenerate every student notebook (``.py`` and ``.ipynb``); returns those changed.
    Cells whose source is unchanged keep their outputs; run ``execute`` afterwards."""
    changed = []
    for sol, stu in cfg.STUDENT_VERSIONS.items():
        sol_py, stu_py = cfg.ROOT / sol, cfg.ROOT / stu
        if not sol_py.exists():
            raise FileNotFoundError(f"{sol}: the solution notebook is missing")
        nb = make_student(read_py(sol_py), stu_py)
        if not stu_py.exists() or py_text(nb) != stu_py.read_text(encoding="utf-8"):
            write_pair(nb, stu_py)
            changed.append(stu_py)
    return changed
