"""Policies that write scripted text instead of sampling, so rollouts are exact and cheap."""

from __future__ import annotations

import torch

from iapo.agent.rollout import Generation


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
