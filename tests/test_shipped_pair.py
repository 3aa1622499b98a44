"""The 6-bar pair that ships with iapo (`checkpoints/demo-pair/`), which `make demo` and `make powered` start from:
its files are the ones its README records, and the models act as the README says — the teacher names the asked bar,
the student calls the tool on every question but names the asked bar at about chance, and reads what it edits."""

from __future__ import annotations

import hashlib
import re

from iapo.experiments.demo.measure import call_premises
from iapo.experiments.demo.settings import SHIPPED_PAIR, powered_settings, showcase_settings


def test_the_shipped_weights_are_the_ones_the_readme_records():
    recorded = dict(
        re.findall(r"\| `(\w+/model\.safetensors)` \| `([0-9a-f]{64})` \|", (SHIPPED_PAIR / "README.md").read_text())
    )
    assert set(recorded) == {"student/model.safetensors", "teacher/model.safetensors"}
    for name, digest in recorded.items():
        assert hashlib.sha256((SHIPPED_PAIR / name).read_bytes()).hexdigest() == digest, name


def test_the_demo_presets_start_from_the_shipped_pair():
    for settings in (showcase_settings(), powered_settings()):
        assert (settings.given_student, settings.given_teacher) == (SHIPPED_PAIR / "student", SHIPPED_PAIR / "teacher")
        assert settings.task.n_bars == 6


def test_the_shipped_teacher_names_the_asked_bar_and_the_student_names_one_at_about_chance():
    settings = powered_settings()  # the 6-bar task and the RL temperature; 16 training prompts × 3 samples
    teacher = call_premises(settings, SHIPPED_PAIR / "teacher", prompts=16, seed=0, offset=0)
    assert teacher["right_call_rate"] >= 0.9 and teacher["success_given_right"] >= 0.9
    student = call_premises(settings, SHIPPED_PAIR / "student", prompts=16, seed=0, offset=0)
    assert student["call_rate"] >= 0.9  # it calls the tool ...
    assert 0.02 <= student["right_call_rate"] <= 0.4  # ... naming the asked bar about 1 time in 6 ...
    assert student["success_given_right"] >= 0.8 and student["success_given_wrong"] <= 0.2  # ... and reads its edit
