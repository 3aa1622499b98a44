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


def overlay_values(path: Path, fields: dict[str, type]) -> dict[str, object]:
    """The values of a CLI overlay at dotted keys (`{"data.synthetic_charts": SyntheticChartsConfig}`), parsed and
    instantiated by jsonargparse as `src/cli.py` parses them, so code that needs a config's task trains on what the
    CLI would. A key the type does not have, or a value of the wrong type, raises `ValueError` naming the file and
    the dotted key."""
    import argparse

    import yaml
    from jsonargparse import ArgumentParser

    config = yaml.safe_load(path.read_text())
    parser = ArgumentParser(exit_on_error=False)
    block = {}
    for number, (key, kind) in enumerate(fields.items()):
        node = config
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise KeyError(f"{path.name} has no {key}")
            node = node[part]
        parser.add_argument(f"--field{number}", type=kind)
        block[f"field{number}"] = node
    try:
        parsed = parser.instantiate(parser.parse_object(block))
    except argparse.ArgumentError as error:
        message = str(error)
        for number, key in enumerate(fields):
            message = message.replace(f"field{number}", key)
        raise ValueError(f"{path}: {message}") from None
    return {key: parsed[f"field{number}"] for number, key in enumerate(fields)}
