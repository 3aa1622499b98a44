"""The demo's regime: how sparse the cold-started student's outcome reward is, measured on training prompts only.

`sample_diagnostics` rolls a model out on training prompts at the RL temperature (G samples per prompt, as an RL step
does, without any update) and returns the step diagnostics over all its groups: sampled accuracy, the share of groups
with equal outcome rewards (no GRPO signal) split into all-fail and all-succeed, tool-call and tool-success rates,
and with a teacher the attribution diagnostics (`iapo.training.diagnostics`). `choose_candidate` picks the cold
start RL starts from; `choose_weight` sets λ from the same measurement. Test results are never read here.

    rows = [sample_diagnostics(settings, path) for path in candidates]
    index, reason = choose_candidate(rows, settings.min_accuracy, settings.min_call_rate)
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from iapo.data.sample import load_image
from iapo.experiments.demo.premise import call_outcomes, right_call
from iapo.models.loader import ModelSettings
from iapo.training.diagnostics import mechanism_metrics
from iapo.training.rewards import RewardContext, build_rewards
from iapo.training.step import StepSettings, collect


def group_shares(outcome: torch.Tensor, group_size: int) -> dict[str, float]:
    """Shares of groups whose outcome rewards are all 0 (`all_fail`) and all equal to the best score 1
    (`all_succeed`); with `mechanism_metrics`'s `outcome_zero_std` (all equal) they say where the ties are."""
    grouped = outcome.view(-1, group_size)
    return {
        "all_fail": float((grouped.max(1).values <= 0).double().mean()),
        "all_succeed": float((grouped.min(1).values >= 1).double().mean()),
    }


def within_group_spread(values: torch.Tensor, group_size: int) -> float:
    """The pooled within-group standard deviation: the root of the mean (population) variance of the groups."""
    return float(values.double().view(-1, group_size).var(1, unbiased=False).mean().sqrt())


CALL_KEYS = ("right_call_rate", "success_given_right", "success_given_wrong")
"""Whether the call decides success, measured where a right call is defined (`premise.call_outcomes`)."""


def sample_diagnostics(settings, student: Path, teacher: Path | None = None, seed: int = 0) -> dict[str, float]:
    """Diagnostics of `student` sampled on the first `regime_prompts` training prompts, `group_size` each, at the
    RL sampling settings; with `teacher`, the attribution is computed too (IAPO's term at λ = 1) and `term_spread`
    / `outcome_spread` (pooled within-group standard deviations) are returned for `choose_weight`."""
    torch.manual_seed(seed)
    model, processor = ModelSettings(name=str(student)).load(device="cpu")
    model.eval()
    teacher_pair = None
    if teacher is not None:
        teacher_pair = ModelSettings(name=str(teacher)).load(device="cpu")
        teacher_pair[0].eval()
    step = StepSettings(group_size=settings.group_size, sampling=settings.sampling, attribution=settings.attribution)
    method = "iapo" if teacher is not None else "grpo"
    rewards = build_rewards(settings.rewards(method, 1.0), RewardContext(settings.attribution))
    samples = settings.build_split("train", settings.regime_prompts)
    outcome, total, term, trajectories, student_maps, teacher_maps = [], [], [], [], [], []
    for start in range(0, len(samples), settings.rl_prompts):
        batch = samples[start : start + settings.rl_prompts]
        images = [load_image(s.image) for s in batch]
        record = collect(model, processor, batch, images, step, rewards, (lambda: teacher_pair) if teacher else None)
        outcome.append(record.rewards["accuracy"])
        total.append(record.rewards["total"])
        if "attribution" in record.rewards:
            term.append(record.rewards["attribution"])
        for trajectory in record.trajectories:
            trajectory.sample_index += start
        trajectories += record.trajectories
        student_maps += record.attributions["student"]
        teacher_maps += record.attributions["teacher"]
    outcome_all, total_all = torch.cat(outcome), torch.cat(total)
    attributed = teacher is not None
    metrics = mechanism_metrics(
        outcome=outcome_all,
        total=total_all,
        attribution_term=torch.cat(term) if attributed else None,
        student=student_maps if attributed else None,
        teacher=teacher_maps if attributed else None,
        trajectories=trajectories,
        group_size=settings.group_size,
        divergence=settings.attribution.divergence,
        kl_smoothing=settings.attribution.kl_smoothing,
    )
    metrics |= {f"mechanism/{k}": v for k, v in group_shares(outcome_all, settings.group_size).items()}
    metrics["accuracy"] = float(outcome_all.mean())
    metrics["answered"] = sum(t.final_answer is not None for t in trajectories) / len(trajectories)
    if all("focus" in sample.meta for sample in samples):  # a right call is defined by the label boxes (charts)
        calls = [right_call(t, samples[t.sample_index]) for t in trajectories]
        outcomes = call_outcomes(calls, outcome_all.tolist())
        metrics |= {f"calls/{key}": outcomes[key] for key in CALL_KEYS}
    metrics["outcome_spread"] = within_group_spread(outcome_all, settings.group_size)
    if attributed:
        metrics["term_spread"] = within_group_spread(torch.cat(term), settings.group_size)
    return metrics


def choose_candidate(
    rows: list[dict[str, float]], min_accuracy: float, min_call_rate: float, min_reading: float = 0.0
) -> tuple[int, str]:
    """(index, why) of the cold start RL starts from: among the candidates that are not hopeless (sampled accuracy
    >= `min_accuracy`, tool-call rate >= `min_call_rate`) and, where a right call is defined, read what they edit
    (P(success | right call) `calls/success_given_right` >= `min_reading`: a sparser candidate that does not read
    has a reward the call does not decide), the one with the most all-fail groups (the sparsest outcome reward; the
    earlier on ties); if none qualifies, the most accurate one."""

    def reads(row: dict[str, float]) -> bool:
        reading = row.get("calls/success_given_right")
        return min_reading <= 0 or reading is None or (math.isfinite(reading) and reading >= min_reading)

    qualified = [
        i
        for i, row in enumerate(rows)
        if row["accuracy"] >= min_accuracy and row["tools/call_rate"] >= min_call_rate and reads(row)
    ]
    reading = f", P(success | right call) >= {min_reading:.0%}" if min_reading > 0 else ""
    if not qualified:
        best = max(range(len(rows)), key=lambda i: rows[i]["accuracy"])
        return best, (
            f"no candidate reached sampled accuracy >= {min_accuracy:.0%} with tool-call rate >= {min_call_rate:.0%}"
            f"{reading}; the most accurate one is used"
        )
    best = max(qualified, key=lambda i: (rows[i]["mechanism/all_fail"], -i))
    return best, (
        f"the most all-fail groups ({rows[best]['mechanism/all_fail']:.0%}) among the candidates with sampled accuracy "
        f">= {min_accuracy:.0%} and tool-call rate >= {min_call_rate:.0%}{reading}"
    )


def choose_weight(diagnostics: dict[str, float], fallback: float = 1.0) -> tuple[float, str]:
    """(λ, why): the outcome reward's pooled within-group spread over the attribution term's, both measured at the
    cold start on training prompts, so that the term moves a group's rewards about as much as the outcome does;
    `fallback` when either spread is zero (nothing to match)."""
    outcome, term = diagnostics.get("outcome_spread", math.nan), diagnostics.get("term_spread", math.nan)
    if not (outcome > 0 and term > 0):
        return fallback, f"λ = {fallback:g}: no spread to match (outcome {outcome:.3g}, attribution term {term:.3g})"
    weight = float(f"{outcome / term:.2g}")
    return weight, (
        f"λ = {weight:g} = the outcome's within-group spread ({outcome:.3f}) over the attribution term's "
        f"({term:.4f}) at the cold start (training prompts)"
    )
