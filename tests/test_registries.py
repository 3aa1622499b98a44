"""Registries: a toy data source, test set and advantage scale, each registered here and used from a config.

Nothing outside this file is edited: registering is the whole extension (docs/extending.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from helpers.cli import ROOT, load_cli
from iapo.data.benchmarks import BENCHMARKS, BenchmarkSpec, benchmark_group, register_benchmark
from iapo.data.datamodule import DataSpec, VQADataModule, offline_stand_ins
from iapo.data.sample import VQASample
from iapo.data.sources import SOURCES, get_source, register_source
from iapo.training.algo import ADVANTAGE_SCALES, get_advantage_scale, group_advantages, register_advantage_scale

CALLS: dict[str, int] = {"source": 0, "scale": 0}


def _toy_rows(n: int, prefix: str) -> list[VQASample]:
    image = Image.new("RGB", (64, 64), "white")
    return [
        VQASample(f"{prefix}/{i}", prefix, image, "What colour is the image?", "A", "mcq", ("white", "black"))
        for i in range(n)
    ]


@pytest.fixture(scope="module", autouse=True)
def toy_entries():
    """Register the toy entries once for this file and remove them afterwards (the registries are global)."""

    @register_source("toy_shapes", label=lambda spec: f"toy_shapes_{spec.split}")
    def load_toy(spec, context):
        CALLS["source"] += 1
        return _toy_rows(spec.n or 4, "toy_shapes")

    @register_advantage_scale("toy_max_abs")
    def toy_scale(centered, rewards):
        CALLS["scale"] += 1
        return centered / (centered.abs().amax(dim=1, keepdim=True) + 1e-6)

    register_benchmark(
        BenchmarkSpec(
            name="toy_bench",
            loader=lambda set_dir, skips: _toy_rows(3, "toy_bench"),
            answer_type="mcq",
            metric="accuracy",
            hf_repo="",
            hf_files=(),
            layouts=(("toy.json",),),
            setting="toy",
        )
    )
    yield
    del SOURCES["toy_shapes"], ADVANTAGE_SCALES["toy_max_abs"], BENCHMARKS["toy_bench"]


def test_getters_name_the_valid_keys() -> None:
    with pytest.raises(ValueError, match="unknown data set 'shapez'; use one of synthetic, .*toy_shapes.*toy_bench"):
        get_source("shapez")
    with pytest.raises(ValueError, match="unknown advantage scale 'grup'; registered: batch, group, none, toy_max_abs"):
        get_advantage_scale("grup")
    with pytest.raises(ValueError, match="registered twice"):
        register_source("synthetic")(lambda spec, context: [])


def test_a_registered_scale_is_used_by_the_advantages() -> None:
    adv = group_advantages(torch.tensor([0.0, 2.0, 1.0, 1.0]), group_size=2, scale="toy_max_abs")
    assert torch.allclose(adv, torch.tensor([-1.0, 1.0, 0.0, 0.0]), atol=1e-5)


def test_a_test_set_joins_only_its_own_settings_group(tmp_path: Path) -> None:
    """Group membership is the registered `setting`: a new set does not silently join `zoom_benchmarks`."""
    assert benchmark_group("toy_benchmarks") == ["toy_bench"]
    assert "toy_bench" not in benchmark_group("zoom_benchmarks")
    assert "toy_bench" in benchmark_group("benchmarks")
    (tmp_path / "toy_bench").mkdir()
    (tmp_path / "toy_bench" / "toy.json").write_text("[]")
    module = VQADataModule(root=str(tmp_path), test=[DataSpec("toy_benchmarks")])
    [dataset] = module.datasets_for("test")
    assert dataset.name == "toy_bench" and len(dataset) == 3
    # offline, a set of a setting without a synthetic twin is stood in for by the visual-search set
    assert [s.name for s in offline_stand_ins([DataSpec("toy_bench")], "val", 2)] == ["synthetic"]


def test_a_registered_source_and_scale_train_from_the_command_line(tmp_path: Path, monkeypatch) -> None:
    """One tiny `fit` whose training set and advantage scale exist only in this file."""
    monkeypatch.chdir(tmp_path)
    CALLS.update(source=0, scale=0)
    load_cli().main(
        [
            "fit",
            "--config",
            str(ROOT / "configs" / "tiny.yaml"),
            "--data.offline=null",
            "--data.train=[{name: toy_shapes, split: train, n: 4}]",
            "--data.val=[{name: toy_shapes, split: val, n: 2}]",
            "--model.init_args.advantage_scale=toy_max_abs",
            "--model.init_args.group_size=2",
            "--model.init_args.rewards={accuracy: 1.0, format: 0.1}",
            "--trainer.max_steps=1",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    assert CALLS["source"] == 2 and CALLS["scale"] >= 1
