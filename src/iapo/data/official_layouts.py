"""A data root in the paper setting's release layouts, drawn from the synthetic charts and tables: everything
`configs/iapo.yaml` and `make paper` read, so the whole recipe runs offline on the files a user downloads.

Written under `root`, as `make data SETS=paper` lays them out (data/README.md):

- ReFocus's six test files in the Hub folder ``<set>/test_data_with_bounding_box /`` (its name ends with a space),
  JSON objects id -> record with normalised label boxes in parallel lists, figures under ``<set>/images/``;
- VTool-R1's chart training parquet in both layouts: ``refocus_chart_train/train.parquet`` (training-v2: chat
  prompt, ``images`` as ``{bytes, path}``, pixel boxes in ``extra_info.tools_kwargs.metadata``) and
  ``train_full.parquet`` (the EasyR1 fork: ``metadata``, ``query``, ``answer``, raw image bytes);
- TableVQA-Bench's parquets ``tablevqa_bench/data/<subset>-00000-of-00001-<hash>.parquet`` holding the same table
  questions (TableVQA-Bench is their source).

A vwtq_syn question repeats a vwtq qa_id, as the real files do, so VTool-R1's deduplication has work to do.
With `--zoom`, the zoom setting's files too: V* Bench (``vstar_bench/<category>/<stem>.{jpg,json}``) and the
training JSONL that `configs/zoom.yaml` reads (``train/train.jsonl``), both from the synthetic visual search.

    python -m iapo.data.official_layouts --out logs/recipe-rehearsal/data --rows 6 [--zoom]
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from iapo.data import synthetic
from iapo.data.sample import OPTION_LETTERS, VQASample
from iapo.data.synthetic_charts import SyntheticChartsConfig, build_split

REFOCUS_HUB_FOLDER = "test_data_with_bounding_box "
IMAGE_SIZE = 224
"""Canvas side of the drawn figures: the tiny models' input size, so nothing is resized."""


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _normalised(box: list[float], size: tuple[int, int]) -> dict[str, float]:
    width, height = size
    x1, y1, x2, y2 = box
    return {"x1": x1 / width, "y1": y1 / height, "x2": x2 / width, "y2": y2 / height}


def _samples(kind: str, split: str, rows: int, seed: int) -> list[VQASample]:
    config = SyntheticChartsConfig(kinds=(kind,), image_size=IMAGE_SIZE, font_size=12)
    return build_split(split, rows, config, seed=seed)


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1))


def _write_parquet(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def _save_figure(set_dir: Path, name: str, image: Image.Image) -> None:
    (set_dir / "images").mkdir(parents=True, exist_ok=True)
    image.save(set_dir / "images" / name)


def write_chart_test_file(root: Path, name: str, rows: int, seed: int) -> int:
    """``chartqa_v_bar`` (labels on the x axis) or ``chartqa_h_bar`` (on the y axis), ReFocus's record layout."""
    kind, file_name = {
        "chartqa_v_bar": ("chart_v", "chartQA_v_bar_wbb.json"),
        "chartqa_h_bar": ("chart_h", "chartQA_h_bar_wbb.json"),
    }[name]
    set_dir = root / name
    records = {}
    for index, sample in enumerate(_samples(kind, f"{name}-test", rows, seed)):
        stem = f"{name}_{index}"
        _save_figure(set_dir, f"{stem}.png", sample.image)
        size = sample.image.size
        groups = {key: sample.meta["refocus"][key] for key in ("x_values", "y_values")}
        records[str(index)] = {
            "figure_id": stem,
            "figure_path": f"data/ChartQA Dataset/test/png/{stem}.png",
            "annotation_path": f"data/ChartQA Dataset/test/annotations/{stem}.json",
            "query": sample.question,
            "answer": sample.answer,
            "figure_bbox": {"x1": 0.0, "y1": 0.0, "x2": 1.0, "y2": 1.0},
            "x_values": [label for label, _ in groups["x_values"]],
            "x_bboxes": [_normalised(box, size) for _, box in groups["x_values"]],
            "y_values": [label for label, _ in groups["y_values"]],
            "y_bboxes": [_normalised(box, size) for _, box in groups["y_values"]],
            "x_intervals": [],
            "y_intervals": [],
        }
    _write_json(set_dir / REFOCUS_HUB_FOLDER / file_name, records)
    return len(records)


TABLE_TEST_FILES = {
    "tablevqa_vtabfact": ("tablevqa-vtabfact_wbb.json", "vtabfact"),
    "tablevqa_vwtq": ("tablevqa_wbb.json", "vwtq"),
    "tablevqa_vwtq_syn": ("tablevqa-vwtq_syn_wbb.json", "vwtq_syn"),
}


def _table_question(sample: VQASample, subset: str, index: int) -> tuple[str, Any]:
    """The question and TableVQA-Bench answer: WTQ asks for a cell, TabFact states a value that is right on even
    rows and wrong on odd ones (answer 1 / 0)."""
    if subset != "vtabfact":
        return sample.question, [sample.answer]
    claimed = sample.answer if index % 2 == 0 else str(int(sample.answer) + 5)
    return f"The value of {sample.meta['target']} is {claimed}.", int(index % 2 == 0)


def write_table_test_files(root: Path, rows: int, seed: int) -> dict[str, int]:
    """The three ReFocus table files (ids ``<subset>-<i>``; the last vwtq_syn row reuses ``vwtq-0``) and the
    TableVQA-Bench parquets with the same questions and embedded images."""
    counts = {}
    for name, (file_name, subset) in TABLE_TEST_FILES.items():
        set_dir = root / name
        records, bench_rows = {}, []
        for index, sample in enumerate(_samples("table", f"{name}-test", rows, seed)):
            qa_id = "vwtq-0" if subset == "vwtq_syn" and index == rows - 1 else f"{subset}-{index}"
            question, answer = _table_question(sample, subset, index)
            size = sample.image.size
            columns, table_rows = sample.meta["refocus"]["columns"], sample.meta["refocus"]["rows"]
            _save_figure(set_dir, f"{qa_id}.png", sample.image)
            html = "".join(
                "<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in sample.meta["table"]
            )
            records[qa_id] = {
                "figure_id": qa_id,
                "figure_path": f"data/tablevqabench/images-{subset}/{qa_id}.png",
                "query": question,
                "prompt": "Answer the question based on the table.",
                "answer": answer,
                "text_html_table": f"<table>{html}</table>",
                "column_headers": [label for label, _ in columns],
                "columns_bbox": [_normalised(box, size) for _, box in columns],
                "row_starters": [label for label, _ in table_rows],
                "rows_bbox": [_normalised(box, size) for _, box in table_rows],
                "table_bbox": {"x1": 0.0, "y1": 0.0, "x2": 1.0, "y2": 1.0},
                "figure_path_wCR": f"tablevqabench/images-{subset}_wCR/{qa_id}.png",
            }
            bench_rows.append(
                {
                    "qa_id": qa_id,
                    "question": question,
                    "gt": answer if isinstance(answer, int) else "|".join(answer),
                    "image": {"bytes": _png(sample.image), "path": f"{qa_id}.png"},
                    "text_html_table": f"<table>{html}</table>",
                }
            )
        _write_json(set_dir / REFOCUS_HUB_FOLDER / file_name, records)
        _write_parquet(root / "tablevqa_bench" / "data" / f"{subset}-00000-of-00001-rehearsal.parquet", bench_rows)
        counts[name] = len(records)
    return counts


def write_charxiv_test_file(root: Path, rows: int, seed: int) -> int:
    """``charxiv-subfigures.json``: id -> ``figure_path``, ``prompt`` (the question), ``answer``; JPEG figures."""
    set_dir = root / "charxiv"
    records = {}
    for index, sample in enumerate(_samples("chart_v", "charxiv-test", rows, seed)):
        _save_figure(set_dir, f"{index}.jpg", sample.image.convert("RGB"))
        records[str(index)] = {
            "figure_path": f"data/charxiv/images/{index}.jpg",
            "prompt": sample.question,
            "answer": sample.answer,
        }
    _write_json(set_dir / REFOCUS_HUB_FOLDER / "charxiv-subfigures.json", records)
    return len(records)


def _pixel_map(pairs: list) -> dict[str, list[float]]:
    return {label: [float(v) for v in box] for label, box in pairs}


def write_chart_training_parquets(root: Path, rows: int, seed: int) -> int:
    """VTool-R1's chart training data: ``train.parquet`` in the training-v2 layout and ``train_full.parquet`` in
    the EasyR1 fork's, `rows` rows each (pixel label boxes, as VTool-R1 stores them)."""
    samples = _samples("chart_v", "chart-train", rows, seed) + _samples("chart_h", "chart-train", rows, seed)
    training_v2, fork = [], []
    for index, sample in enumerate(samples):
        refocus = sample.meta["refocus"]
        source = "v_bar" if refocus["kind"] == "chart_v" else "h_bar"
        metadata = {
            "source": source,
            "x_values": [label for label, _ in refocus["x_values"]],
            "y_values": [label for label, _ in refocus["y_values"]],
            "x_values_bbox": _pixel_map(refocus["x_values"]) or {"x1": "none"},
            "y_values_bbox": _pixel_map(refocus["y_values"]) or {"x1": "none"},
            "figure_bbox": [0, 0, *sample.image.size],
        }
        image = _png(sample.image)
        if index % 2 == 0:
            training_v2.append(
                {
                    "id": f"chart_{index}",
                    "source": source,
                    "split": "train",
                    "data_source": "ReFocus/ReFocus_Data",
                    "ability": "chart",
                    "agent_name": "vtool_agent",
                    "prompt": [{"role": "user", "content": f"<image> # USER REQUEST #: {sample.question}"}],
                    "images": [{"bytes": image, "path": f"chart_{index}.png"}],
                    "reward_model": {"style": "rule", "ground_truth": sample.answer},
                    "extra_info": {
                        "split": "train",
                        "index": index,
                        "question": sample.question,
                        "answer": sample.answer,
                        "need_tools_kwargs": True,
                        "tools_kwargs": {"name": "refocus", "metadata": json.dumps(metadata)},
                    },
                }
            )
        else:
            fork.append(
                {
                    "metadata": json.dumps({**metadata, "type": source}),
                    "figure_id": f"chart_{index}",
                    "figure_path": f"data/chartqa/chart_{index}.png",
                    "query": sample.question,
                    "prompt": f"<image> # USER REQUEST #: {sample.question}\n",
                    "answer": sample.answer,
                    "images": [image],
                }
            )
    _write_parquet(root / "refocus_chart_train" / "train.parquet", training_v2)
    _write_parquet(root / "refocus_chart_train" / "train_full.parquet", fork)
    return len(samples)


def write_paper_data(root: str | Path, rows: int = 6, seed: int = 0) -> dict[str, int]:
    """Every file the paper setting reads, `rows` questions per test set (and 2 × `rows` chart training rows);
    returns the rows written per set."""
    root = Path(root)
    counts = {name: write_chart_test_file(root, name, rows, seed) for name in ("chartqa_h_bar", "chartqa_v_bar")}
    counts.update(write_table_test_files(root, rows, seed))
    counts["charxiv"] = write_charxiv_test_file(root, rows, seed)
    counts["refocus_chart_train"] = write_chart_training_parquets(root, rows, seed)
    return counts


def write_zoom_data(root: str | Path, rows: int = 6, seed: int = 0) -> dict[str, int]:
    """V* Bench's layout (``<category>/<stem>.jpg`` and ``.json``: question, options with the right one first,
    target_object, bbox as [x, y, w, h]; its two categories share the `rows`) and ``train/train.jsonl``, from the
    synthetic visual search."""
    root = Path(root)
    for index, sample in enumerate(synthetic.build_split("vstar-test", rows, seed=seed)):
        category = root / "vstar_bench" / ("direct_attributes", "relative_position")[index % 2]
        category.mkdir(parents=True, exist_ok=True)
        right = OPTION_LETTERS.index(sample.answer)
        options = [sample.options[right], *(o for i, o in enumerate(sample.options) if i != right)]
        x1, y1, x2, y2 = sample.meta["bbox"]
        sample.image.convert("RGB").save(category / f"sa_{index}.jpg")
        annotation = {"target_object": ["target"], "bbox": [[x1, y1, x2 - x1, y2 - y1]], "question": sample.question}
        _write_json(category / f"sa_{index}.json", {**annotation, "options": options})
    synthetic.write_split(root / "train", "train", 2 * rows, seed=seed)
    return {"vstar_bench": rows, "train": 2 * rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the paper setting's data files in their release layouts.")
    parser.add_argument("--out", type=Path, required=True, help="the data root to fill")
    parser.add_argument("--rows", type=int, default=6, help="questions per test set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--zoom", action="store_true", help="also the zoom setting's V* Bench and training JSONL")
    args = parser.parse_args(argv)
    counts = write_paper_data(args.out, args.rows, args.seed)
    if args.zoom:
        counts.update(write_zoom_data(args.out, args.rows, args.seed))
    for name, count in counts.items():
        print(f"{name}: {count} rows")


if __name__ == "__main__":
    main()
