"""The registry of test sets: `BenchmarkSpec`, `register_benchmark`, presence checks and `load_benchmark`.

A test set is one registered `BenchmarkSpec` (loader, answer type, metric kind, Hugging Face source, expected files);
`iapo.data.benchmarks` imports every module that registers sets. Add a set by writing its loader
`load_<name>(root, skips) -> list[VQASample]` and registering its spec with its `setting` (see `zoom_sets.py`); a
data spec then names it (``data.test: [{name: <name>}]``) and ``<setting>_benchmarks`` includes it.
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

    `setting` names the group the set belongs to: ``name: <setting>_benchmarks`` in a data spec stands for the sets
    of that setting present under the data root (``paper``, ``zoom``; a new setting makes a new group).
    `layouts` lists alternative layouts under ``data/<name>/``; each is a tuple of glob patterns that must all match
    for that layout to count as present. `hf_files` are the `allow_patterns` fetched from `hf_repo` (a dataset repo)
    into ``data/<name>/``; they produce the first layout. `heldout`, for a set that a training set is cut from, reads
    the rows that cut leaves out (`heldout(data_root, skips, seed)`, a data spec's ``split: heldout``; without it
    that split reads the whole set), and `default_seed` is the seed a data spec of this set uses when it names none.
    """

    name: str
    loader: Callable[[Path, SkipLog], list[VQASample]]
    answer_type: str
    metric: str
    hf_repo: str
    hf_files: tuple[str, ...]
    layouts: tuple[tuple[str, ...], ...]
    setting: str
    heldout: Callable[[Path, SkipLog, int], list[VQASample]] | None = None
    default_seed: int = 0


BENCHMARKS: dict[str, BenchmarkSpec] = {}
"""name -> spec, filled by `register_benchmark` when `iapo.data.benchmarks` is imported."""


def register_benchmark(spec: BenchmarkSpec) -> BenchmarkSpec:
    """Add a test set to `BENCHMARKS` (a second spec with the same name is an error)."""
    if spec.name in BENCHMARKS:
        raise ValueError(f"benchmark {spec.name!r} is registered twice")
    BENCHMARKS[spec.name] = spec
    return spec


def benchmark_group(name: str) -> list[str] | None:
    """The registered test sets a group name stands for: ``benchmarks`` all of them, ``<setting>_benchmarks`` those
    registered with that `setting`; None for a name that is no group."""
    if name == "benchmarks":
        return list(BENCHMARKS)
    settings = {spec.setting for spec in BENCHMARKS.values()}
    setting = name.removesuffix("_benchmarks")
    if name.endswith("_benchmarks") and setting in settings:
        return [spec.name for spec in BENCHMARKS.values() if spec.setting == setting]
    return None


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
    return draw_subset(BENCHMARKS[name].loader(Path(root) / name, skips), limit, seed), skips


def draw_subset(samples: list[VQASample], limit: int | None, seed: int) -> list[VQASample]:
    """A subset of `limit` samples drawn with `seed`, in file order (all of them without a limit)."""
    if limit is None or limit >= len(samples):
        return samples
    keep = sorted(random.Random(seed).sample(range(len(samples)), limit))
    return [samples[i] for i in keep]
