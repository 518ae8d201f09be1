"""Sphinx configuration of the course website: plain Sphinx with myst-nb and
sphinx-book-theme, built from the notebooks' committed outputs (nothing is executed).

From the repository's root (the source directory is the root, this file's folder the
configuration directory, so that the pages are the ``.ipynb`` files where they lie)::

    python -m sphinx -W --keep-going -c docs . build/site                      # students
    python -m sphinx -W --keep-going -c docs -t instructors . build/site-instructors

The README's course text comes in through ``% readme:`` lines (``docs/_ext/physml_docs.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
# autodoc describes the physml of this checkout, whichever copy is installed
sys.path.insert(0, str(DOCS.parent / "course"))

import physml  # noqa: E402

project = "physml"
html_title = "Lecture 14: Graph Neural Networks"
author = "physml course"
copyright = "physml course authors"  # noqa: A001
release = version = physml.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax 3 copied into _static: pages render offline
    "physml_docs",
]

# ---------------------------------------------------------------- sources
INSTRUCTORS = tags.has("instructors")  # noqa: F821 (Sphinx gives conf.py its tags)
root_doc = "docs/index"
include_patterns = ["docs/**", "lecture14_gnn/*.ipynb"]
if INSTRUCTORS:
    include_patterns.append("solutions/*.ipynb")
# folders never searched for sources (the include patterns decide; these keep the walk short)
exclude_patterns = [
    ".*",
    "build",
    "dist",
    "runs",
    "lightning_logs",
    "course",
    "tests",
    "benchmarks",
    "tools",
    "**/.ipynb_checkpoints",
    "docs/_ext",
]
# a static host serves index.html at the root: it forwards to the landing page
html_extra_path = ["_root"]

# ---------------------------------------------------------------- notebooks (myst-nb)
nb_execution_mode = "off"  # the committed outputs are the content
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

# ---------------------------------------------------------------- API reference (autodoc)
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# a method without a docstring of its own is left out rather than showing its base class's
# (nn.Module.forward, LightningModule.configure_optimizers)
autodoc_inherit_docstrings = False
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
maximum_signature_line_length = 88  # long signatures break into one argument a line

# ---------------------------------------------------------------- HTML
html_theme = "sphinx_book_theme"
html_static_path = ["_static"]
html_css_files = ["physml.css"]
# the theme's colour mode before a reader picks one (its script logs an error without it)
html_context = {"default_mode": "light"}
html_favicon = "_assets/favicon.svg"
html_theme_options = {
    "home_page_in_toc": True,
    "show_toc_level": 2,
    "use_download_button": True,
    "use_fullscreen_button": False,
    "navigation_with_keys": False,
}
html_last_updated_fmt = None
