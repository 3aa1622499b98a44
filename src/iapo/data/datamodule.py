"""`VQADataModule`: training, validation, test and predict sets chosen by name in the config.

A set is a `DataSpec` naming a registered data source (`iapo.data.sources`): `synthetic` (the built-in visual-search
set), `synthetic_charts` (bar charts and tables with label boxes), `jsonl` (any `{image, question, options?, answer}`
file), `expert_jsonl` (the same rows with the assistant `turns`, for `SFTModule`; `iapo.training.expert_jsonl`), one of the test sets by name
(`vstar_bench`, `chartqa_h_bar`, ...), a paper-setting training set (`refocus_chart_train`, `tablevqa_bench`,
`table_train`; see `data/README.md`) or a source of your own (`register_source`). Training on rows of a test set is
refused unless `allow_train_test_overlap` (`refuse_reported_rows`, the policy in `train_test_overlap`).
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
from pathlib import Path

import lightning as L
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler

from iapo.data.benchmarks import BENCHMARKS, is_present
from iapo.data.benchmarks.registry import benchmark_group
from iapo.data.benchmarks.train_test_overlap import reported_overlaps, selection
from iapo.data.sample import MAX_IMAGE_PIXELS, BadRowError, SkipLog, VQASample, load_image
from iapo.data.sources import STAND_INS, DataSpec, SourceContext, get_source
from iapo.data.synthetic import SyntheticConfig
from iapo.data.synthetic_charts import SyntheticChartsConfig


def offline_stand_ins(specs: list[DataSpec], stage: str, rows: int) -> list[DataSpec]:
    """The synthetic set of each spec's setting in its place (`VQADataModule.offline`, `STAND_INS`): the paper
    setting's chart and table sets become `synthetic_charts`, every other set (the zoom setting's, JSONL files) the
    visual-search `synthetic` set; `rows` rows of the `stage` split each, one spec per stand-in."""
    out: dict[str, DataSpec] = {}
    for spec in specs:
        group = benchmark_group(spec.name)
        settings = {BENCHMARKS[n].setting for n in group} if group is not None else {get_source(spec.name).setting}
        name = STAND_INS.get(settings.pop(), "synthetic") if len(settings) == 1 else "synthetic"
        if name not in out:
            out[name] = DataSpec(name, split=stage, n=rows, seed=spec.seed)
            if spec.name != name:
                rank_zero_info(f"offline: {stage} set {spec.label} -> {name} ({rows} rows)")
    return list(out.values())


def expand_specs(specs: list[DataSpec], root: Path) -> list[DataSpec]:
    """Replace `benchmarks` (or `<setting>_benchmarks`: `paper_benchmarks`, `zoom_benchmarks`) by one spec per test
    set of that group present under `root` (an error when none is)."""
    out = []
    for spec in specs:
        group = benchmark_group(spec.name)
        if group is None:
            out.append(spec)
            continue
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


def load_rows(
    spec: DataSpec, root: Path, synthetic: SyntheticConfig, skips: SkipLog, charts: SyntheticChartsConfig | None = None
) -> list[VQASample]:
    """The samples of one `DataSpec` (image decoding deferred), read by its registered source (`get_source`)."""
    return get_source(spec.name).load(spec, SourceContext(Path(root), skips, synthetic, charts))


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
        they are to `selections[label]` (`train_test_overlap.selection`). With training sets configured, the first call of
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
                self.selections[spec.label] = selection(spec.name, spec.split, spec.seed, len(rows))
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
        overlaps = reported_overlaps(expanded["train"], expanded["test"])
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
