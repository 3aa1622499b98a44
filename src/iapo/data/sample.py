"""The one record every data source yields, lazy image decoding, and counted skipping of bad rows.

Every adapter (synthetic set, generic JSONL, the six benchmarks) turns its rows into `VQASample`s. Images stay
undecoded (a path, raw bytes or a base64 string) until `load_image` is called, so loading a data set is cheap and
decoding happens in DataLoader workers. A row that cannot be used is reported to a `SkipLog`, which counts it by
reason, or raises `BadRowError` when `strict=True`; nothing is dropped silently.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

ImageRef = str | Path | bytes | Image.Image
"""A path to an image file, raw encoded bytes, a base64 string (``"base64:..."``) or an already decoded image."""

ANSWER_TYPES = ("mcq", "yes_no", "relaxed", "anls", "exact", "wtq", "tabfact", "charxiv")
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
VTool-R1's pixel boxes into it; the editing tools (`iapo.agent.tools.refocus`) read it through the tool context."""


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

    @property
    def letters(self) -> tuple[str, ...]:
        return tuple(chr(ord("A") + i) for i in range(len(self.options)))


def load_image(ref: ImageRef) -> Image.Image:
    """Decode an `ImageRef` to an RGB PIL image; raise `BadRowError` when it cannot be decoded."""
    try:
        if isinstance(ref, Image.Image):
            image = ref
        elif isinstance(ref, bytes):
            image = Image.open(io.BytesIO(ref))
        elif isinstance(ref, str) and ref.startswith("base64:"):
            image = Image.open(io.BytesIO(base64.b64decode(ref[len("base64:") :], validate=False)))
        else:
            path = Path(ref)
            if not path.is_file():
                raise BadRowError("missing_image", f"image file not found: {path}")
            image = Image.open(path)
        image.load()
        return image.convert("RGB")
    except (UnidentifiedImageError, OSError, binascii.Error, ValueError) as err:
        if isinstance(err, BadRowError):
            raise
        raise BadRowError("undecodable_image", f"undecodable image ({type(err).__name__}: {err})") from err


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

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))
