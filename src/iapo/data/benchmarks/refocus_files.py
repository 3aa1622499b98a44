"""ReFocus's test files and their label boxes, read so that no single record can lose a file or crash a loader.

`refocus_records(path)` reads one test file (a JSON object of id -> record, or a list of records) into (where,
(id, record)) pairs; what is wrong with one record becomes a `BadRowError` in its place, counted by the loader:

- a UTF-8 byte-order mark is ignored, and a byte that is not UTF-8 skips its own record ("bad_encoding");
- an id that occurs more than once: the last record with it is read (what ``json.load`` keeps, so the same
  records as ReFocus's own evaluation), each earlier one is counted as "duplicate_uid" instead of vanishing;
- an integer too long for ``int()`` (over 4,300 digits) is read as a float (infinite, so a box holding it is
  "bad_boxes") instead of failing the whole file.

Label boxes (`parallel_boxes`, `mapped_boxes`, `refocus_meta`) become the pixel layout `REFOCUS_META`. A group of
boxes is in fractions of the image when every coordinate lies within [-0.5, 1.5] (ReFocus's files; a coordinate
slightly past 1 is a rounding of the edge), otherwise in pixels (VTool-R1's parquet): a pixel box within that range
would be at most 2 px wide, nothing after ReFocus's 2 px inset. Fractions are scaled by the image's upright size
(its EXIF orientation applied, as `load_image` decodes it). A box that is not four finite numbers with x1 <= x2
and y1 <= y2, or that lies wholly outside the image, makes its row "bad_boxes".

`FigureFinder` finds a record's ``figure_path`` without ever leaving the folders it searches; a path the file
system refuses (too long, a NUL byte) is looked up by file name only.

    for where, (key, record) in refocus_records(Path("data/charxiv/charxiv-subfigures.json")): ...
"""

from __future__ import annotations

import io
import json
import math
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from iapo.data.benchmarks.readers import IMAGE_SUFFIXES
from iapo.data.sample import BadRowError, ImageRef, require_utf8

NORMALISED_RANGE = (-0.5, 1.5)
"""A group of boxes whose coordinates all lie in this range is in fractions of the image size."""
MAX_INT_DIGITS = 4000
"""Longer JSON integers are read as floats: ``int()`` refuses more than 4,300 digits (and would take long)."""
EXIF_ORIENTATION = 0x0112
TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)
"""EXIF orientations that turn the image by a quarter: the decoded image's width is the header's height."""


# --- test files ---------------------------------------------------------------------------------------------------


class _RepeatedKeys(dict):
    """A JSON object with a key given more than once: the values ``json`` keeps (the last) and the earlier ones."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        left = Counter(key for key, _ in pairs)
        self.earlier: list[tuple[str, Any]] = []
        for key, value in pairs:
            left[key] -= 1
            if left[key]:
                self.earlier.append((key, value))


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    return _RepeatedKeys(pairs) if len({key for key, _ in pairs}) < len(pairs) else dict(pairs)


def json_int(text: str) -> int | float:
    """A JSON integer as `json.loads(..., parse_int=json_int)` reads it: a float when longer than `MAX_INT_DIGITS`."""
    return int(text) if len(text) <= MAX_INT_DIGITS else float(text)


def refocus_records(path: Path) -> Iterator[tuple[str, tuple[str, Any]]]:
    """(where, (id, record)) for every record of a ReFocus test file; a record that cannot be used is a
    `BadRowError` in its place, and a file that is not JSON at all is one ``bad_json`` with id "".

    A list of records is accepted too, with the id taken from ``qa_id`` / ``id`` / ``figure_id`` or the position.
    """
    try:
        # undecodable bytes become lone surrogates, so one bad byte in a string costs its record only
        text = path.read_bytes().decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
        data = json.loads(text, object_pairs_hook=_json_object, parse_int=json_int)
    except (OSError, ValueError, RecursionError) as err:
        yield f"{path}:0", ("", BadRowError("bad_json", f"{type(err).__name__}: {err}"[:500]))
        return
    if isinstance(data, dict):
        repeated = getattr(data, "earlier", ())
        again = "occurs again later in the file; the last record with it is read"
        items = [*((key, BadRowError("duplicate_uid", f"id {key!r} {again}")) for key, _ in repeated), *data.items()]
    elif isinstance(data, list):
        items = [
            (str(next((r[k] for k in ("qa_id", "id", "figure_id") if isinstance(r, dict) and r.get(k)), n)), r)
            for n, r in enumerate(data, start=1)
        ]
    else:
        yield f"{path}:0", ("", BadRowError("bad_json", f"expected an object of records, got {type(data).__name__}"))
        return
    for number, (key, record) in enumerate(items, start=1):
        key = str(key)
        where = f"{path}:{number} ({key[:100]})"
        try:
            require_utf8(key)
            require_utf8(record)
        except BadRowError as bad:
            record = bad
        yield where, (key, record)


# --- label boxes --------------------------------------------------------------------------------------------------


def raw_box(value: Any) -> list[float]:
    """A box as [x1, y1, x2, y2] from ``{"x1", "y1", "x2", "y2"}`` or a list of four numbers; `BadRowError`
    ("bad_boxes") for anything else, a coordinate that is not a finite number, or x2 < x1 / y2 < y1."""
    try:
        if isinstance(value, dict):
            box = [float(value[key]) for key in ("x1", "y1", "x2", "y2")]
        elif isinstance(value, list | tuple) and len(value) == 4:
            box = [float(v) for v in value]
        else:
            raise TypeError(type(value).__name__)
    except (KeyError, TypeError, ValueError, OverflowError) as err:  # OverflowError: an integer of 400 digits
        raise BadRowError("bad_boxes", f"not a box: {value!r} ({err})"[:300]) from err
    if not all(math.isfinite(v) for v in box) or box[2] < box[0] or box[3] < box[1]:
        raise BadRowError("bad_boxes", f"not a box: {value!r}"[:300])
    return box


def parallel_boxes(row: dict[str, Any], labels_key: str, boxes_key: str) -> list[tuple[str, list[float]]]:
    """ReFocus's parallel lists (``x_values`` + ``x_bboxes``) as (label, raw box) pairs; absent or null is empty."""
    labels, boxes = row.get(labels_key), row.get(boxes_key)
    labels = [] if labels is None else labels
    boxes = [] if boxes is None else boxes
    if not isinstance(labels, list) or not isinstance(boxes, list):
        raise BadRowError("bad_boxes", f"{labels_key} / {boxes_key} must be lists")
    if len(labels) != len(boxes):
        raise BadRowError("bad_boxes", f"{len(labels)} {labels_key} but {len(boxes)} {boxes_key}")
    return [(str(label).strip(), raw_box(box)) for label, box in zip(labels, boxes, strict=True)]


def mapped_boxes(value: Any, labels: Any = None) -> list[tuple[str, list[float]]]:
    """VTool-R1's label -> box map (or parallel arrays with `labels`) as (label, raw box) pairs.

    ``{"x1": "none"}`` is VTool-R1's marker of an absent map; it gives no pairs.
    """
    if value is None or value == {} or value == []:
        return []
    if isinstance(value, dict):
        if set(value) <= {"x1", "y1", "x2", "y2"} and str(value.get("x1")).lower() == "none":
            return []
        return [(str(label).strip(), raw_box(box)) for label, box in value.items()]
    if isinstance(value, list) and isinstance(labels, list) and len(labels) == len(value):
        return [(str(label).strip(), raw_box(box)) for label, box in zip(labels, value, strict=True)]
    raise BadRowError("bad_boxes", f"label boxes must be a label -> box map, got {type(value).__name__}")


def is_normalised(pairs: Sequence[tuple[str, list[float]]]) -> bool:
    """Whether a group of boxes is in fractions of the image size rather than pixels (module docstring). Decided
    per group, as VTool-R1 mixes a normalised figure box with pixel label boxes in one record."""
    low, high = NORMALISED_RANGE
    values = [v for _, box in pairs for v in box]
    return bool(values) and all(low <= v <= high for v in values)


def in_pixels(pairs: Sequence[tuple[str, list[float]]], size: tuple[int, int]) -> list[list]:
    """(label, box) pairs as ``[label, [x1, y1, x2, y2]]`` in pixels of the upright image of `size`; a box that lies
    wholly outside the image is "bad_boxes" (an edit of it could change nothing)."""
    width, height = size
    scale = (width, height, width, height) if is_normalised(pairs) else (1, 1, 1, 1)
    out = []
    for label, box in pairs:
        x1, y1, x2, y2 = (round(v * s, 2) for v, s in zip(box, scale, strict=True))
        if x1 >= width or y1 >= height or x2 <= 0 or y2 <= 0:
            raise BadRowError(
                "bad_boxes", f"the box of {label[:100]!r}, {box}, lies outside the {width}x{height} image"
            )
        out.append([label, [x1, y1, x2, y2]])
    return out


def upright_size(ref: ImageRef) -> tuple[int, int]:
    """Width and height of the image as `load_image` decodes it (EXIF orientation applied), from its header."""
    try:
        with Image.open(io.BytesIO(ref) if isinstance(ref, bytes) else ref) as image:
            width, height = image.size
            turned = image.getexif().get(EXIF_ORIENTATION) in TRANSPOSED_ORIENTATIONS
    except Image.DecompressionBombError as err:
        raise BadRowError("image_too_large", str(err)) from err
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:  # SyntaxError: PIL's broken headers
        raise BadRowError("undecodable_image", f"cannot read the image header ({type(err).__name__}: {err})") from err
    return (height, width) if turned else (width, height)


def refocus_meta(kind: str, size: tuple[int, int], groups: dict[str, Sequence[tuple[str, list[float]]]]) -> dict:
    """``meta["refocus"]`` for one record: `kind` and each group of (label, raw box) pairs in pixels of the upright
    image of `size` (`upright_size`)."""
    return {"kind": kind, **{key: in_pixels(pairs, size) for key, pairs in groups.items()}}


# --- figures ------------------------------------------------------------------------------------------------------


class FigureFinder:
    """Finds a ReFocus ``figure_path`` on disk, never outside the folders it searches.

    Tried in order: the path under the set's folder (a copy of ReFocus's ``data/`` tree), then the file name under
    the set's ``images/`` folder and under each of `shared` (searched recursively, indexed once). An absolute
    path, one that climbs out with ``..`` or one the file system refuses is only looked up by its file name.
    """

    def __init__(self, set_dir: Path, shared: Sequence[Path] = ()) -> None:
        self.set_dir = Path(set_dir)
        self.folders = [self.set_dir / "images", *shared]
        self._index: dict[str, Path] | None = None

    def _names(self) -> dict[str, Path]:
        if self._index is None:
            self._index = {}
            for folder in self.folders:
                for parent, dirs, files in os.walk(folder):
                    dirs.sort()
                    for name in sorted(files):
                        if name.lower().endswith(IMAGE_SUFFIXES):
                            self._index.setdefault(name, Path(parent) / name)
        return self._index

    def find(self, figure_path: str) -> Path | None:
        relative = Path(figure_path)
        if not relative.is_absolute() and ".." not in relative.parts:
            try:
                if (self.set_dir / relative).is_file():
                    return self.set_dir / relative
            except (OSError, ValueError):  # a name too long for the file system, a NUL byte
                pass
        return self._names().get(relative.name) if relative.name else None
