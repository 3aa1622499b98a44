"""`make demo FAST=1`: the whole miniature reproduction writes its report (slow: minutes on 2 cores)."""

from __future__ import annotations

import json

import pytest

from iapo.demo import main


@pytest.mark.slow
def test_fast_demo_writes_the_report(tmp_path):
    report = main(["--fast", "--out", str(tmp_path / "demo")])
    data = json.loads((tmp_path / "demo" / "report.json").read_text())
    models = [row["model"] for row in data["rows"]]
    assert models[:4] == ["student (cold start)"] * 2 + ["teacher (cold start)"] * 2
    assert {"GRPO (from the cold-started student)", "IAPO (from the cold-started student)"} <= set(models)
    for row in data["rows"]:
        for result in row["results"]:
            assert 0 <= result["accuracy"] <= 1 and result["rows"] == data["settings"]["test_rows"]
    assert (tmp_path / "demo" / "curves.png").stat().st_size > 0
    for files in data["pictures"].values():
        assert files and all((tmp_path / "demo" / f).is_file() for f in files)
    assert "| model | tools | accuracy |" in report.read_text()
