"""The six test sets of the zoom setting, read from the layouts of their official releases (or standard Hugging Face mirrors).

One adapter per set, `load_<name>(root, skips) -> list[VQASample]`, where `root` is the set's own folder
(``data/<name>/``, layouts in data/README.md), and a registry `BENCHMARKS` of `BenchmarkSpec`s (loader, answer type,
metric kind, Hugging Face source, expected files). The usual entry point::

    from iapo.data.benchmarks import load_benchmark
    samples, skips = load_benchmark("hr_bench_4k", "data", limit=100)   # deterministic subset of 100
    print(len(samples), skips.as_dict())

A missing set raises `FileNotFoundError` naming the expected path and `make data`
(`python -m iapo.data.download`). Bad rows are skipped and counted in the `SkipLog` by reason (``strict=True``
raises `BadRowError` naming file and row instead):

- ``missing_field``    a required field is absent or empty (question, answer, category, bbox, ...), or a question
                        has fewer than two options;
- ``too_many_options`` more options than the letters A-Z (options are lettered A-Z, so up to 26 are read);
- ``unknown_answer``   the answer is not one of the option letters (or not yes/no for POPE);
- ``missing_image``    the image file does not exist or the embedded image is empty;
- ``outside_root``     an image name that leaves the set's image folder (``../``, an absolute path);
- ``bad_json``         an annotation file or JSONL line does not parse;
- ``bad_encoding``     a row holds bytes that are not UTF-8 (the other rows of the file are read);
- ``duplicate_uid``    a second row with the same id.

Images are not decoded here (8K images make that far too slow): paths are checked for existence and embedded
images kept lazily as bytes or ``"base64:..."`` strings. An image that exists but does not decode raises
`BadRowError` from `load_image` later, which the data module counts as ``undecodable_image``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from iapo.data.benchmarks.readers import (
    IMAGE_SUFFIXES,
    LETTERS,
    check_option_count,
    checked_object,
    collect_rows,
    embedded_image,
    image_in,
    is_blank,
    json_lines,
    option_letter,
    option_permutation,
    parquet_rows,
    row_field,
    row_text,
    tsv_rows,
)
from iapo.data.benchmarks.registry import BenchmarkSpec, register_benchmark, require_present
from iapo.data.sample import BadRowError, SkipLog, VQASample, require_utf8

POPE_CATEGORIES = ("adversarial", "popular", "random")
VSTAR_CATEGORIES = ("direct_attributes", "relative_position")


# --- V* Bench -------------------------------------------------------------------------------------------------------


def _xywh_boxes(value: Any) -> list[list[float]]:
    """One [x, y, w, h] box or a list of them, as floats."""
    boxes = [value] if isinstance(value, list) and value and not isinstance(value[0], list) else value
    try:
        boxes = [[float(v) for v in box] for box in boxes]
    except (TypeError, ValueError) as err:
        raise BadRowError("missing_field", f"bbox ({err})") from err
    if not boxes or any(len(box) != 4 for box in boxes):
        raise BadRowError("missing_field", "bbox")
    return boxes


def load_vstar_bench(root: Path, skips: SkipLog) -> list[VQASample]:
    """V* Bench (craigwu/vstar_bench): ``<category>/<stem>.json`` beside ``<category>/<stem>.jpg``.

    The JSON holds ``question``, ``options`` (the first is correct), ``target_object`` and ``bbox`` ([x, y, w, h]
    per target, original pixels). Options are shuffled per question, seeded by the uid, and the correct letter kept;
    ``meta["bbox"]`` is converted to [x1, y1, x2, y2].
    """
    root = Path(root)
    require_present("vstar_bench", root)

    def build(json_path: Path) -> VQASample:
        try:
            annotation = checked_object(json.loads(json_path.read_text(encoding="utf-8", errors="surrogateescape")))
        except (OSError, json.JSONDecodeError) as err:
            raise BadRowError("bad_json", str(err)) from err
        require_utf8(annotation)
        question = row_text(annotation, "question")
        options = row_field(annotation, "options")
        if not isinstance(options, list) or not all(str(o).strip() for o in options):
            raise BadRowError("missing_field", "options")
        check_option_count(options)
        boxes = _xywh_boxes(row_field(annotation, "bbox"))
        targets = annotation.get("target_object") or []
        images = [json_path.with_suffix(s) for s in IMAGE_SUFFIXES if json_path.with_suffix(s).is_file()]
        if not images:
            raise BadRowError("missing_image", f"{json_path.with_suffix('.jpg')} (or another image suffix)")
        category = json_path.parent.name
        uid = f"vstar_bench/{category}/{json_path.stem}"
        order = option_permutation(uid, len(options))
        return VQASample(
            uid=uid,
            source="vstar_bench",
            image=images[0],
            question=question,
            answer=LETTERS[order.index(0)],
            answer_type="mcq",
            options=tuple(str(options[i]).strip() for i in order),
            category=category,
            meta={
                "bbox": [[x, y, x + w, y + h] for x, y, w, h in boxes],
                "target_object": [targets] if isinstance(targets, str) else list(targets),
            },
        )

    files = [path for category in VSTAR_CATEGORIES for path in sorted((root / category).glob("*.json"))]
    return collect_rows(((f"{path}:1", path) for path in files), build, skips)


# --- HR-Bench 4K / 8K -----------------------------------------------------------------------------------------------


def _load_hr_bench(name: str, root: Path, skips: SkipLog) -> list[VQASample]:
    root = Path(root)
    require_present(name, root)
    parquet, tsv = root / f"{name}.parquet", root / f"{name}.tsv"
    columns = ("index", "question", "answer", "category", "cycle_category", "image", *"ABCD")
    # Each image is repeated once per cycle: keep one copy of each base64 string, made unique while reading.
    unique: dict[str, str] = {}
    rows = []
    for where, row in parquet_rows([parquet], columns) if parquet.is_file() else tsv_rows(tsv):
        image = row.get("image") if isinstance(row, dict) else None
        if isinstance(image, str) and len(image.strip()) > 64:
            ref = "base64:" + image.strip()
            row["image"] = unique.setdefault(ref, ref)
        rows.append((where, row))
    # VLMEvalKit TSV convention: a short `image` value is the index of the row whose image it shares.
    images_by_index = {str(row.get("index")).strip(): row.get("image") for _, row in rows if isinstance(row, dict)}

    def build(row: dict[str, Any] | BadRowError) -> VQASample:
        row = checked_object(row)
        index = row_text(row, "index")
        options = []
        for letter in "ABCD":
            if is_blank(row.get(letter)):
                break
            options.append(str(row[letter]).strip())
        if len(options) < 2:
            raise BadRowError("missing_field", "options A-D")
        question, category, cycle = (
            row_text(row, "question"),
            row_text(row, "category"),
            row_text(row, "cycle_category"),
        )
        answer = option_letter(row_field(row, "answer"), LETTERS[: len(options)])
        image = row.get("image")
        if isinstance(image, str) and image.strip() and not image.startswith("base64:"):
            image = images_by_index.get(image.strip())
        return VQASample(
            uid=f"{name}/{index}",
            source=name,
            image=embedded_image(image),
            question=question,
            answer=answer,
            answer_type="mcq",
            options=tuple(options),
            category=category,
            meta={"cycle_category": cycle, "index": index},
        )

    return collect_rows(rows, build, skips)


def load_hr_bench_4k(root: Path, skips: SkipLog) -> list[VQASample]:
    """HR-Bench 4K (DreamMr/HR-Bench): ``hr_bench_4k.parquet`` or ``hr_bench_4k.tsv`` with base64 images."""
    return _load_hr_bench("hr_bench_4k", root, skips)


def load_hr_bench_8k(root: Path, skips: SkipLog) -> list[VQASample]:
    """HR-Bench 8K (DreamMr/HR-Bench): ``hr_bench_8k.parquet`` or ``hr_bench_8k.tsv`` with base64 images."""
    return _load_hr_bench("hr_bench_8k", root, skips)


# --- MME-RealWorld-Lite ---------------------------------------------------------------------------------------------


def load_mme_realworld_lite(root: Path, skips: SkipLog) -> list[VQASample]:
    """MME-RealWorld-Lite, lmms-eval release (yifanzhang114/MME-RealWorld-lite-lmms-eval): ``data/*.parquet``.

    Columns: ``index``, ``question``, ``multi-choice options`` (["(A) ...", ..., "(E) ..."]), ``answer`` (letter),
    ``category`` (e.g. "Perception/Monitoring"), ``l2-category``, ``bytes`` (base64 image).
    """
    root = Path(root)
    require_present("mme_realworld_lite", root)
    columns = ("index", "question", "multi-choice options", "answer", "category", "l2-category", "bytes")

    def build(row: dict[str, Any]) -> VQASample:
        index = row_text(row, "index")
        raw_options = row_field(row, "multi-choice options")
        if not isinstance(raw_options, list):
            raise BadRowError("missing_field", "multi-choice options")
        check_option_count(raw_options, "multi-choice options")
        options = []
        for letter, raw in zip(LETTERS, raw_options, strict=False):
            match = re.fullmatch(r"\s*\(([A-Z])\)\s*(.*?)\s*", str(raw), flags=re.S)
            if match and match.group(1) != letter:
                raise BadRowError("missing_field", f"option {raw!r} out of order")
            options.append(match.group(2) if match else str(raw).strip())
        return VQASample(
            uid=f"mme_realworld_lite/{index}",
            source="mme_realworld_lite",
            image=embedded_image(row.get("bytes")),
            question=row_text(row, "question"),
            answer=option_letter(row_field(row, "answer"), LETTERS[: len(options)]),
            answer_type="mcq",
            options=tuple(options),
            category=row_text(row, "category"),
            meta={"l2_category": str(row.get("l2-category") or ""), "index": index},
        )

    return collect_rows(parquet_rows(sorted(root.glob("data/*.parquet")), columns), build, skips)


# --- POPE -----------------------------------------------------------------------------------------------------------


def _yes_no_label(value: Any) -> str:
    label = str(value).strip().lower()
    if label not in ("yes", "no"):
        raise BadRowError("unknown_answer", f"{value!r} is not yes/no")
    return label


def load_pope(root: Path, skips: SkipLog) -> list[VQASample]:
    """POPE on COCO. Official layout (AoiDragon/POPE): ``coco/coco_pope_{adversarial,popular,random}.json`` (JSON
    lines with ``question_id``, ``image``, ``text``, ``label``) and the COCO ``val2014/`` images; or the lmms-lab/POPE
    mirror: ``data/test-*.parquet`` (``question_id``, ``question``, ``answer``, ``category``, ``image`` struct).
    """
    root = Path(root)
    require_present("pope", root)
    question_files = [root / "coco" / f"coco_pope_{c}.json" for c in POPE_CATEGORIES]
    if any(path.is_file() for path in question_files) and (root / "val2014").is_dir():

        def build_official(item: tuple[str, Any]) -> VQASample:
            category, row = item[0], checked_object(item[1])
            question_id = row_text(row, "question_id")
            return VQASample(
                uid=f"pope/{category}/{question_id}",
                source="pope",
                image=image_in(root / "val2014", row_text(row, "image")),
                question=row_text(row, "text"),
                answer=_yes_no_label(row_field(row, "label")),
                answer_type="yes_no",
                category=category,
                meta={"question_id": question_id},
            )

        rows = (
            (where, (category, row))
            for category, path in zip(POPE_CATEGORIES, question_files, strict=True)
            if path.is_file()
            for where, row in json_lines(path)
        )
        return collect_rows(rows, build_official, skips)

    def build_mirror(row: dict[str, Any]) -> VQASample:
        category, question_id = row_text(row, "category"), row_text(row, "question_id")
        return VQASample(
            uid=f"pope/{category}/{question_id}",
            source="pope",
            image=embedded_image(row.get("image")),
            question=row_text(row, "question"),
            answer=_yes_no_label(row_field(row, "answer")),
            answer_type="yes_no",
            category=category,
            meta={"question_id": question_id, "image_source": str(row.get("image_source") or "")},
        )

    columns = ("question_id", "question", "answer", "category", "image", "image_source")
    return collect_rows(parquet_rows(sorted(root.glob("data/test-*.parquet")), columns), build_mirror, skips)


# --- ChartQA --------------------------------------------------------------------------------------------------------


def load_chartqa(root: Path, skips: SkipLog) -> list[VQASample]:
    """ChartQA test split. Official layout (vis-nlp/ChartQA, "ChartQA Dataset/test"): ``test/test_human.json`` and
    ``test/test_augmented.json`` (lists of ``{imgname, query, label}``) with ``test/png/``; or the
    HuggingFaceM4/ChartQA mirror: ``data/test-*.parquet`` (``image``, ``query``, ``label`` list, ``human_or_machine``).
    Category: "human" or "augmented"; scored with relaxed accuracy.
    """
    root = Path(root)
    require_present("chartqa", root)
    official = [root / "test" / f"test_{c}.json" for c in ("human", "augmented")]
    if all(path.is_file() for path in official):

        def rows() -> Iterator[tuple[str, Any]]:
            for category, path in zip(("human", "augmented"), official, strict=True):
                try:
                    items = json.loads(path.read_text(encoding="utf-8", errors="surrogateescape"))
                except (OSError, json.JSONDecodeError) as err:
                    yield f"{path}:0", (category, 0, BadRowError("bad_json", str(err)))
                    continue
                for row_number, item in enumerate(items if isinstance(items, list) else [items], start=1):
                    yield f"{path}:{row_number}", (category, row_number, item)

        def build_official(item: tuple[str, int, Any]) -> VQASample:
            category, row_number, row = item[0], item[1], checked_object(item[2])
            require_utf8(row)
            label = row_text(row, "label")
            return VQASample(
                uid=f"chartqa/{category}/{row_number}",
                source="chartqa",
                image=image_in(root / "test" / "png", row_text(row, "imgname")),
                question=row_text(row, "query"),
                answer=label,
                answer_type="relaxed",
                category=category,
                meta={"imgname": row_text(row, "imgname")},
            )

        return collect_rows(rows(), build_official, skips)

    def build_mirror(item: tuple[int, dict[str, Any]]) -> VQASample:
        row_number, row = item
        labels = row_field(row, "label")
        labels = [str(x).strip() for x in (labels if isinstance(labels, list) else [labels]) if str(x).strip()]
        if not labels:
            raise BadRowError("missing_field", "label")
        category = {0: "human", 1: "augmented"}.get(row.get("human_or_machine"), "")
        return VQASample(
            uid=f"chartqa/{row_number}",
            source="chartqa",
            image=embedded_image(row.get("image")),
            question=row_text(row, "query"),
            answer=labels[0],
            answer_type="relaxed",
            category=category,
            meta={"answers": labels},
        )

    columns = ("image", "query", "label", "human_or_machine")
    rows = parquet_rows(sorted(root.glob("data/test-*.parquet")), columns)
    return collect_rows(((where, (n, row)) for n, (where, row) in enumerate(rows, start=1)), build_mirror, skips)


# --- registration -----------------------------------------------------------------------------------------------------

for _spec in (
    BenchmarkSpec(
        name="vstar_bench",
        loader=load_vstar_bench,
        answer_type="mcq",
        metric="accuracy",
        hf_repo="craigwu/vstar_bench",
        hf_files=("direct_attributes/*", "relative_position/*"),
        layouts=(("direct_attributes/*.json", "relative_position/*.json"),),
        setting="zoom",
    ),
    BenchmarkSpec(
        name="hr_bench_4k",
        loader=load_hr_bench_4k,
        answer_type="mcq",
        metric="hr_bench",
        hf_repo="DreamMr/HR-Bench",
        hf_files=("hr_bench_4k.parquet",),
        layouts=(("hr_bench_4k.parquet",), ("hr_bench_4k.tsv",)),
        setting="zoom",
    ),
    BenchmarkSpec(
        name="hr_bench_8k",
        loader=load_hr_bench_8k,
        answer_type="mcq",
        metric="hr_bench",
        hf_repo="DreamMr/HR-Bench",
        hf_files=("hr_bench_8k.parquet",),
        layouts=(("hr_bench_8k.parquet",), ("hr_bench_8k.tsv",)),
        setting="zoom",
    ),
    BenchmarkSpec(
        name="mme_realworld_lite",
        loader=load_mme_realworld_lite,
        answer_type="mcq",
        metric="accuracy",
        hf_repo="yifanzhang114/MME-RealWorld-lite-lmms-eval",
        hf_files=("data/*.parquet",),
        layouts=(("data/*.parquet",),),
        setting="zoom",
    ),
    BenchmarkSpec(
        name="pope",
        loader=load_pope,
        answer_type="yes_no",
        metric="pope",
        hf_repo="lmms-lab/POPE",
        hf_files=("data/test-*.parquet",),
        layouts=(("data/test-*.parquet",), ("coco/coco_pope_*.json", "val2014")),
        setting="zoom",
    ),
    BenchmarkSpec(
        name="chartqa",
        loader=load_chartqa,
        answer_type="relaxed",
        metric="accuracy",
        hf_repo="HuggingFaceM4/ChartQA",
        hf_files=("data/test-*.parquet",),
        layouts=(("data/test-*.parquet",), ("test/test_human.json", "test/test_augmented.json", "test/png")),
        setting="zoom",
    ),
):
    register_benchmark(_spec)
