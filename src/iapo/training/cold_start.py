"""Cold-started tiny models for the offline `make train`: the tiny student fine-tuned on expert trajectories of the
paper setting's offline chart task, so that it calls the tools (and is sometimes right) before RL starts, and a
teacher: that model trained on further.

An untrained tiny student never calls a tool: its rewards are 0 and nothing is attributed, so a run from it shows
nothing. These are built on first use by SFT on the CPU (a progress line every 30 s), cached under
`$IAPO_CACHE/cold_start/<name>-<hash>`, and then loaded by name like a tiny spec (`student.name: tiny-student-sft`,
`configs/tiny_cold_start.yaml`, whose task and agent they are trained on). The hash covers the spec, the task, the
agent and the base model, not the code: after changing how demonstrations are written, rebuild with `--force`.

    python -m iapo.training.cold_start tiny-student-sft tiny-teacher-sft     # build ahead of time (--force rebuilds)
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L

from iapo.agent.rollout import SamplingSettings
from iapo.config_files import config_file, overlay_values
from iapo.data.datamodule import VQADataModule
from iapo.data.sources import DataSpec
from iapo.data.synthetic_charts import SyntheticChartsConfig
from iapo.models.loader import ModelBuilder, ModelSettings, register_model_builder, resolve_model_path
from iapo.models.tiny import cache_dir
from iapo.training.progress import ProgressLog
from iapo.training.sft_module import SFTModule


@dataclass(frozen=True)
class ColdStartSpec:
    """One SFT run: `base` (a tiny spec or another cold start) fully fine-tuned for `steps` optimizer steps of
    `batch_size` prompts on `expert` demonstrations (`tool`: always the right edit, then the answer; `mixed`: tool
    demonstrations and direct answers) of the task of `configs/tiny_cold_start.yaml` (`offline_task`)."""

    base: str
    expert: str
    steps: int
    batch_size: int = 8
    lr: float = 1e-3
    warmup_steps: int = 10
    rows: int = 1024
    seed: int = 0


TASK_OVERLAY = "tiny_cold_start.yaml"
"""The overlay that `make train` runs with: its `data.synthetic_charts` task and `model.init_args.sampling` agent are
what the cold starts are trained on."""


def offline_task() -> tuple[SyntheticChartsConfig, SamplingSettings]:
    """(task, agent) of `configs/tiny_cold_start.yaml`, typed as the CLI types them."""
    values = overlay_values(
        config_file(TASK_OVERLAY),
        {"data.synthetic_charts": SyntheticChartsConfig, "model.init_args.sampling": SamplingSettings},
    )
    return values["data.synthetic_charts"], values["model.init_args.sampling"]


COLD_STARTS: dict[str, ColdStartSpec] = {
    "tiny-student-sft": ColdStartSpec(base="tiny-student", expert="tool", steps=300),
    "tiny-teacher-sft": ColdStartSpec(base="tiny-student-sft", expert="tool", steps=200, seed=1),
}


def spec_hash(spec: ColdStartSpec, base_dir: Path, task: SyntheticChartsConfig, sampling: SamplingSettings) -> str:
    payload = json.dumps([asdict(spec), asdict(task), asdict(sampling)], sort_keys=True, default=str) + base_dir.name
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def build_cold_start(name: str, root: Path | None = None, force: bool = False) -> Path:
    """The directory of cold start `name`, trained (and its base, if that is a cold start too) the first time."""
    spec = COLD_STARTS[name]
    base = Path(resolve_model_path(spec.base))
    task, sampling = offline_task()
    out = (root or cache_dir()) / "cold_start" / f"{name}-{spec_hash(spec, base, task, sampling)}"
    if (out / "config.json").is_file() and not force:
        return out
    print(
        f"[cold start] {name}: SFT of {spec.base} for {spec.steps} steps of {spec.batch_size} prompts on "
        f"{spec.expert!r} demonstrations of the offline chart task (once; cached in {out})",
        flush=True,
    )
    L.seed_everything(spec.seed, verbose=False)
    module = SFTModule(
        student=ModelSettings(name=str(base)),
        sampling=sampling,
        expert=spec.expert,
        margin=0.1,
        train_vision=True,
        lr=spec.lr,
        warmup_steps=spec.warmup_steps,
    )
    data = VQADataModule(
        train=[DataSpec("synthetic_charts", "train", spec.rows)], synthetic_charts=task, batch_size=spec.batch_size
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=spec.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[ProgressLog(every_s=30, metric="sft/loss", always=True)],
    )
    trainer.fit(module, data)
    return module.save_pretrained(out)


def describe(spec: ColdStartSpec) -> str:
    demonstrations = "right tool calls" if spec.expert == "tool" else f"{spec.expert!r} demonstrations"
    return f"cold-started: {spec.base} fine-tuned {spec.steps} steps on {demonstrations} of the offline chart task"


for _name, _spec in COLD_STARTS.items():
    register_model_builder(_name, ModelBuilder(lambda name=_name: build_cold_start(name), describe(_spec)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the cold-started tiny models (cached; --force rebuilds).")
    parser.add_argument("names", nargs="+", choices=sorted(COLD_STARTS))
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    for name in args.names:
        print(f"{name}: {build_cold_start(name, force=args.force)}")


if __name__ == "__main__":
    main()
