"""Attribution targets, layouts and methods are registered entries: toy ones registered here alone are selected by name in `AttributionSettings` and drive `attribution_distributions` on the tiny student; unknown names
are refused with the registered ones listed."""

from __future__ import annotations

import pytest
import torch

from helpers.policies import ScriptedPolicy
from iapo.agent.rollout import SamplingSettings, rollout
from iapo.attribution.components import (
    LAYOUTS,
    TARGETS,
    get_layout,
    get_target,
    register_layout,
    register_target,
    turn_token_spans,
)
from iapo.attribution.methods import METHODS, register_method
from iapo.attribution.score import AttributionSettings, attribution_distributions, has_target
from iapo.data.sample import load_image
from iapo.data.synthetic import build_split
from iapo.settings_errors import SettingsError

SCRIPTS = [["Looking. <answer>A</answer>"], ["Hmm."]]


@pytest.fixture
def toy_entries():
    """`first_turn`: every token of the first generated turn (a trajectory whose first turn is empty has none);
    `halves`: the tokens before and after the middle of the sequence."""

    @register_target("first_turn", turn=lambda trajectory: 0 if trajectory.turns[0].text else None)
    def first_turn(trajectory, tokenizer):
        mask = torch.zeros_like(trajectory.policy_mask)
        if trajectory.turns[0].text:
            start, end = turn_token_spans(trajectory)[0]
            mask[start:end] = True
        return mask

    @register_layout("halves")
    def halves(trajectory, merge_size, settings):
        middle = int(trajectory.input_ids.shape[0]) // 2
        first = torch.arange(int(trajectory.input_ids.shape[0])) < middle
        return {"first": first, "second": ~first}

    @register_method("token_share")
    def token_share(model, inputs, embeddings, reference, masks, targets, **unused):
        return masks.sum(-1).float(), None  # each component's token count: no model call

    yield
    TARGETS.pop("first_turn")
    LAYOUTS.pop("halves")
    METHODS.pop("token_share")


def test_a_registered_target_and_layout_are_used_by_name(toy_entries, tiny_student):
    model, processor = tiny_student
    rows = build_split("test", len(SCRIPTS), seed=0)
    images = [load_image(s.image) for s in rows]
    policy = ScriptedPolicy(processor.tokenizer, [[script[0] for script in SCRIPTS]])
    trajectories = rollout(policy, processor, rows, images, settings=SamplingSettings(max_turns=1))
    settings = AttributionSettings(method="grad_x_input", target="first_turn", layout="halves")
    stats: dict = {}
    distributions = attribution_distributions(model, processor, trajectories, rows, settings, stats=stats)
    assert all(has_target(t, "first_turn") for t in trajectories) and stats["attributed"] == 2
    for distribution in distributions:
        assert set(distribution) == {"first", "second"} and sum(distribution.values()) == pytest.approx(1.0)


def test_a_registered_method_is_used_by_name(toy_entries, tiny_student):
    model, processor = tiny_student
    rows = build_split("test", 1, seed=0)
    policy = ScriptedPolicy(processor.tokenizer, [[SCRIPTS[0][0]]])
    [trajectory] = rollout(policy, processor, rows, [load_image(rows[0].image)], settings=SamplingSettings(max_turns=1))
    settings = AttributionSettings(method="token_share", target="first_turn", layout="halves", fast=False)
    [distribution] = attribution_distributions(model, processor, [trajectory], rows, settings)
    length = len(trajectory.input_ids)
    assert distribution == pytest.approx({"first": (length // 2) / length, "second": (length - length // 2) / length})


def test_unknown_targets_and_layouts_name_the_registered_ones():
    with pytest.raises(ValueError, match="registered: answer, generated, tool_call"):
        get_target("first_turn")
    with pytest.raises(ValueError, match="registered: blocks, regions"):
        get_layout("halves")
    with pytest.raises(SettingsError, match="attribution layout must be one of"):
        AttributionSettings(layout="halves")
    with pytest.raises(ValueError, match="registered twice"):
        register_target("answer", turn=lambda trajectory: None)(lambda trajectory, tokenizer: None)
