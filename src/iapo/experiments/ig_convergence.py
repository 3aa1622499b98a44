"""How many integrated-gradients points the paper's attribution needs: completeness gap against m for each rule.

On the tiny student and teacher (the `cpu` bench's models, prompts and scripted tool call), for each quadrature rule
(`riemann`, `gauss_legendre`) and m, the paper's attribution (tool-call target, blocks, mean baseline) of every
prompt's trajectory, student and teacher: the median relative completeness gap |Σ attr − (f(e) − f(b))| /
|f(e) − f(b)| over the trajectories (what training logs as `attribution/completeness_gap/*`), and the mean total
variation distance of the block distribution from the reference (Gauss–Legendre at the largest m), which shows both
rules converging to the same attribution. The cheapest rule and m (cost ∝ m) whose median gap is at most
`--max-gap` for both models is printed last; docs/method.md records the choice for `configs/iapo.yaml`.

    python -m iapo.experiments.ig_convergence                    # 16 prompts, m = 1 2 3 4 6 8 16 32 (~3 min, CPU)
    python -m iapo.experiments.ig_convergence --steps 2 4 8 --out logs/bench/ig_convergence.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import median

import torch

from iapo.agent.rollout import HFPolicy, SamplingSettings, rollout
from iapo.attribution.quadrature import QUADRATURES
from iapo.attribution.score import AttributionSettings, attribution_distributions
from iapo.data.sample import load_image
from iapo.data.synthetic import SyntheticConfig, build_split
from iapo.experiments.bench import first_call, scripted
from iapo.models.loader import load_model


def measure(args: argparse.Namespace) -> list[dict]:
    """One row per (model, rule, m): median relative gap, and mean total variation from the reference."""
    student = load_model(args.student)
    teacher = load_model(args.teacher)
    samples = build_split("test", args.prompts, SyntheticConfig(canvas_size=args.image_size))
    images = [load_image(s.image) for s in samples]
    call = first_call(student[1], samples, turns=2)
    # room for the scripted call; the answer after it is never attributed (the target is the call)
    length = len(student[1].tokenizer(call)["input_ids"])
    sampling = SamplingSettings(max_turns=2, max_new_tokens=length, toolset="zoom")
    torch.manual_seed(0)
    with scripted(student[0], student[1], samples, sampling, call):
        trajectories = rollout(HFPolicy(*student, sampling), student[1], samples, images, 1, sampling)
    rows = []
    for side, (model, processor) in (("student", student), ("teacher", teacher)):
        runs = {}
        for rule in args.rules:
            for m in args.steps:
                settings = AttributionSettings(
                    method="integrated_gradients",
                    target="tool_call",
                    layout="blocks",
                    divergence="kl",
                    form="penalty",
                    missing_target="exclude",
                    baseline="mean",
                    steps=m,
                    quadrature=rule,
                    chunk_size=args.chunk,
                    completeness_rows=len(trajectories),  # every trajectory's gap, not the training sample
                )
                stats: dict = {}
                weights = attribution_distributions(
                    model, processor, trajectories, samples, settings, reencode=side == "teacher", stats=stats
                )
                runs[(rule, m)] = (weights, stats["completeness_gaps"])
        reference = runs[("gauss_legendre", max(args.steps))][0]
        for (rule, m), (weights, gaps) in runs.items():
            distances = [0.5 * sum(abs(w[k] - r[k]) for k in r) for w, r in zip(weights, reference, strict=True) if r]
            rows.append(
                {
                    "model": side,
                    "rule": rule,
                    "m": m,
                    "median_gap": median(gaps),
                    "max_gap": max(gaps),
                    "tv_to_reference": sum(distances) / len(distances),
                    "trajectories": len(gaps),
                }
            )
    return rows


def cheapest(rows: list[dict], max_gap: float) -> tuple[str, int] | None:
    """The (rule, m) of least m whose median gap is at most `max_gap` for every model (Riemann first on a tie)."""
    passing = []
    for rule in QUADRATURES:
        for m in sorted({row["m"] for row in rows}):
            mine = [row for row in rows if row["rule"] == rule and row["m"] == m]
            if mine and all(row["median_gap"] <= max_gap for row in mine):
                passing.append((m, QUADRATURES.index(rule), rule))
    if not passing:
        return None
    m, _, rule = min(passing)
    return rule, m


def table(rows: list[dict]) -> str:
    models = [model for model in ("student", "teacher") if any(row["model"] == model for row in rows)]
    rules = [rule for rule in QUADRATURES if any(row["rule"] == rule for row in rows)]
    header = " | ".join(f"{model} {rule} gap % (TV)" for model in models for rule in rules)
    lines = [f"| m | {header} |", "|---" * (1 + len(models) * len(rules)) + "|"]
    for m in sorted({row["m"] for row in rows}):
        cells = []
        for model in models:
            for rule in rules:
                [row] = [r for r in rows if (r["model"], r["rule"], r["m"]) == (model, rule, m)]
                cells.append(f"{100 * row['median_gap']:.2f} ({row['tv_to_reference']:.4f})")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--student", default="tiny-student")
    parser.add_argument("--teacher", default="tiny-teacher")
    parser.add_argument("--prompts", type=int, default=16, help="prompts, one trajectory each (a scripted call)")
    parser.add_argument("--image-size", type=int, default=672)
    parser.add_argument("--rules", nargs="+", choices=QUADRATURES, default=list(QUADRATURES))
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 3, 4, 6, 8, 16, 32], help="m values")
    parser.add_argument("--chunk", type=int, default=16, help="sequences per IG forward/backward")
    parser.add_argument("--max-gap", type=float, default=0.05, help="median relative gap the choice must meet")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    rows = measure(args)
    print("Median relative completeness gap over the trajectories, % (mean TV distance to the reference):")
    print(table(rows))
    choice = cheapest(rows, args.max_gap)
    print(
        f"cheapest with median gap <= {100 * args.max_gap:g}% for every model: "
        + (f"{choice[0]} m = {choice[1]}" if choice else "none of the measured m")
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
