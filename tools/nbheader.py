"""The first two cells of every notebook: a markdown title with an "Open in Colab" badge
pointing at its own ``.ipynb``, and a code cell that installs physml when run in Colab and
does nothing elsewhere; both rendered from :data:`nbconfig.REPO` and :data:`nbconfig.BRANCH`.
``sync`` rewrites them in every notebook (``.py`` and ``.ipynb``, outputs kept)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import nbconfig as cfg
import nbformat
from nbpairs import _rel, notebook_paths, pair_problems, py_text, read_py, write_pair

_BADGE_RE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")


def colab_url(py_path) -> str:
    """Colab URL of a notebook's ``.ipynb`` on GitHub."""
    ipynb = Path(_rel(py_path)).with_suffix(".ipynb").as_posix()
    return f"https://colab.research.google.com/github/{cfg.REPO}/blob/{cfg.BRANCH}/{ipynb}"


def badge(py_path) -> str:
    """The "Open in Colab" badge (markdown) of a notebook."""
    return (
        "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        f"({colab_url(py_path)})"
    )


#: what the setup cell prints when pip fails, after pip's own output ({target}: what it tried)
INSTALL_HELP = """physml could not be installed from {target} (pip's output is above). What to do:
 * The repository is not published there yet, or is private: the instructor sets REPO and
   BRANCH in tools/nbconfig.py to the published repository and runs
   `python tools/notebooks.py sync`, which rewrites this cell and the Colab badge.
 * Or install from a wheel: in a clone of the course repository run
   `pip wheel . --no-deps -w dist` (or `python -m build`), upload dist/physml-*.whl to this
   Colab session (Files panel, left), and run this cell again: an uploaded physml wheel
   is installed first, with the libraries it needs."""


def setup_cell_source(py_path=None) -> str:
    """Source of a notebook's setup cell. In Colab it installs physml with its
    dependencies (e.g. PyTorch Geometric and Lightning, which Colab lacks) and the
    notebook's extra (:data:`nbconfig.EXTRAS`): from a ``physml-*.whl`` uploaded to the
    session's working directory if there is one, otherwise from :data:`nbconfig.REPO` at
    :data:`nbconfig.BRANCH`. When pip fails it prints pip's whole output and
    :data:`INSTALL_HELP` (what to do), then raises. Elsewhere it does nothing."""
    extra = cfg.EXTRAS.get(_rel(py_path)) if py_path is not None else None
    url = f"git+https://github.com/{cfg.REPO}.git@{cfg.BRANCH}"
    extras = f"[{extra}]" if extra else ""
    lines = [
        "# Colab: install physml (and what Colab lacks); elsewhere nothing happens.",
        "import sys",
        "",
        f'PHYSML_INSTALL = "physml{extras} @ {url}"',
        f'HELP = """{INSTALL_HELP}"""',
        "",
        "",
        "def install_physml():",
        '    """pip-install physml: an uploaded physml-*.whl first, else PHYSML_INSTALL."""',
        "    import glob",
        "    import os",
        "    import subprocess",
        "",
        '    wheels = sorted(glob.glob("physml-*.whl"))',
        "    target = PHYSML_INSTALL",
        "    if wheels:",
        f'        target = f"physml{extras} @ file://{{os.path.abspath(wheels[-1])}}"',
        '    run = [sys.executable, "-m", "pip", "install", target]',
        "    done = subprocess.run(run, capture_output=True, text=True)",
        "    if done.returncode != 0:",
        "        print(done.stdout + done.stderr, file=sys.stderr)",
        "        raise RuntimeError(HELP.format(target=target))",
        '    print(f"physml installed from {target}")',
        "",
        "",
        'if "google.colab" in sys.modules:',
        "    install_physml()",
    ]
    return "\n".join(lines)


def _is_setup_cell(cell) -> bool:
    return cell.cell_type == "code" and cell.source.startswith(cfg.SETUP_MARKER)


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
    elif cfg.IGNORE_OUTPUT_TAG not in code[0].metadata.get("tags", []):
        problems.append(f"the setup cell is not tagged {cfg.IGNORE_OUTPUT_TAG}")
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
    setup.metadata["tags"] = [cfg.IGNORE_OUTPUT_TAG]
    code_idx = [i for i, c in enumerate(cells) if c.cell_type == "code"]
    if code_idx and _is_setup_cell(cells[code_idx[0]]):
        old = cells[code_idx[0]]
        old.source = setup.source
        tags = old.metadata.setdefault("tags", [])
        if cfg.IGNORE_OUTPUT_TAG not in tags:
            tags.append(cfg.IGNORE_OUTPUT_TAG)
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
