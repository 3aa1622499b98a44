"""Phase times and peak memory of one training step, GRPO and IAPO side by side in one run.

Runs exactly what `IAPOModule.training_step` runs (`iapo.training.step.train_step`: rollout, student attribution,
teacher attribution re-encoded with the teacher's processor, PPO update) for each method, on the same models and
prompts, with fixed generation lengths, and prints per-phase seconds, peak GPU memory, tokens/s and the IAPO/GRPO
step-time ratio:

    python -m iapo.experiments.bench --student shape-3b --teacher shape-7b --rollouts 8 --new-tokens 128   # one GPU
    python -m iapo.experiments.bench --student tiny-student --teacher tiny-teacher --quantization none \
        --rollouts 4 --new-tokens 8                                                                      # CPU check

`shape-3b` / `shape-7b` are random-init models of the real shapes (speed and memory do not depend on weight values;
NF4 + LoRA + non-reentrant gradient checkpointing as in the paper config); the first run builds them into
`$IAPO_CACHE`. The first step of each method includes warm-up: use `--steps 2` or more and read the later ones.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from iapo.agent.rollout import SamplingSettings
from iapo.attribution.score import AttributionSettings
from iapo.data.sample import load_image
from iapo.data.synthetic import SyntheticConfig, build_split
from iapo.models.loader import LoraSettings, load_model
from iapo.training.rewards import RewardContext, build_rewards
from iapo.training.step import StepSettings, train_step
from iapo.training.update import PPOSettings

METHOD_REWARDS = {"grpo": {"accuracy": 1.0}, "iapo": {"accuracy": 1.0, "attribution": 0.5}}
PHASES = ("rollout", "attribution_student", "attribution_teacher", "update")


def run(args: argparse.Namespace) -> dict:
    dtype = "bfloat16" if torch.cuda.is_available() else "float32"
    results: dict = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    results["config"]["dtype"] = dtype
    student, processor = load_model(
        args.student,
        quantization=args.quantization,
        dtype=dtype,
        lora=LoraSettings(r=args.lora_rank, alpha=2 * args.lora_rank, dropout=0.0),
        gradient_checkpointing=True,
    )
    teacher = load_model(args.teacher, quantization=args.quantization, dtype=dtype, gradient_checkpointing=True)
    samples = build_split("test", args.rollouts // args.group_size, SyntheticConfig(canvas_size=args.image_size))
    images = [load_image(s.image) for s in samples]
    settings = StepSettings(
        group_size=args.group_size,
        sampling=SamplingSettings(max_turns=1, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens),
        attribution=AttributionSettings(
            method=args.attribution_method, target="generated", batch_size=args.attribution_batch
        ),
        ppo=PPOSettings(mini_batch_size=args.mini_batch, log_kl=False),
    )
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-5)
    for method in args.methods:
        rewards = build_rewards(METHOD_REWARDS[method], RewardContext(settings.attribution))
        for step in range(args.steps):
            record = train_step(
                student, processor, optimizer, samples, images, settings, rewards, teacher=lambda: teacher
            )
            timings = dict(record.timings)
            timings["total"] = sum(timings.get(f"time/{phase}", 0.0) for phase in PHASES)
            timings["tokens_per_second"] = (
                sum(t.completion_length for t in record.trajectories) / timings["time/rollout"]
            )
            timings["prompt_tokens"] = int(record.trajectories[0].prompt_length)
            results[f"{method}/step_{step}"] = timings
    if {"grpo", "iapo"} <= set(args.methods):
        last = args.steps - 1
        results["iapo_over_grpo"] = results[f"iapo/step_{last}"]["total"] / results[f"grpo/step_{last}"]["total"]
    return results


def table(results: dict) -> str:
    lines = ["| method | step | " + " | ".join(PHASES) + " | total s | tok/s | peak GiB |", "|---" * 8 + "|"]
    for key, timings in results.items():
        if "/step_" not in key:
            continue
        method, step = key.split("/step_")
        seconds = [f"{timings[f'time/{phase}']:.2f}" if f"time/{phase}" in timings else "–" for phase in PHASES]
        peaks = [v for k, v in timings.items() if k.startswith("memory/")]
        peak = f"{max(peaks):.1f}" if peaks else "–"
        lines.append(
            f"| {method} | {step} | {' | '.join(seconds)} | {timings['total']:.2f} | "
            f"{timings['tokens_per_second']:.0f} | {peak} |"
        )
    if "iapo_over_grpo" in results:
        lines.append(f"\nIAPO / GRPO step time (last step): {results['iapo_over_grpo']:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--student", default="shape-3b")
    parser.add_argument("--teacher", default="shape-7b")
    parser.add_argument("--quantization", default="nf4", choices=["nf4", "none"])
    parser.add_argument("--rollouts", type=int, default=8, help="trajectories per step (prompts × group size)")
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=128, help="generated tokens per trajectory (fixed)")
    parser.add_argument("--image-size", type=int, default=672)
    parser.add_argument("--mini-batch", type=int, default=8)
    parser.add_argument("--attribution-batch", type=int, default=8)
    parser.add_argument("--lora-rank", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2, help="steps per method (the first includes warm-up)")
    parser.add_argument("--methods", nargs="+", default=["grpo", "iapo"], choices=sorted(METHOD_REWARDS))
    parser.add_argument("--attribution-method", default="grad_x_input")
    parser.add_argument("--out", type=Path, help="also write the JSON results here")
    args = parser.parse_args(argv)
    if args.rollouts % args.group_size:
        parser.error("--rollouts must be a multiple of --group-size")
    results = run(args)
    print(table(results))
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
