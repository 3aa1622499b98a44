"""The generic training-data reader: one JSON object per line, each a visual question.

Row format (one object per line; blank lines are ignored)::

    {"image": "imgs/0001.png",          # relative to the JSONL file's folder (see "Image paths")
     "question": "What colour is the cup?",
     "options": ["red", "blue", ...],   # optional; lettered A, B, ... in this order
     "answer": "B",                     # with options: the letter or the option's text
     "answer_type": "mcq",              # optional: "mcq" with options, else "exact"
     "category": "colour",              # optional
     "meta": {"bbox": [x1, y1, x2, y2]},  # optional, kept for analysis
     "id": "0001"}                      # optional, default "<source>-<line number>"

A row that cannot be used is skipped and counted in the `SkipLog` by reason: "bad_json" (not a JSON object),
"bad_encoding" (the line holds bytes that are not UTF-8; the rest of the file is read), "missing_field" (no image,
question or answer, or "mcq" with fewer than two options), "too_many_options" (more than the 26 letters A-Z),
"bad_field" (a field of the wrong type or an unknown answer_type), "outside_root" (the image path leaves the data
root, see below), "missing_image" (the file does not exist; images are not decoded here), "unknown_answer" (an
"mcq" answer that is neither a letter of the options nor an option's text, compared exactly, then ignoring case;
a "yes_no" answer other than yes/no; a "tabfact" answer other than true/false or 1/0) and "bad_boxes" (a
`meta.refocus` that is not the label-box layout `iapo.data.sample.REFOCUS_META`: pixel boxes as
``[label, [x1, y1, x2, y2]]`` pairs of finite numbers, checked by `check_refocus_meta`). With `SkipLog(strict=True)` the first bad row raises `BadRowError`
naming file and line. Text is kept as written: a question that contains chat-template tokens such as
``<|im_end|>`` is an ordinary row (the prompt builder escapes it).

Image paths: a relative `image` is joined to the JSONL file's folder; the joined path, with ``..`` collapsed and
symbolic links not followed, must lie inside the data root: the JSONL's folder, or `image_root` when given (e.g.
the set's top folder when the JSONL sits in ``annotations/`` beside ``images/``). An absolute path is accepted
under the same rule. A path outside the root (``../../x.png``, ``/etc/passwd``) is skipped as "outside_root",
since a data row must not make the loader read arbitrary files; `allow_outside_root=True` turns the check off for
data whose images really live elsewhere. Symbolic links inside the root are followed (they are the user's layout,
not a row's choice).

    from iapo.data.jsonl import read_jsonl
    from iapo.data.sample import SkipLog
    skips = SkipLog()
    samples = read_jsonl("data/synthetic/train.jsonl", source="synthetic", skips=skips)
    print(len(samples), skips.as_dict())

Rows that also carry an expert's assistant turns are read by `iapo.training.expert_jsonl` (with `parse_vqa_row`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iapo.data.sample import (
    ANSWER_TYPES,
    OPTION_LETTERS,
    TABFACT_REFERENCES,
    BadRowError,
    SkipLog,
    VQASample,
    check_refocus_meta,
    require_utf8,
)

log = logging.getLogger(__name__)

REQUIRED_FIELDS = ("image", "question", "answer")


@dataclass(frozen=True)
class ImagePaths:
    """The image-path rule of one JSONL file (module docstring, "Image paths")."""

    folder: Path
    root: Path
    allow_outside_root: bool = False

    @classmethod
    def of(cls, jsonl: Path, image_root: str | Path | None = None, allow_outside_root: bool = False) -> ImagePaths:
        folder = Path(os.path.abspath(jsonl)).parent
        root = Path(os.path.abspath(image_root)) if image_root is not None else folder
        return cls(folder, root, allow_outside_root)

    def resolve(self, image: str) -> Path:
        """The existing image file `image` names, as a resolved path; `BadRowError` when it is not allowed or absent."""
        joined = Path(os.path.normpath(self.folder / image))  # an absolute `image` replaces the folder
        if not self.allow_outside_root and not joined.is_relative_to(self.root):
            raise BadRowError(
                "outside_root", f"image {image!r} is outside {self.root} (allow_outside_root: true to read it anyway)"
            )
        try:
            exists = joined.is_file()
        except OSError as err:  # e.g. a name too long for the file system
            raise BadRowError("missing_image", f"image file not usable: {image!r} ({err})") from err
        if not exists:
            raise BadRowError("missing_image", f"image file not found: {joined}")
        return joined.resolve()


def read_jsonl(
    path: str | Path,
    source: str | None = None,
    skips: SkipLog | None = None,
    parse_row=None,
    image_root: str | Path | None = None,
    allow_outside_root: bool = False,
) -> list[VQASample]:
    """Read a JSONL file of visual questions into `VQASample`s with lazy images (resolved path strings).

    `source` names the data set in every sample (default: the file's stem). Bad rows are skipped and counted in
    `skips`; when no `SkipLog` is given, skipped rows are counted in a fresh one and reported as a warning.
    `image_root` and `allow_outside_root` set the image-path rule (module docstring). `parse_row(line, images,
    source, default_uid)` replaces the row parser (`images` is the file's `ImagePaths`; it raises `BadRowError` for
    a bad row); `read_expert_jsonl` uses it to read rows that also carry assistant turns.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"JSONL file not found: {path}. Give a JSONL of {{image, question, options?, answer}} rows, or write the "
            "synthetic set with `python -m iapo.data.synthetic --out data/synthetic`."
        )
    source = source or path.stem
    parse = parse_row or parse_vqa_row
    images = ImagePaths.of(path, image_root, allow_outside_root)
    report = skips is None
    skips = SkipLog() if skips is None else skips
    samples = []
    # Bytes that are not UTF-8 become lone surrogates, so a bad line is skipped alone instead of failing the file.
    with path.open(encoding="utf-8-sig", errors="surrogateescape") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                require_utf8(line)
                samples.append(parse(line, images, source, default_uid=f"{source}-{lineno}"))
            except BadRowError as err:
                skips.skip(err.reason, f"{path}:{lineno}", err)
    if report and skips.total:
        log.warning("%s: skipped %d bad rows %s, e.g. %s", path, skips.total, skips.as_dict(), skips.examples)
    return samples


def parse_vqa_row(line: str, images: ImagePaths, source: str, default_uid: str) -> VQASample:
    """One JSONL line to a `VQASample`; raises `BadRowError` with the skip reason for a bad row."""
    try:
        row = json.loads(line)
    except (ValueError, RecursionError) as err:  # also an integer beyond int()'s 4,300 digits, or deep nesting
        raise BadRowError("bad_json", f"{type(err).__name__}: {err}"[:500]) from err
    if not isinstance(row, dict):
        raise BadRowError("bad_json", f"expected a JSON object, got {type(row).__name__}")
    missing = [name for name in REQUIRED_FIELDS if row.get(name) in (None, "")]
    if missing:
        raise BadRowError("missing_field", f"missing {', '.join(missing)}")
    if isinstance(row["answer"], bool):
        row["answer"] = "true" if row["answer"] else "false"  # a TabFact verdict written as a JSON boolean
    elif isinstance(row["answer"], int | float):
        row["answer"] = str(row["answer"])  # numeric answers (counts, chart values) are read as text
    image, question, answer = (_typed(row, name, str) for name in REQUIRED_FIELDS)
    options = _typed(row, "options", list, default=[])
    if not all(isinstance(option, str) for option in options):
        raise BadRowError("bad_field", "options must be a list of strings")
    answer_type = _typed(row, "answer_type", str, default="mcq" if options else "exact")
    if answer_type not in ANSWER_TYPES:
        raise BadRowError("bad_field", f"answer_type must be one of {ANSWER_TYPES}, got {answer_type!r}")
    if answer_type == "mcq" and len(options) < 2:
        raise BadRowError("missing_field", f"an mcq row needs at least two options, got {len(options)}")
    if len(options) > len(OPTION_LETTERS):
        raise BadRowError("too_many_options", f"{len(options)} options; at most {len(OPTION_LETTERS)} (A-Z)")
    meta = _typed(row, "meta", dict, default={})
    if "refocus" in meta:  # label boxes for the editing tools: checked now, not when a tool or the prompt reads them
        check_refocus_meta(meta["refocus"])
    image_path = images.resolve(image)
    return VQASample(
        uid=str(row.get("id", default_uid)),
        source=source,
        image=str(image_path),
        question=question,
        answer=_normalise_answer(answer, answer_type, tuple(options)),
        answer_type=answer_type,
        options=tuple(options),
        category=str(row.get("category") or ""),
        meta=meta,
    )


def _typed(row: dict[str, Any], name: str, kind: type, default: Any = None) -> Any:
    """Field `name` of `row`, checked to be of type `kind`; `default` when absent or null."""
    value = row.get(name)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise BadRowError("bad_field", f"{name} must be a {kind.__name__}, got {type(value).__name__}")
    return value


def _normalise_answer(answer: str, answer_type: str, options: tuple[str, ...]) -> str:
    """The stored form of an answer: the option letter for "mcq", "yes"/"no" for "yes_no", "true"/"false" for
    "tabfact" (also from 1 / 0), else the text."""
    text = answer.strip()
    if answer_type == "tabfact":
        if text.lower() not in TABFACT_REFERENCES:
            raise BadRowError("unknown_answer", f"tabfact answer must be true/false or 1/0, got {answer!r}")
        return TABFACT_REFERENCES[text.lower()]
    if answer_type == "yes_no":
        if text.lower() not in ("yes", "no"):
            raise BadRowError("unknown_answer", f"yes_no answer must be yes or no, got {answer!r}")
        return text.lower()
    if answer_type != "mcq":
        return text
    letters = list(OPTION_LETTERS[: len(options)])
    if text in letters:
        return text
    stripped = [option.strip() for option in options]
    if text in stripped:
        return letters[stripped.index(text)]
    folded = [option.casefold() for option in stripped]
    if folded.count(text.casefold()) == 1:
        return letters[folded.index(text.casefold())]
    raise BadRowError("unknown_answer", f"answer {answer!r} is neither a letter in {letters} nor an option")
