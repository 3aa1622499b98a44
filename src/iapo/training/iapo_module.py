"""`IAPOModule`: the Lightning wrapper of one IAPO step (`iapo.training.step`), evaluation and rollouts.

    python src/cli.py fit --config configs/iapo.yaml                                          # paper setting (GPU)
    python src/cli.py fit --config configs/iapo.yaml --config configs/tiny.yaml --trainer.max_steps=3   # offline
    python src/cli.py fit --config configs/iapo.yaml --config configs/grpo.yaml               # GRPO baseline
    python src/cli.py predict --config configs/tiny.yaml                                      # rollouts only

One training step is one batch of B prompts: G trajectories each are rolled out, scored and used for μ epochs of
mini-batch updates (manual optimisation; `trainer.max_steps` counts optimizer steps). Models are loaded in
`configure_model`; a reward configuration without the attribution reward never loads the teacher and is exactly
GRPO on the same pipeline. The checkpoint holds only the trainable (LoRA) weights, the optimizer, scheduler, step
counter and RNG states. The method as built is described in docs/method.md.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from iapo.agent.rollout import HFPolicy, SamplingSettings, rollout
from iapo.attribution.score import AttributionSettings
from iapo.evaluation.judge import JudgeSettings
from iapo.evaluation.results import HEADLINE_METRIC
from iapo.models.loader import ModelSettings, describe_model
from iapo.training import cold_start  # noqa: F401  registers the cold-started tiny models (`tiny-student-sft`, ...)
from iapo.training.guards import DEFAULT_MAX_ABS_WEIGHT, NonFiniteGuard
from iapo.training.policy_base import PolicyModule, greedy_settings
from iapo.training.rewards import RewardContext, build_rewards
from iapo.training.step import StepRecord, StepSettings, collect, train_step
from iapo.training.update import PPOSettings

DEFAULT_REWARDS = {"accuracy": 1.0, "format": 0.1, "attribution": 0.5}


def mean_over_processes(metrics: dict[str, float]) -> dict[str, float]:
    """Each metric averaged over the processes (DDP); a key a process did not produce counts as 0 there. Gathered as
    one object because the key sets may differ (`errors/<kind>`), which rules out `log(..., sync_dist=True)`: Lightning
    pairs its all-reduces by key."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return metrics
    gathered: list[dict[str, float]] = [{} for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather_object(gathered, metrics)
    keys = sorted(set().union(*gathered))
    return {key: sum(part.get(key, 0.0) for part in gathered) / len(gathered) for key in keys}


class IAPOModule(PolicyModule):
    """The student agent, trained with IAPO (or GRPO when no configured reward needs attribution).

    Args:
        student: the policy (HF id, local directory or tiny spec; `lora` makes it trainable, `nf4` is QLoRA).
        teacher: the frozen stronger model whose attribution the student is rewarded for matching; loaded only when
            a configured reward (or the attribution loss) needs attribution.
        sampling: the agent's prompt (toolset), agent-loop limits and sampling parameters for training rollouts.
        group_size: G, trajectories per prompt.
        rewards: reward name -> weight (`iapo.training.rewards.REWARDS`); weight 0 drops a reward.
        attribution: method, target, grid and divergence of the attribution reward.
        ppo: μ epochs, mini-batch size, clip ε, KL β, loss aggregation, gradient clipping.
        advantage_scale: a registered scale (`iapo.training.algo.ADVANTAGE_SCALES`): "group" (default), "batch",
            "none", or your own (`register_advantage_scale`).
        lr, weight_decay, warmup_steps: AdamW with linear warm-up, then constant.
        predict_group_size: trajectories per prompt in `predict`.
        tools: evaluate (validate / test) with the toolset; False answers directly in one turn.
        label: the model's name in result tables (default: the adapter or model directory name).
        judge: an optional LLM judge (`iapo.evaluation.judge`), reported beside the rule-based score in its own
            column and usable as the `judge` reward; never the headline.
        max_skipped_steps: stop with one clear error after this many steps in a row whose every update was skipped
            as not finite (a run that cannot learn would otherwise never reach `max_steps`).
        max_abs_weight: stop when a trainable weight exceeds this after an optimizer step (an exploding lr).
        attribution_loss: λ_a, the weight of the attribution loss (`iapo.training.alignment`: the divergence through
            the student's own attribution, added to each PPO mini-batch's loss; occlusion or a gradient method; loads the teacher).
            0, the default and the paper's: the term is in the reward only.
        attribution_loss_calls: the attribution loss over at most this many of a mini-batch's calls, drawn at random
            (null, the default: every call); its second-order backward is most of a step's cost and memory.
    """

    def __init__(
        self,
        student: ModelSettings | None = None,
        teacher: ModelSettings | None = None,
        sampling: SamplingSettings | None = None,
        group_size: int = 4,
        rewards: dict[str, float] | None = None,
        attribution: AttributionSettings | None = None,
        ppo: PPOSettings | None = None,
        advantage_scale: str = "group",
        lr: float = 1e-5,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        predict_group_size: int = 1,
        tools: bool = True,
        label: str | None = None,
        judge: JudgeSettings | None = None,
        max_skipped_steps: int = 3,
        max_abs_weight: float = DEFAULT_MAX_ABS_WEIGHT,
        attribution_loss: float = 0.0,
        attribution_loss_calls: int | None = None,
    ) -> None:
        super().__init__()
        self.step_settings = StepSettings(
            group_size=group_size,
            sampling=sampling or SamplingSettings(),
            attribution=attribution or AttributionSettings(),
            ppo=ppo or PPOSettings(),
            advantage_scale=advantage_scale,
            max_abs_weight=max_abs_weight,
            attribution_loss=attribution_loss,
            attribution_loss_calls=attribution_loss_calls,
        )
        self.nonfinite_guard = NonFiniteGuard(max_skipped_steps)
        self.configured_rewards = build_rewards(
            DEFAULT_REWARDS if rewards is None else rewards, RewardContext(self.step_settings.attribution, judge)
        )
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.strict_loading = False  # checkpoints hold only the trainable weights
        self.student_settings = student or ModelSettings()
        self.teacher_settings = teacher or ModelSettings(name="tiny-teacher")
        self.sampling = self.step_settings.sampling
        self.attribution = self.step_settings.attribution
        self.tools = tools
        self.judge_settings = judge
        self.policy_model = None
        self.processor = None
        self._teacher: tuple | None = None  # (model, processor); kept out of the module tree: frozen, not saved
        self.tallies = nn.ModuleList()

    @property
    def uses_teacher(self) -> bool:
        return self.configured_rewards.needs_attribution or self.step_settings.uses_teacher_attribution

    def on_fit_start(self) -> None:
        if self.trainer.is_global_zero:
            print(self.run_summary(self.trainer.max_steps, self.trainer.default_root_dir), flush=True)

    def run_summary(self, max_steps: int, output_dir: str) -> str:
        """What a fit of this module is, in one line: the algorithm and its rewards, the models, the budget, and
        where its outputs go."""
        rewards = " + ".join(f"{name} {weight:g}" for name, weight in self.configured_rewards.weights.items())
        models = f"student {describe_model(self.student_settings.name)}"
        if self.uses_teacher:
            a = self.attribution
            rewards += f" ({a.method} of the {a.target} over {a.layout}, {a.divergence}, {a.form})"
            if self.step_settings.attribution_loss > 0:
                calls = self.step_settings.attribution_loss_calls
                rewards += f"; attribution loss {self.step_settings.attribution_loss:g}"
                rewards += f" over {calls} calls a mini-batch" if calls else ""
            models += f", teacher {describe_model(self.teacher_settings.name)}"
        else:
            models += " (no teacher)"
        budget = f"{self.step_settings.group_size} samples per prompt, {max_steps} optimizer steps"
        method = "IAPO" if self.uses_teacher else "GRPO"
        return f"[fit] {method}: rewards {rewards}; {models}; {budget}; outputs in {output_dir}"

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

    def explain(self, samples: list, images: list) -> StepRecord:
        """Greedy trajectories of `samples` (one each) with the student's attribution, and the teacher's when the run
        has one (a run without the attribution reward, GRPO, never loads the teacher: its teacher dicts are empty)."""
        settings = dataclasses.replace(
            self.step_settings, group_size=1, sampling=greedy_settings(self.sampling, self.tools)
        )
        teacher = self.teacher if self.uses_teacher else None
        return collect(
            self.policy_model, self.processor, samples, images, settings, self.configured_rewards, teacher, True
        )

    # ---------------------------------------------------------------- training

    def training_step(self, batch: dict, batch_idx: int) -> dict | None:
        """One IAPO step (`iapo.training.step.train_step`); returns `{"record": StepRecord}` for callbacks."""
        skipped_rows = float(sum(batch["skipped"].values()))
        if not batch["samples"]:
            if self.trainer.world_size > 1:  # the other processes would wait for this one in the all-reduce
                raise RuntimeError(
                    f"a training batch had no decodable row on process {self.global_rank} ({dict(batch['skipped'])}): "
                    "on several processes every batch must hold rows — clean the data or set data.strict: true"
                )
            self.log("data/skipped_rows", skipped_rows, batch_size=1)
            return None
        optimizer = self.optimizers()
        record = train_step(
            self.policy_model,
            self.processor,
            optimizer,
            batch["samples"],
            batch["images"],
            self.step_settings,
            self.configured_rewards,
            teacher=self.teacher if self.uses_teacher else None,
            backward=self.manual_backward,
            on_step=self.lr_schedulers().step,
        )
        metrics = record.metrics
        self.nonfinite_guard.update(
            metrics["skipped_nonfinite"], metrics["optimizer_steps"], record.rewards, self.configured_rewards.weights
        )
        metrics = {**metrics, **record.timings}
        metrics["lr"] = optimizer.param_groups[0]["lr"]
        metrics["data/skipped_rows"] = skipped_rows
        # Lightning's x-axis counts batches; a batch makes several optimizer steps, and the callbacks name their
        # outputs by optimizer step, so every row is logged at the optimizer step it ends on.
        metrics["step"] = float(self.global_step)
        metrics = mean_over_processes({k: float(v) for k, v in metrics.items()})
        size = len(record.trajectories)
        reward = metrics.pop("reward")
        self.log_dict(metrics, prog_bar=False, batch_size=size)
        self.log("reward", reward, prog_bar=True, batch_size=size)
        return {"record": record}

    # ---------------------------------------------------------------- validation and predict

    def on_test_epoch_start(self) -> None:
        self._start_tallies("test")

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Evaluate on the test sets: greedy agent rollouts (tools on or off), official metrics, tool statistics."""
        self._score_batch(batch, dataloader_idx)

    def evaluation_results(self) -> dict:
        """The last `test` run: label, model, adapter, tools, per-benchmark summaries and the average headline."""
        benchmarks = {tally.name: tally.summary() for tally in self.tallies}
        scores = {name: b["metrics"][HEADLINE_METRIC] for name, b in benchmarks.items() if b["rows_scored"] > 0}
        student = self.student_settings
        return {
            "label": self.hparams.label or Path(student.adapter or student.name).name,
            "model": student.name,
            "adapter": student.adapter,
            "tools": self.hparams.tools,
            "toolset": self.sampling.toolset if self.tools else None,
            "benchmarks": benchmarks,
            "average": sum(scores.values()) / len(scores) if scores else float("nan"),
            "unscored": sorted(set(benchmarks) - set(scores)),  # every row skipped: reported, not averaged as 0
        }

    def on_test_epoch_end(self) -> None:
        for tally in self.tallies:
            tally.gather_batch_skips()
        results = self.evaluation_results()
        scored = {name: b for name, b in results["benchmarks"].items() if name not in results["unscored"]}
        scores = {name: bench["metrics"][HEADLINE_METRIC] for name, bench in scored.items()}
        self.log_dict({f"test/{name}/{HEADLINE_METRIC}": value for name, value in scores.items()})
        judged = {name: bench["judge"]["acc"] for name, bench in results["benchmarks"].items() if "judge" in bench}
        self.log_dict({f"test/{name}/judge": value for name, value in judged.items()})
        self.log("test/average", results["average"])

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        """Roll out the agent on a batch of prompts; returns the samples, trajectories and skipped-row counts."""
        policy = HFPolicy(self.policy_model, self.processor, self.sampling)
        trajectories = rollout(
            policy, self.processor, batch["samples"], batch["images"], self.hparams.predict_group_size, self.sampling
        )
        return {"samples": batch["samples"], "trajectories": trajectories, "skipped": batch["skipped"]}
