"""Sphinx helpers of the course website (loaded by ``docs/conf.py``).

* **README parts.** A line ``% readme: section="## The course" from="**Instructors**"`` in a
  Markdown page of the site is replaced, before the page is parsed, with that part of
  ``README.md``: the site shows the README's course text and measured figures without a
  second copy that could drift. Keys: ``section`` (the heading line it starts with,
  required), ``from`` / ``until`` (the first line of the paragraph to start at / to stop
  before, inside the section), ``heading`` (``keep``, the default, or ``drop``) and
  ``level`` (the level the section's heading gets; the headings below it move with it).
* **Colab badge.** The notebooks' "Open in Colab" badge is an image on Google's server; the
  site shows a local copy (``docs/_assets/colab-badge.svg``) so that its pages load offline.
* **Solutions.** The line ``% solutions-toctree`` becomes the toctree of ``solutions/`` in the
  instructors' build (``-t instructors``) and a sentence saying where they are otherwise.
* **Bars in docstrings.** physml's docstrings write ``|k|`` for a magnitude and define no RST
  substitutions, so a bar in their running text is a bar: :func:`escape_bars` escapes it
  (outside literals, roles, literal blocks, directives and doctests) before autodoc parses
  the docstring, instead of docutils reading ``|k|`` as an undefined substitution.
  Nothing is suppressed: any other docstring warning fails the build.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from docutils import nodes
from sphinx.util import logging

logger = logging.getLogger(__name__)

COLAB_BADGE_URL = "https://colab.research.google.com/assets/colab-badge.svg"
LOCAL_BADGE = "/docs/_assets/colab-badge.svg"  # relative to the source directory (the root)

_KEYS = {"section", "from", "until", "heading", "level"}
_HEADING = re.compile(r"^(#{1,6}) ")
_FENCE = re.compile(r"^(```|~~~)")
_READMELINE = re.compile(r"^% readme:(.*)$", re.M)


class ReadmeError(ValueError):
    """A ``% readme:`` line that asks for a part README.md does not have."""


def _headings(lines: list[str]) -> list[int | None]:
    """Heading level of each line (``None`` for other lines and inside code fences)."""
    levels: list[int | None] = []
    fenced = False
    for line in lines:
        if _FENCE.match(line):
            fenced = not fenced
        m = None if fenced else _HEADING.match(line)
        levels.append(len(m.group(1)) if m else None)
    return levels


def _paragraph_start(lines: list[str], prefix: str, key: str, section: str) -> int:
    for i, line in enumerate(lines):
        if line.startswith(prefix) and (i == 0 or not lines[i - 1].strip()):
            return i
    raise ReadmeError(
        f'README.md section "{section}" has no paragraph starting with {key}="{prefix}"'
    )


def readme_part(
    text: str,
    section: str,
    start: str | None = None,
    stop: str | None = None,
    heading: str = "keep",
    level: int | None = None,
) -> str:
    """The part of a Markdown document (README.md) that one ``% readme:`` line asks for.

    Args:
        text: the whole Markdown document.
        section: the section's heading line, e.g. ``"## The course"``, or the start of the
            one heading line that starts so; the section runs to the next heading of the
            same or a higher level.
        start: the start of the first line of the paragraph to begin with (the section's
            first line when ``None``).
        stop: the start of the first line of the paragraph to end before (the section's end
            when ``None``).
        heading: ``"keep"`` the section's heading line or ``"drop"`` it (only when ``start``
            is ``None``).
        level: the heading level (1-6) the section's heading gets; every heading of the part
            moves by the same number of levels. ``None`` keeps them.

    Returns:
        The lines of that part, joined with newlines (headings in code fences untouched).

    Raises:
        ReadmeError: the document has no such heading or paragraph, or ``heading`` /
            ``level`` are not one of the values above.
    """
    if heading not in ("keep", "drop"):
        raise ReadmeError(f'heading="{heading}": expected "keep" or "drop"')
    lines = text.splitlines()
    levels = _headings(lines)
    exact = [
        i
        for i, (ln, lv) in enumerate(zip(lines, levels, strict=True))
        if lv and ln.strip() == section
    ]
    starts = [
        i
        for i, (ln, lv) in enumerate(zip(lines, levels, strict=True))
        if lv and ln.startswith(section)
    ]
    if not starts:
        raise ReadmeError(f'README.md has no heading starting with section="{section}"')
    if len(exact) != 1 and len(starts) != 1:
        raise ReadmeError(
            f"README.md has {len(exact) or len(starts)} headings "
            f'{"equal to" if exact else "starting with"} section="{section}": expected one'
        )
    first = exact[0] if len(exact) == 1 else starts[0]
    own = levels[first]
    end = next((j for j in range(first + 1, len(lines)) if levels[j] and levels[j] <= own), None)
    end = len(lines) if end is None else end
    body, body_levels = lines[first:end], levels[first:end]
    begin = 1 if heading == "drop" else 0
    if start is not None:
        begin = _paragraph_start(body, start, "from", section)
    finish = len(body) if stop is None else _paragraph_start(body, stop, "until", section)
    if finish < begin:
        raise ReadmeError(
            f'README.md section "{section}": until="{stop}" comes before from="{start}"'
        )
    shift = 0
    if level is not None:
        if not 1 <= level <= 6:
            raise ReadmeError(f"level={level}: expected a heading level from 1 to 6")
        shift = level - own
    out = []
    for line, lv in zip(body[begin:finish], body_levels[begin:finish], strict=True):
        if lv is not None and shift:
            new = lv + shift
            if not 1 <= new <= 6:
                raise ReadmeError(f'level={level} moves "{line}" out of the levels 1 to 6')
            line = "#" * new + line[lv:]
        out.append(line)
    return "\n".join(out).strip("\n")


def parse_readme_line(args: str) -> dict:
    """The keyword arguments of :func:`readme_part` that one ``% readme:`` line gives."""
    kwargs: dict = {}
    for item in shlex.split(args):
        key, sep, value = item.partition("=")
        if not sep or key not in _KEYS:
            raise ReadmeError(f"{item!r}: expected key=value with a key among {sorted(_KEYS)}")
        kwargs[{"from": "start", "until": "stop"}.get(key, key)] = value
    if "section" not in kwargs:
        raise ReadmeError("section=... is required")
    if "level" in kwargs:
        try:
            kwargs["level"] = int(kwargs["level"])
        except ValueError:
            raise ReadmeError(f'level="{kwargs["level"]}": expected an integer') from None
    return kwargs


def expand_readme_lines(source: str, readme: str) -> str:
    """``source`` with every ``% readme:`` line replaced by the README part it names."""

    def one(match: re.Match) -> str:
        return readme_part(readme, **parse_readme_line(match.group(1)))

    return _READMELINE.sub(one, source)


# inline literals, interpreted text with or without a role, hyperlink targets: left alone
_INLINE = re.compile(r"``.+?``|(?::[\w:.+-]+:)?`[^`]*`_{0,2}", re.S)


def escape_bars(lines: list[str]) -> list[str]:
    """Docstring lines with each ``|`` of the running text escaped as ``\\|``.

    Bars inside inline literals, roles (such as math), literal blocks and directive
    bodies (after a line ending in ``::``) and doctest blocks (``>>>`` up to a blank line)
    are kept as they are.
    """
    keep = [False] * len(lines)
    block_indent = None  # indentation of the line that opened a literal block / directive
    doctest = False
    for i, line in enumerate(lines):
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if block_indent is not None:
            if stripped and indent <= block_indent:
                block_indent = None
            else:
                keep[i] = True
                continue
        if stripped.startswith(">>>"):
            doctest = True
        elif not stripped:
            doctest = False
        keep[i] = doctest
        if stripped.endswith("::") and not doctest:
            block_indent = indent
    out: list[str] = []
    run: list[str] = []  # consecutive lines of running text, parsed together

    def flush() -> None:
        text = "\n".join(run)
        pieces, last = [], 0
        for m in _INLINE.finditer(text):
            pieces.append(text[last : m.start()].replace("|", "\\|"))
            pieces.append(m.group(0))
            last = m.end()
        pieces.append(text[last:].replace("|", "\\|"))
        out.extend("".join(pieces).split("\n"))
        run.clear()

    for line, kept in zip(lines, keep, strict=True):
        if kept:
            if run:
                flush()
            out.append(line)
        else:
            run.append(line)
    if run:
        flush()
    return out


def _escape_docstring(app, what, name, obj, options, lines: list[str]) -> None:
    lines[:] = escape_bars(lines)


def _solutions_block(instructors: bool) -> str:
    if instructors:
        return "```{toctree}\n:maxdepth: 1\n:glob:\n\n/solutions/0*\n```"
    return (
        "The solutions are not part of the students' site. The instructors' build "
        "(`-t instructors`, see {ref}`publishing-the-site`) adds them here."
    )


def _source_read(app, docname: str, source: list[str]) -> None:
    if not app.env.doc2path(docname).suffix == ".md":
        return
    text = source[0]
    if "% readme:" in text:
        readme = (Path(app.confdir).parent / "README.md").read_text(encoding="utf-8")
        try:
            text = expand_readme_lines(text, readme)
        except ReadmeError as err:
            logger.warning("%s", err, location=docname, type="physml", subtype="readme")
    if "% solutions-toctree" in text:
        text = text.replace("% solutions-toctree", _solutions_block(app.tags.has("instructors")))
    source[0] = text


def _local_badge(app, doctree: nodes.document) -> None:
    for image in doctree.findall(nodes.image):
        if image.get("uri") == COLAB_BADGE_URL:
            image["uri"] = LOCAL_BADGE


def setup(app):
    # MathJax on every page, not only on pages with equations: the navigation bar shows
    # titles with math (notebook 02's sigma_8) on every page
    app.set_html_assets_policy("always")
    app.connect("source-read", _source_read)
    # before napoleon (priority 500) reads the Google sections
    # after napoleon has turned Google sections into RST
    app.connect("autodoc-process-docstring", _escape_docstring, priority=600)
    # before Sphinx's image collector (priority 500) records the image's path
    app.connect("doctree-read", _local_badge, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
