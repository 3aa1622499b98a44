"""The paper setting's data: the six ReFocus test sets, VTool-R1's chart parquet, TableVQA-Bench and the seeded table
training split on fixtures in their release layouts (exact kept / skipped counts); the refusal to train on reported
rows; `make data SETS=paper` offline and with archives; the evaluation command on the six sets."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from helpers.cli import ROOT, load_cli
from helpers.data_files import png, write_json
from helpers.paper_files import (
    FIGURE,
    refocus_json,
    table_record,
    write_chart_parquet,
    write_charxiv,
    write_paper_sets,
    write_refocus_chart,
    write_refocus_table,
    write_tablevqa_bench,
)
from iapo.data import download
from iapo.data.benchmarks import BENCHMARKS, load_benchmark
from iapo.data.benchmarks.paper_test_sets import PAPER_TEST_SETS, TABLE_TEST_SETS
from iapo.data.benchmarks.paper_training_sets import load_training_set
from iapo.data.benchmarks.table_split import vtool_r1_parts
from iapo.data.benchmarks.train_test_overlap import reported_overlaps
from iapo.data.datamodule import DataSpec, VQADataModule, load_rows
from iapo.data.sample import BadRowError, SkipLog, load_image

# --- the six test sets ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["chartqa_h_bar", "chartqa_v_bar"])
def test_refocus_charts_keep_good_rows_and_count_bad_ones(tmp_path: Path, name: str) -> None:
    expected = write_refocus_chart(tmp_path, name)
    samples, skips = load_benchmark(name, tmp_path)
    assert [s.uid for s in samples] == expected["uids"]
    assert skips.as_dict() == expected["skips"]
    first, second, shared = samples
    kind, key, other = (
        ("chart_h", "y_values", "x_values") if name == "chartqa_h_bar" else ("chart_v", "x_values", "y_values")
    )
    assert first.answer_type == "relaxed" and first.source == name and first.category == kind
    assert first.question == "What is the value of Japan?" and first.answer == "42" and second.answer == "7"
    # normalised boxes of a 200x100 figure become pixels: (0.1, 0.2, 0.5, 0.4) -> (20, 20, 100, 40)
    assert first.meta["refocus"] == {
        "kind": kind,
        key: [["Japan", [20.0, 20.0, 100.0, 40.0]], ["Korea", [100.0, 40.0, 180.0, 60.0]]],
        other: [],
    }
    assert shared.meta["refocus"][key] == [["A", [0.0, 0.0, 200.0, 100.0]]]  # a [x1, y1, x2, y2] list box
    assert Path(first.image).name == "c1.png" and Path(second.image) == tmp_path / name / "data" / "charts" / "c2.png"
    assert Path(shared.image) == tmp_path / "refocus_images" / "nested" / "c8.png"
    assert first.meta["row_key"] == "chartqa:c1:What is the value of Japan?"
    assert load_image(first.image).size == FIGURE


def test_a_figure_path_never_leaves_the_searched_folders(tmp_path: Path) -> None:
    write_refocus_chart(tmp_path, "chartqa_v_bar")
    samples, skips = load_benchmark("chartqa_v_bar", tmp_path, strict=False)
    assert all(Path(s.image).name != "outside.png" for s in samples)  # "../../outside.png" exists but is not read
    with pytest.raises(BadRowError, match=r"r3\): missing_field"):
        load_benchmark("chartqa_v_bar", tmp_path, strict=True)


@pytest.mark.parametrize("name", ["tablevqa_vwtq", "tablevqa_vwtq_syn", "tablevqa_vtabfact"])
def test_refocus_tables_with_images_on_disk_or_in_tablevqa_bench(tmp_path: Path, name: str) -> None:
    expected = write_refocus_table(tmp_path, name)
    samples, skips = load_benchmark(name, tmp_path)
    assert [s.uid for s in samples] == expected["uids"]
    assert skips.as_dict() == expected["skips"]
    on_disk, embedded = samples
    assert Path(on_disk.image).name == "nu-1.png" and isinstance(embedded.image, bytes)
    assert load_image(embedded.image).size == FIGURE
    if name == "tablevqa_vtabfact":
        assert on_disk.answer_type == "tabfact" and on_disk.answer == "true"
    else:
        assert on_disk.answer_type == "wtq" and on_disk.answer == "Joe|Lyle"
    assert on_disk.question == "Who won in 1972?" and on_disk.meta["qa_id"] == "nu-1"
    assert on_disk.meta["row_key"] == "tablevqa:nu-1" and on_disk.meta["prompt"].startswith("Answer the question")
    assert on_disk.meta["refocus"] == {
        "kind": "table",
        "columns": [["Year", [0.0, 0.0, 100.0, 100.0]], ["Name", [100.0, 0.0, 200.0, 100.0]]],
        "rows": [["Year", [0.0, 0.0, 200.0, 50.0]], ["1972", [0.0, 50.0, 200.0, 100.0]]],
    }


@pytest.mark.parametrize(
    ("answer", "stored"), [(0, "false"), ("1", "true"), (True, "true"), ("False", "false"), (1.0, "true")]
)
def test_tabfact_labels_become_true_or_false(tmp_path: Path, answer, stored: str) -> None:
    set_dir = tmp_path / "tablevqa_vtabfact"
    (set_dir / "images").mkdir(parents=True)
    (set_dir / "images" / "t.png").write_bytes(png("white", FIGURE))
    refocus_json(set_dir, "tablevqa-vtabfact_wbb.json", {"t": table_record("x/t.png", answer)}, hub_folder=False)
    [sample], _ = load_benchmark("tablevqa_vtabfact", tmp_path)
    assert sample.answer == stored


def test_pixel_boxes_stay_pixels_per_group_and_an_uneven_pair_is_a_bad_row(tmp_path: Path) -> None:
    set_dir = tmp_path / "tablevqa_vwtq"
    (set_dir / "images").mkdir(parents=True)
    (set_dir / "images" / "a.png").write_bytes(png("white", FIGURE))
    records = {
        "a": table_record("a.png", "x", columns_bbox=[[0, 0, 90, 100], [90, 0, 200, 100]]),
        "b": table_record("a.png", "x", columns_bbox=[[0, 0, 90, 100]]),
        "c": table_record("a.png", "x", column_headers=[], columns_bbox=[]),  # ReFocus keeps such a row
    }
    refocus_json(set_dir, "tablevqa_wbb.json", records, hub_folder=False)
    samples, skips = load_benchmark("tablevqa_vwtq", tmp_path)
    assert [s.uid for s in samples] == ["tablevqa_vwtq/a", "tablevqa_vwtq/c"] and skips.as_dict() == {"bad_boxes": 1}
    assert samples[0].meta["refocus"]["columns"][1] == ["Name", [90.0, 0.0, 200.0, 100.0]]
    assert samples[0].meta["refocus"]["rows"][1] == ["1972", [0.0, 50.0, 200.0, 100.0]]  # decided per group
    assert samples[1].meta["refocus"]["columns"] == []


def test_charxiv_has_no_label_boxes(tmp_path: Path) -> None:
    expected = write_charxiv(tmp_path)
    samples, skips = load_benchmark("charxiv", tmp_path)
    assert [s.uid for s in samples] == expected["uids"] and skips.as_dict() == expected["skips"]
    assert samples[0].answer_type == "charxiv" and "refocus" not in samples[0].meta
    assert samples[0].question == "How many subplots have a legend?" and samples[0].answer == "3"


def test_unreadable_file_and_list_of_records(tmp_path: Path) -> None:
    (tmp_path / "charxiv").mkdir()
    (tmp_path / "charxiv" / "charxiv-subfigures.json").write_text("{broken")
    samples, skips = load_benchmark("charxiv", tmp_path)
    assert samples == [] and skips.as_dict() == {"bad_json": 1}
    (tmp_path / "charxiv_images").mkdir()
    (tmp_path / "charxiv_images" / "f.png").write_bytes(png())
    write_json(
        tmp_path / "charxiv" / "charxiv-subfigures.json",
        [{"id": "7", "figure_path": "f.png", "prompt": "q?", "answer": 1}],
    )
    [sample], _ = load_benchmark("charxiv", tmp_path)
    assert sample.uid == "charxiv/7" and sample.answer == "1"


def test_registered_specs_and_missing_sets(tmp_path: Path) -> None:
    for name in PAPER_TEST_SETS:
        spec = BENCHMARKS[name]
        assert spec.hf_repo == "ReFocus/ReFocus_Data" and spec.metric == "accuracy"
        with pytest.raises(FileNotFoundError, match="make data") as info:
            load_benchmark(name, tmp_path)
        assert str(tmp_path / name) in str(info.value) and "ReFocus/ReFocus_Data" in str(info.value)
    assert [BENCHMARKS[n].answer_type for n in PAPER_TEST_SETS] == ["relaxed"] * 2 + ["wtq"] * 2 + [
        "tabfact",
        "charxiv",
    ]


# --- training sets --------------------------------------------------------------------------------------------


def test_refocus_chart_parquet_in_both_vtool_layouts(tmp_path: Path) -> None:
    expected = write_chart_parquet(tmp_path, "train")
    samples, skips = load_training_set("refocus_chart_train", tmp_path, split="train")
    assert [s.uid for s in samples] == expected["uids"] and skips.as_dict() == expected["skips"]
    horizontal, vertical, original = samples
    assert horizontal.meta["refocus"] == {
        "kind": "chart_h",
        "x_values": [],
        "y_values": [["Japan", [10.0, 20.0, 190.0, 50.0]], ["Korea", [10.0, 50.0, 190.0, 80.0]]],
    }
    assert vertical.category == "chart_v" and vertical.meta["refocus"]["x_values"] == [
        ["2019", [20.0, 10.0, 60.0, 90.0]]
    ]
    assert original.question == "How big is A?" and original.answer == "3" and original.category == "chart_v"
    assert original.meta["refocus"]["x_values"] == [["A", [20.0, 10.0, 60.0, 90.0]]]
    assert isinstance(horizontal.image, bytes) and load_image(horizontal.image).size == FIGURE
    assert (
        horizontal.answer_type == "relaxed"
        and horizontal.meta["row_key"] == "chartqa:chart_0:What is the value of Japan?"
    )
    with pytest.raises(ValueError, match="split must be one of train, test"):
        load_training_set("refocus_chart_train", tmp_path, split="val")
    with pytest.raises(FileNotFoundError, match="VTOOL/Refocus_Chart"):
        load_training_set("refocus_chart_train", tmp_path / "elsewhere")


def test_tablevqa_bench_subsets(tmp_path: Path) -> None:
    rows = {
        "vwtq": [{"qa_id": "nu-1", "question": "q?", "gt": "A|B", "image": {"bytes": png(), "path": None}}],
        "vtabfact": [
            {"qa_id": "t-1", "question": "s", "gt": 0, "image": {"bytes": png(), "path": None}},
            {"qa_id": "t-2", "question": "s", "gt": 2, "image": {"bytes": png(), "path": None}},
        ],
        "fintabnetqa": [{"qa_id": "f-1", "question": "q?", "gt": "$5", "image": {"bytes": None, "path": None}}],
    }
    write_tablevqa_bench(tmp_path, rows)
    samples, skips = load_training_set("tablevqa_bench", tmp_path, split="all")
    assert [(s.uid, s.answer, s.answer_type) for s in samples] == [
        ("tablevqa_bench/vwtq/nu-1", "A|B", "wtq"),
        ("tablevqa_bench/vtabfact/t-1", "false", "tabfact"),
    ]
    assert skips.as_dict() == {"missing_image": 1, "unknown_answer": 1}
    assert all("refocus" not in s.meta for s in samples)
    only, _ = load_training_set("tablevqa_bench", tmp_path, split="vwtq")
    assert [s.uid for s in only] == ["tablevqa_bench/vwtq/nu-1"]


@pytest.fixture
def table_root(tmp_path: Path) -> Path:
    """The three table files: vtabfact t-*, vwtq nu-1..nu-40, vwtq_syn nu-35..nu-50 (nu-35..nu-40 repeat)."""
    write_refocus_table(tmp_path, "tablevqa_vtabfact", tuple(f"t-{i}" for i in range(1, 21)))
    write_refocus_table(tmp_path, "tablevqa_vwtq", tuple(f"nu-{i}" for i in range(1, 41)))
    write_refocus_table(tmp_path, "tablevqa_vwtq_syn", tuple(f"nu-{i}" for i in range(35, 51)))
    return tmp_path


def _table_keys() -> list[str]:
    """The keys of `table_root` in VTool-R1's order (vtabfact, vwtq, vwtq_syn), each first occurrence only."""
    keys = []
    for name, ids in (
        ("tablevqa_vtabfact", [f"t-{i}" for i in range(1, 21)]),
        ("tablevqa_vwtq", [f"nu-{i}" for i in range(1, 41)]),
        ("tablevqa_vwtq_syn", [f"nu-{i}" for i in range(41, 51)]),  # nu-35..nu-40 were taken from vwtq
    ):
        keys += ids + [f"{name}-lost", f"{name}-uneven", f"{name}-bad"]
    return keys


def test_table_train_is_vtool_r1s_cut_of_the_deduplicated_files(table_root: Path) -> None:
    parts = vtool_r1_parts(_table_keys(), seed=42)
    loaded = {}
    for split in ("train", "heldout"):
        samples, skips = load_training_set("table_train", table_root, split=split, seed=42)
        bad = [key for key, part in parts.items() if part == split and key.startswith("tablevqa_")]
        counts = skips.as_dict()
        assert counts.pop("duplicate_question") == 6
        assert sum(counts.values()) == len(bad)  # a bad row is counted in its own part only
        loaded[split] = {s.meta["qa_id"] for s in samples}
        assert loaded[split] == {key for key, part in parts.items() if part == split and not key.startswith("table")}
        assert all(s.source == "table_train" and s.category in TABLE_TEST_SETS for s in samples)
    assert not loaded["train"] & loaded["heldout"]
    train, _ = load_training_set("table_train", table_root, split="train", seed=42)
    assert {
        s.category
        for s in train + load_training_set("table_train", table_root, "heldout", 42)[0]
        if s.meta["qa_id"] == "nu-36"
    } == {"tablevqa_vwtq"}  # the first file wins
    other, _ = load_training_set("table_train", table_root, split="train", seed=1)
    assert {s.meta["qa_id"] for s in other} != loaded["train"]
    unset = VQADataModule(root=str(table_root), train=[DataSpec("table_train", split="train")])
    [dataset] = unset.datasets_for("train")
    assert {s.meta["qa_id"] for s in dataset.samples} == loaded["train"]  # the seed defaults to VTool-R1's 42


def read_heldout(name: str, root: Path, seed: int, n: int | None = None) -> list:
    """The rows of a table test set that a data spec with `split: heldout` reads."""
    return load_rows(DataSpec(name, split="heldout", n=n, seed=seed), root, None, SkipLog())


def test_reported_heldout_rows_are_disjoint_from_table_train(table_root: Path) -> None:
    train, _ = load_training_set("table_train", table_root, split="train", seed=3)
    trained = {s.meta["row_key"] for s in train}
    for name in TABLE_TEST_SETS:
        full, _ = load_benchmark(name, table_root)
        heldout = read_heldout(name, table_root, seed=3)
        assert heldout and not {s.meta["row_key"] for s in heldout} & trained
        assert {s.meta["row_key"] for s in full} & trained  # the whole set does overlap
        assert len(read_heldout(name, table_root, seed=3, n=2)) == 2


def test_table_train_needs_the_three_files(tmp_path: Path) -> None:
    write_refocus_table(tmp_path, "tablevqa_vwtq")
    with pytest.raises(FileNotFoundError, match="tablevqa_vtabfact, tablevqa_vwtq_syn"):
        load_training_set("table_train", tmp_path)


# --- training on reported rows ----------------------------------------------------------------------------------


def spec(name: str, split: str = "test", seed: int = 0) -> DataSpec:
    return DataSpec(name, split=split, seed=seed)


@pytest.mark.parametrize(
    ("train", "reported", "overlaps"),
    [
        (spec("table_train", "train"), spec("tablevqa_vwtq"), 1),
        (spec("table_train", "train"), spec("tablevqa_vwtq", "heldout"), 0),
        (spec("table_train", "train", 1), spec("tablevqa_vwtq", "heldout", 2), 1),
        (spec("table_train", "heldout"), spec("tablevqa_vwtq", "heldout"), 1),
        (spec("tablevqa_bench", "vwtq"), spec("tablevqa_vwtq", "heldout"), 1),
        (spec("tablevqa_bench", "fintabnetqa"), spec("tablevqa_vwtq"), 0),
        (spec("refocus_chart_train", "train"), spec("chartqa_h_bar"), 0),
        (spec("refocus_chart_train", "test"), spec("chartqa_h_bar"), 1),
        (spec("refocus_chart_train", "test"), spec("chartqa"), 1),
        (spec("chartqa_v_bar"), spec("chartqa_v_bar"), 1),
        (spec("synthetic_charts", "train"), spec("chartqa_v_bar"), 0),
        (spec("table_train", "train"), spec("table_train", "heldout"), 0),
    ],
)
def test_reported_overlaps(train: DataSpec, reported: DataSpec, overlaps: int) -> None:
    assert len(reported_overlaps([train], [reported])) == overlaps


def test_data_module_refuses_training_on_reported_rows_unless_told(table_root: Path) -> None:
    train = [DataSpec("table_train", split="train", seed=0)]
    module = VQADataModule(root=str(table_root), train=train, test=[DataSpec("benchmarks")])
    with pytest.raises(ValueError, match=r"tablevqa_vwtq \(train@0 vs all\).*split: heldout"):
        module.datasets_for("val")  # checked before any stage loads, callbacks' early reads included
    disjoint = [DataSpec("paper_benchmarks", split="heldout", seed=0)]
    module = VQADataModule(root=str(table_root), train=train, val=train, test=disjoint)
    [dataset] = module.datasets_for("train")
    assert dataset.name == "table_train_train" and len(dataset) > 0
    assert sorted(d.name for d in module.datasets_for("test")) == sorted(TABLE_TEST_SETS)  # names kept
    assert module.selections["tablevqa_vwtq"]["excludes"].startswith("table_train split train, seed 0")
    assert module.selections["table_train_train"] == {"split": "train", "seed": 0, "rows": len(dataset)}
    everything = VQADataModule(
        root=str(table_root), train=[DataSpec("benchmarks")], test=[DataSpec("tablevqa_vtabfact")]
    )
    with pytest.raises(ValueError, match="training set tablevqa_vtabfact"):
        everything.datasets_for("train")
    twice = VQADataModule(root=str(table_root), test=[DataSpec("tablevqa_vwtq"), DataSpec("paper_benchmarks")])
    with pytest.raises(ValueError, match="data.test names tablevqa_vwtq twice"):
        twice.datasets_for("test")
    allowed = VQADataModule(
        root=str(table_root), train=train, test=[DataSpec("tablevqa_vwtq")], allow_train_test_overlap=True
    )
    with pytest.warns(UserWarning, match="allowed by data.allow_train_test_overlap"):
        assert allowed.datasets_for("train")


def test_data_module_reads_synthetic_charts_and_training_sets(tmp_path: Path) -> None:
    write_chart_parquet(tmp_path, "test")
    module = VQADataModule(
        root=str(tmp_path),
        train=[DataSpec("synthetic_charts", split="train", n=5)],
        val=[DataSpec("refocus_chart_train", split="test", n=2)],
    )
    [charts] = module.datasets_for("train")
    [parquet] = module.datasets_for("val")
    assert charts.name == "synthetic_charts_train" and len(charts) == 5 and "refocus" in charts.samples[0].meta
    assert parquet.name == "refocus_chart_train_test" and len(parquet) == 2
    assert module.load_skips["refocus_chart_train_test"] == {"bad_json": 1, "missing_field": 1}
    with pytest.raises(ValueError, match="table_train"):
        VQADataModule(root=str(tmp_path), test=[DataSpec("no_such_set")]).datasets_for("test")


# --- make data SETS=paper ---------------------------------------------------------------------------------------


def test_make_data_paper_offline_is_one_clear_line_per_entry(tmp_path: Path, monkeypatch, capsys) -> None:
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(repo_id: str, **kwargs) -> str:
        raise LocalEntryNotFoundError("outgoing traffic has been disabled.\nsecond line")

    monkeypatch.setattr(download, "snapshot_download", offline)
    assert download.main(["--sets", "paper", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert "Traceback" not in err and len(lines) == len(download.GROUPS["paper"]) == 10
    repos = {
        "chartqa_h_bar": "ReFocus/ReFocus_Data",
        "refocus_chart_train": "VTOOL/Refocus_Chart",
        "tablevqa_bench": "terryoo/TableVQA-Bench",
        "refocus_images": "ReFocus/ReFocus_Data",
        "charxiv_images": "princeton-nlp/CharXiv",
    }
    for name, repo in repos.items():
        [line] = [line for line in lines if line.startswith(f"error: {name}:")]
        assert repo in line and str(tmp_path / name) in line and "LocalEntryNotFoundError" in line


def test_set_names_and_groups() -> None:
    assert download.resolve_names("zoom") == [
        "vstar_bench",
        "hr_bench_4k",
        "hr_bench_8k",
        "mme_realworld_lite",
        "pope",
        "chartqa",
    ]
    zoom_after_pope = [name for name in download.GROUPS["zoom"] if name != "pope"]
    assert download.resolve_names("pope,zoom,charxiv") == ["pope", *zoom_after_pope, "charxiv"]
    assert download.resolve_names("all") == download.GROUPS["zoom"] + download.GROUPS["paper"]
    with pytest.raises(ValueError, match="built from the ReFocus table files"):
        download.resolve_names("table_train")
    with pytest.raises(SystemExit):
        download.main(["--sets", "nope"])


def test_download_fetches_json_and_unpacks_shared_archives(tmp_path: Path, monkeypatch, capsys) -> None:
    calls = []

    def fake_snapshot(repo_id: str, repo_type: str, allow_patterns: list[str], local_dir: Path) -> str:
        calls.append((repo_id, allow_patterns))
        local_dir = Path(local_dir)
        if repo_id == "ReFocus/ReFocus_Data" and allow_patterns == ["images/*"]:
            (local_dir / "images").mkdir(parents=True)
            with zipfile.ZipFile(local_dir / "images" / "charts.zip", "w") as bundle:
                bundle.writestr("chartqa/c1.png", png("white", FIGURE))
        else:
            refocus_json(local_dir, "chartQA_v_bar_wbb.json", {})
        return str(local_dir)

    monkeypatch.setattr(download, "snapshot_download", fake_snapshot)
    assert download.main(["--sets", "chartqa_v_bar,refocus_images", "--root", str(tmp_path)]) == 0
    assert calls == [
        ("ReFocus/ReFocus_Data", ["test_data_with_bounding_box*/chartQA_v_bar_wbb.json"]),
        ("ReFocus/ReFocus_Data", ["images/*"]),
    ]
    assert (tmp_path / "refocus_images" / "images" / "chartqa" / "c1.png").is_file()
    assert download.main(["--sets", "chartqa_v_bar,refocus_images", "--root", str(tmp_path)]) == 0
    assert len(calls) == 2 and capsys.readouterr().out.count("already present") == 2


def test_an_archive_member_outside_its_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    with zipfile.ZipFile(tmp_path / "images" / "evil.zip", "w") as bundle:
        bundle.writestr("../../escaped.png", b"x")
    with pytest.raises(download.DownloadError, match="outside"):
        download.unpack_archives(tmp_path)
    assert not (tmp_path.parent / "escaped.png").exists()


# --- evaluation on the six sets ---------------------------------------------------------------------------------


def test_evaluation_writes_results_for_each_paper_set(tmp_path: Path, monkeypatch) -> None:
    data_root = tmp_path / "data"
    expected = write_paper_sets(data_root)
    monkeypatch.chdir(tmp_path)
    cli = load_cli().main(
        [
            "test",
            "--config",
            str(ROOT / "configs" / "eval.yaml"),
            "--config",
            str(ROOT / "configs" / "tiny.yaml"),
            f"--data.root={data_root}",
            "--data.num_workers=0",
            "--trainer.enable_progress_bar=false",
            "--model.init_args.label=tiny-paper",
            "--model.init_args.sampling.max_new_tokens=8",
            "--model.init_args.sampling.max_turns=1",
        ]
    )
    [run] = [
        p for p in (tmp_path / "logs" / "eval").iterdir() if p.name.startswith(cli.model.evaluation_results()["label"])
    ]
    results = json.loads((run / "results.json").read_text())
    assert set(results["benchmarks"]) == set(PAPER_TEST_SETS)
    for name, bench in results["benchmarks"].items():
        assert bench["rows_scored"] == len(expected[name]["uids"]), name
        assert bench["rows_skipped"] == expected[name]["skips"], name


@pytest.mark.parametrize("overlay", [(), ("grpo.yaml",)], ids=["iapo", "grpo"])
def test_the_paper_configuration_trains_on_data_in_the_documented_layout(tmp_path: Path, monkeypatch, overlay) -> None:
    """`fit --config configs/iapo.yaml [--config configs/grpo.yaml] --config configs/tiny.yaml --data.offline=null
    --data.root DIR`: the shipped configuration trains on the six test files' layout, VTool-R1's chart parquet (both
    layouts) and TableVQA-Bench, bad rows included, and reports only rows it did not train on."""
    data_root = tmp_path / "data"
    write_paper_sets(data_root)
    write_chart_parquet(data_root)
    monkeypatch.chdir(tmp_path)
    configs = [
        arg for name in ("iapo.yaml", *overlay, "tiny.yaml") for arg in ("--config", str(ROOT / "configs" / name))
    ]
    cli = load_cli().main(
        ["fit", *configs, "--data.offline=null", f"--data.root={data_root}", "--trainer.max_steps=2"]
        + ["--trainer.enable_progress_bar=false"]
    )
    assert cli.trainer.global_step == 2
    trained = {d.name for d in cli.datamodule.datasets_for("train")}
    assert trained == {"refocus_chart_train_train", "table_train_train"}
    assert cli.datamodule.selections["table_train_train"]["seed"] == 42
