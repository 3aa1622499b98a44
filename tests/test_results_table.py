"""Result bookkeeping and tables: `BenchmarkTally` counts questions with a tool call and tool successes (summed
like DDP sums them), adds a judge column when a judge is given, and `paper_table` / `compare --paper` render the
paper's layout (six test sets in order, average, tool-call rate, tool success rate)."""

from __future__ import annotations

import json
from collections import Counter
from types import SimpleNamespace

import pytest

from iapo.data.sample import VQASample
from iapo.evaluation.judge import Judge
from iapo.evaluation.results import (
    PAPER_TEST_SETS,
    BenchmarkTally,
    paper_table,
    results_markdown,
    write_results,
)
from iapo.evaluation.results import main as results_main


def _sample(uid: str, answer: str, answer_type: str = "wtq") -> VQASample:
    return VQASample(uid=uid, source="t", image="x.png", question=f"q{uid}?", answer=answer, answer_type=answer_type)


def _trajectory(answer: str | None, calls: int = 0, failures: int = 0, turns: int = 1) -> SimpleNamespace:
    """What the tally reads of a trajectory: the final answer, tool statistics and turns."""
    errors = Counter({"bad_arguments": failures}) if failures else Counter()
    stats = SimpleNamespace(calls=calls, failures=failures, errors=errors)
    return SimpleNamespace(final_answer=answer, stats=stats, turns=[None] * turns)


SAMPLES = [_sample("1", "Alice|Bob"), _sample("2", "12"), _sample("3", "paris"), _sample("4", "7")]
TRAJECTORIES = [
    _trajectory("Bob||Alice", calls=2, failures=1, turns=3),  # right, two calls, one failed
    _trajectory("12", calls=1, turns=2),  # right, one good call
    _trajectory("London", turns=1),  # wrong, no call
    _trajectory(None, calls=1, failures=1, turns=2),  # no answer, one failed call
]


def test_tally_counts_tool_call_rate_and_tool_success() -> None:
    tally = BenchmarkTally("tablevqa_vwtq", SAMPLES)
    tally.update(TRAJECTORIES[:2], SAMPLES[:2], Counter())
    tally.update(TRAJECTORIES[2:], SAMPLES[2:], Counter({"missing_image": 1}))
    summary = tally.summary()
    assert summary["metrics"]["acc"] == pytest.approx(0.5)
    assert summary["rows_scored"] == 4 and summary["rows_skipped"] == {"missing_image": 1}
    assert summary["tool_call_rate"] == pytest.approx(3 / 4)  # questions with at least one call
    assert summary["tool_success_rate"] == pytest.approx(2 / 4)  # 4 calls, 2 failed
    assert summary["mean_tool_calls"] == pytest.approx(1.0) and summary["tool_failure_rate"] == pytest.approx(0.5)
    assert summary["counts"] == {
        "questions": 4,
        "answered": 3,
        "tool_calls": 4,
        "tool_failures": 2,
        "turns": 8,
        "questions_with_tool_call": 3,
    }
    assert "judge" not in summary and all("judge" not in record for record in tally.records)


def test_tally_without_tool_calls_has_no_success_rate() -> None:
    tally = BenchmarkTally("tablevqa_vwtq", SAMPLES[:1])
    tally.update([_trajectory("Alice|Bob")], SAMPLES[:1], Counter())
    assert tally.summary()["tool_call_rate"] == 0.0 and tally.summary()["tool_success_rate"] is None


def test_tally_counts_merge_like_ddp() -> None:
    """Every count is a sum-reduced state: two ranks' tallies merged equal one tally of everything."""
    whole, rank0, rank1 = (BenchmarkTally("tablevqa_vwtq", SAMPLES) for _ in range(3))
    whole.update(TRAJECTORIES, SAMPLES, Counter())
    rank0.update(TRAJECTORIES[::2], SAMPLES[::2], Counter())
    rank1.update(TRAJECTORIES[1::2], SAMPLES[1::2], Counter())
    for key in BenchmarkTally.COUNTS:  # the judge's counts are the same kind of state (see the judge test)
        metric = rank0.counts[key]
        assert all(getattr(fx, "__name__", "") in ("sum", "dim_zero_sum") for fx in metric._reductions.values())
        metric.merge_state(rank1.counts[key])
    rank0.metric.merge_state(rank1.metric)
    merged, expected = rank0.summary(), whole.summary()
    for key in ("metrics", "counts", "tool_call_rate", "tool_success_rate", "answered_rate", "mean_turns"):
        assert merged[key] == pytest.approx(expected[key]), key


class _Backend:
    name = "scripted"

    def complete(self, conversations):
        # "London" is judged right (say, a lenient judge), "Bob||Alice" gets an unreadable reply
        replies = {"12": "<|YES|>", "London": "yes", "Bob||Alice": "hmm"}
        return [
            replies[messages[-1]["content"].split("Model answer: ")[1].split("\n")[0]] for messages in conversations
        ]


def test_tally_with_a_judge_reports_it_apart(tmp_path) -> None:
    tally = BenchmarkTally("tablevqa_vwtq", SAMPLES, judge=Judge(_Backend(), tmp_path / "cache.jsonl"))
    tally.update(TRAJECTORIES, SAMPLES, Counter())
    summary = tally.summary()
    assert summary["metrics"]["acc"] == pytest.approx(0.5)  # the rule-based score is untouched
    assert summary["judge"] == {"acc": pytest.approx(2 / 4), "unparsable": 1, "judge": "scripted"}
    assert [record["judge"] for record in tally.records] == [None, True, True, False]
    assert set(tally.counts) == set(BenchmarkTally.COUNTS + BenchmarkTally.JUDGE_COUNTS)
    assert all(type(tally.counts[key]) is type(tally.counts["questions"]) for key in BenchmarkTally.JUDGE_COUNTS)


def _run(label: str, scores: dict[str, float], judge: dict[str, float] | None = None, calls: int = 1) -> dict:
    """A `results.json` content: each set with 10 questions, `calls` tool calls each on the first 8, 2 failed."""
    benchmarks = {}
    for name, score in scores.items():
        counts = {
            "questions": 10,
            "answered": 10,
            "tool_calls": 8 * calls,
            "tool_failures": 2 if calls else 0,
            "turns": 20,
            "questions_with_tool_call": 8 if calls else 0,
        }
        benchmarks[name] = {"metrics": {"acc": score, "n": 10.0}, "counts": counts}
        if judge and name in judge:
            benchmarks[name]["judge"] = {"acc": judge[name], "unparsable": 0, "judge": "scripted"}
    return {"label": label, "benchmarks": benchmarks}


ALL_SIX = dict(zip(PAPER_TEST_SETS, (0.25, 0.5, 0.75, 0.4, 0.6, 0.8), strict=True))


def test_paper_table_layout() -> None:
    runs = [
        _run("Qwen2.5-VL-3B (no tools)", ALL_SIX, calls=0),
        _run("IAPO", ALL_SIX),
        _run("GRPO", {"charxiv": 0.2, "chartqa_h_bar": 0.4, "pope": 0.9}),
    ]
    lines = paper_table(runs).splitlines()
    assert lines[0] == (
        "| model | CharXiv | ChartQA-H | ChartQA-V | VWTQ | VWTQ_syn | VTabFact | average | tool-call rate "
        "| tool success rate |"
    )
    assert lines[1] == "|---" * 10 + "|"
    assert lines[2] == "| Qwen2.5-VL-3B (no tools) | 25.0 | 50.0 | 75.0 | 40.0 | 60.0 | 80.0 | 55.0 | 0.0 | – |"
    assert lines[3] == "| IAPO | 25.0 | 50.0 | 75.0 | 40.0 | 60.0 | 80.0 | 55.0 | 80.0 | 75.0 |"
    # missing sets are "–", the average covers the sets present (marked), other sets (pope) stay out
    assert lines[4] == "| GRPO | 20.0 | 40.0 | – | – | – | – | 30.0* | 80.0 | 75.0 |"
    assert lines[5:] == ["", "\\* average over the test sets that run has."]


def test_paper_table_pools_tool_rates_and_adds_the_judge_average() -> None:
    run = _run("IAPO", ALL_SIX, judge={"charxiv": 0.5, "chartqa_h_bar": 0.7})
    run["benchmarks"]["charxiv"]["counts"].update(questions=30, questions_with_tool_call=30, tool_calls=40)
    header, _, row = paper_table([run, _run("GRPO", ALL_SIX)]).splitlines()[:3]
    assert header.split(" | ")[7:] == ["average", "average (judge)", "tool-call rate", "tool success rate |"]
    # tool-call rate: (30 + 5 * 8) / (30 + 5 * 10); success: (38 + 5 * 6) / (40 + 5 * 8)
    assert row.split(" | ")[7:] == ["55.0", "60.0", "87.5", "85.0 |"]
    assert paper_table([_run("GRPO", ALL_SIX), run]).splitlines()[2].split(" | ")[8] == "–"  # no judge for GRPO


def test_results_markdown_puts_the_judge_beside_the_rule_score() -> None:
    runs = [_run("a", {"charxiv": 0.25, "pope": 0.5}, judge={"charxiv": 0.75}), _run("b", {"charxiv": 0.5})]
    lines = results_markdown(runs).splitlines()
    assert lines[0] == "| model | charxiv | charxiv (judge) | pope | average | average (judge) |"
    assert lines[2] == "| a | 25.0 | 75.0 | 50.0 | 37.5 | 75.0 |"
    assert lines[3] == "| b | 50.0 | – | – | 50.0 | – |"
    # without any judge the table is the plain one
    assert results_markdown([_run("b", {"charxiv": 0.5})]).splitlines()[0] == "| model | charxiv | average |"


def test_write_results_and_compare_paper(tmp_path, capsys) -> None:
    dirs = []
    for label in ("no-tools", "prompted", "vtool-r1", "grpo", "iapo"):
        dirs.append(tmp_path / label)
        write_results(dirs[-1], _run(label, ALL_SIX), [])
    table = (dirs[0] / "results.md").read_text().split("\n\n")
    assert table[0].startswith("| model | chartqa_h_bar |") and table[1].startswith("| model | CharXiv |")
    assert json.loads((dirs[0] / "results.json").read_text())["label"] == "no-tools"

    capsys.readouterr()
    results_main(["compare", "--paper", *map(str, dirs), "--out", str(tmp_path / "paper.md")])
    lines = (tmp_path / "paper.md").read_text().splitlines()
    assert capsys.readouterr().out.splitlines() == lines
    assert lines[0].startswith("| model | CharXiv | ChartQA-H |")
    assert [line.split(" | ")[0].strip("| ") for line in lines[2:]] == [
        "no-tools",
        "prompted",
        "vtool-r1",
        "grpo",
        "iapo",
    ]
    with pytest.raises(SystemExit):
        results_main(["compare", "--paper", str(tmp_path / "missing")])
