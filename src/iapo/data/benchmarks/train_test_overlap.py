"""The train/test overlap policy: which reported rows a data set holds, and which training sets share them.

VTool-R1's table training data is cut from the three table *test* files, and its chart parquet's test split is
ReFocus's chart test rows, so a configuration can train on rows it reports. `rows_held` says, per data set, split
and seed, which part of which test set it reads; `reported_overlaps` names every (training, reported) pair that share
rows, which the data module refuses unless ``data.allow_train_test_overlap: true``; `selection` is what a results
file records about the rows a run read. Reporting the table sets with ``split: heldout`` and the training split's
seed reports exactly VTool-R1's table test rows, disjoint from ``table_train`` split ``train``.

    lines = reported_overlaps([DataSpec("table_train", "train", seed=42)], [DataSpec("tablevqa_vwtq", "test")])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from iapo.data.benchmarks.paper_test_sets import CHART_TEST_SETS, TABLE_SUBSET_OF, TABLE_TEST_SETS, TABLEVQA_SUBSETS
from iapo.data.benchmarks.registry import BENCHMARKS
from iapo.data.benchmarks.table_split import HELDOUT_FRACTION


def rows_held(name: str, split: str, seed: int) -> dict[str, str]:
    """{reported test set: part} for the test-set rows data set `name` holds with this split and seed.

    A part is "all", "train@<seed>" or "heldout@<seed>" (the parts of `table_parts`). Sets made by the project
    (synthetic, JSONL) hold none.
    """
    if name == "table_train":
        return {test_set: f"{split}@{seed}" for test_set in TABLE_TEST_SETS}
    if name == "tablevqa_bench":
        chosen = TABLEVQA_SUBSETS if split == "all" else [split]
        return {test_set: "all" for test_set, subset in TABLE_SUBSET_OF.items() if subset in chosen}
    if name == "refocus_chart_train":  # its test split is ReFocus's 826 chart test rows [T]; ChartQA test holds them
        return {test_set: "all" for test_set in (*CHART_TEST_SETS, "chartqa")} if split == "test" else {}
    if name in TABLE_TEST_SETS:
        return {name: f"heldout@{seed}" if split == "heldout" else "all"}
    if name in CHART_TEST_SETS:
        return {name: "all", "chartqa": "all"}
    if name in BENCHMARKS:
        return {name: "all"}
    return {}


def selection(name: str, split: str, seed: int, rows: int) -> dict[str, Any]:
    """Which rows of data set `name` a run read, for its results file: split, seed, the part of the set's rows
    (`rows_held`: "all", or "heldout@<seed>" for a table test set's VTool-R1 test part), rows kept after skips and,
    for that part, the training split those rows exclude."""
    chosen: dict[str, Any] = {"split": split, "seed": seed, "rows": rows}
    if name in BENCHMARKS:
        chosen["part"] = rows_held(name, split, seed)[name]
    if name in TABLE_TEST_SETS and split == "heldout":
        chosen["excludes"] = (
            f"table_train split train, seed {seed}: the questions of the three ReFocus table files that VTool-R1's "
            f"cut (shuffle, then train_test_split with test_size {HELDOUT_FRACTION}, seed {seed}) puts in training"
        )
    return chosen


def _parts_overlap(a: str, b: str) -> bool:
    """Whether two parts of a test set share rows: only "train@s" and "heldout@s" of one seed are disjoint."""
    if a == "all" or b == "all":
        return True
    (part_a, seed_a), (part_b, seed_b) = a.split("@"), b.split("@")
    return part_a == part_b or seed_a != seed_b


def reported_overlaps(training: Sequence[Any], reported: Sequence[Any]) -> list[str]:
    """One line per (training spec, reported spec) pair that share test rows; specs have `name`, `split`, `seed`."""
    lines = []
    for train_spec in training:
        held = rows_held(train_spec.name, train_spec.split, train_spec.seed)
        for report_spec in reported:
            shared = [
                f"{test_set} ({held[test_set]} vs {part})"
                for test_set, part in rows_held(report_spec.name, report_spec.split, report_spec.seed).items()
                if test_set in held and _parts_overlap(held[test_set], part)
            ]
            if shared:
                lines.append(
                    f"training set {train_spec.name} (split {train_spec.split}, seed {train_spec.seed}) and reported "
                    f"set {report_spec.name} (split {report_spec.split}) share rows of {', '.join(shared)}"
                )
    return lines
