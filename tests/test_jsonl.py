"""Tests for iapo.data.jsonl: the generic JSONL reader, its answer conversion and its counted skipping of bad rows."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from PIL import Image

from iapo.data.jsonl import read_jsonl
from iapo.data.sample import BadRowError, SkipLog, load_image

OPTIONS = ["red", "blue", "green"]


def _write_jsonl(path: Path, lines: list[str | dict]) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (8, 6), (200, 10, 10)).save(tmp_path / "imgs" / "a.png")
    (tmp_path / "imgs" / "not_an_image.png").write_bytes(b"this is not a PNG")
    return tmp_path


@pytest.fixture()
def mixed_file(data_dir: Path) -> Path:
    """Good rows and bad rows of every kind; the comment after each gives its line number."""
    absolute = str(data_dir / "imgs" / "a.png")
    rows: list[str | dict] = [
        {"image": "imgs/a.png", "question": "Colour?", "options": OPTIONS, "answer": "B", "id": 17},  # 1
        {"image": "imgs/a.png", "question": "Colour?", "options": OPTIONS, "answer": " green "},  # 2
        {"image": absolute, "question": "How many?", "answer": 3, "category": "count", "meta": {"bbox": [1, 2]}},  # 3
        "",  # 4: blank, ignored
        '{"image": "imgs/a.png", "question": "broken"',  # 5: bad_json
        "[1, 2, 3]",  # 6: bad_json (not an object)
        {"image": "imgs/a.png", "answer": "A", "options": OPTIONS},  # 7: missing_field (question)
        {"image": "imgs/a.png", "question": "Colour?", "answer": "A", "answer_type": "mcq"},  # 8: missing_field
        {"image": "imgs/missing.png", "question": "Colour?", "options": OPTIONS, "answer": "A"},  # 9: missing_image
        {"image": "imgs/a.png", "question": "Colour?", "options": OPTIONS, "answer": "D"},  # 10: unknown_answer
        {"image": "imgs/a.png", "question": "Colour?", "options": OPTIONS, "answer": "purple"},  # 11: unknown_answer
        {"image": "imgs/a.png", "question": "Colour?", "options": "red, blue", "answer": "A"},  # 12: bad_field
        {"image": "imgs/a.png", "question": "Is it red?", "answer": "Yes", "answer_type": "yes_no"},  # 13
        {"image": "imgs/not_an_image.png", "question": "Lazy?", "answer": "x"},  # 14: kept, decoding is lazy
    ]
    return _write_jsonl(data_dir / "mixed.jsonl", rows)


def test_reads_good_rows_and_counts_bad_rows_by_reason(mixed_file: Path, data_dir: Path):
    skips = SkipLog()
    samples = read_jsonl(mixed_file, source="mine", skips=skips)
    assert skips.as_dict() == {
        "bad_field": 1,
        "bad_json": 2,
        "missing_field": 2,
        "missing_image": 1,
        "unknown_answer": 2,
    }
    assert skips.examples["missing_image"].startswith(f"{mixed_file}:9: missing_image")
    assert [s.uid for s in samples] == ["17", "mine-2", "mine-3", "mine-13", "mine-14"]
    assert all(s.source == "mine" for s in samples)
    letter, text, exact, yes_no, lazy = samples
    assert (letter.answer, letter.answer_type, letter.options) == ("B", "mcq", tuple(OPTIONS))
    assert (text.answer, text.answer_type) == ("C", "mcq")  # option text converted to its letter
    assert (exact.answer, exact.answer_type, exact.options) == ("3", "exact", ())
    assert (exact.category, exact.meta) == ("count", {"bbox": [1, 2]})
    assert (yes_no.answer, yes_no.answer_type) == ("yes", "yes_no")
    image_path = str((data_dir / "imgs" / "a.png").resolve())
    assert letter.image == text.image == exact.image == image_path  # relative and absolute paths resolve alike
    assert load_image(letter.image).size == (8, 6)
    with pytest.raises(BadRowError, match="undecodable"):  # only decoding finds a broken image file
        load_image(lazy.image)


def test_letter_and_option_text_answers_agree(data_dir: Path):
    base = {"image": "imgs/a.png", "question": "Colour?", "options": [" Red", "blue", "green"]}
    answers = ["A", "Red", " red ", "B", "blue", "BLUE", "C", "green"]
    path = _write_jsonl(data_dir / "answers.jsonl", [{**base, "answer": answer} for answer in answers])
    assert [s.answer for s in read_jsonl(path, skips=SkipLog(strict=True))] == list("AAABBBCC")


def test_strict_mode_raises_on_the_first_bad_row_naming_file_and_line(mixed_file: Path):
    with pytest.raises(BadRowError) as info:
        read_jsonl(mixed_file, skips=SkipLog(strict=True))
    assert f"{mixed_file}:5" in str(info.value) and "bad_json" in str(info.value)


def test_without_a_skip_log_the_skips_are_reported(mixed_file: Path, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger="iapo.data.jsonl"):
        samples = read_jsonl(mixed_file)
    assert len(samples) == 5 and samples[1].source == "mixed"  # default source: the file's stem
    assert "skipped 8 bad rows" in caplog.text


def test_missing_file_is_a_clear_error(tmp_path: Path):
    missing = tmp_path / "nowhere" / "train.jsonl"
    with pytest.raises(FileNotFoundError, match="JSONL file not found") as info:
        read_jsonl(missing)
    assert str(missing) in str(info.value)
