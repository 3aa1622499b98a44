"""Rollout speed and IAPO's cost, the plain and the fast path side by side in one run.

Two tables from one process, on the same models and prompts:

1. **Rollout**, for each number of concurrent rollouts: the plain path (`fast_rollout: false`: every turn encodes
   every image and prefills the whole conversation) against the fast one (each distinct image through the vision
   tower once, a group's prompt prefilled once, the KV cache carried across turns) — seconds, generated tokens/s,
   vision-tower images and prefilled positions (padding included) per trajectory, and whether both paths gave the
   same tokens (same seed).
2. **Training step** (`iapo.training.step.train_step`, what `IAPOModule.training_step` runs): GRPO, and IAPO for
   each attribution method and m (`--attribution-method`, `--ig-steps`), on each path (the plain one also without
   the attribution shortcuts, `AttributionSettings.fast: false`) — seconds per phase, and IAPO's step time over
   GRPO's on the same path.

Untrained models never call a tool, so with `--turns 2` or more the first turn of every trajectory is a scripted
zoom call written through the model's own generation (`forced_turn`, a sequence bias); later turns are sampled.
The attribution target defaults to the paper's (`tool_call`).

    python -m iapo.experiments.bench                      # CPU: tiny models (the `cpu` preset); GPU: `gpu` preset
    python -m iapo.experiments.bench --preset gpu         # shape-3b student, shape-7b teacher, NF4, 8/32/64 rollouts

`shape-3b` / `shape-7b` are random-init models of the real shapes (speed and memory do not depend on weight values;
NF4 + LoRA + non-reentrant gradient checkpointing as in the paper config); the first run builds them into
`$IAPO_CACHE`. Every configuration runs `--warmup` times unreported, then `--repeats` times, interleaved with the
others (so all see the same machine load); the tables give medians.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from statistics import median

import torch

from iapo.agent.rollout import HFPolicy, SamplingSettings, rollout
from iapo.agent.vision import vision_language_model
from iapo.attribution.methods import language_model
from iapo.attribution.score import AttributionSettings
from iapo.data.sample import load_image
from iapo.data.synthetic import SyntheticConfig, build_split
from iapo.experiments.forced_turn import ZOOM_CALL, forced_first_turn
from iapo.models.loader import LoraSettings, load_model
from iapo.training.rewards import RewardContext, build_rewards
from iapo.training.step import StepSettings, train_step
from iapo.training.update import PPOSettings

METHOD_REWARDS = {"grpo": {"accuracy": 1.0}, "iapo": {"accuracy": 1.0, "attribution": 0.5}}
PHASES = ("rollout", "attribution_student", "attribution_teacher", "update")
PATHS = ("plain", "fast")
PRESETS = {
    "cpu": {
        "student": "tiny-student",
        "teacher": "tiny-teacher",
        "quantization": "none",
        "rollouts": [8],
        "new_tokens": 32,
        "image_size": 672,
        "lora_rank": 8,
    },
    "gpu": {
        "student": "shape-3b",
        "teacher": "shape-7b",
        "quantization": "nf4",
        "rollouts": [8, 32, 64],
        "new_tokens": 128,
        "image_size": 672,
        "lora_rank": 64,
    },
}


@contextmanager
def count_work(model) -> Iterator[dict[str, int]]:
    """Counts, while the block runs, the images the vision tower encodes and the positions the language model
    prefills (forwards of more than one position per row, padding included) or decodes (one position per row)."""
    counts = {"vision_images": 0, "prefill_positions": 0, "decode_positions": 0}

    def vision(module, args, kwargs):
        counts["vision_images"] += int(kwargs.get("grid_thw", args[1] if len(args) > 1 else None).shape[0])

    def decoder(module, args, kwargs):
        rows, length = kwargs["inputs_embeds"].shape[:2]
        counts["prefill_positions" if length > 1 else "decode_positions"] += rows * length

    handles = [
        vision_language_model(model).visual.register_forward_pre_hook(vision, with_kwargs=True),
        language_model(model).register_forward_pre_hook(decoder, with_kwargs=True),
    ]
    try:
        yield counts
    finally:
        for handle in handles:
            handle.remove()


def first_call(processor, samples, turns: int) -> str | None:
    """The scripted first turn for `turns` >= 2 (a zoom on the top-left quarter of the model's view), else none."""
    if turns < 2:
        return None
    image = load_image(samples[0].image)
    grid = processor.image_processor(images=[image], return_tensors="pt")["image_grid_thw"][0]
    side = int(min(grid[1], grid[2])) * processor.image_processor.patch_size // 2
    return ZOOM_CALL.format(0, 0, side, side)


@contextmanager
def scripted(model, processor, samples, settings: SamplingSettings, call: str | None) -> Iterator[None]:
    if call is None:
        yield
        return
    with forced_first_turn(model, processor, samples, settings.prompt, call):
        yield


def time_rollout(model, processor, samples, images, group_size: int, settings: SamplingSettings, call, seed: int):
    """One rollout: (its measurements, its trajectories' token ids)."""
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with scripted(model, processor, samples, settings, call), count_work(model) as work:
        start = time.perf_counter()
        trajectories = rollout(HFPolicy(model, processor, settings), processor, samples, images, group_size, settings)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    count = len(trajectories)
    generated = sum(t.completion_length for t in trajectories)
    measured = {
        "seconds": seconds,
        "tokens_per_second": generated / seconds,
        "vision_images_per_trajectory": work["vision_images"] / count,
        "prefill_positions_per_trajectory": work["prefill_positions"] / count,
        "turns_per_trajectory": sum(len(t.turns) for t in trajectories) / count,
        "generated_tokens_per_trajectory": generated / count,
    }
    if torch.cuda.is_available():
        measured["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return measured, [t.input_ids for t in trajectories]


def bench_rollouts(model, processor, samples, images, args, sampling: SamplingSettings, call) -> list[dict]:
    """Plain against fast rollouts of the same prompts and seed, for each number of concurrent rollouts: the paths
    alternate within each repeat (so both see the same machine load) and each metric is the median of the repeats."""
    rows = []
    for count in args.rollouts:
        prompts = count // args.group_size
        runs: dict[str, list[dict]] = {path: [] for path in PATHS}
        same_tokens = True
        for repeat in range(args.warmup + args.repeats):  # the warm-up repeats are not reported
            tokens = {}
            for path in PATHS:
                settings = replace(sampling, fast_rollout=path == "fast")
                measured, tokens[path] = time_rollout(
                    model, processor, samples[:prompts], images[:prompts], args.group_size, settings, call, repeat
                )
                if repeat >= args.warmup:
                    runs[path].append(measured)
            same_tokens &= all(torch.equal(a, b) for a, b in zip(tokens["plain"], tokens["fast"], strict=True))
        record: dict = {"rollouts": count, "same_tokens": same_tokens}
        for path in PATHS:
            record[path] = {key: median([run[key] for run in runs[path]]) for key in runs[path][0]}
        record["speedup"] = record["plain"]["seconds"] / record["fast"]["seconds"]
        rows.append(record)
    return rows


def step_configurations(args) -> list[tuple[str, str, int]]:
    """(method, attribution method, m) of each timed step configuration: GRPO first, then IAPO's."""
    configurations = [("grpo", "", 0)]
    for attribution_method in args.attribution_method:
        steps = args.ig_steps if attribution_method == "integrated_gradients" else [0]
        configurations += [("iapo", attribution_method, m) for m in steps]
    return configurations


def step_settings(args, sampling: SamplingSettings, path: str, attribution_method: str, m: int) -> StepSettings:
    """The step of one configuration: the paper's attribution variant (blocks, KL penalty, mean baseline)."""
    fast = path == "fast"
    attribution = AttributionSettings(
        method=attribution_method or "grad_x_input",
        target=args.target,
        layout="blocks",
        divergence="kl",
        form="penalty",
        baseline="mean",
        steps=max(m, 1),
        chunk_size=args.ig_chunk,
        batch_size=args.attribution_batch,
        fast=fast,
    )
    return StepSettings(
        group_size=args.group_size,
        sampling=replace(sampling, fast_rollout=fast),
        attribution=attribution,
        ppo=PPOSettings(mini_batch_size=args.mini_batch, log_kl=False),
    )


def bench_steps(
    student, processor, teacher: tuple, samples, images, args, sampling: SamplingSettings, call
) -> list[dict]:
    """Training steps of GRPO and of IAPO per attribution configuration, on each path, at the first count: every
    configuration once per repeat (interleaved), each phase the median of the repeats."""
    count = args.rollouts[0]
    prompts = count // args.group_size
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-5)
    configurations = [(path, *configuration) for path in PATHS for configuration in step_configurations(args)]
    runs: dict[tuple, list[dict]] = {configuration: [] for configuration in configurations}
    for repeat in range(args.warmup + args.repeats):  # the warm-up repeats are not reported
        for configuration in configurations:
            path, method, attribution_method, m = configuration
            settings = step_settings(args, sampling, path, attribution_method, m)
            rewards = build_rewards(METHOD_REWARDS[method], RewardContext(settings.attribution))
            torch.manual_seed(repeat)
            with (
                scripted(student, processor, samples[:prompts], settings.sampling, call),
                count_work(teacher[0]) as teacher_work,
                count_work(student) as student_work,
            ):
                record = train_step(
                    student,
                    processor,
                    optimizer,
                    samples[:prompts],
                    images[:prompts],
                    settings,
                    rewards,
                    teacher=lambda: teacher,
                )
            if repeat >= args.warmup:
                timings = dict(record.timings)
                timings["total"] = sum(timings.get(f"time/{phase}", 0.0) for phase in PHASES)
                timings["vision_images_per_trajectory"] = (
                    student_work["vision_images"] + teacher_work["vision_images"]
                ) / count
                timings["attributed"] = sum(bool(a) for a in record.attributions["student"])
                runs[configuration].append(timings)
    rows = []
    for configuration in configurations:
        path, method, attribution_method, m = configuration
        measured = runs[configuration]
        timings = {key: median([run[key] for run in measured]) for key in measured[0]}
        grpo = median([run["total"] for run in runs[(path, "grpo", "", 0)]])
        rows.append(
            {
                "path": path,
                "method": "grpo" if method == "grpo" else f"iapo {attribution_method}" + (f" m={m}" if m else ""),
                "timings": {k: v for k, v in timings.items() if k.startswith(("time/", "memory/"))},
                "total": timings["total"],
                "iapo_over_grpo": timings["total"] / grpo,
                "vision_images_per_trajectory": timings["vision_images_per_trajectory"],
                "attributed": timings["attributed"],
                "trajectories": count,
            }
        )
    return rows


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
    # (model, processor): the teacher reads trajectories in its own tokens
    samples = build_split("test", max(args.rollouts) // args.group_size, SyntheticConfig(canvas_size=args.image_size))
    images = [load_image(s.image) for s in samples]
    call = first_call(processor, samples, args.turns)
    # a turn has room for the scripted call, which ends at its stop string; sampled turns run to the limit
    length = max(args.new_tokens, len(processor.tokenizer(call)["input_ids"]) if call else 0)
    results["config"]["new_tokens"] = length
    sampling = SamplingSettings(max_turns=args.turns, max_new_tokens=length, min_new_tokens=length, toolset="zoom")
    results["rollout"] = bench_rollouts(student, processor, samples, images, args, sampling, call)
    results["step"] = bench_steps(student, processor, teacher, samples, images, args, sampling, call)
    return results


def rollout_table(rows: list[dict]) -> str:
    lines = [
        "| rollouts | path | s | tok/s | vision images / traj | prefilled positions / traj | turns / traj | peak GiB |",
        "|---" * 8 + "|",
    ]
    for row in rows:
        for path in PATHS:
            r = row[path]
            peak = f"{r['peak_gib']:.1f}" if "peak_gib" in r else "–"
            lines.append(
                f"| {row['rollouts']} | {path} | {r['seconds']:.2f} | {r['tokens_per_second']:.0f} | "
                f"{r['vision_images_per_trajectory']:.2f} | {r['prefill_positions_per_trajectory']:.0f} | "
                f"{r['turns_per_trajectory']:.2f} | {peak} |"
            )
        lines.append(
            f"| {row['rollouts']} | fast / plain | ×{row['speedup']:.2f} faster | same tokens: "
            f"{'yes' if row['same_tokens'] else 'NO'} | | | | |"
        )
    return "\n".join(lines)


def step_table(rows: list[dict]) -> str:
    lines = [
        "| path | method | " + " | ".join(PHASES) + " | total s | IAPO / GRPO | vision images / traj | peak GiB |",
        "|---" * 10 + "|",
    ]
    for row in rows:
        timings = row["timings"]
        seconds = [f"{timings[f'time/{phase}']:.2f}" if f"time/{phase}" in timings else "–" for phase in PHASES]
        peaks = [v for k, v in timings.items() if k.startswith("memory/")]
        peak = f"{max(peaks):.1f}" if peaks else "–"
        lines.append(
            f"| {row['path']} | {row['method']} | {' | '.join(seconds)} | {row['total']:.2f} | "
            f"{row['iapo_over_grpo']:.2f} | {row['vision_images_per_trajectory']:.2f} | {peak} |"
        )
    return "\n".join(lines)


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), help="defaults: gpu when CUDA is available, else cpu")
    parser.add_argument("--student")
    parser.add_argument("--teacher")
    parser.add_argument("--quantization", choices=["nf4", "none"])
    parser.add_argument("--rollouts", type=int, nargs="+", help="concurrent rollouts (prompts × group size)")
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument(
        "--new-tokens", type=int, help="generated tokens per sampled turn (fixed; at least the scripted call's)"
    )
    parser.add_argument("--turns", type=int, default=2, help="max turns; >= 2: the first is a scripted zoom call")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--mini-batch", type=int, default=8)
    parser.add_argument("--attribution-batch", type=int, default=8)
    parser.add_argument("--lora-rank", type=int)
    parser.add_argument("--repeats", type=int, default=3, help="measured repeats of each configuration (medians)")
    parser.add_argument("--warmup", type=int, default=1, help="unreported repeats first (compilation, caches)")
    parser.add_argument(
        "--attribution-method", nargs="+", default=["grad_x_input", "integrated_gradients"], help="IAPO's methods"
    )
    parser.add_argument("--ig-steps", type=int, nargs="+", default=[1, 4, 16], help="m of integrated gradients")
    parser.add_argument("--ig-chunk", type=int, default=8, help="sequences per IG forward/backward")
    parser.add_argument("--target", default="tool_call", help="attribution target (tool_call needs --turns >= 2)")
    parser.add_argument("--out", type=Path, help="also write the JSON results here")
    args = parser.parse_args(argv)
    args.preset = args.preset or ("gpu" if torch.cuda.is_available() else "cpu")
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    if any(count % args.group_size for count in args.rollouts):
        parser.error("every --rollouts must be a multiple of --group-size")
    if args.target == "tool_call" and args.turns < 2:
        parser.error("--target tool_call needs --turns >= 2 (the first turn is the scripted call)")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    results = run(args)
    print(rollout_table(results["rollout"]))
    print()
    print(step_table(results["step"]))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
