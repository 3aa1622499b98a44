"""Shared fixtures: the tiny models (built once per session into the cache) and a scripted policy."""

from __future__ import annotations

import pytest
import torch

from iapo.agent.rollout import Generation
from iapo.models import load_model


@pytest.fixture(scope="session")
def tiny_student():
    """(model, processor) of the offline tiny student, float32 on the CPU."""
    return load_model("tiny-student", device="cpu")


@pytest.fixture(scope="session")
def tiny_processor(tiny_student):
    return tiny_student[1]


class ScriptedPolicy:
    """A policy that answers turn k with `turns[k]` (one text for every row, or a list with one text per row).

    It records every batch it was called with, so tests can inspect what really reached the model.
    """

    def __init__(self, tokenizer, turns: list) -> None:
        self.tokenizer = tokenizer
        self.turns = turns
        self.batches: list[dict[str, torch.Tensor]] = []

    def generate(self, batch, max_new_tokens):
        turn = len(self.batches)
        self.batches.append(batch)
        rows = batch["input_ids"].shape[0]
        texts = self.turns[turn] if isinstance(self.turns[turn], list) else [self.turns[turn]] * rows
        out = []
        for text in texts[:rows]:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][:max_new_tokens]
            out.append(Generation(ids, truncated=len(ids) == max_new_tokens and "</" not in text))
        return out


@pytest.fixture
def scripted():
    return ScriptedPolicy
