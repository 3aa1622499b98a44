"""Benchmark evaluation bookkeeping and result tables.

`BenchmarkTally` accumulates one test set's official metric, the agent's tool statistics and, when a judge is
configured, the judge's verdicts (DDP-safe torchmetrics states); `results_markdown` renders one row per model and
one column per benchmark (with a ``(judge)`` column beside each judged one) plus the average; `paper_table` renders
the paper's layout: the six test sets in order, their average, the tool-call rate (share of questions with at least
one tool call) and the tool success rate (share of tool calls that did not fail). `python -m iapo.evaluation.results
compare` merges several evaluation runs into one table, in the order given:

    python src/cli.py test --config configs/eval.yaml --config configs/tiny.yaml      # writes logs/eval/<run>/
    python -m iapo.evaluation.results compare logs/eval/base logs/eval/grpo logs/eval/iapo --out logs/eval/compare.md
    python -m iapo.evaluation.results compare --paper logs/eval/{no-tools,prompted,vtool-r1,grpo,iapo} --out t.md
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import torch
from torch import nn
from torchmetrics import SumMetric

from iapo.agent.trajectory import Trajectory
from iapo.data.sample import VQASample
from iapo.evaluation.judge import Judge, JudgeItem
from iapo.evaluation.metrics import metric_for
from iapo.evaluation.scoring import score_sample

HEADLINE_METRIC = "acc"
"""The metric a benchmark contributes to the table and its average (accuracy; ChartQA's is relaxed accuracy)."""

PAPER_TEST_SETS = {
    "charxiv": "CharXiv",
    "chartqa_h_bar": "ChartQA-H",
    "chartqa_v_bar": "ChartQA-V",
    "tablevqa_vwtq": "VWTQ",
    "tablevqa_vwtq_syn": "VWTQ_syn",
    "tablevqa_vtabfact": "VTabFact",
}
"""The paper's six test sets, in the order of its results table, with their column titles."""


class BenchmarkTally(nn.Module):
    """One test set: its official metric plus rows scored, tool calls, tool failures, turns and answers; with a
    `judge`, also the judge's verdict on every answer (a separate score, never the headline). `selection` says which
    rows of the set were read (`train_test_overlap.selection`: split, seed, rows, the training split they exclude)."""

    COUNTS = ("questions", "answered", "tool_calls", "tool_failures", "turns", "questions_with_tool_call")
    JUDGE_COUNTS = ("judge_correct", "judge_unparsable")  # only with a judge

    def __init__(
        self,
        name: str,
        samples: list[VQASample],
        load_skips: dict[str, int] | None = None,
        judge: Judge | None = None,
        selection: dict | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.selection = selection
        self.metric = metric_for(name, samples)
        self.counts = nn.ModuleDict({key: SumMetric() for key in self.COUNTS + (self.JUDGE_COUNTS if judge else ())})
        self.load_skips: Counter = Counter(load_skips or {})  # the same on every process: each loads the list
        self.batch_skips: Counter = Counter()  # rows this process could not decode
        self.judge = judge
        self.records: list[dict] = []  # per question, this process's share (all of it on one device)

    def gather_batch_skips(self) -> None:
        """Sum the rows every process could not decode (call on every process under DDP, before `summary`)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[Counter] = [Counter() for _ in range(torch.distributed.get_world_size())]
            torch.distributed.all_gather_object(gathered, self.batch_skips)
            self.batch_skips = sum(gathered, Counter())

    def update(self, trajectories: list[Trajectory], samples: list[VQASample], skipped: Counter) -> None:
        """Score one batch (one trajectory per sample, in order) and count its skipped rows."""
        self.batch_skips.update(skipped)
        if not trajectories:
            return
        self.metric.update([t.final_answer for t in trajectories], samples)
        verdicts = None
        if self.judge is not None:
            verdicts = self.judge.verdicts(
                [JudgeItem(s.question, s.answer, t.final_answer) for t, s in zip(trajectories, samples, strict=True)]
            )
        for index, (trajectory, sample) in enumerate(zip(trajectories, samples, strict=True)):
            record = {
                "benchmark": self.name,
                "uid": sample.uid,
                "prediction": trajectory.final_answer,
                "answer": sample.answer,
                "score": score_sample(trajectory.final_answer, sample),
                "tool_calls": trajectory.stats.calls,
                "turns": len(trajectory.turns),
                "errors": dict(trajectory.stats.errors),
            }
            if verdicts is not None:
                record["judge"] = verdicts[index]  # true / false / null (unparsable reply)
            self.records.append(record)
        self.counts["questions"].update(len(trajectories))
        self.counts["answered"].update(sum(t.final_answer is not None for t in trajectories))
        self.counts["tool_calls"].update(sum(t.stats.calls for t in trajectories))
        self.counts["tool_failures"].update(sum(t.stats.failures for t in trajectories))
        self.counts["turns"].update(sum(len(t.turns) for t in trajectories))
        self.counts["questions_with_tool_call"].update(sum(t.stats.calls > 0 for t in trajectories))
        if verdicts is not None:
            self.counts["judge_correct"].update(sum(v is True for v in verdicts))
            self.counts["judge_unparsable"].update(sum(v is None for v in verdicts))

    def summary(self) -> dict:
        counts = {key: int(metric.compute()) for key, metric in self.counts.items()}
        questions = max(counts["questions"], 1)
        summary = {
            "metrics": {key: float(value) for key, value in self.metric.compute().items()},
            "rows_scored": counts["questions"],
            "rows_skipped": dict(sorted((self.load_skips + self.batch_skips).items())),
            "answered_rate": counts["answered"] / questions,
            "mean_tool_calls": counts["tool_calls"] / questions,
            "tool_failure_rate": counts["tool_failures"] / max(counts["tool_calls"], 1),
            "mean_turns": counts["turns"] / questions,
            "tool_call_rate": counts["questions_with_tool_call"] / questions,
            "tool_success_rate": _tool_success(counts["tool_calls"], counts["tool_failures"]),
            "counts": {key: counts[key] for key in self.COUNTS},
        }
        if self.selection is not None:
            summary["selection"] = self.selection
        if self.judge is not None:
            summary["judge"] = {
                "acc": counts["judge_correct"] / questions,  # unparsable replies count as wrong, and are counted
                "unparsable": counts["judge_unparsable"],
                "judge": self.judge.name,
            }
        return summary


def _tool_success(calls: int, failures: int) -> float | None:
    """Share of tool calls that did not fail; None (no rate) when there was no call."""
    return (calls - failures) / calls if calls else None


def headline(results: dict) -> dict[str, float]:
    """{benchmark: headline metric} of one run's `results.json` content."""
    return {name: bench["metrics"][HEADLINE_METRIC] for name, bench in results["benchmarks"].items()}


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _judge_scores(run: dict) -> dict[str, float]:
    return {name: bench["judge"]["acc"] for name, bench in run["benchmarks"].items() if "judge" in bench}


def results_markdown(runs: list[dict]) -> str:
    """A table with one row per run (its `label`) and one column per benchmark plus the average, in percent; a
    benchmark judged in any run gets a ``<name> (judge)`` column beside it, and the table an ``average (judge)``."""
    names = sorted({name for run in runs for name in run["benchmarks"]})
    judged = {name for run in runs for name in _judge_scores(run)}
    columns = [column for name in names for column in [(name, False)] + ([(name, True)] if name in judged else [])]
    header = [f"{name} (judge)" if by_judge else name for name, by_judge in columns] + ["average"]
    header += ["average (judge)"] if judged else []
    lines = ["| model | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
    for run in runs:
        scores, judge_scores = headline(run), _judge_scores(run)
        cells = [_percent((judge_scores if by_judge else scores).get(name)) for name, by_judge in columns]
        cells.append(f"{100 * _mean(list(scores.values())):.1f}" if scores else "nan")
        if judged:
            cells.append(_percent(_mean(list(judge_scores.values()))))
        lines.append(f"| {run['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _pooled_counts(run: dict, names: list[str]) -> Counter | None:
    """The raw counts of the benchmarks `names` of `run`, summed (None when a result file predates the counts)."""
    benches = [run["benchmarks"][name] for name in names if name in run["benchmarks"]]
    if not benches or any("counts" not in bench for bench in benches):
        return None
    return sum((Counter(bench["counts"]) for bench in benches), Counter())


def paper_table(runs: list[dict], test_sets: dict[str, str] | None = None) -> str:
    """The paper's results table: one row per run (in the order given), one column per test set (`test_sets`:
    name -> title, default `PAPER_TEST_SETS`) with its headline score, their average, the tool-call rate and the
    tool success rate, pooled over the questions and calls of those sets; in percent.

    A run missing some sets gets "–" there and an average over the sets it has, marked "*". With a judge in any run,
    an ``average (judge)`` column follows the average.
    """
    test_sets = test_sets or PAPER_TEST_SETS
    names = list(test_sets)
    judged = any(_judge_scores(run) for run in runs)
    header = list(test_sets.values()) + ["average"] + (["average (judge)"] if judged else [])
    header += ["tool-call rate", "tool success rate"]
    lines = ["| model | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
    partial = False
    for run in runs:
        scores = {name: value for name, value in headline(run).items() if name in test_sets}
        cells = [_percent(scores.get(name)) for name in names]
        mark = "*" if scores and len(scores) < len(names) else ""
        partial = partial or bool(mark)
        cells.append(_percent(_mean(list(scores.values()))) + mark)
        if judged:
            judge_scores = {name: value for name, value in _judge_scores(run).items() if name in test_sets}
            cells.append(_percent(_mean(list(judge_scores.values()))))
        counts = _pooled_counts(run, names)
        if counts is None or not counts["questions"]:
            cells += ["–", "–"]
        else:
            cells.append(_percent(counts["questions_with_tool_call"] / counts["questions"]))
            cells.append(_percent(_tool_success(counts["tool_calls"], counts["tool_failures"])))
        lines.append(f"| {run['label']} | " + " | ".join(cells) + " |")
    if partial:
        lines += ["", "\\* average over the test sets that run has."]
    return "\n".join(lines) + "\n"


def write_results(run_dir: Path, results: dict, records: list[dict]) -> None:
    """`results.json` (everything), `results.md` (the table; then the paper's table when the run has any of its test
    sets) and `predictions.jsonl` (one line per question)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    table = results_markdown([results])
    if any(name in PAPER_TEST_SETS for name in results["benchmarks"]):
        table += "\n" + paper_table([results])
    (run_dir / "results.md").write_text(table)
    (run_dir / "predictions.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))


def compare(run_dirs: list[Path], paper: bool = False) -> str:
    """One table for several evaluation runs (each a directory with `results.json`), rows in the order given;
    `paper` renders the paper's layout (`paper_table`)."""
    runs = []
    for run_dir in run_dirs:
        path = Path(run_dir) / "results.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: evaluate first with `make eval` or `python src/cli.py test`")
        runs.append(json.loads(path.read_text()))
    return paper_table(runs) if paper else results_markdown(runs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Merge evaluation runs into one table.")
    sub = parser.add_subparsers(dest="command", required=True)
    merge = sub.add_parser("compare", help="one markdown table from several logs/eval/<run> directories")
    merge.add_argument("runs", nargs="+", type=Path)
    merge.add_argument("--paper", action="store_true", help="the paper's layout: six test sets, average, tool rates")
    merge.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    try:
        table = compare(args.runs, paper=args.paper)
    except FileNotFoundError as err:
        parser.exit(2, f"error: {err}\n")
    print(table, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)


if __name__ == "__main__":
    main()
