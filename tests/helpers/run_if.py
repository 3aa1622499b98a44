"""`RunIf`: skip a test unless the machine has what it needs (lightning-hydra-template's idea).

@RunIf(min_gpus=1)
def test_qlora_step_on_gpu(): ...
"""

from __future__ import annotations

import importlib.util

import pytest
import torch


def RunIf(min_gpus: int = 0, bitsandbytes: bool = False):  # noqa: N802 - used as a decorator, named like a marker
    """A `skipif` mark, plus the `gpu` marker when a GPU is required (select with `-m gpu`)."""
    reasons = []
    if min_gpus and torch.cuda.device_count() < min_gpus:
        reasons.append(f"needs {min_gpus} CUDA device(s), found {torch.cuda.device_count()}")
    if bitsandbytes and importlib.util.find_spec("bitsandbytes") is None:
        reasons.append("needs bitsandbytes")
    marks = [pytest.mark.skipif(bool(reasons), reason="; ".join(reasons))]
    if min_gpus:
        marks.append(pytest.mark.gpu)

    def decorate(test):
        for mark in marks:
            test = mark(test)
        return test

    return decorate
