"""Phase times and peak memory of one IAPO training step on the paper-setting code path.

Runs what `IAPOModule.training_step` runs — rollout, student attribution, teacher attribution (re-encoded with the
teacher's processor), PPO update — on random-init models of the real shapes (`shape-3b` student with NF4 + LoRA +
non-reentrant gradient checkpointing, `shape-7b` NF4 teacher; speed and memory do not depend on weight values),
with fixed generation lengths, and prints a table plus JSON:

    python -m iapo.experiments.bench --student shape-3b --teacher shape-7b --rollouts 8 --new-tokens 128       # one GPU
    python -m iapo.experiments.bench --student tiny-student --teacher tiny-teacher --rollouts 4 --new-tokens 8  # CPU check

The first run builds the shaped checkpoints into `$IAPO_CACHE` (bf16, on the GPU when there is one).
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from iapo.agent.rollout import HFPolicy, SamplingSettings, rollout
from iapo.attribution.score import AttributionSettings, attribution_distributions
from iapo.data.sample import load_image
from iapo.data.synthetic import SyntheticConfig, build_split
from iapo.models.loader import LoraSettings, load_model
from iapo.training.algo import group_advantages
from iapo.training.update import PPOSettings, policy_update


@contextmanager
def phase(name: str, results: dict):
    """Time a block (CUDA-synchronised) and record the peak GPU memory it reached."""
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    yield
    if cuda:
        torch.cuda.synchronize()
    results[name] = {"seconds": time.perf_counter() - start}
    if cuda:
        results[name]["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30


def run(args: argparse.Namespace) -> dict:
    dtype = "bfloat16" if torch.cuda.is_available() else "float32"
    results: dict = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    results["config"]["dtype"] = dtype
    with phase("load_student", results):
        student, processor = load_model(
            args.student,
            quantization=args.quantization,
            dtype=dtype,
            lora=LoraSettings(r=args.lora_rank, alpha=2 * args.lora_rank, dropout=0.0),
            gradient_checkpointing=True,
        )
    with phase("load_teacher", results):
        teacher, teacher_processor = load_model(
            args.teacher, quantization=args.quantization, dtype=dtype, gradient_checkpointing=True
        )
    prompts = args.rollouts // args.group_size
    samples = build_split("test", prompts, SyntheticConfig(canvas_size=args.image_size), seed=0)
    images = [load_image(s.image) for s in samples]
    sampling = SamplingSettings(max_turns=1, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
    attribution = AttributionSettings(target="generated", batch_size=args.attribution_batch)
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-5)
    for step in range(args.steps):
        timings: dict = {}
        with phase("rollout", timings):
            trajectories = rollout(
                HFPolicy(student, processor, sampling), processor, samples, images, args.group_size, sampling
            )
        with phase("attribution_student", timings):
            attribution_distributions(student, processor, trajectories, samples, attribution)
        with phase("attribution_teacher", timings):
            attribution_distributions(teacher, teacher_processor, trajectories, samples, attribution, reencode=True)
        advantages = group_advantages(torch.randn(len(trajectories)), args.group_size)
        settings = PPOSettings(mini_batch_size=args.mini_batch, log_kl=False)
        with phase("update", timings):
            policy_update(student, optimizer, trajectories, advantages, settings, processor.tokenizer.pad_token_id)
        generated = sum(t.completion_length for t in trajectories)
        timings["rollout"]["tokens_per_second"] = generated / timings["rollout"]["seconds"]
        timings["prompt_tokens"] = int(trajectories[0].prompt_length)
        results[f"step_{step}"] = timings
    return results


def table(results: dict) -> str:
    lines = ["| step | phase | seconds | peak GiB | tok/s |", "|---|---|---|---|---|"]
    for key, value in results.items():
        if not key.startswith("step_"):
            continue
        for name, entry in value.items():
            if isinstance(entry, dict):
                peak = f"{entry['peak_gib']:.1f}" if "peak_gib" in entry else "–"
                speed = f"{entry['tokens_per_second']:.0f}" if "tokens_per_second" in entry else ""
                lines.append(f"| {key[5:]} | {name} | {entry['seconds']:.2f} | {peak} | {speed} |")
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
    parser.add_argument("--steps", type=int, default=2, help="steps to time (the first includes warm-up)")
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
