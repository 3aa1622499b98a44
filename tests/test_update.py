"""The PPO update really optimises: with a reward that prefers one answer, that answer's probability rises."""

from __future__ import annotations

import pytest
import torch

from iapo.agent.rollout import rollout
from iapo.agent.trajectory import collate_trajectories
from iapo.data.sample import load_image
from iapo.data.synthetic import build_split
from iapo.models.loader import LoraSettings, load_model
from iapo.training.algo import group_advantages
from iapo.training.update import PPOSettings, policy_forward, policy_update


@pytest.fixture
def lora_student():
    return load_model("tiny-student", lora=LoraSettings(r=8, alpha=16, dropout=0.0), device="cpu")


@pytest.fixture
def answered(lora_student, scripted):
    """Two prompts × four trajectories, half answering A and half answering B."""
    _, processor = lora_student
    rows = build_split("train", 2, seed=3)
    texts = ["<answer>A</answer>", "<answer>B</answer>", "<answer>A</answer>", "<answer>B</answer>"] * 2
    policy = scripted(processor.tokenizer, [texts])
    return rollout(policy, processor, rows, [load_image(r.image) for r in rows], group_size=4)


def sequence_logprob(model, trajectories, pad):
    with torch.no_grad():
        batch = collate_trajectories(trajectories, pad)
        logp, _ = policy_forward(model, batch)
        return (logp * batch["policy_mask"]).sum(-1)


def test_preferred_answer_becomes_more_likely(lora_student, answered):
    model, processor = lora_student
    pad = processor.tokenizer.pad_token_id
    rewards = torch.tensor([1.0 if t.final_answer == "A" else 0.0 for t in answered])
    advantages = group_advantages(rewards, group_size=4)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    before = sequence_logprob(model, answered, pad)
    settings = PPOSettings(epochs=2, mini_batch_size=4, kl_beta=0.0)
    for _ in range(4):
        stats = policy_update(
            model, optimizer, answered, advantages, settings, pad, generator=torch.Generator().manual_seed(0)
        )
        assert stats["optimizer_steps"] == 4 and stats["skipped_nonfinite"] == 0
    after = sequence_logprob(model, answered, pad)
    preferred = rewards.bool()
    assert (after[preferred] - before[preferred]).min() > 0.5
    assert (after[~preferred] - before[~preferred]).max() < -0.5


def test_non_finite_loss_skips_the_update_and_keeps_the_weights(lora_student, answered):
    model, processor = lora_student
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    advantages = torch.full((len(answered),), float("nan"))
    stats = policy_update(
        model, optimizer, answered, advantages, PPOSettings(mini_batch_size=4), processor.tokenizer.pad_token_id
    )
    assert stats["skipped_nonfinite"] == 2 and stats["optimizer_steps"] == 0
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert torch.equal(parameter, trainable[name]), name


def test_kl_to_the_adapter_free_reference(lora_student, answered):
    """A fresh LoRA adapter is a no-op (B = 0), so the first step's KL is 0; after updates it is positive."""
    model, processor = lora_student
    pad = processor.tokenizer.pad_token_id
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    advantages = group_advantages(torch.tensor([1.0, 0.0, 1.0, 0.0] * 2), group_size=4)
    settings = PPOSettings(mini_batch_size=8, kl_beta=0.1)
    first = policy_update(model, optimizer, answered, advantages, settings, pad)
    assert first["kl"] == pytest.approx(0.0, abs=1e-6)
    for _ in range(3):
        last = policy_update(model, optimizer, answered, advantages, settings, pad)
    assert last["kl"] > 1e-4


def test_update_needs_trainable_parameters(tiny_student, answered):
    model, processor = tiny_student
    with pytest.raises(ValueError, match="no trainable parameters"):
        policy_update(model, torch.optim.SGD([torch.zeros(1)], lr=0.1), answered, torch.zeros(8), PPOSettings(), 0)
