"""Expert trajectories as JSONL: the training data of `SFTModule`, read and checked against the tool protocol.

Expert JSONL (`read_expert_jsonl`): the rows of `iapo.data.jsonl` plus the assistant turns, one object per line::

    {"image": "imgs/0001.png", "question": "What is written on the sign?", "options": ["stop", "exit"],
     "answer": "B",
     "turns": ["The sign is small. <tool_call>{\"name\": \"zoom_in\", \"arguments\": {\"bbox_2d\": [10, 20, 90, 80]}}</tool_call>",
               "It reads exit. <answer>B</answer>"]}

Every turn but the last must be one well-formed tool call, the last a well-formed `<answer>` that scores above 0
against the row's answer; `bbox_2d` is in pixels of the image as the model sees it (Qwen2.5-VL's grounding
convention). Other rows are skipped and counted: "missing_field" (no turns), "bad_field" (turns not a list of
strings), "bad_turns" (a turn of the wrong kind or malformed), "wrong_answer", plus the reasons of `read_jsonl`.

Registered as the data source ``expert_jsonl`` (``data.train: [{name: expert_jsonl, path: expert.jsonl}]``); it
lives beside the training code, not in `iapo.data`, because checking a turn needs the agent's parser and the
scoring rules.

    samples = read_expert_jsonl("data/expert.jsonl", skips=SkipLog())
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from iapo.agent.parsing import check_turns, parse_turn
from iapo.data.jsonl import ImagePaths, parse_vqa_row, read_jsonl
from iapo.data.sample import BadRowError, SkipLog, VQASample
from iapo.data.sources import DataSpec, SourceContext, register_source
from iapo.evaluation.scoring import score_sample


def read_expert_jsonl(
    path: str | Path,
    source: str | None = None,
    skips: SkipLog | None = None,
    image_root: str | Path | None = None,
    allow_outside_root: bool = False,
) -> list[VQASample]:
    """Read an expert JSONL (see the module docstring) into samples carrying their turns in `meta["turns"]`.

    Bad rows are skipped and counted in `skips` by reason (a fresh `SkipLog`, reported as a warning, when none is
    given); `SkipLog(strict=True)` raises on the first one. `image_root` and `allow_outside_root` as in `read_jsonl`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"expert JSONL not found: {path}. Rows are {{image, question, options?, answer, turns}}."
        )
    return read_jsonl(path, source, skips, _parse_expert_row, image_root, allow_outside_root)


def _parse_expert_row(line: str, images: ImagePaths, source: str, default_uid: str) -> VQASample:
    sample = parse_vqa_row(line, images, source, default_uid)
    turns = json.loads(line).get("turns")
    if turns in (None, []):
        raise BadRowError("missing_field", "missing turns")
    if not isinstance(turns, list) or not all(isinstance(turn, str) for turn in turns):
        raise BadRowError("bad_field", "turns must be a list of strings")
    problem = check_turns(turns)
    if problem:
        raise BadRowError("bad_turns", problem)
    if score_sample(parse_turn(turns[-1]).answer, sample) <= 0:
        raise BadRowError("wrong_answer", f"the last turn's answer does not match the row's answer {sample.answer!r}")
    return dataclasses.replace(sample, meta={**sample.meta, "turns": turns})


@register_source("expert_jsonl")
def load_expert_jsonl(spec: DataSpec, context: SourceContext) -> list[VQASample]:
    """The data source ``expert_jsonl``: the rows of `spec.path` (the first `spec.n` when set)."""
    if not spec.path:
        raise ValueError("an `expert_jsonl` data set needs `path: <file.jsonl>`")
    rows = read_expert_jsonl(
        spec.path, skips=context.skips, image_root=spec.image_root, allow_outside_root=spec.allow_outside_root
    )
    return rows[: spec.n] if spec.n else rows
