"""Lightning callbacks: adapter checkpoints, attribution pictures, and predicted-rollout files.

callbacks:
  adapters:                  # LoRA adapter + processor + config, PeftModel-loadable
    class_path: iapo.training.callbacks.AdapterCheckpoint
    init_args: {dirpath: logs/adapters, monitor: val/acc, save_top_k: 2}
  attribution_maps:          # student vs teacher pictures every N steps
    class_path: iapo.training.callbacks.AttributionMapLogger
  predictions:               # predict: JSON lines + crops
    class_path: iapo.training.callbacks.RolloutWriter
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import yaml
from lightning.pytorch.callbacks import BasePredictionWriter, Callback
from lightning.pytorch.loggers import WandbLogger

from iapo.agent.trajectory import trajectory_record
from iapo.attribution.plots import attribution_figure
from iapo.data.sample import drawable
from iapo.evaluation.results import write_results
from iapo.serialization import plain, write_directory_atomically


class EveryNSteps(Callback):
    """Base of callbacks that act every `every_n_steps` optimizer steps. One training step can make several
    optimizer steps (μ epochs × mini-batches), so `due` is true on the step that reaches or passes a multiple."""

    def __init__(self, every_n_steps: int) -> None:
        if every_n_steps < 0:
            raise ValueError(f"every_n_steps must be >= 0 (0 = never), got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self._step_before = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._step_before = trainer.global_step

    def due(self, trainer) -> bool:
        n = self.every_n_steps
        return bool(n) and trainer.global_step // n > self._step_before // n


class AdapterCheckpoint(EveryNSteps):
    """Saves the LoRA adapter, the processor and the resolved hyper-parameters as a directory that
    `peft.PeftModel.from_pretrained(base_model, dir)` loads directly.

    `last/` is refreshed every `every_n_steps` optimizer steps and at the end of training; when `monitor` is logged
    (e.g. `val/acc` after validation), `step-<N>/` is written and only the best `save_top_k` of them are kept.
    """

    def __init__(
        self,
        dirpath: str = "logs/adapters",
        every_n_steps: int = 50,
        monitor: str | None = "val/acc",
        mode: str = "max",
        save_top_k: int = 2,
    ) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        super().__init__(every_n_steps)
        self.dirpath = Path(dirpath)
        self.monitor = monitor
        self.mode = mode
        self.save_top_k = save_top_k
        self.best: list[tuple[float, str]] = []

    def save(self, trainer, module, name: str, metric: float | None = None) -> Path:
        target = self.dirpath / name

        def fill(path: Path) -> None:
            module.policy_model.save_pretrained(path)
            module.processor.save_pretrained(path)
            info = {"global_step": trainer.global_step, "monitor": self.monitor, "metric": metric}
            config = {"hyper_parameters": plain(dict(module.hparams)), "checkpoint": info}
            (path / "iapo_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

        if trainer.is_global_zero:
            write_directory_atomically(target, fill)
        return target

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.due(trainer):
            self.save(trainer, pl_module, "last")

    def on_train_end(self, trainer, pl_module) -> None:
        self.save(trainer, pl_module, "last")

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not self.monitor or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        name = f"step-{trainer.global_step}"
        self.save(trainer, pl_module, name, metric=value)
        self.best.append((value, name))
        self.best.sort(key=lambda item: item[0], reverse=self.mode == "max")
        for _, stale in self.best[self.save_top_k :]:
            shutil.rmtree(self.dirpath / stale, ignore_errors=True)
        self.best = self.best[: self.save_top_k]

    def state_dict(self) -> dict:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best = [tuple(item) for item in state_dict.get("best", [])]


class AttributionMapLogger(EveryNSteps):
    """Attribution pictures of a few fixed examples (the first `examples` rows of the first validation set, or of
    the first test set in `test`): greedy rollout, then student vs teacher attribution over the image grid and each
    crop (the student's alone in a run without the attribution reward, which never loads the teacher). Drawn every `every_n_steps` optimizer steps during training and once after testing, saved as
    `<dirpath>/<step-N|test>/example-<k>.png` and logged to W&B when a `WandbLogger` is attached."""

    def __init__(self, examples: int = 4, every_n_steps: int = 50, dirpath: str = "logs/attribution") -> None:
        super().__init__(every_n_steps)
        self.examples = examples
        self.dirpath = Path(dirpath)
        self.samples: list = []
        self.images: list = []

    def _pick(self, trainer, stage: str) -> None:
        datasets = trainer.datamodule.datasets_for(stage) if trainer.datamodule else []
        rows = [datasets[0][i] for i in range(min(self.examples, len(datasets[0])))] if datasets else []
        rows = [row for row in rows if row["skip"] is None]
        self.samples, self.images = [row["sample"] for row in rows], [row["image"] for row in rows]

    def on_fit_start(self, trainer, pl_module) -> None:
        self._pick(trainer, "val")

    def on_test_start(self, trainer, pl_module) -> None:
        self._pick(trainer, "test")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.due(trainer):
            self.draw(trainer, pl_module, f"step-{trainer.global_step}")

    def on_test_end(self, trainer, pl_module) -> None:
        self.draw(trainer, pl_module, "test")

    def draw(self, trainer, pl_module, name: str) -> list[Path]:
        if not self.samples or not trainer.is_global_zero:
            return []
        with (
            torch.inference_mode(False),
            torch.enable_grad(),
        ):  # `test` runs under inference mode; attribution needs autograd
            paths = draw_attributions(pl_module, self.samples, self.images, self.dirpath / name)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(f"attribution/{name.split('-')[0]}", [str(p) for p in paths], step=trainer.global_step)
        return paths


def draw_attributions(module, samples: list, images: list, out: Path) -> list[Path]:
    """`out/example-<k>.png` for each sample: `module.explain` (greedy rollout, the student's attribution and the
    teacher's when the run has a teacher)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    record = module.explain(samples, images)
    pairs = zip(record.attributions["student"], record.attributions["teacher"], strict=True)
    for index, (trajectory, (student, teacher)) in enumerate(zip(record.trajectories, pairs, strict=True)):
        sample = samples[index]
        title = f"{sample.question} → {trajectory.final_answer} (gold {sample.answer})"
        images = [drawable(image, MAX_DRAWN_SIDE) for image in trajectory.images]  # an 8K original costs GBs
        figure = attribution_figure(images, student, teacher, module.attribution.grid, title)
        paths.append(out / f"example-{index}.png")
        figure.savefig(paths[-1], dpi=80)
        plt.close(figure)
    return paths


MAX_DRAWN_SIDE = 1024
"""Images in attribution pictures are drawn at most this many pixels on a side (the heat-maps are coarse)."""


class EvalResultsWriter(Callback):
    """After `test`, writes `<output_dir>/<run>/results.json`, `results.md` and `predictions.jsonl`."""

    def __init__(self, output_dir: str = "logs/eval", run_name: str | None = None) -> None:
        self.output_dir = Path(output_dir)
        self.run_name = run_name

    def on_test_end(self, trainer, pl_module) -> None:
        records = [record for tally in pl_module.tallies for record in tally.records]
        if trainer.world_size > 1:  # each process scored its share of the rows
            gathered: list[list[dict]] = [[] for _ in range(trainer.world_size)]
            torch.distributed.all_gather_object(gathered, records)
            records = [record for part in gathered for record in part]
        if not trainer.is_global_zero:
            return
        results = pl_module.evaluation_results()
        run_dir = self.output_dir / (self.run_name or f"{results['label']}-{time.strftime('%Y%m%d-%H%M%S')}")
        write_results(run_dir, results, records)
        print(f"results: {run_dir / 'results.md'}\n{(run_dir / 'results.md').read_text()}")


class RolloutWriter(BasePredictionWriter):
    """Writes `<output_dir>/<run>/rollouts.jsonl`, `crops/*.png` and `summary.json` during `predict` (on several
    processes, one `rollouts.rank<r>.jsonl` and `summary.rank<r>.json` per process in one run directory)."""

    def __init__(self, output_dir: str = "logs/predict", run_name: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.run_dir = Path(output_dir) / (run_name or time.strftime("%Y%m%d-%H%M%S"))
        self.totals: Counter = Counter()
        self.errors: Counter = Counter()
        self.skipped: Counter = Counter()

    def on_predict_start(self, trainer, pl_module) -> None:
        self.run_dir = Path(trainer.strategy.broadcast(str(self.run_dir)))  # one directory for every process
        suffix = f".rank{trainer.global_rank}" if trainer.world_size > 1 else ""
        self.rollouts, self.summary = self.run_dir / f"rollouts{suffix}.jsonl", self.run_dir / f"summary{suffix}.json"
        (self.run_dir / "crops").mkdir(parents=True, exist_ok=True)
        self.rollouts.write_text("")

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        samples = prediction["samples"]
        self.skipped.update(prediction["skipped"])
        with open(self.rollouts, "a") as out:
            for index, trajectory in enumerate(prediction["trajectories"]):
                sample = samples[trajectory.sample_index]
                stem = f"{trainer.global_rank}-{dataloader_idx}-{batch_idx}-{index}"
                crop_files = self._save_crops(trajectory, stem)
                out.write(json.dumps(trajectory_record(trajectory, sample, crop_files)) + "\n")
                self.totals.update(
                    trajectories=1,
                    answered=trajectory.final_answer is not None,
                    tool_calls=trajectory.stats.calls,
                    tool_failures=trajectory.stats.failures,
                )
                self.errors.update(trajectory.stats.errors)

    def _save_crops(self, trajectory, stem: str) -> list[str | None]:
        """Save the crop each turn's observation showed (None for turns that showed none)."""
        files: list[str | None] = []
        for turn_index, turn in enumerate(trajectory.turns):
            if turn.image_index is None:
                files.append(None)
                continue
            path = self.run_dir / "crops" / f"{stem}-turn{turn_index}.png"
            trajectory.images[turn.image_index].save(path)
            files.append(str(path.relative_to(self.run_dir)))
        return files

    def on_predict_end(self, trainer, pl_module) -> None:
        summary = {**self.totals, "errors": dict(self.errors), "skipped_rows": dict(self.skipped)}
        self.summary.write_text(json.dumps(summary, indent=2))
        print(f"wrote {self.totals['trajectories']} trajectories to {self.rollouts}")
