"""`ProgressLog`: the line's content, and a fit without a progress bar that reports its steps."""

from __future__ import annotations

import logging

import lightning as L
import torch
from torch.utils.data import DataLoader

from iapo.training.progress import ProgressLog, progress_line


def test_progress_line_states_step_elapsed_eta_and_metric() -> None:
    assert (
        progress_line("fit", 10, 40, 60.0, "reward", 0.25)
        == "[fit] step 10/40  elapsed 0:01:00  eta 0:03:00  reward 0.25"
    )
    assert progress_line("test", 0, None, 5.0, "reward", None) == "[test] step 0  elapsed 0:00:05  eta ?"


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch).pow(2).mean()
        self.log("reward", -loss.detach())
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_fit_without_progress_bar_reports_its_steps(tmp_path, capsys, caplog) -> None:
    data = DataLoader(torch.ones(8, 1), batch_size=2)
    trainer = L.Trainer(
        max_steps=4,
        callbacks=[ProgressLog(every_s=0.0)],
        enable_progress_bar=False,
        logger=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        enable_model_summary=False,
    )
    with caplog.at_level(logging.INFO, logger="iapo.progress"):
        trainer.fit(Tiny(), data)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[fit]")]
    assert lines[0].startswith("[fit] step 0/4") and lines[-1].startswith("[fit] step 4/4")
    assert "reward" in lines[-1] and "eta 0:00:00" in lines[-1]
    assert [r.getMessage() for r in caplog.records if r.name == "iapo.progress"] == lines
