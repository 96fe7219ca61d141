"""MkDocs hooks: the home page is README.md, and the lab notebook is published with the site.

* ``docs/index.md`` is a placeholder: its source is replaced by the repository's ``README.md``,
  with links rewritten from the repository's layout to the site's (``docs/x.md`` -> ``x.md``), so
  the front door is written once.
* ``bench/README.md`` (the lab notebook), the bench scripts and ``bench/results/`` are added to the
  site's files, so the results pages link to the notebook and to the JSON behind each figure,
  and ``mkdocs build --strict`` checks those links too; the notebook's links to the docs
  (``../docs/x.md`` in the repository) are rewritten for the site (``../x.md``).
"""
import re
from pathlib import Path

from mkdocs.structure.files import File

_PUBLISHED = {".md", ".json", ".py", ".png", ".svg", ".txt"}
_README_LINKS = ((re.compile(r"\]\(docs/"), "]("), (re.compile(r"\]\(examples/\)"), "](examples.md)"))
_NOTEBOOK_DOCS_LINK = re.compile(r"\]\(\.\./docs/")


def _root(config):
    return Path(config["config_file_path"]).parent


def on_files(files, config):
    root = _root(config)
    for path in sorted((root / "bench").rglob("*")):
        if path.is_file() and path.suffix in _PUBLISHED and "__pycache__" not in path.parts:
            files.append(File(path.relative_to(root).as_posix(), src_dir=str(root), dest_dir=config["site_dir"],
                              use_directory_urls=config["use_directory_urls"]))
    return files


def on_page_read_source(page, config):
    root = _root(config)
    if page.file.src_uri == "index.md":
        text = (root / "README.md").read_text(encoding="utf-8")
        for pattern, replacement in _README_LINKS:
            text = pattern.sub(replacement, text)
        return text
    if page.file.src_uri.startswith("bench/"):  # the notebook links docs pages as ../docs/x.md
        return _NOTEBOOK_DOCS_LINK.sub("](../", (root / page.file.src_uri).read_text(encoding="utf-8"))
    return None
