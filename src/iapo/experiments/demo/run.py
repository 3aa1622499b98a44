"""The demo from start to report: cold start → regime → premise → optimisability → evaluations → GRPO and IAPO
over seeds → report (`run(settings)`; its command line is `cli.py`).

The RL runs (one per method and seed) are independent: `--workers` of them run at once in separate processes (one
per core; each evaluates its own model too). Every stage's output is cached under `--out`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from iapo.experiments.demo import stages
from iapo.experiments.demo.compare import greedy_by_question, of_method, sampled_results, versus_cold_start
from iapo.experiments.demo.curves import learning_curves, read_history, training_summary
from iapo.experiments.demo.formatting import METHODS, STUDENT, TEACHER
from iapo.experiments.demo.measure import replicated_premise, variant_settings
from iapo.experiments.demo.optimise import ProbeSettings, RunSettings, optimisability
from iapo.experiments.demo.premise import plain_premises
from iapo.experiments.demo.regime import choose_candidate, choose_weight, sample_diagnostics
from iapo.experiments.demo.report import render
from iapo.experiments.demo.settings import DemoSettings
from iapo.experiments.demo.stats import paired_difference
from iapo.models import ModelNotFoundError
from iapo.models.loader import ModelSettings, resolve_model_path

GIVEN = "given"
"""The name of a given cold start among the regime's candidates."""


def regime_stage(settings: DemoSettings, paths: dict[str, Path]) -> dict:
    """Measure every candidate cold start of `paths` (`step-<n>`, or the one `given`) on training prompts, choose
    one (`choose_candidate`), measure it again with the teacher's attribution (the cold-start diagnostics) and set
    λ; cached in `regime.json`."""
    path = settings.out / "regime.json"
    if path.is_file():
        stages.say(f"regime: reusing {path}")
        return json.loads(path.read_text())
    candidates = []
    for name, steps in candidate_names(settings).items():
        row = sample_diagnostics(settings, paths[name])
        candidates.append({"name": name, "steps": steps, **row})
        reading = (
            f", P(success | right call) {row['calls/success_given_right']:.2f}"
            if "calls/right_call_rate" in row
            else ""
        )
        stages.say(
            f"regime: {name}: sampled accuracy {row['accuracy']:.2f}, all-fail groups "
            f"{row['mechanism/all_fail']:.2f}, tool-call rate {row['tools/call_rate']:.2f}{reading}"
        )
    if settings.given_student is None:
        index, reason = choose_candidate(
            candidates, settings.min_accuracy, settings.min_call_rate, settings.min_reading
        )
    else:
        index, reason = 0, "the given student (measured, not chosen)"
    chosen = candidates[index]["name"]
    diagnostics = sample_diagnostics(settings, paths[chosen], teacher=paths["teacher"])
    if settings.attribution_weight is None:
        weight, weight_reason = choose_weight(diagnostics)
    else:
        weight, weight_reason = settings.attribution_weight, f"λ = {settings.attribution_weight:g}, as given"
    regime = {
        "candidates": candidates,
        "chosen": chosen,
        "reason": reason,
        "diagnostics": diagnostics,
        "weight": weight,
        "weight_reason": weight_reason,
    }
    path.write_text(json.dumps(regime, indent=2))
    stages.say(f"regime: chose {chosen} ({reason}); {weight_reason}")
    return regime


def candidate_names(settings: DemoSettings) -> dict[str, int | None]:
    """The candidate cold starts by name, with their SFT steps (None for a given student)."""
    if settings.given_student is not None:
        return {GIVEN: None}
    return {f"step-{steps}": steps for steps in settings.candidate_steps}


def cold_start_stage(settings: DemoSettings) -> dict[str, Path]:
    """The candidate students and the teacher: trained (`stages.cold_start`), or the given ones (saved models or
    tiny specs), checked before any stage runs."""
    if settings.given_student is None:
        return stages.cold_start(settings)
    paths = {}
    for role, given in ((GIVEN, settings.given_student), ("teacher", settings.given_teacher)):
        try:
            paths[role] = Path(resolve_model_path(str(given)))
        except ModelNotFoundError as error:
            raise SystemExit(f"the given {'student' if role == GIVEN else role}: {error}") from None
    stages.say(f"cold start: given (student {paths[GIVEN]}, teacher {paths['teacher']})")
    return paths


def premise_stage(settings: DemoSettings, student: Path, teacher: Path) -> dict:
    """The premises measured on training prompts after the regime's (none of the regime's prompts), before RL:
    whether the call decides success, the teacher's right-call rate, and the attribution layouts' rank correlations
    on two disjoint prompt sets, with the variant chosen from both; cached in `premise.json`."""
    path = settings.out / "premise.json"
    if path.is_file():
        stages.say(f"premise: reusing {path}")
        return json.loads(path.read_text())
    premise = replicated_premise(settings, student, teacher, settings.premise_prompts, offset=settings.regime_prompts)
    chosen = premise["variants"][premise["chosen_variant"]]
    if settings.attribution_weight is None:
        spreads = {"outcome_spread": premise["outcome_spread"], "term_spread": chosen["term_spread"]}
        premise["weight"], premise["weight_reason"] = choose_weight(spreads)
    else:
        premise["weight"] = settings.attribution_weight
        premise["weight_reason"] = f"λ = {settings.attribution_weight:g}, as given"
    path.write_text(json.dumps(premise, indent=2))
    student_row, teacher_row = premise["student"], premise["teacher"]
    stages.say(
        f"premise: student right calls {student_row['right_call_rate']:.2f}, P(success | right) "
        f"{student_row['success_given_right']:.2f}, P(success | wrong) {student_row['success_given_wrong']:.2f}; "
        f"teacher right calls {teacher_row['right_call_rate']:.2f}; layout: {premise['variant_reason']}"
    )
    return premise


def optimisability_stage(settings: DemoSettings, variant: str, student: Path, teacher: Path, workers: int) -> dict:
    """Item 4 of the premises: can the attribution term alone move the student toward the teacher? The runs of
    `settings.optimisability_runs` for each of `settings.optimisability_seeds`, at the RL budget with the chosen
    layout, and their divergence on a fixed probe of training prompts (`optimise.optimisability`); cached in
    `optimise/optimise.json`."""
    out = settings.out / "optimise"
    if (out / "optimise.json").is_file():
        cached = json.loads((out / "optimise.json").read_text())
        wanted = {"seeds": list(settings.optimisability_seeds), "runs": list(settings.optimisability_runs)}
        if {key: cached["settings"][key] for key in wanted} == wanted:
            stages.say(f"optimisability: reusing {out / 'optimise.json'}")
            return cached
    knobs = RunSettings(lr=settings.rl_lr, kl_beta=settings.rl_kl_beta)
    probe = ProbeSettings(settings.probe_prompts, settings.regime_prompts, settings.rl_steps // 2)
    stages.say(
        f"optimisability: {', '.join(settings.optimisability_runs)} for seeds {list(settings.optimisability_seeds)}, "
        f"{settings.rl_steps} steps each, probed on {probe.prompts} training prompts"
    )
    return optimisability(
        settings,
        variant,
        student,
        teacher,
        out,
        list(settings.optimisability_seeds),
        list(settings.optimisability_runs),
        knobs,
        probe,
        workers,
    )


def rl_task(settings: DemoSettings, method: str, seed: int, student: Path, teacher: Path, weight: float) -> dict:
    """One RL run and its evaluations (greedy with tools on and off, and sampled as in RL); runs in a worker
    process."""
    adapter = stages.reinforce(settings, method, seed, student, teacher, weight)
    model = ModelSettings(name=str(student), adapter=str(adapter))
    label = stages.run_name(method, seed)
    return {
        "method": method,
        "seed": seed,
        "adapter": str(adapter),
        "tools on": stages.evaluate(settings, label, model, True),
        "tools off": stages.evaluate(settings, f"{label}-direct", model, False),
        "sampled": stages.evaluate_sampled(settings, label, model),
    }


def rl_stage(settings: DemoSettings, student: Path, teacher: Path, weight: float, workers: int) -> list[dict]:
    """Every (method, seed) run, `workers` at a time, in the order seed-major."""
    tasks = [(method, seed) for seed in settings.seeds for method in METHODS]
    arguments = [(settings, method, seed, student, teacher, weight) for method, seed in tasks]
    if workers <= 1:
        return [rl_task(*args) for args in arguments]
    with stages.worker_pool(workers) as pool:
        return list(pool.map(rl_task, *zip(*arguments, strict=True)))


def settings_record(settings: DemoSettings) -> dict:
    """The settings as plain JSON (the output folder left out): what the cached stages were made with."""
    record = json.loads(json.dumps(dataclasses.asdict(settings), default=str))
    record.pop("out")
    return record


SELF_CHECKED = ("optimisability_seeds", "optimisability_runs")
"""Settings only the optimisability stage reads; its cache checks them itself, so a finished run can add that stage."""


def claim_outputs(settings: DemoSettings) -> None:
    """Write `settings.json` in the output folder, or stop with one line if the folder holds the outputs of other
    settings (its cached stages would be reused as if they were this run's; `SELF_CHECKED` fields may differ, and a
    field newer than the folder counts as its default there)."""
    path = settings.out / "settings.json"
    record = settings_record(settings)
    if path.is_file():
        defaults = {f.name: f.default for f in dataclasses.fields(settings) if f.default is not dataclasses.MISSING}
        before = json.loads(json.dumps(defaults, default=str)) | json.loads(path.read_text())
        before = {key: value for key, value in before.items() if key not in SELF_CHECKED and key in record}
        if before != {key: value for key, value in record.items() if key not in SELF_CHECKED}:
            raise SystemExit(
                f"{settings.out} holds the outputs of other settings ({path}): pass --fresh or another --out"
            )
    settings.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2))


def run(settings: DemoSettings, workers: int = 1, until: str | None = None) -> Path:
    """All stages; returns the path of `report.md`. `until="premise"` stops after the premise measurement (no RL,
    nothing on test prompts) and returns the path of `premise.json`."""
    start = time.time()
    claim_outputs(settings)
    paths = cold_start_stage(settings)
    regime = regime_stage(settings, paths)
    student, teacher = paths[regime["chosen"]], paths["teacher"]
    premise, weight, rl_settings = None, regime["weight"], settings
    if settings.setting == "charts":  # a right call is defined by the label boxes: the paper's setting only
        premise = premise_stage(settings, student, teacher)
        if until == "premise":
            return settings.out / "premise.json"
        rl_settings = dataclasses.replace(settings, attribution=variant_settings(settings, premise["chosen_variant"]))
        weight = premise["weight"]
    optimisable = None
    if settings.optimisability_seeds and premise:
        optimisable = optimisability_stage(rl_settings, premise["chosen_variant"], student, teacher, workers)
    rows = []
    for label, path in ((STUDENT, student), (TEACHER, teacher)):
        for tools in (True, False):
            key = f"{'student' if label == STUDENT else 'teacher'}-{'tools' if tools else 'direct'}"
            rows.append(
                {
                    "model": label,
                    "tools": tools,
                    "results": [stages.evaluate(settings, key, ModelSettings(name=str(path)), tools)],
                }
            )
    runs = rl_stage(rl_settings, student, teacher, weight, workers)
    for method, label in METHODS.items():
        for tools in ("tools on", "tools off"):
            results = [r[tools] for r in runs if r["method"] == method]
            rows.append({"model": label, "tools": tools == "tools on", "results": results})
    paired = {
        tools: paired_difference(
            [r[tools]["accuracy"] for r in runs if r["method"] == "iapo"],
            [r[tools]["accuracy"] for r in runs if r["method"] == "grpo"],
        )
        for tools in ("tools on", "tools off")
    }
    cold_start_on = next(row for row in rows if row["model"] == STUDENT and row["tools"])["results"][0]
    grpo_gain = versus_cold_start(of_method(runs, "grpo", "tools on"), cold_start_on)
    sampled = sampled_results(
        settings,
        {
            "student": stages.evaluate_sampled(settings, "student-tools", ModelSettings(name=str(student))),
            "teacher": stages.evaluate_sampled(settings, "teacher-tools", ModelSettings(name=str(teacher))),
        },
        runs,
    )
    histories = {
        method: [
            read_history(settings.out / "logs" / stages.run_name(method, seed) / "metrics.csv")
            for seed in settings.seeds
        ]
        for method in METHODS
    }
    learning_curves(histories, settings.out / "curves.png")
    first = {r["method"]: r["adapter"] for r in runs if r["seed"] == settings.seeds[0]}
    pictures = {
        "before RL (cold-started student)": stages.pictures(
            rl_settings, "before", ModelSettings(name=str(student)), teacher
        ),
        f"after GRPO (seed {settings.seeds[0]})": stages.pictures(
            rl_settings, "grpo", ModelSettings(name=str(student), adapter=first["grpo"]), teacher
        ),
        f"after IAPO (seed {settings.seeds[0]})": stages.pictures(
            rl_settings, "iapo", ModelSettings(name=str(student), adapter=first["iapo"]), teacher
        ),
    }
    summary = {
        "title": "the paper's setting (charts, editing tools)" if settings.setting == "charts" else "the zoom setting",
        "task": task_description(settings),
        "settings": settings_record(settings),
        "temperature": settings.sampling.temperature,
        "regime": {k: regime[k] for k in ("candidates", "chosen", "reason")},
        "weight": weight,
        "method": rl_settings.iapo_description(weight),
        "weight_reason": premise["weight_reason"] if premise else regime["weight_reason"],
        "cold_start_diagnostics": cold_start_diagnostics(settings, rl_settings, regime, student, teacher),
        "premise": premise,
        "premises": plain_premises(premise) if premise else None,
        "seeds": list(settings.seeds),
        "test_rows": settings.test_rows,
        "rows": rows,
        "paired": paired,
        "grpo_gain": grpo_gain["by_seed"],
        "greedy_by_question": greedy_by_question(runs, cold_start_on),
        "sampled": sampled,
        "optimisability": optimisable,
        "training": training_summary(histories),
        "pictures": pictures,
        "minutes": (time.time() - start) / 60,
    }
    (settings.out / "report.json").write_text(json.dumps(summary, indent=2))
    path = settings.out / "report.md"
    path.write_text(render(summary))
    stages.say(f"report: {path} ({summary['minutes']:.1f} min)")
    return path


def cold_start_diagnostics(
    settings: DemoSettings, rl_settings: DemoSettings, regime: dict, student: Path, teacher: Path
) -> dict:
    """The chosen student's diagnostics with the teacher's attribution under the layout the RL runs use: the
    regime's (measured under `settings`' layout, before the premise chose one) when it is the same, else measured
    again on the regime's prompts under `rl_settings`' and cached in `cold_start.json`."""
    if rl_settings.attribution == settings.attribution:
        return regime["diagnostics"]
    path = rl_settings.out / "cold_start.json"
    if not path.is_file():
        path.write_text(json.dumps(sample_diagnostics(rl_settings, student, teacher=teacher), indent=2))
    return json.loads(path.read_text())


def task_description(settings: DemoSettings) -> str:
    """One paragraph on the task, from its knobs."""
    task = settings.task
    if settings.setting == "charts":
        kinds = {"chart_v": "vertical bar charts", "chart_h": "horizontal bar charts", "table": "tables"}
        drawn = " and ".join(kinds[k] for k in task.kinds)
        sizes = f"{task.n_bars} bars" + (f" / {task.n_rows} rows" if "table" in task.kinds else "")
        return (
            f"Task: {drawn} ({sizes}) on a {task.image_size}-px canvas, labels from {len(task.labels)} words, values "
            f"{'/'.join(task.values)}{' (distinct within a chart)' if task.distinct_values else ''}, {task.font_size}-px "
            f"text{', grid lines' if task.gridlines else ''}; the question asks one bar's value"
            f"{' and quotes its label' if task.quote_labels else ''}. Tools: the `{settings.sampling.toolset}` toolset (ReFocus's edits; the expert masks "
            "every other bar), one tool round. The model sees the chart at 224 px; after the mask one bar and its value "
            "are left to read."
        )
    return (
        f"Task: what texture fills the {'/'.join(task.colours)} {'/'.join(task.shapes)} on a {task.canvas_size}-px "
        f"canvas ({task.grid}×{task.grid} cells{', its cell shaded' if task.cell_hint else ''}, "
        f"{task.n_distractors} distractors), {task.n_options} lettered options. The textures vanish at the 224-px "
        "model view; a zoom crop shows them."
    )
