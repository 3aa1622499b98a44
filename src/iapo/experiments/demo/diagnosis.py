"""Why, by the diagnostics: the report's reading of the mechanism, in plain words with every threshold stated — the
attribution term's within-group rank correlation with success, the ties it breaks beyond the format reward's, where
each side's attribution mass lies, whether the divergence moved, tool use, and the closing `synthesis` of the
paired comparison's outcome (`outcome_class`) with them. When IAPO's arm is GRPO plus the attribution loss alone
(λ = 0, `DemoSettings.attribution_loss`), the term's sentences give way to the loss's (`loss_synthesis`).

Every sentence is one function of plain numbers, tested on both sides of each comparison it states
(`tests/test_findings.py`).

    sentences = mechanism_reading(summary, outcome_class(summary["paired"]["tools on"]))
"""

from __future__ import annotations

import math

from iapo.experiments.demo.formatting import chosen_candidate, number, percent

DIVERGENCE_NAMES = {"kl": "KL", "jsd": "JSD", "cosine": "cosine distance"}
"""How a sentence names the run's divergence (`AttributionSettings.divergence`)."""

ALIGNED, RELATED = 0.3, 0.1
"""Rank-correlation thresholds of the findings: at least `ALIGNED`, the attribution term ranks a group's samples
much as success does; below `RELATED` in magnitude, it is unrelated to success."""

MOVED = 0.1
"""A divergence "fell" / "rose" when its last quarter is more than this fraction below / above its first."""

MAJORITY = 0.5
"""A side puts "most" of its attribution on a component when that component holds more than this share."""


def outcome_class(paired: dict) -> str:
    """The paired comparison (IAPO − GRPO) as one of `one_seed`, `helped` (95% interval above 0), `hurt` (below 0)
    or `none` (contains 0)."""
    if paired["n"] < 2:
        return "one_seed"
    if paired["low"] > 0:
        return "helped"
    if paired["high"] < 0:
        return "hurt"
    return "none"


VERDICTS = {
    "one_seed": "one seed cannot separate them",
    "helped": "the 95% interval lies above 0: IAPO helped",
    "hurt": "the 95% interval lies below 0: IAPO hurt",
    "none": "the 95% interval contains 0: no difference shown",
}


def correlation_words(rho: float) -> str:
    if not math.isfinite(rho):
        return "of unknown relation to success"
    if rho >= ALIGNED:
        return "aligned with success"
    if rho >= RELATED:
        return "weakly aligned with success"
    if rho > -RELATED:
        return "unrelated to success"
    return "at odds with success"


def correlation_sentence(cold: float, groups: int, run: dict) -> str:
    """The term's within-group rank correlation with the outcome at the cold start (over `groups` groups) and over
    IAPO's training (`run`: mean, first and last quarter), read against the thresholds (the run's mean when
    measured, else the cold start's)."""
    mean = run.get("mean", math.nan)
    if not math.isfinite(cold) and not math.isfinite(mean):
        return (
            "No group had both varying outcomes and varying attribution terms, so the term's link to success could "
            "not be measured."
        )
    return (
        f"Within groups, the attribution term's rank correlation with the outcome is {number(cold, 2)} at the cold "
        f"start ({groups} groups) and {number(mean, 2)} over IAPO's training (first quarter "
        f"{number(run.get('first'), 2)}, last {number(run.get('last'), 2)}): the term is "
        f"{correlation_words(mean if math.isfinite(mean) else cold)} (thresholds ±{RELATED:g} and {ALIGNED:g})."
    )


def term_adds_ties(with_term: float | None, format_only: float | None) -> bool:
    """Whether the groups whose rewards differ despite equal outcomes are more with the term than with the format
    reward alone (both shares of all groups, at the cold start)."""
    return with_term is not None and format_only is not None and math.isfinite(with_term) and with_term > format_only


def rescued_sentence(with_term: float, tied: float, format_only: float, during: float | None) -> str:
    """Groups with equal outcomes whose total rewards differ: with the term at the cold start (of `tied`, the
    groups with equal outcomes), with the format reward alone, and over IAPO's training; says which is larger."""
    if term_adds_ties(with_term, format_only):
        compared = (
            f"{100 * (with_term - format_only):.1f} points more than the format reward alone ({percent(format_only)}%)"
        )
    else:
        compared = f"no more than the format reward alone ({percent(format_only)}%): the term breaks no further ties"
    return (
        f"At the cold start the term makes rewards differ in {percent(with_term)}% of the groups (of {percent(tied)}% "
        f"with equal outcomes), {compared}; over IAPO's training, {percent(during)}% of the groups."
    )


def mass_sentence(student: dict[str, float], teacher: dict[str, float], divergence: str, value: float) -> str:
    """Where each side puts the attribution (its largest component, each found on its own side) and the divergence
    at the cold start (`divergence`: the run's `AttributionSettings.divergence`)."""
    name = DIVERGENCE_NAMES.get(divergence, divergence)
    top_s, top_t = max(student, key=student.get), max(teacher, key=teacher.get)
    shares = f"({percent(student[top_s], 0)}% and {percent(teacher[top_t], 0)}%)"
    tail = f"{name} {value:.2e} at the cold start" if math.isfinite(value) else f"{name} not measured"
    if top_s == top_t and student[top_s] > MAJORITY and teacher[top_t] > MAJORITY:
        return (
            f"Student and teacher both put most of the attribution on {top_s} {shares}, so the divergence ({tail}) "
            f"is set by how they share the rest ({percent(1 - student[top_s], 0)}% and {percent(1 - teacher[top_t], 0)}%)."
        )
    if top_s == top_t:
        return f"Student and teacher both put their largest share (not most) of the attribution on {top_s} {shares}; {tail}."
    return (
        f"The student puts its largest share of the attribution on {top_s} ({percent(student[top_s], 0)}%; the "
        f"teacher {percent(teacher.get(top_s), 0)}%), the teacher on {top_t} ({percent(teacher[top_t], 0)}%; the "
        f"student {percent(student.get(top_t), 0)}%); {tail}."
    )


def divergence_sentence(divergence: str, first: float, last: float) -> str:
    """Whether the student–teacher divergence under IAPO fell, rose or did not move (by more than `MOVED`), first →
    last quarter."""
    moved = "fell" if fell(first, last) else "rose" if last > (1 + MOVED) * first else "did not move"
    name = DIVERGENCE_NAMES.get(divergence, divergence)
    return (
        f"Under IAPO the {name} divergence {moved} (threshold ±{100 * MOVED:.0f}%): {first:.2e} → {last:.2e} "
        "(first → last quarter)."
    )


def call_rate_sentence(calls: dict[str, dict]) -> str:
    """Tool-call rate over training, first → last quarter, per method, with its direction at the printed precision
    (99.97% → 99.96% is "100.0% → 100.0%", which did not change as far as the sentence can show)."""

    def direction(c: dict) -> str:
        first, last = percent(c["first"]), percent(c["last"])
        if first == last:
            return "did not change"
        return "rose" if c["last"] > c["first"] else "fell"

    return (
        "Tool-call rate over training: "
        + ", ".join(
            f"{m.upper()} {percent(c['first'])}% → {percent(c['last'])}% ({direction(c)})" for m, c in calls.items()
        )
        + "."
    )


def mechanism_reading(summary: dict, outcome: str) -> list[str]:
    """Sentences on whether IAPO's arm could help, from the summary: the term's correlation with success and the ties
    it breaks (when the term is in IAPO's reward), masses, the divergence over training, tool use, then `synthesis`
    — or, for GRPO plus the attribution loss alone, `loss_synthesis` (`outcome`: `outcome_class` of the paired
    comparison)."""
    cold, training = summary["cold_start_diagnostics"], summary["training"]
    iapo = training.get("iapo", {})
    divergence = summary.get("settings", {}).get("attribution", {}).get("divergence", "kl")
    loss_weight = summary.get("settings", {}).get("attribution_loss", 0.0)
    term_in_reward = summary.get("weight", 0.0) > 0 or not loss_weight
    rho = cold.get("mechanism/rank_corr_attribution_outcome", math.nan)
    run = iapo.get("mechanism/rank_corr_attribution_outcome", {})
    format_only = chosen_candidate(summary["regime"])["mechanism/rescued_groups"]
    with_term = cold.get("mechanism/rescued_groups", math.nan)
    sentences = []
    if term_in_reward:
        sentences.append(correlation_sentence(rho, int(cold.get("mechanism/rank_corr_groups", 0)), run))
        sentences.append(
            rescued_sentence(
                with_term,
                cold.get("mechanism/outcome_zero_std", math.nan),
                format_only,
                iapo.get("mechanism/rescued_groups", {}).get("mean"),
            )
        )
    masses = {
        side: {k.rsplit("/", 1)[1]: v for k, v in cold.items() if k.startswith(f"attribution/{side}_mass/")}
        for side in ("student", "teacher")
    }
    if all(masses.values()):
        sentences.append(
            mass_sentence(
                masses["student"], masses["teacher"], divergence, cold.get("attribution/divergence", math.nan)
            )
        )
    moved = iapo.get("attribution/divergence") or loss_divergence(iapo.get("auxiliary_loss", {}), loss_weight)
    first, last = moved.get("first", math.nan), moved.get("last", math.nan)
    if math.isfinite(first) and math.isfinite(last):
        sentences.append(divergence_sentence(divergence, first, last))
    calls = {m: training.get(m, {}).get("tools/call_rate", {}) for m in ("grpo", "iapo")}
    if all(calls.values()):
        sentences.append(call_rate_sentence(calls))
    if not term_in_reward:
        return [*sentences, loss_synthesis(outcome, first, last)]
    run_rho = run.get("mean", math.nan)
    sentences.append(
        synthesis(outcome, run_rho if math.isfinite(run_rho) else rho, term_adds_ties(with_term, format_only))
    )
    return sentences


def loss_divergence(logged: dict, weight: float) -> dict:
    """The divergence the attribution loss trains, first and last quarter, from its logged value (`auxiliary_loss`
    = λ_a · D of each mini-batch's calls, before its step); empty without the loss."""
    if not logged or not weight:
        return {}
    return {part: logged[part] / weight for part in ("first", "last") if part in logged}


def fell(first: float, last: float) -> bool:
    """Whether a divergence fell by more than `MOVED` of its first-quarter value."""
    return last < (1 - MOVED) * first


def loss_synthesis(outcome: str, first: float, last: float) -> str:
    """The closing sentence when IAPO's arm is GRPO plus the attribution loss alone: the comparison's `outcome_class`
    read against whether the divergence the loss trains fell (`first` → `last` quarter, `fell`)."""
    known = math.isfinite(first) and math.isfinite(last)
    moved = (
        f"the divergence it trains fell ({first:.2e} → {last:.2e})"
        if known and fell(first, last)
        else f"the divergence it trains did not fall ({number(first, 4)} → {number(last, 4)})"
    )
    if outcome not in VERDICTS:
        raise ValueError(f"unknown outcome {outcome!r}; expected one of {sorted(VERDICTS)}")
    if outcome in ("none", "one_seed"):
        shown_gain = "no gain is shown" if outcome == "none" else "one seed cannot show a gain"
        return f"The attribution loss is the arm's one difference from GRPO, and {moved}; {shown_gain}."
    if outcome == "helped":
        return f"The gain comes with the attribution loss, the arm's one difference from GRPO, and {moved}" + (
            ": the student attributed its calls more as the teacher does, and succeeded more."
            if known and fell(first, last)
            else ": the diagnostics do not explain it."
        )
    return f"The attribution loss, the arm's one difference from GRPO, cost accuracy, and {moved}" + (
        ": matching the teacher's attribution was bought at the expense of success."
        if known and fell(first, last)
        else "."
    )


def synthesis(outcome: str, rho: float, adds_ties: bool) -> str:
    """The closing sentence: the comparison's `outcome_class` read against the term's link to success (`rho`) and
    whether it broke more ties than the format reward alone (`adds_ties`, `term_adds_ties`)."""
    link = correlation_words(rho)
    aligned = math.isfinite(rho) and rho >= ALIGNED
    if outcome in ("none", "one_seed"):
        shown_gain = "no gain is shown" if outcome == "none" else "one seed cannot show a gain"
        if aligned:
            return (
                f"The term was {link}, yet {shown_gain}: the budget (or the ties it broke) was too small to move "
                "test accuracy beyond seed noise."
            )
        if adds_ties:
            return (
                f"So the term added a signal where GRPO's outcome reward and the format reward had none, but that "
                f"signal was {link}: it could not be expected to raise accuracy, and {shown_gain}."
            )
        return f"The term broke no more ties than the format reward alone and was {link}; {shown_gain}."
    if outcome == "helped":
        return f"The gain comes with a term that was {link}" + (
            ", as the mechanism predicts." if aligned else ": the diagnostics do not explain it."
        )
    if outcome == "hurt":
        return f"IAPO hurt while its term was {link}" + (
            ": the diagnostics do not explain it." if aligned else ": its signal did not point to what succeeds."
        )
    raise ValueError(f"unknown outcome {outcome!r}; expected one of {sorted(VERDICTS)}")
