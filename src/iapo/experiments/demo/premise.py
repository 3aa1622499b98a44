"""The premises of IAPO's mechanism as numbers: pure functions on sampled trajectories, outcomes and attributions.

Before any comparison the miniature must show (docs/method.md, "What a miniature must establish"): the tool call
decides success (`call_outcomes`: P(success | right call) against P(success | wrong call), where a call is right
when its edit names exactly the labels the question asks for, `right_call`); the teacher makes that call
(`call_outcomes(...)["right_call_rate"]`); and the attribution term ranks a group's samples as success does
(`within_group_rhos` with a bootstrap interval over groups, `bootstrap_mean`), for each way of laying out the
components (`VARIANTS`; `per_token` derives "blocks averaged per token" from the summed blocks). `choose_variant`
is the rule that picks the variant the RL runs use from these numbers alone, read on two disjoint prompt sets.
`premise_checks` states each premise with its threshold and whether it is met; `premise_verdict` says it in one
sentence; `checks_table` lays the checks of several prompt sets side by side; `plain_premises` names the measured
numbers plainly for `report.json`.

    calls = [right_call(t, samples[t.sample_index]) for t in trajectories]
    table = call_outcomes(calls, outcome)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from iapo.agent.trajectory import Trajectory
from iapo.data.sample import VQASample
from iapo.experiments.demo.formatting import number
from iapo.training.diagnostics import average_ranks

VARIANTS = {
    "blocks": "the paper's P / R / I / T blocks, attribution summed per block",
    "blocks_per_token": "the same blocks, attribution averaged per token (a block's mass not set by its length)",
    "regions": "image regions (a 1 × bars grid: one cell per bar) and the question",
    "blocks_positive": "the paper's blocks, only evidence for the call summed per block (each token's positive part)",
    "regions_positive": "image regions and the question, only evidence for the call (each token's positive part)",
    "arguments_blocks": "the paper's blocks, attributing only the call's argument values (the bar it names)",
    "arguments_regions": "image regions and the question, attributing only the call's argument values",
    "arguments_blocks_positive": "the paper's blocks, only evidence for the call's argument values",
    "arguments_regions_positive": "image regions and the question, only evidence for the call's argument values",
    "turn_blocks": "the paper's blocks, attributing the whole tool-call turn (the thought that names the bar too)",
    "turn_regions": "image regions and the question, attributing the whole tool-call turn",
    "turn_blocks_positive": "the paper's blocks, only evidence for the whole tool-call turn",
    "turn_regions_positive": "image regions and the question, only evidence for the whole tool-call turn",
    "occlusion_blocks": "the paper's blocks, each scored by how much the call's log-probability drops without it",
    "occlusion_regions": "image regions and the question, each scored by the call's drop without it (occlusion)",
}
"""The variants measured before RL (name → what it is): a layout; with `_positive` the attribution's `token_scores:
positive` (a token scored by its support for the call, not by its magnitude, which a token that argues against the
call has too); with `arguments_` the target `tool_call_arguments` (the tokens of the bar the call names) instead
of the paper's whole call, of which about 25 tokens of fixed format are the same in a right and a wrong call; with
`turn_` the target `tool_call_turn` (the thought before the call too: a model that writes `Focus on "ant".` chooses
the bar there, and its call copies the choice from the thought, which no block holds); with `occlusion_` the method
`occlusion` instead of integrated gradients (a component's score is the drop of the call's log-probability when its
embeddings are replaced by the baseline: whether the call depends on it, not a gradient's local account of it).
`blocks` is the paper's and the configuration default."""
DEFAULT_VARIANT = "blocks"
PRESET_VARIANTS = tuple(name for name in VARIANTS if not name.startswith("occlusion_"))
"""The variants `make demo`'s premise stage measures unless told otherwise: every one but the occlusion variants,
which are measured on request (`measure --variants occlusion_blocks occlusion_regions`,
`DemoSettings.premise_variants`) until an RL run with occlusion has been measured: on the preset's own pair the rule
would choose `occlusion_regions` (docs/results.md), and the showcase's committed numbers are those of the paper's
blocks."""
RL_VARIANTS = tuple(name for name in VARIANTS if name != "blocks_per_token")
"""The variants an RL run can use (`AttributionSettings.method`, `target`, `layout` and `token_scores`); per-token
averaging is measured here only."""


def right_call(trajectory: Trajectory, sample: VQASample) -> bool | None:
    """Whether the trajectory's first tool call edits exactly what the question asks (`meta["focus"]`, e.g.
    `{"x_values": ["ant"]}` against `{"x_values_to_focus_on": ["ant"]}`, any edit: mask, draw or highlight); None
    without a tool call."""
    call = next((turn.call for turn in trajectory.turns if turn.call is not None), None)
    if call is None:
        return None
    focus = sample.meta["focus"]
    named = {key.removesuffix("_to_focus_on"): value for key, value in call.arguments.items()}
    return set(named) == set(focus) and all(
        isinstance(named[key], list) and sorted(map(str, named[key])) == sorted(labels) for key, labels in focus.items()
    )


def call_place(trajectory: Trajectory, sample: VQASample) -> str:
    """Where a chart trajectory's first tool call points: `asked` (a right call), `first` (the first bar drawn, not
    the asked one), `other` (anything else) or `none` (no call); prefixed by whether the asked bar is the first
    drawn (`asked_first/…`, `asked_later/…`). Tells a call that follows a bar's place from one that follows the
    question or avoids it."""
    first = sample.meta["bars"][0][0]
    case = "asked_first" if sample.meta["target"] == first else "asked_later"
    right = right_call(trajectory, sample)
    if right is None:
        return f"{case}/none"
    if right:
        return f"{case}/asked"
    call = next(turn.call for turn in trajectory.turns if turn.call is not None)
    named = [value for values in call.arguments.values() if isinstance(values, list) for value in values]
    return f"{case}/{'first' if named == [first] else 'other'}"


def place_outcomes(places: Sequence[str], outcome: Sequence[float]) -> dict[str, dict[str, float]]:
    """Per `call_place`: how many trajectories (`n`) and their mean outcome (`success`)."""
    out: dict[str, dict[str, float]] = {}
    for place, won in zip(places, outcome, strict=True):
        entry = out.setdefault(place, {"n": 0, "success": 0.0})
        entry["n"] += 1
        entry["success"] += won
    return {place: {"n": e["n"], "success": e["success"] / e["n"]} for place, e in sorted(out.items())}


def call_outcomes(calls: Sequence[bool | None], outcome: Sequence[float]) -> dict[str, float]:
    """Does the call decide success? Over N trajectories: `call_rate` (any tool call), `right_call_rate` (right
    calls among all trajectories), `right_of_calls` (among calls), `success_given_right`, `success_given_wrong`
    (wrong = a call naming anything else), `success_without_call`, `success` (mean outcome) and the counts; a rate
    with nothing to count is nan."""
    if len(calls) != len(outcome) or not calls:
        raise ValueError(f"{len(calls)} calls and {len(outcome)} outcomes")

    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else math.nan

    right = [float(o) for c, o in zip(calls, outcome, strict=True) if c is True]
    wrong = [float(o) for c, o in zip(calls, outcome, strict=True) if c is False]
    none = [float(o) for c, o in zip(calls, outcome, strict=True) if c is None]
    n = len(calls)
    return {
        "trajectories": n,
        "calls": len(right) + len(wrong),
        "right_calls": len(right),
        "call_rate": (len(right) + len(wrong)) / n,
        "right_call_rate": len(right) / n,
        "right_of_calls": mean([1.0] * len(right) + [0.0] * len(wrong)),
        "success_given_right": mean(right),
        "success_given_wrong": mean(wrong),
        "success_without_call": mean(none),
        "success": mean([float(o) for o in outcome]),
    }


def group_shares(outcome: Sequence[float], group_size: int) -> dict[str, float]:
    """Shares of groups whose samples all fail (`all_fail`) or all succeed (`all_succeed`)."""
    grouped = torch.as_tensor(outcome, dtype=torch.float64).view(-1, group_size)
    return {
        "all_fail": float((grouped.max(1).values <= 0).double().mean()),
        "all_succeed": float((grouped.min(1).values >= 1).double().mean()),
    }


def within_group_rhos(first: Sequence[float], second: Sequence[float], group_size: int) -> list[float]:
    """The Spearman rank correlation of two columns within each group (average ranks for ties), for the groups
    where neither column is constant: one value per such group."""
    a = torch.as_tensor(first, dtype=torch.float64).view(-1, group_size)
    b = torch.as_tensor(second, dtype=torch.float64).view(-1, group_size)
    varying = (a.max(1).values > a.min(1).values) & (b.max(1).values > b.min(1).values)
    if not varying.any():
        return []
    ra, rb = average_ranks(a[varying]), average_ranks(b[varying])
    ra, rb = ra - ra.mean(-1, keepdim=True), rb - rb.mean(-1, keepdim=True)
    return ((ra * rb).sum(-1) / ((ra * ra).sum(-1) * (rb * rb).sum(-1)).sqrt()).tolist()


def bootstrap_mean(values: Sequence[float], draws: int = 2000, seed: int = 0, confidence: float = 0.95) -> dict:
    """The mean of `values` (one per group) with a percentile bootstrap interval (groups resampled with
    replacement); `low` / `high` are nan with fewer than two values."""
    n = len(values)
    if n == 0:
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "n": 0}
    data = np.asarray(values, dtype=np.float64)
    if n == 1:
        return {"mean": float(data[0]), "low": math.nan, "high": math.nan, "n": 1}
    means = data[np.random.default_rng(seed).integers(0, n, size=(draws, n))].mean(1)
    tail = (1 - confidence) / 2
    return {
        "mean": float(data.mean()),
        "low": float(np.quantile(means, tail)),
        "high": float(np.quantile(means, 1 - tail)),
        "n": n,
    }


def per_token(distribution: dict[str, float], counts: dict[str, int]) -> dict[str, float]:
    """A block distribution averaged per token: each block's mass over its token count, renormalised (an empty
    block keeps 0); `{}` stays `{}`."""
    if not distribution:
        return {}
    averaged = {key: mass / counts[key] if counts.get(key) else 0.0 for key, mass in distribution.items()}
    total = sum(averaged.values())
    if total <= 0:
        return {key: 1.0 / len(averaged) for key in averaged}
    return {key: value / total for key, value in averaged.items()}


def lowest_bound(measurements: Sequence[dict[str, dict]], variant: str) -> float:
    """The lowest lower 95% bound of `variant`'s rank correlation with success over the prompt sets measured
    (`measurements`: one `variants` dict per set); nan where a set could not bound it."""
    lows = [rows[variant]["rho_success"]["low"] if variant in rows else math.nan for rows in measurements]
    return min(lows) if all(math.isfinite(low) for low in lows) else math.nan


def choose_variant(measurements: Sequence[dict[str, dict]], runnable: Sequence[str] = RL_VARIANTS) -> tuple[str, str]:
    """(variant, why): among the `runnable` layouts, the one whose attribution term's within-group rank correlation
    with success has the highest lower 95% bound on *every* prompt set measured (`measurements`, one `variants` dict
    per disjoint set of training prompts: `rows[name]["rho_success"]` is a `bootstrap_mean` result), when that bound
    is above 0; otherwise the paper's (`DEFAULT_VARIANT`), since no layout showed the premise. One set is not
    enough to choose on: with ~30 groups whose samples differ an interval is about ±0.2 wide, and a lower bound of
    0.22 on one set was 0.12 [−0.09, 0.33] on the next (docs/results.md)."""
    names = {name for rows in measurements for name in rows if name in runnable}
    bounds = {name: lowest_bound(measurements, name) for name in names}
    finite = {name: low for name, low in bounds.items() if math.isfinite(low)}
    sets = f"{len(measurements)} prompt set{'s' if len(measurements) > 1 else ''}"
    if finite:
        best = max(finite, key=lambda name: (finite[name], name == DEFAULT_VARIANT))
        if finite[best] > 0:
            return best, (
                f"{best}: the highest lower 95% bound of the term's within-group rank correlation with success "
                f"({finite[best]:+.2f}, the lowest over {sets}, above 0)"
            )
    return DEFAULT_VARIANT, (
        f"{DEFAULT_VARIANT} (the paper's): no layout an RL run can use ({', '.join(runnable)}) has a term whose "
        f"within-group rank correlation with success has a lower 95% bound above 0 on each of {sets}"
    )


PREMISE_THRESHOLDS = {
    "success_given_right": 0.8,
    "success_given_wrong": 0.2,
    "student_success_low": 0.10,
    "student_success_high": 0.35,
    "all_fail": 0.5,
    "teacher_right_call_rate": 0.9,
    "groups": 64,
}
"""What a miniature must show before it compares methods (the student's numbers at the cold start, the teacher's
on the same prompts, at the RL temperature)."""


def measured_sets(premise: dict) -> list[dict[str, dict]]:
    """The `variants` of every prompt set a premise measurement read: its own, then its `replication`'s if any."""
    return [premise["variants"]] + ([premise["replication"]["variants"]] if "replication" in premise else [])


def premise_checks(premise: dict, thresholds: dict[str, float] = PREMISE_THRESHOLDS) -> list[dict]:
    """Each premise as {name, value (a number or [low, high]), threshold (words), met}, from `measure_premise`'s
    result: the call decides the student's success, its outcome reward is sparse, the teacher knows the call, the
    chosen layout's term ranks samples as success does, and enough groups were measured."""
    student, teacher = premise["student"], premise["teacher"]
    measurements = measured_sets(premise)
    low = lowest_bound(measurements, premise["chosen_variant"])
    t = thresholds
    success = student["success"]

    def at_least(value: float, bound: float) -> bool:
        return math.isfinite(value) and value >= bound

    def at_most(value: float, bound: float) -> bool:
        return math.isfinite(value) and value <= bound

    return [
        {
            "name": "student P(success | right call)",
            "value": student["success_given_right"],
            "threshold": f">= {t['success_given_right']:g}",
            "met": at_least(student["success_given_right"], t["success_given_right"]),
        },
        {
            "name": "student P(success | wrong call)",
            "value": student["success_given_wrong"],
            "threshold": f"<= {t['success_given_wrong']:g}",
            "met": at_most(student["success_given_wrong"], t["success_given_wrong"]),
        },
        {
            "name": "student sampled success",
            "value": success,
            "threshold": f"in [{t['student_success_low']:g}, {t['student_success_high']:g}]",
            "met": at_least(success, t["student_success_low"]) and at_most(success, t["student_success_high"]),
        },
        {
            "name": "student all-fail groups",
            "value": student["all_fail"],
            "threshold": f">= {t['all_fail']:g}",
            "met": at_least(student["all_fail"], t["all_fail"]),
        },
        {
            "name": "teacher right-call rate",
            "value": teacher["right_call_rate"],
            "threshold": f">= {t['teacher_right_call_rate']:g}",
            "met": at_least(teacher["right_call_rate"], t["teacher_right_call_rate"]),
        },
        {
            "name": (
                f"rank correlation of the {premise['chosen_variant']} term with success (lower 95% bound, lowest of "
                f"{len(measurements)} prompt set{'s' if len(measurements) > 1 else ''})"
            ),
            "value": low,
            "threshold": "> 0",
            "met": math.isfinite(low) and low > 0,
        },
        {
            "name": "groups measured",
            "value": premise["prompts"],
            "threshold": f">= {t['groups']:g}",
            "met": premise["prompts"] >= t["groups"],
        },
    ]


def premise_verdict(checks: list[dict]) -> str:
    """One sentence: whether every premise holds, else which do not (so a comparison says nothing about IAPO)."""
    unmet = [check["name"] for check in checks if not check["met"]]
    if not unmet:
        return "Every premise holds: a comparison of IAPO with GRPO here tests IAPO's mechanism."
    return (
        f"{len(checks) - len(unmet)} of {len(checks)} premises hold; not met: {'; '.join(unmet)}. A comparison of "
        "IAPO with GRPO here cannot show IAPO's mechanism until they do."
    )


def checks_table(checks_per_set: Sequence[list[dict]], labels: Sequence[str]) -> str:
    """A markdown table of `premise_checks` on several prompt sets (one list per set, headed by `labels`): a row per
    premise with its value on each set (marked ✗ where unmet), its threshold, and on how many sets it held."""
    if len(checks_per_set) != len(labels) or not checks_per_set:
        raise ValueError(f"need one label per set of checks, got {len(labels)} labels for {len(checks_per_set)} sets")

    def cell(check: dict) -> str:
        value = check["value"]
        shown = str(value) if isinstance(value, int) else number(value)
        return shown if check["met"] else f"{shown} ✗"

    lines = [
        "| premise | " + " | ".join(labels) + " | threshold | held on |",
        "|---|" + "---|" * len(labels) + "---|---|",
    ]
    for row in zip(*checks_per_set, strict=True):
        held = sum(check["met"] for check in row)
        cells = " | ".join(cell(check) for check in row)
        lines.append(f"| {row[0]['name']} | {cells} | {row[0]['threshold']} | {held} of {len(row)} |")
    return "\n".join(lines)


def plain_premises(premise: dict) -> dict:
    """The premise numbers under plain names for `report.json` (the full measurement stays under `premise`): the
    first prompt set's, the checks and the chosen layout, and the second set's numbers under `replication`."""
    second = premise.get("replication")
    return measured_numbers(premise) | {
        "chosen_layout": premise["chosen_variant"],
        "checks": premise_checks(premise),
        "groups": premise["prompts"],
        "replication": measured_numbers(second) if second else None,
    }


def measured_numbers(measured: dict) -> dict:
    """One prompt set's premise numbers under plain names."""
    models = ("student", "teacher")
    return {
        "prompts": [measured["offset"], measured["offset"] + measured["prompts"] - 1],
        "seed": measured["seed"],
        "right_call_rate": {m: measured[m]["right_call_rate"] for m in models},
        "success_given_right_call": {m: measured[m]["success_given_right"] for m in models},
        "success_given_wrong_call": {m: measured[m]["success_given_wrong"] for m in models},
        "sampled_success": {m: measured[m]["success"] for m in models},
        "all_fail_groups": measured["student"]["all_fail"],
        "rank_correlation_with_success": {v: row["rho_success"] for v, row in measured["variants"].items()},
        "rank_correlation_with_right_call": {v: row["rho_right_call"] for v, row in measured["variants"].items()},
    }
