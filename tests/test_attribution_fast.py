"""The attribution shortcuts are exact: each distinct image through the vision tower once gives the model's own
features, sequences cut after the last target token score as the whole sequences do (every method, both baselines,
the tool-call and answer targets, student and teacher), and a trajectory without a target is decided from its turns
exactly as its target mask decides it — so the teacher never re-encodes it — while the work done shrinks."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import iapo.attribution.score as score
from helpers.policies import ScriptedPolicy
from iapo.agent.retokenize import retokenize
from iapo.agent.rollout import SamplingSettings, rollout
from iapo.agent.trajectory import collate_trajectories, device_inputs
from iapo.agent.vision import distinct_image_features, split_images, vision_language_model
from iapo.attribution.components import target_mask, trajectory_components
from iapo.attribution.embeddings import ROW_INPUTS, language_model_inputs, through_last_target
from iapo.attribution.methods import attribute, attribution_mode
from iapo.attribution.score import AttributionSettings, attribution_distributions, has_target
from iapo.data.sample import load_image
from iapo.data.synthetic import build_split
from iapo.experiments.bench import count_work
from iapo.experiments.forced_turn import ZOOM_CALL
from iapo.models.loader import load_model

SCRIPTS = [
    ["It has dots. <answer>A</answer>"],
    ["Let me see. " + ZOOM_CALL.format(0, 0, 120, 90), "<answer>D</answer>"],
    [ZOOM_CALL.format(0, 0, 120, 90), "Again. " + ZOOM_CALL.format(100, 100, 224, 224), "So <answer>B</answer>"],
    [ZOOM_CALL.format(500, 500, 600, 600), "Outside. <answer>C</answer>"],
    ["Hmm."],
]
"""Per prompt, two samples each: an answer alone, one crop, two crops, an error observation, nothing."""
GROUP = 2


@pytest.fixture(scope="module")
def rollouts(tiny_processor):
    """(samples, trajectories): `SCRIPTS`, each prompt twice (the pair shares its original image)."""
    rows = build_split("test", len(SCRIPTS), seed=0)
    images = [load_image(s.image) for s in rows]
    turns = [
        [script[k] for script in SCRIPTS for _ in range(GROUP) if len(script) > k]
        for k in range(max(map(len, SCRIPTS)))
    ]
    policy = ScriptedPolicy(tiny_processor.tokenizer, turns)
    return rows, rollout(policy, tiny_processor, rows, images, GROUP, SamplingSettings(max_turns=3))


@pytest.fixture(scope="module")
def teacher():
    return load_model("tiny-teacher", device="cpu")


def test_distinct_image_features_are_the_models_own(tiny_student, rollouts):
    model, processor = tiny_student
    _, trajectories = rollouts
    batch = collate_trajectories(trajectories, processor.tokenizer.pad_token_id)
    with torch.no_grad(), count_work(model) as work:
        reused = distinct_image_features(model, batch["pixel_values"], batch["image_grid_thw"])
    with torch.no_grad():
        own = vision_language_model(model).get_image_features(batch["pixel_values"], batch["image_grid_thw"])
    images = split_images(batch["pixel_values"], batch["image_grid_thw"])
    assert len(reused) == len(images) == GROUP * (1 + 2 + 3 + 1 + 1)
    contents = {(tuple(g.tolist()), p.numpy().tobytes()) for g, p in zip(batch["image_grid_thw"], images, strict=True)}
    assert work["vision_images"] == len(contents) <= 5 + 1 + 2  # each pair's original and crops are equal
    for mine, theirs in zip(reused, own.pooler_output, strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=0)


def test_cutting_after_the_last_target_keeps_every_earlier_token(tiny_student, rollouts):
    model, processor = tiny_student
    _, trajectories = rollouts
    chosen = [t for t in trajectories if t.stats.calls][:4]  # one crop, then two crops: the target is the calls
    batch = collate_trajectories(chosen, processor.tokenizer.pad_token_id)
    targets = torch.zeros_like(batch["policy_mask"])
    for row, t in enumerate(chosen):
        targets[row, -len(t.input_ids) :] = target_mask(t, processor.tokenizer, "tool_call")
    inputs = device_inputs(model, batch)
    with attribution_mode(model):
        embeddings, positions = language_model_inputs(model, inputs)
    inputs = {key: inputs[key] for key in ROW_INPUTS} | {"position_ids": positions}
    masks = torch.stack([targets, ~targets], dim=1)
    cut, cut_embeddings, cut_masks, cut_targets = through_last_target(
        inputs, embeddings, masks, targets, processor.tokenizer.pad_token_id
    )
    starts = inputs["attention_mask"].float().argmax(-1)
    ends = torch.tensor([int(torch.nonzero(row).max()) + 1 for row in targets])
    assert cut["input_ids"].shape[1] == int((ends - starts).max()) < batch["input_ids"].shape[1]  # answers are gone
    for row in range(len(chosen)):
        real = inputs["attention_mask"][row].bool()
        last = int(torch.nonzero(targets[row]).max())
        keep = real & (torch.arange(targets.shape[1]) <= last)
        kept = cut["attention_mask"][row].bool()
        assert torch.equal(cut["input_ids"][row][kept], inputs["input_ids"][row][keep])
        assert torch.equal(cut["position_ids"][:, row][:, kept], inputs["position_ids"][:, row][:, keep])
        assert torch.equal(cut_embeddings[row][kept], embeddings[row][keep])
        assert torch.equal(cut_masks[row][:, kept], masks[row][:, keep]) and not cut_masks[row][:, ~kept].any()
        assert cut_targets[row].sum() == targets[row].sum() and bool(cut_targets[row, -1])
        assert (cut["input_ids"][row][~kept] == processor.tokenizer.pad_token_id).all()


@pytest.mark.parametrize(
    ("method", "steps", "baseline"),
    [
        ("grad_x_input", 1, "mean"),
        ("integrated_gradients", 3, "zero"),
        ("integrated_gradients", 3, "mean"),  # the mean of the whole sequence, taken before the cut
        ("occlusion", 1, "zero"),
    ],
)
@pytest.mark.parametrize("target", ["tool_call", "answer"])
def test_fast_scores_equal_the_plain_scores(tiny_student, rollouts, method, steps, baseline, target):
    model, processor = tiny_student
    _, trajectories = rollouts
    components = [trajectory_components(t, 2, include_history=True, include_system=True) for t in trajectories]
    targets = [target_mask(t, processor.tokenizer, target) for t in trajectories]
    pad = processor.tokenizer.pad_token_id
    scores = {
        fast: attribute(
            model,
            trajectories,
            components,
            targets,
            pad,
            method=method,
            baseline=baseline,
            steps=steps,
            chunk_size=4,
            fast=fast,
        )
        for fast in (False, True)
    }
    assert [bool(s) for s in scores[True]] == [bool(t.any()) for t in targets]
    for fast, plain in zip(scores[True], scores[False], strict=True):
        assert fast.keys() == plain.keys()
        scale = max(plain.values(), default=0.0)
        for key, value in plain.items():
            # occlusion differences float32 sums of log-probs (~250 for a tool call: a few ulp is ~1e-4)
            assert fast[key] == pytest.approx(value, abs=1e-4 if method == "occlusion" else 1e-5 * scale)


def test_the_teacher_reencodes_only_trajectories_with_a_target(tiny_student, teacher, rollouts, monkeypatch):
    model, processor = tiny_student
    samples, trajectories = rollouts
    calls = []

    def counting(trajectory, sample, processor):
        calls.append(trajectory)
        return retokenize(trajectory, sample, processor)

    monkeypatch.setattr(score, "retokenize", counting)
    settings = AttributionSettings(
        method="integrated_gradients",
        target="tool_call",
        layout="blocks",
        divergence="kl",
        form="penalty",
        steps=2,
        missing_target="exclude",
    )
    plain_settings = dataclasses.replace(settings, fast=False)
    teacher_model, teacher_processor = teacher
    with count_work(teacher_model) as fast_work:
        fast = attribution_distributions(teacher_model, teacher_processor, trajectories, samples, settings, True)
    # six trajectories call a tool, in three identical pairs: each pair is re-encoded once, cut after its last call
    assert sum(t.stats.calls > 0 for t in trajectories) == 6 and len(calls) == 3
    assert all(t.turns[-1].action == "tool_call" and t.num_images == 1 + (len(t.turns) > 1) for t in calls)
    calls.clear()
    with count_work(teacher_model) as plain_work:
        plain = attribution_distributions(teacher_model, teacher_processor, trajectories, samples, plain_settings, True)
    assert len(calls) == len(trajectories)
    assert fast_work["vision_images"] < plain_work["vision_images"]
    assert fast_work["prefill_positions"] < plain_work["prefill_positions"]
    for mine, theirs in zip(fast, plain, strict=True):
        assert mine.keys() == theirs.keys()
        for key, value in theirs.items():
            assert mine[key] == pytest.approx(value, abs=1e-4)
    assert [bool(w) for w in fast] == [t.stats.calls > 0 for t in trajectories]


@pytest.mark.parametrize("target", ["answer", "generated", "tool_call"])
def test_has_target_is_what_the_target_mask_says(tiny_processor, teacher, rollouts, target):
    samples, trajectories = rollouts
    _, teacher_processor = teacher
    for t in trajectories:
        view = retokenize(t, samples[t.sample_index], teacher_processor)
        assert has_target(t, target) == bool(target_mask(t, tiny_processor.tokenizer, target).any())
        assert has_target(view, target) == bool(target_mask(view, teacher_processor.tokenizer, target).any())
