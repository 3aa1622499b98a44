"""Callbacks the multi-process tests add to `src/cli.py` runs (`--trainer.callbacks+=helpers.ddp.<Name>`, with
`tests/` on `PYTHONPATH`): a scripted agent whose turns depend only on the prompt, and per-process weight dumps."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import torch
from lightning.pytorch.callbacks import Callback

from iapo.agent.rollout import Generation, find_question_span

ZOOM = '<tool_call>{"name": "zoom_in", "arguments": {"bbox_2d": [0, 0, 112, 112]}}</tool_call>'


class KeyedAgent:
    """A scripted agent in place of `HFPolicy` (same constructor). Each row's key is the sum of its question's token
    ids: a key divisible by 3 zooms on its first turn; the answer is letter (key // 3 + row) % 4, so the G samples of
    a prompt (consecutive rows) answer four different letters and their rewards differ, while a batch of one row
    answers what its question alone says, whatever process or batch it is evaluated in."""

    def __init__(self, model, processor, sampling) -> None:
        self.tokenizer = processor.tokenizer

    def generate(self, batch: dict[str, torch.Tensor], max_new_tokens: int) -> list[Generation]:
        vision_start = self.tokenizer.convert_tokens_to_ids("<|vision_start|>")
        generations = []
        for row, (ids, keep) in enumerate(zip(batch["input_ids"], batch["attention_mask"], strict=True)):
            ids = ids[keep.bool()]
            start, end = find_question_span(ids, self.tokenizer)
            key = int(ids[start:end].sum())
            first_turn = int((ids == vision_start).sum()) == 1
            text = ZOOM if key % 3 == 0 and first_turn else f"<answer>{'ABCD'[(key // 3 + row) % 4]}</answer>"
            tokens = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            generations.append(Generation(tokens, truncated=False))
        return generations


AGENT_FACTORIES = ("iapo.training.step.HFPolicy", "iapo.training.policy_base.HFPolicy")
"""Where the training step and the greedy evaluation build their policy."""


class ScriptedAgent(Callback):
    """Every rollout of the run (training, validation, test) is answered by `KeyedAgent`."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._patches = [mock.patch(target, KeyedAgent) for target in AGENT_FACTORIES]
        for patch in self._patches:
            patch.start()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        for patch in self._patches:
            patch.stop()


class DumpTrainableWeights(Callback):
    """Each process writes its trainable weights to `<dirpath>/{start,end}-rank<r>.pt` when fitting starts (after a
    resumed checkpoint is loaded) and ends."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def _dump(self, trainer, pl_module, when: str) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        weights = {n: p.detach().cpu().clone() for n, p in pl_module.named_parameters() if p.requires_grad}
        torch.save(weights, self.dirpath / f"{when}-rank{trainer.global_rank}.pt")

    def on_train_start(self, trainer, pl_module) -> None:
        self._dump(trainer, pl_module, "start")

    def on_train_end(self, trainer, pl_module) -> None:
        self._dump(trainer, pl_module, "end")
