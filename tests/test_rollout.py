"""The multi-turn rollout: crops reach the model, tokens match the chat template, malformed output is counted,
and every trajectory's log-probs are the same inside a padded batch as alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iapo.agent.prompts import observation_message, prompt_messages
from iapo.agent.rollout import HFPolicy, SamplingSettings, rollout
from iapo.agent.tools import tool_failure_kinds
from iapo.agent.trajectory import collate_trajectories, forward_logprobs, token_logprobs
from iapo.data.sample import load_image
from iapo.data.synthetic import build_split

ZOOM = '<tool_call>{{"name": "zoom_in", "arguments": {{"bbox_2d": [{}, {}, {}, {}]}}}}</tool_call>'


@pytest.fixture(scope="module")
def samples():
    rows = build_split("test", 3, seed=0)
    return rows, [load_image(s.image) for s in rows]


def test_crop_enters_the_next_model_call(tiny_processor, samples, scripted):
    rows, images = samples
    policy = scripted(tiny_processor.tokenizer, ["Zoom. " + ZOOM.format(20, 40, 76, 96), "<answer>B</answer>"])
    [trajectory] = rollout(policy, tiny_processor, rows[:1], images[:1], settings=SamplingSettings(max_turns=3))

    first, second = policy.batches
    assert first["image_grid_thw"].shape[0] == 1 and second["image_grid_thw"].shape[0] == 2
    image_token = tiny_processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    merge = tiny_processor.image_processor.merge_size
    assert int((second["input_ids"] == image_token).sum()) == int(second["image_grid_thw"].prod(-1).sum()) // merge**2
    assert second["pixel_values"].shape[0] == int(second["image_grid_thw"].prod(-1).sum())
    # the crop's patches are those of the processor applied to the expected crop of the original
    model_h, model_w = trajectory.model_image_sizes[0]
    sx, sy = images[0].width / model_w, images[0].height / model_h
    box = (int(20 * sx), int(40 * sy), int(np.ceil(76 * sx)), int(np.ceil(96 * sy)))
    assert trajectory.turns[0].crop_box == box
    expected = tiny_processor.image_processor(images=[images[0].crop(box)], return_tensors="pt")
    n_first = int(first["image_grid_thw"].prod())
    torch.testing.assert_close(second["pixel_values"][n_first:], expected["pixel_values"])
    for (start, end), grid in zip(trajectory.image_spans, trajectory.image_grid_thw, strict=True):
        assert end - start == int(grid.prod()) // merge**2

    assert trajectory.final_answer == "B"
    assert trajectory.stats.calls == 1 and not trajectory.stats.errors and trajectory.well_formed


def test_tokens_equal_the_chat_template_of_the_conversation(tiny_student, samples, scripted):
    """Token-level concatenation in the rollout == rendering the whole conversation with the chat template, and the
    trajectory scores exactly as the processor's own encoding does (3-D mRoPE positions for every image)."""
    model, tiny_processor = tiny_student
    rows, images = samples
    turn0, turn1 = "Look closer. " + ZOOM.format(0, 0, 100, 100), "It has dots.<answer>C</answer>"
    policy = scripted(tiny_processor.tokenizer, [turn0, turn1])
    [trajectory] = rollout(policy, tiny_processor, rows[:1], images[:1])
    conversation = prompt_messages(rows[0]) + [
        {"role": "assistant", "content": turn0},
        observation_message("", with_image=True),
        {"role": "assistant", "content": turn1},
    ]
    text = tiny_processor.apply_chat_template(conversation, tokenize=False)
    encoded = tiny_processor(text=[text], images=trajectory.images, return_tensors="pt")
    expected = encoded["input_ids"][0]
    im_end_newline = len(tiny_processor.tokenizer("<|im_end|>\n")["input_ids"])
    # the rollout stops right after </answer>; the template closes the turn with <|im_end|>\n
    assert torch.equal(trajectory.input_ids, expected[:-im_end_newline])
    assert torch.equal(trajectory.mm_token_type_ids, encoded["mm_token_type_ids"][0][:-im_end_newline])
    with torch.no_grad():
        reference = token_logprobs(model(**encoded).logits, encoded["input_ids"])[0, :-im_end_newline]
        mine = forward_logprobs(model, collate_trajectories([trajectory], tiny_processor.tokenizer.pad_token_id))[0]
    torch.testing.assert_close(mine, reference, atol=1e-5, rtol=0)
    policy_text = tiny_processor.tokenizer.decode(trajectory.input_ids[trajectory.policy_mask])
    assert policy_text == turn0 + turn1
    question = tiny_processor.tokenizer.decode(trajectory.input_ids[slice(*trajectory.question_span)])
    assert question.startswith(rows[0].question) and "Options:" in question


@pytest.mark.parametrize(
    ("turns", "errors", "calls"),
    [
        (
            ['<tool_call>{"name": "zoom_in", "arguments": {"bbox_2d": [1, 2</tool_call>', "<answer>A</answer>"],
            {"bad_json": 1},
            1,
        ),
        (
            ['<tool_call>{"name": "crop", "arguments": {"bbox_2d": [0, 0, 9, 9]}}</tool_call>', "<answer>A</answer>"],
            {"unknown_tool": 1},
            1,
        ),
        (
            ['<tool_call>{"name": "zoom_in", "arguments": {}}</tool_call>', "<answer>A</answer>"],
            {"missing_arguments": 1},
            1,
        ),
        ([ZOOM.format(500, 500, 600, 600), "<answer>A</answer>"], {"bbox_outside_image": 1}, 1),
        (["<answer>A</answer> because of the dots"], {"text_after_answer": 1}, 0),
        (["I do not know."], {"no_action": 1, "no_answer": 1}, 0),
        ([ZOOM.format(0, 0, 50, 50)] * 2, {"no_answer": 1}, 2),
    ],
)
def test_malformed_output_is_counted_not_raised(tiny_processor, samples, scripted, turns, errors, calls):
    rows, images = samples
    policy = scripted(tiny_processor.tokenizer, turns)
    [trajectory] = rollout(policy, tiny_processor, rows[:1], images[:1], settings=SamplingSettings(max_turns=2))
    assert dict(trajectory.stats.errors) == errors
    assert trajectory.stats.calls == calls
    assert trajectory.stats.failures == sum(n for kind, n in errors.items() if kind in tool_failure_kinds())
    assert not trajectory.well_formed
    if "bad_json" in errors or "unknown_tool" in errors:
        assert trajectory.final_answer == "A" and trajectory.num_images == 1  # the error text was the observation


def test_untrained_model_rollouts_are_well_formed_trajectories(tiny_student):
    """64 sampled rollouts (16 prompts × 4) of the untrained tiny model: valid structure, whatever they say."""
    model, processor = tiny_student
    rows = build_split("test", 16, seed=1)
    images = [load_image(s.image) for s in rows]
    settings = SamplingSettings(max_turns=2, max_new_tokens=24)
    torch.manual_seed(0)
    trajectories = rollout(
        HFPolicy(model, processor, settings), processor, rows, images, group_size=4, settings=settings
    )
    assert len(trajectories) == 64
    assert [t.sample_index for t in trajectories] == [i for i in range(16) for _ in range(4)]
    for t in trajectories:
        assert t.input_ids.shape == t.policy_mask.shape
        assert not t.policy_mask[: t.prompt_length].any() and t.policy_mask.any()
        assert len(t.image_spans) == t.num_images == t.image_grid_thw.shape[0]
        assert t.pixel_values.shape[0] == int(t.image_grid_thw.prod(-1).sum())
        assert 1 <= len(t.turns) <= 2
        assert t.final_answer is not None or t.stats.errors["no_answer"] == 1
        assert t.completion_length <= settings.max_new_tokens * len(t.turns)


def test_batched_logprobs_equal_logprobs_alone(tiny_student, samples, scripted):
    """Trajectories with 1, 2 and 3 images, left-padded into one batch, score exactly as they do alone (fp32)."""
    model, processor = tiny_student
    rows, images = samples
    zoom_a, zoom_b = ZOOM.format(0, 0, 120, 90), ZOOM.format(100, 100, 224, 224)
    scripts = [
        ["<answer>A</answer>", "Let me see. " + zoom_a, zoom_a],
        [None, "<answer>D</answer>", "Again. " + zoom_b],
        [None, None, "Now I know. <answer>B</answer>"],
    ]
    policy = scripted(processor.tokenizer, [[text for text in turn if text is not None] for turn in scripts])
    trajectories = rollout(policy, processor, rows, images, settings=SamplingSettings(max_turns=3))
    assert [t.num_images for t in trajectories] == [1, 2, 3]
    pad = processor.tokenizer.pad_token_id
    with torch.no_grad():
        batch = collate_trajectories(trajectories, pad)
        together = forward_logprobs(model, batch)
        for row, t in enumerate(trajectories):
            alone = forward_logprobs(model, collate_trajectories([t], pad))[0]
            mine = together[row, batch["input_ids"].shape[1] - t.input_ids.shape[0] :]
            torch.testing.assert_close(mine[1:], alone[1:], atol=1e-4, rtol=0)
            assert torch.equal(batch["policy_mask"][row, -t.input_ids.shape[0] :], t.policy_mask)
