"""The demo's settings: which miniature (`charts`, the paper's setting, or `zoom`), its task and every stage's budget.

The task and the agent's sampling are read from the same YAML overlays the CLI uses (`configs/demo_charts.yaml`:
`data.synthetic_charts` and `model.init_args.sampling`; `configs/demo_task.yaml`: `data.synthetic` and
`model.init_args.sampling`), typed as the CLI types them, so a run of the CLI with the overlay trains on the same
task. The rest (cold-start budgets, RL budget, seeds) lives in `DemoSettings`; `fast()` is the CI-sized version;
`showcase_settings` (`make demo`) and `powered_settings` (`make powered`) are the 6-bar presets from a given pair or
the one that ships with iapo (`SHIPPED_PAIR`).

    settings = demo_settings("charts")            # or "zoom"; .fast() for the CI-sized run
    settings = showcase_settings()                # make demo, from the shipped pair
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from iapo.agent.rollout import SamplingSettings
from iapo.attribution.score import AttributionSettings
from iapo.config_files import config_dir, overlay_values
from iapo.data.datamodule import DataSpec
from iapo.data.synthetic import SyntheticConfig
from iapo.data.synthetic_charts import SyntheticChartsConfig
from iapo.experiments.demo.premise import DEFAULT_VARIANT, PRESET_VARIANTS, VARIANTS

CONFIGS = config_dir()
CHARTS_CONFIG = CONFIGS / "demo_charts.yaml"
SIX_BARS_CONFIG = CONFIGS / "demo_charts_6bars.yaml"
ZOOM_CONFIG = CONFIGS / "demo_task.yaml"
SETTINGS = ("charts", "zoom")
EVAL_SPLITS = ("test", "val")
RL_BUDGETS: dict[str, dict] = {
    "base": {},
    "prompts4": {"rl_prompts": 4, "rl_mini_batch": 16},
    "lr3e-4x320": {"rl_steps": 320, "rl_lr": 3e-4},
}
"""RL budgets of the powered preset, by name: the `DemoSettings` fields each changes (`base` is the preset's own).
`python -m iapo.experiments.demo.budget` measures GRPO's gain over the cold start at each on the validation split;
`--budget NAME` runs the demo at one."""

SHIPPED_PAIR = Path(str(files("iapo") / "checkpoints" / "demo-pair"))
"""The 6-bar student and teacher that ship with iapo, built by `make pair` (`checkpoints/demo-pair/README.md`: how,
their SHA-256s, what they measure); `make demo` and `make powered` start from them unless given another pair."""

POWERED_GROUP_SIZE = 3
"""Samples per prompt of the powered comparison. Its student names a bar at chance (1 in 6), so a group of 4 all fails
about (5/6)^4 = 48% of the time, at premise 1's 50%: on three fresh prompt sets 55 / 41 / 44% (1 of 3 held); of 3,
(5/6)^3 = 58%, measured 66 / 69 / 61 / 61% on four (docs/results.md, "Groups of three")."""


def read_overlay(path: Path, data_key: str, task_type: type) -> tuple[object, SamplingSettings]:
    """(`data.<data_key>` typed as `task_type`, `model.init_args.sampling` as `SamplingSettings`) of a CLI overlay,
    parsed by jsonargparse as `src/cli.py` parses them."""
    task_key, sampling_key = f"data.{data_key}", "model.init_args.sampling"
    values = overlay_values(path, {task_key: task_type, sampling_key: SamplingSettings})
    return values[task_key], values[sampling_key]


def synthetic_task(path: Path = ZOOM_CONFIG) -> SyntheticConfig:
    """The zoom miniature's task: the `data.synthetic` block of `configs/demo_task.yaml`."""
    return read_overlay(path, "synthetic", SyntheticConfig)[0]


def charts_task(path: Path = CHARTS_CONFIG) -> SyntheticChartsConfig:
    """The paper miniature's task: the `data.synthetic_charts` block of `configs/demo_charts.yaml`."""
    return read_overlay(path, "synthetic_charts", SyntheticChartsConfig)[0]


PAPER_ATTRIBUTION = AttributionSettings(
    method="integrated_gradients",
    target="tool_call",
    layout="blocks",
    divergence="kl",
    form="penalty",
    baseline="mean",
    steps=2,
    missing_target="exclude",
)
"""The paper's variant (IG of the tool-call tokens over the P / R / I / T blocks, KL, r − λ·KL) with m = 2 steps (the
CPU budget: an IAPO step with m = 4 took 15 s against GRPO's 5 s). A trajectory without a tool call gets its group's mean term (`exclude`): with `zero`, not calling the
tool would earn the highest term (0 ≥ −KL) and the penalty would reward skipping the tool."""

ZOOM_ATTRIBUTION = AttributionSettings(method="grad_x_input")
"""The zoom setting's variant: gradient × input of the answer over image regions, crops and question, 1 − JSD."""


@dataclass
class DemoSettings:
    """Every stage's budget. One SFT run from the tiny spec saves the candidate cold starts (`candidate_steps`); its
    demonstrations edit the asked bar only `sft_call_accuracy` of the time (the rest edit another bar and answer
    what it shows), so the student learns to read what it edits but not to pick the asked bar (below chance, to
    avoid it); with `sft_thought` the edit demonstrations (the student's and the teacher's) name the bar in a thought
    before the call (`Focus on "ant".`), without it they are the call alone. The teacher is that run continued to
    `teacher_steps` on demonstrations that always edit the asked bar (`teacher_expert`: tool demonstrations only,
    twice the calls per step of the mixed expert), or with `teacher_call_accuracy` a run of its own from the tiny
    spec as long as the student's, on demonstrations that edit the asked bar that often (another bar in the rest),
    trained on the same way; its last
    `teacher_tail_steps` a second run at `teacher_tail_lr`: it knows the right call, which the premise stage
    measures. The regime stage samples `regime_prompts` × `group_size` trajectories of each candidate on *training*
    prompts and keeps the one whose outcome reward is sparsest (most groups where every sample fails) among those
    not hopeless (`min_accuracy`, `min_call_rate`) that read what they edit (P(success | right call) >=
    `min_reading`, where a right call is defined); GRPO and IAPO then start from it with the same seeds, data order
    and budget. The premise stage (`iapo.experiments.demo.measure`) samples the chosen student and the teacher on
    twice `premise_prompts` other training prompts and chooses the attribution variant the RL runs use
    (`iapo.experiments.demo.premise.choose_variant`) among the `premise_variants` it measures
    (`premise.PRESET_VARIANTS` by default: all but the occlusion variants; the paper's always). λ
    (`attribution_weight`) is None to set it from the cold start: the outcome's within-group spread over the
    attribution term's (`iapo.experiments.demo.regime.choose_weight`). `rl_kl_beta` weighs the policy's KL to its
    reference (the cold start) in the RL loss; `call_weight` adds the `tool_call` reward to both methods;
    `attribution_loss` (λ_a, ours: `iapo.training.alignment`, needs a method of `DIFFERENTIABLE_METHODS`) adds the attribution loss
    to IAPO's update, and with λ = 0 IAPO is GRPO plus that loss alone (`iapo_description`);
    `attribution_loss_calls` takes it over that many of a mini-batch's calls drawn at random (None: all). Every
    model is evaluated on the first `test_rows` rows of `eval_split`: `test`, or `val` to choose settings (an RL
    budget, `iapo.experiments.demo.budget`) without reading the test split.

    For each of `optimisability_seeds` (none: the stage is skipped) the optimisability stage
    (`iapo.experiments.demo.optimise`) runs `optimisability_runs` (the attribution term alone and GRPO; names of
    `optimise.REWARDS`) at the RL budget and measures the divergence to the teacher on a fixed probe of
    `probe_prompts` training prompts (after the regime's).

    With `given_student` and `given_teacher` the cold start is not trained: the regime stage measures the given
    student as its one candidate, and every later stage runs as above (`powered_settings`).
    """

    setting: str
    task: SyntheticConfig | SyntheticChartsConfig
    sampling: SamplingSettings
    attribution: AttributionSettings
    out: Path = Path("logs/demo")
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    sft_batch: int = 16
    sft_lr: float = 1e-3
    sft_margin: float = 0.1
    sft_expert: str = "mixed"
    sft_warmup: int = 20
    sft_call_accuracy: float = 1.0
    sft_thought: bool = True
    sft_misfocus: str = "other"
    teacher_expert: str = "tool"
    candidate_steps: tuple[int, ...] = (150, 200, 250, 300)
    teacher_steps: int = 500
    teacher_tail_steps: int = 0
    teacher_tail_lr: float = 3e-4
    teacher_call_accuracy: float | None = None
    regime_prompts: int = 24
    premise_prompts: int = 64
    premise_variants: tuple[str, ...] = PRESET_VARIANTS
    min_accuracy: float = 0.1
    min_call_rate: float = 0.5
    min_reading: float = 0.8
    rl_steps: int = 16
    rl_prompts: int = 4
    group_size: int = 4
    rl_mini_batch: int = 8
    rl_lr: float = 3e-4
    rl_kl_beta: float = 0.0
    lora_rank: int = 16
    format_weight: float = 0.1
    call_weight: float = 0.0
    attribution_weight: float | None = None
    attribution_loss: float = 0.0
    attribution_loss_calls: int | None = None
    train_rows: int = 2048
    rl_rows: int = 512
    test_rows: int = 100
    eval_split: str = "test"
    picture_examples: int = 2
    given_student: Path | None = None
    given_teacher: Path | None = None
    optimisability_seeds: tuple[int, ...] = ()
    optimisability_runs: tuple[str, ...] = ("attribution_call", "grpo")
    probe_prompts: int = 64

    def __post_init__(self) -> None:
        if self.setting not in SETTINGS:
            raise ValueError(f"setting must be one of {SETTINGS}, got {self.setting!r}")
        if self.eval_split not in EVAL_SPLITS:
            raise ValueError(f"eval_split must be one of {EVAL_SPLITS}, got {self.eval_split!r}")
        if (self.given_student is None) != (self.given_teacher is None):
            raise ValueError("a given cold start needs both given_student and given_teacher")
        if not self.attribution_loss >= 0:
            raise ValueError(f"attribution_loss must be >= 0 (0: off), got {self.attribution_loss!r}")
        if self.attribution_loss_calls is not None and self.attribution_loss_calls < 1:
            raise ValueError(f"attribution_loss_calls must be >= 1 (None: all), got {self.attribution_loss_calls!r}")
        if self.teacher_call_accuracy is not None and not 0 <= self.teacher_call_accuracy <= 1:
            raise ValueError(f"teacher_call_accuracy must be in [0, 1] or None, got {self.teacher_call_accuracy}")
        unknown = sorted(set(self.premise_variants) - set(VARIANTS))
        if unknown or DEFAULT_VARIANT not in self.premise_variants:
            raise ValueError(
                f"premise_variants must include {DEFAULT_VARIANT!r} (the paper's) and name only variants of "
                f"{tuple(VARIANTS)}; unknown: {unknown}"
            )
        if sorted(set(self.candidate_steps)) != list(self.candidate_steps) or not self.candidate_steps:
            raise ValueError(f"candidate_steps must be increasing, got {self.candidate_steps}")
        if self.teacher_steps - self.teacher_tail_steps <= self.candidate_steps[-1] or self.teacher_tail_steps < 0:
            raise ValueError(
                "the teacher must train at the SFT lr longer than every candidate student: teacher_steps "
                f"{self.teacher_steps} - teacher_tail_steps {self.teacher_tail_steps} <= {self.candidate_steps[-1]}"
            )

    @property
    def data_name(self) -> str:
        """The `DataSpec` name of the task's synthetic set."""
        return "synthetic_charts" if self.setting == "charts" else "synthetic"

    def data_spec(self, split: str, rows: int) -> DataSpec:
        return DataSpec(self.data_name, split, rows)

    def data_kwargs(self) -> dict:
        """The `VQADataModule` argument that carries the task's knobs."""
        return {"synthetic_charts" if self.setting == "charts" else "synthetic": self.task}

    def build_split(self, split: str, rows: int) -> list:
        """The first `rows` samples of a split of the task (in memory)."""
        if self.setting == "charts":
            from iapo.data.synthetic_charts import build_split
        else:
            from iapo.data.synthetic import build_split
        return build_split(split, rows, self.task)

    @property
    def updates_per_step(self) -> int:
        """Optimizer steps per RL step: one per mini-batch of the step's B × G trajectories (`trainer.max_steps`
        counts optimizer steps)."""
        return math.ceil(self.rl_prompts * self.group_size / self.rl_mini_batch)

    def rewards(self, method: str, attribution_weight: float | None = None) -> dict[str, float]:
        """GRPO: accuracy and format (and, with `call_weight`, the `tool_call` reward: a call that ran); IAPO: the
        same plus the attribution reward at λ (none at λ = 0)."""
        weights = {"accuracy": 1.0, "format": self.format_weight}
        if self.call_weight:
            weights["tool_call"] = self.call_weight
        if method == "grpo":
            return weights
        weight = self.attribution_weight if attribution_weight is None else attribution_weight
        if weight is None:
            raise ValueError("IAPO needs λ: pass the weight chosen at the cold start")
        return {**weights, "attribution": weight} if weight else weights

    def iapo_description(self, attribution_weight: float) -> str:
        """What the IAPO arm adds to GRPO, in words (the report says it beside the results)."""
        parts = [f"the attribution term in the reward at λ = {attribution_weight:g}"] if attribution_weight else []
        if self.attribution_loss:
            calls = f" over {self.attribution_loss_calls} calls a mini-batch" if self.attribution_loss_calls else ""
            parts.append(f"the attribution loss at λ_a = {self.attribution_loss:g}{calls} (ours, docs/method.md)")
        return "IAPO here is GRPO plus " + (" and ".join(parts) or "nothing (λ = 0: the two arms are the same)")

    def fast(self) -> DemoSettings:
        """The CI-sized run: every stage on a tiny budget (two seeds, so the paired interval is computed); its models
        barely learn, so only the report's structure means anything. Its premise stage measures the paper's layout
        and one variant per other attribution target, not all of them."""
        return dataclasses.replace(
            self,
            seeds=(0, 1),
            sft_batch=8,
            candidate_steps=(10, 20),
            teacher_steps=30,
            teacher_tail_steps=5,
            regime_prompts=4,
            premise_prompts=4,
            premise_variants=("blocks", "blocks_per_token", "arguments_blocks", "turn_blocks"),
            rl_steps=2,
            rl_prompts=2,
            train_rows=256,
            rl_rows=64,
            test_rows=8,
            picture_examples=1,
            optimisability_seeds=(0,),
            probe_prompts=2,
        )


def demo_settings(setting: str = "charts", **overrides) -> DemoSettings:
    """The preset of a miniature: `charts` (the paper's setting: `configs/demo_charts.yaml`, the paper's attribution
    variant) or `zoom` (`configs/demo_task.yaml`, the zoom setting's variant); `overrides` replace any field."""
    if setting == "charts":
        task, sampling = read_overlay(CHARTS_CONFIG, "synthetic_charts", SyntheticChartsConfig)
        preset = DemoSettings(
            setting,
            task,
            sampling,
            PAPER_ATTRIBUTION,
            # The student's demonstrations edit the asked bar 10% of the time, below chance (1 in 4), so that a
            # student that reads what it edits is wrong often enough for a sparse outcome reward (at chance, 4 bars
            # leave about (3/4)^4 = 32% of the groups all failing); the teacher's demonstrations always edit it, its
            # last 200 steps at a lower lr. Measured as this preset runs them (docs/results.md, "The preset's cold
            # start"): at 600 steps the student reads (P(success | right call) 0.81 / 0.92 on two prompt sets) and
            # names the asked bar in 16-20% of its samples; the teacher in 99-100%.
            sft_call_accuracy=0.1,
            candidate_steps=(450, 600),
            teacher_steps=1650,
            teacher_tail_steps=200,
        )
    elif setting == "zoom":
        task, sampling = read_overlay(ZOOM_CONFIG, "synthetic", SyntheticConfig)
        preset = DemoSettings(
            setting,
            task,
            sampling,
            ZOOM_ATTRIBUTION,
            sft_lr=3e-4,
            candidate_steps=(400, 600, 800),
            teacher_steps=1700,
            teacher_expert="mixed",
            rl_steps=60,
            test_rows=200,
        )
    else:
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
    return dataclasses.replace(preset, **{k: v for k, v in overrides.items() if v is not None})


def powered_settings(
    student: Path = SHIPPED_PAIR / "student", teacher: Path = SHIPPED_PAIR / "teacher", **overrides
) -> DemoSettings:
    """The powered comparison (issue 18, item 5): GRPO and IAPO over 5 seeds on the 6-bar task
    (`configs/demo_charts_6bars.yaml`) from a given student and teacher, at the RL budget at which GRPO learned on
    that pair's training probe (docs/results.md, "Optimisability on the 6-bar pair": lr 1e-3 with a KL to the
    reference at β 0.1, 160 steps of 2 prompts × 4 samples, one update per step; on the test split it did not, "The
    powered comparison"), now 3 prompts × `POWERED_GROUP_SIZE` samples a step (about as many samples, more groups),
    300 test questions, a premise stage that measures the paper's layout beside image regions
    by IG and by occlusion (the one that met premise 3 on that pair), and the optimisability stage for two seeds.
    Another budget is a few fields of `overrides` (`RL_BUDGETS`, chosen on validation rows by
    `iapo.experiments.demo.budget`)."""
    task, sampling = read_overlay(SIX_BARS_CONFIG, "synthetic_charts", SyntheticChartsConfig)
    preset = demo_settings(
        "charts",
        task=task,
        sampling=sampling,
        given_student=Path(student),
        given_teacher=Path(teacher),
        out=Path("logs/demo-powered"),
        rl_steps=160,
        rl_prompts=3,
        rl_mini_batch=9,
        rl_lr=1e-3,
        rl_kl_beta=0.1,
        group_size=POWERED_GROUP_SIZE,
        test_rows=300,
        premise_variants=("blocks", "blocks_per_token", "regions", "occlusion_regions"),
        optimisability_seeds=(0, 1),
    )
    return dataclasses.replace(preset, **{k: v for k, v in overrides.items() if v is not None})


SHOWCASE_STEPS = 100
"""RL steps of each showcase run. Measured (docs/results.md, "`make demo` from the shipped pair"): GRPO 1.3 s and
IAPO 2.8 s a step, one run per core; the 6 runs and their evaluations 15.5 min, the whole demo 18.5 min."""


def showcase_settings(
    student: Path = SHIPPED_PAIR / "student", teacher: Path = SHIPPED_PAIR / "teacher", **overrides
) -> DemoSettings:
    """`make demo`: the powered comparison's stages (premise on training prompts, GRPO and IAPO from the same cold
    start, 300 test questions, the report) on a budget that fits half an hour on 2 cores — 3 seeds of
    `SHOWCASE_STEPS` steps at lr 3e-4, the paper's blocks beside image regions, no optimisability stage. It shows the
    pipeline and the premises; `make powered` (5 seeds of 320 steps, the optimisability stage) is the test."""
    preset = powered_settings(
        student,
        teacher,
        out=Path("logs/demo"),
        seeds=(0, 1, 2),
        rl_steps=SHOWCASE_STEPS,
        rl_lr=3e-4,
        premise_variants=("blocks", "regions"),
        optimisability_seeds=(),
    )
    return dataclasses.replace(preset, **{k: v for k, v in overrides.items() if v is not None})
