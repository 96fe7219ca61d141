"""The documentation site builds in strict mode, and its API reference covers every public name."""
import html
import importlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocs", reason="mkdocs is not installed: pip install '.[docs]'")
griffe = pytest.importorskip("griffe", reason="mkdocstrings-python is not installed: pip install '.[docs]'")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs" / "_tools"))
import sphinx_roles  # noqa: E402  (the griffe extension the site renders docstrings with)
REFERENCE_PAGES = {"iprune_tf": "reference/iprune_tf", "iprune_tf.export": "reference/export"}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built by ``mkdocs build --strict`` (a warning, e.g. a broken link or anchor, fails it)."""
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr[-6000:]
    return out


def _text(fragment):
    """Visible text of an HTML fragment, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def _summary(module, name):
    """The first line of a public name's docstring, as plain text (markup characters dropped)."""
    obj = getattr(importlib.import_module(module), name)
    if inspect.isclass(obj) or inspect.isroutine(obj):
        doc = inspect.getdoc(obj)
    else:  # a constant: its docstring is the string literal after the assignment in the source
        doc = griffe.load(module, resolve_aliases=True, resolve_external=False)[name].docstring.value
    assert doc, f"{module}.{name} has no docstring"
    first_line = sphinx_roles.ROLE.sub(sphinx_roles.as_code, doc.split("\n\n")[0].splitlines()[0])
    return " ".join(re.sub(r"[`*]", "", first_line).split())


def test_site_builds_strictly_with_home_page_and_lab_notebook(site):
    home = (site / "index.html").read_text(encoding="utf-8")
    assert "Quick start 1: prune your own Keras model" in home  # the README is the home page
    assert 'href="bench/"' in home  # README's link to the lab notebook, rewritten for the site
    notebook = (site / "bench" / "index.html").read_text(encoding="utf-8")
    assert "Spread over seeds and retraining levers" in notebook
    assert (site / "bench" / "results" / "accuracy_seeds.json").is_file()
    assert (site / "img" / "overview.svg").is_file()


@pytest.mark.parametrize("module", sorted(REFERENCE_PAGES))
def test_api_reference_has_every_public_name_with_its_docstring(site, module):
    page = (site / REFERENCE_PAGES[module] / "index.html").read_text(encoding="utf-8")
    names = importlib.import_module(module).__all__
    starts = {name: page.find(f'id="{module}.{name}"') for name in names}
    missing = sorted(name for name, start in starts.items() if start < 0)
    assert not missing, f"{module}.__all__ names without an entry in docs/{REFERENCE_PAGES[module]}.md: {missing}"
    bounds = sorted(starts.values()) + [len(page)]
    for name, start in starts.items():
        entry = _text(page[page.index(">", start) + 1 : bounds[bounds.index(start) + 1]])
        summary = _summary(module, name)
        squeezed = "".join(re.sub(r"[`*]", "", entry).split())  # tags became spaces: compare without any
        assert "".join(summary.split()) in squeezed, f"{module}.{name}: docstring {summary!r} not rendered"
