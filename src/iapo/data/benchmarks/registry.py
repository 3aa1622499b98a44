"""The registry of test sets: `BenchmarkSpec`, `register_benchmark`, presence checks and `load_benchmark`.

A test set is one registered `BenchmarkSpec` (loader, answer type, metric kind, Hugging Face source, expected files);
`iapo.data.benchmarks` imports every module that registers sets. Add a set by writing its loader
`load_<name>(root, skips) -> list[VQASample]` and registering its spec (see `zoom_sets.py`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from iapo.data.sample import SkipLog, VQASample


@dataclass(frozen=True)
class BenchmarkSpec:
    """One test set: how to read it, score it and fetch it.

    `layouts` lists alternative layouts under ``data/<name>/``; each is a tuple of glob patterns that must all match
    for that layout to count as present. `hf_files` are the `allow_patterns` fetched from `hf_repo` (a dataset repo)
    into ``data/<name>/``; they produce the first layout.
    """

    name: str
    loader: Callable[[Path, SkipLog], list[VQASample]]
    answer_type: str
    metric: str
    hf_repo: str
    hf_files: tuple[str, ...]
    layouts: tuple[tuple[str, ...], ...]


BENCHMARKS: dict[str, BenchmarkSpec] = {}
"""name -> spec, filled by `register_benchmark` when `iapo.data.benchmarks` is imported."""


def register_benchmark(spec: BenchmarkSpec) -> BenchmarkSpec:
    """Add a test set to `BENCHMARKS` (a second spec with the same name is an error)."""
    if spec.name in BENCHMARKS:
        raise ValueError(f"benchmark {spec.name!r} is registered twice")
    BENCHMARKS[spec.name] = spec
    return spec


def is_present(spec: BenchmarkSpec, set_dir: Path) -> bool:
    """Whether one of the set's layouts is complete in `set_dir`."""
    return any(all(any(Path(set_dir).glob(pattern)) for pattern in layout) for layout in spec.layouts)


def missing_message(spec: BenchmarkSpec, set_dir: Path) -> str:
    expected = " or ".join(" + ".join(str(Path(set_dir) / p) for p in layout) for layout in spec.layouts)
    return (
        f"benchmark {spec.name!r} not found: expected {expected}. "
        f"Run `make data` (or `python -m iapo.data.download --sets {spec.name}`) to fetch it from "
        f"huggingface.co/datasets/{spec.hf_repo}, or place the files as described in data/README.md."
    )


def require_present(name: str, root: Path) -> None:
    if not is_present(BENCHMARKS[name], root):
        raise FileNotFoundError(missing_message(BENCHMARKS[name], root))


def load_benchmark(
    name: str, root: str | Path = "data", strict: bool = False, limit: int | None = None, seed: int = 0
) -> tuple[list[VQASample], SkipLog]:
    """Load test set `name` from ``<root>/<name>/``; returns the samples and the log of skipped rows.

    With `limit`, a subset of that many samples drawn with `seed` (same data, limit and seed → same subset, in file
    order). With `strict`, the first bad row raises `BadRowError` naming its file and row.
    """
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    skips = SkipLog(strict=strict)
    samples = BENCHMARKS[name].loader(Path(root) / name, skips)
    if limit is not None and limit < len(samples):
        keep = sorted(random.Random(seed).sample(range(len(samples)), limit))
        samples = [samples[i] for i in keep]
    return samples, skips
