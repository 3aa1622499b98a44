"""`RolloutTable`: the training rollouts of a step as a W&B table, or as JSON lines when W&B is not attached.

callbacks:
  rollout_table:
    class_path: iapo.training.rollout_table.RolloutTable
    init_args: {every_n_steps: 10, dirpath: logs/iapo/rollouts}

One row per trajectory of the step's `StepRecord` (`on_train_batch_end` outputs): question (with its lettered options), the original image (a
thumbnail), the assistant turns with what each tool call returned, the final and the gold answer, the number of tool
calls, every reward component (`rewards/<name>`) and their weighted sum (`reward`), named as the logged metrics. With a `WandbLogger` the rows are logged as the
table `rollouts`; otherwise (or when W&B logging fails) they are appended to `<dirpath>/rollouts.jsonl`, with the
thumbnails under `<dirpath>/images/`. Logging never stops training.

Steps are optimizer steps (`trainer.global_step`, the x-axis of every metric): the table is written on the training
step that reaches or passes each multiple of `every_n_steps`.
"""

from __future__ import annotations

import json
from pathlib import Path

import wandb
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image

from iapo.training.callbacks import EveryNSteps
from iapo.training.step import StepRecord


def question_text(sample) -> str:
    """The question followed by its lettered options, one a line."""
    options = [f"{letter}. {option}" for letter, option in zip(sample.letters, sample.options, strict=True)]
    return "\n".join([sample.question, *options])


def turns_text(trajectory) -> str:
    """Each assistant turn, numbered, with the tool's answer (a crop box or an error) under it."""
    lines = []
    for index, turn in enumerate(trajectory.turns, start=1):
        lines.append(f"[{index}] {turn.text.strip()}")
        if turn.error:
            lines.append(f"    -> error: {turn.error}")
        elif turn.crop_box:
            lines.append(f"    -> crop {list(turn.crop_box)}")
    return "\n".join(lines)


def thumbnail(image: Image.Image, max_side: int | None) -> Image.Image:
    """`image` shrunk (a copy) to fit `max_side` pixels; unchanged when it already fits or `max_side` is None."""
    if max_side is None or max(image.size) <= max_side:
        return image
    small = image.copy()
    small.thumbnail((max_side, max_side))
    return small


class RolloutTable(EveryNSteps):
    """Logs the step's rollouts every `every_n_steps` optimizer steps (see the module docstring).

    Args:
        every_n_steps: table frequency in optimizer steps.
        dirpath: where the JSON lines and thumbnails go when no `WandbLogger` is attached.
        max_image_side: the original image is shrunk to fit this many pixels (None keeps it whole).
        key: name of the W&B table.
    """

    def __init__(
        self,
        every_n_steps: int = 10,
        dirpath: str = "logs/rollouts",
        max_image_side: int | None = 512,
        key: str = "rollouts",
    ) -> None:
        super().__init__(every_n_steps)
        self.dirpath = Path(dirpath)
        self.max_image_side = max_image_side
        self.key = key

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        record = outputs.get("record") if isinstance(outputs, dict) else None
        if not self.due(trainer) or not trainer.is_global_zero or record is None:
            return
        rows = self.rows(record)
        loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        if loggers:
            try:
                self._log_wandb(loggers[0], rows, step)
                return
            except Exception as err:  # a table must never stop training; the rows go to disk instead
                rank_zero_warn(f"RolloutTable: W&B logging failed ({err!r}); writing {self.dirpath / 'rollouts.jsonl'}")
        self._write_json_lines(rows, step)

    def rows(self, record: StepRecord) -> list[dict]:
        """One dict per trajectory; `image` is the (shrunk) original as a PIL image, shared by its group."""
        images: dict[int, Image.Image] = {}
        rows = []
        for row, trajectory in enumerate(record.trajectories):
            sample = record.samples[trajectory.sample_index]
            if trajectory.sample_index not in images:
                images[trajectory.sample_index] = thumbnail(trajectory.images[0], self.max_image_side)
            entry = {
                "uid": trajectory.uid,
                "question": question_text(sample),
                "image": images[trajectory.sample_index],
                "turns": turns_text(trajectory),
                "final_answer": trajectory.final_answer,
                "gold_answer": sample.answer,
                "tool_calls": trajectory.stats.calls,
            }
            entry.update(
                {f"rewards/{name}": float(values[row]) for name, values in record.rewards.items() if name != "total"}
            )
            entry["reward"] = float(record.rewards["total"][row])
            rows.append(entry)
        return rows

    def _log_wandb(self, logger: WandbLogger, rows: list[dict], step: int) -> None:
        shared = {id(row["image"]): wandb.Image(row["image"]) for row in rows}  # one media file per prompt
        data = [[step, *{**row, "image": shared[id(row["image"])]}.values()] for row in rows]
        logger.log_table(self.key, columns=["step", *rows[0]], data=data, step=step)

    def _write_json_lines(self, rows: list[dict], step: int) -> None:
        images_dir = self.dirpath / "images"
        images_dir.mkdir(parents=True, exist_ok=True)
        saved: dict[int, str] = {}
        with open(self.dirpath / "rollouts.jsonl", "a") as out:
            for row in rows:
                image = row["image"]
                if id(image) not in saved:
                    path = images_dir / f"step-{step}-{len(saved)}.png"
                    image.save(path)
                    saved[id(image)] = str(path.relative_to(self.dirpath))
                out.write(json.dumps({"step": step, **row, "image": saved[id(image)]}) + "\n")
