"""Choose the RL budget at which GRPO learns, on the validation split, before any comparison reads the test split.

IAPO − GRPO tests the attribution term only where GRPO itself improves on the cold start (issue 18, item 5). For
each named budget of `settings.RL_BUDGETS` and each seed, GRPO runs from the given cold start (the powered preset
with the budget's fields) and is evaluated greedy and sampled as in RL on the first `--rows` rows of the
*validation* split, as is the cold start. `budget.json` holds GRPO − cold start by seed and by question for every
budget and the one `choose_budget` picks by a rule fixed before the runs; `budget.md` the table. RL runs and
evaluations are cached under `--out/<budget>/` (as in the demo), so adding a seed or a budget reruns only what is new.

Validation rows, not training prompts as for the other premises: at the preset's budget GRPO gained 8 to 12 points
of sampled success on a probe of its own training prompts and 2 on the test split (docs/results.md), so training
prompts cannot say whether GRPO learns in the sense the comparison needs.

    python -m iapo.experiments.demo.budget --student DIR --teacher DIR [--budgets base prompts4] [--seeds 0 1]
        [--rows 300] [--workers 2] [--out logs/demo-budget]
    make budget STUDENT=DIR TEACHER=DIR
    # then, at the chosen budget, on the test split:
    python -m iapo.experiments.demo --powered --budget lr3e-4x320 --student DIR --teacher DIR
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from iapo.experiments.demo import stages
from iapo.experiments.demo.compare import versus_cold_start
from iapo.experiments.demo.formatting import points
from iapo.experiments.demo.run import GIVEN, claim_outputs, cold_start_stage
from iapo.experiments.demo.settings import RL_BUDGETS, DemoSettings, powered_settings
from iapo.models.loader import ModelSettings

COLD_START = "cold-start"
"""The folder (under `--out`) of the cold start's evaluations."""


def budget_settings(student: Path, teacher: Path, out: Path, name: str, rows: int) -> DemoSettings:
    """The powered preset at budget `name`, evaluated on `rows` validation rows, its outputs in `out/name`."""
    if name not in RL_BUDGETS:
        raise ValueError(f"unknown budget {name!r}; the budgets are {sorted(RL_BUDGETS)}")
    return powered_settings(student, teacher, out=out / name, eval_split="val", test_rows=rows, **RL_BUDGETS[name])


def evaluations(settings: DemoSettings, seed: int | None, student: Path, teacher: Path) -> dict:
    """Greedy (tools on) and sampled accuracy of GRPO at `seed` (trained first, or read back), or of the cold start
    when `seed` is None; runs in a worker process."""
    model, label = ModelSettings(name=str(student)), "student-tools"
    if seed is not None:
        adapter = stages.reinforce(settings, "grpo", seed, student, teacher, 0.0)
        model, label = ModelSettings(name=str(student), adapter=str(adapter)), stages.run_name("grpo", seed)
    return {
        "greedy": stages.evaluate(settings, label, model, True),
        "sampled": stages.evaluate_sampled(settings, label, model),
    }


def choose_budget(gains: dict[str, dict]) -> tuple[str | None, str]:
    """(budget, why): GRPO learned at a budget when its sampled gain over the cold start (what RL optimises) has a
    95% interval over questions above 0, every seed's sampled gain is positive, and its greedy gain over questions
    is not negative; among those, the one with the highest lower bound of the sampled gain. None when no budget
    qualifies. `gains[name]` holds `versus_cold_start` results under "greedy" and "sampled"."""
    qualified = {}
    for name, gain in gains.items():
        sampled, greedy = gain["sampled"], gain["greedy"]
        if (
            sampled["by_question"]["low"] > 0
            and min(sampled["by_seed"]["differences"]) > 0
            and greedy["by_question"]["mean"] >= 0
        ):
            qualified[name] = sampled["by_question"]["low"]
    rule = (
        "the sampled gain's 95% interval over questions above 0, every seed's sampled gain positive and the greedy "
        "gain not negative"
    )
    if not qualified:
        return None, f"no budget met the rule ({rule}): GRPO did not learn at any budget measured"
    chosen = max(qualified, key=qualified.get)
    return chosen, (
        f"{chosen}: of the budgets that met the rule ({rule}: {', '.join(sorted(qualified))}), the highest lower "
        f"bound of the sampled gain ({points(gains[chosen]['sampled']['by_question'])})"
    )


def render(result: dict) -> str:
    """`budget.md`: the cold start's accuracies, one row per budget, and the choice."""
    cold = result["cold_start"]
    lines = [
        "# GRPO's gain over the cold start, by RL budget (validation split)",
        "",
        f"{result['rows']} validation rows, seeds {result['seeds']}; cold start greedy "
        f"{100 * cold['greedy']:.1f}%, sampled {100 * cold['sampled']:.1f}% (accuracy with tools). Gains in points: "
        "the mean over seeds [95% bootstrap interval over questions], and the sampled gain of each seed.",
        "",
        "| budget | fields | greedy gain | sampled gain | sampled per seed |",
        "|---|---|---|---|---|",
    ]
    for name, row in result["budgets"].items():
        per_seed = ", ".join(f"{100 * d:+.1f}" for d in row["gain"]["sampled"]["by_seed"]["differences"])
        lines.append(
            f"| {name} | {json.dumps(row['fields'])} | {points(row['gain']['greedy']['by_question'])} | "
            f"{points(row['gain']['sampled']['by_question'])} | {per_seed} |"
        )
    return "\n".join([*lines, "", f"Chosen: {result['reason']}.", ""])


def measure_budgets(
    student: Path, teacher: Path, out: Path, names: list[str], seeds: list[int], rows: int, workers: int
) -> dict:
    """Every (budget, seed) GRPO run and the cold start, evaluated on the validation rows; writes and returns
    `budget.json`."""
    start = time.time()
    cold_settings = powered_settings(student, teacher, out=out / COLD_START, eval_split="val", test_rows=rows)
    paths = cold_start_stage(cold_settings)  # the given pair, resolved (one line when a model is missing)
    student, teacher = paths[GIVEN], paths["teacher"]
    every = {name: budget_settings(student, teacher, out, name, rows) for name in names}
    for settings in (cold_settings, *every.values()):
        claim_outputs(settings)
    tasks = [(cold_settings, None)] + [(every[name], seed) for name in names for seed in seeds]
    arguments = [(settings, seed, student, teacher) for settings, seed in tasks]
    if workers <= 1:
        done = [evaluations(*args) for args in arguments]
    else:
        with stages.worker_pool(workers) as pool:
            done = list(pool.map(evaluations, *zip(*arguments, strict=True)))
    cold, runs = done[0], iter(done[1:])
    budgets = {}
    for name in names:
        results = [next(runs) for _ in seeds]
        gain = {key: versus_cold_start([r[key] for r in results], cold[key]) for key in ("greedy", "sampled")}
        budgets[name] = {
            "fields": RL_BUDGETS[name],
            "greedy": [r["greedy"]["accuracy"] for r in results],
            "sampled": [r["sampled"]["accuracy"] for r in results],
            "gain": gain,
        }
    chosen, reason = choose_budget({name: row["gain"] for name, row in budgets.items()})
    result = {
        "split": "val",
        "rows": rows,
        "seeds": seeds,
        "student": str(student),
        "teacher": str(teacher),
        "cold_start": {"greedy": cold["greedy"]["accuracy"], "sampled": cold["sampled"]["accuracy"]},
        "budgets": budgets,
        "chosen": chosen,
        "reason": reason,
        "minutes": (time.time() - start) / 60,
    }
    (out / "budget.json").write_text(json.dumps(result, indent=2))
    (out / "budget.md").write_text(render(result))
    stages.say(f"budget: {reason} ({out / 'budget.md'}, {result['minutes']:.1f} min)")
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="GRPO's gain over the cold start at each RL budget (validation).")
    parser.add_argument("--student", type=Path, required=True, help="the given cold-started student")
    parser.add_argument("--teacher", type=Path, required=True, help="the given teacher (the powered preset's pair)")
    parser.add_argument("--budgets", nargs="+", choices=sorted(RL_BUDGETS), default=list(RL_BUDGETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="GRPO seeds per budget")
    parser.add_argument("--rows", type=int, default=300, help="validation rows every model is evaluated on")
    parser.add_argument("--workers", type=int, default=2, help="runs at once, one process each (one per core)")
    parser.add_argument("--out", type=Path, default=Path("logs/demo-budget"))
    args = parser.parse_args(argv)
    return measure_budgets(args.student, args.teacher, args.out, args.budgets, args.seeds, args.rows, args.workers)


if __name__ == "__main__":
    main()
