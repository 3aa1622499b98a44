"""Why the attribution term may not rank a group's samples as success does: the attribution of right against wrong
calls, per component, for the student and for the teacher reading the student's call teacher-forced — with the
whole call as the target (the paper's `tool_call`), with only its argument values (`tool_call_arguments`: the
label the call names, the one part of the call a right call and a wrong one differ in) and with the whole turn that
calls (`tool_call_turn`: the thought that names the bar before the call too).

For each variant of `premise.RL_VARIANTS` (target, layout, and token scores whole or only in support of the call):
the mean mass per component of right and of wrong calls on each side; the mean term
(−KL, student ‖ teacher) of right and of wrong calls, and within the groups holding both, how often the right calls'
mean term is the higher; the term's within-group rank correlation with success and with a right call; for the
regions layout, the mass on the asked bar's image column and on the named bar's. Training prompts only, as
`measure` samples them.

    python -m iapo.experiments.demo.why --student DIR --teacher DIR --prompts 64 --offset 24 --seed 0
"""

from __future__ import annotations

import time
from pathlib import Path

from iapo.attribution.align import attribution_terms
from iapo.attribution.score import attribution_distributions
from iapo.experiments.demo.measure import overlay_settings, progress, sample_model, variant_settings
from iapo.experiments.demo.premise import RL_VARIANTS, bootstrap_mean, right_call, within_group_rhos
from iapo.models.loader import ModelSettings


def mean_masses(distributions: list[dict], keep: list[bool]) -> dict[str, float]:
    chosen = [d for d, k in zip(distributions, keep, strict=True) if k and d]
    keys = sorted({key for d in chosen for key in d})
    return {key: sum(d.get(key, 0.0) for d in chosen) / len(chosen) for key in keys} if chosen else {}


def named_column(trajectory, sample) -> int | None:
    """The image column (bar index) of the first label the call names; None if it names no bar of the chart."""
    call = next((turn.call for turn in trajectory.turns if turn.call is not None), None)
    labels = [label for label, _ in sample.meta["bars"]]
    named = next(iter(call.arguments.values()), []) if call else []
    first = named[0] if isinstance(named, list) and named else None
    return labels.index(first) if first in labels else None


def compare(terms: list[float], calls: list, outcome: list[float], group_size: int, seed: int) -> dict:
    """Right against wrong calls: mean terms, within-group wins, and the rank correlations."""
    right = [t for t, c in zip(terms, calls, strict=True) if c is True]
    wrong = [t for t, c in zip(terms, calls, strict=True) if c is False]
    wins, differences = [], []
    for g in range(0, len(terms), group_size):
        r = [terms[i] for i in range(g, g + group_size) if calls[i] is True]
        w = [terms[i] for i in range(g, g + group_size) if calls[i] is False]
        if r and w:
            difference = sum(r) / len(r) - sum(w) / len(w)
            differences.append(difference)
            wins.append(1.0 if difference > 0 else 0.5 if difference == 0 else 0.0)
    right_flags = [1.0 if c else 0.0 for c in calls]
    return {
        "term_right": sum(right) / len(right) if right else float("nan"),
        "term_wrong": sum(wrong) / len(wrong) if wrong else float("nan"),
        "mixed_groups": len(wins),
        "right_term_higher_share": sum(wins) / len(wins) if wins else float("nan"),
        "right_minus_wrong": bootstrap_mean(differences, seed=seed),
        "rho_success": bootstrap_mean(within_group_rhos(terms, outcome, group_size), seed=seed),
        "rho_right_call": bootstrap_mean(within_group_rhos(terms, right_flags, group_size), seed=seed),
    }


def explain(settings, student: Path, teacher: Path, prompts: int, seed: int = 0, offset: int = 24) -> dict:
    samples = settings.build_split("train", offset + prompts)[offset:]
    progress(f"training prompts {offset}..{offset + prompts - 1}, seed {seed}: sampling the student")
    trajectories, outcome, student_pair = sample_model(settings, student, samples, seed)
    teacher_pair = ModelSettings(name=str(teacher)).load(device="cpu")
    teacher_pair[0].eval()
    calls = [right_call(t, samples[t.sample_index]) for t in trajectories]
    right, wrong = [c is True for c in calls], [c is False for c in calls]
    out = {"prompts": prompts, "offset": offset, "seed": seed, "right_calls": sum(right), "wrong_calls": sum(wrong)}
    started = time.monotonic()
    for number, variant in enumerate(RL_VARIANTS, 1):
        progress(f"variant {number}/{len(RL_VARIANTS)} {variant}: {len(trajectories)} trajectories", started)
        attribution = variant_settings(settings, variant)
        sides = {
            "student": attribution_distributions(*student_pair, trajectories, samples, attribution),
            "teacher": attribution_distributions(*teacher_pair, trajectories, samples, attribution, reencode=True),
        }
        terms, _ = attribution_terms(
            sides["student"],
            sides["teacher"],
            attribution.divergence,
            attribution.form,
            attribution.missing_target,
            settings.group_size,
            attribution.kl_smoothing,
        )
        row = compare(terms.tolist(), calls, outcome.tolist(), settings.group_size, seed)
        row["masses"] = {
            side: {"right": mean_masses(d, right), "wrong": mean_masses(d, wrong)} for side, d in sides.items()
        }
        if attribution.layout == "regions":
            row["bar_columns"] = bar_columns(sides, trajectories, samples, calls)
        out[variant] = row
    return out


def bar_columns(sides: dict, trajectories, samples, calls) -> dict:
    """Mean mass on the asked bar's image column and on the named bar's, of right and of wrong calls, per side."""
    out = {}
    for side, distributions in sides.items():
        cells: dict[str, list[float]] = {"right/asked": [], "wrong/asked": [], "wrong/named": []}
        for d, t, c in zip(distributions, trajectories, calls, strict=True):
            if not d or c is None:
                continue
            sample = samples[t.sample_index]
            labels = [label for label, _ in sample.meta["bars"]]
            asked = labels.index(sample.meta["target"])
            cells[f"{'right' if c else 'wrong'}/asked"].append(d.get(f"image/r0c{asked}", 0.0))
            named = named_column(t, sample)
            if not c and named is not None:
                cells["wrong/named"].append(d.get(f"image/r0c{named}", 0.0))
        out[side] = {k: sum(v) / len(v) if v else float("nan") for k, v in cells.items()}
    return out


def main(argv: list[str] | None = None) -> dict:
    """`python -m iapo.experiments.demo.why --student DIR --teacher DIR [--prompts 64] [--offset 24] [--seed 0]`,
    printed as JSON."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--student", type=Path, required=True)
    parser.add_argument("--teacher", type=Path, required=True)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--offset", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", type=Path, help="another task overlay than configs/demo_charts.yaml (its task)")
    args = parser.parse_args(argv)
    result = explain(overlay_settings(args.config), args.student, args.teacher, args.prompts, args.seed, args.offset)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
