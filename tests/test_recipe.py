"""`make paper`: every stage of the recipe is a command the CLI accepts, and it resolves to what the stage means."""

from __future__ import annotations

import contextlib
import io

import pytest
import yaml

from helpers.cli import ROOT, load_cli
from iapo.experiments.recipe import main, stages


def resolved(command: tuple[str, ...]) -> dict:
    """The config a `python src/cli.py ...` stage runs with (`--print_config`: nothing is loaded or trained)."""
    args = [
        arg.replace("configs/", f"{ROOT}/configs/", 1) if arg.startswith("configs/") else arg for arg in command[2:]
    ]
    with pytest.raises(SystemExit), contextlib.redirect_stdout(io.StringIO()) as out:
        load_cli().main([*args, "--print_config"])
    return yaml.safe_load(out.getvalue())


def test_every_cli_stage_resolves_to_its_meaning():
    by_name = {stage.name: stage for stage in stages()}
    assert list(by_name) == [
        "teacher",
        "cold_start",
        "iapo",
        "grpo",
        "eval_no_tools",
        "eval_prompted",
        "eval_vtool_r1",
        "eval_grpo",
        "eval_iapo",
        "table",
    ]
    teacher = resolved(by_name["teacher"].command)["model"]["init_args"]
    assert teacher["student"]["name"] == "Qwen/Qwen2.5-VL-7B-Instruct" and teacher["student"]["lora"]
    assert set(teacher["rewards"]) == {"accuracy", "format"}  # GRPO

    cold = resolved(by_name["cold_start"].command)
    assert cold["model"]["init_args"]["student"]["name"] == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert set(cold["model"]["init_args"]["rewards"]) == {"accuracy", "format"}

    iapo, grpo = resolved(by_name["iapo"].command), resolved(by_name["grpo"].command)
    for config, rewards in ((iapo, {"accuracy", "format", "attribution"}), (grpo, {"accuracy", "format"})):
        args = config["model"]["init_args"]
        assert args["student"]["adapter"] == "logs/recipe/cold_start/adapters/last"
        assert set(args["rewards"]) == rewards
    assert iapo["model"]["init_args"]["teacher"]["adapter"] == "logs/recipe/teacher/adapters/last"
    assert iapo["model"]["init_args"]["attribution"]["method"] == "integrated_gradients"
    assert grpo["trainer"]["default_root_dir"] == "logs/recipe/grpo" != iapo["trainer"]["default_root_dir"]
    assert grpo["model"]["init_args"]["ppo"] == iapo["model"]["init_args"]["ppo"]
    assert grpo["trainer"]["max_steps"] == iapo["trainer"]["max_steps"]  # the same budget

    vtool = resolved(by_name["eval_vtool_r1"].command)
    assert vtool["model"]["init_args"]["sampling"]["protocol"] == "vtool"
    assert vtool["data"]["test"] == [
        {
            "name": "paper_benchmarks",
            "split": "test",
            "n": None,
            "path": None,
            "seed": 0,
            "image_root": None,
            "allow_outside_root": False,
        }
    ]
    no_tools = resolved(by_name["eval_no_tools"].command)
    assert no_tools["model"]["init_args"]["tools"] is False
    assert no_tools["trainer"]["callbacks"][0]["init_args"] == {
        "output_dir": "logs/recipe/eval",
        "run_name": "qwen2.5-vl-3b-no-tools",
    }
    assert "--paper" in by_name["table"].command


def test_printing_the_recipe_runs_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.count("(to do,") == 10 and "python src/cli.py fit --config configs/iapo.yaml" in out
    assert not (tmp_path / "logs").exists()
    with pytest.raises(SystemExit):
        main(["--only", "teachr"])
