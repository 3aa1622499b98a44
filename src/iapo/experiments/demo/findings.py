"""The report's findings: what the numbers show, in plain words, with every threshold stated — the premises, the
tool's use and the teacher, the regime, whether GRPO itself learned, IAPO against GRPO (paired 95% interval; greedy,
and sampled as in RL), and why, by the mechanism diagnostics (the attribution term's rank correlation with success,
the ties it breaks beyond the format reward's, where each side's attribution mass lies, whether the divergence moved,
tool use).

Every sentence is one function of plain numbers (`tools_sentence`, `regime_sentence`, `grpo_gain_sentence`,
`optimisability_sentence`, `comparison_sentence`, `by_question_sentence`, `sampled_findings`,
`correlation_sentence`, `rescued_sentence`, `mass_sentence`, `divergence_sentence`, `call_rate_sentence`,
`synthesis`), each tested on constructed numbers on both sides of every comparison it states
(`tests/test_findings.py`); `findings` only reads the summary and calls them.

    lines = findings(summary)      # summary: the dict the run writes as report.json
"""

from __future__ import annotations

import math
import statistics

from iapo.experiments.demo.drift import drift_sentence
from iapo.experiments.demo.formatting import (
    GRPO,
    IAPO,
    STUDENT,
    TEACHER,
    accuracy_of,
    chosen_candidate,
    number,
    percent,
    points,
    signed,
)
from iapo.experiments.demo.premise import premise_checks, premise_verdict
from iapo.experiments.demo.stats import mean_std

DIVERGENCE_NAMES = {"kl": "KL", "jsd": "JSD", "cosine": "cosine distance"}
"""How a sentence names the run's divergence (`AttributionSettings.divergence`)."""

ALIGNED, RELATED = 0.3, 0.1
"""Rank-correlation thresholds of the findings: at least `ALIGNED`, the attribution term ranks a group's samples
much as success does; below `RELATED` in magnitude, it is unrelated to success."""

MOVED = 0.1
"""A divergence "fell" / "rose" when its last quarter is more than this fraction below / above its first."""

MAJORITY = 0.5
"""A side puts "most" of its attribution on a component when that component holds more than this share."""


def findings(summary: dict) -> list[str]:
    """Plain-language reading of the numbers: the premises, the tool's use, the regime, IAPO against GRPO and why,
    by the diagnostics (every threshold is stated in the text)."""
    rows, paired = summary["rows"], summary["paired"]
    student = accuracy_of(rows, STUDENT, True)[0], accuracy_of(rows, STUDENT, False)[0]
    teacher = accuracy_of(rows, TEACHER, True)[0], accuracy_of(rows, TEACHER, False)[0]
    grpo_on, iapo_on = mean_std(accuracy_of(rows, GRPO, True))[0], mean_std(accuracy_of(rows, IAPO, True))[0]
    on = paired["tools on"]
    premise = [premise_finding(summary["premise"])] if summary.get("premise") else []
    result = summary.get("optimisability")
    optimisable = (
        ["- **Optimisability.** " + optimisability_sentence(result) + " " + drift_sentence(result)] if result else []
    )
    return [
        *premise,
        "- **Tools and teacher.** " + tools_sentence(*student, *teacher),
        "- **Regime.** " + regime_sentence(chosen_candidate(summary["regime"])),
        "- **GRPO against the cold start.** "
        + grpo_gain_sentence(summary["grpo_gain"], student[0])
        + by_question_sentence(summary.get("greedy_by_question"), "greedy"),
        *optimisable,
        "- **IAPO vs GRPO.** " + comparison_sentence(grpo_on, iapo_on, student[0], on),
        *sampled_findings(summary.get("sampled")),
        "- **Why, by the diagnostics.** " + " ".join(mechanism_reading(summary, outcome_class(on))),
    ]


def correlation(rho: dict) -> str:
    return f"{number(rho['mean'], 2)} (95% CI [{number(rho['low'], 2)}, {number(rho['high'], 2)}])"


def replicated(premise: dict) -> str:
    """The chosen variant's correlation on the second prompt set, when one was read."""
    second = premise.get("replication")
    if not second:
        return ""
    return f", and {correlation(second['variants'][premise['chosen_variant']]['rho_success'])} on the second prompt set"


def premise_finding(premise: dict) -> str:
    """The premises in words: does the call decide the student's success (both thresholds of `premise_checks`),
    how often each model makes the right call, the chosen layout's correlation, and the verdict."""
    student, teacher = premise["student"], premise["teacher"]
    rho = premise["variants"][premise["chosen_variant"]]["rho_success"]
    checks = premise_checks(premise)
    decides = checks[0]["met"] and checks[1]["met"]
    return (
        f"- **Premises (training prompts, before RL).** The student succeeds in {percent(student['success_given_right'])}"
        f"% of its samples with a right call and {percent(student['success_given_wrong'])}% with a wrong one: the "
        f"call {'decides' if decides else 'does not decide'} its success (thresholds {checks[0]['threshold']} and "
        f"{checks[1]['threshold']}). It makes the right call in {percent(student['right_call_rate'])}% of its "
        f"samples, the teacher in {percent(teacher['right_call_rate'])}%. The {premise['chosen_variant']} term's "
        f"within-group rank correlation with success is {correlation(rho)}{replicated(premise)}. "
        f"{premise_verdict(checks)}"
    )


def gain_words(points: float) -> str:
    """What the tool does to a model's accuracy, `points` being the accuracy with it minus without (a fraction)."""
    if points > 0:
        return f"adds {100 * points:.1f} points for"
    if points < 0:
        return f"costs {100 * -points:.1f} points for"
    return "does not change the accuracy of"


def tools_sentence(student_on: float, student_off: float, teacher_on: float, teacher_off: float) -> str:
    """Test accuracy (greedy) of the teacher and the student with and without the tool: whether the teacher is
    stronger with the tool, and what the tool does for each."""
    stronger = "stronger" if teacher_on > student_on else "not stronger"
    return (
        f"On the test split (greedy) the teacher scores {percent(teacher_on)}% with the tool and "
        f"{percent(teacher_off)}% without; the cold-started student {percent(student_on)}% and {percent(student_off)}%. "
        f"The teacher is {stronger} than the student with the tool, and the tool {gain_words(teacher_on - teacher_off)} "
        f"the teacher and {gain_words(student_on - student_off)} the student."
    )


def regime_sentence(chosen: dict) -> str:
    """The chosen (or given: `steps` None) cold start's sampled accuracy and its tied groups (equal outcomes: no GRPO
    signal)."""
    which = (
        "the given cold start" if chosen["steps"] is None else f"the chosen cold start ({chosen['steps']} SFT steps)"
    )
    return (
        f"At {which}, sampled on training prompts at the RL temperature, "
        f"accuracy is {percent(chosen['accuracy'])}% and {percent(chosen['mechanism/outcome_zero_std'])}% of the groups "
        f"have equal outcome rewards ({percent(chosen['mechanism/all_fail'])}% all fail): GRPO's outcome reward gives "
        "those groups no signal."
    )


def grpo_gain_sentence(gain: dict, cold_start: float, metric: str = "test accuracy with tools") -> str:
    """Whether GRPO itself learned: its test accuracy with tools minus the cold start's, per seed (`gain`, a
    `paired_difference` of GRPO's seeds against the cold start), with its 95% interval over seeds. A comparison of
    IAPO with GRPO tests the term only where GRPO learns at the budget."""
    if gain["n"] < 2:
        return f"GRPO − cold start {100 * gain['mean']:+.1f} points (one seed: no interval)."
    if gain["low"] > 0:
        reading = "the interval lies above 0: GRPO learned at this budget"
    elif gain["high"] < 0:
        reading = "the interval lies below 0: GRPO lost accuracy at this budget"
    else:
        reading = "the interval contains 0: GRPO's gain is not shown at this budget"
    return (
        f"GRPO − cold start ({metric}, cold start {percent(cold_start)}%): {100 * gain['mean']:+.1f} "
        f"points over {gain['n']} seeds, 95% CI [{100 * gain['low']:+.1f}, {100 * gain['high']:+.1f}] "
        f"(per seed {', '.join(f'{100 * d:+.1f}' for d in gain['differences'])}): {reading}."
    )


def interval_side(interval: dict) -> str:
    """Where a 95% interval lies with respect to 0."""
    if interval["low"] > 0:
        return "above 0"
    return "below 0" if interval["high"] < 0 else "contains 0"


def by_question_sentence(by_question: dict | None, metric: str) -> str:
    """GRPO − cold start and IAPO − GRPO over the test questions (`by_question`: bootstrap intervals of the
    per-question difference of seed means): the test set's sampling, which the intervals over seeds do not carry.
    Empty when not measured (evaluations that kept no per-question scores)."""
    if not by_question or not by_question.get("grpo_gain") or not by_question.get("paired"):
        return ""
    gain, paired = by_question["grpo_gain"], by_question["paired"]
    return (
        f" Over the {gain['n']} test questions ({metric}, 95% bootstrap interval): GRPO − cold start {points(gain)} "
        f"points ({interval_side(gain)}), IAPO − GRPO {points(paired)} ({interval_side(paired)})."
    )


def change_words(change: dict) -> str:
    """A paired change (a `bootstrap_mean` result) read by its 95% interval: fell, rose, did not move, or not
    measured (fewer than two prompts with an attributed sample)."""
    if change["n"] < 2 or not math.isfinite(change["low"]):
        return "not measured"
    return "fell" if change["high"] < 0 else "rose" if change["low"] > 0 else "did not move"


def optimisability_shown(term: list[str], grpo: list[str]) -> bool:
    """Item 4 is shown when the term alone's divergence fell in every seed and GRPO's in none (each a
    `change_words` reading of the last probe)."""
    return bool(term) and all(w == "fell" for w in term) and not any(w == "fell" for w in grpo)


def optimisability_sentence(result: dict) -> str:
    """Item 4 in words: per seed, the change of the divergence to the teacher on the fixed probe, from the cold start
    to the last probed step, of each run with the outcome weight at 0 (those of `result["settings"]["runs"]` whose
    name does not start with `grpo`: the term as a reward, or the attribution loss) and of GRPO, each with its
    paired 95% interval, and for which of them that shows the divergence can be optimised (`optimisability_shown`)."""
    seeds, last = result["settings"]["seeds"], str(result["settings"]["steps"])
    outcome_free = [name for name in result["settings"]["runs"] if not name.startswith("grpo")]

    def read(name: str) -> tuple[str, list[str]]:
        changes = [result["runs"][f"{name}-s{seed}"]["probe"][last]["divergence"]["change"] for seed in seeds]
        words = [change_words(c) for c in changes]
        listed = "; ".join(f"{signed(c['mean'])} [{signed(c['low'])}, {signed(c['high'])}]" for c in changes)
        return f"{name} by {listed} ({', '.join(words)})", words

    grpo_text, grpo_words = read("grpo")
    runs = {name: read(name) for name in outcome_free}
    shown = [name for name, (_, words) in runs.items() if optimisability_shown(words, grpo_words)]
    return (
        f"With the outcome weight at 0, the divergence to the teacher on a fixed probe of "
        f"{result['settings']['probe']['prompts']} training prompts changed from the cold start's "
        f"{number(result['cold_start']['divergence'], 4)} after {last} steps (seeds {seeds}): "
        f"{'; '.join(text for text, _ in runs.values())}; under GRPO of the same budget, {grpo_text}. "
        + (
            f"Optimisability shown for {', '.join(shown)}: its divergence fell in every seed and GRPO's in none."
            if shown
            else "Optimisability is not shown (it needs a run's divergence to fall in every seed and GRPO's in none)."
        )
    )


def sampled_findings(sampled: dict | None) -> list[str]:
    """The GRPO-gain and comparison sentences on test accuracy sampled as in RL (none when not measured)."""
    if not sampled:
        return []
    metric = f"{sampled['samples_per_question']} samples per question at temperature {sampled['temperature']:g}"
    grpo, iapo = statistics.fmean(sampled["grpo"]), statistics.fmean(sampled["iapo"])
    return [
        f"- **Sampled as in RL ({metric}).** "
        + grpo_gain_sentence(sampled["grpo_gain"], sampled["student"], "sampled test accuracy with tools")
        + " "
        + comparison_sentence(grpo, iapo, sampled["student"], sampled["paired"], "Sampled test accuracy")
        + by_question_sentence(sampled.get("by_question"), "sampled")
    ]


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


def verdict(paired: dict) -> str:
    return VERDICTS[outcome_class(paired)]


def comparison_sentence(
    grpo: float, iapo: float, cold_start: float, paired: dict, metric: str = "Test accuracy with tools"
) -> str:
    """`metric` of both methods (seed means) and the cold start, the paired difference with its interval, and the
    verdict."""
    interval = f", 95% CI [{100 * paired['low']:+.1f}, {100 * paired['high']:+.1f}]" if paired["n"] > 1 else ""
    return (
        f"{metric}: GRPO {percent(grpo)}%, IAPO {percent(iapo)}% (means of {paired['n']} seeds; the "
        f"cold start: {percent(cold_start)}%); paired difference IAPO − GRPO {100 * paired['mean']:+.1f} points"
        f"{interval}: {verdict(paired)}."
    )


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
    moved = "fell" if last < (1 - MOVED) * first else "rose" if last > (1 + MOVED) * first else "did not move"
    name = DIVERGENCE_NAMES.get(divergence, divergence)
    return (
        f"Under IAPO the {name} divergence {moved} (threshold ±{100 * MOVED:.0f}%): {first:.2e} → {last:.2e} "
        "(first → last quarter)."
    )


def call_rate_sentence(calls: dict[str, dict]) -> str:
    """Tool-call rate over training, first → last quarter, per method, with its direction."""

    def direction(c: dict) -> str:
        return "rose" if c["last"] > c["first"] else "fell" if c["last"] < c["first"] else "did not change"

    return (
        "Tool-call rate over training: "
        + ", ".join(
            f"{m.upper()} {percent(c['first'])}% → {percent(c['last'])}% ({direction(c)})" for m, c in calls.items()
        )
        + "."
    )


def mechanism_reading(summary: dict, outcome: str) -> list[str]:
    """Sentences on whether IAPO's term could help, from the summary: correlation, ties, masses, divergence, tool
    use, then `synthesis` (`outcome`: `outcome_class` of the paired comparison)."""
    cold, training = summary["cold_start_diagnostics"], summary["training"]
    iapo = training.get("iapo", {})
    divergence = summary.get("settings", {}).get("attribution", {}).get("divergence", "kl")
    rho = cold.get("mechanism/rank_corr_attribution_outcome", math.nan)
    run = iapo.get("mechanism/rank_corr_attribution_outcome", {})
    sentences = [correlation_sentence(rho, int(cold.get("mechanism/rank_corr_groups", 0)), run)]
    format_only = chosen_candidate(summary["regime"])["mechanism/rescued_groups"]
    with_term = cold.get("mechanism/rescued_groups", math.nan)
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
    moved = iapo.get("attribution/divergence", {})
    first, last = moved.get("first", math.nan), moved.get("last", math.nan)
    if math.isfinite(first) and math.isfinite(last):
        sentences.append(divergence_sentence(divergence, first, last))
    calls = {m: training.get(m, {}).get("tools/call_rate", {}) for m in ("grpo", "iapo")}
    if all(calls.values()):
        sentences.append(call_rate_sentence(calls))
    run_rho = run.get("mean", math.nan)
    sentences.append(
        synthesis(outcome, run_rho if math.isfinite(run_rho) else rho, term_adds_ties(with_term, format_only))
    )
    return sentences


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
