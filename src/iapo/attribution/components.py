"""Named input components of a trajectory and the target tokens whose log-prob is attributed to them.

Components are semantic, so that a teacher with another tokenizer or image resolution (a `retokenize`d view of the
same trajectory) gets the same keys:

- `image/r{i}c{j}`: the original image cut into an R×C grid; each visual token of image 0 belongs to exactly one cell;
- `crop/{t}`: the visual tokens of the t-th tool-returned image (t = 1, 2, ...);
- `question`: the question and options text;
- `history` (optional): the policy's own tokens before the final turn;
- `system` (optional): the system turn.

Visual-token geometry: the Qwen2.5-VL processor flattens patches as [h/m, w/m, m, m] (m = merge size), so merged
token k of an image sits at row k // (w/m), column k % (w/m) of its merged grid (row-major). The vision tower
permutes tokens into attention windows internally but undoes the permutation after the patch merger, and the
language model's mRoPE gives image tokens the same row-major (row, column) positions; `tests/test_components.py`
checks the order on the tiny model. Masks are BoolTensors over the trajectory's tokens.

Run the checks with `python -m pytest tests/test_components.py -q`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from iapo.agent.parsing import ANSWER
from iapo.agent.trajectory import Trajectory


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

    Keys: `image/r{i}c{j}` for the `grid` (R, C) cells of the original image, `crop/{t}` for each tool-returned
    image (t from 1), `question`, and optionally `history` (policy tokens before the final turn; empty for a
    one-turn trajectory) and `system` (tokens before the prompt's second `<|im_start|>`, which opens the user turn).
    """
    length = int(trajectory.input_ids.shape[0])
    rows, cols = grid
    components = image_region_masks(
        trajectory.image_spans[0], trajectory.image_grid_thw[0], merge_size, rows, cols, length
    )
    for t, (start, end) in enumerate(trajectory.image_spans[1:], start=1):
        components[f"crop/{t}"] = _span_mask(start, end, length)
    components["question"] = _span_mask(*trajectory.question_span, length)
    if include_history:
        final_start, _ = final_turn_span(trajectory.policy_mask)
        components["history"] = trajectory.policy_mask & (torch.arange(length) < final_start)
    if include_system:
        im_start = trajectory.input_ids[0]
        user_start = int(torch.nonzero(trajectory.input_ids == im_start)[1])
        components["system"] = _span_mask(0, user_start, length)
    return components


def final_turn_span(policy_mask: Tensor) -> tuple[int, int]:
    """[start, end) of the last run of policy tokens in a mask [T] (the final turn's generated tokens)."""
    positions = torch.nonzero(policy_mask).flatten()
    if positions.numel() == 0:
        raise ValueError("the trajectory has no policy tokens")
    end = int(positions[-1]) + 1
    gaps = torch.nonzero(~policy_mask[:end]).flatten()
    start = int(gaps[-1]) + 1 if gaps.numel() else 0
    return start, end


def target_mask(trajectory: Trajectory, tokenizer, target: str = "answer") -> Tensor:
    """Mask [T] of the tokens whose log-prob is attributed.

    `"answer"`: the final turn's tokens that cover the text between `<answer>` and `</answer>` (all of the final
    turn's tokens when the tags cannot be located or enclose no token); empty when `final_answer` is None.
    `"generated"`: every policy token.
    """
    if target == "generated":
        return trajectory.policy_mask.clone()
    if target != "answer":
        raise ValueError(f"target must be 'answer' or 'generated', got {target!r}")
    mask = torch.zeros_like(trajectory.policy_mask)
    if trajectory.final_answer is None:
        return mask
    start, end = final_turn_span(trajectory.policy_mask)
    ids = trajectory.input_ids[start:end].tolist()
    text = tokenizer.decode(ids, skip_special_tokens=False)
    match = ANSWER.search(text)
    if match is not None:
        ends = [
            len(t) for t in tokenizer.batch_decode([ids[: k + 1] for k in range(len(ids))], skip_special_tokens=False)
        ]
        begins = [0, *ends[:-1]]
        mask[start:end] = torch.tensor(
            [b < match.end(1) and e > match.start(1) for b, e in zip(begins, ends, strict=True)]
        )
    if not mask.any():
        mask[start:end] = True
    return mask


def _span_mask(start: int, end: int, length: int) -> Tensor:
    mask = torch.zeros(length, dtype=torch.bool)
    mask[start:end] = True
    return mask
