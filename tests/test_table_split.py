"""VTool-R1's table cut reproduced: the parts equal what Hugging Face `datasets` gives for VTool-R1's two calls.

The expected test parts were produced with datasets 5.2.0 (VTool-R1's own calls, in a scratch environment):

    import datasets
    keys = [f"k{i}" for i in range(n)]
    ds = datasets.Dataset.from_dict({"key": keys}).shuffle(seed=42).train_test_split(test_size=0.3, seed=42)
    sorted(ds["test"]["key"], key=lambda k: int(k[1:]))
"""

from __future__ import annotations

import pytest

from iapo.data.benchmarks.table_split import vtool_r1_parts

DATASETS_TEST_PARTS = {
    11: [2, 4, 6, 8],
    20: [0, 2, 4, 11, 16, 19],
    37: [0, 2, 3, 4, 7, 8, 10, 12, 17, 23, 28, 31],
}


@pytest.mark.parametrize("n", sorted(DATASETS_TEST_PARTS))
def test_parts_equal_datasets_shuffle_then_train_test_split(n: int) -> None:
    keys = [f"k{i}" for i in range(n)]
    parts = vtool_r1_parts(keys, seed=42)
    assert [i for i, key in enumerate(keys) if parts[key] == "heldout"] == DATASETS_TEST_PARTS[n]
    assert sum(part == "train" for part in parts.values()) == n - len(DATASETS_TEST_PARTS[n])


def test_parts_depend_on_the_seed_and_the_order_not_on_the_key_names() -> None:
    keys = [f"q{i}" for i in range(20)]
    renamed = {f"k{i}": part for i, part in enumerate(vtool_r1_parts(keys).values())}
    assert renamed == vtool_r1_parts([f"k{i}" for i in range(20)])
    assert vtool_r1_parts(keys, seed=1) != vtool_r1_parts(keys, seed=42)
    assert vtool_r1_parts([]) == {}


def test_a_repeated_key_is_refused() -> None:
    with pytest.raises(ValueError, match="each key once"):
        vtool_r1_parts(["a", "b", "a"])
