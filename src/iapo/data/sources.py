"""Data sources: every name a `DataSpec` can take, as registered entries (a decorator and a getter).

A source turns a `DataSpec` into samples: `load(spec, context) -> list[VQASample]`, where `context` carries the data
root, the skip log and the synthetic generators' settings. Built in: ``synthetic`` (visual search),
``synthetic_charts`` (bar charts and tables with label boxes), ``jsonl``, ``expert_jsonl`` (registered by
`iapo.training.expert_jsonl`, which checks turns with the agent's parser), every paper training set
(`TRAINING_SETS`) and every registered test set (`BENCHMARKS`, read whole, or by part with ``split: heldout`` where
the set defines parts). ``benchmarks`` and ``<setting>_benchmarks`` are groups, expanded by the data module into the
registered test sets of that setting present under the data root (`benchmark_group`).

Add a source in any imported module, then name it in a config (``data.train: [{name: shapes, n: 64}]``):

    from iapo.data.sources import register_source

    @register_source("shapes", setting="zoom", label=lambda spec: f"shapes_{spec.split}")
    def load_shapes(spec, context):
        return [VQASample(...) for i in range(spec.n or 100)]

`setting` decides the offline stand-in (`STAND_INS`: a ``paper`` source is replaced by ``synthetic_charts``, any
other by ``synthetic`` when ``data.offline`` names its stage).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iapo.data.benchmarks import BENCHMARKS, BenchmarkSpec, load_benchmark
from iapo.data.benchmarks.paper_training_sets import TRAINING_SETS, load_training_set
from iapo.data.benchmarks.registry import benchmark_group, draw_subset
from iapo.data.jsonl import read_jsonl
from iapo.data.sample import SkipLog, VQASample
from iapo.data.synthetic import build_split as build_search
from iapo.data.synthetic_charts import build_split as build_charts

SYNTHETIC_DEFAULT_ROWS = 256
STAND_INS = {"paper": "synthetic_charts", "zoom": "synthetic"}
"""A source's setting -> the synthetic source that replaces it offline (any other setting: ``synthetic``)."""


@dataclass
class DataSpec:
    """One data set. `n`: rows for `synthetic`, a deterministic subset size for the others (None = all).

    `name` is a registered source (`get_source`) or a group: ``benchmarks`` stands for every test set present under
    `data.root`, ``paper_benchmarks`` and ``zoom_benchmarks`` for those of one setting. `split: heldout` on a table
    test set reads only the rows that `table_train` (split `train`, same seed) leaves out — VTool-R1's table test rows
    with seed 42 —, on the other test sets all rows (nothing trains on them). `seed` draws the subset of `n` rows and
    cuts the table split; unset, it is the source's `default_seed` (VTool-R1's 42 for the table split, 0 otherwise).
    For `jsonl` / `expert_jsonl`, image paths must resolve inside `image_root` (default: the JSONL's folder) unless
    `allow_outside_root` (see `iapo.data.jsonl`).
    """

    name: str
    split: str = "test"
    n: int | None = None
    path: str | None = None
    seed: int | None = None
    image_root: str | None = None
    allow_outside_root: bool = False

    def __post_init__(self) -> None:
        if self.seed is None and benchmark_group(self.name) is None:  # a group's sets resolve their own
            self.seed = get_source(self.name).default_seed

    @property
    def label(self) -> str:
        """The set's name in logs and result tables (a test set keeps its own name whichever rows are reported)."""
        return get_source(self.name).label(self)


@dataclass(frozen=True)
class SourceContext:
    """What a source may read besides its spec: the data root, the skip log to count bad rows in, and the synthetic
    generators' settings (`SyntheticConfig`, `SyntheticChartsConfig`)."""

    root: Path
    skips: SkipLog
    synthetic: Any = None
    charts: Any = None


def _name_label(spec: DataSpec) -> str:
    return spec.name


def _split_label(spec: DataSpec) -> str:
    return f"{spec.name}_{spec.split}"


@dataclass(frozen=True)
class DataSource:
    """A registered source: `load(spec, context)`, its `setting` (for offline stand-ins), its `label` in logs and
    tables, and the seed a spec of it takes when it names none."""

    name: str
    load: Callable[[DataSpec, SourceContext], list[VQASample]]
    setting: str = "zoom"
    label: Callable[[DataSpec], str] = _name_label
    default_seed: int = 0


SOURCES: dict[str, DataSource] = {}
"""name -> source, filled by `register_source` (test sets are derived from `BENCHMARKS` by `get_source`)."""


def register_source(
    name: str, *, setting: str = "zoom", label: Callable[[DataSpec], str] = _name_label, default_seed: int = 0
) -> Callable[[Callable], Callable]:
    """Decorator: make `load(spec, context)` the data source `name` (a name taken by a source or a test set is an
    error)."""

    def add(load: Callable[[DataSpec, SourceContext], list[VQASample]]) -> Callable:
        if name in SOURCES or name in BENCHMARKS or benchmark_group(name) is not None:
            raise ValueError(f"data source {name!r} is registered twice (or is a test set or a group)")
        SOURCES[name] = DataSource(name, load, setting, label, default_seed)
        return load

    return add


def source_names() -> list[str]:
    """Every name a data spec can take: sources, test sets and the test-set groups."""
    settings = sorted({spec.setting for spec in BENCHMARKS.values()})
    return [*SOURCES, *sorted(BENCHMARKS), "benchmarks", *(f"{setting}_benchmarks" for setting in settings)]


def get_source(name: str) -> DataSource:
    """The source `name`: a registered one, or a registered test set read by `load_benchmark` (by its `heldout`
    reader for ``split: heldout``). An unknown name is a ValueError listing the valid ones."""
    if name in SOURCES:
        return SOURCES[name]
    if name in BENCHMARKS:
        return _benchmark_source(BENCHMARKS[name])
    raise ValueError(f"unknown data set {name!r}; use one of {', '.join(source_names())}")


def _benchmark_source(bench: BenchmarkSpec) -> DataSource:
    def load(spec: DataSpec, context: SourceContext) -> list[VQASample]:
        if bench.heldout is not None and spec.split == "heldout":
            samples = bench.heldout(context.root, context.skips, spec.seed)
            return draw_subset(samples, spec.n, spec.seed)
        rows, skips = load_benchmark(
            bench.name, context.root, strict=context.skips.strict, limit=spec.n, seed=spec.seed
        )
        context.skips.merge(skips)
        return rows

    return DataSource(bench.name, load, bench.setting, _name_label, bench.default_seed)


# --- built-in sources -----------------------------------------------------------------------------------------------


@register_source("synthetic", label=_split_label)
def _synthetic(spec: DataSpec, context: SourceContext) -> list[VQASample]:
    return build_search(spec.split, spec.n or SYNTHETIC_DEFAULT_ROWS, context.synthetic, seed=spec.seed)


@register_source("synthetic_charts", setting="paper", label=_split_label)
def _synthetic_charts(spec: DataSpec, context: SourceContext) -> list[VQASample]:
    return build_charts(spec.split, spec.n or SYNTHETIC_DEFAULT_ROWS, context.charts, seed=spec.seed)


def _jsonl_label(spec: DataSpec) -> str:
    return Path(spec.path).stem if spec.path else spec.name


@register_source("jsonl", label=_jsonl_label)
def _jsonl(spec: DataSpec, context: SourceContext) -> list[VQASample]:
    if not spec.path:
        raise ValueError("a `jsonl` data set needs `path: <file.jsonl>`")
    rows = read_jsonl(
        spec.path, skips=context.skips, image_root=spec.image_root, allow_outside_root=spec.allow_outside_root
    )
    return rows[: spec.n] if spec.n else rows


def _training_set_reader(name: str) -> Callable[[DataSpec, SourceContext], list[VQASample]]:
    def load(spec: DataSpec, context: SourceContext) -> list[VQASample]:
        rows, skips = load_training_set(name, context.root, spec.split, spec.seed, context.skips.strict, spec.n)
        context.skips.merge(skips)
        return rows

    return load


for _name, _training in TRAINING_SETS.items():
    register_source(_name, setting="paper", label=_split_label, default_seed=_training.default_seed)(
        _training_set_reader(_name)
    )
