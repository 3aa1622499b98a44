"""The premise measurement: a cold start and its teacher sampled on training prompts at the RL settings, before RL.

`measure_premise` rolls out the student (and, separately, the teacher) on `prompts` training prompts, G samples each
at the RL temperature, with no update, and returns what `premise` computes from them: for each model whether its
tool call decides success (`call_outcomes`), the student's group shares, and for each layout of `premise.VARIANTS`
the within-group rank correlation of IAPO's attribution term (student vs teacher, on the student's trajectories) with
success and with a right call, each with a bootstrap 95% interval over groups; then the variant `choose_variant`
picks; `replicated_premise` measures two disjoint prompt sets and chooses from both (the demo's premise stage);
`premise_on_sets` reruns the measurement on any number of further sets and sampling seeds, and states on how many
each premise holds. Test prompts are never read here.

    result = measure_premise(settings, student_path, teacher_path, prompts=64, seed=0)
    python -m iapo.experiments.demo.measure --student logs/demo/sft/step-600 --teacher logs/demo/sft/teacher --replicate
    python -m iapo.experiments.demo.measure --config configs/demo_charts_6bars.yaml --student checkpoints/demo-pair/student \
        --teacher checkpoints/demo-pair/teacher --variants blocks regions occlusion_regions --offset 280 --seed 10 --sets 3
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import torch

from iapo.attribution.align import attribution_terms
from iapo.attribution.components import block_components
from iapo.attribution.prefix import through_target_turn
from iapo.attribution.score import attribution_distributions, has_target
from iapo.data.sample import load_image
from iapo.experiments.demo.premise import (
    DEFAULT_VARIANT,
    VARIANTS,
    bootstrap_mean,
    call_outcomes,
    call_place,
    checks_table,
    choose_variant,
    group_shares,
    per_token,
    place_outcomes,
    premise_checks,
    right_call,
    within_group_rhos,
)
from iapo.experiments.demo.regime import within_group_spread
from iapo.models.loader import ModelSettings
from iapo.training.diagnostics import mass_per_component
from iapo.training.expert import expert_trajectories
from iapo.training.rewards import RewardContext, build_rewards
from iapo.training.step import StepSettings, collect

VARIANT_TARGETS = {"arguments_": "tool_call_arguments", "turn_": "tool_call_turn"}
"""A variant's name prefix → the attribution target it uses instead of the paper's whole call."""


def variant_settings(settings, variant: str):
    """The attribution settings of a variant of `premise.VARIANTS`: the demo's (the paper's) with, for an
    `occlusion_` variant, the method `occlusion`; for an `arguments_` or `turn_` variant, the target
    `tool_call_arguments` or `tool_call_turn`; the layout replaced (`regions` cuts the image into one column per bar:
    the bar the call should name is one cell); and, for a `_positive` variant, `token_scores: positive`."""
    method = "occlusion" if variant.startswith("occlusion_") else settings.attribution.method
    target, layout = settings.attribution.target, variant.removeprefix("occlusion_")
    for prefix, prefixed_target in VARIANT_TARGETS.items():
        if layout.startswith(prefix):
            target, layout = prefixed_target, layout.removeprefix(prefix)
    layout, _, scores = layout.partition("_")
    token_scores = "positive" if scores == "positive" else "abs"
    attribution = dataclasses.replace(settings.attribution, method=method, target=target, token_scores=token_scores)
    if layout == "regions":
        columns = getattr(settings.task, "n_bars", 3)
        return dataclasses.replace(attribution, layout="regions", grid=(1, columns))
    return dataclasses.replace(attribution, layout="blocks")


def progress(message: str, started: float | None = None) -> None:
    """One line per step of a premise measurement (minutes long), with the seconds since `started`; on stderr, as
    stdout carries the JSON of `main`."""
    elapsed = "" if started is None else f" ({time.monotonic() - started:.0f} s in)"
    print(f"[premise] {message}{elapsed}", file=sys.stderr, flush=True)


def sample_model(settings, model: Path | ModelSettings, samples: list, seed: int) -> tuple[list, torch.Tensor, tuple]:
    """(trajectories, outcome, (model, processor)) of one model (a saved directory, or base + adapter as
    `ModelSettings`) on `samples`, G each, at the RL sampling settings, batch by batch."""
    torch.manual_seed(seed)
    loaded = model if isinstance(model, ModelSettings) else ModelSettings(name=str(model))
    model, processor = loaded.load(device="cpu")
    model.eval()
    step = StepSettings(group_size=settings.group_size, sampling=settings.sampling, attribution=settings.attribution)
    rewards = build_rewards(settings.rewards("grpo"), RewardContext(settings.attribution))
    trajectories, outcome = [], []
    for start in range(0, len(samples), settings.rl_prompts):
        batch = samples[start : start + settings.rl_prompts]
        record = collect(model, processor, batch, [load_image(s.image) for s in batch], step, rewards, attribute=False)
        for trajectory in record.trajectories:
            trajectory.sample_index += start
        trajectories += record.trajectories
        outcome.append(record.rewards["accuracy"])
    return trajectories, torch.cat(outcome), (model, processor)


def token_counts(trajectory) -> dict[str, int]:
    """Tokens per block of the part of a trajectory the tool-call target is attributed over (through its turn);
    `{}` without a tool call (nothing is attributed)."""
    if not has_target(trajectory, "tool_call"):
        return {}
    cut = through_target_turn(trajectory, "tool_call")
    return {key: int(mask.sum()) for key, mask in block_components(cut).items()}


def variant_terms(settings, trajectories, samples, student, teacher, variants=None) -> dict[str, dict]:
    """Per variant of `variants` (default `settings.premise_variants`; in the order of `VARIANTS`: the summed blocks
    before their per-token average): the attribution term of every trajectory (−KL, a trajectory without a call gets
    its group's mean, as the reward does) and the mean attribution mass per component of each side."""
    out = {}
    blocks = None
    variants = settings.premise_variants if variants is None else variants
    measured, started = [name for name in VARIANTS if name in variants], time.monotonic()
    for number, variant in enumerate(measured, 1):
        progress(f"variant {number}/{len(measured)} {variant}: {len(trajectories)} trajectories", started)
        if variant == "blocks_per_token":
            counts = [token_counts(t) for t in trajectories]
            sides = {side: [per_token(d, c) for d, c in zip(blocks[side], counts, strict=True)] for side in blocks}
        else:
            attribution = variant_settings(settings, variant)
            sides = {
                "student": attribution_distributions(*student, trajectories, samples, attribution),
                "teacher": attribution_distributions(*teacher, trajectories, samples, attribution, reencode=True),
            }
            blocks = sides if variant == "blocks" else blocks
        terms, _ = attribution_terms(
            sides["student"],
            sides["teacher"],
            settings.attribution.divergence,
            settings.attribution.form,
            settings.attribution.missing_target,
            settings.group_size,
            settings.attribution.kl_smoothing,
        )
        out[variant] = {"terms": terms, "masses": {side: mass_per_component(d) for side, d in sides.items()}}
    return out


def measure_premise(settings, student: Path, teacher: Path, prompts: int, seed: int = 0, offset: int = 0) -> dict:
    """The premise numbers of `student` (and `teacher`) on training prompts `offset` .. `offset + prompts`."""
    samples = settings.build_split("train", offset + prompts)[offset:]
    progress(f"training prompts {offset}..{offset + prompts - 1}, seed {seed}: sampling the teacher and the student")
    teacher_trajectories, teacher_outcome, teacher_pair = sample_model(settings, teacher, samples, seed)
    trajectories, outcome, student_pair = sample_model(settings, student, samples, seed)
    teacher_calls = [right_call(t, samples[t.sample_index]) for t in teacher_trajectories]
    calls = [right_call(t, samples[t.sample_index]) for t in trajectories]
    right = [1.0 if c else 0.0 for c in calls]
    variants = {}
    for variant, measured in variant_terms(settings, trajectories, samples, student_pair, teacher_pair).items():
        terms = measured["terms"].tolist()
        variants[variant] = {
            "description": VARIANTS[variant],
            "rho_success": bootstrap_mean(within_group_rhos(terms, outcome.tolist(), settings.group_size), seed=seed),
            "rho_right_call": bootstrap_mean(within_group_rhos(terms, right, settings.group_size), seed=seed),
            "mean_term": sum(terms) / len(terms),
            "term_spread": within_group_spread(measured["terms"], settings.group_size),
            "masses": measured["masses"],
        }
    chosen, reason = choose_variant([variants])
    return {
        "prompts": prompts,
        "offset": offset,
        "group_size": settings.group_size,
        "seed": seed,
        "temperature": settings.sampling.temperature,
        "student": call_outcomes(calls, outcome.tolist()) | group_shares(outcome.tolist(), settings.group_size),
        "teacher": call_outcomes(teacher_calls, teacher_outcome.tolist())
        | group_shares(teacher_outcome.tolist(), settings.group_size),
        "variants": variants,
        "outcome_spread": within_group_spread(outcome, settings.group_size),
        "chosen_variant": chosen,
        "variant_reason": reason,
    }


def replicated_premise(settings, student: Path, teacher: Path, prompts: int, seed: int = 0, offset: int = 0) -> dict:
    """`measure_premise` on two disjoint sets of training prompts (`offset` .. and the `prompts` after them, with
    sampling seeds `seed` and `seed + 1`): the first set's numbers at the top level, the second's under
    `replication`, and the variant chosen by `choose_variant` from both."""
    first = measure_premise(settings, student, teacher, prompts, seed, offset)
    second = measure_premise(settings, student, teacher, prompts, seed + 1, offset + prompts)
    for key in ("chosen_variant", "variant_reason"):
        second.pop(key)
    chosen, reason = choose_variant([first["variants"], second["variants"]])
    return first | {"replication": second, "chosen_variant": chosen, "variant_reason": reason}


def premise_on_sets(
    settings, student: Path, teacher: Path, prompts: int, sets: int, seed: int = 0, offset: int = 0
) -> dict:
    """`measure_premise` on `sets` disjoint sets of training prompts (set k: the `prompts` from `offset + k·prompts`,
    sampling seed `seed + k`), the variant `choose_variant` picks from all of them, and each set's `premise_checks`
    with that variant: whether a verdict on one or two sets survives other prompts and seeds. Returns {"sets": the
    measurements, "chosen_variant", "variant_reason", "checks": one list per set, "table": `checks_table`}."""
    if sets < 1:
        raise ValueError(f"sets must be >= 1, got {sets}")
    measured = [
        measure_premise(settings, student, teacher, prompts, seed + k, offset + k * prompts) for k in range(sets)
    ]
    chosen, reason = choose_variant([m["variants"] for m in measured])
    checks = [premise_checks(m | {"chosen_variant": chosen}) for m in measured]
    labels = [f"prompts {m['offset']}–{m['offset'] + prompts - 1}, seed {m['seed']}" for m in measured]
    return {
        "sets": measured,
        "chosen_variant": chosen,
        "variant_reason": reason,
        "checks": checks,
        "table": checks_table(checks, labels),
    }


def call_premises(settings, model: Path, prompts: int, seed: int = 0, offset: int = 0) -> dict:
    """The call half of the premises of one model, without attribution (seconds, not minutes): `call_outcomes`,
    `group_shares` and, per `call_place`, `place_outcomes` (under `places`) of its samples on training prompts
    `offset` .. `offset + prompts`, as `measure_premise` counts."""
    samples = settings.build_split("train", offset + prompts)[offset:]
    trajectories, outcome, _ = sample_model(settings, model, samples, seed)
    calls = [right_call(t, samples[t.sample_index]) for t in trajectories]
    places = [call_place(t, samples[t.sample_index]) for t in trajectories]
    return (
        call_outcomes(calls, outcome.tolist())
        | group_shares(outcome.tolist(), settings.group_size)
        | {"places": place_outcomes(places, outcome.tolist())}
    )


def label_copy(settings, model_path: Path, samples: list) -> dict[str, float]:
    """Teacher-forced on the right demonstrations (thought `Focus on "ant".`, then the call; the call alone without
    `settings.sft_thought`): how often the asked label's first token is the likeliest of the chart's labels where
    the thought names it (`thought`) and where the call does (`call`). Tells a model that cannot copy the label from
    the question apart from one that samples."""
    model, processor = ModelSettings(name=str(model_path)).load(device="cpu")
    model.eval()
    tokenizer = processor.tokenizer
    images = [load_image(s.image) for s in samples]
    trajectories, _ = expert_trajectories(
        processor, samples, images, settings.sampling, kind="tool", edit_thought=settings.sft_thought
    )
    places = ("thought", "call") if settings.sft_thought else ("call",)
    hits: dict[str, list[bool]] = {"thought": [], "call": []}
    for trajectory in trajectories:
        sample = samples[trajectory.sample_index]
        first = {label: tokenizer(label, add_special_tokens=False)["input_ids"][0] for label, _ in sample.meta["bars"]}
        asked = first[sample.meta["target"]]
        with torch.no_grad():
            logits = model(
                input_ids=trajectory.input_ids[None],
                attention_mask=trajectory.attention_mask[None],
                pixel_values=trajectory.pixel_values,
                image_grid_thw=trajectory.image_grid_thw,
                mm_token_type_ids=trajectory.mm_token_type_ids[None],
            ).logits[0]
        named = [
            i for i, token in enumerate(trajectory.input_ids.tolist()) if trajectory.policy_mask[i] and token == asked
        ]
        for place, position in zip(places, named, strict=False):
            scores = logits[position - 1]
            hits[place].append(max(first, key=lambda label: float(scores[first[label]])) == sample.meta["target"])
    return {place: sum(found) / len(found) for place, found in hits.items() if found}


def overlay_settings(config: Path | None):
    """The paper miniature's settings, with the task and sampling of another overlay (`--config`) when given."""
    from iapo.data.synthetic_charts import SyntheticChartsConfig
    from iapo.experiments.demo.settings import CHARTS_CONFIG, demo_settings, read_overlay

    settings = demo_settings("charts")
    if config is None or config == CHARTS_CONFIG:
        return settings
    task, sampling = read_overlay(config, "synthetic_charts", SyntheticChartsConfig)
    return dataclasses.replace(settings, task=task, sampling=sampling)


def main(argv: list[str] | None = None) -> dict:
    """`python -m iapo.experiments.demo.measure --student DIR --teacher DIR [--prompts 64] [--offset 24] [--seed 0]
    [--replicate | --sets K] [--copy] [--calls-only] [--config OVERLAY] [--group-size G] [--variants blocks ...]`:
    the premise measurement of any two saved models on the paper miniature's training prompts (with `--copy`, also
    `label_copy`), printed as JSON; with `--sets`, also the table of each premise on each set (on stderr)."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--student", type=Path, required=True)
    parser.add_argument("--teacher", type=Path, required=True)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--offset", type=int, default=24, help="first training prompt (the regime uses 0..23)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", type=Path, help="another task overlay than configs/demo_charts.yaml (its task)")
    parser.add_argument("--group-size", type=int, help="samples per prompt (default 4; the powered comparison's: 3)")
    parser.add_argument(
        "--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS), help="the variants measured (blocks always)"
    )
    parser.add_argument("--copy", action="store_true", help="also `label_copy` of both models on the same prompts")
    repeat = parser.add_mutually_exclusive_group()
    repeat.add_argument("--calls-only", action="store_true", help="only `call_premises` of each model (no attribution)")
    repeat.add_argument(
        "--replicate", action="store_true", help="also the next --prompts prompts with seed + 1; choose from both"
    )
    repeat.add_argument(
        "--sets",
        type=int,
        help="K disjoint prompt sets (seeds seed .. seed + K - 1) and each premise's verdict on each",
    )
    args = parser.parse_args(argv)
    if args.sets is not None and (args.sets < 1 or args.copy):
        parser.error("--sets needs K >= 1 and measures no label copy (--copy)")
    variants = tuple(dict.fromkeys([DEFAULT_VARIANT, *args.variants]))
    settings = dataclasses.replace(overlay_settings(args.config), premise_variants=variants)
    if args.group_size is not None:
        if args.group_size < 2:
            parser.error(f"--group-size needs at least 2 samples per prompt, got {args.group_size}")
        settings = dataclasses.replace(settings, group_size=args.group_size)
    if args.calls_only:
        result = {
            side: call_premises(settings, path, args.prompts, args.seed, args.offset)
            for side, path in (("student", args.student), ("teacher", args.teacher))
        }
        print(json.dumps(result, indent=2))
        return result
    if args.sets is not None:
        result = premise_on_sets(settings, args.student, args.teacher, args.prompts, args.sets, args.seed, args.offset)
        print(json.dumps(result, indent=2))
        print(result["table"], file=sys.stderr)
        return result
    measure = replicated_premise if args.replicate else measure_premise
    result = measure(settings, args.student, args.teacher, args.prompts, args.seed, args.offset)
    if args.copy:
        samples = settings.build_split("train", args.offset + args.prompts)[args.offset :]
        result["label_copy"] = {
            side: label_copy(settings, path, samples)
            for side, path in (("student", args.student), ("teacher", args.teacher))
        }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
