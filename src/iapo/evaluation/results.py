"""Benchmark evaluation bookkeeping and result tables.

`BenchmarkTally` accumulates one test set's official metric and the agent's tool statistics (DDP-safe torchmetrics
states); `results_markdown` renders the paper-style table (one row per model, one column per benchmark, average);
`python -m iapo.evaluation.results compare` merges several evaluation runs into one table:

    python src/cli.py test --config configs/eval.yaml --config configs/tiny.yaml      # writes logs/eval/<run>/
    python -m iapo.evaluation.results compare logs/eval/base logs/eval/grpo logs/eval/iapo --out logs/eval/compare.md
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from torch import nn
from torchmetrics import SumMetric

from iapo.agent.trajectory import Trajectory
from iapo.data.sample import VQASample
from iapo.evaluation.metrics import metric_for
from iapo.evaluation.scoring import score_sample

HEADLINE_METRIC = "acc"
"""The metric a benchmark contributes to the table and its average (accuracy; ChartQA's is relaxed accuracy)."""


class BenchmarkTally(nn.Module):
    """One test set: its official metric plus rows scored, tool calls, tool failures, turns and answers."""

    COUNTS = ("questions", "answered", "tool_calls", "tool_failures", "turns")

    def __init__(self, name: str, samples: list[VQASample], load_skips: dict[str, int] | None = None) -> None:
        super().__init__()
        self.name = name
        self.metric = metric_for(name, samples)
        self.counts = nn.ModuleDict({key: SumMetric() for key in self.COUNTS})
        self.skipped: Counter = Counter(load_skips or {})
        self.records: list[dict] = []  # per question, this process's share (all of it on one device)

    def update(self, trajectories: list[Trajectory], samples: list[VQASample], skipped: Counter) -> None:
        """Score one batch (one trajectory per sample, in order) and count its skipped rows."""
        self.skipped.update(skipped)
        if not trajectories:
            return
        self.metric.update([t.final_answer for t in trajectories], samples)
        for trajectory, sample in zip(trajectories, samples, strict=True):
            self.records.append(
                {
                    "benchmark": self.name,
                    "uid": sample.uid,
                    "prediction": trajectory.final_answer,
                    "answer": sample.answer,
                    "score": score_sample(trajectory.final_answer, sample),
                    "tool_calls": trajectory.stats.calls,
                    "turns": len(trajectory.turns),
                    "errors": dict(trajectory.stats.errors),
                }
            )
        self.counts["questions"].update(len(trajectories))
        self.counts["answered"].update(sum(t.final_answer is not None for t in trajectories))
        self.counts["tool_calls"].update(sum(t.stats.calls for t in trajectories))
        self.counts["tool_failures"].update(sum(t.stats.failures for t in trajectories))
        self.counts["turns"].update(sum(len(t.turns) for t in trajectories))

    def summary(self) -> dict:
        counts = {key: int(metric.compute()) for key, metric in self.counts.items()}
        questions = max(counts["questions"], 1)
        return {
            "metrics": {key: float(value) for key, value in self.metric.compute().items()},
            "rows_scored": counts["questions"],
            "rows_skipped": dict(sorted(self.skipped.items())),
            "answered_rate": counts["answered"] / questions,
            "mean_tool_calls": counts["tool_calls"] / questions,
            "tool_failure_rate": counts["tool_failures"] / max(counts["tool_calls"], 1),
            "mean_turns": counts["turns"] / questions,
        }


def headline(results: dict) -> dict[str, float]:
    """{benchmark: headline metric} of one run's `results.json` content."""
    return {name: bench["metrics"][HEADLINE_METRIC] for name, bench in results["benchmarks"].items()}


def results_markdown(runs: list[dict]) -> str:
    """A table with one row per run (its `label`) and one column per benchmark plus the average, in percent."""
    names = sorted({name for run in runs for name in run["benchmarks"]})
    lines = ["| model | " + " | ".join(names) + " | average |", "|---" * (len(names) + 2) + "|"]
    for run in runs:
        scores = headline(run)
        cells = [f"{100 * scores[n]:.1f}" if n in scores else "–" for n in names]
        average = 100 * sum(scores.values()) / len(scores) if scores else float("nan")
        lines.append(f"| {run['label']} | " + " | ".join(cells) + f" | {average:.1f} |")
    return "\n".join(lines) + "\n"


def write_results(run_dir: Path, results: dict, records: list[dict]) -> None:
    """`results.json` (everything), `results.md` (the table) and `predictions.jsonl` (one line per question)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    (run_dir / "results.md").write_text(results_markdown([results]))
    (run_dir / "predictions.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))


def compare(run_dirs: list[Path]) -> str:
    """One table for several evaluation runs (each a directory with `results.json`)."""
    runs = []
    for run_dir in run_dirs:
        path = Path(run_dir) / "results.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: evaluate first with `make eval` or `python src/cli.py test`")
        runs.append(json.loads(path.read_text()))
    return results_markdown(runs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Merge evaluation runs into one table.")
    sub = parser.add_subparsers(dest="command", required=True)
    merge = sub.add_parser("compare", help="one markdown table from several logs/eval/<run> directories")
    merge.add_argument("runs", nargs="+", type=Path)
    merge.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    try:
        table = compare(args.runs)
    except FileNotFoundError as err:
        parser.exit(2, f"error: {err}\n")
    print(table, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)


if __name__ == "__main__":
    main()
