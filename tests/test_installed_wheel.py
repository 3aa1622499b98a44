"""The package works installed as a wheel, away from the checkout: its configs ship as package data.

Builds the wheel (`pip wheel --no-deps`) from a copy of the sources, installs it with `--target` into a temporary
folder and imports it from there in a fresh interpreter (the venv's dependencies, not the checkout's sources).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from helpers.cli import ROOT

PROBE = """
import sys, iapo
from pathlib import Path
from iapo.config_files import config_file
from iapo.experiments.demo.settings import charts_task, synthetic_task
assert Path(iapo.__file__).is_relative_to(Path(sys.argv[1])), iapo.__file__
print(config_file("iapo.yaml").parent)
print(type(synthetic_task(config_file("demo_task.yaml"))).__name__, charts_task(config_file("demo_charts.yaml")).kinds[0])
"""


def test_configs_load_from_an_installed_wheel(tmp_path: Path) -> None:
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    source.mkdir()
    for item in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / item, source / item)
    shutil.copytree(ROOT / "src", source / "src", symlinks=True, ignore=ignore)
    shutil.copytree(ROOT / "configs", source / "configs", ignore=ignore)
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    pip = (sys.executable, "-m", "pip", "-q")
    subprocess.run((*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", wheels, source), check=True)
    [wheel] = wheels.glob("iapo-*.whl")
    subprocess.run((*pip, "install", "--no-deps", "--target", target, wheel), check=True)
    probe = subprocess.run(
        (sys.executable, "-c", PROBE, target),
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    shipped, task = probe.stdout.splitlines()
    assert Path(shipped) == target / "iapo" / "configs" and task.startswith("SyntheticConfig chart")
