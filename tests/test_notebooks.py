"""The notebooks as files: every .py / .ipynb pair in sync, every badge and setup cell
rendered from tools/notebooks.py's REPO and BRANCH, the student versions generated from the
current solutions, outputs stored. (Running them is `pytest --nbval`'s job.)"""

import ast
import importlib.util
import re
import sys
import types
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("notebooks_tool", ROOT / "tools" / "notebooks.py")
nbtool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nbtool)

NOTEBOOKS = nbtool.notebook_paths()
IDS = [p.relative_to(ROOT).as_posix() for p in NOTEBOOKS]
STUDENTS = sorted(nbtool.STUDENT_VERSIONS)


def test_the_notebooks_are_found():
    found = set(IDS)
    for solution, student in nbtool.STUDENT_VERSIONS.items():
        assert solution in found and student in found
    # pytest collects test_*.py files: no notebook may look like one
    assert not [p for p in NOTEBOOKS if p.name.startswith("test_") or p.stem.endswith("_test")]


def test_jupytext_config_pairs_ipynb_with_percent_scripts():
    config = nbtool._config()
    formats = config.formats if isinstance(config.formats, str) else ",".join(config.formats)
    assert formats == "ipynb,py:percent"
    assert "tags" in config.cell_metadata_filter  # nbval and the generator read the tags


@pytest.mark.parametrize("py", NOTEBOOKS, ids=IDS)
def test_pair_in_sync(py):
    problems = nbtool.pair_problems(py)
    assert not problems, f"{py.name}: {problems}; run `jupytext --sync {py.name}`"


@pytest.mark.parametrize("py", NOTEBOOKS, ids=IDS)
def test_badge_and_setup_cell_up_to_date(py):
    problems = nbtool.header_problems(nbtool.read_py(py), py)
    assert not problems, f"{py.name}: {problems}; run `python tools/notebooks.py sync`"


@pytest.mark.parametrize("py", NOTEBOOKS, ids=IDS)
def test_ipynb_carries_outputs(py):
    problems = nbtool.output_problems(py)
    assert not problems, f"{py.name}: {problems}"


@pytest.mark.parametrize("solution", STUDENTS)
def test_student_version_up_to_date(solution):
    student = ROOT / nbtool.STUDENT_VERSIONS[solution]
    expected = nbtool.student_text(ROOT / solution)
    assert student.read_text(encoding="utf-8") == expected, (
        f"{student.name} is out of date with {solution}: run `python tools/notebooks.py "
        "students`, then `execute` it"
    )


@pytest.mark.parametrize("solution", STUDENTS)
def test_student_version_holds_no_solution(solution):
    student = ROOT / nbtool.STUDENT_VERSIONS[solution]
    text = student.read_text(encoding="utf-8")
    assert "SOLUTION" not in text and "# STUDENT:" not in text
    nb = nbformat.read(str(student.with_suffix(".ipynb")), as_version=4)
    assert not [c for c in nb.cells if nbtool.SOLUTION_TAG in c.metadata.get("tags", [])]
    assert "task2_models" not in text  # the solution module is not given to students
    solution_nb = nbtool.read_py(ROOT / solution)
    assert len(nb.cells) < len(solution_nb.cells)  # the solution cells are gone


# --------------------------------------------------------------------------- the tool


def test_strip_solutions_keeps_todos_and_uncomments_the_stub():
    source = "\n".join(
        [
            "def f(x):",
            '    """Doc."""',
            "    # SOLUTION START",
            "    # TODO: square x",
            "    # STUDENT: return None",
            "    # a comment of the solution",
            "    return x * x",
            "    # SOLUTION END",
            "",
            "y = f(2)",
        ]
    )
    out = nbtool.strip_solutions(source)
    assert out == "\n".join(
        ["def f(x):", '    """Doc."""', "    # TODO: square x", "    return None", "", "y = f(2)"]
    )
    ast.parse(out)


@pytest.mark.parametrize(
    "source",
    [
        "# SOLUTION START\nx = 1",
        "x = 1\n# SOLUTION END",
        "# SOLUTION START\n# SOLUTION START\n# SOLUTION END",
    ],
)
def test_strip_solutions_rejects_unbalanced_markers(source):
    with pytest.raises(ValueError, match="SOLUTION"):
        nbtool.strip_solutions(source)


def _notebook(*cells):
    return nbformat.v4.new_notebook(cells=list(cells))


def test_make_student_drops_solution_cells_and_retargets_the_header():
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    solution_py = nbtool.ROOT / "solutions" / "99_example.py"
    student_py = nbtool.ROOT / "lecture14_gnn" / "99_example.py"
    answer = md("The answer.")
    answer.metadata["tags"] = ["solution"]
    solution = nbtool.apply_header(
        _notebook(
            md("# Example" + nbtool.SOLUTION_SUFFIX + "\n\nText."),
            answer,
            code("x = 1\n# SOLUTION START\n# STUDENT: y = None\ny = x + 1\n# SOLUTION END"),
        ),
        solution_py,
    )
    assert "blob/main/solutions/99_example.ipynb" in solution.cells[0].source
    student = nbtool.make_student(solution, student_py)
    sources = [c.source for c in student.cells]
    assert sources[0].startswith("# Example\n\n[![Open In Colab]")
    assert "blob/main/lecture14_gnn/99_example.ipynb" in sources[0]
    assert sources[1] == nbtool.setup_cell_source(student_py)
    assert sources[2:] == ["x = 1\ny = None"]
    assert not nbtool.header_problems(student, student_py)


def test_apply_header_inserts_then_replaces(monkeypatch):
    py = nbtool.ROOT / "lecture14_gnn" / "99_example.py"
    nb = _notebook(nbformat.v4.new_markdown_cell("# Title\n\nText."))
    first = nbtool.apply_header(nb, py)
    assert [c.cell_type for c in first.cells] == ["markdown", "code"]
    assert nbtool.apply_header(first, py).cells == first.cells  # idempotent
    monkeypatch.setattr(nbtool.nbconfig, "REPO", "someone/fork")
    monkeypatch.setattr(nbtool.nbconfig, "BRANCH", "dev")
    assert nbtool.header_problems(first, py)  # stale once REPO / BRANCH change
    second = nbtool.apply_header(first, py)
    assert len(second.cells) == 2 and not nbtool.header_problems(second, py)
    assert "github/someone/fork/blob/dev/lecture14_gnn/99_example.ipynb" in second.cells[0].source
    assert "git+https://github.com/someone/fork.git@dev" in second.cells[1].source


@pytest.mark.parametrize("extra", [False, True])
def test_setup_cell_is_plain_python_that_does_nothing_outside_colab(extra):
    py = "lecture14_gnn/05_differentiable_simulation.py" if extra else "lecture14_gnn/03_x.py"
    source = nbtool.setup_cell_source(nbtool.ROOT / py)
    ast.parse(source)  # no IPython magics: the .py side stays valid Python
    assert source.startswith(nbtool.SETUP_MARKER)
    assert f"git+https://github.com/{nbtool.REPO}.git@{nbtool.BRANCH}" in source
    assert "raw.githubusercontent.com" not in source  # nothing but physml is downloaded
    namespace = {}
    exec(compile(source, "setup", "exec"), namespace)  # not in Colab: installs nothing
    assert namespace["PHYSML_INSTALL"].endswith(f"@{nbtool.BRANCH}")
    assert namespace["PHYSML_INSTALL"].startswith("physml[supplements] @" if extra else "physml @")


def test_no_notebook_downloads_solution_code():
    """Publishing the notebooks must not require publishing the solutions' modules."""
    for py in NOTEBOOKS:
        assert "urlretrieve" not in py.read_text(encoding="utf-8"), py.name


def test_setup_cell_in_colab_prefers_an_uploaded_wheel_and_explains_a_failure(
    tmp_path, monkeypatch, capsys
):
    """In (a fake) Colab, an uploaded physml-*.whl is installed (with the notebook's extra);
    when pip fails, its whole output is shown and then what to do. No network: the wheel
    is broken, pip is told to use no index and to do a dry run."""
    source = nbtool.setup_cell_source(nbtool.ROOT / "lecture14_gnn/06_neural_physical_engine.py")
    (tmp_path / "physml-0.0.1-py3-none-any.whl").write_bytes(b"not a zip file")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_DRY_RUN", "1")
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    with pytest.raises(RuntimeError) as err:
        exec(compile(source, "setup", "exec"), {})
    message = str(err.value)
    wheel = f"physml[supplements] @ file://{tmp_path / 'physml-0.0.1-py3-none-any.whl'}"
    assert message.startswith(f"physml could not be installed from {wheel} (pip's output")
    assert "tools/nbconfig.py" in message and "python tools/notebooks.py sync" in message
    assert "pip wheel . --no-deps -w dist" in message and "upload dist/physml-*.whl" in message
    pip_said = capsys.readouterr().err
    assert "ERROR" in pip_said  # pip's own message, in full, before the advice


def test_execute_runs_a_notebook_with_nbclient_and_tidies_progress_bars(tmp_path):
    """execute: outputs written into the .ipynb, progress-bar rewrites collapsed, chunks of
    one stream merged, PHYSML_FAST=1 set in fast mode; a failing cell leaves the .ipynb as
    it was and names the cell."""
    py = tmp_path / "toy.py"
    py.write_text(
        "# %% [markdown]\n# # Toy\n\n"
        "# %%\nimport os\nimport sys\n"
        "for i in range(3):\n    print(f'\\r{i}/3', end='', flush=True)\n"
        "print('\\rdone')\nprint('more', file=sys.stdout)\n\n"
        "# %%\nos.environ.get('PHYSML_FAST')\n",
        encoding="utf-8",
    )
    nbtool.execute(py)
    nb = nbformat.read(str(py.with_suffix(".ipynb")), as_version=4)
    stream, fast = nb.cells[1].outputs, nb.cells[2].outputs
    assert len(stream) == 1 and stream[0].text == "done\nmore\n"
    assert fast[0].data["text/plain"] == "'1'" and nb.cells[2].execution_count == 2
    before = py.with_suffix(".ipynb").read_bytes()
    py.write_text(py.read_text(encoding="utf-8") + "\n# %%\n1 / 0\n", encoding="utf-8")
    with pytest.raises(RuntimeError, match="cell 3 failed"):
        nbtool.execute(py)
    assert py.with_suffix(".ipynb").read_bytes() == before


# --------------------------------------------------------------------------- output hygiene

#: most characters one committed stream output may hold (a wall of progress-bar frames is
#: far longer)
MAX_STREAM_CHARS = 8000
_MACHINE_PATH = re.compile(r"(/work/|/root/|/home/|/tmp/|/Users/)")


@pytest.mark.parametrize("py", NOTEBOOKS, ids=IDS)
def test_committed_outputs_are_clean(py):
    """No machine paths, no dependency warnings and no walls of progress bars in what
    students see (``python tools/notebooks.py tidy`` removes them)."""
    nb = nbformat.read(str(py.with_suffix(".ipynb")), as_version=4)
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            text = out.get("text", "") if out.output_type == "stream" else ""
            text += str(out.get("data", {}).get("text/plain", ""))
            assert not _MACHINE_PATH.search(text), f"{py.name} cell {i}: a machine path"
            assert "site-packages" not in text, f"{py.name} cell {i}: a dependency's warning"
            assert len(text) <= MAX_STREAM_CHARS, f"{py.name} cell {i}: {len(text)} characters"


def test_drop_noise_removes_what_students_cannot_act_on():
    raw = (
        "/x/site-packages/tqdm/auto.py:21: TqdmWarning: IProgress not found.\n"
        "  from .autonotebook import tqdm as notebook_tqdm\n"
        "💡 Tip: try installing something\n"
        "Epoch 0: 100%|##| 4/4\n"
        "Validation DataLoader 0: 50%|#| 1/2\x1b[A\n"
        "Epoch 0: 100%|##| 4/4, val_loss=1.0\n"
        "Epoch 1: 100%|##| 4/4, val_loss=0.9\n"
        "          \n"
        "2 epochs in 3 s\n"
    )
    assert nbtool.drop_noise(raw) == (
        "Epoch 0: 100%|##| 4/4, val_loss=1.0\n"
        "Epoch 1: 100%|##| 4/4, val_loss=0.9\n"
        "2 epochs in 3 s\n"
    )


# --------------------------------------------------------------------------- round-off


@pytest.mark.parametrize("py", NOTEBOOKS, ids=IDS)
def test_compared_outputs_print_no_roundoff_digits(py):
    """nbval compares these outputs digit for digit: a figure of round-off size (a
    difference at machine precision) changes with the BLAS kernels, threads and load."""
    problems = nbtool.roundoff_problems(py)
    assert not problems, f"{py.name}: {problems}"


def test_roundoff_check_finds_machine_precision_figures(tmp_path):
    def code(text, tags=()):
        cell = nbformat.v4.new_code_cell("print()", execution_count=1)
        cell.metadata["tags"] = list(tags)
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
        return cell

    cells = [
        code("layer 0: |log det - log|det J|| = 1.4e-14\n"),  # round-off: found
        code("largest relative difference: 0.0e+00\n"),  # a vanishing difference: found
        code("relative difference 6.7e-16\n", tags=[nbtool.IGNORE_OUTPUT_TAG]),  # ignored
        code("error < 1e-10: ok; max change 0.0; epsilon 7.46 %; lr 1e-3; 4.2e-9\n"),
        code("took 3e-11 s\n"),  # sanitized to DURATION before the check
    ]
    nbformat.write(_notebook(*cells), str(tmp_path / "nb.ipynb"))
    problems = nbtool.roundoff_problems(tmp_path / "nb.py")
    assert [p.split(" prints")[0] for p in problems] == ["cell 0", "cell 1"]
    assert "1.4e-14" in problems[0] and "0.0e+00" in problems[1]
    assert nbtool.roundoff_figures("4.2e-9 1e-10 0.0 0 1.0e-11 -2e-12") == ["1.0e-11", "-2e-12"]


def test_drop_noise_collapses_the_epoch_k_of_n_bar():
    raw = (
        "Epoch 3/50, at most 40 s left: 10%|#| 4/44\n"
        "Epoch 3/50, at most 40 s left: 100%|##| 44/44, val_loss=1.0\n"
        "Epoch 4/50, at most 38 s left: 100%|##| 44/44, val_loss=0.9\n"
    )
    assert nbtool.drop_noise(raw) == (
        "Epoch 3/50, at most 40 s left: 100%|##| 44/44, val_loss=1.0\n"
        "Epoch 4/50, at most 38 s left: 100%|##| 44/44, val_loss=0.9\n"
    )
