"""Attribution of a target's log-prob to the named components of trajectories: integrated gradients, gradient × input,
occlusion, attention.

`attribute` batches trajectories (left-padded, `collate_trajectories`), reads the language model's input embeddings
*after* the image features are scattered in, with their mRoPE positions (`embeddings.py`: a forward pre-hook on the
language model, so the vision tower runs once and is never back-propagated), and scores every component of every
trajectory with one method:

- `integrated_gradients`: a_k = Σ_{i in k} |(e_i − b_i) · Σ_s w_s ∂ log p(target) / ∂ e_i at
  x_s = e − (1 − α_s)(e − b)|, m points α_s with weights w_s of a `quadrature` rule (`quadrature.py`: the right
  Riemann sum α_s = s/m, w_s = 1/m, or Gauss–Legendre) on the path from the baseline b to the input e. The B·m
  interpolation points run in chunks of `chunk_size` sequences per forward/backward, so memory is bounded by the
  chunk, not by m. Before the absolute value the token attributions sum to ≈ f(e) − f(b) (completeness, exact as
  m grows; each row's relative gap is measured with two more forwards, no backward); Riemann m = 1 is gradient ×
  input (the single point is e itself, bit for bit);
- `grad_x_input`: a_k = Σ_{i in k} |∂ log p(target) / ∂ e_i · (e_i − b_i)| (b = 0 by default), one forward and one
  backward for the whole batch. Both gradient methods use `torch.autograd.grad` w.r.t. the embeddings only, so no
  parameter gets a `.grad` (with `differentiable` they keep the graph for a loss on the scores), and they work
  with non-reentrant gradient checkpointing, NF4 weights and LoRA;
- `occlusion`: a_k = max(0, log p(target) − log p(target | e_k := b)), K+1 batched forwards, no backward;
- `attention`: attention mass from the positions that predict target tokens to component k, averaged over target
  positions, layers and heads (eager attention only).

log p(target) = Σ over target tokens t of log p(x_t | x_<t), read at position t − 1 (`token_logprobs` semantics);
logits are computed only at those positions. Scores are raw and non-negative; normalise with `align.normalize`.
The gradient methods score a token by `token_scores` (`TOKEN_SCORES`): `abs`, the magnitude of its attribution
(evidence for or against the target alike), or `positive`, only evidence for the target (its positive part): a
question token that makes the sampled call *less* likely then counts 0 instead of as much as one that supports it.
The `mean` baseline is the mean embedding of the tokens the objective reads (each row's real tokens up to its last
target token), so what comes after the target changes nothing.
Two exact shortcuts (`fast=True`, the default): each distinct image of the batch goes through the vision tower once
(a group's trajectories share their original image), and every row is cut after its last target token
(`through_last_target`: nothing after it can change the objective, so the tool-call target skips the returned
image and the later turns); both give the scores of the whole rows.
The model runs without dropout (eval mode), with its checkpointed layers still checkpointing, and every module's
train/eval flag is restored afterwards.

    components = [trajectory_components(t, merge_size=2) for t in trajectories]
    targets = [target_mask(t, processor.tokenizer) for t in trajectories]
    scores = attribute(model, trajectories, components, targets, processor.tokenizer.pad_token_id)

Run the checks with `python -m pytest tests/test_attribution.py -q`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from iapo.agent.trajectory import Trajectory, collate_trajectories, device_inputs
from iapo.attribution.embeddings import (
    ROW_INPUTS,
    attribution_mode,
    forward_from_embeddings,
    language_model,
    language_model_inputs,
    select_rows,
    target_logprob_fn,
    through_last_target,
)
from iapo.attribution.quadrature import QUADRATURES, quadrature_points, relative_completeness_gap

BASELINES = ("zero", "mean")
TOKEN_SCORES: dict[str, Callable[[Tensor], Tensor]] = {
    "abs": torch.abs,
    "positive": lambda tokens: tokens.clamp_min(0.0),
}
"""How a gradient method turns a token's signed attribution into its non-negative score."""
DIFFERENTIABLE_METHODS = ("occlusion", "grad_x_input", "integrated_gradients")
"""The methods whose scores can keep their graph to the parameters (`attribution_scores(differentiable=True)`); the
gradient methods then take their gradients with `create_graph` (a loss on them needs second derivatives)."""
GRADIENT_METHODS = ("grad_x_input", "integrated_gradients")
"""The methods with a signed per-token attribution (`token_scores` other than `abs` needs one of them)."""


def attribute(
    model,
    trajectories: list[Trajectory],
    components: list[dict[str, Tensor]],
    targets: list[Tensor],
    pad_token_id: int,
    **options,
) -> list[dict[str, float]]:
    """Raw non-negative score of each component of each trajectory for its target: `attribution_scores` (whose
    keyword `options` it takes, but `differentiable`) as floats, per trajectory {key: score}; `{}` for a trajectory
    with an empty target (it is not run through the model)."""
    results: list[dict[str, float]] = [{} for _ in trajectories]
    scores, keys, active = attribution_scores(model, trajectories, components, targets, pad_token_id, **options)
    scores = scores.detach().float().cpu()
    for row, i in enumerate(active):
        results[i] = {key: float(scores[row, k]) for k, key in enumerate(keys) if key in components[i]}
    return results


def attribution_scores(
    model,
    trajectories: list[Trajectory],
    components: list[dict[str, Tensor]],
    targets: list[Tensor],
    pad_token_id: int,
    method: str = "grad_x_input",
    baseline: str = "zero",
    steps: int = 16,
    chunk_size: int | None = None,
    fast: bool = True,
    quadrature: str = "riemann",
    completeness: list[float] | None = None,
    completeness_rows: int | None = None,
    token_scores: str = "abs",
    differentiable: bool = False,
) -> tuple[Tensor, list[str], list[int]]:
    """Raw non-negative score of each component of each trajectory for its target, as a tensor.

    Args:
        model: a Qwen2.5-VL-style model (possibly a peft `PeftModel`, NF4, gradient-checkpointed).
        trajectories: B trajectories (student tokens or a teacher's `retokenize`d view).
        components: per trajectory, {key: BoolTensor [T_b]} (`trajectory_components`, `block_components`).
        targets: per trajectory, BoolTensor [T_b] of target tokens (`target_mask`).
        pad_token_id: left-padding id.
        method: a registered method (`register_method`).
        baseline: the reference input b, `"zero"` or `"mean"` (the mean embedding of the row's tokens up to its
            last target token).
        steps: m, interpolation points of `integrated_gradients` (the other methods ignore it).
        chunk_size: sequences per forward/backward of `integrated_gradients` (default: the batch's rows).
        fast: each distinct image through the vision tower once and every row cut after its last target token
            (`through_last_target`), both exact; False runs the plain path (every image encoded, whole sequences),
            kept for comparison (`python -m iapo.experiments.bench`).
        quadrature: the rule of `integrated_gradients`' m points, a key of `QUADRATURES`.
        completeness: when given, receives the relative completeness gap of the first `completeness_rows` attributed
            trajectories (all by default), in order (`integrated_gradients` only; `quadrature.relative_completeness_gap`;
            two forwards per measured row); when None nothing is measured.
        token_scores: a key of `TOKEN_SCORES`: each token's signed attribution taken whole (`abs`) or only where it
            supports the target (`positive`); the gradient methods only.
        differentiable: keep the graph from the scores to the model's parameters (a loss on the attribution
            itself, not a reward of the sampled tokens); only the methods of `DIFFERENTIABLE_METHODS`.

    Returns:
        (scores [A, K] on the model's device, the K keys in sorted order, the A indices of the trajectories with a
        target); a key absent from a trajectory's components scores 0 there.
    """
    method_fn = get_method(method)
    if differentiable and method not in DIFFERENTIABLE_METHODS:
        raise ValueError(f"differentiable scores need a method of {DIFFERENTIABLE_METHODS}, got {method!r}")
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    if quadrature not in QUADRATURES:
        raise ValueError(f"quadrature must be one of {QUADRATURES}, got {quadrature!r}")
    if steps < 1 or (chunk_size is not None and chunk_size < 1):
        raise ValueError(f"steps and chunk_size must be >= 1, got steps={steps}, chunk_size={chunk_size}")
    check_token_scores(method, token_scores)
    active = [i for i, target in enumerate(targets) if bool(target.any())]
    if not active:
        return torch.zeros((0, 0)), [], []
    batch = collate_trajectories([trajectories[i] for i in active], pad_token_id)
    keys = sorted(set().union(*(components[i] for i in active)))
    rows, length = batch["input_ids"].shape
    masks = torch.zeros((rows, len(keys), length), dtype=torch.bool)
    target = torch.zeros((rows, length), dtype=torch.bool)
    for row, i in enumerate(active):
        offset = length - int(trajectories[i].input_ids.shape[0])
        target[row, offset:] = targets[i]
        for k, key in enumerate(keys):
            if key in components[i]:
                masks[row, k, offset:] = components[i][key]
    inputs = device_inputs(model, batch)
    device = inputs["input_ids"].device
    # the fused attention kernels have no second derivative: a differentiable gradient method runs the math one
    kernel = sdpa_kernel(SDPBackend.MATH) if differentiable and method in GRADIENT_METHODS else nullcontext()
    with attribution_mode(model, checkpoint=not differentiable), kernel:
        embeddings, positions = language_model_inputs(model, inputs, distinct_images=fast)
        if positions is None:
            raise RuntimeError("the model gave its language model no position ids: attribution needs mRoPE positions")
        masks, target = masks.to(device), target.to(device)
        read = inputs["attention_mask"].bool() & (target.long().cumsum(-1) < target.sum(-1, keepdim=True))
        read |= target  # the real tokens before each row's last target token, and that token itself
        reference = baseline_embeddings(embeddings, read, baseline)
        # explicit mRoPE positions: a subset of rows can then run without its images' grids
        inputs = {key: inputs[key] for key in ROW_INPUTS} | {"position_ids": positions}
        if fast:
            inputs, embeddings, masks, target = through_last_target(inputs, embeddings, masks, target, pad_token_id)
        scores, gaps = method_fn(
            model,
            inputs,
            embeddings,
            reference,
            masks,
            target,
            steps=steps,
            chunk_size=chunk_size or rows,
            quadrature=quadrature,
            gap_rows=0 if completeness is None else min(rows, rows if completeness_rows is None else completeness_rows),
            token_scores=token_scores,
            **({"differentiable": True} if differentiable else {}),  # only a DIFFERENTIABLE_METHODS entry takes it
        )
    if completeness is not None and gaps is not None:
        completeness.extend(gaps.tolist())
    return scores, keys, active


def check_token_scores(method: str, token_scores: str) -> None:
    """A ValueError naming the valid choices for an unknown `token_scores`, or one other than `abs` with a method
    that has no signed per-token attribution."""
    if token_scores not in TOKEN_SCORES:
        raise ValueError(f"token_scores must be one of {list(TOKEN_SCORES)}, got {token_scores!r}")
    if token_scores != "abs" and method not in GRADIENT_METHODS:
        raise ValueError(
            f"token_scores {token_scores!r} needs a gradient method {list(GRADIENT_METHODS)}, got {method!r}"
        )


def grad_x_input_scores(
    objective_fn: Callable[[Tensor], Tensor],
    embeddings: Tensor,
    masks: Tensor,
    reference: Tensor | None = None,
    token_scores: str = "abs",
    differentiable: bool = False,
) -> Tensor:
    """Gradient × input summed per component: [B, K] = Σ_{i in k} s(∂ objective_b / ∂ e_i · (e_i − r_i)), s the
    `TOKEN_SCORES[token_scores]` of each token (|·| by default).

    Args:
        objective_fn: embeddings [B, T, D] -> objective [B] (each row's objective depends on its row only).
        embeddings: [B, T, D], the point where the gradient is taken (detached here).
        masks: BoolTensor [B, K, T], component k of row b.
        reference: baseline [B, T, D] or broadcastable (e.g. [B, 1, D]); None for zero.
        differentiable: take the gradient with `create_graph`, so the scores keep their graph to the parameters.
    """
    leaf = embeddings.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(objective_fn(leaf).sum(), leaf, create_graph=differentiable)
    delta = embeddings.detach() if reference is None else embeddings.detach() - reference
    saliency = TOKEN_SCORES[token_scores]((grad.float() * delta.float()).sum(-1))
    return torch.einsum("bt,bkt->bk", saliency, masks.float())


def integrated_gradients_tokens(
    objective_fn: Callable[[Tensor, Tensor], Tensor],
    embeddings: Tensor,
    reference: Tensor,
    steps: int,
    chunk_size: int,
    quadrature: str = "riemann",
    differentiable: bool = False,
) -> Tensor:
    """Signed integrated-gradients attribution of each token [B, T] (summed over the embedding dim D).

    attr_bi = (e_bi − r_bi) · Σ_s w_s ∂ objective_b / ∂ e_bi at x_s = e_b − (1 − α_s)(e_b − r_b), with the m points
    α_s and weights w_s of `quadrature` (`quadrature.quadrature_points`), so that Σ_i attr_bi →
    objective_b(e_b) − objective_b(r_b) as m grows (completeness; exact for a linear objective with either rule).
    The B·m points run row by row, point by point, in chunks of `chunk_size` sequences; the last Riemann point is
    e_b itself, so Riemann m = 1 is gradient × input exactly.

    Args:
        objective_fn: (points [n, T, D], rows LongTensor [n]) -> [n], the objective of batch row `rows[j]` at
            `points[j]` (each point's objective depends on that point only).
        embeddings: [B, T, D], the input e.
        reference: the baseline r, [B, T, D] or broadcastable (e.g. [B, 1, D]).
        steps: m >= 1.
        chunk_size: sequences per forward/backward (>= 1).
        quadrature: a key of `quadrature.QUADRATURES`.
        differentiable: take the gradients with `create_graph`, so the attribution keeps its graph to the parameters.
    """
    if steps < 1 or chunk_size < 1:
        raise ValueError(f"steps and chunk_size must be >= 1, got steps={steps}, chunk_size={chunk_size}")
    embeddings = embeddings.detach()
    delta = (embeddings - reference).expand_as(embeddings)
    nodes, node_weights = quadrature_points(quadrature, steps)
    rows = torch.arange(embeddings.shape[0], device=embeddings.device).repeat_interleave(steps)
    alphas = nodes.float().to(embeddings.device).repeat(embeddings.shape[0])
    weights = node_weights.float().to(embeddings.device).repeat(embeddings.shape[0])
    grads = torch.zeros(embeddings.shape, dtype=torch.float32, device=embeddings.device)
    for start in range(0, len(rows), chunk_size):
        chunk = slice(start, start + chunk_size)
        chunk_rows, chunk_alphas = rows[chunk], alphas[chunk]
        # e − (1 − α)(e − r): at α = 1 this is e bit for bit (the gradient × input point)
        points = embeddings[chunk_rows].float() - (1 - chunk_alphas)[:, None, None] * delta[chunk_rows].float()
        leaf = points.to(embeddings.dtype).requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(objective_fn(leaf, chunk_rows).sum(), leaf, create_graph=differentiable)
        grads = grads.index_add(0, chunk_rows, grad.float() * weights[chunk, None, None])
    return (grads * delta.float()).sum(-1)


def integrated_gradients_scores(
    objective_fn: Callable[[Tensor, Tensor], Tensor],
    embeddings: Tensor,
    masks: Tensor,
    reference: Tensor,
    steps: int,
    chunk_size: int,
    quadrature: str = "riemann",
    gap_rows: int | None = None,
    token_scores: str = "abs",
    differentiable: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Integrated gradients summed per component, [B, K] = Σ_{i in k} s(attr_bi) (`integrated_gradients_tokens`;
    s = `TOKEN_SCORES[token_scores]`, |·| by default),
    and the relative completeness gap of the first `gap_rows` rows (all by default; None when 0)
    (`quadrature.relative_completeness_gap`; the objective at e and at the baseline costs one more forward per
    measured row and end, no backward)."""
    tokens = integrated_gradients_tokens(
        objective_fn, embeddings, reference, steps, chunk_size, quadrature, differentiable
    )
    scores = torch.einsum("bt,bkt->bk", TOKEN_SCORES[token_scores](tokens), masks.float())
    rows = embeddings.shape[0] if gap_rows is None else min(gap_rows, embeddings.shape[0])
    if rows == 0:
        return scores, None
    measured = embeddings.detach()[:rows]
    ends = torch.cat([measured, reference.expand_as(embeddings)[:rows]])  # the rows at e, then at their baseline
    end_rows = torch.arange(rows, device=embeddings.device).repeat(2)
    with torch.no_grad():
        values = torch.cat(
            [
                objective_fn(ends[start : start + chunk_size], end_rows[start : start + chunk_size])
                for start in range(0, len(ends), chunk_size)
            ]
        )
    gaps = relative_completeness_gap(tokens[:rows].sum(-1), values[:rows] - values[rows:])
    return scores, gaps


def occlusion_scores(
    objective_fn: Callable[[Tensor], Tensor],
    embeddings: Tensor,
    masks: Tensor,
    reference: Tensor,
    differentiable: bool = False,
) -> Tensor:
    """Drop of the objective when a component is replaced by the reference: [B, K], clamped at 0.

    Args:
        objective_fn: embeddings [B, T, D] -> objective [B].
        embeddings: [B, T, D].
        masks: BoolTensor [B, K, T].
        reference: [B, T, D] or broadcastable (e.g. [B, 1, D]).
        differentiable: keep the graph to the parameters `objective_fn` reads (else no graph is built).
    """
    with torch.enable_grad() if differentiable else torch.no_grad():
        full = objective_fn(embeddings)
        drops = [
            full - objective_fn(torch.where(masks[:, k, :, None], reference, embeddings)) for k in range(masks.shape[1])
        ]
    return torch.stack(drops, dim=1).float().clamp_min(0.0)


def baseline_embeddings(embeddings: Tensor, tokens: Tensor, baseline: str) -> Tensor:
    """Reference input [B, 1, D]: zeros, or the mean embedding of each row's `tokens` ([B, T] mask: its real tokens,
    or those the objective reads)."""
    if baseline == "zero":
        return torch.zeros_like(embeddings[:, :1])
    weights = tokens[..., None].to(embeddings.dtype)
    return (embeddings * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True).clamp_min(1)


Method = Callable[..., tuple[Tensor, Tensor | None]]
METHODS: dict[str, Method] = {}
"""name -> fn(model, inputs, embeddings [B,T,D], reference [B,1,D], masks [B,K,T], targets [B,T], *, steps,
chunk_size, quadrature, gap_rows, token_scores) -> (scores [B,K], relative completeness gaps of the first gap_rows
rows or None); `inputs` carry explicit `position_ids`; only `integrated_gradients` uses steps, chunk_size and
quadrature, and measures completeness; only the `GRADIENT_METHODS` use token_scores; a `DIFFERENTIABLE_METHODS`
entry also takes `differentiable`."""


def register_method(name: str) -> Callable[[Method], Method]:
    """Decorator: make `fn` selectable as `attribution.method: <name>` (a name registered twice is an error)."""

    def add(fn: Method) -> Method:
        if name in METHODS:
            raise ValueError(f"attribution method {name!r} is registered twice")
        METHODS[name] = fn
        return fn

    return add


def get_method(name: str) -> Method:
    """The registered method `name`; an unknown name is a ValueError listing the registered ones."""
    if name not in METHODS:
        raise ValueError(f"unknown attribution method {name!r}; registered: {', '.join(sorted(METHODS))}")
    return METHODS[name]


@register_method("grad_x_input")
def _grad_x_input(model, inputs, embeddings, reference, masks, targets, token_scores, differentiable=False, **unused):
    _require_autograd("grad_x_input")
    objective = target_logprob_fn(model, inputs, targets)
    return grad_x_input_scores(objective, embeddings, masks, reference, token_scores, differentiable), None


@register_method("integrated_gradients")
def _integrated_gradients(
    model, inputs, embeddings, reference, masks, targets, **options
) -> tuple[Tensor, Tensor | None]:
    _require_autograd("integrated_gradients")

    def objective(points: Tensor, rows: Tensor) -> Tensor:
        return target_logprob_fn(model, select_rows(inputs, rows), targets[rows])(points)

    return integrated_gradients_scores(objective, embeddings, masks, reference, **options)


def _require_autograd(method: str) -> None:
    if torch.is_inference_mode_enabled():
        raise RuntimeError(f"{method} needs autograd: call it outside torch.inference_mode")


@register_method("occlusion")
def _occlusion(model, inputs, embeddings, reference, masks, targets, differentiable=False, **unused):
    objective = target_logprob_fn(model, inputs, targets)
    return occlusion_scores(objective, embeddings, masks, reference, differentiable), None


@register_method("attention")
def _attention(model, inputs, embeddings, reference, masks, targets, **unused) -> tuple[Tensor, None]:
    """Attention from target-predicting positions to each component, averaged over positions, layers and heads.

    `reference` is not used (attention has no baseline input).
    """
    decoder = language_model(model)
    implementation = decoder.config._attn_implementation
    if implementation != "eager":
        raise ValueError(
            f"the attention method needs attn_implementation='eager' (the model uses {implementation!r}): "
            "load it with load_model(..., attn_implementation='eager')"
        )
    predicting = torch.zeros_like(targets)
    predicting[:, :-1] = targets[:, 1:]
    query_weights = predicting.float() / predicting.sum(1, keepdim=True).clamp_min(1)
    mass = torch.zeros(targets.shape, dtype=torch.float32, device=targets.device)

    def accumulate(module, args, output):
        weights = output[1]
        nonlocal mass
        mass = mass + torch.einsum("bhqk,bq->bk", weights.float(), query_weights) / weights.shape[1]

    layers = decoder.layers
    handles = [layer.self_attn.register_forward_hook(accumulate) for layer in layers]
    try:
        with torch.no_grad():
            forward_from_embeddings(model, inputs, embeddings, logits_to_keep=1)
    finally:
        for handle in handles:
            handle.remove()
    return torch.einsum("bt,bkt->bk", mass / len(layers), masks.float()), None
