"""The paper setting's six test sets: ReFocus's test files with label boxes, and VTool-R1's cut of the table files.

Registered in `BENCHMARKS` with ``setting="paper"``, so ``name: paper_benchmarks`` picks up those present; one folder
each under ``data/<name>/`` (layouts and how sure we are of each field in data/README.md):

    chartqa_h_bar       ReFocus chartQA_h_bar_wbb.json        relaxed accuracy   label boxes: y_values (chart_h)
    chartqa_v_bar       ReFocus chartQA_v_bar_wbb.json        relaxed accuracy   label boxes: x_values (chart_v)
    tablevqa_vwtq       ReFocus tablevqa_wbb.json             WTQ denotation     label boxes: columns + rows
    tablevqa_vwtq_syn   ReFocus tablevqa-vwtq_syn_wbb.json    WTQ denotation     label boxes: columns + rows
    tablevqa_vtabfact   ReFocus tablevqa-vtabfact_wbb.json    true / false       label boxes: columns + rows
    charxiv             ReFocus charxiv-subfigures.json       CharXiv rule       no label boxes

Every chart/table sample carries its label boxes in ``meta["refocus"]`` in the `REFOCUS_META` layout (pixels of the
original image), and ``meta["row_key"]``, the identity of the underlying question across files (``tablevqa:<qa_id>``,
``chartqa:<image stem>:<question>``), with which `train_test_overlap` checks training against reported rows. A table
set read with ``split: heldout`` is the part of its rows that VTool-R1's cut (`table_split`, `table_parts`) leaves
out of training.

    from iapo.data.benchmarks import load_benchmark
    samples, skips = load_benchmark("tablevqa_vwtq", "data")

Bad rows are skipped and counted by reason: those of `zoom_sets` (``missing_field``, ``missing_image``, ``bad_json``,
``duplicate_uid``, ``unknown_answer``) plus ``bad_boxes`` (a label list and its box list of different lengths, or a
box that is not four numbers) and ``undecodable_image`` (the image header cannot be read, so normalised boxes cannot
be converted to pixels).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
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
from iapo.data.benchmarks.table_split import VTOOL_R1_SEED, vtool_r1_parts
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


# --- VTool-R1's cut of the table files -------------------------------------------------------------------------


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


def _load_heldout(name: str, root: Path, skips: SkipLog, seed: int) -> list[VQASample]:
    return load_table_part(name, root, skips, "heldout", seed)


for _name, _loader, _answer_type, _file in (
    ("chartqa_h_bar", load_chartqa_h_bar, "relaxed", "chartQA_h_bar_wbb.json"),
    ("chartqa_v_bar", load_chartqa_v_bar, "relaxed", "chartQA_v_bar_wbb.json"),
    ("tablevqa_vwtq", load_tablevqa_vwtq, "wtq", "tablevqa_wbb.json"),
    ("tablevqa_vwtq_syn", load_tablevqa_vwtq_syn, "wtq", "tablevqa-vwtq_syn_wbb.json"),
    ("tablevqa_vtabfact", load_tablevqa_vtabfact, "tabfact", "tablevqa-vtabfact_wbb.json"),
    ("charxiv", load_charxiv, "charxiv", "charxiv-subfigures.json"),
):
    _table = _name in TABLE_TEST_SETS
    register_benchmark(
        BenchmarkSpec(
            name=_name,
            loader=_loader,
            answer_type=_answer_type,
            metric="accuracy",
            hf_repo=REFOCUS_REPO,
            hf_files=(f"{REFOCUS_FOLDER}/{_file}",),
            layouts=_refocus_file_layouts(_file),
            setting="paper",
            # `split: heldout` reads the rows VTool-R1's cut leaves out of training, with its seed unless told
            heldout=functools.partial(_load_heldout, _name) if _table else None,
            default_seed=VTOOL_R1_SEED if _table else 0,
        )
    )
