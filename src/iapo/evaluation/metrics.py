"""Benchmark metrics as torchmetrics `Metric`s that reduce correctly under DDP.

Every state is a fixed-size tensor summed across processes (``dist_reduce_fx="sum"``); sub-categories are fixed
when the metric is built, so pass the *whole* benchmark's sample list (the same on every rank) to `metric_for`.
`update(predictions, samples)` takes the final answers (None when the agent gave none) and the `VQASample`s they
answer; each answer is scored with `scoring.score_sample`. `compute()` returns a flat dict of floats:

- `VQAAccuracy`      ``acc`` (mean score over all questions), ``acc/<category>``, ``n``;
- `HRBenchAccuracy`  HR-Bench's official rule: accuracy within each ``cycle_category``, then the mean over cycles,
                     for all questions (``acc``) and per category (``acc/<category>``, e.g. FSP / FCP), plus
                     ``acc/cycle/<cycle>`` and ``n``;
- `POPEMetrics`      ``acc``, ``precision``, ``recall``, ``f1``, ``yes_ratio`` with "yes" as the positive class,
                     ``no_answer`` (share of answers that are neither yes nor no: wrong, and never positive), ``n``;
                     pooled over all questions (as lmms-eval does) and per category (``f1/adversarial``, ...).

Usage::

    metric = metric_for("hr_bench_4k", samples)
    metric.update(["B", None], samples[:2])
    metric.compute()  # {"acc": ..., "acc/FSP": ..., ...}
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric

from iapo.data.benchmarks import BENCHMARKS
from iapo.data.sample import VQASample
from iapo.evaluation.scoring import score_sample, yes_no

__all__ = ["HRBenchAccuracy", "POPEMetrics", "VQAAccuracy", "metric_for"]


def _index(values: Sequence[str]) -> dict[str, int]:
    if len(set(values)) != len(values):
        raise ValueError(f"duplicate names in {list(values)}")
    return {value: i for i, value in enumerate(values)}


def _lookup(index: dict[str, int], value: str, what: str) -> int:
    if value not in index:
        raise ValueError(f"{what} {value!r} is not one of {sorted(index)} given when the metric was built")
    return index[value]


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


class _BenchmarkMetric(Metric):
    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def _float_state(self, name: str, *shape: int) -> None:
        self.add_state(name, default=torch.zeros(*shape, dtype=torch.float64), dist_reduce_fx="sum")

    @staticmethod
    def _add(state: torch.Tensor, flat_index: list[int], values: list[float]) -> None:
        """Add `values` at `flat_index` of `state` (viewed flat) in one device operation."""
        index = torch.tensor(flat_index, dtype=torch.long, device=state.device)
        state.view(-1).index_add_(0, index, torch.tensor(values, dtype=state.dtype, device=state.device))


class VQAAccuracy(_BenchmarkMetric):
    """Mean score over all questions and per category; questions with category "" count only overall."""

    def __init__(self, categories: Sequence[str] = (), **kwargs) -> None:
        super().__init__(**kwargs)
        self.categories = tuple(categories)
        self._category_index = _index(self.categories)
        self._float_state("score", len(self.categories) + 1)
        self._float_state("count", len(self.categories) + 1)

    def update(self, predictions: Sequence[str | None], samples: Sequence[VQASample]) -> None:
        slot = len(self.categories)
        index = [_lookup(self._category_index, s.category, "category") if s.category else slot for s in samples]
        scores = [score_sample(prediction, sample) for prediction, sample in zip(predictions, samples, strict=True)]
        self._add(self.score, index, scores)
        self._add(self.count, index, [1.0] * len(index))

    def compute(self) -> dict[str, float]:
        total = float(self.count.sum())
        result = {"acc": _ratio(float(self.score.sum()), total), "n": total}
        for i, category in enumerate(self.categories):
            if self.count[i] > 0:
                result[f"acc/{category}"] = float(self.score[i] / self.count[i])
        return result


class HRBenchAccuracy(_BenchmarkMetric):
    """HR-Bench: accuracy per `cycle_category` (from `sample.meta`), averaged over the cycles present."""

    def __init__(self, cycles: Sequence[str], categories: Sequence[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.cycles, self.categories = tuple(cycles), tuple(categories)
        self._cycle_index, self._category_index = _index(self.cycles), _index(self.categories)
        self._float_state("correct", len(self.cycles), len(self.categories))
        self._float_state("total", len(self.cycles), len(self.categories))

    def update(self, predictions: Sequence[str | None], samples: Sequence[VQASample]) -> None:
        index = [
            _lookup(self._cycle_index, str(sample.meta.get("cycle_category", "")), "cycle_category")
            * len(self.categories)
            + _lookup(self._category_index, sample.category, "category")
            for sample in samples
        ]
        scores = [score_sample(prediction, sample) for prediction, sample in zip(predictions, samples, strict=True)]
        self._add(self.correct, index, scores)
        self._add(self.total, index, [1.0] * len(index))

    def compute(self) -> dict[str, float]:
        per_cycle_total = self.total.sum(dim=1)
        present = per_cycle_total > 0
        cycle_acc = self.correct.sum(dim=1)[present] / per_cycle_total[present]
        result = {"acc": float(cycle_acc.mean()) if present.any() else 0.0, "n": float(self.total.sum())}
        for k, category in enumerate(self.categories):
            rows = self.total[:, k] > 0
            if rows.any():
                result[f"acc/{category}"] = float((self.correct[rows, k] / self.total[rows, k]).mean())
        for c, cycle in enumerate(self.cycles):
            if present[c]:
                result[f"acc/cycle/{cycle}"] = float(self.correct[c].sum() / per_cycle_total[c])
        return result


_GROUND_TRUTH = {"yes": 0, "no": 1}
_PREDICTED = {"yes": 0, "no": 1, None: 2}


def _pope_scores(counts: torch.Tensor) -> dict[str, float]:
    """Scores from a [2, 3] count matrix: rows ground truth (yes, no), columns prediction (yes, no, none)."""
    n = float(counts.sum())
    tp, fp, tn = float(counts[0, 0]), float(counts[1, 0]), float(counts[1, 1])
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, float(counts[0].sum()))
    return {
        "acc": _ratio(tp + tn, n),
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall),
        "yes_ratio": _ratio(tp + fp, n),
        "no_answer": _ratio(float(counts[:, 2].sum()), n),
        "n": n,
    }


class POPEMetrics(_BenchmarkMetric):
    """POPE: accuracy, precision, recall, F1 and yes-ratio ("yes" positive), pooled and per category."""

    higher_is_better = None

    def __init__(self, categories: Sequence[str] = (), **kwargs) -> None:
        super().__init__(**kwargs)
        self.categories = tuple(categories)
        self._category_index = _index(self.categories)
        self.add_state(
            "counts", default=torch.zeros(len(self.categories) + 1, 2, 3, dtype=torch.long), dist_reduce_fx="sum"
        )

    def update(self, predictions: Sequence[str | None], samples: Sequence[VQASample]) -> None:
        slot = len(self.categories)
        index = []
        for prediction, sample in zip(predictions, samples, strict=True):
            k = _lookup(self._category_index, sample.category, "category") if sample.category else slot
            truth = _lookup(_GROUND_TRUTH, sample.answer.strip().lower(), "POPE answer")
            index.append((k * 2 + truth) * 3 + _PREDICTED[yes_no(prediction)])
        self._add(self.counts, index, [1] * len(index))

    def compute(self) -> dict[str, float]:
        result = _pope_scores(self.counts.sum(dim=0))
        for k, category in enumerate(self.categories):
            if self.counts[k].sum() > 0:
                result.update({f"{key}/{category}": value for key, value in _pope_scores(self.counts[k]).items()})
        return result


def metric_for(benchmark_name: str, samples: Sequence[VQASample]) -> Metric:
    """The metric of a benchmark (`BENCHMARKS[name].metric`; plain accuracy for other sets, e.g. synthetic),
    with categories (and HR-Bench cycles) taken from all of its `samples`."""
    kind = BENCHMARKS[benchmark_name].metric if benchmark_name in BENCHMARKS else "accuracy"
    categories = sorted({sample.category for sample in samples if sample.category})
    if kind == "hr_bench":
        cycles = sorted({str(sample.meta.get("cycle_category", "")) for sample in samples})
        return HRBenchAccuracy(cycles, categories)
    if kind == "pope":
        return POPEMetrics(categories)
    return VQAAccuracy(categories)
