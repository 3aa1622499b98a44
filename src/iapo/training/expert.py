"""Expert trajectories for the cold-start fine-tune (`iapo.training.sft_module`): what a perfect agent writes, as real rollouts.

An expert trajectory is a list of assistant turns. For a synthetic visual-search sample it is built from the
target's known box (`meta["bbox"]`, original pixels): turn 1 names the object and calls `zoom_in` on that box mapped
to the image as the model sees it (grown by a margin, clamped), turn 2 gives the answer in words and as
`<answer>{letter}</answer>`. For a synthetic chart or table (`meta["focus"]`), turn 1 masks everything but the asked
bar / row (`focus_on_<kind>_with_mask`), turn 2 answers. The `direct` variant is that last turn alone, under the
tools-off prompt (`toolset: null`): the training data of the no-tool control. Real data brings its own turns (`read_expert_jsonl`, replayed under the tools-on prompt).

The turns become `Trajectory` objects by running the real `rollout` with `ExpertPolicy`, a policy that replays
them: tokens, policy masks, tool crops and image positions are exactly those the RL rollout produces when the
model writes the same text.

    from iapo.training.expert import expert_trajectories
    trajectories, skipped = expert_trajectories(processor, samples, images, SamplingSettings(), kind="tool")

Expert JSONL rows are read by `iapo.training.expert_jsonl.read_expert_jsonl`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import zlib
from collections import Counter
from collections.abc import Sequence

import torch

from iapo.agent.parsing import check_turns
from iapo.agent.rollout import Generation, SamplingSettings, grid_to_model_size, rollout
from iapo.agent.tools import format_tool_call
from iapo.agent.tools.refocus import tool_name
from iapo.agent.trajectory import Trajectory
from iapo.data.sample import VQASample

EXPERT_KINDS = ("tool", "direct", "mixed")
"""`tool`: use the setting's tool on the target (zoom, or an edit), then answer; `direct`: answer at once, tools-off
prompt; `mixed`: each sample one of the two, alternating by epoch (one model for both prompts)."""


def expert_box(
    bbox: Sequence[float], model_size: tuple[int, int], original_size: tuple[int, int], margin: float = 0.25
) -> list[int]:
    """A target box in original pixels (`[x1, y1, x2, y2)`) as the `bbox_2d` an expert writes.

    The box grows by `margin` × its side on every side, is mapped to the image as the model sees it
    (`model_size` = (height, width); `original_size` = PIL's (width, height)), rounded outwards and clamped, so the
    tool's crop of the original contains the whole target.
    """
    model_h, model_w = model_size
    width, height = original_size
    x1, y1, x2, y2 = bbox
    dx, dy = margin * (x2 - x1), margin * (y2 - y1)
    sx, sy = model_w / width, model_h / height
    return [
        max(0, math.floor((x1 - dx) * sx)),
        max(0, math.floor((y1 - dy) * sy)),
        min(model_w, math.ceil((x2 + dx) * sx)),
        min(model_h, math.ceil((y2 + dy) * sy)),
    ]


def tool_call_text(bbox_2d: Sequence[int]) -> str:
    """The expert's zoom call, written as the registry formats every call."""
    return format_tool_call("zoom_in", {"bbox_2d": [int(v) for v in bbox_2d]})


def _target(sample: VQASample) -> str:
    """How the expert names the target: "red circle" for the synthetic set, else a generic phrase."""
    colour, shape = sample.meta.get("colour"), sample.meta.get("shape")
    return f"the {colour} {shape}" if colour and shape else "the relevant region"


def where(bbox: Sequence[float], size: tuple[int, int]) -> str:
    """Where a box's centre lies in an image of PIL `size` (width, height), in words: "top left", "centre", ..."""
    width, height = size
    row = ("top", "middle", "bottom")[min(int(3 * (bbox[1] + bbox[3]) / 2 / height), 2)]
    column = ("left", "centre", "right")[min(int(3 * (bbox[0] + bbox[2]) / 2 / width), 2)]
    return " ".join(word for word in (row, column) if word not in ("middle", "centre")) or "centre"


def _answer_text(sample: VQASample) -> tuple[str, str]:
    """(what the answer says in words, what goes inside `<answer>`): the option's text and its letter for MCQ."""
    if sample.options and sample.answer in sample.letters:
        return sample.options[sample.letters.index(sample.answer)], sample.answer
    return sample.answer, sample.answer


def answer_turn(sample: VQASample) -> str:
    """The expert's final turn: the answer in words, then in the `<answer>` tags."""
    words, answer = _answer_text(sample)
    return f"The answer is {words}.\n<answer>{answer}</answer>"


def expert_turns(
    sample: VQASample, model_size: tuple[int, int], original_size: tuple[int, int], margin: float = 0.25
) -> list[str]:
    """The zoom expert: turn 1 says where the target is (`where`) and zooms on `meta["bbox"]` (see `expert_box`),
    turn 2 answers."""
    box = expert_box(sample.meta["bbox"], model_size, original_size, margin)
    place = where(sample.meta["bbox"], original_size)
    return [f"Zoom in on {_target(sample)}, {place}.\n{tool_call_text(box)}", answer_turn(sample)]


EDIT_EXPERT = "mask"
"""The edit the chart / table expert makes: mask everything but the asked bar, row or column (one thing left to
read; `draw` and `highlight` leave the others visible)."""


def edit_turns(sample: VQASample, thought: bool = True) -> list[str]:
    """The chart / table expert: turn 1 masks what `meta["focus"]` names (`{"x_values": ["owl"]}`; a table's row
    first), turn 2 answers. With `thought`, turn 1 first names the labels (`Focus on "owl".`, quoted as in the call,
    so both spell them with the same tokens); without, it is the call alone, so the call's own tokens make the
    choice (and an attribution of the call sees it)."""
    kind, labels = next(iter(sample.meta["focus"].items()))
    call = format_tool_call(tool_name(kind, EDIT_EXPERT), {f"{kind}_to_focus_on": list(labels)})
    if not thought:
        return [call, answer_turn(sample)]
    return [f"Focus on {', '.join(json.dumps(label) for label in labels)}.\n{call}", answer_turn(sample)]


def labels_and_answers(sample: VQASample) -> list[tuple[str, str]]:
    """(label, answer) of every bar / row of a chart or table sample, in drawing order (charts: `meta["bars"]`;
    tables: `meta["table"]` at `meta["column"]`)."""
    if "bars" in sample.meta:
        return [(label, value) for label, value in sample.meta["bars"]]
    header, *rows = sample.meta["table"]
    column = header.index(sample.meta["column"])
    return [(row[0], row[column]) for row in rows]


def refocused(sample: VQASample, label: str, answer: str) -> VQASample:
    """The sample as a demonstrator that edits the bar / row `label` sees it: the focus moved from the asked label
    (`meta["target"]`) to `label`, the answer that one's value."""
    target = sample.meta["target"]
    focus = {key: [label if name == target else name for name in names] for key, names in sample.meta["focus"].items()}
    return dataclasses.replace(sample, answer=answer, meta={**sample.meta, "focus": focus, "target": label})


def misfocused(sample: VQASample, pick: int) -> VQASample:
    """The sample as a demonstrator that edits the wrong bar / row sees it: `refocused` on the `pick`-th other one
    (modulo their number)."""
    others = [(label, value) for label, value in labels_and_answers(sample) if label != sample.meta["target"]]
    return refocused(sample, *others[pick % len(others)])


def first_focused(sample: VQASample) -> VQASample:
    """The sample as a demonstrator that edits the first bar / row drawn sees it, whatever the question asks:
    `refocused` on it (the sample itself when it is the asked one)."""
    label, answer = labels_and_answers(sample)[0]
    return sample if label == sample.meta["target"] else refocused(sample, label, answer)


MISFOCUS = ("other", "first")
"""Which bar / row a demonstration that does not follow the question edits (`demonstrated`): `other`, one of the
bars not asked (drawn per sample and epoch); `first`, the first one drawn, which is the asked one in 1 of n charts:
a demonstrator whose call depends on where a bar is, not on the question."""


def demonstrated(sample: VQASample, epoch: int, call_accuracy: float, misfocus: str = "other") -> VQASample:
    """The sample whose edit the demonstration makes: itself with probability `call_accuracy`, else the one of the
    `misfocus` rule (`misfocused`, or `first_focused`; drawn from the uid and the epoch, so a run's demonstrations
    are reproducible and change between epochs)."""
    if misfocus not in MISFOCUS:
        raise ValueError(f"misfocus must be one of {MISFOCUS}, got {misfocus!r}")
    if call_accuracy >= 1 or "focus" not in sample.meta:
        return sample
    draw = zlib.crc32(f"{sample.uid}/{epoch}".encode())
    if (draw % 10_000) / 10_000 < call_accuracy:
        return sample
    return first_focused(sample) if misfocus == "first" else misfocused(sample, draw // 10_000)


def direct_turns(sample: VQASample) -> list[str]:
    """The direct expert (tools off): the zoom expert's final turn alone."""
    return [answer_turn(sample)]


class ExpertPolicy:
    """The rollout's `Policy` that replays scripted turns: call k answers every still-active row with its script's
    turn k. Scripts must pass `check_turns`, so the rollout keeps exactly the rows whose script goes on."""

    def __init__(self, tokenizer, scripts: Sequence[Sequence[str]]) -> None:
        self.tokenizer = tokenizer
        self.scripts = scripts
        self.calls = 0

    def generate(self, batch: dict[str, torch.Tensor], max_new_tokens: int) -> list[Generation]:
        texts = [script[self.calls] for script in self.scripts if len(script) > self.calls]
        if len(texts) != batch["input_ids"].shape[0]:
            raise RuntimeError(f"turn {self.calls + 1}: {batch['input_ids'].shape[0]} rows for {len(texts)} scripts")
        self.calls += 1
        generations = []
        for text in texts:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) > max_new_tokens:
                raise ValueError(f"expert turn of {len(ids)} tokens exceeds max_new_tokens={max_new_tokens}: {text!r}")
            generations.append(Generation(ids, truncated=False))
        return generations


def turn_tokens(tokenizer, turns: Sequence[str]) -> int:
    """Tokens of the longest turn (what `max_new_tokens` must allow)."""
    return max(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in turns)


def model_size_of(processor, image) -> tuple[int, int]:
    """(height, width) of an image as the model sees it, from the processor's own resize."""
    grid = processor.image_processor(images=[image], return_tensors="pt")["image_grid_thw"][0]
    return grid_to_model_size(grid, processor.image_processor.patch_size)


def choose_kind(kind: str, sample: VQASample, epoch: int) -> str:
    """The expert of one sample: `kind` itself, or for `mixed` tool / direct alternating by epoch."""
    if kind != "mixed":
        return kind
    return ("tool", "direct")[(zlib.crc32(sample.uid.encode()) + epoch) % 2]


def sample_turns(
    processor,
    sample: VQASample,
    image,
    kind: str,
    margin: float = 0.25,
    epoch: int = 0,
    call_accuracy: float = 1.0,
    edit_thought: bool = True,
    misfocus: str = "other",
) -> tuple[list[str] | None, str | None]:
    """(turns, None) for one sample and expert kind ("tool" or "direct"), or (None, skip reason).

    Tool: the sample's own `meta["turns"]` (expert JSONL) when present; else an edit of what `meta["focus"]` names
    (charts and tables; with `call_accuracy` < 1 a share of them edit the bar / row of the `misfocus` rule, see
    `demonstrated`; without
    `edit_thought` the call comes alone, see `edit_turns`); else a zoom on `meta["bbox"]` (visual search).
    """
    if kind == "direct":
        return direct_turns(sample), None
    if sample.meta.get("turns"):
        return list(sample.meta["turns"]), None
    if "focus" in sample.meta:
        return edit_turns(demonstrated(sample, epoch, call_accuracy, misfocus), edit_thought), None
    if "bbox" not in sample.meta:
        return None, "no_expert"
    return expert_turns(sample, model_size_of(processor, image), image.size, margin), None


def expert_trajectories(
    processor,
    samples: Sequence[VQASample],
    images: Sequence,
    settings: SamplingSettings,
    kind: str = "tool",
    margin: float = 0.25,
    epoch: int = 0,
    call_accuracy: float = 1.0,
    edit_thought: bool = True,
    misfocus: str = "other",
) -> tuple[list[Trajectory], Counter]:
    """Expert trajectories of a batch, rolled out by the real agent loop; and the samples skipped, by reason.

    `settings.max_turns` and `max_new_tokens` bound the expert as they bound the agent; the tool expert uses
    `settings.prompt`, the direct expert the tools-off prompt (what tools-off evaluation uses).
    `sample_index` of each trajectory indexes `samples`. A trajectory whose tool call failed (e.g. a JSONL box
    outside the image) is dropped and counted as "expert_error". `call_accuracy` < 1 makes a demonstrator that
    reads what it edits but edits the asked bar / row only that often (`demonstrated`): a student that does not
    know the right call; `misfocus` says which bar / row the others edit. `edit_thought` False drops the edit
    demonstrations' thought (`edit_turns`).
    """
    if kind not in EXPERT_KINDS:
        raise ValueError(f"expert kind must be one of {EXPERT_KINDS}, got {kind!r}")
    skipped: Counter = Counter()
    groups: dict[str, list[tuple[int, list[str]]]] = {"tool": [], "direct": []}
    for index, (sample, image) in enumerate(zip(samples, images, strict=True)):
        chosen = choose_kind(kind, sample, epoch)
        turns, reason = sample_turns(
            processor, sample, image, chosen, margin, epoch, call_accuracy, edit_thought, misfocus
        )
        if turns is not None and check_turns(turns, settings.max_turns):
            reason = "bad_turns"
        elif turns is not None and turn_tokens(processor.tokenizer, turns) > settings.max_new_tokens:
            reason = "too_long"
        if reason:
            skipped[reason] += 1
        else:
            groups[chosen].append((index, turns))
    trajectories = []
    for chosen, members in groups.items():
        if not members:
            continue
        group_settings = settings if chosen == "tool" else dataclasses.replace(settings, toolset=None)
        indices = [index for index, _ in members]
        policy = ExpertPolicy(processor.tokenizer, [turns for _, turns in members])
        rolled = rollout(
            policy, processor, [samples[i] for i in indices], [images[i] for i in indices], 1, group_settings
        )
        for trajectory in rolled:
            if not trajectory.well_formed:
                skipped["expert_error"] += 1
                continue
            trajectory.sample_index = indices[trajectory.sample_index]
            trajectories.append(trajectory)
    trajectories.sort(key=lambda t: t.sample_index)
    return trajectories, skipped
