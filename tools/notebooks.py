"""Maintenance of the course notebooks (jupytext pairs: ``.py`` percent format + ``.ipynb``).

Usage, from the repository root::

    python tools/notebooks.py sync                    # badge + setup cell of every notebook
    python tools/notebooks.py students                # regenerate the student versions
    python tools/notebooks.py execute [--full] [NB]   # run notebooks, outputs into the .ipynb
    python tools/notebooks.py tidy [NB]               # clean committed outputs, no run
    python tools/notebooks.py check                   # exit 1 if anything above is stale

* **Badge and setup cell.** Every notebook opens with a markdown cell (title, then an "Open
  in Colab" badge pointing at its own ``.ipynb``) and a code cell that installs physml when
  run in Colab and does nothing elsewhere. Both are rendered from :data:`nbconfig.REPO` and
  :data:`nbconfig.BRANCH`, the one place a maintainer edits before publishing; ``sync`` rewrites
  them in every notebook (``.py`` and ``.ipynb``, outputs kept).
* **Student versions** are generated from the solutions (:data:`nbconfig.STUDENT_VERSIONS`): cells
  tagged ``solution`` are dropped; in code cells the lines from ``# SOLUTION START`` to
  ``# SOLUTION END`` are replaced by the region's ``# TODO ...`` lines and its
  ``# STUDENT: code`` lines uncommented (a stub that still runs); a title ending in
  `` — solution`` loses that suffix.
* **Execution** runs each notebook top to bottom with nbclient in a kernel of this
  interpreter, in the notebook's directory, with ``PHYSML_FAST=1`` unless ``--full``; the
  committed ``.ipynb`` then carries the outputs that ``pytest --nbval`` compares against
  (progress-bar rewrites collapsed to their last state).

One module per job, next to this file: ``nbconfig`` (REPO, BRANCH, the notebook lists:
what a maintainer edits), ``nbpairs`` (files and pairs), ``nbheader`` (badge and setup
cell), ``nbstudents`` (student versions), ``nbexecute`` (execution). This file is the
command line and the check that CI runs; it re-exports the modules' functions.

Notebooks are the ``.py`` files with ``# %%`` cells under :data:`nbconfig.NOTEBOOK_DIRS`. The
``.py`` is the source: edit it, then ``jupytext --sync`` (or ``execute``) updates the
``.ipynb``. Notebooks use no IPython magics, so the ``.py`` is plain Python (ruff checks it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the job modules next to this file

import nbconfig  # noqa: E402
from nbconfig import (  # noqa: E402, F401
    BRANCH,
    EXTRAS,
    IGNORE_OUTPUT_TAG,
    KERNELSPEC,
    NOTEBOOK_DIRS,
    REPO,
    ROOT,
    SETUP_MARKER,
    SOLUTION_SUFFIX,
    SOLUTION_TAG,
    STUDENT_VERSIONS,
    TEXT_FORMAT,
)
from nbexecute import _collapse_cr, drop_noise, execute, tidy, tidy_streams  # noqa: E402, F401
from nbheader import (  # noqa: E402, F401
    apply_header,
    badge,
    colab_url,
    header_problems,
    setup_cell_source,
    sync,
)
from nbpairs import (  # noqa: E402, F401
    _config,
    _rel,
    notebook_paths,
    output_problems,
    pair_problems,
    py_text,
    read_py,
    roundoff_figures,
    roundoff_problems,
    write_pair,
)
from nbstudents import make_student, strip_solutions, student_text, students  # noqa: E402, F401


def check() -> list[str]:
    """Every problem: stale badge / setup cell, unsynced pair, round-off digits in a compared
    output, stale student version."""
    problems = []
    for py in notebook_paths():
        rel = _rel(py)
        problems += [f"{rel}: {p}" for p in header_problems(read_py(py), py)]
        problems += [f"{rel}: {p}" for p in pair_problems(py)]
        problems += [f"{rel}: {p}" for p in roundoff_problems(py)]
    for sol, stu in nbconfig.STUDENT_VERSIONS.items():
        path = nbconfig.ROOT / stu
        if not path.exists() or student_text(nbconfig.ROOT / sol) != path.read_text(
            encoding="utf-8"
        ):
            problems.append(f"{stu}: out of date with {sol} (run tools/notebooks.py students)")
    return problems


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
            raise SystemExit(
                f"{p}: not a notebook (a .py with # %% cells under {nbconfig.NOTEBOOK_DIRS})"
            )
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
    td = sub.add_parser("tidy", help="drop noise from the committed outputs (no run)")
    td.add_argument("paths", nargs="*", help="notebooks (.py / .ipynb) or folders; default: all")
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
    elif args.command == "tidy":
        for p in _resolve(args.paths):
            if tidy(p):
                print(f"tidied {_rel(p)}")
    elif args.command == "check":
        problems = check()
        for p in problems:
            print(p)
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
