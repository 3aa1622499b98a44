"""Quadrature rules of integrated gradients: Gauss–Legendre is exact where its degree says (on α^k, and on a toy
objective whose path integrand is a polynomial), the right Riemann sum keeps m = 1 at the input itself, and on the
tiny student both rules converge to the same attribution, with completeness gaps that fall as m grows."""

from __future__ import annotations

import math

import pytest
import torch

from helpers.policies import ScriptedPolicy
from iapo.agent.rollout import SamplingSettings, rollout
from iapo.attribution.components import block_components, target_mask
from iapo.attribution.methods import attribute, integrated_gradients_tokens
from iapo.attribution.quadrature import QUADRATURES, quadrature_points, relative_completeness_gap
from iapo.data.sample import load_image
from iapo.data.synthetic import build_split
from iapo.experiments.forced_turn import ZOOM_CALL


@pytest.mark.parametrize("rule", QUADRATURES)
@pytest.mark.parametrize("steps", [1, 2, 3, 5, 8])
def test_points_lie_in_the_unit_interval_and_weights_sum_to_one(rule, steps):
    alphas, weights = quadrature_points(rule, steps)
    assert alphas.shape == weights.shape == (steps,)
    assert bool(((alphas > 0) & (alphas <= 1)).all()) and float(weights.sum()) == pytest.approx(1.0, abs=1e-12)
    if rule == "riemann":
        assert float(alphas[-1]) == 1.0  # the input itself: m = 1 is gradient × input


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 6])
def test_gauss_legendre_integrates_polynomials_up_to_degree_2m_minus_1_exactly(steps):
    alphas, weights = quadrature_points("gauss_legendre", steps)
    for degree in range(2 * steps):
        assert float((weights * alphas**degree).sum()) == pytest.approx(1 / (degree + 1), abs=1e-12)
    degree = 2 * steps  # one more: no longer exact (the error of α^12 at m = 6 is 9e-8, far above float64's)
    assert abs(float((weights * alphas**degree).sum()) - 1 / (degree + 1)) > 1e-8


def test_gauss_legendre_ig_is_exact_for_a_polynomial_objective_of_degree_2m():
    """objective_b = Σ_t (x_bt · w_b)^k: along the path the gradient is a polynomial of degree k − 1 in α, so m
    Gauss–Legendre points give the exact attr_bt = (e_bt · w)^k − (r_b · w)^k for k <= 2m, and not for k = 2m + 1."""
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(3, 5, 4, generator=generator, dtype=torch.float64)
    reference = torch.randn(3, 1, 4, generator=generator, dtype=torch.float64)
    weights = torch.randn(3, 4, generator=generator, dtype=torch.float64) / 2
    projected, base = (embeddings * weights[:, None]).sum(-1), (reference * weights[:, None]).sum(-1)
    for steps in (1, 2, 3):
        for power in range(1, 2 * steps + 2):

            def objective(points, rows, power=power):
                return ((points * weights[rows, None, :]).sum(-1) ** power).sum(-1)

            tokens = integrated_gradients_tokens(objective, embeddings, reference, steps, 4, "gauss_legendre")
            exact = projected**power - base**power
            error = float((tokens - exact).abs().max() / exact.abs().max())
            if power <= 2 * steps:
                assert error < 1e-6, (steps, power, error)  # float32 accumulation of the weighted gradients
            else:
                assert error > 1e-4, (steps, power, error)


def test_relative_gap_and_bad_rules():
    gap = relative_completeness_gap(torch.tensor([1.1, -0.5]), torch.tensor([1.0, -1.0]))
    torch.testing.assert_close(gap, torch.tensor([0.1, 0.5], dtype=torch.float64))
    assert math.isinf(float(relative_completeness_gap(torch.tensor([0.1]), torch.tensor([0.0]))[0]))
    with pytest.raises(ValueError, match="quadrature must be one of"):
        quadrature_points("simpson", 4)
    with pytest.raises(ValueError, match="steps"):
        quadrature_points("riemann", 0)


@pytest.fixture(scope="module")
def called(tiny_processor):
    """(trajectories, block components, tool-call targets): two prompts, each a call then an answer."""
    rows = build_split("test", 2, seed=0)
    images = [load_image(s.image) for s in rows]
    turns = [[ZOOM_CALL.format(0, 0, 120, 90), "Let me see. " + ZOOM_CALL.format(20, 10, 200, 120)], ["A", "B"]]
    policy = ScriptedPolicy(tiny_processor.tokenizer, turns)
    trajectories = rollout(policy, tiny_processor, rows, images, settings=SamplingSettings(max_turns=2))
    targets = [target_mask(t, tiny_processor.tokenizer, "tool_call") for t in trajectories]
    return trajectories, [block_components(t) for t in trajectories], targets


def test_both_rules_converge_to_the_same_attribution_on_the_model(tiny_student, called):
    """Paper variant (tool-call target, blocks, mean baseline): every rule's scores approach Gauss–Legendre at
    m = 16 as m grows, Riemann at m = 64 agrees with it to a few percent, and the completeness gaps shrink."""
    model, processor = tiny_student
    trajectories, components, targets = called
    pad = processor.tokenizer.pad_token_id

    def run(rule, steps):
        gaps: list[float] = []
        scores = attribute(
            model, trajectories, components, targets, pad, method="integrated_gradients", baseline="mean",
            steps=steps, chunk_size=32, quadrature=rule, completeness=gaps,
        )  # fmt: skip
        return scores, gaps

    reference, reference_gaps = run("gauss_legendre", 16)
    assert max(reference_gaps) < 1e-3

    def distance(scores):
        return max(
            abs(row[key] - expected[key]) / sum(expected.values())
            for row, expected in zip(scores, reference, strict=True)
            for key in expected
        )

    for rule, ladder in (("riemann", (4, 16, 64)), ("gauss_legendre", (1, 2, 8))):
        runs = [run(rule, m) for m in ladder]
        distances = [distance(scores) for scores, _ in runs]
        assert distances[0] > distances[1] > distances[2], (rule, distances)
        assert max(runs[-1][1]) < max(runs[0][1])
    assert distance(run("riemann", 64)[0]) < 0.03
