"""The course website (docs/): its helpers against docutils itself, a real build of the
students' and the instructors' site with warnings as errors, its links, and every page in
headless Chromium (tools/site_check.py) when Debian's chromium is installed."""

import importlib.util
import json
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


site_check = _load("site_check", ROOT / "tools" / "site_check.py")
NOTEBOOKS = sorted((ROOT / "lecture14_gnn").glob("*.ipynb"))
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))


@pytest.fixture(scope="module")
def ext():
    pytest.importorskip("sphinx", reason='the site needs the docs extra: pip install -e ".[docs]"')
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        yield _load("physml_docs", DOCS / "_ext" / "physml_docs.py")
    finally:
        sys.path.remove(str(DOCS / "_ext"))


# --------------------------------------------------------------------------- README parts

DOC = """# Title

Intro.

## Alpha

First paragraph.

**Second** paragraph,
over two lines.

### Sub

Text.

```bash
# a shell comment, not a heading
```

## Alpha beta

Other.
"""


def test_readme_part_cuts_sections_and_paragraphs(ext):
    part = ext.readme_part
    # "## Alpha" names one heading exactly, though "## Alpha beta" starts the same way
    assert part(DOC, "## Alpha").splitlines()[0] == "## Alpha"
    assert "Other." not in part(DOC, "## Alpha") and "### Sub" in part(DOC, "## Alpha")
    assert part(DOC, "## Alpha beta") == "## Alpha beta\n\nOther."
    assert part(DOC, "## Alpha", heading="drop").startswith("First paragraph.")
    assert part(DOC, "## Alpha", start="**Second**", stop="### Sub") == (
        "**Second** paragraph,\nover two lines."
    )
    assert part(DOC, "# Title", stop="## Alpha") == "# Title\n\nIntro."
    # headings move together; the comment in the code fence is not a heading
    moved = part(DOC, "## Alpha", level=1)
    assert moved.startswith("# Alpha") and "\n## Sub\n" in moved
    assert "# a shell comment, not a heading" in moved.splitlines()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"section": "## Gamma"}, 'no heading starting with section="## Gamma"'),
        ({"section": "## Al"}, 'headings starting with section="## Al": expected one'),
        ({"section": "## Alpha", "start": "Nothing"}, 'no paragraph starting with from="Nothing"'),
        ({"section": "## Alpha", "start": "over two"}, 'from="over two"'),  # not a paragraph
        ({"section": "## Alpha", "level": 6}, "out of the levels 1 to 6"),
        ({"section": "## Alpha", "heading": "hide"}, 'expected "keep" or "drop"'),
    ],
)
def test_readme_part_names_what_is_missing(ext, kwargs, message):
    with pytest.raises(ext.ReadmeError, match=re.escape(message)):
        ext.readme_part(DOC, **kwargs)


def test_readme_lines_parse_and_expand(ext):
    line = '% readme: section="## Alpha" from="**Second**" until="### Sub" level=3'
    assert ext.parse_readme_line(line.split(":", 1)[1]) == {
        "section": "## Alpha",
        "start": "**Second**",
        "stop": "### Sub",
        "level": 3,
    }
    with pytest.raises(ext.ReadmeError, match="key=value"):
        ext.parse_readme_line('sektion="## Alpha"')
    page = "# Page\n\n" + line.replace(" level=3", "") + "\n\nEnd.\n"
    assert ext.expand_readme_lines(page, DOC) == (
        "# Page\n\n**Second** paragraph,\nover two lines.\n\nEnd.\n"
    )


def test_every_readme_line_of_the_site_finds_its_part(ext):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = [m for p in DOCS.rglob("*.md") for m in ext._READMELINE.findall(p.read_text())]
    assert len(lines) >= 8
    for args in lines:
        assert ext.readme_part(readme, **ext.parse_readme_line(args)).strip()


# --------------------------------------------------------------------------- docstrings


def _docutils_render(rst):
    """(text, number of system messages) of an RST fragment, as docutils reads it."""
    from docutils.core import publish_doctree
    from docutils.nodes import system_message

    tree = publish_doctree(rst, settings_overrides={"report_level": 5, "halt_level": 5})
    return tree.astext(), len(list(tree.findall(system_message)))


def test_escape_bars_reads_magnitudes_as_bars(ext):
    lines = [
        "The power at |k| per mode, ``|x|`` and :math:`|k|^2`,",
        "the sum over |delta_k|^2 / lambda_k.",
        "",
        "Example::",
        "",
        "    y = |x|",
        "",
        ">>> abs(-1) | 0",
        "1",
        "",
        "End |k|.",
    ]
    escaped = ext.escape_bars(lines)
    text, errors = _docutils_render("\n".join(escaped))
    assert errors == 0
    assert "at |k| per mode, |x| and" in text and "over |delta_k|^2" in text
    assert "y = |x|" in text and ">>> abs(-1) | 0" in text and "End |k|." in text
    assert "\\" not in text
    # unescaped, docutils reads |k| as a substitution that does not exist
    assert _docutils_render("\n".join(lines))[1] > 0


def test_every_physml_module_has_a_place_in_the_api_reference():
    import physml

    documented = set()
    for page in (DOCS / "api").glob("*.md"):
        documented |= set(re.findall(r"^\.\. automodule:: ([\w.]+)$", page.read_text(), re.M))
    public = {"physml"} | {
        m.name
        for m in pkgutil.walk_packages(physml.__path__, "physml.")
        if not any(part.startswith("_") for part in m.name.split("."))
    }
    assert public - documented == set(), "add these to one of docs/api/*.md"
    assert documented - public == set()


# --------------------------------------------------------------------------- the build


def _build(out: Path, *tags: str) -> Path:
    site = out / "site"
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-c", "docs"]
    cmd += [arg for tag in tags for arg in ("-t", tag)] + [".", str(site)]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, f"{' '.join(cmd)}\n{run.stdout}\n{run.stderr}"
    return site


@pytest.fixture(scope="module")
def site(ext, tmp_path_factory):
    pytest.importorskip("myst_nb", reason='the site needs the docs extra: pip install -e ".[docs]"')
    return _build(tmp_path_factory.mktemp("students"))


def _images(notebook: Path) -> int:
    cells = json.loads(notebook.read_text())["cells"]
    return sum("image/png" in o.get("data", {}) for c in cells for o in c.get("outputs", []))


def test_the_site_has_every_notebook_with_its_figures(site):
    pages = {p.as_posix() for p in site_check.site_pages(site)}
    for nb in NOTEBOOKS:
        page = f"lecture14_gnn/{nb.stem}.html"
        assert page in pages
        html = (site / page).read_text()
        figures = len(re.findall(r'<img [^>]*src="\.\./_images/[0-9a-f]+\.png"', html))
        assert figures == _images(nb), page
    assert {"docs/index.html", "docs/instructors.html", "docs/api/inference.html"} <= pages
    index = (site / "docs" / "index.html").read_text()
    for nb in NOTEBOOKS:  # the landing page's toctrees, supplements included
        assert f'href="../lecture14_gnn/{nb.stem}.html"' in index


def test_the_students_site_has_no_solutions(site):
    assert not (site / "solutions").exists()
    marker = "Notes for instructors."  # a markdown cell of each solution notebook
    assert all(marker in nb.read_text() for nb in SOLUTIONS)
    assert not [p for p in site.rglob("*.html") if marker in p.read_text()]


def test_the_site_loads_nothing_from_elsewhere(site):
    remote = re.compile(r'<(?:script|img|link|iframe)\b[^>]*\b(?:src|href)="(?:https?:)?//')
    for page in site_check.site_pages(site):
        assert not remote.search((site / page).read_text()), page
    assert (site / "_static" / "mathjax" / "tex-chtml.js").is_file()


def test_the_site_links_resolve(site):
    assert site_check.check_links(site) == []


def test_the_instructors_site_has_the_solutions(ext, tmp_path):
    pytest.importorskip("myst_nb", reason='the site needs the docs extra: pip install -e ".[docs]"')
    site = _build(tmp_path, "instructors")
    instructors = (site / "docs" / "instructors.html").read_text()
    for nb in SOLUTIONS:
        assert (site / "solutions" / f"{nb.stem}.html").is_file()
        assert f'href="../solutions/{nb.stem}.html"' in instructors
        assert "Notes for instructors." in (site / "solutions" / f"{nb.stem}.html").read_text()
    assert site_check.check_links(site) == []


# --------------------------------------------------------------------------- browser

BROWSER = site_check.browser_missing()
needs_browser = pytest.mark.skipif(BROWSER is not None, reason=f"browser check not run: {BROWSER}")


def test_the_link_check_finds_missing_pages_and_anchors(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "index.html").write_text(
        '<a href="a/b.html#here">ok</a> <a href="a/b.html#gone">x</a> <a href="nope.html">y</a>'
        ' <a href="https://example.org/">remote: not checked</a> <a id="top" href="#top">z</a>'
    )
    (tmp_path / "a" / "b.html").write_text('<h1 id="here">B</h1><img src="../_images/n.png">')
    assert site_check.check_links(tmp_path) == [
        "a/b.html: link '../_images/n.png': no file _images/n.png",
        "index.html: link 'a/b.html#gone': a/b.html has no id 'gone'",
        "index.html: link 'nope.html': no file nope.html",
    ]


@needs_browser
def test_the_browser_check_finds_what_a_reader_would_see(tmp_path):
    pages = {
        "good.html": "<p>Fine.</p>",
        "image.html": '<img src="missing.png">',
        "script.html": "<script>undefinedFunction()</script>",
        "latex.html": "<p>The mean $x_1$ of the sample.</p>",
        "wide.html": '<div style="width:1000px">wide</div>',
        "remote.html": '<img src="http://localhost:1/x.png">',
    }
    for name, body in pages.items():
        (tmp_path / name).write_text(
            '<!DOCTYPE html><html><head><link rel="icon" href="data:,"><meta name="viewport" '
            f'content="width=device-width, initial-scale=1"></head><body>{body}</body></html>'
        )
    found = site_check.check_in_browser(tmp_path, screenshots=tmp_path / "shots")
    by_page = {name: [p for p in found if p.startswith(name)] for name in pages}
    assert by_page["good.html"] == []
    assert any("broken image missing.png" in p for p in by_page["image.html"])
    assert any("JavaScript: " in p and "undefinedFunction" in p for p in by_page["script.html"])
    assert any('raw LaTeX in the text: "The mean $x_1$' in p for p in by_page["latex.html"])
    wide = [p for p in by_page["wide.html"] if "px wide" in p]
    assert len(wide) == 1 and "(phone, 390 px)" in wide[0] and "div" in wide[0]
    assert any("request to another host: http://localhost:1/x.png" in p for p in found)
    assert len(list((tmp_path / "shots").glob("*.png"))) == 2 * len(pages)


@needs_browser
def test_every_page_passes_the_browser_check(site):
    assert site_check.check_in_browser(site) == []
