"""The demo's comparisons of evaluated models: GRPO − cold start (whether RL learned at the budget) and IAPO − GRPO,
paired by seed (a t interval: the spread over RL seeds) and by question (a bootstrap over the evaluation questions
of the per-question difference of seed means: the evaluation set's sampling, which a seed interval against one
cold-start accuracy does not carry).

Pure functions on the results of `stages.evaluate` / `stages.evaluate_sampled` (`accuracy`, and `per_question` in
row order where kept):

    gain = versus_cold_start([grpo_seed0, grpo_seed1], cold)   # {"by_seed": ..., "by_question": ...}
"""

from __future__ import annotations

from iapo.experiments.demo.formatting import METHODS
from iapo.experiments.demo.premise import bootstrap_mean
from iapo.experiments.demo.stats import paired_difference


def seed_mean(per_seed: list[list[float]]) -> list[float]:
    """Per question, the mean over seeds."""
    return [sum(values) / len(values) for values in zip(*per_seed, strict=True)]


def by_question(first: list[dict], second: list[dict]) -> dict | None:
    """The bootstrap interval over questions of (seed mean of `first`) − (seed mean of `second`) per question; None
    when a result does not keep its questions' scores (an evaluation cached before they were kept)."""
    if not all("per_question" in result for result in (*first, *second)):
        return None
    a = seed_mean([result["per_question"] for result in first])
    b = seed_mean([result["per_question"] for result in second])
    return bootstrap_mean([x - y for x, y in zip(a, b, strict=True)])


def versus_cold_start(results: list[dict], cold: dict) -> dict:
    """RL runs (one result per seed) against the cold start they started from: by seed (a `paired_difference` of
    each seed's accuracy against the cold start's, which counts the cold start's accuracy as exact) and by
    question."""
    accuracy = [result["accuracy"] for result in results]
    return {
        "by_seed": paired_difference(accuracy, [cold["accuracy"]] * len(accuracy)),
        "by_question": by_question(results, [cold]),
    }


def of_method(runs: list[dict], method: str, key: str) -> list[dict]:
    """One evaluation (`key`: "tools on", "tools off", "sampled") of every seed of `method`, in seed order."""
    return [run[key] for run in runs if run["method"] == method]


def greedy_by_question(runs: list[dict], cold: dict) -> dict | None:
    """Greedy with tools, over questions: GRPO − cold start and IAPO − GRPO (None where not kept)."""
    gain = by_question(of_method(runs, "grpo", "tools on"), [cold])
    paired = by_question(of_method(runs, "iapo", "tools on"), of_method(runs, "grpo", "tools on"))
    return None if gain is None or paired is None else {"grpo_gain": gain, "paired": paired}


def sampled_results(settings, models: dict[str, dict], runs: list[dict]) -> dict:
    """Accuracy with tools sampled as in RL (`models`: the cold start's and the teacher's `evaluate_sampled`
    results under "student" / "teacher"): each method's per seed, GRPO − cold start and IAPO − GRPO paired by seed
    and `by_question`."""
    cold = models["student"]
    accuracy = {method: [result["accuracy"] for result in of_method(runs, method, "sampled")] for method in METHODS}
    gain = versus_cold_start(of_method(runs, "grpo", "sampled"), cold)
    return {
        "samples_per_question": settings.group_size,
        "temperature": settings.sampling.temperature,
        "student": cold["accuracy"],
        "teacher": models["teacher"]["accuracy"],
        **accuracy,
        "grpo_gain": gain["by_seed"],
        "paired": paired_difference(accuracy["iapo"], accuracy["grpo"]),
        "by_question": {
            "grpo_gain": gain["by_question"],
            "paired": by_question(of_method(runs, "iapo", "sampled"), of_method(runs, "grpo", "sampled")),
        },
    }
