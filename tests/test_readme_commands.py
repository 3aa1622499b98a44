"""Every command in the README's Training and Evaluation sections runs as written, on data files in the official
layouts (`iapo.data.official_layouts`, both settings) under `data/`, with `configs/rehearsal.yaml` appended to each
CLI command (the tiny models and budgets: the one substitution). `make` lines run the command `make -n` prints;
the placeholders `DIR` and `RUN...` stand for the data root and the evaluation runs just written."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from helpers.cli import ROOT, load_cli
from iapo.data.official_layouts import write_paper_data, write_zoom_data
from iapo.evaluation import results
from iapo.experiments import recipe


def section_commands(title: str) -> list[str]:
    """The commands of the ```bash blocks of one README section, continuation lines joined, comments dropped."""
    text = (ROOT / "README.md").read_text()
    section = text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command = line.split(" # ", 1)[0].strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def expanded(command: str) -> list[str]:
    """A `make` line as the command it runs (`make -n`), else the line itself; split into words."""
    if command.startswith("make "):
        printed = subprocess.run(
            ["make", "-s", "-n", "-C", str(ROOT), *shlex.split(command)[1:]], capture_output=True, text=True, check=True
        ).stdout.strip()
        return shlex.split(printed)[1:]  # without the venv's python
    return shlex.split(command)[1:]  # without `python`


def with_runs(words: list[str]) -> list[str]:
    """The placeholder run directories (`RUN...`, `logs/eval/base-…`) replaced by the evaluation runs written."""
    runs = sorted(str(p.parent) for p in Path("logs/eval").glob("*/results.json"))
    out: list[str] = []
    for word in words:
        if "…" in word or word == "RUN...":
            out += [] if set(runs) <= set(out) else runs
            continue
        out.append(word)
    return out


def run(words: list[str], data: Path) -> None:
    words = [w.replace("configs/", f"{ROOT}/configs/", 1) if w.startswith("configs/") else w for w in words]
    words = [str(data) if w == "DIR" else w for w in words]
    if words[:1] == ["src/cli.py"]:
        args = [*words[1:], "--config", f"{ROOT}/configs/rehearsal.yaml"]
        if "--print_config" in args:
            with pytest.raises(SystemExit), contextlib.redirect_stdout(io.StringIO()):
                load_cli().main(args)
        else:
            load_cli().main(args)
    elif words[:2] == ["-m", "iapo.experiments.recipe"]:
        assert recipe.main(words[2:]) == 0
    else:
        assert words[:3] == ["-m", "iapo.evaluation.results", "compare"], words
        results.main(with_runs(words[2:]))


@pytest.mark.parametrize("section", ["Training", "Evaluation"])
def test_readme_commands_run_as_written(section: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    write_paper_data(data, rows=4)
    write_zoom_data(data, rows=4)
    commands = section_commands(section)
    assert len(commands) >= 7
    if section == "Evaluation":  # the adapter that `make eval ADAPTER=logs/iapo/adapters/last` reads
        run(expanded(section_commands("Training")[0]), data)
    for command in commands:
        run(expanded(command), data)
    if section == "Training":
        assert Path("logs/iapo/adapters/last/adapter_config.json").is_file() and Path("logs/zoom/csv").is_dir()
        assert Path("logs/iapo/checkpoints/last.ckpt").is_file()  # what `--ckpt_path last` resumed from
    else:
        assert len(list(Path("logs/eval").glob("*/results.json"))) >= 4
        for table in ("compare.md", "paper.md"):
            assert "| model |" in (Path("logs/eval") / table).read_text()
