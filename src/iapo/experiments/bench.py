"""Rollout speed and IAPO's cost: the plain and the fast rollout, and GRPO against IAPO's attribution variants,
side by side in one run.

Per workload (`--workloads NAME=TOKENS`: the sampled answer turn's length; the `cpu` preset runs today's short turns,
`short=32`, and `realistic=192`, which with the scripted call makes ~230 new tokens, the paper's one tool round),
two tables from one process, on the same models and prompts:

1. **Rollout**, for each number of concurrent rollouts: the plain path (`fast_rollout: false`: every turn encodes
   every image and prefills the whole conversation) against the fast one (each distinct image through the vision
   tower once, a group's prompt prefilled once, the KV cache carried across turns) — seconds, generated tokens/s,
   vision-tower images and prefilled positions (padding included) per trajectory, peak GPU memory, and whether both
   paths gave the same tokens (same seed).
2. **Training step** (`iapo.training.step.train_step`, what `IAPOModule.training_step` runs) at the first count:
   GRPO, and IAPO for each attribution variant (`--variants`: `paper` is the variant of `configs/iapo.yaml`; others
   are `METHOD[:RULE:M][:nodedup][:loss[N]]`, e.g. `integrated_gradients:riemann:16:nodedup`, the integrated
   gradients before quadrature rules and deduplication, or `integrated_gradients:riemann:2:loss3`, the attribution
   loss over 3 calls a mini-batch) — seconds and peak GPU memory per stage, IAPO's step time over GRPO's, the
   attribution's share of the step and its cost over the first variant's, distinct attributions per trajectory with
   a target, and the median completeness gaps (`attribution/completeness_gap/*`).

Untrained models never call a tool, so with `--turns 2` or more the first turn of every trajectory is a scripted
zoom call written through the model's own generation (`forced_turn`, a sequence bias), one of `--call-choices`
quadrants picked by the model's sampling (a group's calls repeat some of the time, as trained models' do); later
turns are sampled. The attribution target is the paper's (`tool_call`).

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
from iapo.attribution.embeddings import language_model
from iapo.attribution.score import AttributionSettings
from iapo.data.sample import load_image
from iapo.data.synthetic import SyntheticConfig, build_split
from iapo.experiments.bench_tables import PATHS, PHASES, rollout_table, step_table
from iapo.experiments.bench_variants import Variant, parse_variant
from iapo.experiments.forced_turn import ZOOM_CALL, forced_first_turn
from iapo.models.loader import LoraSettings, load_model
from iapo.training.rewards import RewardContext, build_rewards
from iapo.training.step import StepSettings, train_step
from iapo.training.update import PPOSettings

METHOD_REWARDS = {"grpo": {"accuracy": 1.0}, "iapo": {"accuracy": 1.0, "attribution": 0.5}}
BEFORE = "integrated_gradients:riemann:16:nodedup"
"""The paper configuration's integrated gradients before quadrature rules and deduplication (m = 16, Riemann)."""
PRESETS = {
    "cpu": {
        "student": "tiny-student",
        "teacher": "tiny-teacher",
        "quantization": "none",
        "rollouts": [8],
        "workloads": ["short=32", "realistic=192"],
        "image_size": 672,
        "lora_rank": 8,
        "rollout_paths": list(PATHS),
        "step_paths": ["fast"],
        "variants": [BEFORE, "integrated_gradients:riemann:16", "paper", "grad_x_input"],
        "repeats": 3,
        "warmup": 1,
    },
    # one prepared command for one GPU (shapes built beforehand: `python -m iapo.models.tiny shape-3b shape-7b`):
    # fast paths only, one measured repeat after a warm-up, the paper's IG only (m = 16 Riemann would add ~3 min
    # at 8 trajectories by the cost model of docs/results.md; add it with --variants when there is time)
    "gpu": {
        "student": "shape-3b",
        "teacher": "shape-7b",
        "quantization": "nf4",
        "rollouts": [8, 32, 64],
        "workloads": ["realistic=192"],
        "image_size": 672,
        "lora_rank": 64,
        "rollout_paths": ["fast"],
        "step_paths": ["fast"],
        "variants": ["paper"],
        "repeats": 1,
        "warmup": 1,
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


def first_calls(processor, samples, turns: int, choices: int) -> list[str] | None:
    """The scripted first turn's options for `turns` >= 2: a zoom on one of the first `choices` quarters of the
    model's view (top-left, top-right, bottom-left, bottom-right); none below 2 turns."""
    if turns < 2:
        return None
    image = load_image(samples[0].image)
    grid = processor.image_processor(images=[image], return_tensors="pt")["image_grid_thw"][0]
    side = int(min(grid[1], grid[2])) * processor.image_processor.patch_size // 2
    corners = [(0, 0), (side, 0), (0, side), (side, side)][:choices]
    return [ZOOM_CALL.format(x, y, x + side, y + side) for x, y in corners]


@contextmanager
def scripted(model, processor, samples, settings: SamplingSettings, calls: list[str] | None) -> Iterator[None]:
    if calls is None:
        yield
        return
    with forced_first_turn(model, processor, samples, settings.prompt, calls):
        yield


def time_rollout(model, processor, samples, images, group_size: int, settings: SamplingSettings, calls, seed: int):
    """One rollout: (its measurements, its trajectories' token ids)."""
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with scripted(model, processor, samples, settings, calls), count_work(model) as work:
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


def bench_rollouts(model, processor, samples, images, args, sampling: SamplingSettings, calls) -> list[dict]:
    """The rollout paths on the same prompts and seed, for each number of concurrent rollouts: the paths alternate
    within each repeat (so all see the same machine load) and each metric is the median of the repeats."""
    rows = []
    for count in args.rollouts:
        prompts = count // args.group_size
        runs: dict[str, list[dict]] = {path: [] for path in args.rollout_paths}
        same_tokens = True
        for repeat in range(args.warmup + args.repeats):  # the warm-up repeats are not reported
            tokens = {}
            for path in args.rollout_paths:
                settings = replace(sampling, fast_rollout=path == "fast")
                measured, tokens[path] = time_rollout(
                    model, processor, samples[:prompts], images[:prompts], args.group_size, settings, calls, repeat
                )
                if repeat >= args.warmup:
                    runs[path].append(measured)
            same_tokens &= all(
                torch.equal(a, b) for a, b in zip(tokens[args.rollout_paths[0]], tokens["fast"], strict=True)
            )
        record: dict = {"rollouts": count, "same_tokens": same_tokens}
        for path in args.rollout_paths:
            record[path] = {key: median([run[key] for run in runs[path]]) for key in runs[path][0]}
        if "plain" in args.rollout_paths:
            record["speedup"] = record["plain"]["seconds"] / record["fast"]["seconds"]
        rows.append(record)
    return rows


def step_settings(args, sampling: SamplingSettings, path: str, variant: Variant | None) -> StepSettings:
    """The step of one configuration: the paper's attribution variant (blocks, KL penalty, mean baseline, groups'
    mean term for a trajectory without a call) with the variant's method, rule, m, deduplication and attribution
    loss."""
    fast = path == "fast"
    variant = variant or Variant("grad_x_input")  # GRPO: never used
    attribution = AttributionSettings(
        method=variant.method,
        target="tool_call",
        layout="blocks",
        divergence="kl",
        form="penalty",
        missing_target="exclude",
        baseline="mean",
        steps=variant.steps,
        quadrature=variant.quadrature,
        chunk_size=args.ig_chunk,
        batch_size=args.attribution_batch,
        fast=fast,
        deduplicate=variant.deduplicate,
    )
    return StepSettings(
        group_size=args.group_size,
        sampling=replace(sampling, fast_rollout=fast),
        attribution=attribution,
        ppo=PPOSettings(mini_batch_size=args.mini_batch, log_kl=False),
        attribution_loss=variant.attribution_loss,
        attribution_loss_calls=variant.loss_calls,
    )


def bench_steps(
    student, processor, teacher: tuple, samples, images, args, sampling: SamplingSettings, calls
) -> list[dict]:
    """Training steps of GRPO and of IAPO per attribution variant, on each step path, at the first count: every
    configuration once per repeat (interleaved), each number the median of the repeats."""
    count = args.rollouts[0]
    prompts = count // args.group_size
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-5)
    variants: list[Variant | None] = [None, *args.variants]  # None: GRPO
    configurations = [(path, variant) for path in args.step_paths for variant in variants]
    runs: dict[tuple, list[dict]] = {configuration: [] for configuration in configurations}
    for repeat in range(args.warmup + args.repeats):  # the warm-up repeats are not reported
        for configuration in configurations:
            path, variant = configuration
            settings = step_settings(args, sampling, path, variant)
            rewards = build_rewards(
                METHOD_REWARDS["grpo" if variant is None else "iapo"], RewardContext(settings.attribution)
            )
            torch.manual_seed(repeat)
            with (
                scripted(student, processor, samples[:prompts], settings.sampling, calls),
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
                measured = dict(record.timings)
                measured["total"] = sum(measured.get(f"time/{phase}", 0.0) for phase in PHASES)
                measured["attribution"] = sum(measured.get(f"time/{phase}", 0.0) for phase in PHASES[1:3])
                measured["vision_images_per_trajectory"] = (
                    student_work["vision_images"] + teacher_work["vision_images"]
                ) / count
                measured["attributed"] = sum(bool(a) for a in record.attributions["student"])
                measured["generated_tokens_per_trajectory"] = (
                    sum(t.completion_length for t in record.trajectories) / count
                )
                measured |= {k: v for k, v in record.metrics.items() if k.startswith("attribution/completeness_gap/")}
                measured["distinct"] = record.metrics.get("attribution/distinct", float("nan"))
                runs[configuration].append(measured)
    rows = []
    for path, variant in configurations:
        measured = runs[(path, variant)]
        values = {key: median([run[key] for run in measured]) for key in measured[0]}
        grpo = median([run["total"] for run in runs[(path, None)]])
        first = runs[(path, variants[1])] if len(variants) > 1 else measured
        rows.append(
            {
                "path": path,
                "method": "grpo" if variant is None else variant.label,
                "timings": {k: v for k, v in values.items() if k.startswith(("time/", "memory/"))},
                "total": values["total"],
                "iapo_over_grpo": values["total"] / grpo,
                "attribution_share": values["attribution"] / values["total"],
                "attribution_over_first": values["attribution"] / median([run["attribution"] for run in first])
                if variant is not None
                else float("nan"),
                "gaps": {
                    k.rsplit("/", 1)[-1]: v for k, v in values.items() if k.startswith("attribution/completeness")
                },
                "distinct": values["distinct"],
                "vision_images_per_trajectory": values["vision_images_per_trajectory"],
                "generated_tokens_per_trajectory": values["generated_tokens_per_trajectory"],
                "attributed": values["attributed"],
                "trajectories": count,
            }
        )
    return rows


def run(args: argparse.Namespace) -> dict:
    dtype = "bfloat16" if torch.cuda.is_available() else "float32"
    results: dict = {"config": {k: v for k, v in vars(args).items() if k != "variants"}}
    results["config"] |= {"dtype": dtype, "variants": [v.label for v in args.variants]}
    results["config"] = json.loads(json.dumps(results["config"], default=str))
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
    calls = first_calls(processor, samples, args.turns, args.call_choices)
    call_length = max(len(processor.tokenizer(call)["input_ids"]) for call in calls) if calls else 0
    results["workloads"] = {}
    for name, tokens in args.workloads:
        # a turn has room for the scripted call, which ends at its stop string; sampled turns run to the limit
        length = max(tokens, call_length)
        sampling = SamplingSettings(max_turns=args.turns, max_new_tokens=length, min_new_tokens=length, toolset="zoom")
        results["workloads"][name] = {
            "new_tokens": length,
            "rollout": bench_rollouts(student, processor, samples, images, args, sampling, calls),
            "step": bench_steps(student, processor, teacher, samples, images, args, sampling, calls),
        }
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), help="defaults: gpu when CUDA is available, else cpu")
    parser.add_argument("--student")
    parser.add_argument("--teacher")
    parser.add_argument("--quantization", choices=["nf4", "none"])
    parser.add_argument("--rollouts", type=int, nargs="+", help="concurrent rollouts (prompts × group size)")
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument(
        "--workloads", nargs="+", help="NAME=TOKENS: tokens of each sampled turn (at least the scripted call's)"
    )
    parser.add_argument("--turns", type=int, default=2, help="max turns (>= 2: the first is a scripted zoom call)")
    parser.add_argument("--call-choices", type=int, default=3, choices=range(1, 5), help="scripted calls to pick from")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--mini-batch", type=int, default=8)
    parser.add_argument("--attribution-batch", type=int, default=8)
    parser.add_argument("--lora-rank", type=int)
    parser.add_argument("--rollout-paths", nargs="+", choices=PATHS, help="rollout paths compared (fast included)")
    parser.add_argument("--step-paths", nargs="+", choices=PATHS, help="paths of the training-step table")
    parser.add_argument("--repeats", type=int, help="measured repeats of each configuration (medians)")
    parser.add_argument("--warmup", type=int, help="unreported repeats first (compilation, caches)")
    parser.add_argument(
        "--variants",
        nargs="+",
        help="IAPO attribution variants: paper, or METHOD[:RULE:M][:nodedup][:loss[N]]; the first is "
        "the reference of `attribution / first`",
    )
    parser.add_argument("--ig-chunk", type=int, default=8, help="sequences per IG forward/backward")
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
    if args.turns < 2:
        parser.error("the tool-call target needs --turns >= 2 (the first turn is the scripted call)")
    if "fast" not in args.rollout_paths:
        parser.error("--rollout-paths must include fast (the reference of same tokens)")
    try:
        args.workloads = [(name, int(tokens)) for name, tokens in (w.split("=") for w in args.workloads)]
        args.variants = [parse_variant(spec) for spec in args.variants]
    except ValueError as error:
        parser.error(f"--workloads NAME=TOKENS / --variants: {error}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    results = run(args)
    for name, workload in results["workloads"].items():
        print(f"## {name}: sampled turns of {workload['new_tokens']} tokens\n")
        print(rollout_table(workload["rollout"]))
        print()
        print(step_table(workload["step"]))
        print()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
