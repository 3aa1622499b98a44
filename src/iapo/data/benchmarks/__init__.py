"""Test and training sets: the registry (`registry.py`), shared row readers (`readers.py`), the zoom setting's test
sets (`zoom_sets.py`), the paper setting's test sets (`paper_test_sets.py`), training sets (`paper_training_sets.py`)
and its train/test overlap policy (`train_test_overlap.py`).

from iapo.data.benchmarks import BENCHMARKS, load_benchmark
samples, skips = load_benchmark("hr_bench_4k", "data", limit=100)   # deterministic subset of 100
"""

from iapo.data.benchmarks import paper_test_sets, paper_training_sets, zoom_sets  # noqa: F401  (register the sets)
from iapo.data.benchmarks.registry import (
    BENCHMARKS,
    BenchmarkSpec,
    benchmark_group,
    is_present,
    load_benchmark,
    missing_message,
    register_benchmark,
)

__all__ = [
    "BENCHMARKS",
    "BenchmarkSpec",
    "benchmark_group",
    "is_present",
    "load_benchmark",
    "missing_message",
    "register_benchmark",
]
