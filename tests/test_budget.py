"""Choosing the RL budget at which GRPO learns, on the validation split (`iapo.experiments.demo.budget`), and the
comparisons it and the demo's report rest on (`iapo.experiments.demo.compare`): GRPO − cold start by seed and by
question."""

from __future__ import annotations

import json

import pytest

from iapo.experiments.demo import main as demo_main
from iapo.experiments.demo.budget import choose_budget, main
from iapo.experiments.demo.compare import by_question, greedy_by_question, versus_cold_start
from iapo.experiments.demo.settings import RL_BUDGETS, powered_settings


def evaluation(per_question: list[float]) -> dict:
    return {"accuracy": sum(per_question) / len(per_question), "per_question": per_question}


def test_grpo_against_the_cold_start_is_paired_by_seed_and_by_question():
    cold = evaluation([1, 0, 0, 0])
    seeds = [evaluation([1, 1, 0, 0]), evaluation([1, 0, 1, 1])]
    gain = versus_cold_start(seeds, cold)
    assert gain["by_seed"]["differences"] == pytest.approx([0.25, 0.5]) and gain["by_seed"]["n"] == 2
    # per question the seed means are 1, 0.5, 0.5, 0.5 against 1, 0, 0, 0: differences 0, 0.5, 0.5, 0.5
    assert gain["by_question"]["mean"] == pytest.approx(0.375) and gain["by_question"]["n"] == 4
    assert 0 <= gain["by_question"]["low"] <= 0.375 <= gain["by_question"]["high"] <= 0.5
    assert versus_cold_start([{"accuracy": 0.5}], {"accuracy": 0.25})["by_question"] is None  # scores not kept
    with pytest.raises(ValueError):  # questions must pair one to one
        by_question([evaluation([1, 0])], [evaluation([1, 0, 0])])


def test_the_greedy_comparison_over_questions_pairs_iapo_with_grpo_seed_by_seed():
    runs = [
        {"method": "grpo", "tools on": evaluation([1, 0, 0])},
        {"method": "iapo", "tools on": evaluation([1, 1, 0])},
        {"method": "grpo", "tools on": evaluation([0, 0, 1])},
        {"method": "iapo", "tools on": evaluation([1, 1, 1])},
    ]
    result = greedy_by_question(runs, evaluation([0, 0, 0]))
    assert result["grpo_gain"]["mean"] == pytest.approx(1 / 3)
    assert result["paired"]["mean"] == pytest.approx(0.5)  # per question IAPO 1, 1, 0.5 against GRPO 0.5, 0, 0.5
    runs[0]["tools on"].pop("per_question")
    assert greedy_by_question(runs, evaluation([0, 0, 0])) is None


def gains(sampled_low: float, per_seed: list[float], greedy_mean: float) -> dict:
    return {
        "sampled": {
            "by_question": {"mean": 0.03, "low": sampled_low, "high": 0.06},
            "by_seed": {"differences": per_seed},
        },
        "greedy": {"by_question": {"mean": greedy_mean, "low": -0.05, "high": 0.05}, "by_seed": {"differences": [0]}},
    }


def test_the_budget_is_the_one_where_grpo_learned_with_the_highest_lower_bound():
    chosen, why = choose_budget(
        {
            "base": gains(0.01, [0.02, 0.03], 0.0),
            "prompts4": gains(0.02, [0.01, 0.05], 0.01),
            "wide": gains(0.05, [0.08, -0.01], 0.02),  # one seed lost accuracy: not qualified
            "greedy_fell": gains(0.06, [0.05, 0.06], -0.01),  # greedy accuracy fell: not qualified
        }
    )
    assert chosen == "prompts4" and "base, prompts4" in why and "+3.0 [+2.0, +6.0]" in why
    chosen, why = choose_budget({"base": gains(-0.01, [0.02, 0.03], 0.0)})
    assert chosen is None and "GRPO did not learn at any budget measured" in why


def test_every_budget_names_fields_of_the_powered_preset(tmp_path):
    base = powered_settings(tmp_path / "s", tmp_path / "t")
    assert RL_BUDGETS["base"] == {}
    for fields in RL_BUDGETS.values():
        settings = powered_settings(tmp_path / "s", tmp_path / "t", **fields)
        assert all(getattr(settings, key) == value for key, value in fields.items())
        assert settings.test_rows == base.test_rows and settings.eval_split == "test"
    with pytest.raises(SystemExit):
        demo_main(["--budget", "prompts4", "--student", "tiny-student", "--teacher", "tiny-teacher"])
    with pytest.raises(ValueError, match="eval_split must be one of"):
        powered_settings(tmp_path / "s", tmp_path / "t", eval_split="train")


def test_the_budget_stage_measures_grpo_against_the_cold_start_on_validation_rows(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(RL_BUDGETS, "tiny", {"rl_steps": 1, "rl_prompts": 2, "rl_mini_batch": 8})
    out = tmp_path / "budget"
    argv = ["--student", "tiny-student", "--teacher", "tiny-teacher", "--out", str(out), "--budgets", "tiny"]
    result = main([*argv, "--seeds", "0", "1", "--rows", "4", "--workers", "1"])
    saved = json.loads((out / "budget.json").read_text())
    assert saved == json.loads(json.dumps(result)) and saved["split"] == "val" and saved["rows"] == 4
    row = saved["budgets"]["tiny"]
    assert row["fields"] == RL_BUDGETS["tiny"] and len(row["greedy"]) == len(row["sampled"]) == 2
    cold = saved["cold_start"]
    assert row["gain"]["greedy"]["by_seed"]["differences"] == pytest.approx([g - cold["greedy"] for g in row["greedy"]])
    assert row["gain"]["sampled"]["by_question"]["n"] == 4
    evaluated = json.loads((out / "tiny" / "eval" / "grpo-seed1.json").read_text())
    assert evaluated["rows"] == 4 and len(evaluated["per_question"]) == 4  # the validation rows, each scored
    assert saved["chosen"] == choose_budget({"tiny": row["gain"]})[0] and saved["reason"]
    assert "| tiny |" in (out / "budget.md").read_text()
    capsys.readouterr()
    main([*argv, "--seeds", "0", "1", "--rows", "4", "--workers", "1"])  # cached: nothing is trained again
    assert capsys.readouterr().out.count("RL: reusing") == 2
    with pytest.raises(SystemExit, match="the given teacher: model directory /nowhere does not exist"):
        main(["--student", "tiny-student", "--teacher", "/nowhere", "--out", str(tmp_path / "bad")])
