"""`make demo FAST=1`: the whole miniature reproduction writes its report, and its cold start really learned the task
(about 5 minutes on 2 cores: the one long test of the default suite)."""

from __future__ import annotations

import json

from iapo.experiments.demo import GRPO, IAPO, STUDENT, TEACHER, main


def test_fast_demo_writes_a_report_of_a_student_that_learned_to_zoom(tmp_path):
    out = tmp_path / "demo"
    report = main(["--fast", "--out", str(out)])
    data = json.loads((out / "report.json").read_text())
    results = {(row["model"], row["results"][0]["tools"]): row["results"] for row in data["rows"]}
    assert set(results) == {(m, t) for m in (STUDENT, TEACHER) for t in (True, False)} | {(GRPO, True), (IAPO, True)}
    for rows in results.values():
        for result in rows:
            assert 0 <= result["accuracy"] <= 1 and result["rows"] == data["settings"]["test_rows"]
    chance = 1 / data["settings"]["synthetic"]["n_options"]
    student = results[(STUDENT, True)][0]
    assert student["tool_call_rate"] >= 0.5  # the cold-started student zooms ...
    assert student["accuracy"] >= chance + 0.15  # ... and reads the crop: well above chance
    assert results[(STUDENT, False)][0]["tool_call_rate"] == 0  # tools off: one direct turn
    assert (out / "curves.png").stat().st_size > 0
    for files in data["pictures"].values():
        assert files and all((out / f).is_file() for f in files)
    text = report.read_text()
    assert "| model | tools | accuracy |" in text and "Chance is 25%" in text
