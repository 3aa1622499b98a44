"""The report's findings: what the numbers show, in plain words, with every threshold stated — the tool's use and
the teacher, the regime, IAPO against GRPO (paired 95% interval), and why, by the mechanism diagnostics (the
attribution term's rank correlation with success, the ties it breaks beyond the format reward's, where the
attribution mass lies, whether the divergence moved, tool use).

    lines = findings(summary)      # summary: the dict the run writes as report.json
"""

from __future__ import annotations

import math

from iapo.experiments.demo.formatting import (
    GRPO,
    IAPO,
    STUDENT,
    TEACHER,
    accuracy_of,
    chosen_candidate,
    number,
    percent,
    shown,
)
from iapo.experiments.demo.premise import premise_checks, premise_verdict
from iapo.experiments.demo.stats import mean_std


def findings(summary: dict) -> list[str]:
    """Plain-language reading of the numbers: the tool's use, the regime, IAPO against GRPO and why, by the
    diagnostics (every threshold is stated in the text)."""
    rows, regime, paired = summary["rows"], summary["regime"], summary["paired"]
    student_on, student_off = accuracy_of(rows, STUDENT, True)[0], accuracy_of(rows, STUDENT, False)[0]
    teacher_on, teacher_off = accuracy_of(rows, TEACHER, True)[0], accuracy_of(rows, TEACHER, False)[0]
    chosen = chosen_candidate(regime)
    grpo_on, iapo_on = mean_std(accuracy_of(rows, GRPO, True)), mean_std(accuracy_of(rows, IAPO, True))
    on = paired["tools on"]
    premise = [premise_finding(summary["premise"])] if summary.get("premise") else []
    return [
        *premise,
        f"- **Tools and teacher.** On the test split (greedy) the teacher scores {percent(teacher_on)}% with the tool "
        f"and {percent(teacher_off)}% without; the cold-started student {percent(student_on)}% and "
        f"{percent(student_off)}%. The teacher is {'stronger' if teacher_on > student_on else 'not stronger'} than "
        f"the student with the tool, and the tool {gain_words(teacher_on - teacher_off)} the teacher and "
        f"{gain_words(student_on - student_off)} the student.",
        f"- **Regime.** At the chosen cold start ({chosen['steps']} SFT steps), sampled on training prompts at the RL "
        f"temperature, accuracy is {percent(chosen['accuracy'])}% and {percent(chosen['mechanism/outcome_zero_std'])}% "
        f"of the groups have equal outcome rewards ({percent(chosen['mechanism/all_fail'])}% all fail): GRPO's "
        "outcome reward gives those groups no signal.",
        f"- **IAPO vs GRPO.** Test accuracy with tools: GRPO {percent(grpo_on[0])}%, IAPO {percent(iapo_on[0])}% "
        f"(means of {on['n']} seeds; the cold start: {percent(student_on)}%); paired difference IAPO − GRPO "
        f"{100 * on['mean']:+.1f} points"
        + (f", 95% CI [{100 * on['low']:+.1f}, {100 * on['high']:+.1f}]" if on["n"] > 1 else "")
        + f": {verdict(on)}.",
        "- **Why, by the diagnostics.** " + " ".join(mechanism_reading(summary, verdict(on))),
    ]


def premise_finding(premise: dict) -> str:
    """The premises in words: does the call decide the student's success (both thresholds of `premise_checks`),
    does the teacher make it, which layout's term ranks samples as success does, and the verdict."""
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
        f"within-group rank correlation with success is {number(rho['mean'], 2)} (95% CI [{number(rho['low'], 2)}, "
        f"{number(rho['high'], 2)}]). {premise_verdict(checks)}"
    )


def gain_words(points: float) -> str:
    return f"adds {100 * points:.1f} points for" if points > 0 else f"costs {100 * -points:.1f} points for"


def verdict(paired: dict) -> str:
    if paired["n"] < 2:
        return "one seed cannot separate them"
    if paired["low"] > 0:
        return "the 95% interval lies above 0: IAPO helped"
    if paired["high"] < 0:
        return "the 95% interval lies below 0: IAPO hurt"
    return "the 95% interval contains 0: no difference shown"


ALIGNED, RELATED = 0.3, 0.1
"""Rank-correlation thresholds of the findings: at least `ALIGNED`, the attribution term ranks a group's samples
much as success does; below `RELATED` in magnitude, it is unrelated to success."""


def correlation_words(rho: float) -> str:
    if rho >= ALIGNED:
        return "aligned with success"
    if rho >= RELATED:
        return "weakly aligned with success"
    if rho > -RELATED:
        return "unrelated to success"
    return "at odds with success"


def mechanism_reading(summary: dict, outcome: str) -> list[str]:
    """Sentences on whether IAPO's term could help: its correlation with success, the ties it breaks (beyond the
    format reward's), where the attribution mass lies, whether the divergence moved, and tool use."""
    cold, training = summary["cold_start_diagnostics"], summary["training"]
    iapo = training.get("iapo", {})
    sentences = []
    rho = cold.get("mechanism/rank_corr_attribution_outcome", math.nan)
    run = iapo.get("mechanism/rank_corr_attribution_outcome", {})
    rho_run = run.get("mean", math.nan)
    if not math.isfinite(rho) and not math.isfinite(rho_run):
        sentences.append(
            "No group had both varying outcomes and varying attribution terms, so the term's link to success could "
            "not be measured."
        )
    else:
        sentences.append(
            f"Within groups, the attribution term's rank correlation with the outcome is {number(rho, 2)} at the cold "
            f"start ({int(cold.get('mechanism/rank_corr_groups', 0))} groups) and {number(rho_run, 2)} over IAPO's "
            f"training (first quarter {number(run.get('first'), 2)}, last {number(run.get('last'), 2)}): the term is "
            f"{correlation_words(rho_run if math.isfinite(rho_run) else rho)} (thresholds ±{RELATED:g} and "
            f"{ALIGNED:g})."
        )
    format_only = chosen_candidate(summary["regime"])["mechanism/rescued_groups"]
    sentences.append(
        f"At the cold start the term makes rewards differ in {percent(cold.get('mechanism/rescued_groups'))}% of the "
        f"groups (of {percent(cold.get('mechanism/outcome_zero_std'))}% with equal outcomes), where the format reward "
        f"alone already does in {percent(format_only)}%; over IAPO's training, "
        f"{percent(iapo.get('mechanism/rescued_groups', {}).get('mean'))}% of the groups."
    )
    masses = {
        side: {k.rsplit("/", 1)[1]: v for k, v in cold.items() if k.startswith(f"attribution/{side}_mass/")}
        for side in ("student", "teacher")
    }
    if all(masses.values()):
        top = max(masses["teacher"], key=masses["teacher"].get)
        sentences.append(
            f"Student and teacher both put most of the attribution on {top} ({percent(masses['student'][top], 0)}% and "
            f"{percent(masses['teacher'][top], 0)}%), so the divergence measures small shifts among the other "
            f"components (KL {shown('attribution/divergence', cold.get('attribution/divergence'))} at the cold start)."
        )
    divergence = iapo.get("attribution/divergence", {})
    first, last = divergence.get("first", math.nan), divergence.get("last", math.nan)
    if math.isfinite(first) and math.isfinite(last):
        moved = "fell" if last < 0.9 * first else "rose" if last > 1.1 * first else "did not move (within 10%)"
        sentences.append(f"Under IAPO the divergence {moved}: {first:.2e} → {last:.2e} (first → last quarter).")
    calls = {m: training.get(m, {}).get("tools/call_rate", {}) for m in ("grpo", "iapo")}
    if all(calls.values()):
        sentences.append(
            "Tool-call rate over training: "
            + ", ".join(f"{m.upper()} {percent(c['first'])}% → {percent(c['last'])}%" for m, c in calls.items())
            + "."
        )
    sentences.append(synthesis(outcome, rho_run if math.isfinite(rho_run) else rho))
    return sentences


def synthesis(outcome: str, rho: float) -> str:
    """The closing sentence: the comparison's verdict read against the term's link to success."""
    link = correlation_words(rho) if math.isfinite(rho) else "of unknown relation to success"
    if "no difference" in outcome or "one seed" in outcome:
        if math.isfinite(rho) and rho >= ALIGNED:
            return (
                f"The term was {link}, yet no gain is shown: the budget (or the ties it broke) was too small to move "
                "test accuracy beyond seed noise."
            )
        return (
            f"So the term added a signal where GRPO's outcome reward had none, but that signal was {link}: it could "
            "not be expected to raise accuracy, and no gain is shown."
        )
    if "helped" in outcome:
        return f"The gain comes with a term that was {link}" + (
            ", as the mechanism predicts." if rho >= ALIGNED else ": the diagnostics do not explain it."
        )
    return f"IAPO hurt while its term was {link}: the term's signal pulled the policy away from what succeeds."
