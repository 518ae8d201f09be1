"""Checks of the built course website (``python -m sphinx ... -c docs . build/site``).

Usage, from the repository root::

    python tools/site_check.py build/site                         # links + every page in Chromium
    python tools/site_check.py build/site --screenshots DIR       # and keep the screenshots
    python tools/site_check.py build/site --links-only            # no browser

* **Links** (no browser): every ``href`` / ``src`` of every page that stays inside the site
  must name a file of the site, and its ``#anchor`` an ``id`` of that page.
* **Browser**: every page is opened in headless Chromium (Debian's ``chromium`` and
  ``chromium-driver``, driven by selenium), served from 127.0.0.1, at a desktop (1280 x 900)
  and a phone (390 x 844) viewport. A page fails on: an image that did not load; a
  JavaScript error or a console error; a request to another host (the site must work
  offline); LaTeX that MathJax left unrendered (``\\(``, ``$...$``, a math element without
  MathJax output, or a MathJax error); a page wider than the phone's viewport.

Each problem is one line naming the page (and viewport); the exit status is 1 if there is
any. Screenshots are of the viewport at the top of each page (``--full-page``: the whole
page, up to 16000 px high).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import shutil
import sys
import tempfile
import threading
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: Chromium's flags: headless, no sandbox (root in a container), and no traffic of its own
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
#: name -> (width, height, mobile) in CSS pixels
VIEWPORTS = {"desktop": (1280, 900, False), "phone": (390, 844, True)}
#: folders of a Sphinx build that hold assets, not pages
ASSET_DIRS = ("_static", "_sources", "_images", "_downloads", ".doctrees")
MAX_SCREENSHOT_HEIGHT = 16000
PAGE_TIMEOUT_S = 30


def site_pages(site: Path) -> list[Path]:
    """The HTML pages of a built site, relative to it (assets folders left out)."""
    return sorted(
        p.relative_to(site)
        for p in site.rglob("*.html")
        if not set(p.relative_to(site).parts[:-1]) & set(ASSET_DIRS)
    )


# --------------------------------------------------------------------------- links


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.refs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if value is None:
                continue
            if key in ("id", "name") and (key == "id" or tag == "a"):
                self.ids.add(value)
            if key in ("href", "src") and tag in ("a", "img", "link", "script", "iframe"):
                self.refs.append(value)


def _parse(path: Path, cache: dict) -> _Refs:
    if path not in cache:
        cache[path] = _Refs()
        cache[path].feed(path.read_text(encoding="utf-8", errors="replace"))
    return cache[path]


def check_links(site: Path) -> list[str]:
    """One line per link inside the site whose file or ``#anchor`` does not exist."""
    site = site.resolve()
    problems, parsed = [], {}
    for page in site_pages(site):
        source = site / page
        for ref in _parse(source, parsed).refs:
            parts = urlsplit(ref)
            if parts.scheme or parts.netloc or ref.startswith("//"):
                continue  # another host (http, mailto, data, javascript): not the site's
            path = unquote(parts.path)
            target = source if not path else (source.parent / path).resolve()
            if path.endswith("/") or target.is_dir():
                target = target / "index.html"
            if site not in target.parents and target != site:
                problems.append(f"{page}: link {ref!r} leaves the site's folder")
            elif not target.is_file():
                problems.append(f"{page}: link {ref!r}: no file {target.relative_to(site)}")
            elif parts.fragment and target.suffix == ".html":
                if unquote(parts.fragment) not in _parse(target, parsed).ids:
                    rel = target.relative_to(site)
                    problems.append(f"{page}: link {ref!r}: {rel} has no id {parts.fragment!r}")
    return problems


# --------------------------------------------------------------------------- browser

# Recorded from the first line of every document on: uncaught errors and rejections.
_ERROR_HOOK = """
window.__siteErrors = [];
window.addEventListener('error', e => {
  if (e.target && e.target !== window && (e.target.src || e.target.href)) {
    window.__siteErrors.push('failed to load ' + (e.target.src || e.target.href));
  } else {
    window.__siteErrors.push((e.message || 'error') + ' at ' + e.filename + ':' + e.lineno);
  }
}, true);
window.addEventListener('unhandledrejection', e => {
  window.__siteErrors.push('unhandled rejection: ' + (e.reason && e.reason.message || e.reason));
});
"""

# Waits for the page: images decoded (lazy ones loaded), MathJax done. Async: last argument
# is selenium's callback.
_SETTLE = """
const done = arguments[arguments.length - 1];
const images = Array.from(document.images);
images.forEach(img => { img.loading = 'eager'; });
const loaded = images.map(img => img.complete ? Promise.resolve() :
  new Promise(r => { img.addEventListener('load', r); img.addEventListener('error', r); }));
const math = (window.MathJax && MathJax.startup && MathJax.startup.promise) || Promise.resolve();
Promise.all([...loaded, math]).then(() => done(true), e => done(String(e)));
setTimeout(() => done('timeout'), arguments[0]);
"""

# What a reader would see wrong. Returns a list of problem strings.
_INSPECT = """
const problems = [];
for (const img of document.images) {
  if (!img.complete || img.naturalWidth === 0) {
    problems.push('broken image ' + (img.getAttribute('src') || '(no src)'));
  }
}
const here = location.origin;
for (const entry of performance.getEntriesByType('resource')) {
  if (!entry.name.startsWith(here) && !entry.name.startsWith('data:')) {
    problems.push('request to another host: ' + entry.name);
  }
}
for (const e of (window.__siteErrors || [])) problems.push('JavaScript: ' + e);
if (document.querySelector('mjx-merror, mjx-container [data-mjx-error]')) {
  const bad = document.querySelector('mjx-merror, mjx-container [data-mjx-error]');
  problems.push('MathJax error: ' + (bad.getAttribute('data-mjx-error') || bad.textContent));
}
let untypeset = 0;
for (const m of document.querySelectorAll('.math')) {
  if (!m.querySelector('mjx-container') && m.tagName !== 'MJX-CONTAINER') untypeset += 1;
}
if (untypeset) problems.push(untypeset + ' math elements that MathJax did not render');
const text = document.body.cloneNode(true);
text.querySelectorAll('pre, code, script, style, textarea, mjx-container, .highlight, ' +
  'mjx-assistive-mml').forEach(n => n.remove());
const visible = text.textContent;
const raw = visible.match(/\\\\\\(|\\\\\\[|\\\\begin\\{|\\$\\$|\\$[^$\\n]*[\\\\^_{}][^$\\n]*\\$/);
if (raw) {
  const i = raw.index;
  problems.push('raw LaTeX in the text: "' +
    visible.slice(Math.max(0, i - 30), i + 50).replace(/\\s+/g, ' ') + '"');
}
// the device's width, not window.innerWidth: a phone browser zooms out to fit a wide page,
// which widens innerWidth with it and makes the text unreadably small
const width = document.documentElement.scrollWidth, view = arguments[0];
if (width > view + 1) {
  // the innermost elements that reach past the viewport, outside any scrolling box
  const wide = new Set();
  for (const el of document.body.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.right <= view + 1 || r.width === 0 || r.width >= width - 1 || wide.size >= 3) continue;
    if (Array.from(el.children).some(c => c.getBoundingClientRect().right > view + 1)) continue;
    let scrolls = false;
    for (let p = el.parentElement; p; p = p.parentElement) {
      const o = getComputedStyle(p).overflowX;
      if (o === 'auto' || o === 'scroll' || o === 'hidden') { scrolls = true; break; }
    }
    if (!scrolls) wide.add(el.tagName.toLowerCase() + (typeof el.className === 'string' &&
      el.className.trim() ? '.' + el.className.trim().split(/\\s+/).join('.') : '') +
      ' "' + el.textContent.trim().slice(0, 40) + '"');
  }
  problems.push('page is ' + width + ' px wide at a ' + view + ' px viewport (' +
    (Array.from(wide).join(', ') || 'no single element') + ')');
}
return problems;
"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextmanager
def serve(site: Path):
    """Serves ``site`` on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def browser_missing() -> str | None:
    """Why the browser check cannot run here, or ``None`` when it can."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not Path(path).is_file():
            return f"{path} not found (Debian: apt-get install {package})"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return 'selenium is not installed (pip install -e ".[docs]")'
    return None


@contextmanager
def chromium():
    """A headless Debian Chromium under selenium, with a fresh profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="site-check-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(PAGE_TIMEOUT_S)
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": _ERROR_HOOK})
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _screenshot(driver, path: Path, full_page: bool) -> None:
    if not full_page:
        driver.save_screenshot(str(path))
        return
    import base64

    width, height = driver.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
    )
    clip = {"x": 0, "y": 0, "width": width, "height": min(height, MAX_SCREENSHOT_HEIGHT)}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {"format": "png", "captureBeyondViewport": True, "clip": {**clip, "scale": 1}},
    )
    path.write_bytes(base64.b64decode(shot["data"]))


def check_in_browser(
    site: Path,
    screenshots: Path | None = None,
    full_page: bool = False,
    pages: list[Path] | None = None,
) -> list[str]:
    """Opens every page at every viewport; one line per problem (see the module docstring).

    Args:
        site: the built site's folder (the one holding ``index.html``).
        screenshots: folder for ``<page>--<viewport>.png`` (page path with ``/`` as ``__``),
            or ``None`` for none.
        full_page: screenshot the whole page, not only the viewport.
        pages: pages relative to ``site`` (all of :func:`site_pages` when ``None``).
    """
    site = site.resolve()
    pages = site_pages(site) if pages is None else pages
    if screenshots is not None:
        screenshots.mkdir(parents=True, exist_ok=True)
    problems = []
    with serve(site) as base, chromium() as driver:
        for name, (width, height, mobile) in VIEWPORTS.items():
            driver.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
            )
            for page in pages:
                where = f"{page.as_posix()} ({name}, {width} px)"
                driver.get(base + page.as_posix())
                settled = driver.execute_async_script(_SETTLE, PAGE_TIMEOUT_S * 1000)
                if settled is not True:
                    problems.append(f"{where}: page did not settle: {settled}")
                found = driver.execute_script(_INSPECT, width)
                for entry in driver.get_log("browser"):
                    if entry.get("level") == "SEVERE":
                        found.append(f"console: {entry.get('message', '')[:300]}")
                problems += [f"{where}: {p}" for p in dict.fromkeys(found)]
                if screenshots is not None:
                    stem = page.with_suffix("").as_posix().replace("/", "__")
                    _screenshot(driver, screenshots / f"{stem}--{name}.png", full_page)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", type=Path, help="the built site (holds index.html)")
    parser.add_argument("--screenshots", type=Path, help="folder for the screenshots")
    parser.add_argument("--full-page", action="store_true", help="screenshot whole pages")
    parser.add_argument("--links-only", action="store_true", help="no browser")
    parser.add_argument("--page", action="append", help="only this page (repeatable)")
    args = parser.parse_args(argv)
    if not (args.site / "index.html").is_file():
        parser.error(f"site: {args.site} has no index.html (build the site first)")
    pages = None
    if args.page:
        pages = [Path(p) for p in args.page]
        missing = [p for p in pages if not (args.site / p).is_file()]
        if missing:
            parser.error(f"--page: {', '.join(map(str, missing))} not in {args.site}")
    problems = check_links(args.site)
    checked = f"{len(site_pages(args.site))} pages' links"
    if not args.links_only:
        why = browser_missing()
        if why:
            print(f"site_check: cannot run the browser check: {why}", file=sys.stderr)
            return 2
        problems += check_in_browser(args.site, args.screenshots, args.full_page, pages)
        checked += f", {len(pages or site_pages(args.site))} pages x {len(VIEWPORTS)} viewports"
    for line in problems:
        print(line)
    print(f"site_check: {checked}: {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
