"""`make paper`: every stage of the recipe is a command the CLI accepts and means what the stage says, and the
rehearsal (`make paper REHEARSE=1`) runs every stage on data files in the official layouts, through those commands."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import yaml

from helpers.cli import ROOT, load_cli
from iapo.evaluation.results import PAPER_TEST_SETS
from iapo.experiments.recipe import EVAL_ROWS, main, stages


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
        test_sets = config["data"]["test"]
        assert [(s["name"], s["split"]) for s in test_sets] == [("paper_benchmarks", "heldout")]
    attribution = iapo["model"]["init_args"]["attribution"]
    assert iapo["model"]["init_args"]["teacher"]["adapter"] == "logs/recipe/teacher/adapters/last"
    assert attribution["method"] == "integrated_gradients" and attribution["missing_target"] == "exclude"
    assert grpo["trainer"]["default_root_dir"] == "logs/recipe/grpo" != iapo["trainer"]["default_root_dir"]
    assert grpo["model"]["init_args"]["ppo"] == iapo["model"]["init_args"]["ppo"]
    assert grpo["trainer"]["max_steps"] == iapo["trainer"]["max_steps"]  # the same budget

    for name in ("eval_no_tools", "eval_prompted", "eval_vtool_r1", "eval_grpo", "eval_iapo"):
        [test_set] = resolved(by_name[name].command)["data"]["test"]
        assert (test_set["name"], test_set["split"]) == ("paper_benchmarks", "heldout"), name  # same rows for all
    vtool = resolved(by_name["eval_vtool_r1"].command)["model"]["init_args"]
    assert vtool["sampling"]["protocol"] == "vtool" and vtool["student"]["name"] == "VTOOL/VTOOL-R1-3B-L-V2"
    no_tools = resolved(by_name["eval_no_tools"].command)
    assert no_tools["model"]["init_args"]["tools"] is False
    writer = no_tools["callbacks"]["eval_results"]
    assert writer["class_path"].endswith("EvalResultsWriter") and writer["init_args"] == {
        "output_dir": "logs/recipe/eval",
        "run_name": "qwen2.5-vl-3b-no-tools",
    }
    assert "--paper" in by_name["table"].command


def test_printing_the_recipe_runs_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--out", str(tmp_path / "recipe")]) == 0
    out = capsys.readouterr().out
    assert out.count("(to do,") == 10 and "python src/cli.py fit --config configs/iapo.yaml" in out
    assert not (tmp_path / "recipe").exists()
    with pytest.raises(SystemExit):
        main(["--only", "teachr"])
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "paper_table.md").write_text("a real run's table")
    with pytest.raises(SystemExit):  # a rehearsal never empties a folder it did not write
        main(["--rehearse", "--out", str(tmp_path / "results"), "--root", str(ROOT)])
    with pytest.raises(SystemExit):  # running needs a checkout: here is none
        main(["--rehearse", "--out", str(tmp_path / "new")])
    assert not (tmp_path / "new").exists()
    assert (tmp_path / "results" / "paper_table.md").read_text() == "a real run's table"


def test_the_rehearsal_runs_every_stage_on_files_in_the_official_layouts(capfd, tmp_path):
    out = tmp_path / "rehearsal"
    assert main(["--rehearse", "--out", str(out)]) == 0
    printed = capfd.readouterr().out
    for index, stage in enumerate(stages(out), start=1):
        assert f"[{index}/10] {stage.name} finished in" in printed
        assert stage.done(), stage.name
    assert "wall time per stage: teacher" in printed
    iapo_config = yaml.safe_load((out / "iapo" / "csv" / "version_0" / "config.yaml").read_text())
    settings = iapo_config["model"]["init_args"]
    assert settings["teacher"]["name"] == "tiny-teacher" and settings["teacher"]["adapter"].endswith(
        "teacher/adapters/last"
    )
    assert settings["student"]["quantization"] == "nf4"  # only names and budgets differ from the GPU run
    for label in EVAL_ROWS:
        results = json.loads((out / "eval" / label / "results.json").read_text())
        assert set(results["benchmarks"]) == set(PAPER_TEST_SETS), label
        for name, bench in results["benchmarks"].items():
            excluded = "excludes" in bench["selection"]
            assert excluded == name.startswith("tablevqa_"), (label, name)
            assert bench["selection"]["split"] == "heldout" and bench["rows_scored"] > 0
    table = (out / "paper_table.md").read_text()
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:7]] == list(EVAL_ROWS)
    assert (out / "data" / "tablevqa_vwtq" / "test_data_with_bounding_box " / "tablevqa_wbb.json").is_file()
