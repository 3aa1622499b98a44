"""The fast rollout path (`CachedGenerator`) is exact: the same tokens as the plain path (greedy, and sampled with a
seed), every step's logits those of a from-scratch forward of the finished trajectory, for multi-turn rollouts
whose first turn is a scripted tool call written through the model (a crop, or an error text, then free turns; some
rows stop while others go on) — and it does less work: one vision-tower pass per distinct image, one prefill per
distinct prompt, and later turns prefill only their new tokens."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from iapo.agent.cached_generation import CachedGenerator
from iapo.agent.rollout import HFPolicy, SamplingSettings, rollout, start_episodes
from iapo.agent.trajectory import collate_trajectories
from iapo.attribution.components import turn_token_spans
from iapo.data.sample import load_image
from iapo.data.synthetic import build_split
from iapo.experiments.bench import count_work
from iapo.experiments.forced_turn import ZOOM_CALL, first_turn_bias, prompt_token_ids

CALLS = {
    "crop": ZOOM_CALL.format(0, 0, 112, 112),
    "error_text": '<tool_call>{"name": "zoom_in", "arguments": {"bbox_2d": [0, 0</tool_call>',
}


@pytest.fixture(scope="module")
def samples():
    rows = build_split("test", 3, seed=0)
    return rows, [load_image(s.image) for s in rows]


@contextmanager
def first_call_on(model, processor, rows, call: str | None):
    """Only the first sample's first turn is `call` (the bias is keyed on its question): its episodes take a second
    turn, the others answer (or not) in one."""
    if call is None:
        yield
        return
    settings = SamplingSettings()
    [ids] = prompt_token_ids(processor, rows[:1], settings.prompt)
    vision_end = processor.tokenizer.convert_tokens_to_ids("<|vision_end|>")
    question_on = len(ids) - 1 - int(torch.nonzero(ids == vision_end)[0])  # the question, options and instruction
    text_ids = processor.tokenizer(call, add_special_tokens=False)["input_ids"]
    previous = model.generation_config.sequence_bias
    model.generation_config.sequence_bias = first_turn_bias([ids], text_ids, context=question_on)
    try:
        yield
    finally:
        model.generation_config.sequence_bias = previous


def run(model, processor, rows, images, fast: bool, do_sample: bool, group_size: int = 2, max_turns: int = 3):
    settings = SamplingSettings(max_turns=max_turns, max_new_tokens=40, do_sample=do_sample, fast_rollout=fast)
    torch.manual_seed(0)
    with count_work(model) as work:
        trajectories = rollout(HFPolicy(model, processor, settings), processor, rows, images, group_size, settings)
    return trajectories, work


@pytest.mark.parametrize("call", ["crop", "error_text"])
@pytest.mark.parametrize("do_sample", [False, True])
def test_fast_rollouts_give_the_plain_tokens(tiny_student, samples, call, do_sample):
    model, processor = tiny_student
    rows, images = samples
    with first_call_on(model, processor, rows, CALLS[call]):
        plain, _ = run(model, processor, rows, images, fast=False, do_sample=do_sample)
        fast, _ = run(model, processor, rows, images, fast=True, do_sample=do_sample)
    assert [len(t.turns) for t in fast] == [2, 2, 1, 1, 1, 1]  # the first prompt's rows go on, the others stop
    assert fast[0].num_images == (2 if call == "crop" else 1)
    for a, b in zip(plain, fast, strict=True):
        assert torch.equal(a.input_ids, b.input_ids)
        assert torch.equal(a.policy_mask, b.policy_mask) and torch.equal(a.mm_token_type_ids, b.mm_token_type_ids)
        assert torch.equal(a.pixel_values, b.pixel_values)
        assert [t.text for t in a.turns] == [t.text for t in b.turns]


@pytest.mark.parametrize("call", ["crop", "error_text"])
def test_every_generated_token_has_the_log_probs_of_a_fresh_forward(tiny_student, samples, call):
    """The logits each decoding step of the fast path computed (read at the LM head) equal, to float32 rounding, those
    of a from-scratch forward of the finished trajectory at that position — in the first turn (prompt prefilled once
    per group) and in the second (cache carried, the crop's features scattered, the observation's positions)."""
    model, processor = tiny_student
    rows, images = samples
    steps: list[torch.Tensor] = []
    head = model.get_output_embeddings().register_forward_hook(lambda m, a, out: steps.append(out[:, -1].detach()))
    try:
        with first_call_on(model, processor, rows, CALLS[call]):
            trajectories, _ = run(model, processor, rows, images, fast=True, do_sample=False)
    finally:
        head.remove()
    # calls by rows: the one-per-prompt prefill (3), the first turn's steps (6 rows), the second turn's (2 rows)
    assert steps[0].shape[0] == 3
    turn_steps = [[s for s in steps[1:] if s.shape[0] == n] for n in (6, 2)]
    assert len(steps) == 1 + sum(map(len, turn_steps))
    checked = 0
    for turn, active in enumerate([list(range(6)), [0, 1]]):
        for row, index in enumerate(active):
            trajectory = trajectories[index]
            with torch.no_grad():
                batch = collate_trajectories([trajectory], processor.tokenizer.pad_token_id)
                fresh = model(**{k: v for k, v in batch.items() if k != "policy_mask"}).logits[0]
            start, end = turn_token_spans(trajectory)[turn]
            generated = torch.stack([s[row] for s in turn_steps[turn][: end - start]])
            torch.testing.assert_close(
                torch.log_softmax(generated, -1), torch.log_softmax(fresh[start - 1 : end - 1], -1), atol=1e-4, rtol=0
            )
            checked += end - start
    assert checked > 250


def test_each_image_is_encoded_once_and_each_prompt_prefilled_once(tiny_student, samples):
    """Plain: every turn encodes every image of every row and prefills every row whole. Fast: the vision tower sees
    the 3 prompts' images and the 2 crops once; each prompt is prefilled once (but its last token, which the first
    decoding step reads), and the second turn prefills only the observation of the 2 continuing rows."""
    model, processor = tiny_student
    rows, images = samples
    with first_call_on(model, processor, rows, CALLS["crop"]):
        plain, plain_work = run(model, processor, rows, images, fast=False, do_sample=False)
        fast, fast_work = run(model, processor, rows, images, fast=True, do_sample=False)
    assert plain_work["vision_images"] == 6 * 1 + 2 * 2  # turn 1: 6 rows × 1 image; turn 2: 2 rows × 2 images
    assert fast_work["vision_images"] == 3 + 2
    padded = max(t.prompt_length for t in fast)  # the first turn's left-padded length
    (_, call_end), (second_start, _) = turn_token_spans(fast[0])
    assert turn_token_spans(fast[1])[1][0] == second_start  # both continuing rows have the same lengths
    assert plain_work["prefill_positions"] == 6 * padded + 2 * second_start
    # the other rows ran to the token limit, so the turn cached the whole scripted call
    assert fast_work["prefill_positions"] == 3 * (padded - 1) + 2 * (second_start - call_end)


def test_a_turn_mixing_new_and_continued_rows_is_refused(tiny_student, samples):
    model, processor = tiny_student
    rows, images = samples
    settings = SamplingSettings(max_new_tokens=4, do_sample=False)
    episodes = start_episodes(processor, rows[:2], images[:2], 1, settings.prompt)
    generator = CachedGenerator(HFPolicy(model, processor, settings))
    generator.generate([episodes[0].decode_row()], 4)
    with pytest.raises(ValueError, match="continue only rows"):
        generator.generate([episodes[0].decode_row(), episodes[1].decode_row()], 4)


def test_a_cache_that_does_not_hold_the_rows_tokens_is_refused(tiny_student, samples):
    model, processor = tiny_student
    rows, images = samples
    settings = SamplingSettings(max_new_tokens=4, do_sample=False)
    [episode] = start_episodes(processor, rows[:1], images[:1], 1, settings.prompt)
    generator = CachedGenerator(HFPolicy(model, processor, settings))
    generator.generate([episode.decode_row()], 4)
    row = episode.decode_row()
    row.input_ids = row.input_ids.clone()
    row.input_ids[5] += 1  # a prompt token the cache did not see
    with pytest.raises(RuntimeError, match="does not hold"):
        generator.generate([row], 4)
