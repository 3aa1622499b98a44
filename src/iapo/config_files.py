"""The project's YAML configs as package data: `config_file("tiny.yaml")` is a path that exists in a checkout and in
an installed wheel alike.

`configs/` ships inside the package (`src/iapo/configs` links to it; `pyproject.toml` lists it as package data), so
code that needs a config's values finds it without knowing where the repository is.

    python -c "from iapo.config_files import config_file; print(config_file('demo_task.yaml').read_text())"
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def config_dir() -> Path:
    """The folder of the shipped configs (`configs/` of the checkout, or `iapo/configs` of an installed wheel)."""
    return Path(str(files("iapo") / "configs"))


def config_file(name: str) -> Path:
    """The shipped config `name` (e.g. ``"iapo.yaml"``); a missing one is an error naming those that exist."""
    path = config_dir() / name
    if not path.is_file():
        shipped = ", ".join(sorted(p.name for p in config_dir().glob("*.yaml")))
        raise FileNotFoundError(f"no config {name!r} ships with iapo; shipped: {shipped}")
    return path
