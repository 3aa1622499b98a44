"""Row readers shared by the test-set loaders: files to (where, row) pairs, fields, letters and counted skips.

Text files are read with ``errors="surrogateescape"``, so a byte that is not UTF-8 skips its own row as
"bad_encoding" (`iapo.data.sample.require_utf8`) instead of failing the whole file. Image names from annotation
files are joined to the set's image folder and must stay inside it ("outside_root"); option lists must have
between two and 26 options ("missing_field" / "too_many_options").
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import random
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from iapo.data.sample import OPTION_LETTERS, BadRowError, ImageRef, SkipLog, VQASample, require_utf8

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
LETTERS = OPTION_LETTERS


def collect_rows(rows: Iterable[tuple[str, Any]], build: Callable[[Any], VQASample], skips: SkipLog) -> list[VQASample]:
    """Build a sample from each (where, row); a row that raises `BadRowError` or repeats a uid goes to `skips`."""
    samples, seen = [], set()
    for where, row in rows:
        try:
            sample = build(row)
        except BadRowError as bad:
            skips.skip(bad.reason, where, bad.detail)
            continue
        if sample.uid in seen:
            skips.skip("duplicate_uid", where, sample.uid)
            continue
        seen.add(sample.uid)
        samples.append(sample)
    return samples


def is_blank(value: Any) -> bool:
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or (isinstance(value, str) and not value.strip())
    )


def row_field(row: dict[str, Any], key: str) -> Any:
    value = row.get(key)
    if is_blank(value):
        raise BadRowError("missing_field", key)
    return value


def row_text(row: dict[str, Any], key: str) -> str:
    return str(row_field(row, key)).strip()


def option_letter(value: Any, letters: str) -> str:
    match = re.fullmatch(r"\(?([A-Za-z])\)?\.?", str(value).strip())
    if not match or match.group(1).upper() not in letters:
        raise BadRowError("unknown_answer", f"{value!r} not in {list(letters)}")
    return match.group(1).upper()


def check_option_count(options: list[Any], field: str = "options") -> None:
    """Between two options and as many as there are letters (A-Z)."""
    if len(options) < 2:
        raise BadRowError("missing_field", f"{field}: {len(options)} option(s), a question needs at least two")
    if len(options) > len(LETTERS):
        raise BadRowError("too_many_options", f"{field}: {len(options)} options, at most {len(LETTERS)} (A-Z)")


def existing_image(path: Path) -> Path:
    if not path.is_file():
        raise BadRowError("missing_image", str(path))
    return path


def image_in(folder: Path, name: str) -> Path:
    """The existing image `name` (from an annotation file) inside `folder`; ``..`` or an absolute name that leaves
    the folder is "outside_root", so an annotation cannot make the loader read arbitrary files."""
    path = Path(os.path.normpath(Path(folder) / name))
    if not path.is_relative_to(os.path.normpath(folder)):
        raise BadRowError("outside_root", f"image {name!r} is outside {folder}")
    return existing_image(path)


def embedded_image(value: Any) -> ImageRef:
    """An embedded image (raw bytes, an HF ``{"bytes": ...}`` struct or a base64 string), kept undecoded."""
    if isinstance(value, dict):
        value = value.get("bytes")
    if isinstance(value, bytes | bytearray) and value:
        return bytes(value)
    if isinstance(value, str) and value.strip():
        return value if value.startswith("base64:") else "base64:" + value.strip()
    raise BadRowError("missing_image", "no embedded image")


def parquet_rows(paths: Iterable[Path], columns: Iterable[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(``"file:row"``, row dict) for every row, reading a few rows at a time; absent columns are absent keys.

    A file that is not readable parquet (truncated, corrupt, not parquet at all) raises `UnreadableFileError`
    naming it: its rows cannot be counted one by one, and an interrupted download is the usual cause.
    """
    columns = list(columns)
    for path in paths:
        row = 0
        try:
            parquet = pq.ParquetFile(path)
            present = [c for c in columns if c in parquet.schema_arrow.names]
            for batch in parquet.iter_batches(batch_size=8, columns=present):
                for record in batch.to_pylist():
                    row += 1
                    yield f"{path}:{row}", record
        except (pa.ArrowException, OSError) as err:
            raise UnreadableFileError(
                path, f"not readable parquet after {row} rows ({type(err).__name__}: {err})"
            ) from err


class UnreadableFileError(ValueError):
    """A data file that cannot be read at all: the message names it and says to fetch it again."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}. Fetch it again (`make data`) or remove it; see data/README.md.")
        self.path = path


def tsv_rows(path: Path) -> Iterator[tuple[str, dict[str, Any] | BadRowError]]:
    """Rows of a VLMEvalKit-style TSV (header line, pandas quoting, fields of many megabytes); a row with bytes that
    are not UTF-8 yields a `BadRowError` in its place."""
    previous_limit = csv.field_size_limit(2**31 - 1)
    try:
        with path.open(newline="", encoding="utf-8", errors="surrogateescape") as handle:
            for row, record in enumerate(csv.DictReader(handle, delimiter="\t"), start=1):
                try:
                    require_utf8(record)
                except BadRowError as bad:
                    record = bad
                yield f"{path}:{row}", record
    finally:
        csv.field_size_limit(previous_limit)


def json_lines(path: Path) -> Iterator[tuple[str, Any]]:
    """(``"file:line"``, parsed object) per non-empty line; unparsable or non-UTF-8 lines yield a `BadRowError`."""
    with path.open(encoding="utf-8", errors="surrogateescape") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                require_utf8(line)
                row = json.loads(line)
            except BadRowError as bad:
                row = bad
            except json.JSONDecodeError as err:
                row = BadRowError("bad_json", str(err))
            yield f"{path}:{line_number}", row


def checked_object(row: Any) -> dict[str, Any]:
    if isinstance(row, BadRowError):
        raise row
    if not isinstance(row, dict):
        raise BadRowError("bad_json", f"expected an object, got {type(row).__name__}")
    return row


def option_permutation(uid: str, n: int) -> list[int]:
    """A shuffle of range(n) that depends only on `uid`."""
    order = list(range(n))
    random.Random(int.from_bytes(hashlib.sha256(uid.encode()).digest()[:8], "big")).shuffle(order)
    return order
