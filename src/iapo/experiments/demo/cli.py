"""The demo's command line: which preset, from which pair, into which folder; `run.run` does the rest.

python -m iapo.experiments.demo                     # make demo: the showcase from the shipped 6-bar pair (18.5 min)
python -m iapo.experiments.demo --powered --budget lr3e-4x320 --attribution-target tool_call_ran
                                                    # make powered: the powered comparison from the same pair
    [--seeds 0 1 2] [--call-weight 0.1]
    [--attribution-weight 20] [--optimisability-seeds]     # (no seeds: without the optimisability stage)
python -m iapo.experiments.demo --student DIR --teacher DIR    # either of them from another pair (`make pair`)
python -m iapo.experiments.demo --train-cold-start  # the 4-bar preset, its cold start trained from the tiny spec
python -m iapo.experiments.demo --setting zoom      # the zoom miniature (its cold start trained from the spec)
python -m iapo.experiments.demo --fast              # the CI-sized run of either setting (a few minutes)
    [--fresh] [--workers 2] [--out DIR] [--until premise]
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path

from iapo.experiments.demo.optimise import REWARDS
from iapo.experiments.demo.run import run
from iapo.experiments.demo.settings import (
    RL_BUDGETS,
    SHIPPED_PAIR,
    DemoSettings,
    demo_settings,
    powered_settings,
    showcase_settings,
)
from iapo.settings_errors import SettingsError


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="IAPO vs GRPO in miniature (offline, CPU).")
    parser.add_argument("--setting", choices=("charts", "zoom"), default="charts", help="charts: the paper's setting")
    parser.add_argument("--fast", action="store_true", help="the CI-sized run, cold start trained (a few minutes)")
    parser.add_argument(
        "--train-cold-start",
        action="store_true",
        help="charts: the 4-bar preset, its cold start trained from the tiny spec (~40 min of SFT), not the shipped pair",
    )
    parser.add_argument(
        "--powered",
        action="store_true",
        help="the powered comparison (`settings.powered_settings`: 5 seeds, 300 test rows, optimisability stage)",
    )
    parser.add_argument(
        "--budget",
        choices=sorted(RL_BUDGETS),
        help="with --powered: an RL budget (`python -m iapo.experiments.demo.budget`)",
    )
    parser.add_argument(
        "--student", type=Path, help=f"a given cold-started student (charts default: {SHIPPED_PAIR}/student)"
    )
    parser.add_argument("--teacher", type=Path, help="a given teacher, with --student")
    parser.add_argument("--out", type=Path, help="output folder (default logs/demo[-powered|-4bars|-zoom][-fast])")
    parser.add_argument("--fresh", action="store_true", help="delete previous outputs in --out first")
    parser.add_argument("--workers", type=int, default=2, help="RL runs at once, one process each (one per core)")
    parser.add_argument("--attribution-weight", type=float, help="λ (default: set from the cold start)")
    parser.add_argument(
        "--attribution-loss", type=float, help="λ_a: IAPO adds the attribution loss (ours; default 0, off)"
    )
    parser.add_argument(
        "--attribution-loss-calls",
        type=int,
        help="the loss over that many of a mini-batch's calls at random (default all)",
    )
    parser.add_argument("--call-weight", type=float, help="the tool_call reward's weight, both methods (default 0)")
    parser.add_argument("--seeds", type=int, nargs="+", help="the RL seeds (default the preset's)")
    parser.add_argument(
        "--optimisability-seeds", type=int, nargs="*", help="the optimisability stage's seeds; none: skip the stage"
    )
    parser.add_argument(
        "--optimisability-runs", nargs="+", choices=sorted(REWARDS), help="its runs (default attribution_call grpo)"
    )
    parser.add_argument(
        "--attribution-target", help="the attribution target of every layout (default the paper's tool_call)"
    )
    parser.add_argument(
        "--until", choices=("premise",), help="premise: stop after the premises are measured (before any RL or test)"
    )
    return parser


def preset(args: argparse.Namespace, error) -> DemoSettings:
    """The settings the arguments name; `error(message)` exits on arguments that do not go together."""
    if (args.student is None) != (args.teacher is None):
        error("--student and --teacher go together")
    trained = args.fast or args.train_cold_start or args.setting == "zoom"
    if args.powered and trained:
        error(
            "--powered starts from a given or the shipped pair: not with --fast, --train-cold-start or --setting zoom"
        )
    if args.train_cold_start and (args.setting != "charts" or args.student is not None):
        error("--train-cold-start trains the charts preset's own cold start: not with --setting zoom or --student")
    if args.budget and not args.powered:
        error("--budget names a budget of the powered preset: use it with --powered")
    if args.attribution_loss_calls is not None and not args.attribution_loss:
        error("--attribution-loss-calls says how many calls the attribution loss takes: give --attribution-loss too")
    knobs = {
        "out": args.out,
        "attribution_weight": args.attribution_weight,
        "attribution_loss": args.attribution_loss,
        "attribution_loss_calls": args.attribution_loss_calls,
        "call_weight": args.call_weight,
        "seeds": tuple(args.seeds) if args.seeds else None,
        "optimisability_seeds": None if args.optimisability_seeds is None else tuple(args.optimisability_seeds),
        "optimisability_runs": tuple(args.optimisability_runs) if args.optimisability_runs else None,
    }
    pair = {"student": args.student, "teacher": args.teacher} if args.student is not None else {}
    if args.powered:
        return powered_settings(**pair, **RL_BUDGETS[args.budget or "base"], **knobs)
    if not trained:
        return showcase_settings(**pair, **knobs)
    suffix = ("-zoom" if args.setting == "zoom" else "-4bars" if args.train_cold_start else "") + (
        "-fast" if args.fast else ""
    )
    settings = demo_settings(args.setting, given_student=args.student, given_teacher=args.teacher)
    settings = settings.fast() if args.fast else settings
    given = {key: value for key, value in knobs.items() if value is not None}
    return dataclasses.replace(settings, **{"out": Path("logs/demo" + suffix), **given})


def main(argv: list[str] | None = None) -> Path:
    arguments = parser()
    args = arguments.parse_args(argv)
    settings = preset(args, arguments.error)
    if args.attribution_target:
        try:
            attribution = dataclasses.replace(settings.attribution, target=args.attribution_target)
        except SettingsError as error:
            arguments.error(str(error))
        settings = dataclasses.replace(settings, attribution=attribution)
    if args.fresh:
        shutil.rmtree(settings.out, ignore_errors=True)
    return run(settings, workers=args.workers, until=args.until)


if __name__ == "__main__":
    main()
