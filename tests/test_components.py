"""Components and targets of trajectories, and the teacher's view of them: region masks partition the original
image's visual tokens, the visual-token order is row-major, retokenizing with the student's processor gives back the
rollout's tokens, the teacher's view has the same keys with other token counts, the P / R / I / T blocks cover each
token of their category exactly once (tools on and off, with and without tool calls, student and teacher tokens), and
the tool-call target is the executed call of every tool-call turn."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
from PIL import Image
from transformers.vision_utils import get_vision_window_index

from helpers.policies import ScriptedPolicy
from iapo.agent.prompts import AgentPrompt, format_question, tools_section
from iapo.agent.retokenize import retokenize
from iapo.agent.rollout import SamplingSettings, rollout
from iapo.attribution.components import (
    block_components,
    call_ran,
    final_turn_span,
    image_region_masks,
    target_mask,
    trajectory_components,
    turn_token_spans,
)
from iapo.attribution.score import has_target
from iapo.data.sample import load_image
from iapo.data.synthetic import build_split
from iapo.data.synthetic_charts import SyntheticChartsConfig
from iapo.data.synthetic_charts import build_split as charts_split
from iapo.models.loader import load_processor

ZOOM = '<tool_call>{{"name": "zoom_in", "arguments": {{"bbox_2d": [{}, {}, {}, {}]}}}}</tool_call>'
SCRIPTS = [
    ["<answer>A</answer>"],
    ["Let me see. " + ZOOM.format(0, 0, 120, 90), "<answer>D</answer>"],
    [ZOOM.format(0, 0, 120, 90), "Again. " + ZOOM.format(100, 100, 224, 224), "Now I know. <answer>B</answer>"],
    [ZOOM.format(500, 500, 600, 600) + "<|im_end|>", "It is <answer>C</answer><|im_end|>"],
    ["Hmm."],
]
"""The turns of each trajectory: 1, 2 and 3 images; an error observation (box outside the image) and turns closed by
the model's own `<|im_end|>` (on a non-square image); no answer."""


@pytest.fixture(scope="module")
def teacher_processor():
    return load_processor("tiny-teacher")


@pytest.fixture(scope="module")
def trajectories(tiny_processor):
    """(samples, trajectories) of `SCRIPTS`."""
    rows = build_split("test", len(SCRIPTS), seed=0)
    images = [load_image(s.image) for s in rows]
    images[3] = images[3].resize((300, 180))
    turns = [[script[k] for script in SCRIPTS if len(script) > k] for k in range(max(map(len, SCRIPTS)))]
    policy = ScriptedPolicy(tiny_processor.tokenizer, turns)
    return rows, rollout(policy, tiny_processor, rows, images, settings=SamplingSettings(max_turns=3))


def test_fixture_covers_the_cases(trajectories):
    _, trajectories = trajectories
    assert [t.num_images for t in trajectories] == [1, 2, 3, 1, 1]
    assert [t.final_answer for t in trajectories] == ["A", "D", "B", "C", None]
    assert trajectories[3].stats.errors["bbox_outside_image"] == 1
    assert all(turn.text.endswith("<|im_end|>") for turn in trajectories[3].turns)


@pytest.mark.parametrize("grid_thw", [(1, 16, 16), (1, 12, 20), (1, 4, 30), (1, 22, 6), (1, 2, 2)])
@pytest.mark.parametrize("cells", [(1, 1), (2, 3), (3, 3), (4, 4), (5, 2)])
def test_region_masks_cover_every_visual_token_exactly_once(grid_thw, cells):
    t, h, w = grid_thw
    height, width = h // 2, w // 2
    start, length = 7, 7 + height * width + 5
    masks = image_region_masks((start, start + height * width), torch.tensor(grid_thw), 2, *cells, length)
    rows, cols = cells
    assert list(masks) == [f"image/r{i}c{j}" for i in range(rows) for j in range(cols)]
    count = torch.stack(list(masks.values())).sum(0)
    assert count[start : start + height * width].eq(1).all() and count.sum() == height * width
    for key, mask in masks.items():
        i, j = (int(v) for v in key.removeprefix("image/r").split("c"))
        for k in torch.nonzero(mask).flatten().tolist():
            y, x = divmod(k - start, width)
            assert (y * rows // height, x * cols // width) == (i, j)


def test_region_masks_reject_a_span_that_does_not_match_the_grid():
    with pytest.raises(ValueError, match="grid"):
        image_region_masks((0, 10), torch.tensor([1, 8, 8]), 2, 3, 3, 20)


def test_visual_tokens_are_row_major_over_the_merged_grid(tiny_student, monkeypatch):
    """A change in one 28×28 cell of the image changes exactly merged token row * W + col of the vision tower's
    output (blocks made identity so nothing mixes; the window permutation is still applied and undone), and the
    language model's mRoPE positions of the image tokens are (row, col) in the same order."""
    model, processor = tiny_student
    visual = model.model.visual
    for block in visual.blocks:
        monkeypatch.setattr(block, "forward", lambda hidden_states, **kwargs: hidden_states)
    base = Image.new("RGB", (280, 168), (120, 120, 120))
    encoded = processor.image_processor(images=[base], return_tensors="pt")
    grid = encoded["image_grid_thw"]
    assert grid.tolist() == [[1, 12, 20]]
    height, width = 6, 10
    config = visual.config
    window_index, _ = get_vision_window_index(grid, 2, config.window_size, config.patch_size)
    assert not torch.equal(window_index, torch.arange(height * width))  # windows really reorder the tokens
    with torch.no_grad():
        reference = visual(encoded["pixel_values"], grid_thw=grid).pooler_output
        for row, col in [(0, 7), (3, 2), (5, 9)]:
            image = base.copy()
            image.paste((255, 0, 0), (col * 28, row * 28, col * 28 + 28, row * 28 + 28))
            pixels = processor.image_processor(images=[image], return_tensors="pt")["pixel_values"]
            changed = (visual(pixels, grid_thw=grid).pooler_output - reference).abs().sum(-1) > 1e-6
            assert torch.nonzero(changed).flatten().tolist() == [row * width + col]

    text = "Look: <|vision_start|><|image_pad|><|vision_end|> ok"
    encoded = processor(text=[text], images=[base], return_tensors="pt")
    positions, _ = model.model.get_rope_index(
        encoded["input_ids"], encoded["mm_token_type_ids"], image_grid_thw=encoded["image_grid_thw"]
    )
    image = encoded["input_ids"][0] == model.config.image_token_id
    hw = positions[1:, 0, image] - positions[1:, 0, image].min(dim=1, keepdim=True).values
    k = torch.arange(height * width)
    assert torch.equal(hw[0], k // width) and torch.equal(hw[1], k % width)


def test_retokenize_with_own_processor_gives_back_the_rollout(tiny_processor, trajectories):
    rows, trajectories = trajectories
    for sample, trajectory in zip(rows, trajectories, strict=True):
        view = retokenize(trajectory, sample, tiny_processor)
        assert torch.equal(view.input_ids, trajectory.input_ids)
        assert torch.equal(view.policy_mask, trajectory.policy_mask)
        assert torch.equal(view.pixel_values, trajectory.pixel_values)
        assert torch.equal(view.image_grid_thw, trajectory.image_grid_thw)
        assert view.image_spans == trajectory.image_spans
        assert view.model_image_sizes == trajectory.model_image_sizes
        assert view.question_span == trajectory.question_span
        assert view.prompt_length == trajectory.prompt_length
        assert view.turns is trajectory.turns and view.final_answer == trajectory.final_answer


def test_teacher_view_has_the_same_keys_and_other_token_counts(tiny_processor, teacher_processor, trajectories):
    rows, trajectories = trajectories
    for sample, trajectory in zip(rows, trajectories, strict=True):
        view = retokenize(trajectory, sample, teacher_processor)
        mine = trajectory_components(trajectory, 2, include_history=True, include_system=True)
        theirs = trajectory_components(view, 2, include_history=True, include_system=True)
        assert list(mine) == list(theirs)
        assert [k for k in mine if k.startswith("tool/")] == [f"tool/{t}" for t in range(1, trajectory.num_images)]
        image_tokens = [int(theirs[k].sum()) for k in theirs if k.startswith("image/")]
        assert sum(image_tokens) == view.image_spans[0][1] - view.image_spans[0][0]
        assert sum(image_tokens) > sum(int(mine[k].sum()) for k in mine if k.startswith("image/"))
        for t, (start, end) in enumerate(view.image_spans[1:], start=1):
            assert torch.equal(torch.nonzero(theirs[f"tool/{t}"]).flatten(), torch.arange(start, end))
        decode = teacher_processor.tokenizer.decode
        assert decode(view.input_ids[view.policy_mask]) == "".join(turn.text for turn in trajectory.turns)
        assert decode(view.input_ids[theirs["question"]]) == tiny_processor.tokenizer.decode(
            trajectory.input_ids[mine["question"]]
        )
        assert decode(view.input_ids[theirs["system"]]).startswith("<|im_start|>system\nYou are a visual assistant")
        assert not (torch.stack(list(theirs.values())).sum(0) > 1).any()  # disjoint


def test_components_of_a_trajectory(trajectories):
    _, trajectories = trajectories
    three = trajectories[2]
    components = trajectory_components(three, 2, grid=(2, 2), include_history=True)
    assert sorted(components) == ["history", "image/r0c0", "image/r0c1", "image/r1c0", "image/r1c1", "question"] + [
        "tool/1",
        "tool/2",
    ]
    start, _ = final_turn_span(three.policy_mask)
    assert torch.equal(components["history"], three.policy_mask & (torch.arange(len(three.policy_mask)) < start))
    assert int(components["history"].sum()) > 0
    assert not trajectory_components(trajectories[0], 2, include_history=True)["history"].any()


def test_target_mask(tiny_processor, trajectories):
    _, trajectories = trajectories
    tokenizer = tiny_processor.tokenizer
    for trajectory in trajectories:
        answer = target_mask(trajectory, tokenizer)
        assert torch.equal(target_mask(trajectory, tokenizer, "generated"), trajectory.policy_mask)
        if trajectory.final_answer is None:
            assert not answer.any()
            continue
        start, end = final_turn_span(trajectory.policy_mask)
        assert answer.any() and not answer[:start].any() and not answer[end:].any()
        assert trajectory.final_answer in tokenizer.decode(trajectory.input_ids[answer])
        assert "</answer>" not in tokenizer.decode(trajectory.input_ids[answer])
    untagged = dataclasses.replace(trajectories[0], input_ids=trajectories[0].input_ids.clone())
    start, end = final_turn_span(untagged.policy_mask)
    untagged.input_ids[start:end] = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert torch.equal(target_mask(untagged, tokenizer)[start:end], torch.ones(end - start, dtype=torch.bool))
    with pytest.raises(ValueError, match="target"):
        target_mask(trajectories[0], tokenizer, "everything")


TOOLS_OFF_SCRIPTS = [
    ["It is <answer>A</answer>"],
    ["Zooming. " + ZOOM.format(0, 0, 120, 90), "Then <answer>B</answer>"],
]
"""Tools off: a direct answer; a tool call anyway (answered with an `unknown_tool` error, no image), then an answer."""
BAD_CALL = '<tool_call>{"name": "zoom_in", "arguments": [1, 2</tool_call>'


@pytest.fixture(scope="module")
def tools_off(tiny_processor):
    """(samples, trajectories) of `TOOLS_OFF_SCRIPTS` under the tools-off prompt, plus one malformed call with tools
    on (answered with an error observation)."""
    rows = build_split("test", len(TOOLS_OFF_SCRIPTS), seed=1)
    images = [load_image(s.image) for s in rows]
    turns = [[script[0] for script in TOOLS_OFF_SCRIPTS], [TOOLS_OFF_SCRIPTS[1][1]]]
    policy = ScriptedPolicy(tiny_processor.tokenizer, turns)
    off = rollout(policy, tiny_processor, rows, images, settings=SamplingSettings(max_turns=2, toolset=None))
    bad = rollout(
        ScriptedPolicy(tiny_processor.tokenizer, [BAD_CALL, "<answer>C</answer>"]),
        tiny_processor,
        rows[:1],
        images[:1],
        settings=SamplingSettings(max_turns=2),
    )
    return [*rows, rows[0]], [*off, *bad]


def test_tools_off_fixture_covers_the_cases(tools_off):
    _, trajectories = tools_off
    assert [t.prompt.toolset for t in trajectories] == [None, None, "zoom"]
    assert [t.stats.calls for t in trajectories] == [0, 1, 1]
    assert trajectories[1].stats.errors["unknown_tool"] == 1 and trajectories[1].num_images == 1
    assert trajectories[2].stats.errors["bad_json"] == 1
    assert [t.tools_span == (0, 0) for t in trajectories] == [True, True, False]


def _block_views(trajectories, tools_off, tiny_processor, teacher_processor):
    """(view, sample, processor) of every fixture trajectory, in the student's and in the teacher's tokens."""
    samples, trajectories = trajectories
    off_samples, off = tools_off
    for sample, trajectory in [*zip(samples, trajectories, strict=True), *zip(off_samples, off, strict=True)]:
        yield trajectory, sample, tiny_processor
        yield retokenize(trajectory, sample, teacher_processor), sample, teacher_processor


def test_blocks_cover_each_token_of_their_category_exactly_once(
    trajectories, tools_off, tiny_processor, teacher_processor
):
    """P ∪ T is the system text (a token that straddles the instructions and the tool definitions goes to T), R the
    question, I every image token; the blocks are disjoint and hold no generated or observation-text token."""
    views = list(_block_views(trajectories, tools_off, tiny_processor, teacher_processor))
    assert len(views) == 2 * (len(SCRIPTS) + 3)
    for view, sample, processor in views:
        tokenizer = processor.tokenizer
        blocks = block_components(view)
        assert list(blocks) == ["P", "R", "I", "T"]
        stacked = torch.stack(list(blocks.values()))
        assert stacked.sum(0).max() <= 1  # each token in at most one block
        image_pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
        assert torch.equal(blocks["I"], view.input_ids == image_pad)
        assert int(blocks["I"].sum()) == sum(int(g.prod()) // 4 for g in view.image_grid_thw)
        prompt = view.prompt
        assert tokenizer.decode(view.input_ids[blocks["P"] | blocks["T"]]) == prompt.system_prompt
        assert tokenizer.decode(view.input_ids[blocks["R"]]) == format_question(sample, prompt.toolset)
        assert not (stacked.any(0) & view.policy_mask).any()
        assert not stacked[[0, 1, 3], view.prompt_length :].any()  # P, R, T: prompt tokens only
        if prompt.toolset is None:
            assert not blocks["T"].any()
            assert tokenizer.decode(view.input_ids[blocks["P"]]) == prompt.system_prompt
            continue
        tools = tokenizer.decode(view.input_ids[blocks["T"]])
        instructions = tokenizer.decode(view.input_ids[blocks["P"]])
        assert tools.endswith(tools_section(prompt.toolset)) and instructions + tools == prompt.system_prompt
        straddle = len(tools) - len(tools_section(prompt.toolset))
        first = tokenizer.decode(view.input_ids[blocks["T"]][:1])
        assert straddle < len(first)  # at most the first token of T reaches into the instructions


def test_blocks_need_the_system_span(trajectories):
    _, trajectories = trajectories
    legacy = dataclasses.replace(trajectories[0], system_span=(0, 0), tools_span=(0, 0))
    with pytest.raises(ValueError, match="records no system span"):
        block_components(legacy)
    assert AgentPrompt(None).tools_char_span()[0] == len(AgentPrompt(None).system_prompt)


def test_tool_call_target_is_the_executed_call_of_every_tool_call_turn(
    trajectories, tools_off, tiny_processor, teacher_processor
):
    """Tokens of each tool-call turn's first `<tool_call>…</tool_call>` block, tags included, in the student's and
    the teacher's tokens; malformed calls and calls made with tools off count; no tool call: an empty target."""
    for view, _, processor in _block_views(trajectories, tools_off, tiny_processor, teacher_processor):
        target = target_mask(view, processor.tokenizer, "tool_call")
        calls = [turn.text[turn.text.index("<tool_call>") :] for turn in view.turns if turn.action == "tool_call"]
        calls = [text[: text.index("</tool_call>") + len("</tool_call>")] for text in calls]
        assert tokenizer_decode(processor, view.input_ids[target]) == "".join(calls)
        assert not (target & ~view.policy_mask).any()
        assert target.any() == bool(view.stats.calls)
    _, on = trajectories
    assert [int(target_mask(t, tiny_processor.tokenizer, "tool_call").any()) for t in on] == [0, 1, 1, 1, 0]
    spans = turn_token_spans(on[2])
    assert len(spans) == 3 and all(end > start for start, end in spans)
    assert [tiny_processor.tokenizer.decode(on[2].input_ids[s:e]) for s, e in spans] == [t.text for t in on[2].turns]


def test_the_arguments_target_is_the_values_a_call_chose(trajectories, tools_off, tiny_processor, teacher_processor):
    """Only the tokens of the argument values (the box of a zoom, the labels of a ReFocus edit): inside the call's
    block, covering every value, not the tool's name or the keys; a call whose arguments are no object: the whole
    block; no tool call: an empty target."""
    for view, _, processor in _block_views(trajectories, tools_off, tiny_processor, teacher_processor):
        values = target_mask(view, processor.tokenizer, "tool_call_arguments")
        call = target_mask(view, processor.tokenizer, "tool_call")
        assert values.any() == call.any() and not (values & ~call).any()
        boxes = [box for turn in view.turns if turn.action == "tool_call" for box in BOX.findall(turn.text)]
        if not boxes:
            assert values.equal(call)  # no call, or BAD_CALL: nothing narrower to point at
            continue
        chosen = tokenizer_decode(processor, view.input_ids[values])
        assert all(box in chosen for box in boxes) and values.sum() < call.sum()
        assert "zoom_in" not in chosen and "bbox_2d" not in chosen and "<tool_call>" not in chosen
    chart = (
        '<tool_call>{"name": "focus_on_x_values_with_mask", "arguments": {"x_values_to_focus_on": ["ant"]}}</tool_call>'
    )
    rows = build_split("test", 1, seed=0)
    policy = ScriptedPolicy(tiny_processor.tokenizer, [[chart], ["<answer>A</answer>"]])
    (edited,) = rollout(
        policy, tiny_processor, rows, [load_image(rows[0].image)], settings=SamplingSettings(max_turns=2)
    )
    chosen = tokenizer_decode(
        tiny_processor, edited.input_ids[target_mask(edited, tiny_processor.tokenizer, "tool_call_arguments")]
    )
    assert '["ant"]' in chosen and "x_values" not in chosen and "focus_on" not in chosen  # token edges may add `}}`


def test_the_call_turn_target_is_every_token_of_the_turns_that_call(
    trajectories, tools_off, tiny_processor, teacher_processor
):
    """The whole turn that holds a tool call, its thought before the call too (where a model names the bar it
    chooses), in both tokenizers' views; never the answer turn, never a prompt token; no tool call: empty."""
    for view, _, processor in _block_views(trajectories, tools_off, tiny_processor, teacher_processor):
        turn = target_mask(view, processor.tokenizer, "tool_call_turn")
        call = target_mask(view, processor.tokenizer, "tool_call")
        assert turn.any() == call.any() and not (call & ~turn).any() and not (turn & ~view.policy_mask).any()
        called = "".join(t.text for t in view.turns if t.action == "tool_call")
        assert tokenizer_decode(processor, view.input_ids[turn]) == called
    thought = 'Focus on "ant".\n'
    chart = (
        '<tool_call>{"name": "focus_on_x_values_with_mask", "arguments": {"x_values_to_focus_on": ["ant"]}}</tool_call>'
    )
    rows = build_split("test", 1, seed=0)
    policy = ScriptedPolicy(tiny_processor.tokenizer, [[thought + chart], ["<answer>A</answer>"]])
    (edited,) = rollout(
        policy, tiny_processor, rows, [load_image(rows[0].image)], settings=SamplingSettings(max_turns=2)
    )
    turn = target_mask(edited, tiny_processor.tokenizer, "tool_call_turn")
    assert tokenizer_decode(tiny_processor, edited.input_ids[turn]) == thought + chart
    assert (
        tokenizer_decode(tiny_processor, edited.input_ids[target_mask(edited, tiny_processor.tokenizer, "tool_call")])
        == chart
    )


BOX = re.compile(r'"bbox_2d": (\[[^\]]*\])')


def tokenizer_decode(processor, ids) -> str:
    return processor.tokenizer.decode(ids, skip_special_tokens=False)


def test_turn_spans_reject_turns_that_do_not_match_the_tokens(trajectories):
    _, trajectories = trajectories
    shifted = dataclasses.replace(trajectories[1], turns=trajectories[1].turns[:1])
    with pytest.raises(ValueError, match="2 runs of policy tokens for 1 turns"):
        target_mask(shifted, None, "tool_call")


def test_the_ran_target_is_the_call_target_of_the_calls_that_ran(
    trajectories, tools_off, tiny_processor, teacher_processor
):
    """`tool_call_ran`: the `tool_call` tokens of the turns whose call was parsed and executed without an error, in
    both tokenizers' views; a trajectory whose every call was malformed or failed has no target (so
    `missing_target` decides its term)."""
    for view, _, processor in _block_views(trajectories, tools_off, tiny_processor, teacher_processor):
        ran = target_mask(view, processor.tokenizer, "tool_call_ran")
        call = target_mask(view, processor.tokenizer, "tool_call")
        assert not (ran & ~call).any()
        assert ran.any() == any(call_ran(turn) for turn in view.turns) == has_target(view, "tool_call_ran")
    chart = (
        '<tool_call>{{"name": "focus_on_x_values_with_mask", '
        '"arguments": {{"x_values_to_focus_on": ["{}"]}}}}</tool_call>'
    )
    rows = charts_split("test", 1, SyntheticChartsConfig(kinds=("chart_v",)), seed=0)
    asked = rows[0].meta["target"]
    for label, runs in ((asked, True), ("no-such-bar", False)):
        policy = ScriptedPolicy(tiny_processor.tokenizer, [[chart.format(label)], ["<answer>10</answer>"]])
        settings = SamplingSettings(max_turns=2, toolset="chart")
        (edited,) = rollout(policy, tiny_processor, rows, [load_image(rows[0].image)], settings=settings)
        call = target_mask(edited, tiny_processor.tokenizer, "tool_call")
        ran = target_mask(edited, tiny_processor.tokenizer, "tool_call_ran")
        assert call.any() and ran.equal(call if runs else torch.zeros_like(call))
