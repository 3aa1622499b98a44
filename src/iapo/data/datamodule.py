"""`VQADataModule`: training, validation, test and predict sets chosen by name in the config.

A set is a `DataSpec`: `synthetic` (the built-in visual-search set), `jsonl` (any `{image, question, options?,
answer}` file), `expert_jsonl` (the same rows with the assistant `turns`, for `SFTModule`) or one of the six
benchmarks by name (`vstar_bench`, `hr_bench_4k`, ...; see `data/README.md`).
Rows are listed eagerly and cheaply; images are decoded lazily in DataLoader workers. A row whose image cannot be
decoded arrives as a counted skip (`batch["skipped"]`), never as an exception; `strict: true` raises instead.

    # configs/tiny.yaml
    data:
      predict: [{name: synthetic, split: test, n: 8}]
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from iapo.data.sample import BadRowError, SkipLog, VQASample, load_image
from iapo.data.synthetic import SyntheticConfig, build_split


@dataclass
class DataSpec:
    """One data set. `n`: rows for `synthetic`, a deterministic subset size for the others (None = all).

    `name: benchmarks` stands for every one of the six test sets present under `data.root`.
    """

    name: str
    split: str = "test"
    n: int | None = None
    path: str | None = None
    seed: int = 0

    @property
    def label(self) -> str:
        """The set's name in logs and result tables."""
        if self.name == "synthetic":
            return f"synthetic_{self.split}"
        if self.name == "jsonl" and self.path:
            return Path(self.path).stem
        return self.name


def expand_specs(specs: list[DataSpec], root: Path) -> list[DataSpec]:
    """Replace `benchmarks` by one spec per test set present under `root` (an error when none is)."""
    from iapo.data.benchmarks import BENCHMARKS, is_present

    out = []
    for spec in specs:
        if spec.name != "benchmarks":
            out.append(spec)
            continue
        present = [name for name, bench in BENCHMARKS.items() if is_present(bench, root / name)]
        if not present:
            raise FileNotFoundError(
                f"no test set found under {root}/ (looked for {', '.join(BENCHMARKS)}); run `make data` "
                "or see data/README.md for the layouts"
            )
        out += [DataSpec(name, split=spec.split, n=spec.n, seed=spec.seed) for name in present]
    return out


SYNTHETIC_DEFAULT_ROWS = 256


def load_rows(spec: DataSpec, root: Path, synthetic: SyntheticConfig, skips: SkipLog) -> list[VQASample]:
    """The samples of one `DataSpec` (image decoding deferred)."""
    if spec.name == "synthetic":
        return build_split(spec.split, spec.n or SYNTHETIC_DEFAULT_ROWS, synthetic, seed=spec.seed)
    if spec.name in ("jsonl", "expert_jsonl"):
        from iapo.data.jsonl import read_expert_jsonl, read_jsonl

        if not spec.path:
            raise ValueError(f"a `{spec.name}` data set needs `path: <file.jsonl>`")
        reader = read_jsonl if spec.name == "jsonl" else read_expert_jsonl
        rows = reader(spec.path, skips=skips)
        return rows[: spec.n] if spec.n else rows
    from iapo.data.benchmarks import BENCHMARKS, load_benchmark

    if spec.name not in BENCHMARKS:
        raise ValueError(f"unknown data set {spec.name!r}; use synthetic, jsonl or one of {sorted(BENCHMARKS)}")
    rows, bench_skips = load_benchmark(spec.name, root, strict=skips.strict, limit=spec.n, seed=spec.seed)
    for reason, count in bench_skips.counts.items():
        skips.counts[reason] += count
    return rows


class VQADataset(Dataset):
    """Samples of one set; `__getitem__` decodes the image, or returns the skip reason when it cannot."""

    def __init__(self, name: str, samples: list[VQASample], strict: bool = False) -> None:
        self.name = name
        self.samples = samples
        self.strict = strict

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        try:
            return {"sample": sample, "image": load_image(sample.image), "skip": None}
        except BadRowError as err:
            if self.strict:
                raise BadRowError(err.reason, f"{self.name} row {sample.uid}: {err}") from err
            return {"sample": sample, "image": None, "skip": "undecodable_image"}


def collate_samples(items: list[dict]) -> dict:
    """Keep decoded rows; count the others by reason under `skipped`."""
    kept = [item for item in items if item["skip"] is None]
    return {
        "samples": [item["sample"] for item in kept],
        "images": [item["image"] for item in kept],
        "skipped": Counter(item["skip"] for item in items if item["skip"] is not None),
    }


class VQADataModule(L.LightningDataModule):
    """Data sets by stage. Each of `train`, `val`, `test`, `predict` is a list of `DataSpec`."""

    def __init__(
        self,
        root: str = "data",
        train: list[DataSpec] | None = None,
        val: list[DataSpec] | None = None,
        test: list[DataSpec] | None = None,
        predict: list[DataSpec] | None = None,
        synthetic: SyntheticConfig | None = None,
        batch_size: int = 4,
        num_workers: int = 0,
        strict: bool = False,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.specs = {"train": train or [], "val": val or [], "test": test or [], "predict": predict or []}
        self.synthetic = synthetic or SyntheticConfig()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.strict = strict
        self.datasets: dict[str, list[VQADataset]] = {}
        self.load_skips: dict[str, dict[str, int]] = {}

    def datasets_for(self, stage: str) -> list[VQADataset]:
        """The data sets of a stage, loaded once; their load-time skip counts go to `load_skips[label]`."""
        if stage not in self.datasets:
            datasets = []
            for spec in expand_specs(self.specs[stage], self.root):
                skips = SkipLog(strict=self.strict)
                rows = load_rows(spec, self.root, self.synthetic, skips)
                datasets.append(VQADataset(spec.label, rows, strict=self.strict))
                self.load_skips[spec.label] = skips.as_dict()
                rank_zero_info(f"{stage} set {spec.label}: {len(rows)} rows, {skips.total} skipped {skips.as_dict()}")
            self.datasets[stage] = datasets
        return self.datasets[stage]

    def _loader(self, dataset: Dataset, shuffle: bool = False) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=collate_samples,
            persistent_workers=self.num_workers > 0,
        )

    def _loaders(self, stage: str) -> list[DataLoader]:
        datasets = self.datasets_for(stage)
        if not datasets:
            raise ValueError(f"no `data.{stage}` sets configured; add e.g. `- {{name: synthetic, split: {stage}}}`")
        return [self._loader(dataset) for dataset in datasets]

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
