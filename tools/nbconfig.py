"""Configuration of the notebook tools (:mod:`notebooks`): where the notebooks are
published (:data:`REPO`, :data:`BRANCH`: the one place a maintainer edits before
publishing), where they live, which are generated from which, and the cell tags the tools
and nbval read."""

from __future__ import annotations

from pathlib import Path

#: GitHub repository (owner/name) and branch the notebooks are published from: the Colab
#: badges and the Colab install line point here. Set them, then run ``sync``.
REPO = "physml-course/physml"
BRANCH = "main"

ROOT = Path(__file__).resolve().parents[1]
#: directories (relative to the root) holding notebooks
NOTEBOOK_DIRS = ("lecture14_gnn", "solutions")
#: the supplementary notebooks (names without folder or suffix)
SUPPLEMENTS = (
    "05_differentiable_simulation",
    "06_neural_physical_engine",
    "07_flows_and_posteriors",
    "08_explicit_vs_implicit",
)
#: the lecture notebooks and the Task notebooks (names without folder or suffix)
LECTURES = ("01_graphs_and_message_passing", "02_sigma8_gnn")
TASKS = ("03_task1_invariant_features", "04_task2_open_ended")
#: solution notebook -> generated student notebook (``.py`` paths relative to the root):
#: every notebook has exercises, so every one is generated from its solution
STUDENT_VERSIONS = {
    f"solutions/{name}.py": f"lecture14_gnn/{name}.py" for name in (*LECTURES, *TASKS, *SUPPLEMENTS)
}
#: notebook -> the optional extra of pyproject.toml its Colab setup cell installs with
#: physml (the supplements need libraries that the lecture does not)
EXTRAS = {f"{folder}/{name}.py": "supplements" for folder in NOTEBOOK_DIRS for name in SUPPLEMENTS}

TEXT_FORMAT = "py:percent"
IGNORE_OUTPUT_TAG = "nbval-ignore-output"
SOLUTION_TAG = "solution"
SETUP_MARKER = "# Colab: "
SOLUTION_SUFFIX = " — solution"
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}
