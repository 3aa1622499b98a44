"""The paper setting's data under careless files: one bad record is one counted skip, never a lost file or a crashed
loader (huge numbers, long or NUL-holding figure paths, a byte-order mark, bad bytes, repeated ids), a corrupt
parquet names its file, JSONL rows are checked for the paper setting, normalised boxes slightly past the edge stay
normalised, and EXIF-rotated figures get their boxes in the upright frame."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from helpers.data_files import png, write_parquet
from helpers.paper_files import FIGURE, box, table_record
from iapo.agent.tools import ToolCall, ToolContext, run_tool
from iapo.data.benchmarks import load_benchmark
from iapo.data.benchmarks.paper_training_sets import load_training_set
from iapo.data.benchmarks.readers import UnreadableFileError
from iapo.data.jsonl import read_jsonl
from iapo.data.sample import SkipLog, load_image


def table_set(root: Path, records: dict | str | bytes, figure: bytes | None = None) -> Path:
    """``tablevqa_vwtq`` with one figure ``a.png`` (or `figure`) and a test file of `records` (or raw text/bytes)."""
    set_dir = root / "tablevqa_vwtq"
    (set_dir / "images").mkdir(parents=True)
    (set_dir / "images" / "a.png").write_bytes(figure or png("white", FIGURE))
    path = set_dir / "tablevqa_wbb.json"
    data = records if isinstance(records, str | bytes) else json.dumps(records)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def good(answer: str = "Joe", **changes) -> dict:
    return table_record("a.png", answer, **changes)


# ---------------------------------------------------------------- one record, one skip


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (good(columns_bbox=[box(0, 0, 0.5, 1), {"x1": 10**400, "y1": 0, "x2": 1, "y2": 1}]), "bad_boxes"),
        (good(columns_bbox=[box(0, 0, 0.5, 1), [0, 0, -(10**500), 1]]), "bad_boxes"),
        (good(columns_bbox=[box(0, 0, 0.5, 1), [0, 0, 1e400, 1]]), "bad_boxes"),  # json reads 1e400 as inf
        (good(figure_path="x" * 300 + ".png"), "missing_image"),  # too long for the file system
        (good(figure_path="a/" * 3000 + "b.png"), "missing_image"),
        (good(figure_path="images/a\x00.png"), "missing_image"),
        (good(columns_bbox=[box(0, 0, 90, 100), box(300, 0, 400, 100)]), "bad_boxes"),  # pixels outside the image
    ],
)
def test_one_bad_record_costs_that_record(tmp_path: Path, bad: dict, reason: str) -> None:
    table_set(tmp_path, {"a": good(), "b": bad, "c": good()})
    samples, skips = load_benchmark("tablevqa_vwtq", tmp_path)
    assert [s.uid for s in samples] == ["tablevqa_vwtq/a", "tablevqa_vwtq/c"] and skips.as_dict() == {reason: 1}


def test_an_integer_longer_than_int_reads_costs_only_its_record(tmp_path: Path) -> None:
    text = json.dumps({"a": good(), "b": good(), "c": good()}).replace('"x2": 1.0', '"x2": 1' + "0" * 5000, 1)
    table_set(tmp_path, text)
    samples, skips = load_benchmark("tablevqa_vwtq", tmp_path)
    assert len(samples) == 2 and skips.as_dict() == {"bad_boxes": 1}


def test_a_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    table_set(tmp_path, b"\xef\xbb\xbf" + json.dumps({"a": good(), "b": good()}).encode())
    samples, skips = load_benchmark("tablevqa_vwtq", tmp_path)
    assert len(samples) == 2 and skips.total == 0


@pytest.mark.parametrize("byte", [b"\xff", b"\xc3", b"\xed\xa0\x80"])
def test_a_byte_that_is_not_utf8_costs_its_record(tmp_path: Path, byte: bytes) -> None:
    text = json.dumps({"a": good(), "b": good(query="Who won in 19@@?"), "c": good()}).encode()
    table_set(tmp_path, text.replace(b"@@", byte))
    samples, skips = load_benchmark("tablevqa_vwtq", tmp_path)
    assert [s.uid for s in samples] == ["tablevqa_vwtq/a", "tablevqa_vwtq/c"] and skips.as_dict() == {"bad_encoding": 1}


def test_a_repeated_id_is_counted_and_the_last_record_read(tmp_path: Path) -> None:
    first, again = json.dumps(good(answer="first")), json.dumps(good(answer="last"))
    text = f'{{"a": {first}, "b": {json.dumps(good())}, "a": {first}, "a": {again}}}'
    table_set(tmp_path, text)
    samples, skips = load_benchmark("tablevqa_vwtq", tmp_path)
    assert [s.uid for s in samples] == ["tablevqa_vwtq/a", "tablevqa_vwtq/b"]  # as json.load reads the file
    assert samples[0].answer == "last" and skips.as_dict() == {"duplicate_uid": 2}


# ---------------------------------------------------------------- boxes: normalised or pixels, upright frame


@pytest.mark.parametrize("edge", [1.0001, 1.02, -0.0001, -0.03])
def test_normalised_boxes_slightly_past_the_edge_stay_normalised(tmp_path: Path, edge: float) -> None:
    boxes = [box(0.0, 0.0, 0.5, 1.0), box(0.5, 0.0, edge if edge > 1 else 1.0, 1.0)]
    if edge < 0:
        boxes = [box(edge, 0.0, 0.5, 1.0), box(0.5, 0.0, 1.0, 1.0)]
    table_set(tmp_path, {"a": good(columns_bbox=boxes)})
    [sample], _ = load_benchmark("tablevqa_vwtq", tmp_path)
    (_, first), (_, second) = sample.meta["refocus"]["columns"]
    assert first[2] == 100.0 and second[0] == 100.0  # 0.5 of the 200 px width, not half a pixel
    image = load_image(sample.image)
    edit = ToolCall("focus_on_columns_with_mask", {"columns_to_focus_on": ["Year"]})
    result = run_tool(edit, ToolContext(image, image.size[::-1], meta=sample.meta), "table")
    assert result.error is None and result.image.getpixel((150, 50)) == (255, 255, 255)


def rotated_jpeg(size: tuple[int, int], orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.new("RGB", size, "white").save(buffer, format="JPEG", exif=exif)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("orientation", "upright"), [(1, (200, 100)), (3, (200, 100)), (6, (100, 200)), (8, (100, 200))]
)
def test_boxes_of_an_exif_rotated_figure_are_in_the_decoded_image_frame(tmp_path, orientation, upright) -> None:
    table_set(tmp_path, {"a": good()}, figure=rotated_jpeg((200, 100), orientation))
    [sample], skips = load_benchmark("tablevqa_vwtq", tmp_path)
    image = load_image(sample.image)
    assert image.size == upright and skips.total == 0
    width, height = upright
    assert sample.meta["refocus"]["columns"][1][1] == [width / 2, 0.0, float(width), float(height)]
    edit = ToolCall("focus_on_columns_with_draw", {"columns_to_focus_on": ["Name"]})
    result = run_tool(edit, ToolContext(image, image.size[::-1], meta=sample.meta), "table")
    assert result.error is None and result.image.getpixel((width - 5, height // 2)) == (255, 0, 0)


# ---------------------------------------------------------------- a corrupt parquet names its file


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_a_corrupt_tablevqa_parquet_names_the_file(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "tablevqa_bench" / "data" / "vwtq-00000-of-00001-x.parquet"
    rows = [{"qa_id": "nu-1", "question": "q?", "gt": "A", "image": {"bytes": png(), "path": None}}]
    write_parquet(path, rows)
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"PAR1" + b"\x00" * 64, "empty": b""}[damage])
    with pytest.raises(UnreadableFileError, match="vwtq-00000-of-00001-x.parquet"):
        load_training_set("tablevqa_bench", tmp_path, split="vwtq")


# ---------------------------------------------------------------- JSONL rows of the paper setting


def jsonl_rows(tmp_path: Path, rows: list[dict]) -> tuple[list, SkipLog]:
    (tmp_path / "a.png").write_bytes(png("white", FIGURE))
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps({"image": "a.png", "question": "q?", **row}) for row in rows))
    skips = SkipLog()
    return read_jsonl(path, skips=skips), skips


GOOD_REFOCUS = {"kind": "table", "columns": [["Year", [0, 0, 100, 100]]], "rows": [["Year", [0, 0, 200, 50]]]}


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"answer": "x", "meta": {"refocus": [["Year", [0, 0, 1, 1]]]}}, "bad_boxes"),
        ({"answer": "x", "meta": {"refocus": {"columns": {"Year": [0, 0, 10, 10]}}}}, "bad_boxes"),
        ({"answer": "x", "meta": {"refocus": {"columns": [["Year", ["0", "0", "10", "10"]]]}}}, "bad_boxes"),
        ({"answer": "x", "meta": {"refocus": {"columns": [["Year", [0, 0, True, 10]]]}}}, "bad_boxes"),
        ({"answer": "x", "meta": {"refocus": {"columns": [["Year", [0, 0, 10]]]}}}, "bad_boxes"),
        ({"answer": "x", "meta": {"refocus": {"columns": [[1972, [0, 0, 10, 10]]]}}}, "bad_boxes"),
        ({"answer": "x", "meta": {"refocus": {"rows": [["Year", [0, 0, 10**400, 10]]]}}}, "bad_boxes"),
        ({"answer": "x", "meta": {"refocus": {"rows": [["Year", [10, 0, 0, 10]]]}}}, "bad_boxes"),
        ({"answer": "x", "meta": {"refocus": {"kind": "pie", "rows": []}}}, "bad_boxes"),
        ({"answer": "maybe", "answer_type": "tabfact"}, "unknown_answer"),
        ({"answer": "yes", "answer_type": "tabfact"}, "unknown_answer"),
        ({"answer": 2, "answer_type": "tabfact"}, "unknown_answer"),
    ],
)
def test_jsonl_rows_of_the_paper_setting_are_checked_when_read(tmp_path: Path, row: dict, reason: str) -> None:
    ok = {"answer": "1972", "answer_type": "wtq", "meta": {"refocus": GOOD_REFOCUS}}
    samples, skips = jsonl_rows(tmp_path, [ok, row, ok])
    assert len(samples) == 2 and skips.as_dict() == {reason: 1}


def test_jsonl_lines_with_huge_integers_or_deep_nesting_cost_their_row(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png("white", FIGURE))
    good_line = json.dumps({"image": "a.png", "question": "q?", "answer": "1"})
    huge = '{"image": "a.png", "question": "q?", "answer": 1' + "0" * 5000 + "}"
    deep = "[" * 100_000 + "]" * 100_000
    (tmp_path / "train.jsonl").write_text("\n".join([good_line, huge, deep, good_line]))
    skips = SkipLog()
    assert len(read_jsonl(tmp_path / "train.jsonl", skips=skips)) == 2 and skips.as_dict() == {"bad_json": 2}


def test_vtool_chart_metadata_with_a_huge_integer_costs_its_row(tmp_path: Path) -> None:
    image = {"bytes": png("white", FIGURE), "path": None}
    rows = [
        {"id": f"c{i}", "source": "v_bar", "query": "q?", "answer": "3", "images": [image], "metadata": metadata}
        for i, metadata in enumerate(
            ['{"x_values_bbox": {"A": [0, 0, 50, 50]}}', '{"x_values_bbox": {"A": [0, 0, 5' + "0" * 5000 + ", 50]}}"]
        )
    ]
    write_parquet(tmp_path / "refocus_chart_train" / "train.parquet", rows)
    samples, skips = load_training_set("refocus_chart_train", tmp_path, split="train")
    assert len(samples) == 1 and skips.as_dict() == {"bad_boxes": 1}


@pytest.mark.parametrize(("answer", "stored"), [("True", "true"), (1, "true"), (True, "true"), ("0", "false")])
def test_jsonl_tabfact_answers_are_stored_as_true_or_false(tmp_path: Path, answer, stored: str) -> None:
    [sample], skips = jsonl_rows(tmp_path, [{"answer": answer, "answer_type": "tabfact"}])
    assert sample.answer == stored and skips.total == 0
