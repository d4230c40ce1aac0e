"""The docs: the recipes and the getting-started page run as written, and the built site renders
with no network (MathJax from the site itself, nothing loaded from another host; the build fails
otherwise), shows every public member of the API and links the docstrings' cross-references.

Building the site needs the docs extra, which the test extra installs: a missing package fails
these tests, it never skips them.
"""

from __future__ import annotations

import html
import importlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from adaptive_sde._bench.report import load_json

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
CODE_BLOCK = re.compile(r"^```python\n(?P<code>.*?)^```", re.DOTALL | re.MULTILINE)


def _python_blocks(page: str) -> list[str]:
    return [m["code"] for m in CODE_BLOCK.finditer((DOCS / page).read_text(encoding="utf-8"))]


def _load_hook(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"docs_hook_{name}", DOCS / "hooks" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the snippets run as written ----------------------------------------------------------------

RECIPES = _python_blocks("recipes.md")


def test_recipes_page_is_in_the_nav() -> None:
    assert "recipes.md" in (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    assert len(RECIPES) >= 4


@pytest.mark.parametrize("index", range(len(RECIPES)))
def test_recipe_runs_as_written(
    index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each block of docs/recipes.md on its own, as a user would paste it (tiny random models,
    nothing downloaded)."""
    importlib.import_module("diffusers")
    monkeypatch.chdir(tmp_path)
    code = RECIPES[index]
    exec(compile(code, f"docs/recipes.md, block {index + 1}", "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out
    assert out.strip(), "every recipe prints what it got"
    if ".save(" in code:
        (png,) = tmp_path.glob("*.png")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if "EDMSDE" in code:  # the exact denoiser of N(0, 0.5^2): the samples have its spread
        std = float(re.search(r"std (\S+) ", out)[1])  # type: ignore[index]
        assert abs(std - 0.5) < 0.05


def test_getting_started_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The getting-started page's blocks in order, in one namespace, as a reader follows it."""
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    for index, code in enumerate(_python_blocks("getting-started.md")):
        exec(compile(code, f"docs/getting-started.md, block {index + 1}", "exec"), namespace)
    assert set(namespace["s"]) >= {"samples", "nfe_mean", "accepted", "failed"}
    assert bool(namespace["failed"].any())  # max_steps=10 is too few: the failure path ran


def test_readme_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README's Python blocks in order, in one namespace, as a reader follows it."""
    monkeypatch.chdir(tmp_path)
    text = (REPO / "README.md").read_text(encoding="utf-8")
    namespace: dict[str, Any] = {"__name__": "__main__"}
    blocks = [m["code"] for m in CODE_BLOCK.finditer(text)]
    assert len(blocks) >= 3
    for index, code in enumerate(blocks):
        exec(compile(code, f"README.md, block {index + 1}", "exec"), namespace)
    assert namespace["sol"].ys.shape == (5, 10_000, 1)
    assert namespace["x"].shape == (64, 3, 32, 32) and not namespace["x"].requires_grad


# --- the offline check --------------------------------------------------------------------------

offline = _load_hook("offline")


def _site(tmp_path: Path, pages: dict[str, str], mathjax: bool = True) -> Path:
    site = tmp_path / "site"
    for name, body in pages.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(f"<html><head>{body}</head></html>", encoding="utf-8")
    if mathjax:
        fonts = site / offline.DEST / "output" / "chtml" / "fonts" / "woff-v2"
        fonts.mkdir(parents=True)
        (fonts / "MathJax_Main-Regular.woff").write_bytes(b"font")
        (site / offline.DEST / offline.COMPONENT).write_text("// mathjax", encoding="utf-8")
    return site


LOCAL_MATHJAX = '<script src="../assets/mathjax/tex-mml-chtml.js"></script>'
MATH = '<span class="arithmatex">\\(x\\)</span>'


def test_offline_check_passes_a_site_that_loads_only_its_own_files(tmp_path: Path) -> None:
    site = _site(
        tmp_path,
        {
            "index.html": '<link rel="stylesheet" href="assets/main.css">'
            '<a href="https://arxiv.org/abs/2105.14080">a link is not a load</a>'
            '<link rel="canonical" href="https://example.org/">',
            "math/index.html": LOCAL_MATHJAX + MATH,
        },
    )
    assert offline.site_problems(site) == []


@pytest.mark.parametrize(
    "head",
    [
        '<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>',
        '<script src="//cdn.jsdelivr.net/npm/katex/dist/katex.min.js"></script>',
        '<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/katex/dist/katex.min.css">',
        '<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">',
        '<link rel="preconnect" href="https://fonts.gstatic.com" crossorigin>',
        '<img src="http://example.org/plot.png">',
        "<style>@import 'https://fonts.googleapis.com/css2?family=Inter';</style>",
        '<div style="background: url(https://example.org/a.png)"></div>',
    ],
)
def test_offline_check_flags_what_loads_from_another_host(tmp_path: Path, head: str) -> None:
    site = _site(tmp_path, {"page/index.html": LOCAL_MATHJAX + MATH + head})
    (problem,) = offline.site_problems(site)
    assert problem.startswith("page/index.html: ") and "from the network" in problem


def test_offline_check_flags_math_without_the_sites_mathjax(tmp_path: Path) -> None:
    site = _site(tmp_path, {"page/index.html": MATH, "other/index.html": "<p>no math</p>"})
    assert offline.site_problems(site) == [
        "page/index.html: has math but loads no MathJax of this site"
    ]
    site = _site(tmp_path / "bare", {"page/index.html": LOCAL_MATHJAX + MATH}, mathjax=False)
    assert offline.site_problems(site) == [
        "page/index.html: has math but loads no MathJax of this site",
        f"{offline.DEST}/{offline.COMPONENT}: missing from the site",
    ]


def test_docs_extra_installs_mathjax_and_ruff() -> None:
    (line,) = [
        line
        for line in (REPO / "pyproject.toml").read_text(encoding="utf-8").splitlines()
        if line.startswith("docs = ")
    ]
    assert "django-static-mathjax" in line and '"ruff' in line
    config = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    assert "docs/hooks/offline.py" in config and "cdn" not in config.lower()


# --- the built site -----------------------------------------------------------------------------


def _build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"},
    )


@pytest.fixture(scope="module")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for module in ("mkdocs", "mkdocstrings_handlers.python", "material", "mathjax"):
        importlib.import_module(module)  # the docs extra, installed by the test extra
    site = tmp_path_factory.mktemp("docs") / "site"
    result = _build(REPO / "mkdocs.yml", site)
    assert result.returncode == 0, result.stdout + result.stderr
    return site


def test_built_site_renders_offline(built_site: Path) -> None:
    assert offline.site_problems(built_site) == []
    page = (built_site / "diffusion" / "index.html").read_text(encoding="utf-8")
    assert 'class="arithmatex"' in page
    assert 'src="../assets/mathjax/tex-mml-chtml.js"' in page
    assert 'src="../assets/mathjax/config.js"' in page
    assert (built_site / offline.DEST / "input" / "tex" / "extensions").is_dir()  # autoload


def test_build_fails_when_a_page_needs_the_network(built_site: Path, tmp_path: Path) -> None:
    """The same site with MathJax from a CDN: the build stops and names the page and URL."""
    cdn = "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"
    text = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    text = text.replace("docs_dir: docs", f"docs_dir: {DOCS}")
    text = text.replace("docs/hooks/", f"{DOCS}/hooks/")
    text = text.replace("extra_javascript:\n", f"extra_javascript:\n  - {cdn}\n", 1)
    assert cdn in text
    config = tmp_path / "mkdocs.yml"
    config.write_text(text, encoding="utf-8")
    result = _build(config, tmp_path / "site")
    assert result.returncode != 0
    assert f"diffusion/index.html: <script src> loads {cdn} from the network" in result.stderr


def _public_members() -> list[str]:
    """The public API's objects and their public members (with those inherited from another
    class of the package), as mkdocstrings lists them."""
    griffe = importlib.import_module("griffe")
    loader = griffe.GriffeLoader()
    loader.load("adaptive_sde")
    loader.resolve_aliases(implicit=False, external=False)
    found = []
    for module_path in ("adaptive_sde", "adaptive_sde.diffusion", "adaptive_sde.distributed"):
        module = loader.modules_collection[module_path]
        for name in module.exports:
            path = f"{module_path}.{name}"
            found.append(path)
            target = module.members[str(name)].final_target
            if target.is_class:
                found += [f"{path}.{m}" for m in target.all_members if not m.startswith("_")]
    return found


def _ids(page: str) -> set[str]:
    return set(re.findall(r'\bid="([^"]+)"', page))


def test_every_public_member_is_on_the_api_page(built_site: Path) -> None:
    api = (built_site / "api" / "index.html").read_text(encoding="utf-8")
    members = _public_members()
    missing = [m for m in members if m not in _ids(api)]
    assert not missing, f"{len(missing)} of {len(members)} public members not on the API page"
    assert len(members) > 250
    for member in ("adaptive_sde.diffusion.SampleStats.summary", "adaptive_sde.Result.SUCCESS"):
        assert member in members  # what the issue found missing
    assert "adaptive_sde.Solution.ys" in members
    assert not [i for i in _ids(api) if re.search(r"\._[a-z]", i)], "private members shown"


def test_api_cross_references_are_links(built_site: Path) -> None:
    api = (built_site / "api" / "index.html").read_text(encoding="utf-8")
    text = re.sub(r"<[^>]+>", "", api)
    assert not re.search(r":(class|func|meth|mod|attr|data|exc):", text), "a Sphinx role left"
    links = re.findall(r'<a class="autorefs autorefs-internal"[^>]*href="([^"]*)"', api)
    assert len(links) > 50
    # solve's docstring: ``throw``: raise :class:`SolveError` -> a link to its entry
    assert "#adaptive_sde.SolveError" in links
    assert "#adaptive_sde.distributed" in links  # a module, to its section


def test_api_signatures_are_formatted(built_site: Path) -> None:
    api = (built_site / "api" / "index.html").read_text(encoding="utf-8")
    signatures = re.findall(r'<div class="doc-signature highlight"><pre>(.*?)</pre>', api, re.S)
    assert len(signatures) > 100
    lines = [
        line
        for signature in signatures
        for line in html.unescape(re.sub(r"<[^>]+>", "", signature)).splitlines()
    ]
    assert max(map(len, lines)) <= 88  # mkdocs.yml's line_length, one parameter a line
    assert "    sample_ids: Tensor | None = None," in lines  # solve's, formatted by ruff


# --- the benchmark plots at page width ----------------------------------------------------------

PAGE_PX = 760  # the width of Material's content column, at its widest
SMALLEST_TEXT_PX = 10


@pytest.mark.parametrize("name", ["analytic", "gmm", "overhead"])
def test_benchmark_plot_is_legible_at_page_width(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Drawn from the committed results: shown at the page's width, the smallest text of the
    figure is at least 10 px high, and the PNG has the pixels to show it sharply."""
    matplotlib = importlib.import_module("matplotlib")
    from matplotlib.figure import Figure
    from matplotlib.text import Text

    module = importlib.import_module(f"adaptive_sde._bench.{name}")
    result = load_json(DOCS / "benchmarks" / f"{name}.json")
    figures: list[Any] = []
    savefig = Figure.savefig

    def keep(self: Any, *args: Any, **kwargs: Any) -> Any:
        figures.append(self)
        return savefig(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    png = module.plot(result, tmp_path / f"{name}.png")
    (figure,) = figures
    width_in = figure.get_figwidth()
    shown_px_per_in = min(PAGE_PX, width_in * figure.dpi) / width_in
    sizes = [
        t.get_fontsize() for t in figure.findobj(Text) if t.get_visible() and t.get_text().strip()
    ]
    assert sizes
    smallest_px = min(sizes) / 72 * shown_px_per_in
    assert smallest_px >= SMALLEST_TEXT_PX, f"{min(sizes)} pt is {smallest_px:.1f} px on the page"
    assert width_in * figure.dpi >= PAGE_PX  # not blown up from a smaller bitmap
    assert matplotlib.image.imread(png).shape[1] == round(width_in * figure.dpi)


def test_the_torchsde_page_lists_every_option_of_the_option_table():
    from adaptive_sde._torchsde import OPTIONS

    page = (REPO / "docs" / "torchsde.md").read_text()
    listed = set(re.findall(r"^\| `(\w+)` \|", page, flags=re.M))
    missing = sorted(set(OPTIONS) - listed)
    assert not missing, f"docs/torchsde.md's options table lacks {missing}"
