"""Attribution methods: the gradient × input and occlusion cores against analytic values, and on the tiny student:
the objective is the model's own log-prob, a batch scores as its trajectories alone, inputs the target cannot see
score 0, answerless trajectories are skipped, and an NF4 + LoRA + checkpointed model is attributed without leaving
gradients or changing its mode. Settings: every choice is validated with one line naming the valid values, and that
line is what the command line's chain of errors leads back to."""

from __future__ import annotations

import bitsandbytes as bnb
import lightning as L
import pytest
import torch
from jsonargparse import ArgumentParser

from helpers.policies import ScriptedPolicy
from iapo.agent.rollout import SamplingSettings, rollout
from iapo.agent.trajectory import collate_trajectories, device_inputs, token_logprobs
from iapo.attribution.components import target_mask, trajectory_components
from iapo.attribution.embeddings import language_model_inputs, target_logprob_fn
from iapo.attribution.methods import (
    attribute,
    attribution_scores,
    check_token_scores,
    grad_x_input_scores,
    integrated_gradients_scores,
    occlusion_scores,
)
from iapo.attribution.score import AttributionSettings, attribution_distributions
from iapo.data.sample import load_image
from iapo.data.synthetic import build_split
from iapo.models.loader import LoraSettings, load_model
from iapo.settings_errors import SettingsError, settings_error

ZOOM = '<tool_call>{{"name": "zoom_in", "arguments": {{"bbox_2d": [{}, {}, {}, {}]}}}}</tool_call>'
SCRIPTS = [
    ["It has dots. <answer>A</answer>"],
    ["Let me see. " + ZOOM.format(0, 0, 120, 90), "<answer>D</answer>"],
    [ZOOM.format(0, 0, 120, 90), "Again. " + ZOOM.format(100, 100, 224, 224), "Now I know. <answer>B</answer>"],
    ["Hmm."],
]


@pytest.fixture(scope="module")
def attributed(tiny_processor):
    """(trajectories, components, answer targets) for `SCRIPTS`: 1, 2 and 3 images, then one without an answer."""
    rows = build_split("test", len(SCRIPTS), seed=0)
    images = [load_image(s.image) for s in rows]
    turns = [[script[k] for script in SCRIPTS if len(script) > k] for k in range(max(map(len, SCRIPTS)))]
    policy = ScriptedPolicy(tiny_processor.tokenizer, turns)
    trajectories = rollout(policy, tiny_processor, rows, images, settings=SamplingSettings(max_turns=3))
    components = [trajectory_components(t, 2, include_history=True, include_system=True) for t in trajectories]
    targets = [target_mask(t, tiny_processor.tokenizer) for t in trajectories]
    return trajectories, components, targets


def test_grad_x_input_scores_equal_the_analytic_value():
    """objective_b = Σ_i (e_bi · w)²: ∂/∂e_bi = 2 (e_bi · w) w, so grad · (e − r) = 2 (e_bi · w)((e_bi − r_b) · w)."""
    torch.manual_seed(0)
    embeddings, w, reference = torch.randn(2, 6, 4), torch.randn(4), torch.randn(2, 1, 4)
    masks = torch.rand(2, 3, 6) > 0.5

    def objective(e):
        return ((e @ w) ** 2).sum(-1)

    projection = embeddings @ w
    expected = torch.einsum("bt,bkt->bk", 2 * projection**2, masks.float())
    torch.testing.assert_close(grad_x_input_scores(objective, embeddings, masks), expected)
    shifted = (2 * projection * ((embeddings - reference) @ w)).abs()
    expected = torch.einsum("bt,bkt->bk", shifted, masks.float())
    torch.testing.assert_close(grad_x_input_scores(objective, embeddings, masks, reference), expected)


def test_positive_token_scores_keep_only_the_evidence_for_the_target():
    """objective_b = Σ_i e_bi · w: token i's attribution is (e_bi − r_b) · w, of either sign. `abs` sums the
    magnitudes, so a token that lowers the objective counts as much as one that raises it; `positive` sums only
    the tokens that raise it."""
    torch.manual_seed(0)
    embeddings, w, reference = torch.randn(2, 6, 4), torch.randn(4), torch.randn(2, 1, 4)
    masks = torch.rand(2, 3, 6) > 0.5
    tokens = (embeddings - reference) @ w
    assert (tokens > 0).any() and (tokens < 0).any()

    def objective(e):
        return (e @ w).sum(-1)

    for token_scores, expected in (("abs", tokens.abs()), ("positive", tokens.clamp_min(0))):
        component = torch.einsum("bt,bkt->bk", expected, masks.float())
        scores = grad_x_input_scores(objective, embeddings, masks, reference, token_scores)
        torch.testing.assert_close(scores, component)
        ig, _ = integrated_gradients_scores(
            lambda points, rows: objective(points), embeddings, masks, reference, 3, 4, token_scores=token_scores
        )
        torch.testing.assert_close(ig, component)
    with pytest.raises(ValueError, match="token_scores 'positive' needs a gradient method"):
        check_token_scores("occlusion", "positive")


def test_occlusion_scores_equal_the_analytic_value():
    """objective_b = Σ_i e_bi · w: replacing component k by r drops it by Σ_{i in k} (e_bi − r_b) · w."""
    torch.manual_seed(0)
    embeddings, w, reference = torch.randn(2, 6, 4), torch.randn(4), torch.randn(2, 1, 4)
    masks = torch.rand(2, 3, 6) > 0.5
    drop = torch.einsum("bt,bkt->bk", (embeddings - reference) @ w, masks.float())
    scores = occlusion_scores(lambda e: (e @ w).sum(-1), embeddings, masks, reference)
    torch.testing.assert_close(scores, drop.clamp_min(0))


def test_objective_is_the_models_log_prob_of_the_target(tiny_student, attributed):
    """Embeddings read at the language model and fed back (no pixels) give the full model's log-probs."""
    model, processor = tiny_student
    trajectories, _, _ = attributed
    batch = collate_trajectories(trajectories, processor.tokenizer.pad_token_id)
    inputs = device_inputs(model, batch)
    with torch.no_grad():
        objective = target_logprob_fn(model, inputs, batch["policy_mask"])(language_model_inputs(model, inputs)[0])
        logprobs = token_logprobs(model(**inputs, use_cache=False).logits, inputs["input_ids"])
    torch.testing.assert_close(objective, (logprobs * batch["policy_mask"]).sum(-1))


@pytest.mark.parametrize("method", ["grad_x_input", "integrated_gradients"])
def test_positive_token_scores_reach_the_model_and_lower_each_component(tiny_student, attributed, method):
    """On the model, `token_scores="positive"` scores each component at most as `abs` does (the positive part of a
    token is at most its magnitude) and somewhere strictly less (some tokens argue against the answer)."""
    model, processor = tiny_student
    trajectories, components, targets = attributed
    pad = processor.tokenizer.pad_token_id
    whole = attribute(model, trajectories, components, targets, pad, method=method, steps=2)
    support = attribute(model, trajectories, components, targets, pad, method=method, steps=2, token_scores="positive")
    pairs = [(support[row][key], value) for row, scores in enumerate(whole) for key, value in scores.items()]
    assert pairs and all(0 <= positive <= magnitude + 1e-6 for positive, magnitude in pairs)
    assert any(positive < 0.9 * magnitude for positive, magnitude in pairs)


@pytest.mark.parametrize("method", ["grad_x_input", "occlusion"])
def test_a_batch_scores_as_its_trajectories_alone(tiny_student, attributed, method):
    """Left padding and mRoPE changes nothing: grad × input to 1e-5 of the largest score; occlusion to 2e-5 in
    absolute terms, as it differences float32 log-probs of size ~10."""
    model, processor = tiny_student
    trajectories, components, targets = attributed
    pad = processor.tokenizer.pad_token_id
    together = attribute(model, trajectories, components, targets, pad, method=method)
    assert together[-1] == {} and all(together[:-1])
    for row, scores in enumerate(together[:-1]):
        [alone] = attribute(model, [trajectories[row]], [components[row]], [targets[row]], pad, method=method)
        assert scores.keys() == alone.keys() == components[row].keys()
        scale = max(alone.values())
        assert scale > 0 and min(alone.values()) >= 0
        for key, value in alone.items():
            assert scores[key] == pytest.approx(value, abs=1e-5 * scale if method == "grad_x_input" else 2e-5)


@pytest.mark.parametrize("method", ["grad_x_input", "occlusion"])
def test_tokens_after_the_target_score_zero(tiny_student, attributed, method):
    """Causal attention: the answer's log-prob cannot depend on tokens after it (the closing `</answer>`)."""
    model, processor = tiny_student
    trajectories, components, targets = attributed
    after = []
    for parts, target in zip(components[:-1], targets[:-1], strict=True):
        last = int(torch.nonzero(target).max())
        later = torch.zeros_like(target)
        later[last + 1 :] = True
        assert later.any()
        after.append({**parts, "after": later})
    scores = attribute(model, trajectories[:-1], after, targets[:-1], processor.tokenizer.pad_token_id, method=method)
    for row in scores:
        assert row["after"] == pytest.approx(0.0, abs=1e-7)
        assert max(row.values()) > 0


def test_trajectories_without_answer_are_not_run(tiny_student, attributed):
    model, processor = tiny_student
    trajectories, components, targets = attributed
    seen = []
    handle = model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        pad = processor.tokenizer.pad_token_id
        assert attribute(model, trajectories[-1:], components[-1:], targets[-1:], pad) == [{}]
        assert seen == []
        attribute(model, trajectories, components, targets, pad)
        assert seen and set(seen) == {len(trajectories) - 1}
    finally:
        handle.remove()


def test_mean_baseline_and_bad_arguments(tiny_student, attributed):
    model, processor = tiny_student
    trajectories, components, targets = attributed
    pad = processor.tokenizer.pad_token_id
    scores = attribute(model, trajectories, components, targets, pad, method="occlusion", baseline="mean")
    assert all(value >= 0 for row in scores for value in row.values()) and scores[-1] == {}
    with pytest.raises(ValueError, match="method"):
        attribute(model, trajectories, components, targets, pad, method="saliency")
    with pytest.raises(ValueError, match="baseline"):
        attribute(model, trajectories, components, targets, pad, baseline="blur")


@pytest.mark.parametrize(
    ("method", "options"),
    [("occlusion", {}), ("grad_x_input", {}), ("integrated_gradients", {"steps": 2, "baseline": "mean"})],
)
def test_differentiable_scores_equal_the_plain_ones_and_reach_the_lora_weights(
    attributed, tiny_processor, method, options
):
    """A loss on the attribution itself (not a reward of sampled tokens) needs the scores' graph to the parameters:
    occlusion keeps it on request, the gradient methods take their gradients with `create_graph` (second
    derivatives, on the math attention kernel), each with the values of the plain path; attention refuses."""
    model, _ = load_model("tiny-student", lora=LoraSettings(r=4), device="cpu")
    trajectories, components, targets = attributed
    pad = tiny_processor.tokenizer.pad_token_id
    plain, keys, active = attribution_scores(model, trajectories, components, targets, pad, method=method, **options)
    scores, same_keys, same_active = attribution_scores(
        model, trajectories, components, targets, pad, method=method, differentiable=True, **options
    )
    assert plain.grad_fn is None and scores.grad_fn is not None
    assert (same_keys, same_active) == (keys, active) and active == [0, 1, 2]  # the answerless one is not run
    torch.testing.assert_close(scores.detach(), plain, rtol=1e-4, atol=1e-6)  # the math kernel's rounding
    scores.sum().backward()
    lora = [p for name, p in model.named_parameters() if "lora_B" in name]
    assert lora and all(p.grad is not None for p in lora) and any(p.grad.abs().sum() > 0 for p in lora)
    with pytest.raises(ValueError, match="differentiable scores need a method of"):
        attribution_scores(model, trajectories, components, targets, pad, method="attention", differentiable=True)


def test_attention_needs_eager_and_gives_attention_mass(tiny_student, attributed):
    model, processor = tiny_student
    trajectories, components, targets = attributed
    pad = processor.tokenizer.pad_token_id
    with pytest.raises(ValueError, match="eager"):
        attribute(model, trajectories, components, targets, pad, method="attention")
    eager, _ = load_model("tiny-student", attn_implementation="eager", device="cpu")
    everything = [{**parts, "all": torch.ones_like(target)} for parts, target in zip(components, targets, strict=True)]
    scores = attribute(eager, trajectories, everything, targets, pad, method="attention")
    for row in scores[:-1]:
        assert row["all"] == pytest.approx(1.0, abs=1e-5)  # each query's attention sums to 1
        assert sum(v for k, v in row.items() if k != "all") <= 1.0 + 1e-5
        assert min(row.values()) >= 0 and row["question"] > 0


def test_nf4_lora_checkpointed_model(attributed, tiny_processor):
    """QLoRA student in training mode: checkpointing recomputes each layer in the backward, no parameter gets a
    gradient, dropout is off (repeatable scores) and every module's mode is restored."""
    model, _ = load_model(
        "tiny-student", quantization="nf4", lora=LoraSettings(r=4), gradient_checkpointing=True, device="cpu"
    )
    assert not any(isinstance(m, bnb.nn.Linear4bit) for name, m in model.named_modules() if ".visual." in name)
    assert any(isinstance(m, bnb.nn.Linear4bit) for name, m in model.named_modules() if "language_model" in name)
    model.train()
    modes = {name: module.training for name, module in model.named_modules()}
    trajectories, components, targets = attributed
    calls = []
    attention = next(m for name, m in model.named_modules() if name.endswith("language_model.layers.0.self_attn"))
    handle = attention.register_forward_hook(lambda module, args, output: calls.append(module.training))
    try:
        first = attribute(model, trajectories, components, targets, tiny_processor.tokenizer.pad_token_id)
    finally:
        handle.remove()
    assert calls == [False, False]  # forward + checkpoint recompute, both without dropout
    assert all(p.grad is None for p in model.parameters())
    assert {name: module.training for name, module in model.named_modules()} == modes
    second = attribute(model, trajectories, components, targets, tiny_processor.tokenizer.pad_token_id)
    assert first == second and first[-1] == {}
    assert min(v for row in first for v in row.values()) >= 0 and first[0]["question"] > 0


def test_nf4_model_still_back_propagates_after_a_no_grad_forward(attributed, tiny_processor):
    """Occlusion (no-grad eval forwards) followed by grad×input on the same NF4 model: the CPU weight repacking of
    bitsandbytes must not break later forwards that need gradients."""
    model, _ = load_model("tiny-student", quantization="nf4", lora=LoraSettings(r=4), device="cpu")
    trajectories, components, targets = attributed
    pad = tiny_processor.tokenizer.pad_token_id
    occluded = attribute(model, trajectories, components, targets, pad, method="occlusion")
    gradient = attribute(model, trajectories, components, targets, pad, method="grad_x_input")
    assert occluded[0] and gradient[0]["question"] > 0


@pytest.mark.parametrize(
    ("field", "value", "valid"),
    [
        ("method", "saliency", "['attention', 'grad_x_input', 'integrated_gradients', 'occlusion']"),
        (
            "target",
            "tools",
            "['answer', 'generated', 'tool_call', 'tool_call_ran', 'tool_call_arguments', 'tool_call_turn']",
        ),
        ("layout", "cells", "['regions', 'blocks']"),
        ("divergence", "l2", "['cosine', 'jsd', 'kl']"),
        ("form", "bonus", "['penalty', 'similarity']"),
        ("missing_target", "drop", "['zero', 'exclude']"),
        ("baseline", "blur", "['zero', 'mean']"),
        ("quadrature", "simpson", "['riemann', 'gauss_legendre']"),
        ("token_scores", "signed", "['abs', 'positive']"),
    ],
)
def test_settings_name_the_valid_values_in_one_line(field, value, valid):
    """The built-in choices open the list; an entry another module registered may follow them."""
    with pytest.raises(SettingsError) as error:
        AttributionSettings(**{field: value})
    message = str(error.value)
    assert message.startswith(f"attribution {field} must be one of {valid[:-1]}") and "\n" not in message
    assert message.endswith(f"], got {value!r}")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"steps": 0}, "attribution steps must be an integer >= 1, got 0"),
        ({"chunk_size": -2}, "attribution chunk_size must be an integer >= 1, got -2"),
        ({"batch_size": 1.5}, "attribution batch_size must be an integer >= 1, got 1.5"),
        ({"grid": (0, 3)}, "attribution grid must be two integers >= 1 (rows, columns), got (0, 3)"),
        ({"kl_smoothing": -0.1}, "attribution kl_smoothing must be >= 0, got -0.1"),
        (
            {"divergence": "kl"},
            "attribution form 'similarity' (1 − D) needs a divergence in ['jsd', 'cosine'], got 'kl': "
            "use form 'penalty' with it",
        ),
        (
            {"method": "occlusion", "token_scores": "positive"},
            "attribution token_scores 'positive' needs a gradient method ['grad_x_input', 'integrated_gradients'], "
            "got method 'occlusion'",
        ),
    ],
)
def test_settings_reject_bad_numbers_and_combinations_in_one_line(changes, message):
    with pytest.raises(SettingsError) as error:
        AttributionSettings(**changes)
    assert str(error.value) == message and "\n" not in message


def test_the_command_lines_chain_of_errors_leads_back_to_the_one_line():
    """The CLI's parser (a LightningModule by class path, optional settings) wraps the error in nested "does not
    validate against any of the Union subtypes" errors; `settings_error` finds the one line again."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(L.LightningModule, "model")
    config = parser.parse_args(["--model=iapo.training.iapo_module.IAPOModule", "--model.attribution.method=saliency"])
    with pytest.raises(ValueError) as error:
        parser.instantiate_classes(config)
    assert "Union subtypes" in str(error.value) and str(error.value).count("\n") > 5
    assert str(settings_error(error.value)) == (
        "attribution method must be one of ['attention', 'grad_x_input', 'integrated_gradients', 'occlusion'], "
        "got 'saliency'"
    )
    assert settings_error(ValueError("unrelated")) is None


def test_distributions_without_a_tool_call_are_empty_and_the_rest_normalised(tiny_student, attributed):
    """`target: tool_call`: the answer-only trajectory and the one without an answer or call get `{}` (not run);
    the others are distributions over the regions shown up to their last call (the crop a last call returns comes
    after everything attributed, so it is not a component); the paper's settings validate."""
    model, processor = tiny_student
    trajectories, _, _ = attributed
    samples = build_split("test", len(SCRIPTS), seed=0)
    settings = AttributionSettings(method="grad_x_input", target="tool_call", include_history=True)
    weights = attribution_distributions(model, processor, trajectories, samples, settings)
    assert weights[0] == {} and weights[3] == {}
    for row in weights[1:3]:
        assert sum(row.values()) == pytest.approx(1.0) and "history" in row
    assert "tool/1" not in weights[1] and "tool/1" in weights[2] and "tool/2" not in weights[2]
    paper = AttributionSettings(
        method="integrated_gradients",
        target="tool_call",
        layout="blocks",
        divergence="kl",
        form="penalty",
        missing_target="exclude",
    )
    assert paper.steps >= 1
