"""Tests for iapo.training.algo: advantages, PPO-clip value and gradient, aggregations, k3 KL, entropy, reward combination."""

from __future__ import annotations

import math

import pytest
import torch

from iapo.training.algo import (
    aggregate,
    combine_rewards,
    group_advantages,
    kl_k3,
    masked_mean,
    ppo_clip_loss,
    token_entropy_from_logits,
)

# --- PPO-clip -----------------------------------------------------------------------------------------------------
# One hand-worked batch, eps = 0.2 (clip range [0.8, 1.2]); per token: loss = -min(r*A, clip(r)*A), and
# d loss / d logp = -r*A when the unclipped branch is picked, 0 when the clipped one is.
#   seq 0, A = +1: r = 1.1 inside the range        -> loss -1.1, grad -1.1
#                  r = 1.5 above 1+eps, A > 0       -> clipped: loss -1.2, grad 0
#                  r = 0.5 below 1-eps, A > 0       -> min picks unclipped r*A: loss -0.5, grad -0.5
#   seq 1, A = -2: r = 0.5 below 1-eps, A < 0       -> clipped: loss 0.8*2 = 1.6, grad 0
#                  r = 1.5 above 1+eps, A < 0       -> min picks unclipped r*A: loss 3.0, grad 3.0
#                  masked (huge ratio)              -> ignored, grad 0
#   seq 2, A = 0.5: fully masked                    -> ignored
RATIOS = [[1.1, 1.5, 0.5], [0.5, 1.5, math.exp(60.0)], [2.0, 2.0, 2.0]]
MASK = [[1, 1, 1], [1, 1, 0], [0, 0, 0]]
ADV = [1.0, -2.0, 0.5]
TOKEN_LOSS = [[-1.1, -1.2, -0.5], [1.6, 3.0, 0.0], [0.0, 0.0, 0.0]]
TOKEN_GRAD = [[-1.1, 0.0, -0.5], [0.0, 3.0, 0.0], [0.0, 0.0, 0.0]]


def _batch(mask_dtype=torch.float64):
    old_logp = torch.tensor([[-1.0, -2.0, -0.5], [-3.0, -0.1, -70.0], [-1.0, -1.0, -1.0]], dtype=torch.float64)
    logp = (old_logp + torch.tensor(RATIOS, dtype=torch.float64).log()).requires_grad_(True)
    return logp, old_logp, torch.tensor(ADV, dtype=torch.float64), torch.tensor(MASK).to(mask_dtype)


@pytest.mark.parametrize(
    ("aggregation", "max_tokens", "per_token_scale"),
    [
        ("token-mean", None, [[1 / 5] * 3, [1 / 5] * 3, [1 / 5] * 3]),  # 5 masked tokens in the batch
        ("sequence-mean", None, [[1 / (3 * 3)] * 3, [1 / (2 * 3)] * 3, [0.0] * 3]),  # 1 / (len_i * N)
        ("dr-grpo", None, [[1 / 9] * 3] * 3),  # 1 / (N * T)
        ("dr-grpo", 6, [[1 / 18] * 3] * 3),  # 1 / (N * max_tokens)
    ],
)
def test_ppo_clip_value_and_gradient_by_hand(aggregation, max_tokens, per_token_scale):
    logp, old_logp, adv, mask = _batch()
    loss, _ = ppo_clip_loss(logp, old_logp, adv, mask, aggregation=aggregation, max_tokens=max_tokens)
    loss.backward()
    scale = torch.tensor(per_token_scale, dtype=torch.float64)
    expected_loss = (torch.tensor(TOKEN_LOSS, dtype=torch.float64) * scale).sum()
    torch.testing.assert_close(loss, expected_loss)
    torch.testing.assert_close(logp.grad, torch.tensor(TOKEN_GRAD, dtype=torch.float64) * scale)


def test_ppo_clip_aggregation_values():
    logp, old_logp, adv, mask = _batch()
    # masked token losses: -1.1, -1.2, -0.5 | 1.6, 3.0  -> sum 1.8 over 5 tokens
    expected = {"token-mean": 1.8 / 5, "sequence-mean": (-2.8 / 3 + 4.6 / 2 + 0.0) / 3, "dr-grpo": 1.8 / 9}
    for aggregation, value in expected.items():
        loss, _ = ppo_clip_loss(logp, old_logp, adv, mask, aggregation=aggregation)
        assert loss.item() == pytest.approx(value, rel=1e-12)


def test_ppo_clip_stats():
    logp, old_logp, adv, mask = _batch()
    _, stats = ppo_clip_loss(logp, old_logp, adv, mask)
    assert stats["clip_ratio"].item() == pytest.approx(2 / 5)  # seq0 r=1.5 (A>0) and seq1 r=0.5 (A<0)
    assert stats["clip_ratio_high"].item() == pytest.approx(1 / 5)
    assert stats["clip_ratio_low"].item() == pytest.approx(1 / 5)
    assert stats["ratio_mean"].item() == pytest.approx((1.1 + 1.5 + 0.5 + 0.5 + 1.5) / 5)
    assert stats["ratio_max"].item() == pytest.approx(1.5)  # the masked huge ratio is not seen
    assert all(not value.requires_grad for value in stats.values())


def test_ppo_clip_bool_mask_matches_float_and_old_logp_is_constant():
    logp, old_logp, adv, mask = _batch()
    old_logp.requires_grad_(True)
    adv.requires_grad_(True)
    loss_float, _ = ppo_clip_loss(logp, old_logp, adv, mask)
    loss_bool, _ = ppo_clip_loss(logp, old_logp, adv, mask.bool())
    torch.testing.assert_close(loss_float, loss_bool)
    loss_float.backward()
    assert old_logp.grad is None and adv.grad is None


def test_ppo_clip_masked_tokens_get_zero_gradient_even_with_garbage():
    logp, old_logp, adv, mask = _batch()
    with torch.no_grad():
        garbage = logp.clone()
        garbage[mask == 0] = torch.tensor([1e4, -1e4, float("inf"), -float("inf")], dtype=torch.float64)
    garbage.requires_grad_(True)
    loss, stats = ppo_clip_loss(garbage, old_logp, adv, mask)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(v) for v in stats.values())
    assert torch.all(garbage.grad[mask == 0] == 0)
    assert loss.item() == pytest.approx(1.8 / 5)


def test_ppo_clip_asymmetric_clip_higher():
    old_logp = torch.zeros(1, 2, dtype=torch.float64)
    logp = torch.log(torch.tensor([[1.25, 1.25]], dtype=torch.float64)).requires_grad_(True)
    adv = torch.tensor([1.0], dtype=torch.float64)
    mask = torch.ones(1, 2)
    loss, stats = ppo_clip_loss(logp, old_logp, adv, mask, eps_low=0.2, eps_high=0.28)
    loss.backward()
    assert loss.item() == pytest.approx(-1.25)  # 1.25 < 1.28: not clipped
    torch.testing.assert_close(logp.grad, torch.full((1, 2), -1.25 / 2, dtype=torch.float64))
    assert stats["clip_ratio"].item() == 0.0
    loss, stats = ppo_clip_loss(logp, old_logp, adv, mask, eps_low=0.2, eps_high=0.2)
    assert loss.item() == pytest.approx(-1.2) and stats["clip_ratio"].item() == 1.0


@pytest.mark.parametrize("aggregation", ["token-mean", "sequence-mean", "dr-grpo"])
def test_ppo_clip_all_masked_is_zero_not_nan(aggregation):
    logp = torch.randn(2, 4, requires_grad=True)
    loss, stats = ppo_clip_loss(logp, torch.randn(2, 4), torch.ones(2), torch.zeros(2, 4), aggregation=aggregation)
    loss.backward()
    assert loss.item() == 0.0 and torch.all(logp.grad == 0)
    assert all(torch.isfinite(v) for v in stats.values())


def test_ppo_clip_rejects_bad_inputs():
    logp = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="advantages"):
        ppo_clip_loss(logp, logp, torch.zeros(3), torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"\[N, T\]"):
        ppo_clip_loss(logp, logp, torch.zeros(2), torch.ones(2, 4))
    with pytest.raises(ValueError, match="eps_low"):
        ppo_clip_loss(logp, logp, torch.zeros(2), torch.ones(2, 3), eps_low=1.0)
    with pytest.raises(ValueError, match="aggregation"):
        ppo_clip_loss(logp, logp, torch.zeros(2), torch.ones(2, 3), aggregation="mean")


# --- aggregate / masked_mean --------------------------------------------------------------------------------------


def test_masked_mean_by_hand():
    x = torch.tensor([[1.0, 2.0, 100.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 0, 0]])
    assert masked_mean(x, mask).item() == pytest.approx((1 + 2 + 4 + 5 + 6) / 5)
    torch.testing.assert_close(masked_mean(x, mask, dim=1), torch.tensor([1.5, 5.0, 0.0]))
    torch.testing.assert_close(masked_mean(x, mask, dim=0), torch.tensor([2.5, 3.5, 6.0]))
    assert masked_mean(x, torch.zeros_like(mask)).item() == 0.0


def test_aggregate_rejects_unknown_and_bad_max_tokens():
    per_token, mask = torch.ones(2, 3), torch.ones(2, 3)
    with pytest.raises(ValueError, match="unknown loss aggregation"):
        aggregate(per_token, mask, "sum")
    with pytest.raises(ValueError, match="max_tokens"):
        aggregate(per_token, mask, "dr-grpo", max_tokens=0)
    with pytest.raises(ValueError, match=r"\[N, T\]"):
        aggregate(per_token, torch.ones(2, 2))


def test_aggregate_kl_penalty_like_the_update():
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]])
    ref = torch.tensor([[-1.5, -2.0], [-0.5, -1.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    kl = kl_k3(logp, ref)
    expected = (kl[0, 0] + kl[0, 1] + kl[1, 0]) / 3
    torch.testing.assert_close(aggregate(kl, mask, "token-mean"), expected)


# --- advantages ---------------------------------------------------------------------------------------------------


def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0, 0.0, 1.0, 2.0, 3.0])
    adv = group_advantages(rewards, group_size=4)
    std0 = math.sqrt(4 * 0.25 / 3)  # unbiased std of (1, 0, 0, 1)
    std2 = math.sqrt((2.25 + 0.25 + 0.25 + 2.25) / 3)  # unbiased std of (0, 1, 2, 3)
    expected = [0.5 / std0, -0.5 / std0, -0.5 / std0, 0.5 / std0, 0, 0, 0, 0]
    expected += [d / std2 for d in (-1.5, -0.5, 0.5, 1.5)]
    torch.testing.assert_close(adv, torch.tensor(expected), rtol=1e-5, atol=1e-5)


def test_group_advantages_are_prompt_major():
    # prompt-major groups are (0, 0) and (1, 1): both constant. Interleaved grouping would give non-zero values.
    assert torch.all(group_advantages(torch.tensor([0.0, 0.0, 1.0, 1.0]), group_size=2) == 0)
    adv = group_advantages(torch.tensor([0.0, 1.0, 5.0, 5.0, 3.0, 1.0]), group_size=2)
    assert adv[0] < 0 < adv[1] and adv[2] == adv[3] == 0 and adv[4] > 0 > adv[5]


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_advantages_equal_rewards_are_exact_zeros(scale):
    rewards = torch.tensor([0.1, 0.1, 0.1, 0.7, 0.7, 0.7, 1 / 3, 1 / 3, 1 / 3])
    adv = group_advantages(rewards, group_size=3, scale=scale)
    assert torch.all(adv == 0) and not torch.isnan(adv).any()


def test_group_advantages_batch_and_none_scales():
    rewards = torch.tensor([1.0, 3.0, 10.0, 20.0])
    centered = torch.tensor([-1.0, 1.0, -5.0, 5.0])
    torch.testing.assert_close(group_advantages(rewards, 2, scale="none"), centered)
    batch_std = rewards.std().item()  # unbiased, over the whole batch
    torch.testing.assert_close(group_advantages(rewards, 2, scale="batch"), centered / (batch_std + 1e-6))
    group_std = torch.tensor([math.sqrt(2.0), math.sqrt(2.0), math.sqrt(50.0), math.sqrt(50.0)])
    torch.testing.assert_close(group_advantages(rewards, 2, scale="group"), centered / (group_std + 1e-6))


def test_group_advantages_group_of_one_and_integer_rewards():
    assert torch.all(group_advantages(torch.tensor([0.3, 1.0, 0.0]), group_size=1) == 0)
    adv = group_advantages(torch.tensor([0, 1]), group_size=2)
    assert adv.dtype == torch.float32 and adv[1] > 0 > adv[0]


def test_group_advantages_errors():
    with pytest.raises(ValueError, match="group_size=2"):
        group_advantages(torch.zeros(5), group_size=2)
    with pytest.raises(ValueError, match="group_size=0"):
        group_advantages(torch.zeros(4), group_size=0)
    with pytest.raises(ValueError, match="unknown advantage scale"):
        group_advantages(torch.zeros(4), group_size=2, scale="std")
    with pytest.raises(ValueError, match="1-D"):
        group_advantages(torch.zeros(2, 2), group_size=2)


# --- KL -----------------------------------------------------------------------------------------------------------


def test_kl_k3_formula_zero_and_non_negative():
    logp = torch.randn(64, 16, dtype=torch.float64) * 3
    ref = torch.randn(64, 16, dtype=torch.float64) * 3
    d = ref - logp
    torch.testing.assert_close(kl_k3(logp, ref), torch.exp(d) - d - 1)
    assert torch.all(kl_k3(logp, ref) >= 0)
    assert torch.all(kl_k3(logp, logp) == 0)
    tiny = torch.tensor([1e-9, -1e-9, 1e-4, -1e-4])
    assert torch.all(kl_k3(torch.zeros(4), tiny) >= 0)


def test_kl_k3_monte_carlo_matches_categorical_kl():
    p = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    ref = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    exact = (p * (p / ref).log()).sum().item()
    samples = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    estimate = kl_k3(p.log()[samples], ref.log()[samples]).mean().item()
    assert estimate == pytest.approx(exact, rel=0.03)


# --- entropy, rewards ---------------------------------------------------------------------------------------------


def test_token_entropy_from_logits():
    logits = torch.randn(3, 5, 11)
    expected = torch.distributions.Categorical(logits=logits).entropy()
    torch.testing.assert_close(token_entropy_from_logits(logits), expected)
    assert token_entropy_from_logits(torch.zeros(7)).item() == pytest.approx(math.log(7))
    banned = torch.tensor([0.0, 0.0, -float("inf"), -float("inf")])
    assert token_entropy_from_logits(banned).item() == pytest.approx(math.log(2))
    huge = torch.tensor([1e4, 0.0, -1e4])
    assert token_entropy_from_logits(huge).item() == pytest.approx(0.0, abs=1e-6)


def test_combine_rewards():
    components = {
        "accuracy": torch.tensor([1.0, 0.0, 0.5]),
        "format": torch.tensor([True, False, True]),
        "attribution": torch.tensor([0.2, 0.4, 0.6]),
        "logged_only": torch.tensor([9.0, 9.0, 9.0]),
    }
    total = combine_rewards(components, {"accuracy": 1.0, "format": 0.5, "attribution": 2.0})
    torch.testing.assert_close(total, torch.tensor([1.0 + 0.5 + 0.4, 0.0 + 0.0 + 0.8, 0.5 + 0.5 + 1.2]))
    grpo = combine_rewards(components, {"accuracy": 1.0, "format": 0.5, "attribution": 0.0})
    torch.testing.assert_close(grpo, torch.tensor([1.5, 0.0, 1.0]))


def test_combine_rewards_errors():
    components = {"accuracy": torch.ones(3), "format": torch.ones(2)}
    with pytest.raises(ValueError, match="attribution"):
        combine_rewards(components, {"accuracy": 1.0, "attribution": 0.5})
    with pytest.raises(ValueError, match="shape"):
        combine_rewards(components, {"accuracy": 1.0, "format": 1.0})
    with pytest.raises(ValueError, match="empty"):
        combine_rewards(components, {})
