"""MkDocs hook: publish the lab notebook (``bench/README.md``) and its evidence with the site.

``bench/README.md`` stays where the benchmark scripts write next to it; this hook adds it, the
scripts and ``bench/results/`` to the site's files, so the results pages link to the notebook
and to the JSON behind each figure, and ``mkdocs build --strict`` checks those links too.
"""
from pathlib import Path

from mkdocs.structure.files import File

_PUBLISHED = {".md", ".json", ".py", ".png", ".svg", ".txt"}


def on_files(files, config):
    root = Path(config["config_file_path"]).parent
    for path in sorted((root / "bench").rglob("*")):
        if path.is_file() and path.suffix in _PUBLISHED and "__pycache__" not in path.parts:
            files.append(File(path.relative_to(root).as_posix(), src_dir=str(root), dest_dir=config["site_dir"],
                              use_directory_urls=config["use_directory_urls"]))
    return files
