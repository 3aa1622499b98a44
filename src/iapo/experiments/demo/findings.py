"""The report's findings: what the numbers show, in plain words, with every threshold stated — the premises, the
tool's use and the teacher, the regime, whether GRPO itself learned, optimisability, IAPO against GRPO (paired 95%
interval; greedy, and sampled as in RL), and why, by the mechanism diagnostics (`iapo.experiments.demo.diagnosis`).

Every sentence is one function of plain numbers (`tools_sentence`, `regime_sentence`, `grpo_gain_sentence`,
`optimisability_sentence` with `beyond_grpo_sentence`, `comparison_sentence`, `by_question_sentence`,
`sampled_findings`, and the diagnosis' sentences), each tested on constructed numbers on both sides of every
comparison it states (`tests/test_findings.py`); `findings` only reads the summary and calls them.

    lines = findings(summary)      # summary: the dict the run writes as report.json
"""

from __future__ import annotations

import math
import statistics

from iapo.experiments.demo.diagnosis import VERDICTS, mechanism_reading, outcome_class
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
    signed_interval,
)
from iapo.experiments.demo.premise import premise_checks, premise_verdict
from iapo.experiments.demo.stats import mean_std


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
        "- **IAPO vs GRPO.** "
        + (f"{summary['method']}. " if "method" in summary else "")
        + comparison_sentence(grpo_on, iapo_on, student[0], on),
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


def optimisability_beyond_grpo_shown(changes: list[dict]) -> bool:
    """Item 4 read against GRPO of the same seed: shown when, in every seed, the run's divergence at the last probe
    lies below GRPO's (each a paired `optimise.beyond_grpo` interval, its upper bound below 0). Unlike
    `optimisability_shown` it lets GRPO move the divergence, as it does either way, and asks the run to go further."""
    return bool(changes) and all(change_words(change) == "fell" for change in changes)


def beyond_grpo_sentence(result: dict) -> str:
    """The runs with the outcome at 0 against GRPO of the same seed at the last probe (`optimise.beyond_grpo`, where
    the result has it), and for which that shows optimisability (`optimisability_beyond_grpo_shown`)."""
    seeds, last = result["settings"]["seeds"], str(result["settings"]["steps"])
    read = {}
    for name in result["settings"]["runs"]:
        changes = [result["runs"][f"{name}-s{seed}"]["probe"][last].get("beyond_grpo") for seed in seeds]
        if not name.startswith("grpo") and all(changes):
            read[name] = changes
    if not read:
        return ""
    listed = "; ".join(f"{name} {', '.join(map(signed_interval, changes))}" for name, changes in read.items())
    shown = [name for name, changes in read.items() if optimisability_beyond_grpo_shown(changes)]
    verdict = (
        f"shown against GRPO for {', '.join(shown)}: below GRPO's divergence in every seed."
        if shown
        else "not shown against GRPO (it needs the run below GRPO's divergence in every seed)."
    )
    return (
        f" Against GRPO of the same seed (the divergence after the run minus after GRPO, paired per probe prompt, "
        f"95% bootstrap): {listed}; optimisability {verdict}"
    )


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
        listed = "; ".join(map(signed_interval, changes))
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
        + beyond_grpo_sentence(result)
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
