"""Identical attributions within a step are computed once, exactly: a trajectory cut after the turn of its last
target keeps every earlier token (in the student's tokens and in the teacher's re-encoding), and the deduplicated
distributions equal the undeduplicated ones bit for bit on the CPU, for the student and the teacher."""

from __future__ import annotations

import dataclasses

import pytest

import iapo.attribution.score as score
from helpers.policies import ScriptedPolicy
from iapo.agent.retokenize import retokenize
from iapo.agent.rollout import SamplingSettings, rollout
from iapo.attribution.components import target_mask
from iapo.attribution.prefix import attribution_key, target_turn, through_target_turn
from iapo.attribution.score import AttributionSettings, attribution_distributions
from iapo.data.sample import load_image
from iapo.data.synthetic import build_split
from iapo.experiments.forced_turn import ZOOM_CALL
from iapo.models.loader import load_model

CALL_A, CALL_B = ZOOM_CALL.format(0, 0, 120, 90), ZOOM_CALL.format(60, 40, 200, 160)
GROUP = [
    [CALL_A, "<answer>A</answer>"],
    [CALL_A, "So <answer>B</answer>"],  # the same call as the first sample, another answer
    ["Hmm. " + CALL_B, "<answer>A</answer>"],
    ["<answer>C</answer>"],  # no call
]
"""Each prompt's group of four samples: for the tool-call target, 2 distinct attributions of 3."""
PAPER = AttributionSettings(
    method="integrated_gradients",
    target="tool_call",
    layout="blocks",
    divergence="kl",
    form="penalty",
    missing_target="exclude",
    baseline="mean",
    steps=2,
    quadrature="gauss_legendre",
)


@pytest.fixture(scope="module")
def group_rollouts(tiny_processor):
    """(samples, trajectories): two prompts × `GROUP`."""
    rows = build_split("test", 2, seed=0)
    images = [load_image(s.image) for s in rows]
    turns = [[script[k] for _ in rows for script in GROUP if len(script) > k] for k in range(2)]
    policy = ScriptedPolicy(tiny_processor.tokenizer, turns)
    return rows, rollout(policy, tiny_processor, rows, images, len(GROUP), SamplingSettings(max_turns=2))


@pytest.fixture(scope="module")
def teacher():
    return load_model("tiny-teacher", device="cpu")


def test_the_cut_keeps_every_token_up_to_the_targets_turn(tiny_processor, teacher, group_rollouts):
    samples, trajectories = group_rollouts
    _, teacher_processor = teacher
    for trajectory in trajectories:
        for target in ("tool_call", "answer"):
            turn = target_turn(trajectory, target)
            if turn is None:
                continue
            cut = through_target_turn(trajectory, target)
            length = len(cut.input_ids)
            assert cut.input_ids.equal(trajectory.input_ids[:length]) and len(cut.turns) == turn + 1
            assert target_mask(cut, tiny_processor.tokenizer, target).equal(
                target_mask(trajectory, tiny_processor.tokenizer, target)[:length]
            )
            assert not target_mask(trajectory, tiny_processor.tokenizer, target)[length:].any()
            # the call's returned crop is after the tool-call cut; the answer's cut keeps everything
            assert cut.num_images == (1 if target == "tool_call" else trajectory.num_images)
            assert cut.pixel_values.shape[0] == int(cut.image_grid_thw.prod(-1).sum())
            # the teacher's view of the cut is its view of the whole trajectory up to the last target token
            sample = samples[trajectory.sample_index]
            mine, whole = retokenize(cut, sample, teacher_processor), retokenize(trajectory, sample, teacher_processor)
            end = int(target_mask(whole, teacher_processor.tokenizer, target).nonzero().max()) + 1
            assert mine.input_ids[:end].equal(whole.input_ids[:end])
            assert mine.pixel_values.equal(whole.pixel_values[: mine.pixel_values.shape[0]])


def test_keys_tell_calls_and_prompts_apart(group_rollouts):
    _, trajectories = group_rollouts
    keys = [attribution_key(through_target_turn(t, "tool_call")) for t in trajectories if t.stats.calls]
    # per prompt: call A twice (one key), call B; the second prompt's calls are other keys
    assert keys[0] == keys[1] and len(set(keys)) == 4
    answers = [attribution_key(through_target_turn(t, "answer")) for t in trajectories]
    assert len(set(answers)) == len(answers)


@pytest.mark.parametrize("side", ["student", "teacher"])
def test_deduplicated_attributions_equal_the_undeduplicated_bit_for_bit(
    tiny_student, teacher, group_rollouts, side, monkeypatch
):
    """One trajectory per batch (`batch_size: 1`), so each attribution's arithmetic is the same in both runs: the
    distributions are equal as floats, and the deduplicated run encodes and attributes 4 trajectories, not 6."""
    samples, trajectories = group_rollouts
    model, processor = tiny_student if side == "student" else teacher
    encoded = []

    def counting(trajectory, sample, processor):
        encoded.append(trajectory.uid)
        return retokenize(trajectory, sample, processor)

    monkeypatch.setattr(score, "retokenize", counting)
    runs = {}
    for deduplicate in (True, False):
        settings = dataclasses.replace(PAPER, batch_size=1, deduplicate=deduplicate, completeness_rows=6)
        stats: dict = {}
        weights = attribution_distributions(
            model, processor, trajectories, samples, settings, reencode=side == "teacher", stats=stats
        )
        runs[deduplicate] = weights, stats
    (deduplicated, once), (every, all_of_them) = runs[True], runs[False]
    assert deduplicated == every and sum(map(bool, every)) == 6
    assert (once["attributed"], once["distinct"], all_of_them["distinct"]) == (6, 4, 6)
    assert once["completeness_gaps"] == [all_of_them["completeness_gaps"][i] for i in (0, 2, 3, 5)]
    assert len(encoded) == (10 if side == "teacher" else 0)  # 4 + 6 re-encodings


def test_batches_of_distinct_attributions_agree_with_every_trajectory_batched(tiny_student, group_rollouts):
    """The default batching: deduplication changes which rows share a batch, so the scores agree to float rounding."""
    samples, trajectories = group_rollouts
    model, processor = tiny_student
    deduplicated = attribution_distributions(model, processor, trajectories, samples, PAPER)
    every = attribution_distributions(
        model, processor, trajectories, samples, dataclasses.replace(PAPER, deduplicate=False)
    )
    for mine, theirs in zip(deduplicated, every, strict=True):
        assert mine.keys() == theirs.keys()
        for key, value in theirs.items():
            assert mine[key] == pytest.approx(value, abs=1e-6)


def test_the_completeness_gap_is_measured_on_the_configured_sample(tiny_student, group_rollouts):
    """`completeness_rows` bounds the rows whose gap is measured (two forwards each); 0 measures none and leaves the
    attributions unchanged."""
    samples, trajectories = group_rollouts
    model, processor = tiny_student
    runs = {}
    for rows in (0, 2, 6):
        stats: dict = {}
        settings = dataclasses.replace(PAPER, batch_size=3, completeness_rows=rows)
        runs[rows] = attribution_distributions(model, processor, trajectories, samples, settings, stats=stats), stats
    assert [len(runs[rows][1]["completeness_gaps"]) for rows in (0, 2, 6)] == [0, 2, 4]  # 4 distinct cuts
    assert runs[0][0] == runs[2][0] == runs[6][0]
    assert runs[2][1]["completeness_gaps"] == runs[6][1]["completeness_gaps"][:2]
