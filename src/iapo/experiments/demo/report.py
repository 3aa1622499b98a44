"""The demo's report: `report.md` (tables and findings), `curves.png`; `report.json` is written by the run.

Everything here reads what the stages wrote (evaluation results, the regime measurement, each RL run's
`metrics.csv`) and turns it into tables and plain-language findings; nothing is trained or evaluated here.

    text = render(summary)      # summary: the dict the run writes as report.json
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from iapo.experiments.demo.stats import mean_std  # noqa: E402
from iapo.training.diagnostics import summarise_mechanism  # noqa: E402

STUDENT, TEACHER = "student (cold start)", "teacher (cold start, trained longer)"
GRPO, IAPO = "GRPO (from the cold-started student)", "IAPO (from the cold-started student)"
"""Row labels of the report."""

METHODS = {"grpo": GRPO, "iapo": IAPO}

DIAGNOSTICS = (
    ("reward/accuracy", "sampled accuracy (outcome reward)"),
    ("mechanism/outcome_zero_std", "groups with equal outcome rewards (no GRPO signal)"),
    ("mechanism/rescued_groups", "groups with equal outcomes whose total rewards differ (format or attribution term)"),
    ("mechanism/rank_corr_attribution_outcome", "within-group rank correlation, attribution term vs outcome"),
    ("attribution/divergence", "student–teacher divergence (KL of the block masses)"),
    ("tools/call_rate", "tool-call rate (share of trajectories)"),
    ("tools/success_rate", "tool success rate (share of calls)"),
)
"""The mechanism diagnostics summarised in every report (metric key, wording); the attribution mass of every block /
component is added from what was logged."""

CURVES = ("reward/accuracy", "tools/call_rate", "mechanism/outcome_zero_std", "attribution/divergence")


def read_history(path: Path) -> list[dict[str, float]]:
    """One dict per logged training step of a run's `metrics.csv` (empty cells left out)."""
    with open(path) as handle:
        return [
            {key: float(value) for key, value in row.items() if value not in ("", None)}
            for row in csv.DictReader(handle)
        ]


def training_summary(histories: dict[str, list[list[dict]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per method, per metric: the mean over seeds of `summarise_mechanism`'s first-quarter / last-quarter / whole-run
    means (seeds where the metric was never finite are left out)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for method, runs in histories.items():
        summaries = [summarise_mechanism(run) for run in runs]
        keys = sorted({key for summary in summaries for key in summary})
        out[method] = {}
        for key in keys:
            parts = {}
            for part in ("first", "last", "mean"):
                values = [s[key][part] for s in summaries if key in s and math.isfinite(s[key][part])]
                parts[part] = sum(values) / len(values) if values else math.nan
            out[method][key] = parts
    return out


def learning_curves(histories: dict[str, list[list[dict]]], path: Path) -> None:
    """Per-step `CURVES`, mean ± std over seeds, for each method."""
    figure, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3.4))
    colours = {"grpo": "tab:blue", "iapo": "tab:orange"}
    for method, runs in histories.items():
        for ax, metric in zip(axes, CURVES, strict=True):
            series = [[row[metric] for row in run if metric in row and math.isfinite(row[metric])] for run in runs]
            length = min((len(s) for s in series), default=0)
            if not length:
                continue
            curves = np.array([s[:length] for s in series])
            mean, std = curves.mean(0), curves.std(0)
            steps = np.arange(1, length + 1)
            ax.plot(steps, mean, label=method.upper(), color=colours[method])
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2, color=colours[method])
    for ax, metric in zip(axes, CURVES, strict=True):
        ax.set_xlabel("RL step")
        ax.set_title(metric, fontsize=9)
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def percent(value: float | None, digits: int = 1) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{100 * value:.{digits}f}"


def number(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def shown(key: str, value: float | None) -> str:
    """A diagnostic as the report prints it: a correlation with 2 decimals, a divergence in scientific notation
    (KL of block masses is often ~1e-4), anything else (shares, rates) in percent."""
    if value is None or not math.isfinite(value):
        return "–"
    if "rank_corr" in key:
        return f"{value:.2f}"
    if "divergence" in key:
        return f"{value:.2e}"
    return percent(value)


def percent_mean_std(values: list[float]) -> str:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return "–"
    mean, std = mean_std(finite)
    return percent(mean) if len(finite) == 1 else f"{percent(mean)} ± {percent(std)}"


def regime_table(regime: dict) -> list[str]:
    lines = [
        "| cold start (SFT steps) | sampled accuracy % | all-fail groups % | equal-outcome groups % | "
        "tool-call rate % | tool success % | answered % |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in regime["candidates"]:
        chosen = " **(chosen)**" if row["name"] == regime["chosen"] else ""
        lines.append(
            f"| {row['steps']}{chosen} | {percent(row['accuracy'])} | {percent(row['mechanism/all_fail'])} | "
            f"{percent(row['mechanism/outcome_zero_std'])} | {percent(row['tools/call_rate'])} | "
            f"{percent(row['tools/success_rate'])} | {percent(row['answered'])} |"
        )
    return lines


def cold_start_lines(diagnostics: dict, grpo_view: dict) -> list[str]:
    """The chosen cold start's diagnostics with the teacher's attribution (IAPO's view of step 0); `grpo_view` is the
    same cold start's regime measurement (GRPO's rewards), whose tie-breaking comes from the format reward alone."""
    lines = ["| diagnostic | value |", "|---|---|"]
    for key, wording in DIAGNOSTICS:
        value = diagnostics.get("accuracy" if key == "reward/accuracy" else key)
        lines.append(f"| {wording} | {shown(key, value)} |")
        if key == "mechanism/rescued_groups":
            lines.append(
                f"| the same with GRPO's rewards (format reward only) | {percent(grpo_view['mechanism/rescued_groups'])} |"
            )
    for side in ("student", "teacher"):
        masses = {k.rsplit("/", 1)[1]: v for k, v in diagnostics.items() if k.startswith(f"attribution/{side}_mass/")}
        if masses:
            masses_text = ", ".join(f"{k} {percent(v)}" for k, v in sorted(masses.items()))
            lines.append(f"| {side} attribution mass per component % | {masses_text} |")
    return lines


def results_table(rows: list[dict]) -> list[str]:
    lines = [
        "| model | tools | accuracy % | tool-call rate % | tool success % | turns |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        results = row["results"]
        turns = [r["mean_turns"] for r in results]
        lines.append(
            f"| {row['model']} | {'on' if row['tools'] else 'off'} | {percent_mean_std([r['accuracy'] for r in results])} "
            f"| {percent_mean_std([r['tool_call_rate'] for r in results])} "
            f"| {percent_mean_std([r['tool_success_rate'] for r in results])} | {sum(turns) / len(turns):.2f} |"
        )
    return lines


def paired_lines(paired: dict, seeds: list[int]) -> list[str]:
    lines = [
        "| tools | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | 95% CI (t) |",
        "|---|" + "---|" * (len(seeds) + 2),
    ]
    for tools, result in paired.items():
        cells = " | ".join(f"{100 * d:+.1f}" for d in result["differences"])
        lines.append(
            f"| {tools} | {cells} | {100 * result['mean']:+.1f} | "
            f"[{100 * result['low']:+.1f}, {100 * result['high']:+.1f}] |"
            if math.isfinite(result["low"])
            else f"| {tools} | {cells} | {100 * result['mean']:+.1f} | – (one seed) |"
        )
    return lines


def training_lines(summary: dict) -> list[str]:
    """First-quarter → last-quarter means over seeds of each diagnostic, per method."""
    methods = [m for m in ("grpo", "iapo") if m in summary]
    lines = [
        "| diagnostic | " + " | ".join(f"{m.upper()} first → last quarter" for m in methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    mass_keys = sorted({k for m in methods for k in summary[m] if k.startswith("attribution/") and "_mass/" in k})
    for key, wording in [*DIAGNOSTICS, *((k, k.split("/", 1)[1].replace("_", " ")) for k in mass_keys)]:
        cells = []
        for method in methods:
            entry = summary[method].get(key)
            if entry is None:
                cells.append("not computed")
                continue
            cells.append(f"{shown(key, entry['first'])} → {shown(key, entry['last'])}")
        lines.append(f"| {wording} | " + " | ".join(cells) + " |")
    return lines


def _accuracy(rows: list[dict], model: str, tools: bool) -> list[float]:
    for row in rows:
        if row["model"] == model and row["tools"] == tools:
            return [r["accuracy"] for r in row["results"]]
    raise KeyError(f"no row {model!r} tools={tools}")


def chosen_candidate(regime: dict) -> dict:
    return next(row for row in regime["candidates"] if row["name"] == regime["chosen"])


def findings(summary: dict) -> list[str]:
    """Plain-language reading of the numbers: the tool's use, the regime, IAPO against GRPO and why, by the
    diagnostics (every threshold is stated in the text)."""
    rows, regime, paired = summary["rows"], summary["regime"], summary["paired"]
    student_on, student_off = _accuracy(rows, STUDENT, True)[0], _accuracy(rows, STUDENT, False)[0]
    teacher_on, teacher_off = _accuracy(rows, TEACHER, True)[0], _accuracy(rows, TEACHER, False)[0]
    chosen = chosen_candidate(regime)
    grpo_on, iapo_on = mean_std(_accuracy(rows, GRPO, True)), mean_std(_accuracy(rows, IAPO, True))
    on = paired["tools on"]
    return [
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


def render(summary: dict) -> str:
    """`report.md` from the run's summary (`report.json`)."""
    settings, regime = summary["settings"], summary["regime"]
    seeds = settings["seeds"]
    lines = [
        f"# IAPO vs GRPO in miniature — {summary['title']}",
        "",
        summary["task"],
        "",
        "## Findings",
        "",
        *findings(summary),
        "",
        "## How the regime was chosen (training prompts only, before any test result)",
        "",
        f"One SFT run of `tiny-student` (mixed tool / direct expert trajectories, batch {settings['sft_batch']}, lr "
        f"{settings['sft_lr']:g}) was saved at each candidate budget and went on to {settings['teacher_steps']} steps "
        f"for the teacher. Each candidate was sampled on the first {settings['regime_prompts']} training prompts, "
        f"{settings['group_size']} samples each, at temperature {summary['temperature']:g} (the RL settings). "
        f"Chosen: {regime['reason']}.",
        "",
        *regime_table(regime),
        "",
        f"{summary['weight_reason']}.",
        "",
        "## Cold-start diagnostics (chosen student, teacher's attribution, training prompts)",
        "",
        *cold_start_lines(summary["cold_start_diagnostics"], chosen_candidate(regime)),
        "",
        "## Test results (held-out split, greedy)",
        "",
        f"RL: {settings['rl_steps']} steps of {settings['rl_prompts']} prompts × {settings['group_size']} samples "
        f"(temperature {summary['temperature']:g}; PPO-clip, mini-batches of {settings['rl_mini_batch']}, LoRA rank "
        f"{settings['lora_rank']}, lr {settings['rl_lr']:g}), seeds {seeds}, the same data order and budget for both "
        f"methods; test split of {settings['test_rows']} questions. Mean ± std over seeds where there are several.",
        "",
        *results_table(summary["rows"]),
        "",
        "### IAPO − GRPO, paired by seed (points of accuracy)",
        "",
        *paired_lines(summary["paired"], seeds),
        "",
        "## Mechanism over training (mean over seeds of each run's first and last quarter of steps)",
        "",
        *training_lines(summary["training"]),
        "",
        "![learning curves](curves.png)",
        "",
        "## Attribution before and after RL",
        "",
    ]
    for name, files in summary["pictures"].items():
        lines += [f"**{name}**", "", *(f"![{name}]({f})" for f in files), ""]
    lines += [f"Wall time: {summary['minutes']:.1f} min."]
    return "\n".join(lines) + "\n"
