"""The package's shape: data flows one way between its packages (docs/extending.md, "Layout"), every source file
reads in a sitting, and package code finds shipped files without counting parent folders."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers.cli import ROOT

PACKAGE = ROOT / "src" / "iapo"
MAX_LINES = 450

MAY_IMPORT = {
    "data": set(),
    "agent": {"data"},
    "models": {"data", "agent"},
    "attribution": {"data", "agent", "models"},
    "evaluation": {"data", "agent", "models"},
    "training": {"data", "agent", "models", "attribution", "evaluation"},
    "experiments": {"data", "agent", "models", "attribution", "evaluation", "training"},
}
"""Which of the project's packages each package may import: none imports one above it."""


def imported_packages(path: Path) -> set[str]:
    """The `iapo.<package>` names a source file imports (`from iapo.x import ...`, `import iapo.x`,
    `from iapo import x`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] if node.module != "iapo" else [f"iapo.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found |= {name.split(".")[1] for name in names if name.startswith("iapo.")}
    return {name for name in found if (PACKAGE / name).is_dir()}


def test_no_package_imports_one_above_it():
    arrows = []
    for package, allowed in MAY_IMPORT.items():
        for path in sorted((PACKAGE / package).rglob("*.py")):
            for target in imported_packages(path) - allowed - {package}:
                arrows.append(f"{path.relative_to(PACKAGE)} imports iapo.{target}")
    assert arrows == []
    assert set(MAY_IMPORT) == {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}


def test_an_upward_import_is_found(tmp_path):
    source = tmp_path / "module.py"
    source.write_text("from iapo.training.step import train_step\nfrom iapo import agent\nimport iapo.data.sample\n")
    assert imported_packages(source) == {"training", "agent", "data"}


def test_every_source_file_reads_in_a_sitting():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_package_code_counts_parent_folders_only_for_the_vendored_tokenizer():
    """Configs are package data (`iapo.config_files`); the one path counted from the source file is the real Qwen
    tokenizer vendored under tests/fixtures, which only the `tiny-qwen-tokenizer` spec of a source checkout reads."""
    counted = {
        str(path.relative_to(PACKAGE)): [line.strip() for line in path.read_text().splitlines() if ".parents[" in line]
        for path in PACKAGE.rglob("*.py")
        if ".parents[" in path.read_text()
    }
    assert counted == {"models/tiny.py": ["REPOSITORY_ROOT = Path(__file__).resolve().parents[3]"]}
