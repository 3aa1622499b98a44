"""Cold-started tiny models (`make train` starts from them): built by SFT on first use, cached, loaded by name like a
tiny spec; and the line a fit starts with, saying what the run is."""

from __future__ import annotations

from pathlib import Path

import pytest

from iapo.cli import CLI_OPTIONS, IAPOCLI
from iapo.config_files import config_file
from iapo.models.loader import (
    MODEL_BUILDERS,
    ModelBuilder,
    ModelSettings,
    _not_found,
    describe_model,
    register_model_builder,
    resolve_model_path,
)
from iapo.training import cold_start
from iapo.training.cold_start import COLD_STARTS, ColdStartSpec, build_cold_start, offline_task
from iapo.training.iapo_module import IAPOModule


def test_a_cold_start_is_trained_once_then_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IAPO_CACHE", str(tmp_path))
    monkeypatch.setitem(
        COLD_STARTS, "toy-sft", ColdStartSpec(base="tiny-student", expert="tool", steps=2, batch_size=2, rows=4)
    )
    fits = []
    real_trainer = cold_start.L.Trainer

    def counting_trainer(*args, **kwargs):
        fits.append(kwargs["max_steps"])
        return real_trainer(*args, **kwargs)

    monkeypatch.setattr(cold_start.L, "Trainer", counting_trainer)
    monkeypatch.setitem(MODEL_BUILDERS, "toy-sft", ModelBuilder(lambda: build_cold_start("toy-sft"), "a toy"))

    first = Path(resolve_model_path("toy-sft"))
    assert first.parent == tmp_path / "cold_start" and (first / "config.json").is_file() and fits == [2]
    assert Path(resolve_model_path("toy-sft")) == first and fits == [2]  # cached: no second SFT run
    model, _ = ModelSettings(name="toy-sft").load()
    assert model.config.model_type == "qwen2_5_vl"
    assert describe_model("toy-sft") == "toy-sft (a toy)" and describe_model("tiny-student") == "tiny-student"


def test_the_registered_cold_starts_and_the_offline_names_in_errors():
    assert {"tiny-student-sft", "tiny-teacher-sft"} <= set(MODEL_BUILDERS)
    assert COLD_STARTS["tiny-teacher-sft"].base == "tiny-student-sft"  # the teacher is the student trained on
    assert "right tool calls" in describe_model("tiny-teacher-sft")
    with pytest.raises(ValueError, match="already a tiny spec"):
        register_model_builder("tiny-student", ModelBuilder(lambda: None, ""))
    message = str(_not_found("org/model", "HF_HUB_OFFLINE is set"))
    assert "tiny-student-sft" in message and "tiny-teacher" in message  # the offline names a user can load


def test_a_fit_starts_by_saying_what_it_is():
    student, teacher = ModelSettings(name="tiny-student-sft"), ModelSettings(name="tiny-teacher")
    iapo = IAPOModule(student=student, teacher=teacher, rewards={"accuracy": 1.0, "format": 0.1, "attribution": 0.5})
    line = iapo.run_summary(20, "logs/tiny")
    assert line.startswith("[fit] IAPO: rewards accuracy 1 + format 0.1 + attribution 0.5 (")
    assert "student tiny-student-sft (cold-started: tiny-student fine-tuned" in line
    assert ", teacher tiny-teacher;" in line and "20 optimizer steps; outputs in logs/tiny" in line
    grpo = IAPOModule(student=student, teacher=teacher, rewards={"accuracy": 1.0, "format": 0.1}).run_summary(5, "x")
    assert grpo.startswith("[fit] GRPO: rewards accuracy 1 + format 0.1;") and "(no teacher)" in grpo
    assert "teacher tiny" not in grpo and "integrated_gradients" not in grpo


def test_make_train_runs_the_task_its_cold_starts_were_trained_on(tmp_path, monkeypatch):
    task, sampling = offline_task()
    monkeypatch.chdir(tmp_path)
    configs = ("iapo.yaml", "tiny.yaml", "tiny_cold_start.yaml")
    args = [arg for name in configs for arg in ("--config", str(config_file(name)))]
    cli = IAPOCLI(**CLI_OPTIONS, run=False, args=args)
    assert cli.datamodule.synthetic_charts == task and task.kinds == ("chart_v",) and task.quote_labels
    assert cli.model.sampling == sampling and (sampling.toolset, sampling.temperature) == ("chart", 0.7)
    assert (cli.model.student_settings.name, cli.model.teacher_settings.name) == (
        "tiny-student-sft",
        "tiny-teacher-sft",
    )
