"""Selective, chunked log-probs and entropies equal the full-vocabulary values, gradients included, and keep no
[positions, vocabulary] tensor for the backward pass; the update's `policy_forward` gives the values and LoRA
gradients of the full-logits forward it replaced."""

from __future__ import annotations

import pytest
import torch

from iapo.agent.rollout import rollout
from iapo.agent.trajectory import collate_trajectories, device_inputs, token_logprobs
from iapo.data.sample import load_image
from iapo.data.synthetic import build_split
from iapo.models.loader import LoraSettings, load_model
from iapo.training.algo import token_entropy_from_logits
from iapo.training.logprobs import masked_logprobs, selective_logprobs
from iapo.training.update import policy_forward


def full_vocabulary(hidden, head, input_ids):
    """The reference: logits at every position, log-softmax over the vocabulary, gather; entropy everywhere."""
    logits = head(hidden).float()
    logp = torch.zeros(input_ids.shape)
    logp[:, 1:] = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    entropy = torch.zeros(input_ids.shape)
    entropy[:, 1:] = token_entropy_from_logits(logits[:, :-1].detach())
    return logp, entropy


@pytest.fixture
def problem():
    generator = torch.Generator().manual_seed(0)
    batch, length, width, vocab = 3, 11, 8, 50
    hidden = torch.randn(batch, length, width, generator=generator, requires_grad=True)
    head = torch.nn.Linear(width, vocab, bias=True)
    with torch.no_grad():
        head.weight.copy_(torch.randn(vocab, width, generator=generator))
        head.bias.copy_(torch.randn(vocab, generator=generator))
        head.bias[7] = float("-inf")  # a banned token: zero probability, contributes 0 to the entropy
    input_ids = torch.randint(0, vocab, (batch, length), generator=generator)
    input_ids[input_ids == 7] = 8
    mask = torch.rand(batch, length, generator=generator) > 0.4
    mask[:, 0] = True  # position 0 has no prediction: it must come back as 0 whatever the mask says
    return hidden, head, input_ids, mask


@pytest.mark.parametrize("chunk_size", [1, 4, 1000])
def test_masked_logprobs_equal_the_full_vocabulary_values_and_gradients(problem, chunk_size):
    hidden, head, input_ids, mask = problem
    weights = torch.randn(input_ids.shape, generator=torch.Generator().manual_seed(1))

    expected_logp, expected_entropy = full_vocabulary(hidden, head, input_ids)
    scored = mask.clone()
    scored[:, 0] = False
    (expected_logp * weights * scored).sum().backward()
    expected_grads = [t.grad.clone() for t in (hidden, head.weight, head.bias)]
    for t in (hidden, head.weight, head.bias):
        t.grad = None

    logp, entropy = masked_logprobs(hidden, head, input_ids, mask, chunk_size=chunk_size, with_entropy=True)
    torch.testing.assert_close(logp, expected_logp * scored, rtol=0, atol=1e-6)
    torch.testing.assert_close(entropy, expected_entropy * scored, rtol=0, atol=1e-6)
    assert torch.isfinite(entropy).all() and not entropy.requires_grad
    (logp * weights).sum().backward()
    for got, want in zip((hidden.grad, head.weight.grad, head.bias.grad), expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_without_entropy_and_without_grad(problem):
    hidden, head, input_ids, mask = problem
    with torch.no_grad():
        logp, entropy = masked_logprobs(hidden, head, input_ids, mask, chunk_size=5)
        expected, _ = full_vocabulary(hidden, head, input_ids)
    assert entropy is None and not logp.requires_grad
    mask[:, 0] = False
    torch.testing.assert_close(logp, expected * mask, rtol=0, atol=1e-6)


def test_an_empty_mask_scores_nothing(problem):
    hidden, head, input_ids, mask = problem
    logp, entropy = masked_logprobs(hidden, head, input_ids, torch.zeros_like(mask), with_entropy=True)
    assert not logp.any() and not entropy.any()
    assert selective_logprobs(hidden[0, :0], head, input_ids[0, :0])[0].shape == (0,)


def test_no_positions_by_vocabulary_tensor_is_kept_for_backward(problem):
    """Autograd keeps the chunk inputs only; every logits chunk is recomputed in the backward pass."""
    hidden, head, input_ids, mask = problem
    vocab = head.out_features
    saved: list[int] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        logp, _ = masked_logprobs(hidden, head, input_ids, mask, chunk_size=2, with_entropy=True)
    assert max(saved, default=0) < 2 * vocab
    logp.sum().backward()
    assert hidden.grad is not None and hidden.grad.abs().sum() > 0


def test_bad_shapes_are_clear_errors(problem):
    hidden, head, input_ids, mask = problem
    with pytest.raises(ValueError, match="must agree"):
        masked_logprobs(hidden, head, input_ids[:, 1:], mask)
    with pytest.raises(ValueError, match="chunk_size"):
        selective_logprobs(hidden[0], head, input_ids[0], chunk_size=0)


def test_policy_forward_equals_the_full_logits_forward_with_lora_gradients(scripted):
    """On tool-using trajectories of different lengths (left padding, several images): the values at the policy
    positions and the LoRA gradients of the PPO update's forward equal those of full logits + log-softmax."""
    torch.manual_seed(0)
    model, processor = load_model("tiny-student", lora=LoraSettings(r=4, alpha=8, dropout=0.0), device="cpu")
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # a fresh adapter has B = 0, which would leave the A gradients at 0
            parameter.data.normal_(0, 0.1)
    rows = build_split("train", 2, seed=1)
    zoom = '<tool_call>{"name": "zoom_in", "arguments": {"bbox_2d": [10, 10, 120, 100]}}</tool_call>'
    policy = scripted(processor.tokenizer, [["Look. " + zoom, "<answer>A</answer>"], ["<answer>B</answer>"]])
    trajectories = rollout(policy, processor, rows, [load_image(r.image) for r in rows])
    assert trajectories[0].num_images == 2 and trajectories[1].num_images == 1
    batch = collate_trajectories(trajectories, processor.tokenizer.pad_token_id)
    mask = batch["policy_mask"]
    weights = torch.randn(mask.shape, generator=torch.Generator().manual_seed(2)) * mask
    lora = [p for p in model.parameters() if p.requires_grad]

    inputs = device_inputs(model, batch)
    logits = model(**inputs, use_cache=False).logits
    expected_logp = token_logprobs(logits, inputs["input_ids"])
    expected_entropy = torch.zeros_like(expected_logp)
    expected_entropy[:, 1:] = token_entropy_from_logits(logits[:, :-1].detach().float())
    expected_grads = torch.autograd.grad((expected_logp * weights).sum(), lora)

    logp, entropy = policy_forward(model, batch, chunk_size=7)
    torch.testing.assert_close(logp, expected_logp * mask, rtol=0, atol=1e-5)
    torch.testing.assert_close(entropy, expected_entropy * mask, rtol=0, atol=1e-5)
    grads = torch.autograd.grad((logp * weights).sum(), lora)
    assert sum(float(g.abs().sum()) for g in expected_grads) > 0
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
