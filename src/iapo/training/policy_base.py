"""`PolicyModule`: what the RL module (`iapo.training.iapo_module.IAPOModule`) and the cold start (`iapo.training.sft_module.SFTModule`) share.

Both train one policy (`self.policy_model`, `self.processor`, loaded in `configure_model`) with AdamW and a linear
warm-up, evaluate it with greedy agent rollouts (tools on, or one direct-answer turn with `self.tools` False), and
write checkpoints that hold only the trainable weights, plain hyper-parameters and the RNG states (they load with
`torch.load(..., weights_only=True)`, and a resumed run samples what the original would have).

Subclasses set `self.policy_model`, `self.processor`, `self.sampling` and `self.tools`, and save `lr`,
`weight_decay` and `warmup_steps` among their hyper-parameters.
"""

from __future__ import annotations

import dataclasses
import random

import lightning as L
import numpy as np
import torch
from torch import nn

from iapo.agent.rollout import HFPolicy, SamplingSettings, rollout
from iapo.agent.trajectory import Trajectory
from iapo.evaluation.judge import Judge, JudgeSettings
from iapo.evaluation.results import HEADLINE_METRIC, BenchmarkTally
from iapo.serialization import plain
from iapo.training import log_filters  # noqa: F401  (filters warnings that leave the user nothing to do)


def greedy_settings(sampling: SamplingSettings, tools: bool) -> SamplingSettings:
    """Evaluation settings: greedy; with tools off, one turn under the direct-answer prompt."""
    settings = dataclasses.replace(sampling, do_sample=False)
    if not tools:
        settings = dataclasses.replace(settings, max_turns=1, toolset=None, protocol="tool_call")
    return settings


VALIDATION_METRICS = {
    "tools/call_frequency": "mean_tool_calls",
    "tools/failure_frequency": "tool_failure_rate",
    "tools/call_rate": "tool_call_rate",
    "answered": "answered_rate",
}
"""Logged name (training's, under `val/`) → key of a benchmark's `BenchmarkTally.summary()`."""


class PolicyModule(L.LightningModule):
    """Optimiser, greedy evaluation and checkpoint conventions of the modules that train a policy."""

    # set by subclasses (`policy_model` in `configure_model`); not class attributes, which would shadow the
    # submodule that `nn.Module` registers on assignment
    sampling: SamplingSettings
    tools: bool
    judge_settings: JudgeSettings | None = None  # subclasses with a `judge` argument set it
    _judge: Judge | None = None

    def configure_optimizers(self):
        params = [p for p in self.policy_model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the student has no trainable parameters: add `student.lora: {}` to the config")
        optimizer = torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        warmup = max(self.hparams.warmup_steps, 1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---------------------------------------------------------------- greedy evaluation

    def greedy_rollout(self, samples: list, images: list) -> list[Trajectory]:
        """One greedy trajectory per prompt (see `greedy_settings`)."""
        settings = greedy_settings(self.sampling, self.tools)
        policy = HFPolicy(self.policy_model, self.processor, settings)
        return rollout(policy, self.processor, samples, images, 1, settings)

    def evaluation_judge(self) -> Judge | None:
        """The configured judge, built on first use (a run that never evaluates needs no key or judge model)."""
        if self.judge_settings is not None and self._judge is None:
            self._judge = self.judge_settings.build()
        return self._judge

    def _start_tallies(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        judge = self.evaluation_judge()
        self.tallies = nn.ModuleList(
            BenchmarkTally(
                d.name,
                d.samples,
                datamodule.load_skips.get(d.name),
                judge=judge,
                selection=datamodule.selections.get(d.name),
            )
            for d in datamodule.datasets_for(stage)
        ).to(self.device)

    def _score_batch(self, batch: dict, dataloader_idx: int) -> None:
        trajectories = self.greedy_rollout(batch["samples"], batch["images"]) if batch["samples"] else []
        self.tallies[dataloader_idx].update(trajectories, batch["samples"], batch["skipped"])

    def on_validation_epoch_start(self) -> None:
        self._start_tallies("val")

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Greedy rollouts, one per prompt, scored by the data set's own rule."""
        self._score_batch(batch, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        """Logs `val/acc` (mean over the sets that scored rows), `val/acc/<set>`, and training's names for tool use
        and answers, averaged over the sets: `val/tools/call_frequency` (calls per question),
        `val/tools/failure_frequency` (failed calls per call), `val/tools/call_rate` (share of questions with a
        call), `val/answered`."""
        for tally in self.tallies:
            tally.gather_batch_skips()
        summaries = {tally.name: tally.summary() for tally in self.tallies}
        summaries = {name: s for name, s in summaries.items() if s["rows_scored"] > 0}
        if not summaries:
            return
        values = {f"val/acc/{name}": s["metrics"][HEADLINE_METRIC] for name, s in summaries.items()}
        values["val/acc"] = sum(values.values()) / len(values)
        values["step"] = float(self.global_step)  # the x-axis of training's rows (`IAPOModule.training_step`)
        for name, key in VALIDATION_METRICS.items():
            values[f"val/{name}"] = sum(s[key] for s in summaries.values()) / len(summaries)
        self.log_dict(values)

    # ---------------------------------------------------------------- checkpoints

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep only trainable weights, plain hyper-parameters (the file loads with `weights_only=True`), and the
        RNG states so a resumed run samples what the original would have."""
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
        checkpoint["hyper_parameters"] = plain(checkpoint.get("hyper_parameters", {}))
        name, keys, position, has_gauss, cached = np.random.get_state()
        checkpoint["rng"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)],
            "python": random.getstate(),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        rng = checkpoint.get("rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            if rng["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
            name, keys, position, has_gauss, cached = rng["numpy"]
            np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
            random.setstate(rng["python"])
