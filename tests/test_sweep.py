"""configs/sweep.yaml: every swept value reaches its LightningCLI field through the W&B agent's command; misrouted
names and overridden values are caught; the agent's macro expansion; `python -m iapo.experiments.sweep` offline."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest
import yaml
from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

from helpers.cli import ROOT
from iapo.experiments.sweep import SweepError, agent_command, check_routing, load_sweep, main, sample_value

TINY = ["--config", "configs/tiny.yaml"]


@pytest.fixture
def sweep(monkeypatch) -> dict:
    monkeypatch.chdir(ROOT)  # the sweep's command names configs relative to the repository root, as the agent runs it
    return load_sweep(ROOT / "configs" / "sweep.yaml")


def sampled(config: dict, seed: int) -> dict:
    rng = random.Random(seed)
    return {name: sample_value(name, spec, rng) for name, spec in config["parameters"].items()}


def test_sweep_file_covers_the_knobs(sweep):
    assert sweep["method"] == "bayes"
    assert sweep["metric"] == {"name": "val/acc", "goal": "maximize"}
    assert set(sweep["parameters"]) == {
        "model.init_args.rewards.attribution",
        "model.init_args.lr",
        "model.init_args.ppo.eps_high",
        "model.init_args.group_size",
        "model.init_args.ppo.kl_beta",
        "model.init_args.attribution.method",
    }
    assert sweep["parameters"]["model.init_args.lr"]["distribution"] == "log_uniform_values"
    assert sweep["command"][-1] == "${args}"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_sampled_value_reaches_its_field(sweep, seed):
    values = sampled(sweep, seed)
    assert check_routing(sweep, TINY, values) == values


def test_default_check_picks_values_that_differ_from_the_configs(sweep):
    resolved = check_routing(sweep, TINY)
    assert resolved["model.init_args.group_size"] != 4  # tiny.yaml's value: a silent override would show
    assert resolved["model.init_args.lr"] != 1.0e-4


@pytest.mark.parametrize("name", ["model.init_args.ppo.eps_hihg", "model.init_args.learning_rate", "lr"])
def test_misspelled_parameter_is_named(sweep, name):
    config = {**sweep, "parameters": {**sweep["parameters"], name: {"values": [0.3]}}}
    with pytest.raises(SweepError, match="do not reach a config field") as caught:
        check_routing(config, TINY)
    assert name in str(caught.value)
    assert "model.init_args.lr=" not in str(caught.value)  # only the bad one is blamed


def test_class_arguments_without_init_args_route_too(sweep):
    """jsonargparse takes `--model.lr` for `--model.init_args.lr`; the check follows it to that field."""
    config = {**sweep, "parameters": {"model.ppo.kl_beta": {"values": [0.01]}, "model.lr": {"value": 3e-5}}}
    assert check_routing(config, TINY) == {"model.ppo.kl_beta": 0.01, "model.lr": 3e-5}


def test_value_a_class_rejects_is_named(sweep):
    values = {**sampled(sweep, 0), "model.init_args.attribution.method": "occlussion"}
    with pytest.raises(SweepError, match="attribution.method=occlussion: attribution method must be one of"):
        check_routing(sweep, TINY, values)


def test_value_overridden_by_a_later_config_is_caught(sweep):
    config = {**sweep, "command": [*sweep["command"], "--config", "configs/tiny.yaml"]}
    with pytest.raises(SweepError, match="overridden") as caught:
        check_routing(config)
    assert "model.init_args.lr: sent" in str(caught.value)


def test_parameters_must_be_passed_as_flags(sweep):
    no_hyphens = {**sweep, "command": [*sweep["command"][:-1], "${args_no_hyphens}"]}
    with pytest.raises(SweepError, match="do not reach a config field"):
        check_routing(no_hyphens, TINY)
    with pytest.raises(SweepError, match="never passes the parameters"):
        check_routing({**sweep, "command": sweep["command"][:-1]})


def test_every_value_type_routes(sweep):
    """float, int, str, bool, list, nested dataclass fields, and the data and trainer groups."""
    config = {
        **sweep,
        "parameters": {
            "model.init_args.rewards.format": {"min": 0.0, "max": 0.5},
            "model.init_args.warmup_steps": {"min": 1, "max": 9},
            "model.init_args.advantage_scale": {"values": ["batch"]},
            "model.init_args.sampling.do_sample": {"value": False},
            "model.init_args.attribution.grid": {"value": [2, 4]},
            "model.init_args.ppo.aggregation": {"values": ["sequence-mean"]},
            "data.batch_size": {"distribution": "q_uniform", "min": 2, "max": 6, "q": 2},
            "trainer.max_steps": {"distribution": "int_uniform", "min": 5, "max": 9},
        },
    }
    values = sampled(config, 0)
    resolved = check_routing(config, TINY, values)
    assert resolved["model.init_args.sampling.do_sample"] is False
    assert tuple(resolved["model.init_args.attribution.grid"]) == (2, 4)
    assert {k: v for k, v in resolved.items() if k != "model.init_args.attribution.grid"} == {
        k: v for k, v in values.items() if k != "model.init_args.attribution.grid"
    }


def test_sample_value_follows_the_distributions():
    rng = random.Random(0)
    for _ in range(50):
        assert 1e-6 <= sample_value("a", {"distribution": "log_uniform_values", "min": 1e-6, "max": 1e-4}, rng) <= 1e-4
        assert sample_value("b", {"min": 1, "max": 3}, rng) in (1, 2, 3)
        assert sample_value("c", {"distribution": "q_uniform", "min": 0, "max": 10, "q": 5}, rng) in (0, 5, 10)
        assert sample_value("d", {"values": ["x", "y"], "probabilities": [0.0, 1.0]}, rng) == "y"
    with pytest.raises(SweepError, match="nested"):
        sample_value("e", {"parameters": {"lr": {"value": 1}}}, rng)
    with pytest.raises(SweepError, match="unknown distribution"):
        sample_value("f", {"distribution": "lognormal", "min": 1, "max": 2}, rng)
    with pytest.raises(SweepError, match="give `value`"):
        sample_value("g", {"min": 1}, rng)


def test_agent_command_expands_macros_like_the_agent(monkeypatch):
    monkeypatch.setenv("IAPO_TEST_CONFIG", "configs/tiny.yaml")
    monkeypatch.delenv("IAPO_UNSET", raising=False)
    values = {"model.init_args.lr": 1e-05, "model.init_args.group_size": 8, "model.init_args.sampling.do_sample": False}
    config = {
        "program": "src/cli.py",
        "command": [
            "${env}",
            "${interpreter}",
            "${program}",
            "fit",
            "--config=${envvar:IAPO_TEST_CONFIG}",
            "${envvar:IAPO_UNSET}",
            "${unknown}",
            "${args}",
            "${args_no_hyphens}",
        ],
    }
    env = [] if sys.platform == "win32" else ["/usr/bin/env"]
    assert agent_command(config, values) == [
        *env,
        "python",
        "src/cli.py",
        "fit",
        "--config=configs/tiny.yaml",
        "IAPO_UNSET",
        "--model.init_args.lr=1e-05",
        "--model.init_args.group_size=8",
        "--model.init_args.sampling.do_sample=False",
        "model.init_args.lr=1e-05",
        "model.init_args.group_size=8",
        "model.init_args.sampling.do_sample=False",
    ]
    assert agent_command({"program": "train.py"}, {"a": 1}) == [*env, "python", "train.py", "--a=1"]
    # every list-valued macro matches the installed W&B agent's own expansion
    reference = create_sweep_command_args({"args": {name: {"value": value} for name, value in values.items()}})
    for macro in ("args", "args_no_hyphens", "args_no_equals", "args_no_boolean_flags", "args_json"):
        assert agent_command({"command": [f"${{{macro}}}"]}, values) == reference[macro], macro
    with pytest.raises(SweepError, match="args_json_file"):
        agent_command({"command": ["${args_json_file}"]}, values)


def test_cli_offline_prints_a_clear_error_and_exits_non_zero():
    env = {**os.environ, "WANDB_MODE": "offline"}
    result = subprocess.run(
        [sys.executable, "-m", "iapo.experiments.sweep", "configs/sweep.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1, result.stderr
    assert "all 6 parameters reach their config fields" in result.stdout
    assert "needs the W&B server" in result.stderr and "WANDB_MODE=offline" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_without_credentials_or_with_a_bad_file(sweep, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    assert main(["configs/sweep.yaml"]) == 1
    assert "wandb login" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**sweep, "parameters": {"model.init_args.lrr": {"value": 0.1}}}))
    assert main([str(bad)]) == 2
    assert "model.init_args.lrr" in capsys.readouterr().err
