"""The six test-set adapters on small fixtures written in each official layout, and the download command."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from helpers.data_files import b64, hr_rows, make_vstar, png, write_json, write_parquet
from iapo.data import download
from iapo.data.benchmarks import BENCHMARKS, is_present, load_benchmark, zoom_sets
from iapo.data.benchmarks.paper_test_sets import PAPER_TEST_SETS
from iapo.data.sample import BadRowError, SkipLog, load_image

# --- V* Bench -------------------------------------------------------------------------------------------------------


def test_vstar_bench_official_layout(tmp_path: Path) -> None:
    make_vstar(tmp_path)
    samples, skips = load_benchmark("vstar_bench", tmp_path)
    assert [s.uid for s in samples] == [
        "vstar_bench/direct_attributes/sa_1",
        "vstar_bench/direct_attributes/sa_2",
        "vstar_bench/relative_position/sa_9",
    ]
    assert skips.as_dict() == {"bad_json": 1, "missing_field": 1, "missing_image": 1}
    first = samples[0]
    assert first.answer_type == "mcq" and first.category == "direct_attributes" and first.source == "vstar_bench"
    assert sorted(first.options) == ["black", "blue", "red", "white"]
    assert first.letters == ("A", "B", "C", "D")
    assert first.options[first.letters.index(first.answer)] == "white"  # the first official option is correct
    assert first.meta["bbox"] == [[10.0, 20.0, 40.0, 60.0]] and first.meta["target_object"] == ["shirt"]
    assert load_image(first.image).size == (8, 6)
    relative = samples[2]
    assert relative.options[relative.letters.index(relative.answer)] == "The dog is on the left of the cat."
    assert relative.meta["bbox"] == [[0.0, 0.0, 2.0, 2.0], [4.0, 4.0, 6.0, 6.0]]


def test_vstar_option_shuffle_is_per_uid_and_stable(tmp_path: Path) -> None:
    base = tmp_path / "vstar_bench"
    (base / "relative_position").mkdir(parents=True)
    for i in range(12):
        (base / "direct_attributes" / f"q{i}.jpg").parent.mkdir(parents=True, exist_ok=True)
        (base / "direct_attributes" / f"q{i}.jpg").write_bytes(png())
        write_json(
            base / "direct_attributes" / f"q{i}.json",
            {"target_object": ["o"], "bbox": [[0, 0, 1, 1]], "question": "q?", "options": list("wxyz")},
        )
    (base / "relative_position" / "r.jpg").write_bytes(png())
    write_json(
        base / "relative_position" / "r.json",
        {"target_object": ["o"], "bbox": [0, 0, 1, 1], "question": "q?", "options": ["p", "q"]},
    )
    first, _ = load_benchmark("vstar_bench", tmp_path)
    again, _ = load_benchmark("vstar_bench", tmp_path)
    assert [(s.options, s.answer) for s in first] == [(s.options, s.answer) for s in again]
    assert len({s.answer for s in first}) > 1  # the correct letter is not always A
    assert all(s.options[s.letters.index(s.answer)] in ("w", "p") for s in first)
    assert first[-1].meta["bbox"] == [[0.0, 0.0, 1.0, 1.0]]  # a single box is accepted too


# --- HR-Bench -------------------------------------------------------------------------------------------------------


def test_hr_bench_parquet(tmp_path: Path) -> None:
    write_parquet(tmp_path / "hr_bench_4k" / "hr_bench_4k.parquet", hr_rows())
    samples, skips = load_benchmark("hr_bench_4k", tmp_path)
    assert [s.uid for s in samples] == ["hr_bench_4k/0", "hr_bench_4k/1", "hr_bench_4k/2"]
    assert skips.as_dict() == {"duplicate_uid": 1, "missing_field": 1, "missing_image": 1, "unknown_answer": 1}
    assert [s.answer for s in samples] == ["A", "B", "C"]
    assert samples[0].options == ("red", "blue", "green", "white")
    assert samples[0].category == "FSP" and samples[0].meta["cycle_category"] == "cycle_1"
    assert isinstance(samples[0].image, str) and samples[0].image.startswith("base64:")
    assert samples[0].image is samples[2].image  # a repeated image is held once
    assert load_image(samples[1].image).getpixel((0, 0)) == (0, 0, 255)


def test_hr_bench_tsv_with_image_references(tmp_path: Path) -> None:
    rows = hr_rows()[:3]
    rows[2]["image"] = "0"  # VLMEvalKit convention: the image of row index 0
    path = tmp_path / "hr_bench_8k" / "hr_bench_8k.tsv"
    path.parent.mkdir(parents=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    samples, skips = load_benchmark("hr_bench_8k", tmp_path)
    assert len(samples) == 3 and skips.total == 0
    assert samples[2].image is samples[0].image
    assert samples[1].answer == "B" and samples[1].meta["index"] == "1"


def test_undecodable_embedded_image_fails_lazily(tmp_path: Path) -> None:
    rows = hr_rows()[:1]
    rows[0]["image"] = b64(b"this is not an image, but long enough to be base64 image data, surely" * 2)
    write_parquet(tmp_path / "hr_bench_4k" / "hr_bench_4k.parquet", rows)
    samples, skips = load_benchmark("hr_bench_4k", tmp_path)
    assert len(samples) == 1 and skips.total == 0  # decoding is not done at load time
    with pytest.raises(BadRowError, match="undecodable image"):
        load_image(samples[0].image)


# --- MME-RealWorld-Lite ---------------------------------------------------------------------------------------------


def test_mme_realworld_lite_parquet(tmp_path: Path) -> None:
    options = ["(A) 1", "(B) 2", "(C) 3", "(D) 4", "(E) The image does not feature the object"]
    row = {
        "question": "How many cars?",
        "multi-choice options": options,
        "category": "Perception/Monitoring",
        "l2-category": "counting",
        "bytes": b64(png()),
    }
    rows = [
        {**row, "index": 10, "answer": "C"},
        {**row, "index": 11, "answer": "E", "category": "Reasoning/Autonomous_Driving"},
        {**row, "index": 12, "answer": "F"},
        {**row, "index": 13, "answer": "A", "bytes": None},
        {**row, "index": 14, "answer": "A", "multi-choice options": ["(A) x"]},
    ]
    write_parquet(tmp_path / "mme_realworld_lite" / "data" / "train-00000-of-00001.parquet", rows)
    samples, skips = load_benchmark("mme_realworld_lite", tmp_path)
    assert [s.uid for s in samples] == ["mme_realworld_lite/10", "mme_realworld_lite/11"]
    assert skips.as_dict() == {"missing_field": 1, "missing_image": 1, "unknown_answer": 1}
    assert samples[0].options == ("1", "2", "3", "4", "The image does not feature the object")
    assert samples[0].letters == tuple("ABCDE") and samples[0].answer == "C"
    assert samples[1].category == "Reasoning/Autonomous_Driving" and samples[0].meta["l2_category"] == "counting"
    assert load_image(samples[0].image).size == (8, 6)


# --- POPE -----------------------------------------------------------------------------------------------------------


def test_pope_official_layout(tmp_path: Path) -> None:
    base = tmp_path / "pope"
    (base / "val2014").mkdir(parents=True)
    (base / "val2014" / "COCO_val2014_000000000001.jpg").write_bytes(png())
    lines = [
        {
            "question_id": 1,
            "image": "COCO_val2014_000000000001.jpg",
            "text": "Is there a dog in the image?",
            "label": "yes",
        },
        {
            "question_id": 2,
            "image": "COCO_val2014_000000000001.jpg",
            "text": "Is there a cat in the image?",
            "label": "no",
        },
        {"question_id": 3, "image": "COCO_val2014_000000000001.jpg", "text": "Is there a bus?", "label": "maybe"},
        {"question_id": 4, "image": "COCO_val2014_000000000404.jpg", "text": "Is there a car?", "label": "no"},
    ]
    (base / "coco").mkdir()
    (base / "coco" / "coco_pope_random.json").write_text("\n".join(json.dumps(line) for line in lines) + "\n{broken\n")
    (base / "coco" / "coco_pope_adversarial.json").write_text(json.dumps(lines[0]) + "\n")
    samples, skips = load_benchmark("pope", tmp_path)
    assert [s.uid for s in samples] == ["pope/adversarial/1", "pope/random/1", "pope/random/2"]
    assert skips.as_dict() == {"bad_json": 1, "missing_image": 1, "unknown_answer": 1}
    assert samples[2].answer == "no" and samples[2].answer_type == "yes_no" and samples[2].options == ()
    assert samples[1].question == "Is there a dog in the image?" and samples[1].category == "random"
    assert Path(samples[1].image).name == "COCO_val2014_000000000001.jpg"


def test_pope_lmms_lab_parquet(tmp_path: Path) -> None:
    image = {"bytes": png(), "path": "x.jpg"}
    rows = [
        {
            "id": "0",
            "question_id": "1",
            "question": "Is there a dog in the image?",
            "answer": "Yes",
            "image_source": "COCO_val2014_1",
            "image": image,
            "category": "adversarial",
        },
        {
            "id": "1",
            "question_id": "1",
            "question": "Is there a dog in the image?",
            "answer": "no",
            "image_source": "COCO_val2014_1",
            "image": image,
            "category": "popular",
        },
        {
            "id": "2",
            "question_id": "2",
            "question": "Is there a cat?",
            "answer": "no",
            "image_source": "COCO_val2014_1",
            "image": {"bytes": None, "path": None},
            "category": "popular",
        },
    ]
    write_parquet(tmp_path / "pope" / "data" / "test-00000-of-00001.parquet", rows)
    samples, skips = load_benchmark("pope", tmp_path)
    assert [(s.uid, s.answer) for s in samples] == [("pope/adversarial/1", "yes"), ("pope/popular/1", "no")]
    assert skips.as_dict() == {"missing_image": 1}
    assert isinstance(samples[0].image, bytes) and load_image(samples[0].image).size == (8, 6)


# --- ChartQA --------------------------------------------------------------------------------------------------------


def test_chartqa_official_layout(tmp_path: Path) -> None:
    test = tmp_path / "chartqa" / "test"
    (test / "png").mkdir(parents=True)
    (test / "png" / "41699051005347.png").write_bytes(png())
    write_json(
        test / "test_human.json",
        [
            {"imgname": "41699051005347.png", "query": "What is the highest value?", "label": "62"},
            {"imgname": "41699051005347.png", "query": "Which year?"},
        ],
    )
    write_json(
        test / "test_augmented.json",
        [
            {"imgname": "41699051005347.png", "query": "What share is blue?", "label": "40%"},
            {"imgname": "missing.png", "query": "Which colour?", "label": "red"},
        ],
    )
    samples, skips = load_benchmark("chartqa", tmp_path)
    assert [(s.uid, s.answer, s.category) for s in samples] == [
        ("chartqa/human/1", "62", "human"),
        ("chartqa/augmented/1", "40%", "augmented"),
    ]
    assert skips.as_dict() == {"missing_field": 1, "missing_image": 1}
    assert samples[0].answer_type == "relaxed" and samples[0].question == "What is the highest value?"


def test_chartqa_huggingface_mirror(tmp_path: Path) -> None:
    image = {"bytes": png(), "path": None}
    rows = [
        {"image": image, "query": "Highest value?", "label": ["62"], "human_or_machine": 0},
        {"image": image, "query": "Share?", "label": ["40%"], "human_or_machine": 1},
        {"image": image, "query": "No label", "label": [], "human_or_machine": 1},
    ]
    write_parquet(tmp_path / "chartqa" / "data" / "test-00000-of-00001-abc.parquet", rows)
    samples, skips = load_benchmark("chartqa", tmp_path)
    assert [(s.answer, s.category) for s in samples] == [("62", "human"), ("40%", "augmented")]
    assert samples[1].meta["answers"] == ["40%"]
    assert skips.as_dict() == {"missing_field": 1}


# --- common behaviour -----------------------------------------------------------------------------------------------


def test_strict_mode_raises_naming_file_and_row(tmp_path: Path) -> None:
    write_parquet(tmp_path / "hr_bench_4k" / "hr_bench_4k.parquet", hr_rows())
    with pytest.raises(BadRowError, match=r"hr_bench_4k\.parquet:4: unknown_answer"):
        load_benchmark("hr_bench_4k", tmp_path, strict=True)


def test_missing_set_names_path_and_make_data(tmp_path: Path) -> None:
    for name in BENCHMARKS:
        with pytest.raises(FileNotFoundError) as info:
            load_benchmark(name, tmp_path)
        message = str(info.value)
        assert str(tmp_path / name) in message and "make data" in message and BENCHMARKS[name].hf_repo in message
    with pytest.raises(FileNotFoundError, match="make data"):
        zoom_sets.load_pope(tmp_path / "pope", SkipLog())
    with pytest.raises(ValueError, match="unknown benchmark"):
        load_benchmark("mmbench", tmp_path)


def test_limit_gives_a_deterministic_subset_in_file_order(tmp_path: Path) -> None:
    row = hr_rows()[0]
    write_parquet(tmp_path / "hr_bench_4k" / "hr_bench_4k.parquet", [{**row, "index": i} for i in range(30)])
    full, _ = load_benchmark("hr_bench_4k", tmp_path)
    first, _ = load_benchmark("hr_bench_4k", tmp_path, limit=10, seed=1)
    again, _ = load_benchmark("hr_bench_4k", tmp_path, limit=10, seed=1)
    other, _ = load_benchmark("hr_bench_4k", tmp_path, limit=10, seed=2)
    uids = [s.uid for s in first]
    assert len(uids) == 10 and uids == [s.uid for s in again] and uids != [s.uid for s in other]
    assert uids == [s.uid for s in full if s.uid in set(uids)]
    assert len(load_benchmark("hr_bench_4k", tmp_path, limit=100)[0]) == 30


def test_registry_is_consistent() -> None:
    zoom = {"vstar_bench", "hr_bench_4k", "hr_bench_8k", "mme_realworld_lite", "pope", "chartqa"}
    assert set(BENCHMARKS) == zoom | set(PAPER_TEST_SETS)
    for name, spec in BENCHMARKS.items():
        assert spec.name == name and spec.loader.__name__.startswith("load_")
        assert spec.metric in ("accuracy", "hr_bench", "pope") and spec.hf_files and spec.layouts


# --- download -------------------------------------------------------------------------------------------------------


def test_download_offline_is_one_clear_line_per_set(tmp_path: Path, monkeypatch, capsys) -> None:
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(repo_id: str, **kwargs) -> str:
        raise LocalEntryNotFoundError("outgoing traffic has been disabled.\nsecond line")

    monkeypatch.setattr(download, "snapshot_download", offline)
    assert download.main(["--sets", "pope,chartqa", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 2 and "Traceback" not in err
    assert "lmms-lab/POPE" in lines[0] and str(tmp_path / "pope") in lines[0] and "LocalEntryNotFoundError" in lines[0]
    assert "HuggingFaceM4/ChartQA" in lines[1]


def test_download_fetches_verifies_and_skips_present_sets(tmp_path: Path, monkeypatch, capsys) -> None:
    calls = []

    def fake_snapshot(repo_id: str, repo_type: str, allow_patterns: list[str], local_dir: Path) -> str:
        calls.append((repo_id, repo_type, allow_patterns))
        write_parquet(Path(local_dir) / "hr_bench_4k.parquet", hr_rows()[:1])
        return str(local_dir)

    monkeypatch.setattr(download, "snapshot_download", fake_snapshot)
    assert download.main(["--sets", "hr_bench_4k", "--root", str(tmp_path)]) == 0
    assert calls == [("DreamMr/HR-Bench", "dataset", ["hr_bench_4k.parquet"])]
    assert "downloaded hr_bench_4k: 1 files" in capsys.readouterr().out
    assert download.main(["--sets", "hr_bench_4k", "--root", str(tmp_path)]) == 0
    assert len(calls) == 1 and "already present" in capsys.readouterr().out
    assert is_present(BENCHMARKS["hr_bench_4k"], tmp_path / "hr_bench_4k")


def test_download_reports_a_download_without_the_expected_files(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(download, "snapshot_download", lambda repo_id, **kwargs: str(kwargs["local_dir"]))
    with pytest.raises(download.DownloadError, match="found no data/test-\\*.parquet"):
        download.download_set("chartqa", tmp_path)
