"""Run `src/cli.py` in-process, as a user's command line would."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_cli():
    """The `src/cli.py` module (the entry point is a script, not a package module)."""
    spec = importlib.util.spec_from_file_location("iapo_cli", ROOT / "src" / "cli.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
