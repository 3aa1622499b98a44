"""Lightning callbacks: `RolloutWriter` saves predicted trajectories as JSON lines plus their crops as PNG.

trainer:
  callbacks:
    - class_path: iapo.callbacks.RolloutWriter
      init_args: {output_dir: logs/predict}
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from lightning.pytorch.callbacks import BasePredictionWriter

from iapo.agent.trajectory import trajectory_record


class RolloutWriter(BasePredictionWriter):
    """Writes `<output_dir>/<run>/rollouts.jsonl`, `crops/*.png` and `summary.json` during `predict`."""

    def __init__(self, output_dir: str = "logs/predict", run_name: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.run_dir = Path(output_dir) / (run_name or time.strftime("%Y%m%d-%H%M%S"))
        self.totals: Counter = Counter()
        self.errors: Counter = Counter()
        self.skipped: Counter = Counter()

    def on_predict_start(self, trainer, pl_module) -> None:
        (self.run_dir / "crops").mkdir(parents=True, exist_ok=True)
        (self.run_dir / "rollouts.jsonl").write_text("")

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        samples = prediction["samples"]
        self.skipped.update(prediction["skipped"])
        with open(self.run_dir / "rollouts.jsonl", "a") as out:
            for index, trajectory in enumerate(prediction["trajectories"]):
                sample = samples[trajectory.sample_index]
                crop_files = self._save_crops(trajectory, f"{dataloader_idx}-{batch_idx}-{index}")
                out.write(json.dumps(trajectory_record(trajectory, sample, crop_files)) + "\n")
                self.totals.update(
                    trajectories=1,
                    answered=trajectory.final_answer is not None,
                    tool_calls=trajectory.stats.calls,
                    tool_failures=trajectory.stats.failures,
                )
                self.errors.update(trajectory.stats.errors)

    def _save_crops(self, trajectory, stem: str) -> list[str | None]:
        """Save each turn's returned crop; images[0] is the original, images[k] the k-th successful crop."""
        files: list[str | None] = []
        crops = iter(trajectory.images[1:])
        for turn_index, turn in enumerate(trajectory.turns):
            crop = next(crops, None) if turn.crop_box is not None else None
            if crop is None:
                files.append(None)
                continue
            path = self.run_dir / "crops" / f"{stem}-turn{turn_index}.png"
            crop.save(path)
            files.append(str(path.relative_to(self.run_dir)))
        return files

    def on_predict_end(self, trainer, pl_module) -> None:
        summary = {**self.totals, "errors": dict(self.errors), "skipped_rows": dict(self.skipped)}
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        print(f"wrote {self.totals['trajectories']} trajectories to {self.run_dir / 'rollouts.jsonl'}")
