"""Named callbacks and loggers: an overlay (or a flag) changes, adds or removes one entry by its name, and every entry
it does not name stays as the configs before it set it."""

from __future__ import annotations

import pytest
import yaml
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from helpers.cli import ROOT
from iapo.cli import CLI_OPTIONS, IAPOCLI, named_entry_names
from iapo.training.callbacks import AdapterCheckpoint, AttributionMapLogger, RolloutWriter
from iapo.training.loggers import OfflineFallbackWandbLogger
from iapo.training.progress import ProgressLog

CONFIGS = ROOT / "configs"


def built_trainer(tmp_path, monkeypatch, *args: str):
    monkeypatch.chdir(tmp_path)
    return IAPOCLI(**CLI_OPTIONS, run=False, args=["--config", str(CONFIGS / "iapo.yaml"), *args]).trainer


def callbacks_of(trainer, kind: type) -> list:
    return [callback for callback in trainer.callbacks if type(callback) is kind]


def test_the_tiny_overlay_changes_only_what_it_names(tmp_path, monkeypatch):
    trainer = built_trainer(tmp_path, monkeypatch, "--config", str(CONFIGS / "tiny.yaml"))
    [checkpoint] = callbacks_of(trainer, ModelCheckpoint)
    assert checkpoint._every_n_train_steps == 1  # tiny.yaml's value
    assert checkpoint.dirpath.endswith("logs/tiny/checkpoints") and checkpoint.save_last  # iapo.yaml's, kept
    [adapters] = callbacks_of(trainer, AdapterCheckpoint)
    assert (adapters.every_n_steps, adapters.monitor, adapters.save_top_k) == (10, "val/acc", 2)
    [maps] = callbacks_of(trainer, AttributionMapLogger)
    assert (maps.examples, maps.every_n_steps, str(maps.dirpath)) == (2, 10, "logs/tiny/attribution")
    assert len(callbacks_of(trainer, ProgressLog)) == 1  # named only in iapo.yaml
    assert len(callbacks_of(trainer, RolloutWriter)) == 1  # added by tiny.yaml
    assert [type(logger) for logger in trainer.loggers] == [CSVLogger]  # `wandb: null` removed W&B only


def test_an_overlay_adds_removes_and_a_flag_changes_one_entry(tmp_path, monkeypatch):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(
        yaml.safe_dump(
            {
                "callbacks": {
                    "progress": None,
                    "learning_rate": {"class_path": "lightning.pytorch.callbacks.LearningRateMonitor"},
                },
                "loggers": {"csv": None},
            }
        )
    )
    trainer = built_trainer(
        tmp_path, monkeypatch, "--config", str(overlay), "--callbacks.adapters.init_args.every_n_steps=7"
    )
    assert callbacks_of(trainer, ProgressLog) == []
    assert len(callbacks_of(trainer, LearningRateMonitor)) == 1
    [adapters] = callbacks_of(trainer, AdapterCheckpoint)
    assert (adapters.every_n_steps, adapters.save_top_k) == (7, 2)
    assert len(callbacks_of(trainer, RolloutWriter)) == 0 and len(callbacks_of(trainer, ModelCheckpoint)) == 1
    assert [type(logger) for logger in trainer.loggers] == [OfflineFallbackWandbLogger]


def test_loggers_given_both_ways_are_refused_in_one_line(tmp_path, monkeypatch):
    with pytest.raises(SystemExit, match="either as `trainer.logger` or as named `loggers:`"):
        built_trainer(tmp_path, monkeypatch, "--trainer.logger=false")


def test_entry_names_come_from_config_files_and_flags_in_order(tmp_path):
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text("callbacks: {b: null, a: null}\nloggers: {csv: null}\n")
    second.write_text("fit:\n  callbacks: {c: null, a: null}\n")
    (tmp_path / "broken.yaml").write_text("callbacks: [unclosed\n")
    args = ["fit", "--config", str(first), f"--config={second}", "--config", str(tmp_path / "broken.yaml")]
    args += ["--config", str(tmp_path / "absent.yaml"), "--callbacks.d.init_args.x=1", "--loggers.w=null"]
    assert named_entry_names(args) == {"callbacks": ["b", "a", "c", "d"], "loggers": ["csv", "w"]}
