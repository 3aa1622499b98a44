"""The one record every data source yields, lazy image decoding, and counted skipping of bad rows.

Every adapter (synthetic set, generic JSONL, the six benchmarks) turns its rows into `VQASample`s. Images stay
undecoded (a path, raw bytes or a base64 string) until `load_image` is called, so loading a data set is cheap and
decoding happens in DataLoader workers. A row that cannot be used is reported to a `SkipLog`, which counts it by
reason, or raises `BadRowError` when `strict=True`; nothing is dropped silently.

`load_image` decodes what the file means, not what PIL's `convert("RGB")` makes of it: the EXIF orientation is
applied, 16-bit and floating-point grey levels are scaled to 8 bits (not clipped), and transparency (RGBA, LA, a
palette or colour key with transparency) is composited on white. Images the model's processor cannot take are
skipped before decoding: more pixels than `max_pixels` ("image_too_large", also PIL's decompression-bomb limit)
or an aspect ratio beyond `MAX_ASPECT_RATIO` ("extreme_aspect_ratio"). `drawable` gives a bounded-size copy for
figures. Text read with ``errors="surrogateescape"`` is checked by `require_utf8`, so one bad byte skips one row
("bad_encoding"), not the file.

    from iapo.data.sample import drawable, load_image
    image = load_image("data/synthetic/test/synthetic-test-000000.png")   # RGB, upright, 8-bit
    small = drawable(image, max_side=1024)                                # for plots only
"""

from __future__ import annotations

import base64
import io
import math
import re
import string
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

ImageRef = str | Path | bytes | Image.Image
"""A path to an image file, raw encoded bytes, a base64 string (``"base64:..."``) or an already decoded image."""

ANSWER_TYPES = ("mcq", "yes_no", "relaxed", "anls", "exact", "wtq", "tabfact", "charxiv")
TABFACT_REFERENCES = {"true": "true", "1": "true", "false": "false", "0": "false"}
"""The VTabFact references a row may hold and the verdict each stands for (read by the loaders and scoring)."""
"""How a set's answers are scored (`iapo.evaluation.scoring.score_sample`): option letter, yes/no, ChartQA's relaxed
accuracy, ANLS, exact match, WikiTableQuestions denotation accuracy (`|`-separated answer sets), TabFact true/false,
and CharXiv's rule."""


REFOCUS_META = {
    "kind": "table | chart_v | chart_h",
    "columns": "[[label, [x1, y1, x2, y2]], ...]  (tables: one per column header)",
    "rows": "[[label, [x1, y1, x2, y2]], ...]  (tables: one per row starter, the header row first)",
    "x_values": "[[label, [x1, y1, x2, y2]], ...]  (vertical bar charts: one per x-axis label / bar)",
    "y_values": "[[label, [x1, y1, x2, y2]], ...]  (horizontal bar charts: one per y-axis label / bar)",
}
"""The layout of `VQASample.meta["refocus"]`: label boxes in pixels of the original image (x1, y1, x2, y2), as
(label, box) pairs in reading order so repeated labels survive. Loaders convert ReFocus's normalised boxes and
VTool-R1's pixel boxes into it; the editing tools (`iapo.agent.tools.refocus`) read it through the tool context.
`check_refocus_meta` checks a value against it (JSONL rows that carry it are checked when read)."""
REFOCUS_KINDS = ("table", "chart_v", "chart_h")
REFOCUS_GROUPS = ("columns", "rows", "x_values", "y_values")


def refocus_pairs(pairs: Any, group: str) -> list[tuple[str, tuple[float, float, float, float]]]:
    """The (label, box) pairs of one group of `REFOCUS_META` (None or [] is no pairs); `BadRowError("bad_boxes")`
    naming the first pair that is not ``[text, [x1, y1, x2, y2]]`` with finite numbers, x1 <= x2 and y1 <= y2."""
    if pairs is None:
        return []
    if not isinstance(pairs, list | tuple):
        raise BadRowError(
            "bad_boxes", f'meta["refocus"]["{group}"] must be a list of pairs, got {type(pairs).__name__}'
        )
    checked = []
    for index, pair in enumerate(pairs):
        where = f'meta["refocus"]["{group}"][{index}]'
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise BadRowError("bad_boxes", f"{where} is not a [label, [x1, y1, x2, y2]] pair: {pair!r}"[:300])
        label, box = pair
        if not isinstance(label, str):
            raise BadRowError("bad_boxes", f"{where}: the label must be text, got {label!r}"[:300])
        if not isinstance(box, list | tuple) or len(box) != 4 or not all(_finite_number(v) for v in box):
            raise BadRowError("bad_boxes", f"{where}: the box must be four finite numbers, got {box!r}"[:300])
        x1, y1, x2, y2 = (float(v) for v in box)
        if x2 < x1 or y2 < y1:
            raise BadRowError("bad_boxes", f"{where}: the box {box!r} has x2 < x1 or y2 < y1"[:300])
        checked.append((label, (x1, y1, x2, y2)))
    return checked


def _finite_number(value: Any) -> bool:
    """A JSON number that is a finite float (an integer of 400 digits is not: it overflows a float)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def check_refocus_meta(value: Any) -> None:
    """Raise `BadRowError("bad_boxes")` unless `value` follows `REFOCUS_META` (a known kind, well-formed groups)."""
    if not isinstance(value, dict):
        raise BadRowError("bad_boxes", f'meta["refocus"] must be an object, got {type(value).__name__}')
    if value.get("kind") is not None and value["kind"] not in REFOCUS_KINDS:
        raise BadRowError("bad_boxes", f'meta["refocus"]["kind"] must be one of {REFOCUS_KINDS}, got {value["kind"]!r}')
    for group in REFOCUS_GROUPS:
        refocus_pairs(value.get(group), group)


OPTION_LETTERS = string.ascii_uppercase
"""Option letters, in order. A question with more options than letters is skipped as "too_many_options" (every
reader builds a `VQASample`, whose constructor raises that `BadRowError`), never lettered with `[`, `\\`, ...."""


class BadRowError(ValueError):
    """A data row that cannot be used: `reason` is the counted skip reason, the message says what and where.

    Every reader raises this one type for a bad row (`SkipLog.skip` counts it by `reason`, or re-raises it with the
    file and row when `strict`).
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason, self.detail = reason, detail


@dataclass
class VQASample:
    """One visual question.

    `answer` is the letter of the correct option for `answer_type="mcq"` (options are lettered A, B, ... in order),
    "yes"/"no" for `"yes_no"`, "true"/"false" for `"tabfact"`, and the reference text for the other types
    (`"wtq"`: items separated by `|`).

    Chart and table samples carry their label boxes for the editing tools in `meta["refocus"]` (see
    `REFOCUS_META`). `meta` keeps what scoring or analysis
    needs and the prompt does not (e.g. the object `bbox` in original-image pixels, HR-Bench's `cycle_category`).
    """

    uid: str
    source: str
    image: ImageRef
    question: str
    answer: str
    answer_type: str = "mcq"
    options: tuple[str, ...] = ()
    category: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.answer_type not in ANSWER_TYPES:
            raise ValueError(f"answer_type must be one of {ANSWER_TYPES}, got {self.answer_type!r}")
        if len(self.options) > len(OPTION_LETTERS):
            raise BadRowError(
                "too_many_options", f"{len(self.options)} options; at most {len(OPTION_LETTERS)} (A-Z) can be lettered"
            )

    @property
    def letters(self) -> tuple[str, ...]:
        return tuple(OPTION_LETTERS[: len(self.options)])


MAX_ASPECT_RATIO = 200.0
"""Qwen2-VL's image processor (`smart_resize`) raises for a longer-to-shorter side ratio above 200."""

MAX_IMAGE_PIXELS = 2 * Image.MAX_IMAGE_PIXELS
"""Default pixel cap of `load_image`: PIL's decompression-bomb error threshold (about 179 MP; a 14000×14000 image
is over it, HR-Bench 8K's 33 MP far under). A larger cap is bounded by PIL's own limit unless
`PIL.Image.MAX_IMAGE_PIXELS` is raised too."""


def load_image(ref: ImageRef, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode an `ImageRef` to an upright 8-bit RGB PIL image; raise `BadRowError` when it cannot be used.

    Reasons: "missing_image" (no such file), "image_too_large" (more than `max_pixels`, checked from the header
    before decoding), "extreme_aspect_ratio" (beyond `MAX_ASPECT_RATIO`), "undecodable_image" (anything else).
    """
    try:
        with warnings.catch_warnings():
            # PIL warns from half its hard limit on; the cap checked here is the decision that counts.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = _open(ref)
            check_image_size(image.size, max_pixels)
            image.load()
            return to_rgb(ImageOps.exif_transpose(image))
    except BadRowError:
        raise
    except Image.DecompressionBombError as err:
        raise BadRowError("image_too_large", f"over PIL's decompression-bomb limit ({err})") from err
    except Exception as err:  # decoders of untrusted bytes fail in many ways (struct.error, EOFError, ...)
        raise BadRowError("undecodable_image", f"undecodable image ({type(err).__name__}: {err})") from err


def _open(ref: ImageRef) -> Image.Image:
    """The image behind `ref`, opened lazily (PIL reads the header; pixels are decoded by `load`)."""
    if isinstance(ref, Image.Image):
        return ref
    if isinstance(ref, bytes):
        return Image.open(io.BytesIO(ref))
    if isinstance(ref, str) and ref.startswith("base64:"):
        return Image.open(io.BytesIO(base64.b64decode(ref[len("base64:") :], validate=False)))
    path = Path(ref)
    if not path.is_file():
        raise BadRowError("missing_image", f"image file not found: {path}")
    return Image.open(path)


def check_image_size(size: tuple[int, int], max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """Raise `BadRowError` for a (width, height) the model's processor cannot take, or too large to decode."""
    width, height = size
    if width < 1 or height < 1:
        raise BadRowError("undecodable_image", f"empty image of {width}×{height} pixels")
    if width * height > max_pixels:
        raise BadRowError("image_too_large", f"{width}×{height} pixels is over the cap of {max_pixels:,}")
    if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        raise BadRowError(
            "extreme_aspect_ratio",
            f"{width}×{height} pixels: aspect ratio over {MAX_ASPECT_RATIO:g} (the processor's limit)",
        )


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB with the image's meaning kept: deep grey levels scaled, transparency composited on white."""
    if image.mode.startswith("I") or image.mode == "F":
        image = _grey_to_8bit(image)
    if image.mode in ("P", "L", "RGB") and "transparency" in image.info:
        image = image.convert("RGBA")  # a palette or colour key with a transparent entry
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _grey_to_8bit(image: Image.Image) -> Image.Image:
    """Scale 16-bit ("I;16*"), 32-bit integer ("I") or float ("F") grey levels to 0..255.

    Integers above 255 are taken as 16-bit (PNG and TIFF scanners' depth) and divided by 257; floats in [0, 1] are
    taken as normalised and multiplied by 255; anything else is clipped to 0..255.
    """
    values = np.asarray(image).astype(np.float64)
    if image.mode == "F":
        scale = 255.0 if values.size and np.nanmax(np.abs(values)) <= 1.0 else 1.0
    else:
        scale = 1 / 257 if image.mode.startswith("I;16") or (values.size and values.max() > 255) else 1.0
    grey = np.clip(np.nan_to_num(values * scale), 0, 255).round().astype(np.uint8)
    return Image.fromarray(grey)  # 2-D uint8: mode "L"


def drawable(image: Image.Image, max_side: int = 1024) -> Image.Image:
    """A copy of `image` at most `max_side` pixels on its longer side (aspect kept, never enlarged), for figures.

    Drawing a 12000×12000 original costs gigabytes and tens of seconds; callers that draw boxes scale their
    coordinates by ``drawn.width / image.width``.
    """
    if max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    width, height = image.size
    scale = max_side / max(width, height)
    if scale >= 1:
        return image.copy()
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


_UNDECODED_BYTE = re.compile("[\udc80-\udcff]")


def require_utf8(value: Any) -> None:
    """Raise `BadRowError("bad_encoding")` when text read with ``errors="surrogateescape"`` (a string, or the
    strings inside parsed JSON) held a byte that is not UTF-8; the detail names the byte and where it is."""
    if isinstance(value, str):
        bad = _UNDECODED_BYTE.search(value)
        if bad:
            byte = ord(bad.group()) - 0xDC00
            raise BadRowError("bad_encoding", f"byte {byte:#04x} at character {bad.start() + 1} is not UTF-8")
    elif isinstance(value, dict):
        for key, item in value.items():
            require_utf8(key)
            require_utf8(item)
    elif isinstance(value, list | tuple):
        for item in value:
            require_utf8(item)


class SkipLog:
    """Counts skipped rows by reason; with `strict=True` the first bad row raises instead.

    Usage::

        skips = SkipLog(strict=False)
        try:
            ...
        except BadRowError as err:
            skips.skip("missing_field", f"{path}:{row}", err)
    """

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, str] = {}

    def skip(self, reason: str, where: str, detail: object = "") -> None:
        message = f"{where}: {reason}" + (f" ({detail})" if detail else "")
        if self.strict:
            raise BadRowError(reason, message)
        self.counts[reason] += 1
        self.examples.setdefault(reason, message)

    def merge(self, other: SkipLog) -> None:
        """Add another log's counts and first examples (a loader's own log into the data module's)."""
        self.counts.update(other.counts)
        for reason, example in other.examples.items():
            self.examples.setdefault(reason, example)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))
