"""Can RL on the attribution term move the student toward the teacher at all (issue 18, item 4)? Two runs of the
same budget from one cold start and teacher: `attribution` (the attribution reward alone, weight 1; accuracy at 1e-9,
logged only) and `grpo`
(accuracy + format; the attribution reward at weight 1e-9, so the teacher is loaded and the divergence logged while
the update is GRPO's: a group's reward spread from it is ~1e-11, against the 1e-6 added to the group std). Prints,
per run, the first → last quarter means of the student–teacher divergence, the policy's KL to its reference,
sampled accuracy and the term's within-group rank correlation with the outcome.

    python -m iapo.experiments.demo.optimise --student DIR --teacher DIR --out DIR --steps 48 --prompts 2 \
        [--variant arguments_regions]      # the attribution variant (`premise.RL_VARIANTS`; default the paper's)
        [--config OVERLAY]                 # another task overlay than configs/demo_charts.yaml (its task)
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import lightning as L

from iapo.experiments.demo import stages
from iapo.experiments.demo.curves import read_history
from iapo.models.loader import LoraSettings, ModelSettings
from iapo.training.callbacks import AdapterCheckpoint
from iapo.training.diagnostics import summarise_mechanism
from iapo.training.iapo_module import IAPOModule
from iapo.training.update import PPOSettings

REWARDS = {
    "attribution": {"attribution": 1.0, "accuracy": 1e-9},
    "grpo": {"accuracy": 1.0, "format": 0.1, "attribution": 1e-9},
}
REPORTED = (
    "attribution/divergence",
    "kl",
    "rewards/accuracy/mean",
    "mechanism/rank_corr_attribution_outcome",
    "tools/call_rate",
)


def run(settings, name: str, student: Path, teacher: Path, out: Path, seed: int = 0) -> dict:
    """One run of `settings.rl_steps` steps with `REWARDS[name]`; returns the first / last quarter means."""
    L.seed_everything(seed, verbose=False)
    module = IAPOModule(
        student=ModelSettings(
            name=str(student), lora=LoraSettings(r=settings.lora_rank, alpha=2 * settings.lora_rank, dropout=0.0)
        ),
        teacher=ModelSettings(name=str(teacher)),
        sampling=settings.sampling,
        group_size=settings.group_size,
        rewards=REWARDS[name],
        attribution=settings.attribution,
        ppo=PPOSettings(mini_batch_size=settings.rl_mini_batch),
        lr=settings.rl_lr,
    )
    checkpoint = AdapterCheckpoint(dirpath=str(out / name), every_n_steps=0, monitor=None)
    trainer = stages.trainer(settings.rl_steps * settings.updates_per_step, out / "logs" / name, [checkpoint])
    trainer.fit(module, stages.train_data(settings, settings.rl_prompts, settings.rl_rows))
    summary = summarise_mechanism(read_history(out / "logs" / name / "metrics.csv"))
    return {key: summary[key] for key in REPORTED if key in summary} | {"available": sorted(summary)}


def main(argv: list[str] | None = None) -> dict:
    import argparse

    from iapo.experiments.demo.measure import overlay_settings, variant_settings
    from iapo.experiments.demo.premise import DEFAULT_VARIANT, RL_VARIANTS

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--student", type=Path, required=True)
    parser.add_argument("--teacher", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--runs", nargs="+", default=list(REWARDS), choices=list(REWARDS))
    parser.add_argument("--variant", default=DEFAULT_VARIANT, choices=RL_VARIANTS)
    parser.add_argument("--config", type=Path, help="another task overlay than configs/demo_charts.yaml (its task)")
    args = parser.parse_args(argv)
    settings = dataclasses.replace(
        overlay_settings(args.config), rl_steps=args.steps, rl_prompts=args.prompts, rl_mini_batch=args.prompts * 4
    )
    settings = dataclasses.replace(settings, attribution=variant_settings(settings, args.variant))
    result = {name: run(settings, name, args.student, args.teacher, args.out) for name in args.runs}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
