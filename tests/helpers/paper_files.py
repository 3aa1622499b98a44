"""Small files of the paper setting in their release layouts, written by tests: ReFocus's six test files (with
images on disk, in a shared folder, or embedded in TableVQA-Bench), TableVQA-Bench and VTool-R1's chart parquet.

Each writer returns what the loader must make of it: the uids it keeps, in order, and the skips by reason.
"""

from __future__ import annotations

import json
from pathlib import Path

from helpers.data_files import png, write_json, write_parquet

HUB_FOLDER = "test_data_with_bounding_box "
"""ReFocus_Data's folder of test files: its name on the Hub ends with a space."""
FIGURE = (200, 100)
"""Size of every fixture figure, so normalised boxes have known pixels."""


def box(x1: float, y1: float, x2: float, y2: float) -> dict[str, float]:
    return {"x1": x1, "y1": y1, "x2": x2, "y2": y2}


def refocus_json(set_dir: Path, file_name: str, records: dict, hub_folder: bool = True) -> Path:
    path = set_dir / (HUB_FOLDER if hub_folder else "") / file_name
    write_json(path, records)
    return path


def write_refocus_chart(root: Path, name: str) -> dict:
    """``chartqa_h_bar`` or ``chartqa_v_bar``: figures found by file name in ``images/``, under the set's own
    ``data/`` tree, in the shared ``refocus_images/`` folder; plus one bad row of each kind."""
    set_dir = root / name
    labels_key, boxes_key = ("y_values", "y_bboxes") if name == "chartqa_h_bar" else ("x_values", "x_bboxes")
    other_labels, other_boxes = ("x_values", "x_bboxes") if name == "chartqa_h_bar" else ("y_values", "y_bboxes")
    for path in (set_dir / "images" / "c1.png", set_dir / "data" / "charts" / "c2.png"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png("white", FIGURE))
    (root / "refocus_images" / "nested").mkdir(parents=True, exist_ok=True)
    (root / "refocus_images" / "nested" / "c8.png").write_bytes(png("white", FIGURE))
    (root / "outside.png").write_bytes(png("white", FIGURE))  # must never be read through "../"

    def record(figure: str, **changes) -> dict:
        row = {
            "figure_path": figure,
            "query": "What is the value of Japan?",
            "answer": "42",
            labels_key: ["Japan", "Korea"],
            boxes_key: [box(0.1, 0.2, 0.5, 0.4), box(0.5, 0.4, 0.9, 0.6)],
            other_labels: [],
            other_boxes: [],
            "x_intervals": [],
            "y_intervals": [],
        }
        return {**row, **changes}

    records = {
        "r1": record("data/ChartQA Dataset/test/png/c1.png"),
        "r2": record("data/charts/c2.png", answer=7.0),
        "r3": record("data/ChartQA Dataset/test/png/c1.png", query=""),
        "r4": record("data/ChartQA Dataset/test/png/nowhere.png"),
        "r5": record("data/ChartQA Dataset/test/png/c1.png", **{boxes_key: [box(0.1, 0.2, 0.5, 0.4)]}),
        "r6": record("../../outside.png"),
        "r7": {k: v for k, v in record("data/charts/c2.png").items() if k != "answer"},
        "r8": record("c8.png", **{labels_key: ["A"], boxes_key: [[0, 0, 1, 1]]}),
        "r9": record("data/charts/c2.png", **{boxes_key: [box(0.1, 0.2, 0.5, 0.4), "wide"]}),
    }
    file_name = "chartQA_h_bar_wbb.json" if name == "chartqa_h_bar" else "chartQA_v_bar_wbb.json"
    refocus_json(set_dir, file_name, records)
    return {
        "uids": [f"{name}/r1", f"{name}/r2", f"{name}/r8"],
        "skips": {"bad_boxes": 2, "missing_field": 2, "missing_image": 2},
    }


TABLE_FILES = {
    "tablevqa_vwtq": ("tablevqa_wbb.json", "vwtq"),
    "tablevqa_vwtq_syn": ("tablevqa-vwtq_syn_wbb.json", "vwtq_syn"),
    "tablevqa_vtabfact": ("tablevqa-vtabfact_wbb.json", "vtabfact"),
}


def table_record(figure: str, answer, **changes) -> dict:
    row = {
        "figure_id": "x",
        "figure_path": figure,
        "query": "Who won in 1972?",
        "prompt": "Answer the question based on the table.",
        "answer": answer,
        "text_html_table": "<table><tr><th>Year</th><th>Name</th></tr><tr><td>1972</td><td>Joe</td></tr></table>",
        "column_headers": ["Year", "Name"],
        "columns_bbox": [box(0.0, 0.0, 0.5, 1.0), box(0.5, 0.0, 1.0, 1.0)],
        "row_starters": ["Year", "1972"],
        "rows_bbox": [box(0.0, 0.0, 1.0, 0.5), box(0.0, 0.5, 1.0, 1.0)],
        "table_bbox": box(0.0, 0.0, 1.0, 1.0),
    }
    return {**row, **changes}


def tablevqa_rows(subset: str, qa_ids: list[str]) -> list[dict]:
    gt = 1 if subset == "vtabfact" else "Joe|Lyle"
    return [
        {
            "qa_id": qa_id,
            "question": "Who won in 1972?",
            "gt": gt,
            "image": {"bytes": png("white", FIGURE), "path": None},
            "text_markdown_table": "| Year | Name |",
            "text_html_table": "<table></table>",
        }
        for qa_id in qa_ids
    ]


def write_tablevqa_bench(root: Path, rows_by_subset: dict[str, list[dict]]) -> None:
    for subset, rows in rows_by_subset.items():
        write_parquet(root / "tablevqa_bench" / "data" / f"{subset}-00000-of-00001-abc123.parquet", rows)


def write_refocus_table(root: Path, name: str, ids: tuple[str, ...] = ("nu-1", "nu-2")) -> dict:
    """One ReFocus table file: `ids` found (the first on disk, the others embedded in TableVQA-Bench), plus rows
    with no image anywhere, mismatched boxes and a bad answer."""
    file_name, subset = TABLE_FILES[name]
    set_dir = root / name
    (set_dir / "images").mkdir(parents=True, exist_ok=True)
    (set_dir / "images" / f"{ids[0]}.png").write_bytes(png("white", FIGURE))
    good = 1 if subset == "vtabfact" else ["Joe", "Lyle"]
    bad = "maybe" if subset == "vtabfact" else ""
    records = {qa_id: table_record(f"data/tablevqabench/images/{qa_id}.png", good) for qa_id in ids}
    records[f"{name}-lost"] = table_record("data/tablevqabench/images/lost.png", good)
    records[f"{name}-uneven"] = table_record(f"data/tablevqabench/images/{ids[0]}.png", good, row_starters=["Year"])
    records[f"{name}-bad"] = table_record(f"data/tablevqabench/images/{ids[0]}.png", bad)
    refocus_json(set_dir, file_name, records)
    write_tablevqa_bench(root, {subset: tablevqa_rows(subset, list(ids[1:]))})
    return {
        "uids": [f"{name}/{qa_id}" for qa_id in ids],
        "skips": {
            "bad_boxes": 1,
            "missing_image": 1,
            ("unknown_answer" if subset == "vtabfact" else "missing_field"): 1,
        },
    }


def write_charxiv(root: Path) -> dict:
    set_dir = root / "charxiv"
    (root / "charxiv_images" / "images").mkdir(parents=True, exist_ok=True)
    (root / "charxiv_images" / "images" / "1017.jpg").write_bytes(png("white", FIGURE))
    records = {
        "0": {
            "figure_path": "data/charxiv/images/1017.jpg",
            "prompt": "How many subplots have a legend?",
            "answer": "3",
        },
        "1": {"figure_path": "data/charxiv/images/1017.jpg", "answer": "3"},
        "2": {"figure_path": "data/charxiv/images/9999.jpg", "prompt": "Which?", "answer": "b"},
    }
    refocus_json(set_dir, "charxiv-subfigures.json", records)
    return {"uids": ["charxiv/0"], "skips": {"missing_field": 1, "missing_image": 1}}


def write_paper_sets(root: Path) -> dict[str, dict]:
    """All six test sets under `root`; {name: what its loader must keep and skip}."""
    expected = {name: write_refocus_chart(root, name) for name in ("chartqa_h_bar", "chartqa_v_bar")}
    for name in TABLE_FILES:
        expected[name] = write_refocus_table(root, name)
    expected["charxiv"] = write_charxiv(root)
    return expected


def chart_parquet_rows() -> tuple[list[dict], list[dict]]:
    """VTool-R1 chart rows: four in the training-v2 layout (HF VTOOL/Refocus_Chart), two of them bad (no answer
    anywhere; metadata that is not JSON), and one in the original EasyR1 fork's layout."""
    image = png("white", FIGURE)
    metadata = {
        "source": "h_bar",
        "x_values": [],
        "y_values": ["Japan", "Korea"],
        "x_values_bbox": {"x1": "none"},
        "y_values_bbox": {"Japan": [10, 20, 190, 50], "Korea": [10, 50, 190, 80]},
        "figure_bbox": [0, 0, 200, 100],
    }

    def v2(index: int, source: str, question: str, answer: str | None, meta: str) -> dict:
        return {
            "id": f"chart_{index}",
            "source": source,
            "split": "train",
            "data_source": "ReFocus/ReFocus_Data",
            "ability": "chart",
            "agent_name": "vtool_agent",
            "prompt": [{"role": "user", "content": f"<image> # USER REQUEST #: {question}\n# USER Bounding Box Info"}],
            "images": [{"bytes": image, "path": f"chart_{index}.png"}],
            "reward_model": {"style": "rule", "ground_truth": answer},
            "extra_info": {
                "split": "train",
                "index": index,
                "question": question,
                "answer": answer,
                "need_tools_kwargs": True,
                "tools_kwargs": {"name": "refocus", "metadata": meta},
            },
        }

    vertical = {**metadata, "source": "v_bar", "x_values_bbox": {"2019": [0.1, 0.1, 0.3, 0.9]}, "y_values_bbox": {}}
    fork = {
        "metadata": json.dumps(
            {"type": "v_bar", "x_values_bbox": {"A": [20, 10, 60, 90]}, "y_values_bbox": {"x1": "none"}}
        ),
        "figure_id": "orig_5",
        "figure_path": "data/chartqa/orig_5.png",
        "query": "How big is A?",
        "prompt": "<image> # USER REQUEST #: How big is A?\n",
        "answer": "3",
        "images": [image],
    }
    return [
        v2(0, "chartqa_h_bar", "What is the value of Japan?", "42", json.dumps(metadata)),
        v2(1, "v_bar", "What is the value in 2019?", "7", json.dumps(vertical)),
        v2(2, "h_bar", "What is the value of Korea?", None, json.dumps(metadata)),
        v2(3, "h_bar", "What is the value of Korea?", "5", "{not json"),
    ], [fork]


def write_chart_parquet(root: Path, split: str = "train") -> dict:
    """training-v2 rows in ``<split>.parquet``, the fork's in ``<split>_full.parquet`` (its file name)."""
    training_v2, fork = chart_parquet_rows()
    write_parquet(root / "refocus_chart_train" / f"{split}.parquet", training_v2)
    write_parquet(root / "refocus_chart_train" / f"{split}_full.parquet", fork)
    return {
        "uids": [
            f"refocus_chart_train/{split}/chart_0/0",
            f"refocus_chart_train/{split}/chart_1/1",
            f"refocus_chart_train/{split}/orig_5/5",
        ],
        "skips": {"bad_json": 1, "missing_field": 1},
    }
