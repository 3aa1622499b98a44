"""Named input components of a trajectory and the target tokens whose log-prob is attributed to them.

Components are semantic, so that a teacher with another tokenizer or image resolution (a `retokenize`d view of the
same trajectory) gets the same keys. A layout is a registered entry (`register_layout` / `get_layout`); built in:

`regions` (`trajectory_components`):
- `image/r{i}c{j}`: the original image cut into an R×C grid; each visual token of image 0 belongs to exactly one cell;
- `tool/{t}`: the visual tokens of the t-th tool-returned image (t = 1, 2, ...);
- `question`: the question and options text;
- `history` (optional): the policy's own tokens before the final turn;
- `system` (optional): the system turn.

`blocks` (`block_components`, the paper's four blocks; every key always present, possibly empty):
- `P`: the system text other than the tool definitions; `R`: the question (user query); `I`: every image token (the
  original and every returned image); `T`: the tool definitions (empty when tools are off).

Targets are registered entries too (`register_target` / `get_target`, read through `target_mask` and
`target_turn`); built in: the final answer, every generated token, the tool calls, or only the values of the tool
calls' arguments (`tool_call_arguments`: which bar or box the call chose, without its fixed format), or every token of
the turns that call a tool (`tool_call_turn`: the thought before the call too, where a model that writes `Focus on
"ant".` first makes its choice; the call then copies it from the thought), or the calls that ran only
(`tool_call_ran`: a malformed or failed call is no target). Add either in
any imported module, then name it in `model.init_args.attribution` (`layout: halves`, `target: first_turn`):

    @register_layout("halves")
    def halves(trajectory, merge_size, settings):   # disjoint BoolTensor masks [T] by component name
        ...

    @register_target("first_turn", turn=lambda trajectory: 0 if trajectory.turns[0].text else None)
    def first_turn(trajectory, tokenizer):            # BoolTensor [T] of the attributed tokens
        ...

`turn` names the turn that holds the target's last token (None: the trajectory has no target, is not run through
the model and gets `{}`); the attribution cuts the trajectory after it (`prefix.through_target_turn`).

Visual-token geometry: the Qwen2.5-VL processor flattens patches as [h/m, w/m, m, m] (m = merge size), so merged
token k of an image sits at row k // (w/m), column k % (w/m) of its merged grid (row-major). The vision tower
permutes tokens into attention windows internally but undoes the permutation after the patch merger, and the
language model's mRoPE gives image tokens the same row-major (row, column) positions; `tests/test_components.py`
checks the order on the tiny model. Masks are BoolTensors over the trajectory's tokens.

Run the checks with `python -m pytest tests/test_components.py -q`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from iapo.agent.parsing import ANSWER, TOOL_CALL
from iapo.agent.trajectory import Trajectory, Turn

Layout = Callable[[Trajectory, int, Any], dict[str, Tensor]]
"""`layout(trajectory, merge_size, settings) -> {component: mask [T]}` (`settings`: the `AttributionSettings`)."""

LAYOUTS: dict[str, Layout] = {}
"""name -> layout, filled by `register_layout` (the value of `attribution.layout`)."""


@dataclass(frozen=True)
class Target:
    """`mask(trajectory, tokenizer)`: BoolTensor [T] of the attributed tokens, empty without a target; `turn(trajectory)`:
    the index of the turn holding the last target token, None without a target (decided from the turns alone, so
    it holds for every tokenizer's view of the trajectory)."""

    mask: Callable[[Trajectory, Any], Tensor]
    turn: Callable[[Trajectory], int | None]


TARGETS: dict[str, Target] = {}
"""name -> target, filled by `register_target` (the value of `attribution.target`)."""


def register_layout(name: str) -> Callable[[Layout], Layout]:
    """Decorator: make `layout` selectable as `attribution.layout: <name>` (a name registered twice is an error)."""

    def add(layout: Layout) -> Layout:
        if name in LAYOUTS:
            raise ValueError(f"attribution layout {name!r} is registered twice")
        LAYOUTS[name] = layout
        return layout

    return add


def get_layout(name: str) -> Layout:
    """The registered layout `name`; an unknown name is a ValueError listing the registered ones."""
    if name not in LAYOUTS:
        raise ValueError(f"unknown attribution layout {name!r}; registered: {', '.join(sorted(LAYOUTS))}")
    return LAYOUTS[name]


def register_target(name: str, *, turn: Callable[[Trajectory], int | None]) -> Callable[[Callable], Callable]:
    """Decorator: make `mask(trajectory, tokenizer)` the target `name`, with `turn` its turn (see `Target`)."""

    def add(mask: Callable[[Trajectory, Any], Tensor]) -> Callable:
        if name in TARGETS:
            raise ValueError(f"attribution target {name!r} is registered twice")
        TARGETS[name] = Target(mask, turn)
        return mask

    return add


def get_target(name: str) -> Target:
    """The registered target `name`; an unknown name is a ValueError listing the registered ones."""
    if name not in TARGETS:
        raise ValueError(f"unknown attribution target {name!r}; registered: {', '.join(sorted(TARGETS))}")
    return TARGETS[name]


def target_mask(trajectory: Trajectory, tokenizer, target: str = "answer") -> Tensor:
    """Mask [T] of the tokens whose log-prob is attributed (the target's `mask`); empty without a target."""
    return get_target(target).mask(trajectory, tokenizer)


def target_turn(trajectory: Trajectory, target: str) -> int | None:
    """Index of the turn that holds the trajectory's last target token; None without a target."""
    return get_target(target).turn(trajectory)


BLOCKS = {
    "P": "system text other than the tool definitions",
    "R": "the question",
    "I": "every image token",
    "T": "the tool definitions",
}


def image_region_masks(
    span: tuple[int, int], grid_thw, merge_size: int, rows: int, cols: int, length: int
) -> dict[str, Tensor]:
    """Masks [length] of the visual tokens of one image in each cell of an R×C grid, keys `image/r{i}c{j}`.

    Args:
        span: [start, end) of the image's visual tokens in the sequence.
        grid_thw: the image's processor grid (t, h, w) in patches.
        merge_size: patches merged per token along each side (2 for Qwen2.5-VL).
        rows, cols: R and C; a token at merged row y of H, column x of W belongs to cell
            (floor(y * R / H), floor(x * C / W)). Cells get no token when R > H or C > W.
        length: sequence length of the masks.
    """
    t, h, w = (int(v) for v in grid_thw)
    height, width = h // merge_size, w // merge_size
    start, end = span
    if end - start != t * height * width:
        raise ValueError(f"span {span} holds {end - start} tokens, the grid {t}x{h}x{w} gives {t * height * width}")
    index = torch.arange(end - start)
    cell_row = (index // width) % height * rows // height
    cell_col = index % width * cols // width
    masks = {}
    for i in range(rows):
        for j in range(cols):
            mask = torch.zeros(length, dtype=torch.bool)
            mask[start:end] = (cell_row == i) & (cell_col == j)
            masks[f"image/r{i}c{j}"] = mask
    return masks


def trajectory_components(
    trajectory: Trajectory,
    merge_size: int,
    grid: tuple[int, int] = (3, 3),
    include_history: bool = False,
    include_system: bool = False,
) -> dict[str, Tensor]:
    """Semantic components of a trajectory as disjoint masks [T] over its tokens.

    Keys: `image/r{i}c{j}` for the `grid` (R, C) cells of the original image, `tool/{t}` for each tool-returned
    image (t from 1), `question`, and optionally `history` (policy tokens before the final turn; empty for a
    one-turn trajectory) and `system` (tokens before the prompt's second `<|im_start|>`, which opens the user turn).
    """
    length = int(trajectory.input_ids.shape[0])
    rows, cols = grid
    components = image_region_masks(
        trajectory.image_spans[0], trajectory.image_grid_thw[0], merge_size, rows, cols, length
    )
    for t, (start, end) in enumerate(trajectory.image_spans[1:], start=1):
        components[f"tool/{t}"] = _span_mask(start, end, length)
    components["question"] = _span_mask(*trajectory.question_span, length)
    if include_history:
        final_start, _ = final_turn_span(trajectory.policy_mask)
        components["history"] = trajectory.policy_mask & (torch.arange(length) < final_start)
    if include_system:
        im_start = trajectory.input_ids[0]
        user_start = int(torch.nonzero(trajectory.input_ids == im_start)[1])
        components["system"] = _span_mask(0, user_start, length)
    return components


@register_layout("regions")
def regions_layout(trajectory: Trajectory, merge_size: int, settings) -> dict[str, Tensor]:
    """`trajectory_components` with the settings' grid and optional components."""
    return trajectory_components(
        trajectory, merge_size, settings.grid, settings.include_history, settings.include_system
    )


@register_layout("blocks")
def blocks_layout(trajectory: Trajectory, merge_size: int, settings) -> dict[str, Tensor]:
    """`block_components` (the image resolution does not matter to blocks)."""
    return block_components(trajectory)


def block_components(trajectory: Trajectory) -> dict[str, Tensor]:
    """The paper's blocks as disjoint masks [T]: `P` (system text minus the tool definitions), `R` (question), `I`
    (every image token) and `T` (tool definitions), from the spans the trajectory records (`rollout` and
    `retokenize` both record them, so a teacher's view gets the same blocks)."""
    length = int(trajectory.input_ids.shape[0])
    if trajectory.system_span[1] <= trajectory.system_span[0]:
        raise ValueError(f"trajectory {trajectory.uid} records no system span: the blocks layout needs one")
    tools = _span_mask(*trajectory.tools_span, length)
    images = torch.zeros(length, dtype=torch.bool)
    for start, end in trajectory.image_spans:
        images[start:end] = True
    return {
        "P": _span_mask(*trajectory.system_span, length) & ~tools,
        "R": _span_mask(*trajectory.question_span, length),
        "I": images,
        "T": tools,
    }


def turn_token_spans(trajectory: Trajectory) -> list[tuple[int, int] | None]:
    """[start, end) of each turn's generated tokens (None for a turn without text): the runs of policy tokens, in
    order. A mismatch between runs and turns with text is an error, never a silent misassignment."""
    mask = trajectory.policy_mask.int()
    edges = torch.diff(torch.cat([mask.new_zeros(1), mask, mask.new_zeros(1)]))
    runs = list(
        zip(torch.nonzero(edges == 1).flatten().tolist(), torch.nonzero(edges == -1).flatten().tolist(), strict=True)
    )
    with_text = [index for index, turn in enumerate(trajectory.turns) if turn.text]
    if len(runs) != len(with_text):
        raise ValueError(
            f"trajectory {trajectory.uid}: {len(runs)} runs of policy tokens for {len(with_text)} turns with text"
        )
    spans: list[tuple[int, int] | None] = [None] * len(trajectory.turns)
    for index, run in zip(with_text, runs, strict=True):
        spans[index] = run
    return spans


def final_turn_span(policy_mask: Tensor) -> tuple[int, int]:
    """[start, end) of the last run of policy tokens in a mask [T] (the final turn's generated tokens)."""
    positions = torch.nonzero(policy_mask).flatten()
    if positions.numel() == 0:
        raise ValueError("the trajectory has no policy tokens")
    end = int(positions[-1]) + 1
    gaps = torch.nonzero(~policy_mask[:end]).flatten()
    start = int(gaps[-1]) + 1 if gaps.numel() else 0
    return start, end


def _last_turn_with_text(trajectory: Trajectory, action: str | None = None) -> int | None:
    """The last turn with text (of `action`, when given); None when there is none."""
    wanted = [i for i, turn in enumerate(trajectory.turns) if turn.text and action in (None, turn.action)]
    return wanted[-1] if wanted else None


@register_target("answer", turn=lambda t: None if t.final_answer is None else _last_turn_with_text(t))
def answer_mask(trajectory: Trajectory, tokenizer) -> Tensor:
    """The final turn's tokens that cover the text between `<answer>` and `</answer>` (all of the final turn's tokens
    when the tags cannot be located or enclose no token); empty when `final_answer` is None."""
    if trajectory.final_answer is None:
        return torch.zeros_like(trajectory.policy_mask)
    return _match_mask(trajectory, tokenizer, final_turn_span(trajectory.policy_mask), ANSWER, group=1)


@register_target("generated", turn=_last_turn_with_text)
def generated_mask(trajectory: Trajectory, tokenizer) -> Tensor:
    """Every policy token."""
    return trajectory.policy_mask.clone()


@register_target("tool_call", turn=lambda t: _last_turn_with_text(t, "tool_call"))
def tool_call_mask(trajectory: Trajectory, tokenizer) -> Tensor:
    """In every turn whose action is a tool call, the tokens covering its first (the executed)
    `<tool_call>…</tool_call>` block, tags included: the opening tag is the decision to call a tool, the rest says
    which tool and where (the whole turn when the block cannot be located); empty when no turn called a tool."""
    return _call_blocks_mask(trajectory, tokenizer, lambda turn: turn.action == "tool_call")


def call_ran(turn: Turn) -> bool:
    """Whether a turn's tool call was parsed and executed without an error."""
    return turn.action == "tool_call" and turn.call is not None and turn.error is None


def _last_call_that_ran(trajectory: Trajectory) -> int | None:
    ran = [i for i, turn in enumerate(trajectory.turns) if turn.text and call_ran(turn)]
    return ran[-1] if ran else None


@register_target("tool_call_ran", turn=_last_call_that_ran)
def tool_call_ran_mask(trajectory: Trajectory, tokenizer) -> Tensor:
    """`tool_call` over the calls that ran (`call_ran`) only: a malformed or failed call is no target, so under
    `missing_target: exclude` its trajectory gets its group's mean term instead of a divergence of tokens that
    called nothing (which the reward could otherwise favour: on the 6-bar pair, IAPO with `tool_call` learned calls
    that fail, docs/results.md); empty when no call ran."""
    return _call_blocks_mask(trajectory, tokenizer, call_ran)


def _call_blocks_mask(trajectory: Trajectory, tokenizer, keep: Callable[[Turn], bool]) -> Tensor:
    """The `<tool_call>` block's tokens of every turn that `keep` accepts."""
    mask = torch.zeros_like(trajectory.policy_mask)
    for turn, span in zip(trajectory.turns, turn_token_spans(trajectory), strict=True):
        if keep(turn) and span is not None:
            mask |= _match_mask(trajectory, tokenizer, span, TOOL_CALL, group=0)
    return mask


ARGUMENTS = re.compile(r'"arguments"\s*:\s*\{')
"""Where a Qwen2.5 tool call's arguments object opens."""
ARGUMENT_VALUE = re.compile(r'"[^"]*"\s*:\s*(\[[^\]]*\]|"[^"]*"|[-+0-9.eE]+|true|false|null)')
"""One `"key": value` of the arguments (a list, string, number or literal); group 1 is the value."""


@register_target("tool_call_arguments", turn=lambda t: _last_turn_with_text(t, "tool_call"))
def tool_call_arguments_mask(trajectory: Trajectory, tokenizer) -> Tensor:
    """In every turn whose action is a tool call, the tokens covering the values of its first call's arguments
    (`["ant"]` of `"arguments": {"x_values_to_focus_on": ["ant"]}`; each value of a box): the part of the call a
    right and a wrong call differ in, without the tool's name, the keys and the JSON around them, which every call
    of a tool repeats (the whole call's block when no argument value can be located); empty when no turn called a
    tool."""
    mask = torch.zeros_like(trajectory.policy_mask)
    for turn, span in zip(trajectory.turns, turn_token_spans(trajectory), strict=True):
        if turn.action != "tool_call" or span is None:
            continue
        text = _decoded(trajectory, tokenizer, span)
        call = TOOL_CALL.search(text)
        arguments = ARGUMENTS.search(text, call.start()) if call else None
        values = [m.span(1) for m in ARGUMENT_VALUE.finditer(text, arguments.end(), call.end())] if arguments else []
        mask |= (
            _ranges_mask(trajectory, tokenizer, span, values)
            if values
            else _match_mask(trajectory, tokenizer, span, TOOL_CALL, group=0)
        )
    return mask


@register_target("tool_call_turn", turn=lambda t: _last_turn_with_text(t, "tool_call"))
def tool_call_turn_mask(trajectory: Trajectory, tokenizer) -> Tensor:
    """Every generated token of every turn whose action is a tool call: the thought before the call and the call.
    Where a model names its choice in the thought (`Focus on "ant".`), the call's own tokens copy it from there, and
    their attribution over the prompt's components misses the choice; empty when no turn called a tool."""
    mask = torch.zeros_like(trajectory.policy_mask)
    for turn, span in zip(trajectory.turns, turn_token_spans(trajectory), strict=True):
        if turn.action == "tool_call" and span is not None:
            mask[span[0] : span[1]] = True
    return mask


def _decoded(trajectory: Trajectory, tokenizer, span: tuple[int, int]) -> str:
    return tokenizer.decode(trajectory.input_ids[span[0] : span[1]].tolist(), skip_special_tokens=False)


def _match_mask(trajectory: Trajectory, tokenizer, span: tuple[int, int], pattern, group: int) -> Tensor:
    """Mask [T] of the tokens in `span` that cover `pattern`'s first match (its `group`) in the span's decoded text;
    every token of the span when there is no match or the match covers no token."""
    match = pattern.search(_decoded(trajectory, tokenizer, span))
    return _ranges_mask(trajectory, tokenizer, span, [match.span(group)] if match else [])


def _ranges_mask(trajectory: Trajectory, tokenizer, span: tuple[int, int], ranges: list[tuple[int, int]]) -> Tensor:
    """Mask [T] of the tokens in `span` that overlap any (begin, end) character range of the span's decoded text;
    every token of the span when none does."""
    start, end = span
    mask = torch.zeros_like(trajectory.policy_mask)
    ids = trajectory.input_ids[start:end].tolist()
    if ranges:
        ends = [
            len(t) for t in tokenizer.batch_decode([ids[: k + 1] for k in range(len(ids))], skip_special_tokens=False)
        ]
        begins = [0, *ends[:-1]]
        mask[start:end] = torch.tensor(
            [any(b < high and e > low for low, high in ranges) for b, e in zip(begins, ends, strict=True)]
        )
    if not mask.any():
        mask[start:end] = True
    return mask


def _span_mask(start: int, end: int, length: int) -> Tensor:
    mask = torch.zeros(length, dtype=torch.bool)
    mask[start:end] = True
    return mask
