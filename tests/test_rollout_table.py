"""`RolloutTable` in a real `Trainer`: a W&B table in the offline run (WANDB_MODE=offline), JSON lines without W&B."""

from __future__ import annotations

import dataclasses
import json

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from helpers.policies import ScriptedPolicy
from iapo.agent.rollout import rollout
from iapo.data.sample import load_image
from iapo.data.synthetic import build_split
from iapo.training.algo import group_advantages
from iapo.training.rewards import build_rewards, compute_rewards
from iapo.training.rollout_table import RolloutTable
from iapo.training.step import StepRecord

GROUP = 2
STEPS = 4
EVERY = 2


@pytest.fixture(scope="module")
def last_rollout(tiny_processor):
    """The `StepRecord` of 2 prompts × 2 samples, with a zoom that fails and one that returns a crop."""
    samples = build_split("test", 2, seed=3)
    images = [load_image(s.image) for s in samples]
    zoom = '<tool_call>{"name": "zoom_in", "arguments": {"bbox_2d": [0, 0, 60, 60]}}</tool_call>'
    bad = '<tool_call>{"name": "zoom_in", "arguments": {"bbox_2d": [60, 60, 0, 0]}}</tool_call>'
    policy = ScriptedPolicy(tiny_processor.tokenizer, [[zoom, bad, zoom, bad], "<answer>A</answer>"])
    trajectories = rollout(policy, tiny_processor, samples, images, GROUP)
    empty = [{} for _ in trajectories]
    attributions = {"student": empty, "teacher": empty}
    configured = build_rewards({"accuracy": 1.0, "format": 0.1})
    total, parts = compute_rewards(configured, trajectories, {"samples": samples, "attributions": attributions})
    return StepRecord(samples, trajectories, attributions, {**parts, "total": total}, group_advantages(total, GROUP))


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """W&B offline, with its config, cache and artifact staging under `tmp_path/wandb-home` (nothing in $HOME)."""
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    return tmp_path / "wandb-home"


class RolloutModule(L.LightningModule):
    """Stands in for IAPOModule: manual optimisation with `updates` optimizer steps per training step, returning
    the step's record as IAPOModule.training_step does."""

    def __init__(self, last_rollout, updates: int = 1) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.layer = torch.nn.Linear(1, 1)
        self.rollout = last_rollout
        self.updates = updates

    def training_step(self, batch, batch_idx) -> dict:
        optimizer = self.optimizers()
        for _ in range(self.updates):
            optimizer.zero_grad()
            self.manual_backward(self.layer(batch).sum())
            optimizer.step()
        return {"record": self.rollout}

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.ones(8, 1), batch_size=1)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(module, logger, dirpath, max_steps: int = STEPS, every: int = EVERY) -> None:
    trainer = L.Trainer(
        max_steps=max_steps,
        logger=logger,
        callbacks=[RolloutTable(every_n_steps=every, dirpath=str(dirpath), max_image_side=64)],
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module)


def logged_steps(dirpath) -> list[int]:
    return [json.loads(line)["step"] for line in (dirpath / "rollouts.jsonl").read_text().splitlines()]


def test_without_wandb_rows_go_to_json_lines(tmp_path, last_rollout):
    trajectories, samples = last_rollout.trajectories, last_rollout.samples
    fit(RolloutModule(last_rollout), CSVLogger(tmp_path), tmp_path / "rollouts")
    lines = (tmp_path / "rollouts" / "rollouts.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert logged_steps(tmp_path / "rollouts") == [2] * len(trajectories) + [4] * len(trajectories)
    first = rows[0]
    sample = samples[0]
    assert first["question"].startswith(sample.question) and "A. " in first["question"]
    assert first["gold_answer"] == sample.answer and first["final_answer"] == "A"
    assert first["turns"].startswith("[1] ") and "-> crop [" in first["turns"]
    assert "-> error: reversed_bbox" in rows[1]["turns"]
    assert first["rewards/accuracy"] == float(sample.answer == "A")
    assert (first["rewards/format"], rows[1]["rewards/format"]) == (1.0, 0.0)
    assert first["reward"] == pytest.approx(first["rewards/accuracy"] + 0.1)
    assert first["image"] == rows[1]["image"] != rows[GROUP]["image"]  # one thumbnail per prompt
    assert max(load_image(tmp_path / "rollouts" / first["image"]).size) == 64


def test_steps_are_optimizer_steps_and_no_multiple_is_skipped(tmp_path, last_rollout):
    """3 optimizer steps per training step (as IAPO's mini-batches make), a table every 4: steps 3, 6, 9, 12 end the
    training steps; 6 passes 4, 9 passes 8, 12 reaches 12."""
    trajectories = last_rollout.trajectories
    fit(RolloutModule(last_rollout, updates=3), False, tmp_path, max_steps=12, every=4)
    assert logged_steps(tmp_path) == [6] * len(trajectories) + [9] * len(trajectories) + [12] * len(trajectories)


class UnreachableWandbLogger(WandbLogger):
    def log_table(self, *args, **kwargs) -> None:
        raise ConnectionError("W&B server unreachable")


def test_a_wandb_failure_falls_back_to_json_lines(tmp_path, offline_wandb, last_rollout):
    logger = UnreachableWandbLogger(offline=True, save_dir=str(tmp_path), project="iapo-test")
    try:
        with pytest.warns(UserWarning, match="W&B logging failed"):
            fit(RolloutModule(last_rollout), logger, tmp_path / "rollouts")
    finally:
        logger.experiment.finish()
    assert logged_steps(tmp_path / "rollouts") == [2] * 4 + [4] * 4


def test_with_wandb_offline_a_table_is_logged(tmp_path, offline_wandb, last_rollout):
    trajectories = last_rollout.trajectories
    record = dataclasses.replace(last_rollout, rewards={"total": torch.arange(len(trajectories), dtype=torch.float)})
    logger = WandbLogger(offline=True, save_dir=str(tmp_path), project="iapo-test")
    try:
        fit(RolloutModule(record), logger, tmp_path / "rollouts")
        summary = dict(logger.experiment.summary["rollouts"])
    finally:
        logger.experiment.finish()
    assert summary["_type"] == "table-file" and (summary["nrows"], summary["ncols"]) == (len(trajectories), 9)
    assert not (tmp_path / "rollouts" / "rollouts.jsonl").exists()
    # the run's copy of each table: rows and columns (media columns appear as their type name)
    tables = sorted((tmp_path / "wandb").glob("offline-run-*/files/media/table/rollouts_*.table.json"))
    assert len(tables) == STEPS // EVERY
    table = json.loads(tables[0].read_text())
    columns = ["step", "uid", "question", "image", "turns", "final_answer", "gold_answer", "tool_calls"]
    assert table["columns"] == [*columns, "reward"]
    assert [row[0] for row in table["data"]] == [EVERY] * len(trajectories)
    assert [row[3] for row in table["data"]] == ["Image"] * len(trajectories)
    assert [row[-1] for row in table["data"]] == [0.0, 1.0, 2.0, 3.0]
    # the table artifact W&B staged for upload: every row points at its prompt's image, one file per prompt
    files = [path.read_bytes() for path in (offline_wandb / "artifacts" / "staging").iterdir()]
    staged = [json.loads(data) for data in files if data.startswith(b"{")]
    staged = [t for t in staged if t.get("columns") == table["columns"]]
    assert len(staged) >= STEPS // EVERY
    for staged_table in staged:
        images = [row[3] for row in staged_table["data"]]
        assert all(image["_type"] == "image-file" and image["width"] == 64 for image in images)
        assert len({image["path"] for image in images}) == 2
