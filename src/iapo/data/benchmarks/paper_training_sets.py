"""The paper setting's training sets: VTool-R1's chart parquet, TableVQA-Bench, and VTool-R1's table training split.

Registered in `TRAINING_SETS` (never part of ``name: benchmarks``) and as data sources (`iapo.data.sources`):

    refocus_chart_train   VTool-R1's chart parquet (HF VTOOL/Refocus_Chart), split train (~14k) or test (826)
    tablevqa_bench        TableVQA-Bench (HF terryoo/TableVQA-Bench), split vwtq / vwtq_syn / vtabfact / fintabnetqa / all
    table_train           the three ReFocus table test files cut as VTool-R1 cut them (`table_split`): split train is
                          VTool-R1's table_train.parquet (70 %), heldout its table_test.parquet (30 %), seed 42

    from iapo.data.benchmarks.paper_training_sets import load_training_set
    train, skips = load_training_set("table_train", "data", split="train", seed=42)

Bad rows are skipped and counted by reason as in `paper_test_sets`, plus, in ``table_train``, ``duplicate_question``
(a qa_id already taken from an earlier file, as VTool-R1 deduplicates). Which reported rows each set holds is the
train/test overlap policy's (`train_test_overlap`).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iapo.data.benchmarks.paper_test_sets import (
    TABLE_FILES,
    TABLE_TEST_SETS,
    TABLEVQA_REPO,
    TABLEVQA_SUBSETS,
    VTOOL_CHART_REPO,
    _refocus_records,
    _require_table_files,
    _tabfact_answer,
    _tablevqa_files,
    _text_answer,
    load_table_part,
    table_parts,
)
from iapo.data.benchmarks.readers import collect_rows, embedded_image, is_blank, parquet_rows, row_field, row_text
from iapo.data.benchmarks.refocus_files import json_int, mapped_boxes, refocus_meta, upright_size
from iapo.data.benchmarks.registry import draw_subset, is_present
from iapo.data.benchmarks.table_split import TABLE_SPLITS, VTOOL_R1_SEED
from iapo.data.sample import BadRowError, SkipLog, VQASample


@dataclass(frozen=True)
class TrainingSetSpec:
    """A training set: `loader(root, skips, split, seed)` reads it from the data root.

    `hf_repo` / `hf_files` / `layouts` as for `BenchmarkSpec` (empty `hf_repo`: built from other sets, nothing to
    fetch); `splits` are the accepted values of the data spec's `split`; `default_seed` the seed of a data spec that
    names none.
    """

    name: str
    loader: Callable[[Path, SkipLog, str, int], list[VQASample]]
    splits: tuple[str, ...]
    hf_repo: str
    hf_files: tuple[str, ...]
    layouts: tuple[tuple[str, ...], ...]
    default_seed: int = 0


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
        default_seed=VTOOL_R1_SEED,
    ),
):
    TRAINING_SETS[_training.name] = _training


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
    return draw_subset(samples, limit, seed), skips
