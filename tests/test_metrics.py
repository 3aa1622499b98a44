"""Benchmark metrics: values by hand, HR-Bench cycle averaging, POPE confusion scores, DDP-style state merging."""

from __future__ import annotations

import pytest
import torch

from iapo.data.sample import VQASample
from iapo.evaluation.metrics import HRBenchAccuracy, POPEMetrics, VQAAccuracy, metric_for


def mcq(uid: str, answer: str, category: str = "", cycle: str | None = None) -> VQASample:
    meta = {} if cycle is None else {"cycle_category": cycle}
    return VQASample(uid, "t", "x.png", "q", answer, "mcq", ("a", "b", "c", "d"), category, meta)


def pope(uid: str, answer: str, category: str) -> VQASample:
    return VQASample(uid, "pope", "x.png", "Is there a dog?", answer, "yes_no", category=category)


def test_vqa_accuracy_overall_and_per_category() -> None:
    samples = [mcq("1", "A", "x"), mcq("2", "B", "x"), mcq("3", "C", "y"), mcq("4", "D", "")]
    chart = VQASample("5", "chartqa", "x.png", "q", "100", "relaxed", category="y")
    metric = VQAAccuracy(["x", "y"])
    metric.update(["A", "The answer is C", "(C)", "D"], samples)
    metric.update(["104"], [chart])
    assert metric.compute() == pytest.approx({"acc": 4 / 5, "acc/x": 0.5, "acc/y": 1.0, "n": 5.0})


def test_vqa_accuracy_soft_scores_and_no_answer() -> None:
    doc = VQASample("1", "doc", "x.png", "q", "abcd", "anls")
    metric = VQAAccuracy()
    metric.update(["abcx", None], [doc, doc])
    assert metric.compute() == pytest.approx({"acc": 0.75 / 2, "n": 2.0})


def test_unknown_category_is_an_error() -> None:
    metric = VQAAccuracy(["x"])
    with pytest.raises(ValueError, match="'z'"):
        metric.update(["A"], [mcq("1", "A", "z")])
    with pytest.raises(ValueError):
        metric.update(["A", "B"], [mcq("1", "A", "x")])  # lengths differ


def hr_bench_rows() -> tuple[list[str], list[VQASample]]:
    """Cycle c1: FSP 1/2, FCP 2/2 (cycle acc 3/4). Cycle c2: FSP 0/1, FCP 1/1 (cycle acc 1/2)."""
    rows = [
        ("A", "A", "FSP", "c1"),
        ("B", "A", "FSP", "c1"),
        ("C", "C", "FCP", "c1"),
        ("D", "D", "FCP", "c1"),
        ("A", "B", "FSP", "c2"),
        ("C", "C", "FCP", "c2"),
    ]
    samples = [mcq(str(i), answer, category, cycle) for i, (_, answer, category, cycle) in enumerate(rows)]
    return [prediction for prediction, *_ in rows], samples


def test_hr_bench_accuracy_averages_over_cycles() -> None:
    predictions, samples = hr_bench_rows()
    metric = HRBenchAccuracy(["c1", "c2"], ["FCP", "FSP"])
    metric.update(predictions, samples)
    result = metric.compute()
    # official: mean over cycles of per-cycle accuracy, not the pooled 4/6
    assert result["acc"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert result["acc/FSP"] == pytest.approx((1 / 2 + 0) / 2)
    assert result["acc/FCP"] == pytest.approx(1.0)
    assert result["acc/cycle/c1"] == pytest.approx(0.75)
    assert result["acc/cycle/c2"] == pytest.approx(0.5)
    assert result["n"] == 6


def test_hr_bench_unknown_cycle_is_an_error() -> None:
    metric = HRBenchAccuracy(["c1"], ["FSP"])
    with pytest.raises(ValueError, match="cycle_category"):
        metric.update(["A"], [mcq("1", "A", "FSP", "c9")])


def pope_rows() -> tuple[list[str], list[VQASample]]:
    predictions = ["Yes", "yes.", "No", "There is a dog", "No", "Yes", "no", "No, there is not"]
    answers = ["yes"] * 4 + ["no"] * 4
    categories = ["adversarial", "random"] * 4
    samples = [pope(str(i), a, c) for i, (a, c) in enumerate(zip(answers, categories, strict=True))]
    return predictions, samples


def test_pope_metrics_by_hand() -> None:
    predictions, samples = pope_rows()
    metric = POPEMetrics(["adversarial", "random"])
    metric.update(predictions, samples)
    result = metric.compute()
    # ground-truth yes: 2 yes, 1 no, 1 unreadable -> tp 2, fn 2; ground-truth no: 1 yes, 3 no -> fp 1, tn 3
    precision, recall = 2 / 3, 2 / 4
    assert result["acc"] == pytest.approx(5 / 8)
    assert result["precision"] == pytest.approx(precision)
    assert result["recall"] == pytest.approx(recall)
    assert result["f1"] == pytest.approx(2 * precision * recall / (precision + recall))
    assert result["yes_ratio"] == pytest.approx(3 / 8)
    assert result["no_answer"] == pytest.approx(1 / 8)
    assert result["n"] == 8
    # adversarial: rows 0 (yes/Yes), 2 (yes/No), 4 (no/No), 6 (no/no) -> tp 1, fn 1, tn 2
    assert result["acc/adversarial"] == pytest.approx(3 / 4)
    assert result["precision/adversarial"] == pytest.approx(1.0)
    assert result["recall/adversarial"] == pytest.approx(0.5)
    assert result["yes_ratio/adversarial"] == pytest.approx(1 / 4)
    # random: rows 1 (yes/yes.), 3 (yes/none), 5 (no/Yes), 7 (no/No...) -> tp 1, fn 1, fp 1, tn 1
    assert result["f1/random"] == pytest.approx(0.5)


def test_pope_rejects_non_yes_no_reference() -> None:
    with pytest.raises(ValueError, match="POPE answer"):
        POPEMetrics(["random"]).update(["yes"], [pope("1", "maybe", "random")])


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_empty_metrics_are_zero_not_crashes() -> None:
    assert POPEMetrics(["random"]).compute()["f1"] == 0.0
    assert HRBenchAccuracy(["c1"], ["FSP"]).compute()["acc"] == 0.0


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
@pytest.mark.parametrize(
    ("make", "rows"),
    [
        (lambda **kw: HRBenchAccuracy(["c1", "c2"], ["FCP", "FSP"], **kw), hr_bench_rows),
        (lambda **kw: POPEMetrics(["adversarial", "random"], **kw), pope_rows),
        (lambda **kw: VQAAccuracy(["FCP", "FSP"], **kw), hr_bench_rows),
    ],
)
def test_states_are_sum_reduced_and_merge_like_ddp(make, rows) -> None:
    predictions, samples = rows()
    whole, rank1 = make(), make()
    assert all(fx is torch.sum or getattr(fx, "__name__", "") == "dim_zero_sum" for fx in whole._reductions.values())
    assert all(isinstance(default, torch.Tensor) for default in whole._defaults.values())

    # what DDP does in compute(): gather every state from every rank, then apply its reduction
    def all_gather(tensor: torch.Tensor, group=None) -> list[torch.Tensor]:
        return [tensor, next(states_of_rank1)]

    rank0 = make(dist_sync_fn=all_gather, distributed_available_fn=lambda: True)
    whole.update(predictions, samples)
    rank0.update(predictions[::2], samples[::2])
    rank1.update(predictions[1::2], samples[1::2])
    states_of_rank1 = iter([getattr(rank1, name) for name in rank1._defaults])
    assert rank0.compute() == pytest.approx(whole.compute())

    # merging two ranks' states by hand (instance and dict forms) gives the same result
    plain_rank0, merged = make(), make()
    plain_rank0.update(predictions[::2], samples[::2])
    merged.merge_state(plain_rank0)
    merged.merge_state({name: getattr(rank1, name) for name in rank1._defaults})
    assert merged.compute() == pytest.approx(whole.compute())


def test_metric_for_picks_the_benchmark_metric() -> None:
    _, hr = hr_bench_rows()
    metric = metric_for("hr_bench_8k", hr)
    assert isinstance(metric, HRBenchAccuracy)
    assert metric.cycles == ("c1", "c2") and metric.categories == ("FCP", "FSP")
    _, pope_samples = pope_rows()
    pope_metric = metric_for("pope", pope_samples)
    assert isinstance(pope_metric, POPEMetrics) and pope_metric.categories == ("adversarial", "random")
    vstar = metric_for("vstar_bench", [mcq("1", "A", "relative_position"), mcq("2", "A", "direct_attributes")])
    assert isinstance(vstar, VQAAccuracy) and vstar.categories == ("direct_attributes", "relative_position")
    assert type(metric_for("synthetic", [mcq("1", "A")])) is VQAAccuracy
