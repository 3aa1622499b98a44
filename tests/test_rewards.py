"""Rewards share one signature and combine with config weights; w_attr = 0 is GRPO."""

from __future__ import annotations

import pytest
import torch

from iapo.agent.trajectory import ToolStats, Trajectory
from iapo.data.sample import VQASample
from iapo.training.rewards import (
    REWARDS,
    AccuracyReward,
    AttributionReward,
    FormatReward,
    ToolCallReward,
    build_rewards,
    compute_rewards,
    register_reward,
)


def make_trajectory(answer, errors=None, sample_index=0):
    stats = ToolStats(calls=1)
    stats.errors.update(errors or {})
    empty = torch.zeros(0, dtype=torch.long)
    return Trajectory(
        uid="u",
        sample_index=sample_index,
        input_ids=empty,
        mm_token_type_ids=empty,
        policy_mask=empty.bool(),
        images=[],
        pixel_values=torch.zeros(0, 1),
        image_grid_thw=torch.zeros(0, 3, dtype=torch.long),
        image_spans=[],
        model_image_sizes=[],
        question_span=(0, 0),
        prompt_length=0,
        final_answer=answer,
        stats=stats,
    )


@pytest.fixture
def batch():
    mcq = VQASample("q0", "synthetic", b"", "What pattern?", "B", "mcq", ("dots", "stripes", "grid"))
    chart = VQASample("q1", "chartqa", b"", "How many?", "40", "relaxed")
    return {"samples": [mcq, chart]}


def test_accuracy_uses_each_data_sets_own_scorer(batch):
    trajectories = [
        make_trajectory("B"),
        make_trajectory("(B) stripes"),
        make_trajectory("A"),
        make_trajectory(None),
        make_trajectory("41.9", sample_index=1),
        make_trajectory("43", sample_index=1),
    ]
    assert AccuracyReward()(trajectories, batch).tolist() == [1.0, 1.0, 0.0, 0.0, 1.0, 0.0]


def test_format_reward_needs_an_answer_and_no_errors(batch):
    trajectories = [
        make_trajectory("B"),
        make_trajectory("B", {"bad_json": 1}),
        make_trajectory(None, {"no_answer": 1}),
    ]
    assert FormatReward()(trajectories, batch).tolist() == [1.0, 0.0, 0.0]


def test_the_tool_call_reward_pays_a_call_that_ran_whatever_its_answer(batch):
    called, failed, skipped = make_trajectory("A"), make_trajectory("B", {"unknown_label": 1}), make_trajectory("B")
    skipped.stats.calls = 0
    assert ToolCallReward()([called, failed, skipped], batch).tolist() == [1.0, 0.0, 0.0]


def test_attribution_reward_is_one_minus_jsd(batch):
    same = {"image/r0c0": 0.5, "question": 0.5}
    scored = {
        **batch,
        "attributions": {
            "student": [same, {"image/r0c0": 1.0}, {}, {"tool/1": 1.0}],
            "teacher": [same, {"question": 1.0}, same, {"tool/1": 0.5, "question": 0.5}],
        },
    }
    trajectories = [make_trajectory("B") for _ in range(4)]
    values = AttributionReward()(trajectories, scored)
    assert values[0] == pytest.approx(1.0)
    assert values[1] == pytest.approx(0.0, abs=1e-6)  # disjoint supports: JSD₂ = 1
    assert values[2] == 0.0  # no target on the student side: not attributed, no reward
    # JSD₂([1, 0], [.5, .5]) = ½·KL(p‖m) + ½·KL(q‖m) with m = [.75, .25]: 0.31128
    assert values[3] == pytest.approx(1 - 0.31128, abs=1e-4)


def test_weights_combine_and_zero_weights_drop_a_reward(batch):
    trajectories = [make_trajectory("B"), make_trajectory("A", {"bad_json": 1})]
    configured = build_rewards({"accuracy": 1.0, "format": 0.5, "attribution": 0.0})
    total, parts = compute_rewards(configured, trajectories, batch)
    assert total.tolist() == [1.5, 0.0]
    assert set(parts) == {"accuracy", "format"}
    assert not configured.needs_attribution  # GRPO: no teacher, no attribution
    assert build_rewards({"accuracy": 1.0, "attribution": 0.5}).needs_attribution


def test_unknown_reward_names_fail_listing_the_registered_ones():
    with pytest.raises(ValueError, match=r"unknown reward\(s\) \['acuracy'\]; registered: .*'accuracy'"):
        build_rewards({"acuracy": 1.0})
    with pytest.raises(ValueError, match="every reward weight is 0"):
        build_rewards({"accuracy": 0.0})


def test_a_registered_reward_is_built_from_config(batch):
    @register_reward("answer_length_test")
    class AnswerLength:
        def __init__(self, context):
            self.context = context

        def __call__(self, trajectories, batch):
            return torch.tensor([float(len(t.final_answer or "")) for t in trajectories])

    try:
        configured = build_rewards({"accuracy": 1.0, "answer_length_test": 0.5})
        total, parts = compute_rewards(configured, [make_trajectory("B"), make_trajectory("(B) stripes")], batch)
        assert parts["answer_length_test"].tolist() == [1.0, 11.0]
        assert total.tolist() == [1.5, 6.5]
    finally:
        REWARDS.pop("answer_length_test")


def test_the_judge_reward_needs_a_configured_judge():
    with pytest.raises(ValueError, match="needs `model.init_args.judge"):
        build_rewards({"judge": 1.0})
