"""mkdocs hook: the site renders with no network, and the build fails if it would not.

1. MathJax comes with the site. The docs extra installs ``django-static-mathjax`` from PyPI, a
   copy of MathJax 3 (the ``mathjax`` Python package, MathJax's own ``es5`` build under
   ``mathjax/static/mathjax``; Django is not needed). :func:`on_files` adds its ``tex-mml-chtml``
   component, with the fonts and TeX extensions that component loads at view time, to the site
   under ``assets/mathjax/``, and a configuration for ``pymdownx.arithmatex`` (generic mode:
   ``\\( \\)`` and ``\\[ \\]`` inside ``class="arithmatex"``) as ``assets/mathjax/config.js``.
   ``mkdocs.yml`` lists both in ``extra_javascript``.
2. :func:`on_post_build` reads every built HTML page and fails the build when a page loads
   anything from another host (``<script src>``, ``<link href>`` of a stylesheet, font or icon,
   ``<img src>``, ``url(...)`` in a style; ``http:``, ``https:`` or ``//``), or when a page with
   math has no MathJax script of this site to render it. :func:`site_problems` is the check
   itself, for tests.
"""

from __future__ import annotations

import importlib.util
import re
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

# mkdocs is imported where the build needs it: site_problems, the check, runs without it (tests).

DEST = "assets/mathjax"
COMPONENT = "tex-mml-chtml.js"
CONFIG = "config.js"
# What tex-mml-chtml loads at view time, relative to itself: the CommonHTML fonts, TeX
# extensions on demand (autoload, require), the menu's accessibility and speech modules.
ASSETS = ("output", "input", "ui", "a11y", "sre", "adaptors")
MATHJAX_CONFIG = r"""// By docs/hooks/offline.py: MathJax for pymdownx.arithmatex, generic mode.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
};
"""
INSTALL = 'pip install -e ".[docs]"'


def mathjax_root() -> Path:
    """The ``es5`` folder of the installed MathJax copy; a build error naming the fix if none."""
    from mkdocs.exceptions import PluginError

    spec = importlib.util.find_spec("mathjax")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        root = Path(location) / "static" / "mathjax"
        if (root / "es5" / COMPONENT).is_file():
            return root / "es5"
    raise PluginError(
        "MathJax is not installed: the docs serve their own copy (no CDN). Install the docs "
        f"extra, {INSTALL}, which brings django-static-mathjax from PyPI."
    )


def on_files(files: Any, config: Any, **kwargs: Any) -> Any:
    from mkdocs.structure.files import File

    root = mathjax_root()
    files.append(File.generated(config, f"{DEST}/{CONFIG}", content=MATHJAX_CONFIG))
    files.append(File.generated(config, f"{DEST}/{COMPONENT}", abs_src_path=str(root / COMPONENT)))
    for folder in ASSETS:
        for path in sorted((root / folder).rglob("*")):
            if path.is_file():
                uri = f"{DEST}/{path.relative_to(root).as_posix()}"
                files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


# --- the check ----------------------------------------------------------------------------------

# <link rel> values that only name another document: not loaded to render the page
_NAVIGATION_RELS = {"canonical", "alternate", "prev", "next", "author", "license", "me", "help"}
_CSS_URL = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])\s*(?P<url>[^'")\s]+)""")
_MEDIA = {"img": "src", "iframe": "src", "source": "src", "video": "src", "audio": "src"}


def is_external(url: str) -> bool:
    """Whether loading ``url`` needs the network: another scheme's host or ``//host``."""
    url = url.strip()
    return url.startswith("//") or urlsplit(url).scheme in {"http", "https", "ftp"}


class _Resources(HTMLParser):
    """The URLs a page loads to render (scripts, stylesheets, fonts, images, CSS urls) and
    whether it holds math."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.loads: list[tuple[str, str]] = []  # (what, url)
        self.scripts: list[str] = []
        self.math = False
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {name: value or "" for name, value in attrs}
        if "arithmatex" in a.get("class", "").split():
            self.math = True
        if tag == "script" and a.get("src"):
            self.scripts.append(a["src"])
            self.loads.append(("<script src>", a["src"]))
        elif tag == "link" and a.get("href"):
            rels = set(a.get("rel", "").lower().split())
            if not rels or not rels <= _NAVIGATION_RELS:
                self.loads.append((f"<link rel={a.get('rel', '')!r} href>", a["href"]))
        elif tag in _MEDIA and a.get(_MEDIA[tag]):
            self.loads.append((f"<{tag} src>", a[_MEDIA[tag]]))
        elif tag == "object" and a.get("data"):
            self.loads.append(("<object data>", a["data"]))
        if a.get("style"):
            self.loads += [("style url()", m["url"]) for m in _CSS_URL.finditer(a["style"])]
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.loads += [("<style> url()", m["url"]) for m in _CSS_URL.finditer(data)]


def _local_file(site: Path, page: Path, url: str) -> Path | None:
    """The file of ``site`` that a relative or site-absolute ``url`` on ``page`` names."""
    path = unquote(urlsplit(url).path)
    if not path:
        return None
    if path.startswith("/"):
        target = site / path.lstrip("/")
    else:
        target = page.parent / PurePosixPath(path)
    target = Path(target).resolve()
    return target if target.is_file() else None


def site_problems(site_dir: str | Path) -> list[str]:
    """What in the built site at ``site_dir`` needs the network: one line per page and URL
    loaded from another host, and per page with math that no MathJax of the site renders."""
    site = Path(site_dir).resolve()
    problems = []
    for page in sorted(site.rglob("*.html")):
        parser = _Resources()
        parser.feed(page.read_text(encoding="utf-8", errors="replace"))
        name = page.relative_to(site).as_posix()
        for what, url in parser.loads:
            if is_external(url):
                problems.append(f"{name}: {what} loads {url} from the network")
        if parser.math:
            local = [_local_file(site, page, src) for src in parser.scripts]
            if not any(f is not None and f.name.startswith("tex-") for f in local):
                problems.append(f"{name}: has math but loads no MathJax of this site")
    component = site / DEST / COMPONENT
    if not component.is_file():
        problems.append(f"{DEST}/{COMPONENT}: missing from the site")
    elif not any((site / DEST / "output" / "chtml" / "fonts").rglob("*.woff")):
        problems.append(f"{DEST}/output/chtml/fonts: MathJax's fonts are missing from the site")
    return problems


def on_post_build(config: Any, **kwargs: Any) -> None:
    from mkdocs.exceptions import PluginError

    problems = site_problems(config["site_dir"])
    if problems:
        raise PluginError(
            "The site would need the network to render (see docs/hooks/offline.py):\n  "
            + "\n  ".join(problems)
        )
