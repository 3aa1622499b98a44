"""Small data files in the official layouts, written by tests (images as PNG bytes, JSON, parquet)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image


def png(color: str = "red", size: tuple[int, int] = (8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def write_parquet(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def make_vstar(root: Path) -> Path:
    base = root / "vstar_bench"
    da, rp = base / "direct_attributes", base / "relative_position"
    da.mkdir(parents=True)
    rp.mkdir(parents=True)
    options = ["white", "black", "red", "blue"]
    for stem in ("sa_1", "sa_2"):
        (da / f"{stem}.jpg").write_bytes(png())
        write_json(
            da / f"{stem}.json",
            {
                "target_object": ["shirt"],
                "bbox": [[10, 20, 30, 40]],
                "question": "What is the color of the shirt?",
                "options": options,
            },
        )
    write_json(
        da / "sa_3.json", {"target_object": ["cup"], "bbox": [[1, 2, 3, 4]], "question": "q?", "options": options}
    )
    (da / "sa_4.jpg").write_bytes(png())
    (da / "sa_4.json").write_text("{not json")
    (da / "sa_5.jpg").write_bytes(png())
    write_json(da / "sa_5.json", {"target_object": ["x"], "bbox": [[1, 2, 3, 4]], "question": "q?"})
    (da / "lonely.jpg").write_bytes(png())  # an image without annotation is not a question
    (rp / "sa_9.png").write_bytes(png())
    write_json(
        rp / "sa_9.json",
        {
            "target_object": ["dog", "cat"],
            "bbox": [[0, 0, 2, 2], [4, 4, 2, 2]],
            "question": "Is the dog on the left or right of the cat?",
            "options": ["The dog is on the left of the cat.", "The dog is on the right of the cat."],
        },
    )
    return base


def hr_rows() -> list[dict]:
    image_1, image_2 = b64(png("red")), b64(png("blue"))
    row = {"question": "What colour is the sign?", "A": "red", "B": "blue", "C": "green", "D": "white"}
    return [
        {**row, "index": 0, "answer": "A", "category": "FSP", "cycle_category": "cycle_1", "image": image_1},
        {**row, "index": 1, "answer": "B", "category": "FCP", "cycle_category": "cycle_1", "image": image_2},
        {**row, "index": 2, "answer": "C", "category": "FSP", "cycle_category": "cycle_2", "image": image_1},
        {**row, "index": 3, "answer": "E", "category": "FSP", "cycle_category": "cycle_2", "image": image_1},
        {**row, "index": 4, "answer": "A", "category": "FCP", "cycle_category": "cycle_2", "image": ""},
        {
            **row,
            "index": 5,
            "answer": "A",
            "category": "FCP",
            "cycle_category": "cycle_2",
            "image": image_2,
            "question": None,
        },
        {**row, "index": 1, "answer": "A", "category": "FCP", "cycle_category": "cycle_2", "image": image_2},
    ]
