"""Tests for iapo.attribution.align: normalisation, JSD and cosine divergences, key alignment of two attributions."""

from __future__ import annotations

import math

import pytest
import torch

from iapo.attribution.align import DIVERGENCES, align_distributions, cosine_distance, jsd, normalize


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
    assert set(DIVERGENCES) == {"jsd", "cosine"}
    assert DIVERGENCES["jsd"] is jsd and DIVERGENCES["cosine"] is cosine_distance


# --- align_distributions ------------------------------------------------------------------------------------------


def test_align_distributions_union_order_and_missing_keys():
    student = {"question": 1.0, "image/r0c1": 3.0, "crop/0": 4.0}
    teacher = {"image/r0c0": 2.0, "question": 2.0}
    keys, p, q = align_distributions(student, teacher)
    assert keys == ["crop/0", "image/r0c0", "image/r0c1", "question"]
    torch.testing.assert_close(p, torch.tensor([0.5, 0.0, 0.375, 0.125]))
    torch.testing.assert_close(q, torch.tensor([0.0, 0.5, 0.0, 0.5]))
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
