"""The demo's `report.md`: the findings, the regime and cold-start tables, test results, paired differences and the
mechanism diagnostics over training, from the summary the run writes as `report.json` (nothing is trained or
evaluated here).

    text = render(summary)
"""

from __future__ import annotations

import math

from iapo.experiments.demo.findings import findings
from iapo.experiments.demo.formatting import (
    DIAGNOSTICS,
    TRAINING_ONLY,
    chosen_candidate,
    number,
    percent,
    percent_mean_std,
    points,
    shown,
    signed,
    signed_interval,
)
from iapo.experiments.demo.premise import premise_checks


def regime_table(regime: dict) -> list[str]:
    """The candidate cold starts as the regime measured them (with the call's columns where a right call is
    defined)."""
    calls = all("calls/right_call_rate" in row for row in regime["candidates"])
    call_header = " right calls % | P(success \\| right call) % |" if calls else ""
    lines = [
        "| cold start (SFT steps) | sampled accuracy % | all-fail groups % | equal-outcome groups % | "
        f"tool-call rate % | tool failures per call % | answered % |{call_header}",
        "|---|---|---|---|---|---|---|" + ("---|---|" if calls else ""),
    ]
    for row in regime["candidates"]:
        chosen = " **(chosen)**" if row["name"] == regime["chosen"] else ""
        call_cells = (
            f" {percent(row['calls/right_call_rate'])} | {percent(row['calls/success_given_right'])} |" if calls else ""
        )
        lines.append(
            f"| {row['name'] if row['steps'] is None else row['steps']}{chosen} | {percent(row['accuracy'])} | "
            f"{percent(row['mechanism/all_fail'])} | "
            f"{percent(row['mechanism/outcome_zero_std'])} | {percent(row['tools/call_rate'])} | "
            f"{percent(row['tools/failure_frequency'])} | {percent(row['answered'])} |{call_cells}"
        )
    return lines


def cold_start_lines(diagnostics: dict, grpo_view: dict) -> list[str]:
    """The chosen cold start's diagnostics with the teacher's attribution (IAPO's view of step 0); `grpo_view` is the
    same cold start's regime measurement (GRPO's rewards), whose tie-breaking comes from the format reward alone."""
    lines = ["| diagnostic | value |", "|---|---|"]
    for key, wording in DIAGNOSTICS:
        value = diagnostics.get("accuracy" if key == "rewards/accuracy/mean" else key)
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


def interval(result: dict) -> str:
    """A bootstrap mean with its 95% interval and the number of groups it averages."""
    if not result["n"]:
        return "– (no group with varying values)"
    return (
        f"{number(result['mean'], 2)} [{number(result['low'], 2)}, {number(result['high'], 2)}] ({result['n']} groups)"
    )


def premise_lines(premise: dict) -> list[str]:
    """The premises measured before RL: the checks with their thresholds, whether the call decides success for the
    student and the teacher, and every attribution layout's rank correlations with the chosen one."""
    lines = ["| premise | value | threshold | met |", "|---|---|---|---|"]
    for check in premise_checks(premise):
        value = check["value"]
        shown_value = f"{value:g}" if check["name"] == "groups measured" else number(value, 2)
        name = check["name"].replace("|", "\\|")  # a pipe would end the table cell
        lines.append(f"| {name} | {shown_value} | {check['threshold']} | {'yes' if check['met'] else 'no'} |")
    sets = [("", premise)] + ([(" (second set)", premise["replication"])] if "replication" in premise else [])
    lines += [
        "",
        "| model | tool-call rate % | right calls % (of all) | right calls % (of calls) | P(success \\| right call) % "
        "| P(success \\| wrong call) % | sampled success % | all-fail groups % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for suffix, measured in sets:
        for model in ("student", "teacher"):
            row = measured[model]
            lines.append(
                f"| {model}{suffix} | {percent(row['call_rate'])} | {percent(row['right_call_rate'])} | "
                f"{percent(row['right_of_calls'])} | {percent(row['success_given_right'])} | "
                f"{percent(row['success_given_wrong'])} | {percent(row['success'])} | {percent(row['all_fail'])} |"
            )
    lines += [
        "",
        "| attribution layout | ρ(term, success), 95% CI | ρ(term, right call), 95% CI | student mass % | teacher mass % |",
        "|---|---|---|---|---|",
    ]
    for suffix, measured in sets:
        for name, row in measured["variants"].items():
            chosen = " **(chosen)**" if name == premise["chosen_variant"] and not suffix else ""
            masses = [
                ", ".join(f"{k} {percent(v)}" for k, v in sorted(row["masses"][side].items()))
                for side in ("student", "teacher")
            ]
            lines.append(
                f"| {name}{chosen}{suffix}: {row['description']} | {interval(row['rho_success'])} | "
                f"{interval(row['rho_right_call'])} | {masses[0]} | {masses[1]} |"
            )
    lines += ["", f"Layout for the RL runs: {premise['variant_reason']}."]
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


def paired_lines(paired: dict, seeds: list[int], first: str = "tools") -> list[str]:
    lines = [
        f"| {first} | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | 95% CI (t) |",
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
    logged = [(k, wording) for k, wording in TRAINING_ONLY if any(k in summary[m] for m in methods)]
    for key, wording in [*DIAGNOSTICS, *logged, *((k, k.split("/", 1)[1].replace("_", " ")) for k in mass_keys)]:
        cells = []
        for method in methods:
            entry = summary[method].get(key)
            if entry is None:
                cells.append("not computed")
                continue
            cells.append(f"{shown(key, entry['first'])} → {shown(key, entry['last'])}")
        lines.append(f"| {wording} | " + " | ".join(cells) + " |")
    return lines


def premise_intro(premise: dict) -> str:
    """How the premises were measured: which prompts, how many samples, temperature and seed (of each set)."""

    def prompts(measured: dict) -> str:
        first = measured["offset"]
        return f"training prompts {first}–{first + measured['prompts'] - 1} (seed {measured['seed']})"

    second = premise.get("replication")
    return (
        f"The chosen student and the teacher, each sampled on {prompts(premise)}"
        + (f" and again on {prompts(second)}" if second else "")
        + f" (after the regime's), {premise['group_size']} samples each at temperature {premise['temperature']:g}; a "
        "right call edits exactly the asked bar (its label box); intervals: percentile bootstrap over groups"
        + (
            "; the layout is chosen from both sets, the checks on the first (the correlation on both)."
            if second
            else "."
        )
    )


def teacher_lineage(settings: dict) -> str:
    """The run the teacher was trained on from: the student's, or one of its own (`teacher_call_accuracy`)."""
    share = settings.get("teacher_call_accuracy")
    if share is None:
        return "that run"
    return f"a run of its own as long (the asked bar named in {percent(share, 0)}% of the tool demonstrations)"


def regime_paragraph(settings: dict, regime: dict, temperature: float) -> str:
    """How the cold starts and the teacher were trained and how the regime was chosen (from the run's settings)."""
    if settings.get("given_student"):
        return (
            f"The cold start was given, not trained here: student `{settings['given_student']}`, teacher "
            f"`{settings['given_teacher']}`. The student was sampled on the first {settings['regime_prompts']} "
            f"training prompts, {settings['group_size']} samples each, at temperature {temperature:g} (the RL "
            "settings)."
        )
    return (
        f"One SFT run of `tiny-student` ({settings['sft_expert']} expert trajectories whose edit names the asked bar "
        f"in {percent(settings['sft_call_accuracy'], 0)}% of the tool demonstrations, batch {settings['sft_batch']}, "
        f"lr {settings['sft_lr']:g}) was saved at each candidate budget; the teacher is {teacher_lineage(settings)} "
        f"trained on to {settings['teacher_steps']} steps with {settings['teacher_expert']} demonstrations that always "
        "name it. "
        f"Each candidate was sampled on the first {settings['regime_prompts']} training prompts, "
        f"{settings['group_size']} samples each, at temperature {temperature:g} (the RL settings). "
        f"Chosen: {regime['reason']}."
    )


def premise_section(summary: dict) -> list[str]:
    premise = summary.get("premise")
    if not premise:
        return []
    return [
        "## Premises, measured before RL (training prompts only)",
        "",
        premise_intro(premise),
        "",
        *premise_lines(premise),
        "",
    ]


def probed(entry: dict) -> str:
    """A probed quantity: its mean and its paired change from the cold start with the 95% interval."""
    change = entry["change"]
    return f"{number(entry['mean'], 4)} ({signed(change['mean'])} [{signed(change['low'])}, {signed(change['high'])}])"


def optimisability_section(summary: dict) -> list[str]:
    """Item 4: the optimisability runs' probe at each probed step against the cold start, and their plot."""
    result = summary.get("optimisability")
    if not result:
        return []
    settings, cold = result["settings"], result["cold_start"]
    lines = [
        "## Optimisability: the attribution term alone against GRPO (training prompts, fixed probe)",
        "",
        f"Runs {', '.join(settings['runs'])} for seeds {settings['seeds']}: {settings['steps']} steps of "
        f"{settings['prompts']} prompts, lr {settings['lr']:g}, KL to the reference β {settings['kl_beta']:g}, the "
        f"{settings['variant']} layout. Probe: training prompts {settings['probe']['offset']}–"
        f"{settings['probe']['offset'] + settings['probe']['prompts'] - 1}, sampled with one seed by the cold start "
        "and by each saved adapter; a change is paired per prompt (bootstrap 95% interval), the divergence over the "
        "prompts with an attributed sample both times. Cold start: divergence "
        f"{number(cold['divergence'], 4)}, tool-call rate {number(cold['call'], 3)}, right calls "
        f"{number(cold['right_call'], 3)}, success {number(cold['success'], 3)}.",
        "",
        "| run | step | divergence (change [95% CI]) | minus GRPO's of the seed | of it: which calls / how attributed "
        "| tool-call rate | right calls | sampled success | ρ(term, success) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, run in result["runs"].items():
        for step, probe in run["probe"].items():
            shift, rho = probe.get("shift") or {}, probe.get("rho_success") or {}
            against_grpo = signed_interval(probe["beyond_grpo"]) if probe.get("beyond_grpo") else "—"
            lines.append(
                f"| {name} | {step} | {probed(probe['divergence'])} | {against_grpo} | "
                f"{signed(shift.get('which_calls'))} / {signed(shift.get('how_attributed'))} | "
                f"{probed(probe['call'])} | {probed(probe['right_call'])} | {probed(probe['success'])} | "
                f"{number(rho.get('mean'), 2)} |"
            )
    return [*lines, "", "![optimisability](optimise/optimise.png)", ""]


def gain_section(summary: dict, seeds: list[int]) -> list[str]:
    """GRPO against the cold start (greedy, and sampled as in RL where measured) and IAPO − GRPO sampled, paired by
    seed, with the sampled accuracies."""
    comparisons = {"GRPO − cold start (greedy)": summary["grpo_gain"]}
    sampled = summary.get("sampled")
    lines = ["### GRPO against the cold start; sampled as in RL (points of accuracy, tools on)", ""]
    if sampled:
        comparisons["GRPO − cold start (sampled)"] = sampled["grpo_gain"]
        comparisons["IAPO − GRPO (sampled)"] = sampled["paired"]
        lines += [
            f"Sampled: {sampled['samples_per_question']} trajectories per test question at temperature "
            f"{sampled['temperature']:g} (sampling seed 0), the mean outcome. Cold start "
            f"{percent(sampled['student'])}%, teacher {percent(sampled['teacher'])}%, GRPO {percent_mean_std(sampled['grpo'])}%, IAPO "
            f"{percent_mean_std(sampled['iapo'])}% (mean ± std over seeds).",
            "",
        ]
    lines += [*paired_lines(comparisons, seeds, first="comparison"), ""]
    if sampled and "by_question" in sampled:
        by_question = sampled["by_question"]
        lines += [
            "Sampled, over test questions instead of seeds (bootstrap 95% interval of the per-question difference of "
            f"seed means, {by_question['grpo_gain']['n']} questions): GRPO − cold start "
            f"{points(by_question['grpo_gain'])}, IAPO − GRPO {points(by_question['paired'])}.",
            "",
        ]
    greedy = summary.get("greedy_by_question")
    if greedy:
        lines += [
            f"Greedy, over the {greedy['grpo_gain']['n']} test questions in the same way: GRPO − cold start "
            f"{points(greedy['grpo_gain'])}, IAPO − GRPO {points(greedy['paired'])}.",
            "",
        ]
    return lines


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
        regime_paragraph(settings, regime, summary["temperature"]),
        "",
        *regime_table(regime),
        "",
        f"{summary['weight_reason']}. {summary['method']}.",
        "",
        *premise_section(summary),
        *optimisability_section(summary),
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
        *gain_section(summary, seeds),
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
    lines += [
        f"Wall time of the invocation that wrote this report: {summary['minutes']:.1f} min (a rerun into the same "
        "folder reads back the stages already done, so it counts only what it ran)."
    ]
    return "\n".join(lines) + "\n"
