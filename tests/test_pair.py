"""`make pair`: the 6-bar student and teacher of the powered comparison, built from the tiny spec through two 4-bar
lineages (`iapo.experiments.demo.pair`), on tiny budgets here: every run in its order, from the model it continues,
on its task, and nothing trained twice."""

from __future__ import annotations

import yaml

from iapo.experiments.demo.pair import PairSettings, build_pair


def hparams(folder) -> dict:
    return yaml.safe_load((folder / "hparams.yaml").read_text())


def test_the_pair_is_trained_through_both_lineages_then_on_six_bars_and_read_back(tmp_path, capsys):
    pair = PairSettings(
        out=tmp_path / "pair",
        four_bar_steps=2,
        student_more_steps=1,
        teacher_steps=2,
        teacher_tail_steps=1,
        six_bar_steps=1,
        student_tail_steps=1,
        sft_batch=2,
    )
    student, teacher = build_pair(pair, workers=1)
    assert (student, teacher) == (pair.student, pair.teacher)
    assert (student / "config.json").is_file() and (teacher / "config.json").is_file()
    logs = pair.out / "logs"
    # the 6-bar runs continue the 4-bar lineages' last models, on demonstrations of the asked bar 1 in 6 / always
    student_run, teacher_run = hparams(logs / "student-before-tail"), hparams(logs / "teacher")
    assert student_run["student"]["name"] == str(pair.out / "four-bars-student" / "sft" / "step-3")
    assert teacher_run["student"]["name"] == str(pair.out / "four-bars-teacher" / "sft" / "teacher")
    assert student_run["call_accuracy"] == 1 / 6 and teacher_run["call_accuracy"] == 1.0
    assert student_run["edit_thought"] is False and student_run["expert"] == "tool"
    # the student's 6-bar run ends with a tail on the same demonstrations at the lower lr
    tail = hparams(logs / "student")
    assert tail["student"]["name"] == str(pair.out / "student-before-tail")
    assert (tail["call_accuracy"], tail["lr"]) == (1 / 6, pair.student_tail_lr) != (1 / 6, student_run["lr"])
    assert pair.six_bars(1.0).task.n_bars == 6 and pair.student_lineage().task.n_bars == 4
    # the student lineage: a first run from the spec (25% the asked bar), then more of the same from it
    more = hparams(pair.out / "four-bars-student" / "logs" / "step-3")
    assert more["student"]["name"] == str(pair.out / "four-bars-student" / "sft" / "step-2")
    assert more["call_accuracy"] == 0.25
    # the teacher lineage: the 4-bar preset's cold start (its student 10% right), its tail at the lower lr
    assert (pair.out / "four-bars-teacher" / "sft" / "teacher-before-tail" / "config.json").is_file()
    assert hparams(pair.out / "four-bars-teacher" / "logs" / "sft")["call_accuracy"] == 0.1
    capsys.readouterr()
    build_pair(pair, workers=1)  # every model saved: read back, nothing trained
    out = capsys.readouterr().out
    assert "cold start: reusing" in out and "saved" not in out
