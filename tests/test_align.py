"""Tests for iapo.attribution.align: normalisation, JSD, cosine and smoothed KL divergences, key alignment of two
attributions, and the reward term (penalty −D, similarity 1 − D) with trajectories that have no target."""

from __future__ import annotations

import math

import pytest
import torch

from iapo.attribution.align import (
    DIVERGENCES,
    align_distributions,
    attribution_divergence,
    attribution_term,
    attribution_terms,
    cosine_distance,
    jsd,
    kl,
    normalize,
)


def _random_dists(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)).softmax(dim=-1)


# --- normalize ----------------------------------------------------------------------------------------------------


def test_normalize_rows_sum_to_one_and_keep_proportions():
    scores = torch.tensor([[1.0, 3.0, 0.0, 4.0], [0.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0]])
    dist = normalize(scores)
    torch.testing.assert_close(dist[0], torch.tensor([0.125, 0.375, 0.0, 0.5]))
    torch.testing.assert_close(dist[1], torch.full((4,), 0.25))  # all-zero row -> uniform
    torch.testing.assert_close(dist[2], torch.tensor([1.0, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(normalize(torch.tensor([2, 6])), torch.tensor([0.25, 0.75]))  # integers accepted


def test_normalize_rejects_bad_scores():
    with pytest.raises(ValueError, match="non-negative"):
        normalize(torch.tensor([0.5, -0.1]))
    with pytest.raises(ValueError, match="NaN or inf"):
        normalize(torch.tensor([0.5, float("nan")]))
    with pytest.raises(ValueError, match="non-empty"):
        normalize(torch.zeros(3, 0))


# --- jsd ----------------------------------------------------------------------------------------------------------


def test_jsd_zero_for_identical_and_one_for_disjoint():
    p = _random_dists(5, 7)
    torch.testing.assert_close(jsd(p, p), torch.zeros(5), atol=1e-6, rtol=0)
    disjoint_p = torch.tensor([0.5, 0.5, 0.0, 0.0])
    disjoint_q = torch.tensor([0.0, 0.0, 0.2, 0.8])
    assert jsd(disjoint_p, disjoint_q).item() == pytest.approx(1.0, abs=1e-6)


def test_jsd_hand_computed_value():
    p, q = torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5])
    # m = (0.75, 0.25); KL(p||m) = log2(1/0.75); KL(q||m) = 0.5 log2(0.5/0.75) + 0.5 log2(0.5/0.25)
    expected = 0.5 * (math.log2(1 / 0.75) + 0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(2.0))
    assert jsd(p, q).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.311278, abs=1e-6)


def test_jsd_symmetric_bounded_and_batched():
    p, q = _random_dists(4, 3, 6, seed=1), _random_dists(4, 3, 6, seed=2)
    p = torch.cat([p, torch.tensor([1.0, 0, 0, 0, 0, 0]).expand(4, 1, 6)], dim=1)  # add peaked rows
    q = torch.cat([q, torch.tensor([0, 0, 0, 0, 0, 1.0]).expand(4, 1, 6)], dim=1)
    value = jsd(p, q)
    assert value.shape == (4, 4)
    torch.testing.assert_close(value, jsd(q, p))
    assert torch.all((value >= 0) & (value <= 1))
    torch.testing.assert_close(value[2, 1], jsd(p[2, 1], q[2, 1]))


def test_jsd_finite_value_and_gradient_with_zeros():
    p = torch.tensor([0.0, 0.3, 0.7, 0.0], requires_grad=True)
    q = torch.tensor([0.4, 0.0, 0.6, 0.0], requires_grad=True)
    value = jsd(p, q)
    value.backward()
    assert torch.isfinite(value) and 0 < value.item() < 1
    assert torch.isfinite(p.grad).all() and torch.isfinite(q.grad).all()


def test_jsd_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        jsd(torch.ones(3) / 3, torch.ones(4) / 4)


# --- cosine -------------------------------------------------------------------------------------------------------


def test_cosine_distance():
    p = torch.tensor([0.2, 0.8, 0.0])
    assert cosine_distance(p, p).item() == pytest.approx(0.0, abs=1e-6)
    assert cosine_distance(p, 3 * p).item() == pytest.approx(0.0, abs=1e-6)
    assert cosine_distance(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])).item() == pytest.approx(1.0)
    p2, q2 = torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0])
    assert cosine_distance(p2, q2).item() == pytest.approx(1 - 1 / math.sqrt(2))
    batch = cosine_distance(_random_dists(3, 5, seed=3), _random_dists(3, 5, seed=4))
    assert batch.shape == (3,) and torch.all((batch >= 0) & (batch <= 1))


def test_divergences_registry():
    assert set(DIVERGENCES) == {"jsd", "cosine", "kl"}
    assert DIVERGENCES["jsd"] is jsd and DIVERGENCES["cosine"] is cosine_distance and DIVERGENCES["kl"] is kl


# --- kl -----------------------------------------------------------------------------------------------------------


def test_kl_hand_computed_values():
    p, q = torch.tensor([0.5, 0.5]), torch.tensor([0.25, 0.75])
    plain = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)  # = 0.5 log(4/3) = 0.143841
    assert kl(p, q, smoothing=0.0).item() == pytest.approx(plain, rel=1e-6)
    assert plain == pytest.approx(0.143841, abs=1e-6)
    # ε = 0.1, K = 2: p' = (0.6, 0.6) / 1.2 = (0.5, 0.5), q' = (0.35, 0.85) / 1.2
    smoothed = 0.5 * math.log(0.5 / (0.35 / 1.2)) + 0.5 * math.log(0.5 / (0.85 / 1.2))
    assert kl(p, q, smoothing=0.1).item() == pytest.approx(smoothed, rel=1e-6)
    assert kl(q, q, smoothing=0.1).item() == pytest.approx(0.0, abs=1e-7)
    assert kl(p, q).item() != pytest.approx(kl(q, p).item())  # not symmetric: student ‖ teacher


def test_kl_of_an_empty_component_is_finite_and_bounded():
    """The teacher gives a block 0 (e.g. no tool definitions): plain KL is infinite, smoothed KL stays under
    log((1 + K ε) / ε); zero entries of p contribute nothing."""
    p, q = torch.tensor([0.0, 0.2, 0.8]), torch.tensor([0.5, 0.5, 0.0])
    assert kl(p, q, smoothing=0.0).item() == math.inf
    value = kl(p, q, smoothing=1e-3).item()
    assert 0 < value < math.log((1 + 3e-3) / 1e-3)
    # by hand: p' = (ε, 0.2 + ε, 0.8 + ε) / (1 + 3ε), q' = (0.5 + ε, 0.5 + ε, ε) / (1 + 3ε)
    eps = 1e-3
    expected = sum(a / (1 + 3 * eps) * math.log((a) / (b)) for a, b in [(eps, 0.5 + eps), (0.2 + eps, 0.5 + eps)])
    expected += (0.8 + eps) / (1 + 3 * eps) * math.log((0.8 + eps) / eps)
    assert value == pytest.approx(expected, rel=1e-5)
    assert kl(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 1.0]), smoothing=0.0).item() == 0.0
    batch = kl(_random_dists(4, 5, seed=5), _random_dists(4, 5, seed=6))
    assert batch.shape == (4,) and torch.all(batch >= 0)
    with pytest.raises(ValueError, match="smoothing"):
        kl(p, q, smoothing=-1.0)


# --- the reward term ----------------------------------------------------------------------------------------------


def test_penalty_term_is_minus_the_kl_of_the_aligned_distributions():
    """Blocks: student (P, R, I, T) = (1, 1, 2, 0) -> (0.25, 0.25, 0.5, 0); teacher (1, 0, 3, 0) -> (0.25, 0, 0.75, 0).
    r = r_outcome − λ·KL, so the term (weighted by λ) is −KL of the smoothed distributions."""
    student, teacher = {"P": 1.0, "R": 1.0, "I": 2.0, "T": 0.0}, {"P": 1.0, "R": 0.0, "I": 3.0, "T": 0.0}
    eps = 0.01
    p = [(v + eps) / (1 + 4 * eps) for v in (0.5, 0.25, 0.25, 0.0)]  # sorted keys: I, P, R, T
    q = [(v + eps) / (1 + 4 * eps) for v in (0.75, 0.25, 0.0, 0.0)]
    expected = sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))
    # 0.51/1.04 · ln(0.51/0.76) + 0.26/1.04 · ln(0.26/0.01) = −0.1956 + 0.8145 (R: 0.25 against 0 dominates, finite)
    assert expected == pytest.approx(0.6189, abs=1e-4)
    assert attribution_divergence(student, teacher, "kl", eps) == pytest.approx(expected, rel=1e-5)
    assert attribution_term(student, teacher, "kl", "penalty", eps) == pytest.approx(-expected, rel=1e-5)
    assert attribution_term(student, student, "kl", "penalty", eps) == pytest.approx(0.0, abs=1e-7)
    jsd_value = float(jsd(*align_distributions(student, teacher)[1:]))
    assert attribution_term(student, teacher, "jsd", "similarity") == pytest.approx(1 - jsd_value)
    assert attribution_term(student, teacher, "jsd", "penalty") == pytest.approx(-jsd_value)


def test_bad_forms_are_one_clear_error():
    student = {"I": 1.0}
    with pytest.raises(ValueError, match=r"form must be one of \['penalty', 'similarity'\], got 'bonus'"):
        attribution_term(student, student, "kl", "bonus")
    with pytest.raises(ValueError, match="similarity form 1 − D needs a divergence in"):
        attribution_term(student, student, "kl", "similarity")
    with pytest.raises(ValueError, match="divergence must be one of"):
        attribution_term(student, student, "l2", "penalty")


def test_terms_of_a_batch_with_missing_targets():
    """Two groups of 3; trajectories 1 and 3 have no target (an empty dict on either side). `zero` gives them 0;
    `exclude` gives them the mean term of their group's attributed trajectories."""
    same, other = {"I": 1.0, "R": 1.0}, {"I": 3.0, "R": 1.0}
    student = [same, {}, same, same, same, {}]
    teacher = [same, same, other, {}, other, {}]
    d = attribution_divergence(same, other, "kl")
    zero, attributed = attribution_terms(student, teacher, "kl", "penalty", "zero", group_size=3)
    assert attributed.tolist() == [True, False, True, False, True, False]
    torch.testing.assert_close(zero, torch.tensor([0.0, 0.0, -d, 0.0, -d, 0.0]))
    excluded, _ = attribution_terms(student, teacher, "kl", "penalty", "exclude", group_size=3)
    torch.testing.assert_close(excluded, torch.tensor([0.0, -d / 2, -d, -d, -d, -d]))
    nobody, none_attributed = attribution_terms([{}, {}], [{}, same], "jsd", "similarity", "exclude", group_size=2)
    assert nobody.tolist() == [0.0, 0.0] and not none_attributed.any()
    with pytest.raises(ValueError, match="missing_target must be one of"):
        attribution_terms(student, teacher, "kl", "penalty", "drop", group_size=3)
    with pytest.raises(ValueError, match="groups of 4"):
        attribution_terms(student, teacher, "kl", "penalty", "zero", group_size=4)


# --- align_distributions ------------------------------------------------------------------------------------------


def test_align_distributions_union_order_and_missing_keys():
    student = {"question": 1.0, "image/r0c1": 3.0, "tool/0": 4.0}
    teacher = {"image/r0c0": 2.0, "question": 2.0}
    keys, p, q = align_distributions(student, teacher)
    assert keys == ["image/r0c0", "image/r0c1", "question", "tool/0"]
    torch.testing.assert_close(p, torch.tensor([0.0, 0.375, 0.125, 0.5]))
    torch.testing.assert_close(q, torch.tensor([0.5, 0.0, 0.5, 0.0]))
    keys_swapped, q2, p2 = align_distributions(teacher, student)
    assert keys_swapped == keys
    torch.testing.assert_close(p2, p)
    torch.testing.assert_close(q2, q)


def test_align_distributions_edge_cases():
    keys, p, q = align_distributions({"a": 0.0, "b": 0.0}, {"b": 5.0})
    assert keys == ["a", "b"]
    torch.testing.assert_close(p, torch.tensor([0.5, 0.5]))  # all-zero student -> uniform
    torch.testing.assert_close(q, torch.tensor([0.0, 1.0]))
    _, p, q = align_distributions({"x": 2.0}, {"x": 7.0})
    assert jsd(p, q).item() == 0.0
    with pytest.raises(ValueError, match="empty"):
        align_distributions({}, {})
    with pytest.raises(ValueError, match="non-negative"):
        align_distributions({"a": -1.0}, {"a": 1.0})


def test_the_paper_configuration_never_pays_for_skipping_the_tool():
    """One group, equal outcomes: two trajectories call the tool (attributed, −KL < 0), two do not. With `penalty` and
    `zero` the two that skipped the tool get the group's highest advantage; with `exclude` (the paper configuration)
    their advantage is 0 and the callers' mean advantage is 0 too; the settings refuse `penalty` + `zero`."""
    from iapo.attribution.score import AttributionSettings
    from iapo.settings_errors import SettingsError
    from iapo.training.algo import group_advantages

    same, near, far = {"I": 1.0, "R": 1.0}, {"I": 1.5, "R": 1.0}, {"I": 4.0, "R": 1.0}
    student, teacher = [same, same, {}, {}], [near, far, {}, {}]
    skipped = torch.tensor([False, False, True, True])
    for missing, skipping_pays in (("zero", True), ("exclude", False)):
        terms, _ = attribution_terms(student, teacher, "kl", "penalty", missing, group_size=4)
        advantages = group_advantages(1.0 + 0.5 * terms, 4, "group")
        if skipping_pays:
            assert (advantages[skipped] > advantages[~skipped].max()).all()
        else:
            torch.testing.assert_close(advantages[skipped], torch.zeros(2), atol=1e-6, rtol=0)
            assert abs(float(advantages[~skipped].mean())) < 1e-6
    with pytest.raises(SettingsError, match="missing_target 'exclude'"):
        AttributionSettings(divergence="kl", form="penalty", missing_target="zero")
    allowed = AttributionSettings(
        divergence="kl", form="penalty", missing_target="zero", allow_missing_target_advantage=True
    )
    assert allowed.missing_target == "zero"
