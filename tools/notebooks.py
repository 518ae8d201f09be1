"""Maintenance of the course notebooks (jupytext pairs: ``.py`` percent format + ``.ipynb``).

Usage, from the repository root::

    python tools/notebooks.py sync                    # badge + setup cell of every notebook
    python tools/notebooks.py students                # regenerate the student versions
    python tools/notebooks.py execute [--full] [NB]   # run notebooks, outputs into the .ipynb
    python tools/notebooks.py check                   # exit 1 if anything above is stale

* **Badge and setup cell.** Every notebook opens with a markdown cell (title, then an "Open
  in Colab" badge pointing at its own ``.ipynb``) and a code cell that installs physml when
  run in Colab and does nothing elsewhere. Both are rendered from :data:`REPO` and
  :data:`BRANCH`, the one place a maintainer edits before publishing; ``sync`` rewrites
  them in every notebook (``.py`` and ``.ipynb``, outputs kept).
* **Student versions** are generated from the solutions (:data:`STUDENT_VERSIONS`): cells
  tagged ``solution`` are dropped; in code cells the lines from ``# SOLUTION START`` to
  ``# SOLUTION END`` are replaced by the region's ``# TODO ...`` lines and its
  ``# STUDENT: code`` lines uncommented (a stub that still runs); a title ending in
  `` — solution`` loses that suffix.
* **Execution** runs each notebook top to bottom in a kernel of this interpreter, in the
  notebook's directory, with ``PHYSML_FAST=1`` unless ``--full``; the committed ``.ipynb``
  then carries the outputs that ``pytest --nbval`` compares against.

Notebooks are the ``.py`` files with ``# %%`` cells under :data:`NOTEBOOK_DIRS`. The
``.py`` is the source: edit it, then ``jupytext --sync`` (or ``execute``) updates the
``.ipynb``. Notebooks use no IPython magics, so the ``.py`` is plain Python (ruff checks it).
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from jupytext.combine import combine_inputs_with_outputs
from jupytext.config import load_jupytext_configuration_file

#: GitHub repository (owner/name) and branch the notebooks are published from: the Colab
#: badges and the Colab install line point here. Set them, then run ``sync``.
REPO = "physml-course/physml"
BRANCH = "main"

ROOT = Path(__file__).resolve().parents[1]
#: directories (relative to the root) holding notebooks
NOTEBOOK_DIRS = ("lecture14_gnn", "solutions")
#: solution notebook -> generated student notebook (``.py`` paths relative to the root)
STUDENT_VERSIONS = {
    "solutions/03_task1_invariant_features.py": "lecture14_gnn/03_task1_invariant_features.py",
    "solutions/04_task2_open_ended.py": "lecture14_gnn/04_task2_open_ended.py",
}
#: notebook -> modules next to it that it imports (fetched from GitHub in Colab)
HELPERS = {"solutions/04_task2_open_ended.py": ("task2_models.py",)}
#: notebook -> the optional extra of pyproject.toml its Colab setup cell installs with
#: physml (the supplements need libraries that the lecture does not)
EXTRAS = {
    f"lecture14_gnn/{name}.py": "supplements"
    for name in (
        "05_differentiable_simulation",
        "06_neural_physical_engine",
        "07_flows_and_posteriors",
    )
}

TEXT_FORMAT = "py:percent"
IGNORE_OUTPUT_TAG = "nbval-ignore-output"
SOLUTION_TAG = "solution"
SETUP_MARKER = "# Colab: "
SOLUTION_SUFFIX = " — solution"
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}
_BADGE_RE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")
_START_RE = re.compile(r"^\s*# SOLUTION START\s*$")
_END_RE = re.compile(r"^\s*# SOLUTION END\s*$")
_STUDENT_RE = re.compile(r"^(\s*)# STUDENT:(?: (.*))?$")
_TODO_RE = re.compile(r"^\s*# TODO\b")


# --------------------------------------------------------------------------- files


def _rel(path) -> str:
    """Path relative to the root, with forward slashes."""
    return Path(path).resolve().relative_to(ROOT).as_posix()


def _config():
    return load_jupytext_configuration_file(str(ROOT / "jupytext.toml"))


def notebook_paths() -> list[Path]:
    """The ``.py`` side of every notebook pair, sorted."""
    out = []
    for d in NOTEBOOK_DIRS:
        for p in sorted((ROOT / d).glob("*.py")):
            if re.search(r"^# %%", p.read_text(encoding="utf-8"), re.MULTILINE):
                out.append(p)
    return out


def read_py(path) -> nbformat.NotebookNode:
    """A notebook from its ``.py`` (percent format)."""
    return jupytext.read(str(path), fmt=TEXT_FORMAT, config=_config())


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
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    text = jupytext.writes(nb, fmt=TEXT_FORMAT, config=_config())
    return _two_blank_lines_where_pep8_wants_them(text)


def write_pair(nb, py_path) -> None:
    """Write ``py_path`` and its ``.ipynb``, keeping the outputs of the ``.ipynb`` cells whose
    source is unchanged."""
    py_path = Path(py_path)
    text = py_text(nb)
    py_path.write_text(text, encoding="utf-8")
    inputs = jupytext.reads(text, fmt=TEXT_FORMAT, config=_config())
    ipynb = py_path.with_suffix(".ipynb")
    if ipynb.exists():
        inputs = combine_inputs_with_outputs(inputs, nbformat.read(str(ipynb), as_version=4))
    inputs.metadata["kernelspec"] = dict(KERNELSPEC)
    inputs.metadata.pop("jupytext", None)
    nbformat.write(inputs, str(ipynb))


# --------------------------------------------------------------------------- badge + setup


def colab_url(py_path) -> str:
    """Colab URL of a notebook's ``.ipynb`` on GitHub."""
    ipynb = Path(_rel(py_path)).with_suffix(".ipynb").as_posix()
    return f"https://colab.research.google.com/github/{REPO}/blob/{BRANCH}/{ipynb}"


def badge(py_path) -> str:
    """The "Open in Colab" badge (markdown) of a notebook."""
    return (
        "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        f"({colab_url(py_path)})"
    )


def setup_cell_source(py_path=None) -> str:
    """Source of a notebook's setup cell: in Colab it installs physml from :data:`REPO` at
    :data:`BRANCH` (with its dependencies, e.g. PyTorch Geometric and Lightning, which Colab
    lacks, and the notebook's extra from :data:`EXTRAS`) and fetches the helper modules the notebook imports (:data:`HELPERS`);
    elsewhere it does nothing."""
    helpers = HELPERS.get(_rel(py_path), ()) if py_path is not None else ()
    extra = EXTRAS.get(_rel(py_path)) if py_path is not None else None
    folder = Path(_rel(py_path)).parent.as_posix() if helpers else ""
    lines = [
        "# Colab: install physml (and what Colab lacks); elsewhere nothing happens.",
        "import subprocess",
        "import sys",
    ]
    if helpers:
        lines.append("import urllib.request")
    url = f"git+https://github.com/{REPO}.git@{BRANCH}"
    install = f"physml[{extra}] @ {url}" if extra else url
    lines += ["", f'PHYSML_INSTALL = "{install}"']
    if helpers:
        raw = f"https://raw.githubusercontent.com/{REPO}/{BRANCH}/{folder}/"
        lines.append(f'HELPERS = "{raw}"')
    lines += [
        'if "google.colab" in sys.modules:',
        '    subprocess.run([sys.executable, "-m", "pip", "install", "-q", PHYSML_INSTALL], '
        "check=True)",
    ]
    for name in helpers:
        lines.append(f'    urllib.request.urlretrieve(HELPERS + "{name}", "{name}")')
    return "\n".join(lines)


def _is_setup_cell(cell) -> bool:
    return cell.cell_type == "code" and cell.source.startswith(SETUP_MARKER)


def header_problems(nb, py_path) -> list[str]:
    """What is wrong with a notebook's badge and setup cell (empty when up to date)."""
    problems = []
    cells = nb.cells
    if not cells or cells[0].cell_type != "markdown" or not cells[0].source.startswith("# "):
        problems.append("the first cell is not a markdown cell starting with a '# ' title")
    elif badge(py_path) not in cells[0].source:
        problems.append(f"the first cell lacks the badge {badge(py_path)}")
    code = [c for c in cells if c.cell_type == "code"]
    if not code or code[0].source != setup_cell_source(py_path):
        problems.append("the first code cell is not setup_cell_source()'s")
    elif IGNORE_OUTPUT_TAG not in code[0].metadata.get("tags", []):
        problems.append(f"the setup cell is not tagged {IGNORE_OUTPUT_TAG}")
    return problems


def apply_header(nb, py_path):
    """A copy of ``nb`` with the current badge and setup cell."""
    nb = copy.deepcopy(nb)
    cells = nb.cells
    if not cells or cells[0].cell_type != "markdown" or not cells[0].source.startswith("# "):
        raise ValueError(f"{_rel(py_path)}: the first cell must be markdown with a '# ' title")
    first = cells[0]
    if _BADGE_RE.search(first.source):
        first.source = _BADGE_RE.sub(lambda _: badge(py_path), first.source, count=1)
    else:
        title, _, rest = first.source.partition("\n")
        first.source = f"{title}\n\n{badge(py_path)}" + (f"\n{rest}" if rest else "")
    setup = nbformat.v4.new_code_cell(setup_cell_source(py_path))
    setup.metadata["tags"] = [IGNORE_OUTPUT_TAG]
    code_idx = [i for i, c in enumerate(cells) if c.cell_type == "code"]
    if code_idx and _is_setup_cell(cells[code_idx[0]]):
        old = cells[code_idx[0]]
        old.source = setup.source
        tags = old.metadata.setdefault("tags", [])
        if IGNORE_OUTPUT_TAG not in tags:
            tags.append(IGNORE_OUTPUT_TAG)
    else:
        cells.insert(1, setup)
    return nb


def sync() -> list[Path]:
    """Rewrite the badge and setup cell of every notebook; returns the notebooks changed."""
    changed = []
    for py in notebook_paths():
        nb = read_py(py)
        new = apply_header(nb, py)
        ipynb = py.with_suffix(".ipynb")
        if py_text(new) != py.read_text(encoding="utf-8") or not ipynb.exists():
            write_pair(new, py)
            changed.append(py)
        elif pair_problems(py):
            write_pair(new, py)
            changed.append(py)
    return changed


# --------------------------------------------------------------------------- students


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
        if SOLUTION_TAG in cell.metadata.get("tags", []):
            continue
        if cell.cell_type == "code":
            cell.source = strip_solutions(cell.source, f"cell {i}")
            cell.outputs, cell.execution_count = [], None
        cells.append(cell)
    nb.cells = cells
    if cells and cells[0].cell_type == "markdown":
        title, sep, rest = cells[0].source.partition("\n")
        cells[0].source = title.removesuffix(SOLUTION_SUFFIX) + sep + rest
    return apply_header(nb, student_py)


def student_text(solution_py) -> str:
    """The ``.py`` text the student version of ``solution_py`` should have."""
    student_py = ROOT / STUDENT_VERSIONS[_rel(solution_py)]
    return py_text(make_student(read_py(solution_py), student_py))


def students() -> list[Path]:
    """Regenerate every student notebook (``.py`` and ``.ipynb``); returns those changed.
    Cells whose source is unchanged keep their outputs; run ``execute`` afterwards."""
    changed = []
    for sol, stu in STUDENT_VERSIONS.items():
        sol_py, stu_py = ROOT / sol, ROOT / stu
        if not sol_py.exists():
            raise FileNotFoundError(f"{sol}: the solution notebook is missing")
        nb = make_student(read_py(sol_py), stu_py)
        if not stu_py.exists() or py_text(nb) != stu_py.read_text(encoding="utf-8"):
            write_pair(nb, stu_py)
            changed.append(stu_py)
    return changed


# --------------------------------------------------------------------------- checks


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


def check() -> list[str]:
    """Every problem: stale badge / setup cell, unsynced pair, stale student version."""
    problems = []
    for py in notebook_paths():
        rel = _rel(py)
        problems += [f"{rel}: {p}" for p in header_problems(read_py(py), py)]
        problems += [f"{rel}: {p}" for p in pair_problems(py)]
    for sol, stu in STUDENT_VERSIONS.items():
        path = ROOT / stu
        if not path.exists() or student_text(ROOT / sol) != path.read_text(encoding="utf-8"):
            problems.append(f"{stu}: out of date with {sol} (run tools/notebooks.py students)")
    return problems


# --------------------------------------------------------------------------- execution


def _collapse_cr(text: str) -> str:
    """Terminal rewrites (progress bars): keep what follows the last carriage return."""
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))


def _kernel(cwd: Path, env: dict):
    import ipykernel.kernelspec
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    class _ThisPython(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            return self.kernel_spec_class(
                resource_dir=ipykernel.kernelspec.RESOURCES,
                **ipykernel.kernelspec.get_kernel_dict(),
            )

    km = KernelManager(kernel_name="this-python", kernel_spec_manager=_ThisPython())
    km.start_kernel(cwd=str(cwd), env=env)
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=120)
    return km, kc


def _run_cell(kc, source: str, timeout: float | None) -> tuple[list, int | None, bool]:
    """Execute one cell; returns (outputs, execution_count, ok)."""
    msg_id = kc.execute(source, store_history=True, allow_stdin=False)
    outputs, clear_pending, count, ok = [], False, None, True
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "status" and content["execution_state"] == "idle":
            break
        if kind == "execute_input":
            count = content.get("execution_count")
            continue
        if kind == "clear_output":
            if content.get("wait"):
                clear_pending = True
            else:
                outputs = []
            continue
        if kind not in ("stream", "display_data", "execute_result", "error"):
            continue
        if clear_pending:
            outputs, clear_pending = [], False
        out = nbformat.v4.output_from_msg(msg)
        if kind == "error":
            ok = False
        if (
            kind == "stream"
            and outputs
            and outputs[-1].output_type == "stream"
            and outputs[-1].name == out.name
        ):
            outputs[-1].text += out.text
        else:
            outputs.append(out)
    for out in outputs:
        if out.output_type == "stream":
            out.text = _collapse_cr(out.text)
    return outputs, count, ok


def execute(py_path, full: bool = False, timeout: float | None = None) -> float:
    """Run a notebook top to bottom (inputs from its ``.py``) and write the ``.ipynb`` with
    the outputs. ``PHYSML_FAST=1`` unless ``full``. Returns the wall time in seconds.

    Raises RuntimeError (and leaves the ``.ipynb`` as it was) when a cell fails."""
    py_path = Path(py_path).resolve()
    ipynb = py_path.with_suffix(".ipynb")
    nb = jupytext.reads(py_path.read_text(encoding="utf-8"), fmt=TEXT_FORMAT, config=_config())
    if ipynb.exists():  # keep the cell ids (smaller diffs)
        nb = combine_inputs_with_outputs(nb, nbformat.read(str(ipynb), as_version=4))
    env = dict(os.environ)
    env.pop("PHYSML_FAST", None)
    if not full:
        env["PHYSML_FAST"] = "1"
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    t0 = time.perf_counter()
    km, kc = _kernel(py_path.parent, env)
    try:
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            outputs, count, ok = _run_cell(kc, cell.source, timeout)
            cell.outputs, cell.execution_count = outputs, count
            for out in outputs:
                if out.output_type == "execute_result":
                    out.execution_count = count
            if not ok:
                err = next(o for o in outputs if o.output_type == "error")
                tb = "\n".join(err.traceback)
                raise RuntimeError(f"{_rel(py_path)}: cell {i} failed:\n{tb}")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata.pop("jupytext", None)
    nbformat.write(nb, str(ipynb))
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- command line


def _resolve(paths) -> list[Path]:
    if not paths:
        return notebook_paths()
    out = []
    every = notebook_paths()
    for p in paths:
        p = Path(p).resolve()
        if p.is_dir():
            out += [q for q in every if p in q.parents]
            continue
        if p.with_suffix(".py") not in every:
            raise SystemExit(f"{p}: not a notebook (a .py with # %% cells under {NOTEBOOK_DIRS})")
        out.append(p.with_suffix(".py"))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("sync", help="rewrite the Colab badge and setup cell of every notebook")
    sub.add_parser("students", help="regenerate the student notebooks from the solutions")
    ex = sub.add_parser("execute", help="run notebooks in place (fast mode unless --full)")
    ex.add_argument("--full", action="store_true", help="full mode (PHYSML_FAST unset)")
    ex.add_argument("--timeout", type=float, default=None, help="seconds per cell output")
    ex.add_argument("paths", nargs="*", help="notebooks (.py / .ipynb) or folders; default: all")
    sub.add_parser("check", help="exit 1 if a badge, setup cell, pair or student is stale")
    args = parser.parse_args(argv)

    if args.command == "sync":
        for p in sync():
            print(f"updated {_rel(p)}")
    elif args.command == "students":
        for p in students():
            print(f"wrote {_rel(p)} (+ .ipynb)")
    elif args.command == "execute":
        for p in _resolve(args.paths):
            mode = "full" if args.full else "fast"
            print(f"executing {_rel(p)} ({mode} mode) ...", flush=True)
            seconds = execute(p, full=args.full, timeout=args.timeout)
            print(f"  done in {seconds:.0f} s", flush=True)
    elif args.command == "check":
        problems = check()
        for p in problems:
            print(p)
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
