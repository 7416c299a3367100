"""Check the built documentation site in a real headless browser, on 127.0.0.1 only.

Serves ``docs/_build/html`` with Python's ``http.server`` on a free loopback port (a thread of
this process, shut down at the end) and checks, as a reader would see it:

1. **No broken internal link.** Every page of the site (every ``.html`` file built, plus every
   page reached from the index) is fetched from the server; every ``href`` and ``src`` in it that
   stays on the site must answer 200, and every ``#fragment`` must name an element ``id`` (or an
   ``<a name>``) of its target page. External links are not followed (the check is offline).
2. **Headless Chromium** (Debian's ``chromium`` and ``chromium-driver``, driven by selenium; its
   host resolver maps every name but 127.0.0.1 to nothing, so no request leaves the machine)
   loads the index, an API page and every notebook page, and finds no error in the browser's
   console (a JavaScript exception or a resource that failed to load).
3. Each notebook page shows its figures: at least one ``<img>`` in the cells' outputs, every one
   decoded (``naturalWidth > 0``); pages with equations show them typeset by MathJax.
4. Optionally saves a screenshot of a notebook page (``--screenshot PATH``).

Usage (after ``python -m sphinx -W --keep-going -b html docs docs/_build/html``)::

    python docs/check_site.py [--site docs/_build/html] [--screenshot shot.png]

Exits 1 with one line per problem, 0 with a summary line. Bounded: at most ``--max-pages``
pages and ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

HERE = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
API_PAGE = "api/generated/vaeflows.transforms.posterior_flow.html"
LINK_ATTRS = {("a", "href"), ("link", "href"), ("img", "src"), ("script", "src"), ("iframe", "src")}


class _Page(HTMLParser):
    """The ids and the (tag, attribute, url) links of one HTML page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids: Set[str] = set()
        self.links: List[Tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("name"):
            self.ids.add(attrs["name"])
        for name, value in attrs.items():
            if (tag, name) in LINK_ATTRS and value:
                self.links.append((f"<{tag} {name}>", value))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


class Server:
    """``http.server`` on 127.0.0.1 and a free port, serving ``root`` from a thread."""

    def __init__(self, root: Path):
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "Server":
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


def _fetch(url: str) -> Tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read(), response.headers.get_content_type()
    except urllib.error.HTTPError as error:
        return error.code, b"", ""


def check_links(base: str, site: Path, max_pages: int, deadline: float) -> Tuple[List[str], int, int]:
    """Crawl every page; return (problems, pages checked, links checked)."""
    problems: List[str] = []
    pages: Dict[str, Optional[Set[str]]] = {}  # page url -> its ids (None: not HTML or missing)
    todo = [urllib.parse.urljoin(base, p.relative_to(site).as_posix()) for p in sorted(site.rglob("*.html"))]
    todo.insert(0, base + "index.html")
    seen = set(todo)
    wanted: List[Tuple[str, str, str, str]] = []  # (from page, what, target url, fragment)
    links = 0

    def load(url: str) -> Optional[Set[str]]:
        if url not in pages:
            status, body, kind = _fetch(url)
            if status != 200:
                pages[url] = None
                return None
            if kind != "text/html":
                pages[url] = set()
                return pages[url]
            parser = _Page()
            parser.feed(body.decode("utf-8", "replace"))
            pages[url] = parser.ids
            for what, href in parser.links:
                target = urllib.parse.urljoin(url, href)
                if not target.startswith(base):
                    continue  # another site (not followed: offline), mailto:, javascript:, data:
                target, _, fragment = target.partition("#")
                wanted.append((url, what, target, urllib.parse.unquote(fragment)))
                if target.endswith(".html") and target not in seen:
                    seen.add(target)
                    todo.append(target)
        return pages[url]

    while todo:
        if len(pages) >= max_pages or time.monotonic() > deadline:
            problems.append(f"link check stopped after {len(pages)} pages (limit {max_pages} or time)")
            break
        load(todo.pop(0))  # a missing page is reported where a link points to it
    for source, what, target, fragment in wanted:
        links += 1
        ids = load(target)  # fetched once: images, stylesheets and scripts too
        if ids is None:
            problems.append(f"broken link: {source[len(base) :]} {what} -> {target[len(base) :]} (not found)")
        elif fragment and target.endswith(".html") and fragment not in ids:
            problems.append(f"broken anchor: {source[len(base) :]} {what} -> {target[len(base) :]}#{fragment}")
    return problems, len(pages), links


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1600",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        # Every host name but the loopback server resolves to nothing: nothing leaves the machine.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: selenium then never tries to download one (Selenium Manager).
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


_IMAGES = "Array.from(document.querySelectorAll('.cell_output img, .output img'))"
_IMAGES_DONE = f"return {_IMAGES}.every(x => x.complete);"
_IMAGES_STATE = f"return {_IMAGES}.map(x => [x.getAttribute('src'), x.complete, x.naturalWidth]);"


def _wait(driver, script: str, timeout: float = 20.0):
    end = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script)
        if value or time.monotonic() > end:
            return value
        time.sleep(0.2)


def check_in_browser(base: str, site: Path, screenshot: Optional[Path]) -> Tuple[List[str], List[str]]:
    """Load the index, an API page and every notebook page in Chromium; return (problems, notes)."""
    problems: List[str] = []
    notes: List[str] = []
    notebooks = sorted(p.relative_to(site).as_posix() for p in (site / "notebooks").glob("*.html"))
    if not notebooks:
        problems.append("no notebook page under notebooks/")
    driver = _browser()
    try:
        driver.set_page_load_timeout(30)
        driver.set_script_timeout(30)
        for page in ["index.html", API_PAGE] + notebooks:
            driver.get(base + page)
            _wait(driver, "return document.readyState === 'complete'")
            title = driver.title
            if page == "index.html" and "vaeflows" not in title:
                problems.append(f"index.html: title {title!r} does not name vaeflows")
            if page == API_PAGE and not driver.execute_script("return document.querySelectorAll('dl.py').length"):
                problems.append(f"{page}: no API entry (dl.py) on the page")
            if page in notebooks:
                _wait(driver, _IMAGES_DONE)
                images = driver.execute_script(_IMAGES_STATE)
                broken = [src for src, complete, width in images if not (complete and width > 0)]
                if not images:
                    problems.append(f"{page}: no figure in the notebook's outputs")
                for src in broken:
                    problems.append(f"{page}: figure {src} did not load (naturalWidth 0)")
                math = driver.execute_script("return document.querySelectorAll('.math').length")
                if math:
                    typeset = _wait(driver, "return document.querySelectorAll('mjx-container').length")
                    if not typeset:
                        problems.append(f"{page}: {math} equations, none typeset by MathJax")
                notes.append(f"{page}: {len(images)} figures, {math} equations")
                if screenshot is not None and page == notebooks[0]:
                    height = driver.execute_script("return document.documentElement.scrollHeight")
                    driver.set_window_size(1280, min(int(height), 6000))
                    driver.save_screenshot(str(screenshot))
                    driver.set_window_size(1280, 1600)
            for entry in driver.get_log("browser"):
                # Chromium asks every site for /favicon.ico on its own; this site has none.
                if entry.get("level") == "SEVERE" and not entry.get("message", "").startswith(base + "favicon.ico"):
                    problems.append(f"{page}: browser console: {entry.get('message')}")
    finally:
        driver.quit()
    return problems, notes


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, default=HERE / "_build" / "html", help="the built site")
    parser.add_argument("--screenshot", type=Path, help="save a screenshot of the first notebook page here")
    parser.add_argument("--max-pages", type=int, default=3000, help="stop the link check after this many pages")
    parser.add_argument("--timeout", type=float, default=300, help="seconds for the link check")
    args = parser.parse_args(argv)
    site = args.site.resolve()
    if not (site / "index.html").is_file():
        print(f"check_site: no {site / 'index.html'}: build the site first (docs/README.md)", file=sys.stderr)
        return 2
    start = time.monotonic()
    with Server(site) as server:
        problems, num_pages, num_links = check_links(server.base, site, args.max_pages, start + args.timeout)
        browser_problems, notes = check_in_browser(server.base, site, args.screenshot)
    problems += browser_problems
    for note in notes:
        print(note)
    for problem in problems:
        print(problem, file=sys.stderr)
    seconds = time.monotonic() - start
    if problems:
        counts = f"{num_pages} pages, {num_links} links, {seconds:.0f} s"
        print(f"check_site: {len(problems)} problems ({counts})", file=sys.stderr)
        return 1
    print(
        f"check_site: ok: {num_pages} pages, {num_links} internal links and anchors, "
        f"{len(notes)} notebook pages with figures in Chromium ({seconds:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
