"""Test sets: the registry (`registry.py`), shared row readers (`readers.py`) and one module per setting.

from iapo.data.benchmarks import BENCHMARKS, load_benchmark
samples, skips = load_benchmark("hr_bench_4k", "data", limit=100)   # deterministic subset of 100
"""

from iapo.data.benchmarks import paper_sets, zoom_sets  # noqa: F401  (register the two settings' sets)
from iapo.data.benchmarks.registry import (
    BENCHMARKS,
    BenchmarkSpec,
    is_present,
    load_benchmark,
    missing_message,
    register_benchmark,
)

__all__ = ["BENCHMARKS", "BenchmarkSpec", "is_present", "load_benchmark", "missing_message", "register_benchmark"]
