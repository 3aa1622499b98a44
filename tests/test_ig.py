"""Integrated gradients: the right Riemann sum against closed forms (a linear objective, where completeness is exact,
and a quadratic one, where the m-step error is known), chunking that changes nothing, m = 1 equal to gradient × input
bit for bit, and on the tiny student: completeness within a tolerance that shrinks as 1/m, chunks of any size, and
the paper's variant (tool-call target, blocks) for the student and the teacher's view."""

from __future__ import annotations

import pytest
import torch

from helpers.policies import ScriptedPolicy
from iapo.agent.rollout import SamplingSettings, rollout
from iapo.agent.trajectory import collate_trajectories, device_inputs
from iapo.attribution.components import block_components, target_mask, trajectory_components
from iapo.attribution.embeddings import language_model_inputs, select_rows, target_logprob_fn
from iapo.attribution.methods import (
    attribute,
    attribution_mode,
    baseline_embeddings,
    grad_x_input_scores,
    integrated_gradients_scores,
    integrated_gradients_tokens,
)
from iapo.attribution.score import AttributionSettings, attribution_distributions
from iapo.data.sample import load_image
from iapo.data.synthetic import build_split
from iapo.models.loader import load_model

ZOOM = '<tool_call>{{"name": "zoom_in", "arguments": {{"bbox_2d": [{}, {}, {}, {}]}}}}</tool_call>'
SCRIPTS = [
    ["It has dots. <answer>A</answer>"],
    ["Let me see. " + ZOOM.format(0, 0, 120, 90), "<answer>D</answer>"],
    [ZOOM.format(0, 0, 120, 90), "Again. " + ZOOM.format(100, 100, 224, 224), "Now I know. <answer>B</answer>"],
]
"""No tool call; one; two (1, 2 and 3 images)."""


def _toy(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(3, 5, 4, generator=generator)
    reference = torch.randn(3, 1, 4, generator=generator)
    weights = torch.randn(3, 4, generator=generator)  # one per row: the objective must get the right rows
    masks = torch.rand(3, 2, 5, generator=generator) > 0.5
    return embeddings, reference, weights, masks


def test_linear_objective_completeness_is_exact_for_every_m():
    """objective_b = Σ_t e_bt · w_b: the gradient is constant, so attr_bt = (e_bt − r_b) · w_b for any m."""
    embeddings, reference, weights, _ = _toy()

    def objective(points, rows):
        return (points * weights[rows, None, :]).sum((1, 2))

    exact = ((embeddings - reference) * weights[:, None, :]).sum(-1)
    for steps, chunk in [(1, 3), (4, 1), (7, 5), (16, 48)]:
        tokens = integrated_gradients_tokens(objective, embeddings, reference, steps, chunk)
        torch.testing.assert_close(tokens, exact)
        full, base = objective(embeddings, torch.arange(3)), objective(reference.expand_as(embeddings), torch.arange(3))
        torch.testing.assert_close(tokens.sum(-1), full - base)


def test_quadratic_objective_has_the_known_riemann_error():
    """objective_b = Σ_t (e_bt · w_b)²: the right Riemann sum over m steps gives exactly
    attr_bt = (e_bt · w)² − (r_b · w)² + ((e_bt − r_b) · w)² / m, so completeness holds with an error Σ_t (δ·w)² / m."""
    embeddings, reference, weights, _ = _toy(1)

    def objective(points, rows):
        return ((points * weights[rows, None, :]).sum(-1) ** 2).sum(-1)

    projected, base = (embeddings * weights[:, None, :]).sum(-1), (reference * weights[:, None, :]).sum(-1)
    for steps in (1, 3, 8, 64):
        tokens = integrated_gradients_tokens(objective, embeddings, reference, steps, chunk_size=5)
        expected = projected**2 - base**2 + (projected - base) ** 2 / steps
        torch.testing.assert_close(tokens, expected, rtol=1e-5, atol=1e-5)
        gap = tokens.sum(-1) - (
            objective(embeddings, torch.arange(3)) - objective(reference.expand_as(embeddings), torch.arange(3))
        )
        torch.testing.assert_close(gap, ((projected - base) ** 2).sum(-1) / steps, rtol=1e-4, atol=1e-5)


def test_chunks_change_nothing_and_one_step_is_gradient_times_input():
    embeddings, reference, weights, masks = _toy(2)

    def objective(points, rows):
        return torch.tanh((points * weights[rows, None, :]).sum(-1)).pow(3).sum(-1)

    unchunked = integrated_gradients_scores(objective, embeddings, masks, reference, steps=6, chunk_size=18)
    for chunk in (1, 4, 7):
        for got, expected in zip(
            integrated_gradients_scores(objective, embeddings, masks, reference, steps=6, chunk_size=chunk),
            unchunked,
            strict=True,
        ):
            torch.testing.assert_close(got, expected)
    one_step, _ = integrated_gradients_scores(objective, embeddings, masks, reference, steps=1, chunk_size=3)
    gradient = grad_x_input_scores(lambda e: objective(e, torch.arange(3)), embeddings, masks, reference)
    assert torch.equal(one_step, gradient)
    with pytest.raises(ValueError, match="steps"):
        integrated_gradients_tokens(objective, embeddings, reference, steps=0, chunk_size=1)


@pytest.fixture(scope="module")
def trajectories(tiny_processor):
    """(samples, trajectories) of `SCRIPTS`."""
    rows = build_split("test", len(SCRIPTS), seed=0)
    images = [load_image(s.image) for s in rows]
    turns = [[script[k] for script in SCRIPTS if len(script) > k] for k in range(max(map(len, SCRIPTS)))]
    policy = ScriptedPolicy(tiny_processor.tokenizer, turns)
    return rows, rollout(policy, tiny_processor, rows, images, settings=SamplingSettings(max_turns=3))


@pytest.mark.parametrize("baseline", ["zero", "mean"])
def test_one_step_equals_gradient_times_input_on_the_model(tiny_student, trajectories, baseline):
    model, processor = tiny_student
    _, trajectories = trajectories
    components = [trajectory_components(t, 2) for t in trajectories]
    targets = [target_mask(t, processor.tokenizer) for t in trajectories]
    pad = processor.tokenizer.pad_token_id
    gradient = attribute(model, trajectories, components, targets, pad, method="grad_x_input", baseline=baseline)
    one_step = attribute(
        model, trajectories, components, targets, pad, method="integrated_gradients", baseline=baseline, steps=1
    )
    assert one_step == gradient and all(one_step)


def test_chunked_steps_equal_unchunked_on_the_model(tiny_student, trajectories):
    """Chunks of 1, 5 and all 12 points: other batch compositions, the same scores (to float32 rounding)."""
    model, processor = tiny_student
    _, trajectories = trajectories
    components = [trajectory_components(t, 2) for t in trajectories]
    targets = [target_mask(t, processor.tokenizer) for t in trajectories]
    pad = processor.tokenizer.pad_token_id

    def run(chunk_size):
        return attribute(
            model,
            trajectories,
            components,
            targets,
            pad,
            method="integrated_gradients",
            baseline="mean",
            steps=4,
            chunk_size=chunk_size,
        )

    reference = run(12)
    scale = max(v for row in reference for v in row.values())
    assert scale > 0
    for chunk_size in (1, 5):
        for row, expected in zip(run(chunk_size), reference, strict=True):
            assert row.keys() == expected.keys()
            for key, value in expected.items():
                assert row[key] == pytest.approx(value, abs=1e-5 * scale)


def test_completeness_on_the_model_within_a_tolerance_that_shrinks_with_m(tiny_student, trajectories):
    """Σ_t attr_t → f(e) − f(b) (answer log-prob, mean baseline): the gap falls as 1/m (measured 0.19/m, 0.18/m,
    0.18/m at m = 4, 16, 64 for the worst row), so it must stay under 0.4/m, fall with every m, and at m = 64 be
    under 10% of each row's f(e) − f(b) (0.049 and 0.164 here)."""
    model, processor = tiny_student
    _, trajectories = trajectories
    pad = processor.tokenizer.pad_token_id
    batch = collate_trajectories(trajectories[:2], pad)
    inputs = device_inputs(model, batch)
    targets = torch.zeros_like(batch["policy_mask"])
    for row, trajectory in enumerate(trajectories[:2]):
        targets[row, -len(trajectory.input_ids) :] = target_mask(trajectory, processor.tokenizer)
    with attribution_mode(model):
        embeddings, positions = language_model_inputs(model, inputs)
        inputs = {**inputs, "position_ids": positions}
        reference = baseline_embeddings(embeddings, inputs["attention_mask"], "mean")

        def objective(points, rows):
            return target_logprob_fn(model, select_rows(inputs, rows), targets[rows])(points)

        rows = torch.arange(2)
        with torch.no_grad():
            change = objective(embeddings, rows) - objective(reference.expand_as(embeddings).contiguous(), rows)
        gaps = []
        for steps in (4, 16, 64):
            tokens = integrated_gradients_tokens(objective, embeddings, reference, steps, chunk_size=32)
            gap = float((tokens.sum(-1) - change).abs().max())
            assert gap < 0.4 / steps
            gaps.append(gap)
        assert ((tokens.sum(-1) - change).abs() < 0.1 * change.abs()).all()
    assert gaps[0] > gaps[1] > gaps[2]


def test_paper_variant_for_student_and_teacher(tiny_student, trajectories):
    """IG of the tool-call tokens over the blocks: a trajectory without a tool call gets `{}`; the others get the
    four blocks (tool definitions included) as a distribution, for the student and for the teacher's own tokens."""
    model, processor = tiny_student
    samples, trajectories = trajectories
    teacher, teacher_processor = load_model("tiny-teacher", device="cpu")
    settings = AttributionSettings(
        method="integrated_gradients", target="tool_call", layout="blocks", steps=3, chunk_size=4, baseline="mean"
    )
    student = attribution_distributions(model, processor, trajectories, samples, settings)
    theirs = attribution_distributions(teacher, teacher_processor, trajectories, samples, settings, reencode=True)
    for side in (student, theirs):
        assert side[0] == {}
        for weights in side[1:]:
            assert list(weights) == ["I", "P", "R", "T"]
            assert sum(weights.values()) == pytest.approx(1.0) and min(weights.values()) > 0
    assert student[1] != theirs[1]
    assert list(block_components(trajectories[1])) == ["P", "R", "I", "T"]
