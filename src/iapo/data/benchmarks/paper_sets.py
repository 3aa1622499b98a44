"""The paper setting's data: ReFocus's six test files with label boxes, VTool-R1's chart training parquet,
TableVQA-Bench, and an explicit, seeded table training split.

Test sets (registered in `BENCHMARKS`, so ``name: benchmarks`` picks up those present), one folder each under
``data/<name>/`` (layouts and how sure we are of each field in data/README.md):

    chartqa_h_bar       ReFocus chartQA_h_bar_wbb.json        relaxed accuracy   label boxes: y_values (chart_h)
    chartqa_v_bar       ReFocus chartQA_v_bar_wbb.json        relaxed accuracy   label boxes: x_values (chart_v)
    tablevqa_vwtq       ReFocus tablevqa_wbb.json             WTQ denotation     label boxes: columns + rows
    tablevqa_vwtq_syn   ReFocus tablevqa-vwtq_syn_wbb.json    WTQ denotation     label boxes: columns + rows
    tablevqa_vtabfact   ReFocus tablevqa-vtabfact_wbb.json    true / false       label boxes: columns + rows
    charxiv             ReFocus charxiv-subfigures.json       CharXiv rule       no label boxes

Training sets (`TRAINING_SETS`, never part of ``name: benchmarks``; loaded by `load_training_set`):

    refocus_chart_train   VTool-R1's chart parquet (HF VTOOL/Refocus_Chart), split train (~14k) or test (826)
    tablevqa_bench        TableVQA-Bench (HF terryoo/TableVQA-Bench), split vwtq / vwtq_syn / vtabfact / fintabnetqa / all
    table_train           the three ReFocus table test files cut as VTool-R1 cut them (`table_split`): split train is
                          VTool-R1's table_train.parquet (70 %), heldout its table_test.parquet (30 %), seed 42

Every chart/table sample carries its label boxes in ``meta["refocus"]`` in the `REFOCUS_META` layout (pixels of the
original image), and ``meta["row_key"]``, the identity of the underlying question across files (``tablevqa:<qa_id>``,
``chartqa:<image stem>:<question>``), with which overlaps between training and reported rows are checked.
`reported_overlaps` names every training set that holds rows of a reported set; the data module refuses to train on
them unless told (``data.allow_train_test_overlap: true``). Reporting the table sets with ``split: heldout`` and the
training split's seed reports exactly VTool-R1's table test rows, disjoint from ``table_train`` split ``train``.

    from iapo.data.benchmarks import load_benchmark
    from iapo.data.benchmarks.paper_sets import load_training_set
    samples, skips = load_benchmark("tablevqa_vwtq", "data")
    train, skips = load_training_set("table_train", "data", split="train", seed=42)

Bad rows are skipped and counted by reason: those of `zoom_sets` (``missing_field``, ``missing_image``, ``bad_json``,
``duplicate_uid``, ``unknown_answer``) plus ``bad_boxes`` (a label list and its box list of different lengths, or a
box that is not four numbers), ``undecodable_image`` (the image header cannot be read, so normalised boxes cannot be
converted to pixels) and, in ``table_train``, ``duplicate_question`` (a qa_id already taken from an earlier file, as
VTool-R1 deduplicates).
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iapo.data.benchmarks.readers import (
    checked_object,
    collect_rows,
    embedded_image,
    is_blank,
    parquet_rows,
    row_field,
    row_text,
)
from iapo.data.benchmarks.refocus_files import (
    FigureFinder,
    json_int,
    mapped_boxes,
    parallel_boxes,
    refocus_meta,
    refocus_records,
    upright_size,
)
from iapo.data.benchmarks.registry import (
    BENCHMARKS,
    BenchmarkSpec,
    is_present,
    register_benchmark,
    require_present,
)
from iapo.data.benchmarks.table_split import HELDOUT_FRACTION, TABLE_SPLITS, VTOOL_R1_SEED, vtool_r1_parts
from iapo.data.sample import BadRowError, ImageRef, SkipLog, VQASample

REFOCUS_REPO = "ReFocus/ReFocus_Data"
TABLEVQA_REPO = "terryoo/TableVQA-Bench"
VTOOL_CHART_REPO = "VTOOL/Refocus_Chart"
CHARXIV_REPO = "princeton-nlp/CharXiv"

REFOCUS_FOLDER = "test_data_with_bounding_box*"
"""The Hub folder of ReFocus's test files; on the Hub its name ends with a space, which the glob absorbs."""

CHART_TEST_SETS = ("chartqa_h_bar", "chartqa_v_bar")
TABLE_TEST_SETS = ("tablevqa_vtabfact", "tablevqa_vwtq", "tablevqa_vwtq_syn")
"""In VTool-R1's order of concatenation (vtabfact, tablevqa, vwtq_syn), which decides which duplicate is kept."""
PAPER_TEST_SETS = (*CHART_TEST_SETS, "tablevqa_vwtq", "tablevqa_vwtq_syn", "tablevqa_vtabfact", "charxiv")

TABLEVQA_SUBSETS = {"vwtq": "wtq", "vwtq_syn": "wtq", "vtabfact": "tabfact", "fintabnetqa": "relaxed"}
"""TableVQA-Bench subset -> answer type. FinTabNetQA's official rule (units, currency) is not implemented; relaxed
accuracy is the closest rule we have, and FinTabNetQA is not one of the paper's test sets."""
TABLE_SUBSET_OF = {"tablevqa_vwtq": "vwtq", "tablevqa_vwtq_syn": "vwtq_syn", "tablevqa_vtabfact": "vtabfact"}


SHARED_IMAGE_FOLDERS = ("refocus_images", "charxiv_images")
"""Folders under the data root searched by file name for the figures of the six test files (fetched once by
`make data`: ReFocus_Data's ``images/`` and CharXiv's ``images.zip``, archives unpacked)."""


# --- files fetched for the loaders, not data sets themselves ---------------------------------------------------------


@dataclass(frozen=True)
class SharedFiles:
    """Files the loaders search, fetched into ``data/<name>/`` from `hf_repo`; archives in them are unpacked."""

    name: str
    hf_repo: str
    hf_files: tuple[str, ...]
    layouts: tuple[tuple[str, ...], ...]


SHARED_FILES: dict[str, SharedFiles] = {
    files.name: files
    for files in (
        SharedFiles(
            name="refocus_images",
            hf_repo=REFOCUS_REPO,
            hf_files=("images/*",),
            layouts=(("images/*",),),  # its content is not verified here: archives in it are unpacked in place
        ),
        SharedFiles(
            name="charxiv_images",
            hf_repo=CHARXIV_REPO,
            hf_files=("images.zip",),
            layouts=(("images.zip",), ("images/*",)),  # images/<figure_id>.jpg once unpacked
        ),
    )
}


# --- small readers ------------------------------------------------------------------------------------------------


def _text_answer(value: Any) -> str:
    """A reference answer as text: lists joined with "|" (VTool-R1's "|||" too), numbers as written."""
    if isinstance(value, list | tuple):
        items = [str(item).strip() for item in value if not is_blank(item)]
        if not items:
            raise BadRowError("missing_field", "answer")
        return "|".join(items)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    if not text:
        raise BadRowError("missing_field", "answer")
    return text.replace("|||", "|")


TABFACT_WORDS = {"1": "true", "true": "true", "entailed": "true", "0": "false", "false": "false", "refuted": "false"}


def _tabfact_answer(value: Any) -> str:
    """TabFact's label as "true"/"false" (TableVQA-Bench stores 1/0, as int or text)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    verdict = TABFACT_WORDS.get(str(value).strip().lower())
    if verdict is None:
        raise BadRowError("unknown_answer", f"{value!r} is not a TabFact label (1/0, true/false)")
    return verdict


def _refocus_records(set_dir: Path, file_name: str) -> Iterator[tuple[str, Any]]:
    """(where, (id, record)) for every record of a ReFocus test file (`refocus_records`), found as
    ``<set_dir>/<REFOCUS_FOLDER>/<file_name>`` (the Hub layout) or ``<set_dir>/<file_name>``."""
    candidates = sorted(set_dir.glob(f"{REFOCUS_FOLDER}/{file_name}")) + [set_dir / file_name]
    yield from refocus_records(next(p for p in candidates if p.is_file()))


def _refocus_file_layouts(file_name: str) -> tuple[tuple[str, ...], ...]:
    return ((f"{REFOCUS_FOLDER}/{file_name}",), (file_name,))


def _shared_folders(set_dir: Path) -> list[Path]:
    return [set_dir.parent / name for name in SHARED_IMAGE_FOLDERS]


# --- ChartQA horizontal / vertical bars -------------------------------------------------------------------------


def _load_refocus_chart(name: str, file_name: str, kind: str, set_dir: Path, skips: SkipLog) -> list[VQASample]:
    set_dir = Path(set_dir)
    require_present(name, set_dir)
    # ReFocus's figure_path points into the ChartQA release, so the official ChartQA test images work too.
    finder = FigureFinder(set_dir, [*_shared_folders(set_dir), set_dir.parent / "chartqa" / "test" / "png"])

    def build(item: tuple[str, Any]) -> VQASample:
        key, record = item[0], checked_object(item[1])
        question = row_text(record, "query")
        answer = _text_answer(row_field(record, "answer"))
        figure_path = row_text(record, "figure_path")
        image = finder.find(figure_path)
        if image is None:
            raise BadRowError("missing_image", f"{figure_path} (under {set_dir} or the shared image folders)")
        groups = {
            "x_values": parallel_boxes(record, "x_values", "x_bboxes"),
            "y_values": parallel_boxes(record, "y_values", "y_bboxes"),
        }
        return VQASample(
            uid=f"{name}/{key}",
            source=name,
            image=image,
            question=question,
            answer=answer,
            answer_type="relaxed",
            category=kind,
            meta={
                "refocus": refocus_meta(kind, upright_size(image), groups),
                "id": key,
                "figure_path": figure_path,
                "row_key": f"chartqa:{Path(figure_path).stem}:{question}",
            },
        )

    return collect_rows(_refocus_records(set_dir, file_name), build, skips)


def load_chartqa_h_bar(root: Path, skips: SkipLog) -> list[VQASample]:
    """ReFocus's ChartQA horizontal bar charts: ``chartQA_h_bar_wbb.json``, label boxes on the y axis."""
    return _load_refocus_chart("chartqa_h_bar", "chartQA_h_bar_wbb.json", "chart_h", root, skips)


def load_chartqa_v_bar(root: Path, skips: SkipLog) -> list[VQASample]:
    """ReFocus's ChartQA vertical bar charts: ``chartQA_v_bar_wbb.json``, label boxes on the x axis."""
    return _load_refocus_chart("chartqa_v_bar", "chartQA_v_bar_wbb.json", "chart_v", root, skips)


# --- TableVQA-Bench tables with ReFocus's boxes -------------------------------------------------------------------


def _tablevqa_files(set_dir: Path, subset: str) -> list[Path]:
    """TableVQA-Bench's parquet files of one subset (``data/<subset>-00000-of-00001-<hash>.parquet``)."""
    return sorted(set_dir.glob(f"data/{subset}-*.parquet"))


class EmbeddedTables:
    """Table images of one TableVQA-Bench subset by qa_id, read from ``<root>/tablevqa_bench/`` on first use."""

    def __init__(self, root: Path, subset: str) -> None:
        self.files = _tablevqa_files(Path(root) / "tablevqa_bench", subset)
        self._images: dict[str, Any] | None = None

    def get(self, qa_id: str) -> Any:
        if self._images is None:
            self._images = {
                str(row.get("qa_id")).strip(): row.get("image")
                for _, row in parquet_rows(self.files, ("qa_id", "image"))
            }
        return self._images.get(qa_id)


def _load_refocus_table(
    name: str, file_name: str, set_dir: Path, skips: SkipLog, keep: Callable[[str], bool] | None = None
) -> list[VQASample]:
    """One ReFocus table file; with `keep`, only the records whose key it accepts are read (and can be skipped)."""
    set_dir = Path(set_dir)
    require_present(name, set_dir)
    finder = FigureFinder(set_dir, _shared_folders(set_dir))
    embedded = EmbeddedTables(set_dir.parent, TABLE_SUBSET_OF[name])
    answer_type = TABLEVQA_SUBSETS[TABLE_SUBSET_OF[name]]

    def build(item: tuple[str, Any]) -> VQASample:
        qa_id, record = item[0], checked_object(item[1])
        question = row_text(record, "query")
        raw_answer = row_field(record, "answer")
        answer = _tabfact_answer(raw_answer) if answer_type == "tabfact" else _text_answer(raw_answer)
        figure_path = str(record.get("figure_path") or "").strip()
        image: ImageRef | None = finder.find(figure_path) if figure_path else None
        if image is None:
            stored = embedded.get(qa_id)
            if stored is None:
                raise BadRowError("missing_image", f"{figure_path or qa_id} (on disk or in tablevqa_bench)")
            image = embedded_image(stored)
        groups = {
            "columns": parallel_boxes(record, "column_headers", "columns_bbox"),
            "rows": parallel_boxes(record, "row_starters", "rows_bbox"),
        }
        return VQASample(
            uid=f"{name}/{qa_id}",
            source=name,
            image=image,
            question=question,
            answer=answer,
            answer_type=answer_type,
            category=TABLE_SUBSET_OF[name],
            meta={
                "refocus": refocus_meta("table", upright_size(image), groups),
                "qa_id": qa_id,
                "prompt": str(record.get("prompt") or ""),
                "row_key": f"tablevqa:{qa_id}",
            },
        )

    records = _refocus_records(set_dir, file_name)
    if keep is not None:  # an unreadable file (key "") is reported in every part
        records = (item for item in records if not item[1][0] or keep(item[1][0]))
    return collect_rows(records, build, skips)


TABLE_FILES = {
    "tablevqa_vwtq": "tablevqa_wbb.json",
    "tablevqa_vwtq_syn": "tablevqa-vwtq_syn_wbb.json",
    "tablevqa_vtabfact": "tablevqa-vtabfact_wbb.json",
}


def load_tablevqa_vwtq(root: Path, skips: SkipLog) -> list[VQASample]:
    """TableVQA-Bench VWTQ with ReFocus's column / row boxes: ``tablevqa_wbb.json``; WTQ denotation accuracy."""
    return _load_refocus_table("tablevqa_vwtq", TABLE_FILES["tablevqa_vwtq"], root, skips)


def load_tablevqa_vwtq_syn(root: Path, skips: SkipLog) -> list[VQASample]:
    """TableVQA-Bench VWTQ_syn with ReFocus's boxes: ``tablevqa-vwtq_syn_wbb.json``; WTQ denotation accuracy."""
    return _load_refocus_table("tablevqa_vwtq_syn", TABLE_FILES["tablevqa_vwtq_syn"], root, skips)


def load_tablevqa_vtabfact(root: Path, skips: SkipLog) -> list[VQASample]:
    """TableVQA-Bench VTabFact with ReFocus's boxes: ``tablevqa-vtabfact_wbb.json``; answers "true" / "false"."""
    return _load_refocus_table("tablevqa_vtabfact", TABLE_FILES["tablevqa_vtabfact"], root, skips)


# --- CharXiv ------------------------------------------------------------------------------------------------------


def load_charxiv(root: Path, skips: SkipLog) -> list[VQASample]:
    """ReFocus's CharXiv subset: ``charxiv-subfigures.json`` (``figure_path``, ``prompt`` = the question, ``answer``).

    No label boxes: ReFocus computes subplot candidates with OpenCV when it builds the prompt, so
    ``meta["refocus"]`` is absent. Scored with our CharXiv rule (answer type ``charxiv``).
    """
    set_dir = Path(root)
    require_present("charxiv", set_dir)
    finder = FigureFinder(set_dir, _shared_folders(set_dir))

    def build(item: tuple[str, Any]) -> VQASample:
        key, record = item[0], checked_object(item[1])
        figure_path = row_text(record, "figure_path")
        image = finder.find(figure_path)
        if image is None:
            raise BadRowError("missing_image", f"{figure_path} (under {set_dir} or the shared image folders)")
        return VQASample(
            uid=f"charxiv/{key}",
            source="charxiv",
            image=image,
            question=row_text(record, "prompt"),
            answer=_text_answer(row_field(record, "answer")),
            answer_type="charxiv",
            meta={"id": key, "figure_path": figure_path},
        )

    return collect_rows(_refocus_records(set_dir, "charxiv-subfigures.json"), build, skips)


for _name, _loader, _answer_type, _file in (
    ("chartqa_h_bar", load_chartqa_h_bar, "relaxed", "chartQA_h_bar_wbb.json"),
    ("chartqa_v_bar", load_chartqa_v_bar, "relaxed", "chartQA_v_bar_wbb.json"),
    ("tablevqa_vwtq", load_tablevqa_vwtq, "wtq", "tablevqa_wbb.json"),
    ("tablevqa_vwtq_syn", load_tablevqa_vwtq_syn, "wtq", "tablevqa-vwtq_syn_wbb.json"),
    ("tablevqa_vtabfact", load_tablevqa_vtabfact, "tabfact", "tablevqa-vtabfact_wbb.json"),
    ("charxiv", load_charxiv, "charxiv", "charxiv-subfigures.json"),
):
    register_benchmark(
        BenchmarkSpec(
            name=_name,
            loader=_loader,
            answer_type=_answer_type,
            metric="accuracy",
            hf_repo=REFOCUS_REPO,
            hf_files=(f"{REFOCUS_FOLDER}/{_file}",),
            layouts=_refocus_file_layouts(_file),
        )
    )


# --- training sets ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingSetSpec:
    """A training set: `loader(root, skips, split, seed)` reads it from the data root.

    `hf_repo` / `hf_files` / `layouts` as for `BenchmarkSpec` (empty `hf_repo`: built from other sets, nothing to
    fetch); `splits` are the accepted values of the data spec's `split`.
    """

    name: str
    loader: Callable[[Path, SkipLog, str, int], list[VQASample]]
    splits: tuple[str, ...]
    hf_repo: str
    hf_files: tuple[str, ...]
    layouts: tuple[tuple[str, ...], ...]


TRAINING_SETS: dict[str, TrainingSetSpec] = {}


def _check_split(name: str, split: str) -> None:
    splits = TRAINING_SETS[name].splits
    if split not in splits:
        raise ValueError(f"{name}: split must be one of {', '.join(splits)}, got {split!r}")


def _require_training_files(name: str, set_dir: Path) -> None:
    spec = TRAINING_SETS[name]
    if not is_present(spec, set_dir):
        expected = " or ".join(" + ".join(str(set_dir / p) for p in layout) for layout in spec.layouts)
        raise FileNotFoundError(
            f"training set {name!r} not found: expected {expected}. Run `make data SETS=paper` (or "
            f"`python -m iapo.data.download --sets {name}`) to fetch it from huggingface.co/datasets/{spec.hf_repo}, "
            "or place the files as described in data/README.md."
        )


def _question_from_prompt(prompt: Any) -> str | None:
    """The user request inside a VTool-R1 prompt (a string, or chat messages whose content holds it)."""
    if isinstance(prompt, list):
        prompt = "\n".join(str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in prompt)
    match = re.search(r"# USER REQUEST #:\s*(.*?)\s*(?:\n|$)", str(prompt or ""))
    if match is None or not match.group(1).strip():
        return None
    return match.group(1).strip()


def _json_object(value: Any, what: str) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    try:
        parsed = json.loads(value, parse_int=json_int)
    except (TypeError, ValueError, RecursionError) as err:
        raise BadRowError("bad_json", f"{what} is not a JSON object ({type(err).__name__}: {err})"[:500]) from err
    if not isinstance(parsed, dict):
        raise BadRowError("bad_json", f"{what} is not a JSON object")
    return parsed


def load_refocus_chart_train(root: Path, skips: SkipLog, split: str = "train", seed: int = 0) -> list[VQASample]:
    """VTool-R1's chart training data, HF ``VTOOL/Refocus_Chart``: ``<split>.parquet`` (train ~14,344 rows, test
    826) [T], or ``data/<split>-*.parquet``.

    Two row layouts are read. training-v2 [T]: ``id``, ``source`` (h_bar / v_bar, or chartqa_h_bar / ...),
    ``images`` (list of ``{bytes, path}``), ``reward_model.ground_truth``, ``extra_info`` (``question``, ``answer``,
    ``index``, ``tools_kwargs.metadata``: a JSON string with ``x_values_bbox`` / ``y_values_bbox`` label -> box maps).
    The original EasyR1 fork [V]: ``metadata`` (JSON string, same maps), ``figure_id``, ``query``, ``answer``,
    ``images`` (list of raw bytes). A group of boxes within [0, 1] is taken as fractions of the image, others as pixels [I].
    """
    _check_split("refocus_chart_train", split)
    set_dir = Path(root) / "refocus_chart_train"
    _require_training_files("refocus_chart_train", set_dir)
    files = sorted(set_dir.glob(f"{split}*.parquet")) + sorted(set_dir.glob(f"data/{split}-*.parquet"))
    columns = ("id", "source", "prompt", "images", "reward_model", "extra_info", "metadata", "figure_id", "query")
    columns += ("answer", "figure_path")

    def build(item: tuple[int, dict[str, Any]]) -> VQASample:
        number, row = item
        extra = row.get("extra_info") if isinstance(row.get("extra_info"), dict) else {}
        question = next(
            (str(v).strip() for v in (extra.get("question"), row.get("query")) if not is_blank(v)), None
        ) or _question_from_prompt(row.get("prompt"))
        if not question:
            raise BadRowError("missing_field", "question (extra_info.question, query or the prompt's user request)")
        reward = row.get("reward_model") if isinstance(row.get("reward_model"), dict) else {}
        answer = next(
            (v for v in (extra.get("answer"), reward.get("ground_truth"), row.get("answer")) if not is_blank(v)), None
        )
        if answer is None:
            raise BadRowError("missing_field", "answer")
        images = row.get("images")
        image = embedded_image(images[0] if isinstance(images, list | tuple) and len(images) else None)
        tools = extra.get("tools_kwargs") if isinstance(extra.get("tools_kwargs"), dict) else {}
        raw_metadata = tools.get("metadata", row.get("metadata"))
        if is_blank(raw_metadata):
            raise BadRowError("missing_field", "metadata (label boxes)")
        metadata = _json_object(raw_metadata, "metadata")
        x_pairs = mapped_boxes(metadata.get("x_values_bbox"), metadata.get("x_values"))
        y_pairs = mapped_boxes(metadata.get("y_values_bbox"), metadata.get("y_values"))
        source = str(row.get("source") or metadata.get("source") or metadata.get("type") or "")
        kind = (
            "chart_h" if "h_bar" in source else "chart_v" if "v_bar" in source else "chart_h" if y_pairs else "chart_v"
        )
        stem = str(row.get("id") or row.get("figure_id") or Path(str(row.get("figure_path") or "")).stem or number)
        index = extra.get("index", number)
        return VQASample(
            uid=f"refocus_chart_train/{split}/{stem}/{index}",
            source="refocus_chart_train",
            image=image,
            question=question,
            answer=_text_answer(answer),
            answer_type="relaxed",
            category=kind,
            meta={
                "refocus": refocus_meta(kind, upright_size(image), {"x_values": x_pairs, "y_values": y_pairs}),
                "id": stem,
                "row_key": f"chartqa:{Path(stem).stem}:{question}",
            },
        )

    rows = parquet_rows(files, columns)
    return collect_rows(((where, (n, row)) for n, (where, row) in enumerate(rows, start=1)), build, skips)


def load_tablevqa_bench(root: Path, skips: SkipLog, split: str = "all", seed: int = 0) -> list[VQASample]:
    """TableVQA-Bench, HF ``terryoo/TableVQA-Bench``: ``data/<subset>-*.parquet`` with ``qa_id``, ``question``,
    ``gt``, ``image`` [V]. `split` is a subset (vwtq, vwtq_syn, vtabfact, fintabnetqa) or ``all``.

    No label boxes (``meta["refocus"]`` absent): for the editing tools use ``table_train``, which carries ReFocus's
    boxes. The subsets are the sources of three reported test sets, so `reported_overlaps` flags them.
    """
    _check_split("tablevqa_bench", split)
    set_dir = Path(root) / "tablevqa_bench"
    _require_training_files("tablevqa_bench", set_dir)
    subsets = list(TABLEVQA_SUBSETS) if split == "all" else [split]

    def build(item: tuple[str, dict[str, Any]]) -> VQASample:
        subset, row = item
        qa_id = row_text(row, "qa_id")
        answer_type = TABLEVQA_SUBSETS[subset]
        gt = row_field(row, "gt")
        return VQASample(
            uid=f"tablevqa_bench/{subset}/{qa_id}",
            source="tablevqa_bench",
            image=embedded_image(row.get("image")),
            question=row_text(row, "question"),
            answer=_tabfact_answer(gt) if answer_type == "tabfact" else _text_answer(gt),
            answer_type=answer_type,
            category=subset,
            meta={"qa_id": qa_id, "row_key": f"tablevqa:{qa_id}"},
        )

    rows = (
        (where, (subset, row))
        for subset in subsets
        for where, row in parquet_rows(_tablevqa_files(set_dir, subset), ("qa_id", "question", "gt", "image"))
    )
    return collect_rows(rows, build, skips)


def table_parts(root: Path, seed: int) -> dict[tuple[str, str], str]:
    """{(table test set, key): "train" or "heldout"}: VTool-R1's cut of the three ReFocus table files under `root`.

    Every record counts, loadable or not, since VTool-R1's permutation runs over all of them; a key already taken
    from an earlier file (VTool-R1's order: vtabfact, vwtq, vwtq_syn) belongs to neither part.
    """
    ordered: list[tuple[str, str]] = []
    taken: set[str] = set()
    for name in TABLE_TEST_SETS:
        set_dir = Path(root) / name
        if not is_present(BENCHMARKS[name], set_dir):
            continue
        for _, (key, _record) in _refocus_records(set_dir, TABLE_FILES[name]):
            if key and key not in taken:
                taken.add(key)
                ordered.append((name, key))
    parts = vtool_r1_parts([key for _, key in ordered], seed)
    return {(name, key): parts[key] for name, key in ordered}


def _require_table_files(root: Path) -> None:
    missing = [name for name in TABLE_TEST_SETS if not is_present(BENCHMARKS[name], Path(root) / name)]
    if missing:
        raise FileNotFoundError(
            f"the table split is cut from the three ReFocus table files; missing: {', '.join(missing)} under {root}. "
            "Run `make data SETS=paper`, or see data/README.md."
        )


def load_table_part(
    name: str, root: Path, skips: SkipLog, split: str, seed: int, parts: dict[tuple[str, str], str] | None = None
) -> list[VQASample]:
    """The rows of table test set `name` in part `split` of VTool-R1's cut with `seed` (`table_parts`, computed
    unless given)."""
    _require_table_files(root)
    parts = table_parts(root, seed) if parts is None else parts
    return _load_refocus_table(
        name, TABLE_FILES[name], Path(root) / name, skips, keep=lambda key: parts.get((name, key)) == split
    )


def load_table_train(root: Path, skips: SkipLog, split: str = "train", seed: int = VTOOL_R1_SEED) -> list[VQASample]:
    """The table training split, built as VTool-R1 built its own (`table_split`).

    The rows of the three ReFocus table test files (with their label boxes) in part `split` of VTool-R1's cut with
    `seed`: ``train`` is VTool-R1's ``table_train.parquet``, ``heldout`` its ``table_test.parquet``. A key already
    taken from an earlier file is counted as ``duplicate_question``. The same questions are in the reported table
    sets: report those with ``split: heldout`` and the same seed (`load_table_part`) to keep them disjoint.
    """
    _check_split("table_train", split)
    _require_table_files(root)
    parts = table_parts(root, seed)
    out = []
    for name in TABLE_TEST_SETS:
        for where, (key, _record) in _refocus_records(Path(root) / name, TABLE_FILES[name]):
            if key and (name, key) not in parts:
                skips.skip("duplicate_question", where, f"qa_id {key} already taken from an earlier file")
        rows = load_table_part(name, root, skips, split, seed, parts)
        out += [dataclasses.replace(sample, source="table_train", category=name) for sample in rows]
    return out


for _training in (
    TrainingSetSpec(
        name="refocus_chart_train",
        loader=load_refocus_chart_train,
        splits=("train", "test"),
        hf_repo=VTOOL_CHART_REPO,
        hf_files=("*.parquet", "data/*.parquet"),
        layouts=(("train*.parquet",), ("test*.parquet",), ("data/*.parquet",)),
    ),
    TrainingSetSpec(
        name="tablevqa_bench",
        loader=load_tablevqa_bench,
        splits=(*TABLEVQA_SUBSETS, "all"),
        hf_repo=TABLEVQA_REPO,
        hf_files=("data/*.parquet",),
        layouts=(("data/*.parquet",),),
    ),
    TrainingSetSpec(
        name="table_train",
        loader=load_table_train,
        splits=TABLE_SPLITS,
        hf_repo="",
        hf_files=(),
        layouts=(),
    ),
):
    TRAINING_SETS[_training.name] = _training


def _subset(samples: list[VQASample], limit: int | None, seed: int) -> list[VQASample]:
    """A subset of `limit` samples drawn with `seed`, in file order (all of them without a limit)."""
    if limit is None or limit >= len(samples):
        return samples
    keep = sorted(random.Random(seed).sample(range(len(samples)), limit))
    return [samples[i] for i in keep]


def load_training_set(
    name: str,
    root: str | Path = "data",
    split: str = "train",
    seed: int = 0,
    strict: bool = False,
    limit: int | None = None,
) -> tuple[list[VQASample], SkipLog]:
    """Load training set `name` from the data root; with `limit`, a subset of that size drawn with `seed`."""
    if name not in TRAINING_SETS:
        raise ValueError(f"unknown training set {name!r}; known: {', '.join(TRAINING_SETS)}")
    skips = SkipLog(strict=strict)
    samples = TRAINING_SETS[name].loader(Path(root), skips, split, seed)
    return _subset(samples, limit, seed), skips


def reads_split(name: str, split: str) -> bool:
    """Whether data set `name` with `split` is read by `load_with_split` (a training set, or the ``heldout`` part of
    a table test set) rather than whole by `load_benchmark`."""
    return name in TRAINING_SETS or (name in TABLE_TEST_SETS and split == "heldout")


def load_with_split(
    name: str,
    root: str | Path = "data",
    split: str = "train",
    seed: int = 0,
    strict: bool = False,
    limit: int | None = None,
) -> tuple[list[VQASample], SkipLog]:
    """A training set by split, or a table test set's rows left out of ``table_train`` with `seed`
    (`load_table_part`: VTool-R1's table test rows with seed 42)."""
    if name in TRAINING_SETS:
        return load_training_set(name, root, split, seed, strict, limit)
    if not reads_split(name, split):
        raise ValueError(f"{name} with split {split!r} is read whole by load_benchmark")
    skips = SkipLog(strict=strict)
    return _subset(load_table_part(name, Path(root), skips, split, seed), limit, seed), skips


# --- which reported rows a data set holds -----------------------------------------------------------------------


def rows_held(name: str, split: str, seed: int) -> dict[str, str]:
    """{reported test set: part} for the test-set rows data set `name` holds with this split and seed.

    A part is "all", "train@<seed>" or "heldout@<seed>" (the parts of `table_parts`). Sets made by the project
    (synthetic, JSONL) hold none.
    """
    if name == "table_train":
        return {test_set: f"{split}@{seed}" for test_set in TABLE_TEST_SETS}
    if name == "tablevqa_bench":
        chosen = TABLEVQA_SUBSETS if split == "all" else [split]
        return {test_set: "all" for test_set, subset in TABLE_SUBSET_OF.items() if subset in chosen}
    if name == "refocus_chart_train":  # its test split is ReFocus's 826 chart test rows [T]; ChartQA test holds them
        return {test_set: "all" for test_set in (*CHART_TEST_SETS, "chartqa")} if split == "test" else {}
    if name in TABLE_TEST_SETS:
        return {name: f"heldout@{seed}" if split == "heldout" else "all"}
    if name in CHART_TEST_SETS:
        return {name: "all", "chartqa": "all"}
    if name in BENCHMARKS:
        return {name: "all"}
    return {}


def selection(name: str, split: str, seed: int, rows: int) -> dict[str, Any]:
    """Which rows of data set `name` a run read, for its results file: split, seed, rows kept after skips and, for
    a table test set's ``heldout`` part, the training split those rows exclude."""
    chosen: dict[str, Any] = {"split": split, "seed": seed, "rows": rows}
    if name in TABLE_TEST_SETS and split == "heldout":
        chosen["excludes"] = (
            f"table_train split train, seed {seed}: the questions of the three ReFocus table files that VTool-R1's "
            f"cut (shuffle, then train_test_split with test_size {HELDOUT_FRACTION}, seed {seed}) puts in training"
        )
    return chosen


def _parts_overlap(a: str, b: str) -> bool:
    """Whether two parts of a test set share rows: only "train@s" and "heldout@s" of one seed are disjoint."""
    if a == "all" or b == "all":
        return True
    (part_a, seed_a), (part_b, seed_b) = a.split("@"), b.split("@")
    return part_a == part_b or seed_a != seed_b


def reported_overlaps(training: Sequence[Any], reported: Sequence[Any]) -> list[str]:
    """One line per (training spec, reported spec) pair that share test rows; specs have `name`, `split`, `seed`."""
    lines = []
    for train_spec in training:
        held = rows_held(train_spec.name, train_spec.split, train_spec.seed)
        for report_spec in reported:
            shared = [
                f"{test_set} ({held[test_set]} vs {part})"
                for test_set, part in rows_held(report_spec.name, report_spec.split, report_spec.seed).items()
                if test_set in held and _parts_overlap(held[test_set], part)
            ]
            if shared:
                lines.append(
                    f"training set {train_spec.name} (split {train_spec.split}, seed {train_spec.seed}) and reported "
                    f"set {report_spec.name} (split {report_spec.split}) share rows of {', '.join(shared)}"
                )
    return lines
