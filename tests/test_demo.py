"""`make demo FAST=1`: the paper miniature (charts, editing tools) runs every stage and writes a report whose tables
and mechanism diagnostics are all there (a few minutes on 2 cores: the one long test of the default suite); and the
pure pieces the report rests on: the t interval of paired differences, the regime and λ choices."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from pathlib import Path

import pytest
import torch
import yaml

from iapo.experiments.demo import GRPO, IAPO, STUDENT, TEACHER, demo_settings, main
from iapo.experiments.demo.premise import PRESET_VARIANTS, RL_VARIANTS, VARIANTS
from iapo.experiments.demo.regime import choose_candidate, choose_weight, group_shares, within_group_spread
from iapo.experiments.demo.run import claim_outputs
from iapo.experiments.demo.stats import paired_difference, t_quantile

COLD_START_KEYS = (
    "accuracy",
    "mechanism/outcome_zero_std",
    "mechanism/all_fail",
    "mechanism/rescued_groups",
    "mechanism/rank_corr_attribution_outcome",
    "attribution/divergence",
    "tools/call_rate",
    "tools/failure_frequency",
)
TRAINING_KEYS = (
    "mechanism/outcome_zero_std",
    "mechanism/rescued_groups",
    "mechanism/rank_corr_attribution_outcome",
    "attribution/divergence",
    "tools/call_rate",
)


def test_fast_paper_demo_reports_results_paired_differences_and_mechanism_diagnostics(tmp_path, capfd):
    out = tmp_path / "demo"
    report = main(["--fast", "--out", str(out), "--workers", "2"])
    err = capfd.readouterr().err.splitlines()
    progress = [line for line in err if line.startswith("[fit] step")]
    assert any("sft/loss" in line for line in progress)  # the cold start reports progress, to a file too
    variants = len(demo_settings("charts").fast().premise_variants)
    premise_progress = [line for line in err if line.startswith("[premise] variant") and f"/{variants} " in line]
    assert len(premise_progress) == 2 * variants  # two prompt sets (the optimisability probes measure one variant)
    data = json.loads((out / "report.json").read_text())
    rows = {(row["model"], row["tools"]): row["results"] for row in data["rows"]}
    assert set(rows) == {(m, t) for m in (STUDENT, TEACHER, GRPO, IAPO) for t in (True, False)}
    seeds = data["settings"]["seeds"]
    for (model, tools), results in rows.items():
        assert len(results) == (len(seeds) if model in (GRPO, IAPO) else 1)
        for result in results:
            assert 0 <= result["accuracy"] <= 1 and result["rows"] == data["settings"]["test_rows"]
            if not tools:  # tools off: one direct turn, never a tool call
                assert result["tool_call_rate"] == 0 and result["mean_turns"] == 1
    for tools in ("tools on", "tools off"):
        paired = data["paired"][tools]
        iapo, grpo = rows[(IAPO, tools == "tools on")], rows[(GRPO, tools == "tools on")]
        assert paired["differences"] == pytest.approx(
            [a["accuracy"] - b["accuracy"] for a, b in zip(iapo, grpo, strict=True)]
        )
    # the regime: every candidate measured on training prompts, one chosen with its reason, λ with its reason
    regime = data["regime"]
    assert [c["steps"] for c in regime["candidates"]] == data["settings"]["candidate_steps"]
    assert all(0 <= c["calls/right_call_rate"] <= 1 for c in regime["candidates"])  # charts: a right call is defined
    assert regime["chosen"] in {c["name"] for c in regime["candidates"]} and regime["reason"]
    assert data["weight"] > 0 and "λ" in data["weight_reason"]
    # the premises, measured before RL on training prompts, named plainly; the layout the RL runs used
    premises = data["premises"]
    for key in ("right_call_rate", "success_given_right_call", "success_given_wrong_call", "sampled_success"):
        assert set(premises[key]) == {"student", "teacher"}
    measured = set(data["settings"]["premise_variants"])  # the fast run: the paper's and one per other target
    assert {"blocks", "arguments_blocks", "turn_blocks"} <= measured < set(VARIANTS)
    assert set(premises["rank_correlation_with_success"]) == measured
    assert premises["chosen_layout"] in premises["rank_correlation_with_success"]
    assert len(premises["checks"]) == 7 and all(isinstance(c["met"], bool) for c in premises["checks"])
    # read again on the next training prompts with another seed before the layout is chosen
    second = premises["replication"]
    assert second["seed"] == premises["seed"] + 1 and set(second["rank_correlation_with_success"]) == measured
    assert second["prompts"][0] == data["premise"]["offset"] + premises["groups"]
    # the teacher ends with a run of its own at the lower lr, from the model saved before it
    assert (
        data["settings"]["teacher_tail_steps"] > 0 and (out / "sft" / "teacher-before-tail" / "config.json").is_file()
    )
    assert (out / "logs" / "teacher" / "metrics.csv").is_file()
    layout = data["premise"]["chosen_variant"]
    assert data["settings"]["attribution"]["layout"] == "blocks"  # the configuration default stays the paper's
    assert data["seeds"] == seeds and data["test_rows"] == data["settings"]["test_rows"]
    assert layout in RL_VARIANTS and layout in measured
    cold = data["cold_start_diagnostics"]
    assert set(COLD_START_KEYS) <= set(cold)
    # the cold start's diagnostics are the regime's only where the RL runs use the layout the regime measured
    remeasured = out / "cold_start.json"
    assert remeasured.is_file() == (layout != "blocks")
    if layout == "blocks":
        assert cold == json.loads((out / "regime.json").read_text())["diagnostics"]
    else:
        assert cold == json.loads(remeasured.read_text())
    assert any(key.startswith("attribution/teacher_mass/") for key in cold)
    # the diagnostics over training: logged every step, summarised per method (GRPO computes no attribution)
    iapo_training, grpo_training = data["training"]["iapo"], data["training"]["grpo"]
    assert set(TRAINING_KEYS) <= set(iapo_training)
    assert "attribution/divergence" not in grpo_training and "mechanism/outcome_zero_std" in grpo_training
    for entry in iapo_training.values():
        assert set(entry) == {"first", "last", "mean"}
    assert (out / "curves.png").stat().st_size > 0
    for files in data["pictures"].values():
        assert files and all((out / f).is_file() for f in files)
    text = report.read_text()
    for heading in (
        "## Findings",
        "## Premises, measured before RL (training prompts only)",
        "## How the regime was chosen (training prompts only, before any test result)",
        "## Cold-start diagnostics",
        "### IAPO − GRPO, paired by seed",
        "## Mechanism over training",
    ):
        assert heading in text
    assert "Wall time of the invocation that wrote this report:" in text  # a resumed run counts what it ran only
    grpo = [r["accuracy"] for r in rows[(GRPO, True)]]  # GRPO against the cold start, per seed
    assert data["grpo_gain"]["differences"] == pytest.approx([a - rows[(STUDENT, True)][0]["accuracy"] for a in grpo])
    assert "**GRPO against the cold start.**" in text
    # test accuracy sampled as in RL: G per question, per model and seed, paired by seed as the greedy one
    sampled = data["sampled"]
    assert sampled["samples_per_question"] == data["settings"]["group_size"] and len(sampled["grpo"]) == len(seeds)
    assert sampled["paired"]["differences"] == pytest.approx(
        [a - b for a, b in zip(sampled["iapo"], sampled["grpo"], strict=True)]
    )
    per_question = json.loads((out / "eval" / "grpo-seed0-sampled.json").read_text())["per_question"]
    assert len(per_question) == data["settings"]["test_rows"] and sampled["grpo"][0] == pytest.approx(
        sum(per_question) / len(per_question)
    )
    assert "**Sampled as in RL" in text and "| IAPO − GRPO (sampled) |" in text
    by_question = sampled["by_question"]["paired"]  # over test questions: the seed means' difference per question
    assert by_question["n"] == data["settings"]["test_rows"]
    assert by_question["mean"] == pytest.approx(statistics.fmean(sampled["iapo"]) - statistics.fmean(sampled["grpo"]))
    assert "over test questions instead of seeds" in text
    greedy = data["greedy_by_question"]  # greedy as well: each question's score is kept (eval/<label>.json)
    scores = json.loads((out / "eval" / "grpo-seed0.json").read_text())["per_question"]
    assert len(scores) == greedy["grpo_gain"]["n"] == data["settings"]["test_rows"]
    assert greedy["paired"]["mean"] == pytest.approx(data["paired"]["tools on"]["mean"])
    assert "Greedy, over the" in text
    # item 4: the term alone against GRPO at the RL budget, probed at its middle and end against the cold start
    optimisable = data["optimisability"]
    assert optimisable["settings"]["seeds"] == [0] and optimisable["settings"]["variant"] == layout
    assert set(optimisable["runs"]) == {"attribution_call-s0", "grpo-s0"}
    for run in optimisable["runs"].values():
        assert set(run["probe"]) == {"1", "2"} and run["probe"]["2"]["success"]["change"]["n"] == 2
    assert (out / "optimise" / "optimise.png").stat().st_size > 0
    assert "## Optimisability" in text and "**Optimisability.**" in text
    assert "within-group rank correlation" in text and "student–teacher divergence" in text
    assert "| student (second set) |" in text and "**(chosen)**" in text


def test_t_quantiles_and_the_paired_interval():
    assert t_quantile(0.975, 4) == pytest.approx(2.776, abs=1e-3)
    assert t_quantile(0.975, 1) == pytest.approx(12.706, abs=1e-3)
    assert t_quantile(0.95, 30) == pytest.approx(1.697, abs=1e-3)
    result = paired_difference([0.5, 0.6, 0.7], [0.4, 0.4, 0.7])
    assert result["differences"] == pytest.approx([0.1, 0.2, 0.0])
    half = t_quantile(0.975, 2) * 0.1 / math.sqrt(3)  # the differences' std is 0.1
    assert (result["low"], result["high"]) == pytest.approx((0.1 - half, 0.1 + half))
    single = paired_difference([0.5], [0.25])
    assert single["mean"] == 0.25 and math.isnan(single["low"])
    with pytest.raises(ValueError):
        paired_difference([0.5, 0.6], [0.5])


def test_the_regime_is_the_sparsest_candidate_that_is_not_hopeless():
    rows = [
        {"accuracy": 0.02, "tools/call_rate": 0.9, "mechanism/all_fail": 0.95},  # hopeless
        {"accuracy": 0.15, "tools/call_rate": 0.9, "mechanism/all_fail": 0.60},
        {"accuracy": 0.40, "tools/call_rate": 0.9, "mechanism/all_fail": 0.20},
        {"accuracy": 0.30, "tools/call_rate": 0.2, "mechanism/all_fail": 0.70},  # rarely calls the tool
    ]
    assert choose_candidate(rows, min_accuracy=0.1, min_call_rate=0.5)[0] == 1
    index, reason = choose_candidate(rows[:1], min_accuracy=0.1, min_call_rate=0.5)
    assert index == 0 and "no candidate" in reason


def test_a_sparser_candidate_that_does_not_read_what_it_edits_is_not_chosen():
    """Sparsity from a student that cannot read the edited bar is not a reward the call decides (premise 1)."""
    rows = [
        {"accuracy": 0.13, "tools/call_rate": 1.0, "mechanism/all_fail": 0.58, "calls/success_given_right": 0.5},
        {"accuracy": 0.15, "tools/call_rate": 1.0, "mechanism/all_fail": 0.50, "calls/success_given_right": 0.85},
        {"accuracy": 0.12, "tools/call_rate": 1.0, "mechanism/all_fail": 0.62, "calls/success_given_right": math.nan},
    ]
    index, reason = choose_candidate(rows, min_accuracy=0.1, min_call_rate=0.5, min_reading=0.8)
    assert index == 1 and "P(success | right call) >= 80%" in reason
    assert choose_candidate(rows, min_accuracy=0.1, min_call_rate=0.5)[0] == 2  # without the reading rule
    rows[1]["calls/success_given_right"] = 0.7
    index, reason = choose_candidate(rows, min_accuracy=0.1, min_call_rate=0.5, min_reading=0.8)
    assert index == 1 and "no candidate" in reason  # none reads: the most accurate one


def test_lambda_matches_the_outcome_spread_and_group_shares():
    outcome = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    assert group_shares(outcome, 4) == {"all_fail": pytest.approx(1 / 3), "all_succeed": pytest.approx(1 / 3)}
    assert within_group_spread(outcome, 4) == pytest.approx(math.sqrt(0.25 / 3))
    weight, reason = choose_weight({"outcome_spread": 0.3, "term_spread": 0.01})
    assert weight == pytest.approx(30) and "λ = 30" in reason
    assert choose_weight({"outcome_spread": 0.0, "term_spread": 0.01}, fallback=1.0)[0] == 1.0


def test_an_output_folder_of_other_settings_is_refused(tmp_path):
    settings = demo_settings("charts", out=tmp_path).fast()
    claim_outputs(settings)
    claim_outputs(settings)  # the same settings: its cached stages are this run's
    with pytest.raises(SystemExit, match="other settings"):
        claim_outputs(dataclasses.replace(settings, rl_steps=settings.rl_steps + 1))
    claim_outputs(dataclasses.replace(settings, optimisability_seeds=(0, 1)))  # adds a stage, checked by its cache
    written = json.loads((tmp_path / "settings.json").read_text())
    (tmp_path / "settings.json").write_text(json.dumps({k: v for k, v in written.items() if k != "call_weight"}))
    claim_outputs(settings)  # a folder written before a field existed: the field at its default there
    (tmp_path / "settings.json").write_text(json.dumps({k: v for k, v in written.items() if k != "call_weight"}))
    with pytest.raises(SystemExit, match="other settings"):
        claim_outputs(dataclasses.replace(settings, call_weight=0.5))


def test_the_optimisability_stage_is_reused_only_for_the_seeds_and_runs_it_ran(tmp_path, monkeypatch):
    import importlib

    demo_run = importlib.import_module("iapo.experiments.demo.run")  # the module, not the package's `run`
    settings = dataclasses.replace(demo_settings("charts", out=tmp_path).fast(), optimisability_seeds=(0, 1))
    ran = []

    def fake_optimisability(settings, variant, student, teacher, out, seeds, runs, *rest):
        ran.append(seeds)
        result = {"settings": {"seeds": seeds, "runs": runs}, "runs": {}}
        out.mkdir(parents=True, exist_ok=True)
        (out / "optimise.json").write_text(json.dumps(result))
        return result

    monkeypatch.setattr(demo_run, "optimisability", fake_optimisability)
    for seeds in [(0, 1), (0, 1), (2,)]:
        demo_run.optimisability_stage(
            dataclasses.replace(settings, optimisability_seeds=seeds), "blocks", tmp_path, tmp_path, 1
        )
    assert ran == [[0, 1], [2]]  # the second call read the first's result back


def test_the_preset_measures_every_premise_variant_but_occlusion_and_a_wrong_name_is_refused():
    assert demo_settings("charts").premise_variants == PRESET_VARIANTS
    assert set(VARIANTS) - set(PRESET_VARIANTS) == {"occlusion_blocks", "occlusion_regions"}  # on request
    assert demo_settings("charts", premise_variants=tuple(VARIANTS)).premise_variants == tuple(VARIANTS)
    with pytest.raises(ValueError, match="unknown: \\['blocks_sum'\\]"):
        demo_settings("charts", premise_variants=("blocks", "blocks_sum"))
    with pytest.raises(ValueError, match="must include 'blocks'"):
        demo_settings("charts", premise_variants=("regions",))
    with pytest.raises(ValueError, match="teacher_call_accuracy must be in"):
        demo_settings("charts", teacher_call_accuracy=1.5)


def test_a_teacher_of_its_own_lineage_is_trained_from_the_spec_then_on_right_calls(tmp_path, monkeypatch):
    from iapo.experiments.demo import stages

    settings = dataclasses.replace(
        demo_settings("charts", out=tmp_path).fast(),
        candidate_steps=(1, 2),
        teacher_steps=4,
        teacher_tail_steps=1,
        teacher_call_accuracy=0.1,
        sft_batch=2,
        train_rows=4,
    )
    runs = []
    real_module = stages.sft_module

    def recorded(settings, student, call_accuracy, expert, lr=None, misfocus=None):
        runs.append((Path(student).name, call_accuracy, expert))
        return real_module(settings, student, call_accuracy, expert, lr, misfocus)

    monkeypatch.setattr(stages, "sft_module", recorded)
    paths = stages.cold_start(settings)
    assert runs == [
        ("tiny-student", settings.sft_call_accuracy, "mixed"),  # the student's run, saved at 1 and 2
        ("tiny-student", 0.1, "mixed"),  # the teacher's own lineage, as long as the student's
        ("teacher-base", 1.0, "tool"),  # then trained on right calls
        ("teacher-before-tail", 1.0, "tool"),  # and the tail at the lower lr
    ]
    assert all((path / "config.json").is_file() for path in paths.values())
    assert stages.cold_start(settings) == paths and len(runs) == 4  # reused


def test_a_given_cold_start_is_measured_as_the_one_candidate_and_nothing_is_trained_for_it(tmp_path, capsys):
    out = tmp_path / "given"
    argv = ["--fast", "--out", str(out), "--student", "tiny-student", "--teacher", "tiny-teacher"]
    main([*argv, "--until", "premise", "--attribution-target", "tool_call_ran", "--optimisability-seeds"])
    recorded = json.loads((out / "settings.json").read_text())
    assert recorded["attribution"]["target"] == "tool_call_ran" and recorded["optimisability_seeds"] == []
    regime = json.loads((out / "regime.json").read_text())
    assert [(c["name"], c["steps"]) for c in regime["candidates"]] == [("given", None)]
    assert regime["chosen"] == "given" and "given student" in regime["reason"]
    premise = json.loads((out / "premise.json").read_text())
    assert premise["student"]["right_call_rate"] >= 0 and premise["chosen_variant"] in RL_VARIANTS
    assert not (out / "sft").exists()  # no cold start trained
    with pytest.raises(SystemExit):
        main([*argv, "--attribution-target", "the_call"])
    assert "attribution target must be one of" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="the given teacher: model directory /nowhere does not exist"):
        main(["--fast", "--out", str(tmp_path / "bad"), "--student", "tiny-student", "--teacher", "/nowhere"])


def test_the_command_line_picks_the_preset_and_refuses_arguments_that_do_not_go_together(capsys):
    from iapo.experiments.demo.cli import parser, preset
    from iapo.experiments.demo.settings import SHIPPED_PAIR

    def settings_of(*argv: str):
        return preset(parser().parse_args(argv), parser().error)

    showcase = settings_of()  # make demo
    assert (showcase.out, showcase.given_student, showcase.given_teacher) == (
        Path("logs/demo"),
        SHIPPED_PAIR / "student",
        SHIPPED_PAIR / "teacher",
    )
    assert showcase.optimisability_seeds == () and len(showcase.seeds) >= 2 and showcase.test_rows >= 300
    powered = settings_of("--powered", "--budget", "lr3e-4x320")  # make powered BUDGET=lr3e-4x320
    assert (powered.out, powered.rl_steps, len(powered.seeds)) == (Path("logs/demo-powered"), 320, 5)
    assert powered.given_student == SHIPPED_PAIR / "student" and powered.optimisability_seeds
    with_loss = settings_of("--powered", "--attribution-loss", "1", "--attribution-loss-calls", "3")
    assert (with_loss.attribution_loss, with_loss.attribution_loss_calls) == (1.0, 3)
    given = settings_of("--student", "built/student", "--teacher", "built/teacher", "--seeds", "7", "--out", "o")
    assert (given.given_student, given.given_teacher, given.seeds, given.out) == (
        Path("built/student"),
        Path("built/teacher"),
        (7,),
        Path("o"),
    )
    from_spec = settings_of("--train-cold-start")
    assert from_spec.given_student is None and from_spec.task.n_bars == 4 and from_spec.out == Path("logs/demo-4bars")
    assert settings_of("--fast").out == Path("logs/demo-fast") and settings_of("--fast").given_student is None
    assert settings_of("--setting", "zoom").out == Path("logs/demo-zoom")
    refused = {
        ("--powered", "--fast"): "--powered starts from a given or the shipped pair",
        ("--train-cold-start", "--student", "s", "--teacher", "t"): "--train-cold-start trains",
        ("--budget", "base"): "--budget names a budget of the powered preset",
        ("--student", "s"): "--student and --teacher go together",
        ("--attribution-loss-calls", "3"): "give --attribution-loss too",
    }
    for argv, message in refused.items():
        with pytest.raises(SystemExit):
            settings_of(*argv)
        assert message in capsys.readouterr().err


def test_the_powered_preset_sets_its_rl_budget(tmp_path):
    from iapo.experiments.demo.settings import powered_settings

    settings = powered_settings(tmp_path / "student", tmp_path / "teacher")
    assert settings.task.n_bars == 6 and settings.test_rows >= 300 and len(settings.seeds) >= 5
    assert (settings.rl_lr, settings.rl_kl_beta, settings.rl_steps, settings.updates_per_step) == (1e-3, 0.1, 160, 1)
    assert {"blocks", "occlusion_regions"} <= set(settings.premise_variants)
    with pytest.raises(ValueError, match="needs both given_student and given_teacher"):
        dataclasses.replace(settings, given_teacher=None)
    assert "tool_call" not in settings.rewards("grpo")  # the tool_call reward only on request, for both methods
    called = dataclasses.replace(settings, call_weight=0.1)
    assert called.rewards("grpo") == {"accuracy": 1.0, "format": 0.1, "tool_call": 0.1}
    assert called.rewards("iapo", 20.0) == {"accuracy": 1.0, "format": 0.1, "tool_call": 0.1, "attribution": 20.0}


def test_a_task_overlay_sets_the_task_of_the_premise_and_optimisability_measurements(tmp_path):
    from iapo.experiments.demo.measure import overlay_settings
    from iapo.experiments.demo.settings import CHARTS_CONFIG

    text = CHARTS_CONFIG.read_text().replace("n_bars: 4", "n_bars: 6").replace("fox]", "fox, hen]")
    overlay = tmp_path / "six_bars.yaml"
    overlay.write_text(text.replace('"50"]', '"50", "60", "70"]'))
    settings = overlay_settings(overlay)
    assert settings.task.n_bars == 6 and settings.task.labels[-1] == "hen" and settings.task.values[-1] == "70"
    assert settings.sampling == demo_settings("charts").sampling  # the overlay's sampling, the same here
    overlay.write_text(text.replace("n_bars: 6", "n_bar: 6"))
    with pytest.raises(ValueError, match="six_bars.yaml: Group 'data.synthetic_charts' does not accept option 'n_bar'"):
        overlay_settings(overlay)


def test_the_optimisability_runs_probe_a_fixed_prompt_set_at_each_saved_step_and_are_not_run_twice(tmp_path):
    from iapo.experiments.demo import optimise

    out = tmp_path / "optimise"
    argv = ["--student", "tiny-student", "--teacher", "tiny-teacher", "--out", str(out), "--steps", "2"]
    argv += ["--runs", "attribution_format", "grpo", "--probe-prompts", "2", "--probe-every", "1"]
    argv += ["--group-size", "3", "--advantage-scale", "none"]
    result = optimise.main(argv)
    hyper = yaml.safe_load((out / "logs" / "attribution_format-s0" / "hparams.yaml").read_text())
    assert result["settings"]["group_size"] == hyper["group_size"] == 3 and hyper["ppo"]["mini_batch_size"] == 6
    run = result["runs"]["attribution_format-s0"]
    assert set(run["probe"]) == {"1", "2"}  # the adapter saved at step 1, and the last one
    for step, probed in run["probe"].items():
        assert set(probed) == {*optimise.PROBED, "divergence_by_call", "shift", "rho_success", "beyond_grpo"}
        # against GRPO of the same seed at the same step; GRPO's own probe is not read against itself
        assert "beyond_grpo" not in result["runs"]["grpo-s0"]["probe"][step]
        if probed["call"]["mean"] == 0:  # no call, nothing attributed: no divergence rather than 0
            assert probed["divergence"]["mean"] is None and probed["divergence"]["change"]["n"] == 0
        else:
            assert probed["divergence"]["mean"] >= 0
        assert probed["success"]["change"]["n"] == 2  # paired per prompt
        assert 0 <= probed["right_call"]["mean"] <= 1
    assert set(result["cold_start"]) == {*optimise.PROBED, "divergence_by_call", "rho_success"}
    assert run["training"]["kl"]["steps"] == 2
    assert json.loads((out / "optimise.json").read_text())["runs"].keys() == {"attribution_format-s0", "grpo-s0"}
    assert (out / "optimise.png").stat().st_size > 0
    metrics = out / "logs" / "attribution_format-s0" / "metrics.csv"
    written = metrics.stat().st_mtime_ns
    again = optimise.main([*argv, "--probe-prompts", "0"])  # the finished run is read back, not trained again
    assert (
        metrics.stat().st_mtime_ns == written and again["runs"]["attribution_format-s0"]["training"] == run["training"]
    )


def test_the_probe_change_is_paired_per_prompt_and_a_sample_without_a_call_has_no_divergence():
    from iapo.experiments.demo.optimise import divergence_by_call, probe_change

    before = {
        "divergence": [0.1, 0.3, 0.5, 0.5],
        "call": [1.0, 1.0, 1.0, 1.0],
        "right_call": [0.0, 0.0, 1.0, 1.0],
        "success": [0, 0, 1, 0],
    }
    after = {
        "divergence": [None, None, 0.2, None],
        "call": [0.0, 0.0, 1.0, 0.0],
        "right_call": [0.0, 0.0, 1.0, 0.0],
        "success": [1, 0, 1, 1],
    }
    change = probe_change(before, after, group_size=2)
    assert change["divergence"]["mean"] == pytest.approx(0.2)  # over the attributed sample only, not 0 for the rest
    assert change["divergence"]["change"]["mean"] == pytest.approx(0.2 - 0.5)
    assert change["divergence"]["change"]["n"] == 1  # the first prompt has no call after training: not paired
    assert change["call"]["change"]["mean"] == pytest.approx(((0 - 1) + (0.5 - 1)) / 2)
    assert change["right_call"]["change"]["mean"] == pytest.approx((0 + (0.5 - 1)) / 2)
    assert change["success"]["mean"] == pytest.approx(0.75)
    assert change["divergence_by_call"] == {"right": pytest.approx(0.2), "wrong": None}
    assert change["shift"]["total"] is None  # no wrong call attributed after: not split
    assert divergence_by_call(before) == pytest.approx({"right": 0.5, "wrong": 0.2})


def test_a_run_is_read_against_grpo_of_the_same_seed_per_probe_prompt():
    from iapo.experiments.demo.optimise import beyond_grpo

    run = {"divergence": [0.1, 0.3, None, None, 0.2, 0.2]}  # three prompts of two samples
    grpo = {"divergence": [0.5, 0.5, 0.4, 0.4, None, 0.6]}
    against = beyond_grpo(run, grpo, group_size=2)
    assert against["n"] == 2  # the second prompt has no attributed sample after the run: not paired
    assert against["mean"] == pytest.approx(((0.2 - 0.5) + (0.2 - 0.6)) / 2)
    assert against["high"] < 0


def test_the_iapo_arm_can_be_grpo_plus_the_attribution_loss_and_the_report_says_so(tmp_path, monkeypatch):
    from iapo.experiments.demo import stages
    from iapo.experiments.demo.settings import powered_settings

    settings = powered_settings(tmp_path / "student", tmp_path / "teacher", attribution_loss=1.0, out=tmp_path)
    assert settings.rewards("iapo", 0.0) == settings.rewards("grpo")  # λ = 0: the term is out of the reward
    assert "attribution loss at λ_a = 1" in settings.iapo_description(0.0)
    assert "term" not in settings.iapo_description(0.0)
    assert "term in the reward at λ = 23" in dataclasses.replace(settings, attribution_loss=0.0).iapo_description(23)
    with pytest.raises(ValueError, match="attribution_loss must be >= 0"):
        dataclasses.replace(settings, attribution_loss=-1.0)
    with pytest.raises(ValueError, match="attribution_loss_calls must be >= 1"):
        dataclasses.replace(settings, attribution_loss_calls=0)
    settings = dataclasses.replace(settings, attribution_loss_calls=3)
    assert "attribution loss at λ_a = 1 over 3 calls a mini-batch" in settings.iapo_description(0.0)

    built = {}

    class Built(Exception):
        pass

    def record(**kwargs):
        built[kwargs["rewards"].get("attribution", 0.0), kwargs["attribution_loss"]] = kwargs
        raise Built

    monkeypatch.setattr(stages, "IAPOModule", record)
    for method in ("grpo", "iapo"):
        with pytest.raises(Built):
            stages.reinforce(settings, method, 0, tmp_path / "student", tmp_path / "teacher", 0.0)
    assert set(built) == {(0.0, 0.0), (0.0, 1.0)}  # GRPO never gets the loss; IAPO gets it with no term
    assert (built[0.0, 0.0]["attribution_loss_calls"], built[0.0, 1.0]["attribution_loss_calls"]) == (None, 3)


def test_the_demos_workers_stop_when_the_demo_is_killed(tmp_path):
    """A killed demo (`kill <pid>`, not Ctrl-C, which reaches every process) must not leave RL runs writing into its
    output folder."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import os, time\n"
        "from iapo.experiments.demo.stages import worker_pool\n"
        "if __name__ == '__main__':\n"
        "    pool = worker_pool(1)\n"
        "    print(pool.submit(os.getpid).result(), flush=True)\n"
        "    pool.submit(time.sleep, 120)\n"
        "    time.sleep(120)\n"
    )
    (tmp_path / "demo_like.py").write_text(script)
    demo = subprocess.Popen([sys.executable, str(tmp_path / "demo_like.py")], stdout=subprocess.PIPE, text=True)
    worker = int(demo.stdout.readline())

    def alive(pid: int) -> bool:
        status = Path(f"/proc/{pid}/status")
        try:
            return "\nState:\tZ" not in status.read_text()
        except FileNotFoundError:
            return False

    assert alive(worker)
    demo.send_signal(signal.SIGKILL)
    demo.wait()
    deadline = time.monotonic() + 30
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.5)
    outlived = alive(worker)
    if outlived:  # do not leave it sleeping beside the rest of the suite
        os.kill(worker, signal.SIGKILL)
    assert not outlived, "the worker outlived the demo"
