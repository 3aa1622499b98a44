"""`VQADataModule`: training, validation, test and predict sets chosen by name in the config.

A set is a `DataSpec`: `synthetic` (the built-in visual-search set), `synthetic_charts` (bar charts and tables with
label boxes), `jsonl` (any `{image, question, options?, answer}` file), `expert_jsonl` (the same rows with the
assistant `turns`, for `SFTModule`), one of the test sets by name (`vstar_bench`, `chartqa_h_bar`, ...) or a
paper-setting training set (`refocus_chart_train`, `tablevqa_bench`, `table_train`; see `data/README.md`). Training
on rows of a test set is refused unless `allow_train_test_overlap` (`refuse_reported_rows`).
Rows are listed eagerly and cheaply; images are decoded lazily in DataLoader workers. A row whose image cannot be
used arrives as a skip counted by its reason (`batch["skipped"]`), never as an exception; `strict: true` raises
instead. Nothing is dropped without a word: a test set whose folder is there but incomplete is named with what is
missing when `benchmarks` is expanded; a set left with no rows (an empty file, every row skipped) is reported and
left out of its stage, so it is never averaged in as 0.0; a stage whose sets have no rows at all is an error.

    # configs/tiny.yaml
    data:
      predict: [{name: synthetic, split: test, n: 8}]
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler

from iapo.data.benchmarks import paper_sets
from iapo.data.sample import MAX_IMAGE_PIXELS, BadRowError, SkipLog, VQASample, load_image
from iapo.data.synthetic import SyntheticConfig, build_split
from iapo.data.synthetic_charts import SyntheticChartsConfig


@dataclass
class DataSpec:
    """One data set. `n`: rows for `synthetic`, a deterministic subset size for the others (None = all).

    `name: benchmarks` stands for every test set present under `data.root`; `paper_benchmarks` and
    `zoom_benchmarks` for those of one setting. `split: heldout` on a table test set reads only the rows that
    `table_train` (split `train`, same seed) leaves out — VTool-R1's table test rows with seed 42 —, on the other
    test sets all rows (nothing trains on them). `seed` draws the subset of `n` rows and cuts the table split; unset,
    it is VTool-R1's 42 for the table split and 0 otherwise. For `jsonl` / `expert_jsonl`, image paths must resolve
    inside `image_root` (default: the JSONL's folder) unless `allow_outside_root` (see `iapo.data.jsonl`).
    """

    name: str
    split: str = "test"
    n: int | None = None
    path: str | None = None
    seed: int | None = None
    image_root: str | None = None
    allow_outside_root: bool = False

    def __post_init__(self) -> None:
        if self.seed is None and self.name not in BENCHMARK_GROUPS:  # a group's sets resolve their own
            table_split = self.name in paper_sets.TABLE_TEST_SETS or self.name == "table_train"
            self.seed = paper_sets.VTOOL_R1_SEED if table_split else 0

    @property
    def label(self) -> str:
        """The set's name in logs and result tables (a test set keeps its own name whichever rows are reported)."""
        if self.name == "synthetic":
            return f"synthetic_{self.split}"
        if self.name in ("synthetic_charts", *paper_sets.TRAINING_SETS):
            return f"{self.name}_{self.split}"
        if self.name == "jsonl" and self.path:
            return Path(self.path).stem
        return self.name


def offline_stand_ins(specs: list[DataSpec], stage: str, rows: int) -> list[DataSpec]:
    """The synthetic set of each spec's setting in its place (`VQADataModule.offline`): chart and table sets become
    `synthetic_charts`, every other set (the zoom setting's, JSONL files) the visual-search `synthetic` set; `rows`
    rows of the `stage` split each, one spec per stand-in."""
    paper = set(paper_sets.PAPER_TEST_SETS) | set(paper_sets.TRAINING_SETS)
    out: dict[str, DataSpec] = {}
    for spec in specs:
        name = "synthetic_charts" if spec.name in paper | {"synthetic_charts"} else "synthetic"
        if name not in out:
            out[name] = DataSpec(name, split=stage, n=rows, seed=spec.seed)
            if spec.name != name:
                rank_zero_info(f"offline: {stage} set {spec.label} -> {name} ({rows} rows)")
    return list(out.values())


BENCHMARK_GROUPS = {
    "benchmarks": lambda name: True,
    "paper_benchmarks": lambda name: name in paper_sets.PAPER_TEST_SETS,
    "zoom_benchmarks": lambda name: name not in paper_sets.PAPER_TEST_SETS,
}
"""Names that stand for every registered test set present under `data.root`: all of them, or one setting's."""


def expand_specs(specs: list[DataSpec], root: Path) -> list[DataSpec]:
    """Replace `benchmarks` (or `paper_benchmarks` / `zoom_benchmarks`) by one spec per test set of that group present
    under `root` (an error when none is)."""
    from iapo.data.benchmarks import BENCHMARKS, is_present

    out = []
    for spec in specs:
        if spec.name not in BENCHMARK_GROUPS:
            out.append(spec)
            continue
        group = [name for name in BENCHMARKS if BENCHMARK_GROUPS[spec.name](name)]
        present = [name for name in group if is_present(BENCHMARKS[name], root / name)]
        for name, missing in incomplete_benchmarks(root).items():
            if name in group:
                rank_zero_warn(
                    f"{spec.name}: {name} left out, {root / name} is incomplete: {missing} (see data/README.md)"
                )
        if not present:
            raise FileNotFoundError(
                f"no test set found under {root}/ (looked for {', '.join(group)}); run `make data` "
                "or see data/README.md for the layouts"
            )
        out += [DataSpec(name, split=spec.split, n=spec.n, seed=spec.seed) for name in present]
    return out


def incomplete_benchmarks(root: Path) -> dict[str, str]:
    """{name: what is missing} for each test set whose folder under `root` has files but no complete layout.

    The layout with the most of its patterns matched is the one named (the user was most likely filling it).
    """
    from iapo.data.benchmarks import BENCHMARKS, is_present

    incomplete = {}
    for name, bench in BENCHMARKS.items():
        set_dir = root / name
        if is_present(bench, set_dir) or not set_dir.is_dir() or not any(set_dir.iterdir()):
            continue
        found = [[any(set_dir.glob(pattern)) for pattern in layout] for layout in bench.layouts]
        best = max(range(len(found)), key=lambda i: sum(found[i]))
        layout = bench.layouts[best]
        missing = [pattern for pattern, hit in zip(layout, found[best], strict=True) if not hit]
        incomplete[name] = f"missing {', '.join(missing)} of the layout {' + '.join(layout)}"
    return incomplete


SYNTHETIC_DEFAULT_ROWS = 256


def load_rows(
    spec: DataSpec, root: Path, synthetic: SyntheticConfig, skips: SkipLog, charts: SyntheticChartsConfig | None = None
) -> list[VQASample]:
    """The samples of one `DataSpec` (image decoding deferred)."""
    if spec.name == "synthetic":
        return build_split(spec.split, spec.n or SYNTHETIC_DEFAULT_ROWS, synthetic, seed=spec.seed)
    if spec.name == "synthetic_charts":
        from iapo.data.synthetic_charts import build_split as build_charts

        return build_charts(spec.split, spec.n or SYNTHETIC_DEFAULT_ROWS, charts, seed=spec.seed)
    if paper_sets.reads_split(spec.name, spec.split):
        rows, set_skips = paper_sets.load_with_split(spec.name, root, spec.split, spec.seed, skips.strict, spec.n)
        skips.merge(set_skips)
        return rows
    if spec.name in ("jsonl", "expert_jsonl"):
        from iapo.data.jsonl import read_expert_jsonl, read_jsonl

        if not spec.path:
            raise ValueError(f"a `{spec.name}` data set needs `path: <file.jsonl>`")
        reader = read_jsonl if spec.name == "jsonl" else read_expert_jsonl
        rows = reader(spec.path, skips=skips, image_root=spec.image_root, allow_outside_root=spec.allow_outside_root)
        return rows[: spec.n] if spec.n else rows
    from iapo.data.benchmarks import BENCHMARKS, load_benchmark

    if spec.name not in BENCHMARKS:
        known = [
            "synthetic",
            "synthetic_charts",
            "jsonl",
            "expert_jsonl",
            *sorted(BENCHMARKS),
            *paper_sets.TRAINING_SETS,
        ]
        raise ValueError(f"unknown data set {spec.name!r}; use one of {', '.join(known)}")
    rows, bench_skips = load_benchmark(spec.name, root, strict=skips.strict, limit=spec.n, seed=spec.seed)
    skips.merge(bench_skips)
    return rows


def _no_rows_reason(spec: DataSpec, skips: SkipLog) -> str:
    """Why a set has no rows: its skipped rows by reason with a first example, or an empty source."""
    if skips.total:
        example = f", e.g. {next(iter(skips.examples.values()))}" if skips.examples else ""
        return f"all {skips.total} rows skipped {skips.as_dict()}{example}"
    return f"{spec.path or spec.name} holds no rows"


class VQADataset(Dataset):
    """Samples of one set; `__getitem__` decodes the image, or returns the skip reason when it cannot."""

    def __init__(
        self, name: str, samples: list[VQASample], strict: bool = False, max_pixels: int = MAX_IMAGE_PIXELS
    ) -> None:
        self.name = name
        self.samples = samples
        self.strict = strict
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        try:
            return {"sample": sample, "image": load_image(sample.image, self.max_pixels), "skip": None}
        except BadRowError as err:
            if self.strict:
                raise BadRowError(err.reason, f"{self.name} row {sample.uid}: {err}") from err
            return {"sample": sample, "image": None, "skip": err.reason}


def collate_samples(items: list[dict]) -> dict:
    """Keep decoded rows; count the others by reason under `skipped`."""
    kept = [item for item in items if item["skip"] is None]
    return {
        "samples": [item["sample"] for item in kept],
        "images": [item["image"] for item in kept],
        "skipped": Counter(item["skip"] for item in items if item["skip"] is not None),
    }


class VQADataModule(L.LightningDataModule):
    """Data sets by stage. Each of `train`, `val`, `test`, `predict` is a list of `DataSpec`.

    Args:
        root: where the named sets live (`data/<name>/`).
        synthetic, synthetic_charts: the offline generators' knobs (visual search; bar charts and tables).
        strict: the first bad row raises (naming file and row) instead of being skipped and counted.
        allow_train_test_overlap: train on rows of a set that is also tested (a warning, not an error).
        offline: rows per stage (`{train: 256, val: 8}`) of the synthetic set that replaces each `train` / `val` set
            of that stage — chart and table sets by `synthetic_charts`, the others by `synthetic` — so `fit` runs
            offline in either setting (`configs/tiny.yaml`); `test` and `predict` sets are read as given.
        max_image_pixels: images above this many pixels are skipped as `image_too_large` before decoding.
    """

    def __init__(
        self,
        root: str = "data",
        train: list[DataSpec] | None = None,
        val: list[DataSpec] | None = None,
        test: list[DataSpec] | None = None,
        predict: list[DataSpec] | None = None,
        synthetic: SyntheticConfig | None = None,
        synthetic_charts: SyntheticChartsConfig | None = None,
        batch_size: int = 4,
        num_workers: int = 0,
        strict: bool = False,
        allow_train_test_overlap: bool = False,
        max_image_pixels: int = MAX_IMAGE_PIXELS,
        offline: dict[str, int] | None = None,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.specs = {"train": train or [], "val": val or [], "test": test or [], "predict": predict or []}
        self.synthetic = synthetic or SyntheticConfig()
        self.synthetic_charts = synthetic_charts or SyntheticChartsConfig()
        self.allow_train_test_overlap = allow_train_test_overlap
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.strict = strict
        self.max_image_pixels = max_image_pixels
        unknown = set(offline or {}) - {"train", "val"}
        if unknown:
            raise ValueError(f"data.offline takes rows for `train` and `val`, got {sorted(unknown)}")
        self.offline = offline or {}
        self.datasets: dict[str, list[VQADataset]] = {}
        self.load_skips: dict[str, dict[str, int]] = {}
        self.selections: dict[str, dict] = {}
        self._overlaps_checked = False

    def datasets_for(self, stage: str) -> list[VQADataset]:
        """The data sets of a stage, loaded once; their load-time skip counts go to `load_skips[label]` and which rows
        they are to `selections[label]` (`paper_sets.selection`). With training sets configured, the first call of
        any stage checks them against the reported sets (`refuse_reported_rows`)."""
        if self.specs["train"] and not self._overlaps_checked:
            self.refuse_reported_rows()
            self._overlaps_checked = True
        if stage not in self.datasets:
            datasets, empty = [], []
            specs = expand_specs(self.stage_specs(stage), self.root)
            repeated = sorted(label for label, count in Counter(spec.label for spec in specs).items() if count > 1)
            if repeated:
                raise ValueError(f"data.{stage} names {', '.join(repeated)} twice: their results would be merged")
            for spec in specs:
                skips = SkipLog(strict=self.strict)
                rows = load_rows(spec, self.root, self.synthetic, skips, self.synthetic_charts)
                self.load_skips[spec.label] = skips.as_dict()
                self.selections[spec.label] = paper_sets.selection(spec.name, spec.split, spec.seed, len(rows))
                rank_zero_info(f"{stage} set {spec.label}: {len(rows)} rows, {skips.total} skipped {skips.as_dict()}")
                if rows:
                    datasets.append(VQADataset(spec.label, rows, self.strict, self.max_image_pixels))
                    continue
                reason = _no_rows_reason(spec, skips)
                empty.append(f"{spec.label} ({reason})")
                rank_zero_warn(f"{stage} set {spec.label} left out: no rows, {reason}")
            if empty and not datasets:
                raise ValueError(f"no rows to {stage}: every `data.{stage}` set is empty: {'; '.join(empty)}")
            self.datasets[stage] = datasets
        return self.datasets[stage]

    def stage_specs(self, stage: str) -> list[DataSpec]:
        """The stage's specs as configured, or their synthetic stand-ins when `offline` names the stage."""
        if stage in self.offline and self.specs[stage]:
            self.specs[stage] = offline_stand_ins(self.specs[stage], stage, self.offline.pop(stage))
        return self.specs[stage]

    def refuse_reported_rows(self) -> None:
        """Refuse training sets that hold rows of a test set (VTool-R1's table training data is cut from the table test
        sets), unless `allow_train_test_overlap`; then each overlap is a warning. Validation sets may share rows with
        training (the paper configuration validates on training prompts, so no reported row picks a checkpoint)."""
        expanded = {}
        for stage in ("train", "test"):
            try:
                expanded[stage] = expand_specs(self.stage_specs(stage), self.root)
            except FileNotFoundError:  # `benchmarks` with no test set present: no rows to overlap
                expanded[stage] = []
        overlaps = paper_sets.reported_overlaps(expanded["train"], expanded["test"])
        if overlaps and not self.allow_train_test_overlap:
            raise ValueError(
                "training on rows that are also reported: " + "; ".join(overlaps) + ". Report the table sets with "
                "`split: heldout` and the training split's `seed`, or set `data.allow_train_test_overlap: true`."
            )
        for line in overlaps:
            rank_zero_warn(f"allowed by data.allow_train_test_overlap: {line}")

    def _loader(self, dataset: Dataset, shuffle: bool = False, sampler: Sampler | None = None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate_samples,
            persistent_workers=self.num_workers > 0,
        )

    def _evaluation_sampler(self, dataset: VQADataset) -> Sampler | None:
        """With several processes, each evaluates its own rows exactly once: process r of W takes rows r, r + W, ...
        and no row is repeated (Lightning's default `DistributedSampler` pads the last batch with repeated rows,
        which the tallies would count twice). Lightning keeps a sampler that is already distributed, so
        `trainer.use_distributed_sampler` stays at its default; training prompts are still sharded by Lightning's
        own (padded, shuffled) `DistributedSampler`, which keeps every step's batch size equal on all processes."""
        if self.trainer is None or self.trainer.world_size == 1:
            return None
        world = self.trainer.world_size
        if len(dataset) < world:
            raise ValueError(
                f"the set {dataset.name} has {len(dataset)} rows for {world} processes: every process needs at "
                "least one row (evaluate it on fewer devices)"
            )
        return UnrepeatedDistributedSampler(dataset, num_replicas=world, rank=self.trainer.global_rank, shuffle=False)

    def _loaders(self, stage: str) -> list[DataLoader]:
        datasets = self.datasets_for(stage)
        if not datasets:
            raise ValueError(f"no `data.{stage}` sets configured; add e.g. `- {{name: synthetic, split: {stage}}}`")
        return [self._loader(dataset, sampler=self._evaluation_sampler(dataset)) for dataset in datasets]

    def train_dataloader(self):
        """All training sets mixed into one shuffled stream."""
        datasets = self.datasets_for("train")
        if not datasets:
            raise ValueError("no `data.train` sets configured; add e.g. `- {name: synthetic, split: train}`")
        return self._loader(ConcatDataset(datasets), shuffle=True)

    def val_dataloader(self):
        return self._loaders("val")

    def test_dataloader(self):
        return self._loaders("test")

    def predict_dataloader(self):
        return self._loaders("predict")

    def transfer_batch_to_device(self, batch: dict, device, dataloader_idx: int) -> dict:
        """Batches hold samples and PIL images; the rollout moves the tensors it builds to the model itself."""
        return batch
