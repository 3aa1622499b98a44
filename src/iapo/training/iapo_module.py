"""`IAPOModule`: rollout → attribution (student and teacher) → rewards → group advantages → PPO-clip update.

    python src/cli.py fit --config configs/iapo.yaml                            # paper setting (GPU)
    python src/cli.py fit --config configs/iapo.yaml --config configs/tiny.yaml --trainer.max_steps=3   # offline
    python src/cli.py fit --config configs/grpo.yaml                            # baseline: attribution_weight 0
    python src/cli.py predict --config configs/tiny.yaml                        # rollouts only

One training step is one batch of B prompts: G trajectories each are rolled out, scored and used for μ epochs of
mini-batch updates (manual optimisation; `trainer.max_steps` counts optimizer steps). Models are loaded in
`configure_model`; `attribution_weight: 0` never loads the teacher and is exactly GRPO on the same pipeline.
The checkpoint holds only the trainable (LoRA) weights, the optimizer, scheduler, step counter and RNG states.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np
from torch import nn

from iapo.agent.rollout import HFPolicy, SamplingSettings, rollout
from iapo.agent.trajectory import Trajectory
from iapo.attribution.score import AttributionSettings, attribution_distributions
from iapo.evaluation.results import HEADLINE_METRIC
from iapo.models.loader import ModelSettings
from iapo.training.algo import ADVANTAGE_SCALES, group_advantages
from iapo.training.policy_base import PolicyModule
from iapo.training.rewards import AccuracyReward, AttributionReward, FormatReward, compute_rewards
from iapo.training.update import PPOSettings, policy_update


class IAPOModule(PolicyModule):
    """The student agent, trained with IAPO (or GRPO when `attribution_weight` is 0).

    Args:
        student: the policy (HF id, local directory or tiny spec; `lora` makes it trainable, `nf4` is QLoRA).
        teacher: the frozen stronger model whose attribution the student is rewarded for matching.
        sampling: agent-loop limits and sampling parameters for training rollouts.
        group_size: G, trajectories per prompt.
        format_weight: w_fmt, weight of the well-formed-trajectory reward.
        attribution_weight: w_attr, weight of 1 − JSD(student ‖ teacher); 0 is the GRPO baseline.
        attribution: method, target, grid and divergence of the attribution reward.
        ppo: μ epochs, mini-batch size, clip ε, KL β, loss aggregation, gradient clipping.
        advantage_scale: "group" (default), "batch" or "none".
        lr, weight_decay, warmup_steps: AdamW with linear warm-up, then constant.
        predict_group_size: trajectories per prompt in `predict`.
        tools: evaluate (validate / test) with the zoom tool; False answers directly in one turn.
        label: the model's name in result tables (default: the adapter or model directory name).
    """

    def __init__(
        self,
        student: ModelSettings | None = None,
        teacher: ModelSettings | None = None,
        sampling: SamplingSettings | None = None,
        group_size: int = 4,
        format_weight: float = 0.1,
        attribution_weight: float = 0.5,
        attribution: AttributionSettings | None = None,
        ppo: PPOSettings | None = None,
        advantage_scale: str = "group",
        lr: float = 1e-5,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        predict_group_size: int = 1,
        tools: bool = True,
        label: str | None = None,
    ) -> None:
        super().__init__()
        if advantage_scale not in ADVANTAGE_SCALES:
            raise ValueError(f"advantage_scale must be one of {ADVANTAGE_SCALES}, got {advantage_scale!r}")
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.strict_loading = False  # checkpoints hold only the trainable weights
        self.student_settings = student or ModelSettings()
        self.teacher_settings = teacher or ModelSettings(name="tiny-teacher")
        self.sampling = sampling or SamplingSettings()
        self.tools = tools
        self.attribution = attribution or AttributionSettings()
        self.ppo = ppo or PPOSettings()
        self.weights = {"accuracy": 1.0, "format": format_weight}
        self.rewards = {"accuracy": AccuracyReward(), "format": FormatReward()}
        if attribution_weight != 0:
            self.weights["attribution"] = attribution_weight
            self.rewards["attribution"] = AttributionReward(self.attribution.divergence)
        self.policy_model = None
        self.processor = None
        self._teacher: tuple | None = None  # (model, processor); kept out of the module tree: frozen, not saved
        self.tallies = nn.ModuleList()
        self.test_results: dict | None = None
        self.last_rollout: tuple[list[Trajectory], dict] | None = None  # for callbacks that draw or log it

    @property
    def uses_teacher(self) -> bool:
        return "attribution" in self.weights

    def configure_model(self) -> None:
        if self.policy_model is not None:
            return
        device = str(self.trainer.strategy.root_device) if self._trainer is not None else None
        self.policy_model, self.processor = self.student_settings.load(device=device)
        if self.uses_teacher and self._trainer is not None and self.trainer.state.fn == "fit":
            self.teacher()  # load it now, so a missing teacher fails before the first rollout

    def teacher(self) -> tuple:
        """(model, processor) of the frozen teacher, loaded on first use."""
        if self._teacher is None:
            self._teacher = self.teacher_settings.load(device=str(self.device))
        return self._teacher

    def explain(self, samples: list, images: list) -> list[tuple[Trajectory, dict, dict]]:
        """Greedy trajectories of `samples` with the student's and the teacher's attribution distributions."""
        trajectories = self.greedy_rollout(samples, images)
        student = attribution_distributions(self.policy_model, self.processor, trajectories, samples, self.attribution)
        teacher_model, teacher_processor = self.teacher()
        teacher = attribution_distributions(
            teacher_model, teacher_processor, trajectories, samples, self.attribution, reencode=True
        )
        return list(zip(trajectories, student, teacher, strict=True))

    # ---------------------------------------------------------------- training

    def training_step(self, batch: dict, batch_idx: int) -> None:
        if not batch["samples"]:
            self.log("data/skipped_rows", float(sum(batch["skipped"].values())), batch_size=1)
            return
        timings: dict[str, float] = {}
        start = time.perf_counter()
        trajectories = rollout(
            HFPolicy(self.policy_model, self.processor, self.sampling),
            self.processor,
            batch["samples"],
            batch["images"],
            self.hparams.group_size,
            self.sampling,
        )
        timings["time/rollout"] = time.perf_counter() - start
        scored = {**batch, "attributions": self._attributions(trajectories, batch["samples"], timings)}
        total, parts = compute_rewards(self.rewards, self.weights, trajectories, scored)
        scored["rewards"] = {**parts, "total": total}
        advantages = group_advantages(total, self.hparams.group_size, self.hparams.advantage_scale)
        start = time.perf_counter()
        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        stats = policy_update(
            self.policy_model,
            optimizer,
            trajectories,
            advantages,
            self.ppo,
            self.processor.tokenizer.pad_token_id,
            backward=self.manual_backward,
            on_step=scheduler.step,
        )
        timings["time/update"] = time.perf_counter() - start
        metrics = {**self._rollout_metrics(trajectories, total, parts, scored), **stats, **timings}
        metrics["lr"] = optimizer.param_groups[0]["lr"]
        metrics["data/skipped_rows"] = float(sum(batch["skipped"].values()))
        self.log_dict({k: float(v) for k, v in metrics.items()}, prog_bar=False, batch_size=len(trajectories))
        self.log("reward", float(total.mean()), prog_bar=True, batch_size=len(trajectories))
        self.last_rollout = (trajectories, scored)

    def _attributions(self, trajectories: list[Trajectory], samples, timings: dict) -> dict[str, list]:
        if not self.uses_teacher:
            return {"student": [{} for _ in trajectories], "teacher": [{} for _ in trajectories]}
        start = time.perf_counter()
        student = attribution_distributions(self.policy_model, self.processor, trajectories, samples, self.attribution)
        timings["time/attribution_student"] = time.perf_counter() - start
        start = time.perf_counter()
        teacher_model, teacher_processor = self.teacher()
        teacher = attribution_distributions(
            teacher_model, teacher_processor, trajectories, samples, self.attribution, reencode=True
        )
        timings["time/attribution_teacher"] = time.perf_counter() - start
        return {"student": student, "teacher": teacher}

    def _rollout_metrics(self, trajectories, total, parts, scored) -> dict[str, float]:
        group = self.hparams.group_size
        metrics: dict[str, float] = {}
        for name, values in parts.items():
            metrics[f"reward/{name}"] = float(values.mean())
            metrics[f"reward/{name}_std"] = float(values.std()) if len(values) > 1 else 0.0
        grouped = total.view(-1, group)
        metrics["reward/total"] = float(total.mean())
        metrics["reward_std"] = float(total.std()) if len(total) > 1 else 0.0
        metrics["frac_reward_zero_std"] = float((grouped.max(1).values == grouped.min(1).values).float().mean())
        if "attribution" in parts:
            attributed = [
                s and t
                for s, t in zip(scored["attributions"]["student"], scored["attributions"]["teacher"], strict=True)
            ]
            values = parts["attribution"][[bool(a) for a in attributed]]
            metrics["attribution/jsd"] = float(1 - values.mean()) if len(values) else float("nan")
            metrics["attribution/unattributed"] = float(sum(not a for a in attributed))
        calls = sum(t.stats.calls for t in trajectories)
        failures = sum(t.stats.failures for t in trajectories)
        metrics["tools/call_frequency"] = calls / len(trajectories)
        metrics["tools/failure_frequency"] = failures / max(calls, 1)
        metrics["turns/mean"] = float(np.mean([len(t.turns) for t in trajectories]))
        metrics["completion_length"] = float(np.mean([t.completion_length for t in trajectories]))
        metrics["answered"] = float(np.mean([t.final_answer is not None for t in trajectories]))
        errors = Counter()
        for t in trajectories:
            errors.update(t.stats.errors)
        for kind, count in errors.items():
            metrics[f"errors/{kind}"] = count / len(trajectories)
        return metrics

    # ---------------------------------------------------------------- validation and predict

    def on_test_epoch_start(self) -> None:
        self._start_tallies("test")

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Evaluate on the test sets: greedy agent rollouts (tools on or off), official metrics, tool statistics."""
        self._score_batch(batch, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        benchmarks = {tally.name: tally.summary() for tally in self.tallies}
        scores = {name: bench["metrics"][HEADLINE_METRIC] for name, bench in benchmarks.items()}
        student = self.student_settings
        self.test_results = {
            "label": self.hparams.label or Path(student.adapter or student.name).name,
            "model": student.name,
            "adapter": student.adapter,
            "tools": self.hparams.tools,
            "benchmarks": benchmarks,
            "average": sum(scores.values()) / len(scores),
        }
        self.log_dict({f"test/{name}/{HEADLINE_METRIC}": value for name, value in scores.items()})
        self.log("test/average", self.test_results["average"])

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        """Roll out the agent on a batch of prompts; returns the samples, trajectories and skipped-row counts."""
        policy = HFPolicy(self.policy_model, self.processor, self.sampling)
        trajectories = rollout(
            policy, self.processor, batch["samples"], batch["images"], self.hparams.predict_group_size, self.sampling
        )
        return {"samples": batch["samples"], "trajectories": trajectories, "skipped": batch["skipped"]}
