"""VTool-R1's cut of the three ReFocus table test files into training and reported questions, reproduced exactly.

VTool-R1 (github VTool-R1/VTool-R1, ``preprocess/table_dataset_creator.py``) concatenates the records of
``tablevqa-vtabfact_wbb.json``, ``tablevqa_wbb.json`` and ``tablevqa-vwtq_syn_wbb.json`` in that order, keeps the
first record of each key (the TableVQA qa_id), then runs ``Dataset.shuffle(seed=42)`` and
``train_test_split(test_size=0.3, seed=42)``: ``table_train.parquet`` (70 %) is its training data and
``table_test.parquet`` (30 %) the rows its table evaluation scripts (``eval/eval_qwen_tableqa_*.py``) and its
validation (``train_7b_table.sh``) read. Both Hugging Face calls draw ``np.random.default_rng(seed).permutation(n)``
(datasets' ``arrow_dataset.py``), the split takes the first ``ceil(0.3 n)`` positions as the test part, so the parts
are a pure function of the ordered key list and the seed, computed here without `datasets`.

    parts = vtool_r1_parts(["nu-1", "nu-2", ...], seed=42)     # {"nu-1": "train", "nu-2": "heldout", ...}
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

VTOOL_R1_SEED = 42
"""The seed of VTool-R1's shuffle and of its train/test split."""
HELDOUT_FRACTION = 0.3
"""VTool-R1's ``test_size``: the share of the deduplicated table questions left out of training (rounded up)."""
TABLE_SPLITS = ("train", "heldout")
"""``train`` is VTool-R1's ``table_train.parquet``, ``heldout`` its ``table_test.parquet``."""


def vtool_r1_parts(keys: Sequence[str], seed: int = VTOOL_R1_SEED) -> dict[str, str]:
    """{key: "train" or "heldout"} for the deduplicated keys in VTool-R1's order.

    ``Dataset.shuffle(seed)`` reorders the rows by one permutation; ``train_test_split(test_size, seed)`` draws a
    second permutation of the shuffled positions from a fresh generator with the same seed and takes its first
    ``ceil(test_size × n)`` entries as the test part (datasets' own arithmetic, so the counts match too).
    """
    if len(set(keys)) != len(keys):
        raise ValueError("vtool_r1_parts takes each key once (VTool-R1 keeps the first record of a key)")
    n = len(keys)
    if n == 0:
        return {}
    shuffled = np.random.default_rng(seed).permutation(n)
    split = np.random.default_rng(seed).permutation(n)
    held = {keys[shuffled[position]] for position in split[: math.ceil(HELDOUT_FRACTION * n)]}
    return {key: "heldout" if key in held else "train" for key in keys}
