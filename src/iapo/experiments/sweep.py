"""Check a W&B sweep file against the project's CLI, then create the sweep.

    python -m iapo.experiments.sweep configs/sweep.yaml [--project iapo] [--entity TEAM]    # prints `wandb agent ENTITY/PROJECT/ID`
    wandb agent ENTITY/PROJECT/ID                                              # on each machine, from the repo root

The W&B agent starts every run as the sweep's `command` with `${args}` expanded to `--<name>=<value>`, so parameter
names must be LightningCLI's dotted keys (`model.init_args.ppo.eps_high`). A misspelled name fails every run of the
sweep, and a value followed by another `--config` is silently overridden; both are caught here before any GPU time is
spent: the agent's command is built for sample values and parsed in-process by the project's LightningCLI, its classes
are built (no model is loaded: that happens in `configure_model`), and every value must arrive at its config field.
Creating the sweep needs the W&B server and credentials (`wandb login` or WANDB_API_KEY); offline the check still
runs, then the command says what is missing and exits 1 (2 when the sweep file itself is wrong).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import wandb
import yaml
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningCLI

from iapo.cli import CLI_OPTIONS, IAPOCLI
from iapo.training.loggers import wandb_credentials_available

DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]
"""The agent's command when the sweep file has none (wandb/sdk/launch/sweeps/utils.py)."""

PARAMETER_MACROS = {
    "${args}",
    "${args_no_hyphens}",
    "${args_no_boolean_flags}",
    "${args_no_equals}",
    "${args_json}",
    "${args_json_file}",
    "${args_append_hydra}",
    "${args_override_hydra}",
}
ENVVAR_MACRO = re.compile(r"\$\{envvar:([A-Z0-9_]*)\}")
METHODS = ("grid", "random", "bayes")


class SweepError(ValueError):
    """A sweep file the agent could not run as intended; the message names the parameters and the fix."""


def load_sweep(path: str | Path) -> dict:
    """Read a sweep YAML file and check its structure (method, metric, parameters, command)."""
    try:
        config = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise SweepError(f"cannot read sweep file {path}: {err}") from err
    if not isinstance(config, dict):
        raise SweepError(f"{path}: a sweep file is a mapping with method, metric, parameters and command")
    if config.get("method") not in METHODS:
        raise SweepError(f"{path}: `method` must be one of {METHODS}, got {config.get('method')!r}")
    if config["method"] == "bayes" and not (config.get("metric") or {}).get("name"):
        raise SweepError(f"{path}: `method: bayes` needs `metric: {{name: ..., goal: maximize|minimize}}`")
    parameters = config.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        raise SweepError(f"{path}: `parameters` must map dotted config keys to their values or distributions")
    rng = random.Random(0)
    for name, spec in parameters.items():
        sample_value(name, spec, rng)  # raises on a specification W&B would not accept
    return config


def _quantized(sample: Callable[[dict, random.Random], float]) -> Callable[[dict, random.Random], float | int]:
    def draw(spec: dict, rng: random.Random) -> float | int:
        q = spec.get("q", 1)
        value = round(sample(spec, rng) / q) * q
        return int(value) if isinstance(q, int) else value

    return draw


def _log_uniform_values(spec: dict, rng: random.Random) -> float:
    return math.exp(rng.uniform(math.log(spec["min"]), math.log(spec["max"])))


# How the W&B sweep controller draws each distribution (wandb/sweeps, params.py); only the support matters here.
_SAMPLERS: dict[str, Callable[[dict, random.Random], Any]] = {
    "constant": lambda spec, rng: spec["value"],
    "categorical": lambda spec, rng: rng.choice(spec["values"]),
    "categorical_w_probabilities": lambda spec, rng: rng.choices(spec["values"], weights=spec["probabilities"])[0],
    "int_uniform": lambda spec, rng: rng.randint(spec["min"], spec["max"]),
    "uniform": lambda spec, rng: rng.uniform(spec["min"], spec["max"]),
    "log_uniform": lambda spec, rng: math.exp(rng.uniform(spec["min"], spec["max"])),
    "log_uniform_values": _log_uniform_values,
    "inv_log_uniform": lambda spec, rng: math.exp(-rng.uniform(spec["min"], spec["max"])),
    "inv_log_uniform_values": _log_uniform_values,  # 1/X log-uniform on [1/max, 1/min] is X on [min, max]
    "normal": lambda spec, rng: rng.gauss(spec.get("mu", 0.0), spec.get("sigma", 1.0)),
    "log_normal": lambda spec, rng: rng.lognormvariate(spec.get("mu", 0.0), spec.get("sigma", 1.0)),
    "beta": lambda spec, rng: rng.betavariate(spec.get("a", 1.0), spec.get("b", 1.0)),
}
_SAMPLERS.update(
    {
        f"q_{name}": _quantized(_SAMPLERS[name])
        for name in ("uniform", "log_uniform", "log_uniform_values", "normal", "log_normal", "beta")
    }
)


def _distribution(spec: dict) -> str | None:
    """The distribution W&B infers for a parameter (the defaults of its sweep-config schema)."""
    if "distribution" in spec:
        return spec["distribution"]
    if "value" in spec:
        return "constant"
    if "values" in spec:
        return "categorical_w_probabilities" if "probabilities" in spec else "categorical"
    bounds = (spec.get("min"), spec.get("max"))
    if all(isinstance(b, int) and not isinstance(b, bool) for b in bounds):
        return "int_uniform"
    if all(isinstance(b, int | float) for b in bounds):
        return "uniform"
    return None


def sample_value(name: str, spec: dict, rng: random.Random) -> Any:
    """One value of parameter `name` drawn from its sweep specification, as the W&B controller could propose it."""
    if not isinstance(spec, dict):
        raise SweepError(f"parameter {name}: expected a mapping (value, values or distribution), got {spec!r}")
    if "parameters" in spec:
        raise SweepError(
            f"parameter {name}: nested `parameters` reach the command as one dict-valued flag; "
            f"use one dotted name per field (e.g. {name}.<field>)"
        )
    distribution = _distribution(spec)
    if distribution is None:
        raise SweepError(f"parameter {name}: give `value`, `values`, or `min` and `max` (with a `distribution`)")
    if distribution not in _SAMPLERS:
        raise SweepError(f"parameter {name}: unknown distribution {distribution!r}; known: {sorted(_SAMPLERS)}")
    try:
        return _SAMPLERS[distribution](spec, rng)
    except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError) as err:
        raise SweepError(f"parameter {name}: invalid {distribution} specification {spec!r} ({err!r})") from err


def agent_command(sweep_config: dict, values: dict[str, Any]) -> list[str]:
    """The argv the W&B agent runs for parameter `values` (its `Agent._command_run` macro rules).

    `${envvar:NAME}` becomes the variable's value (its name when unset), inside any token; a token that is exactly
    `${env}` becomes `/usr/bin/env` (nothing on Windows), `${interpreter}` `python`, `${program}` the `program` key,
    `${args}` one `--name=value` per parameter, `${args_no_hyphens}` `name=value`, `${args_no_equals}` `--name value`,
    `${args_no_boolean_flags}` like `${args}` but `--name` for true and nothing for false, `${args_json}` one JSON
    object, `${args_append_hydra}` / `${args_override_hydra}` `+name=value` / `++name=value`; any other `${...}`
    token expands to nothing. Values are written with Python's `str` (`1e-05`, `True`, `[3, 3]`).
    """
    flags = [f"{name}={value}" for name, value in values.items()]
    macros = {
        "env": [] if platform.system() == "Windows" else ["/usr/bin/env"],
        "interpreter": ["python"],
        "program": [str(sweep_config["program"])] if sweep_config.get("program") else [],
        "args": [f"--{flag}" for flag in flags],
        "args_no_hyphens": flags,
        "args_no_equals": [item for name, value in values.items() for item in (f"--{name}", str(value))],
        "args_no_boolean_flags": [
            f"--{name}" if value is True else f"--{name}={value}"
            for name, value in values.items()
            if value is not False
        ],
        "args_json": [json.dumps(values)],
        "args_append_hydra": [f"+{flag}" for flag in flags],
        "args_override_hydra": [f"++{flag}" for flag in flags],
    }
    command: list[str] = []
    for token in sweep_config.get("command") or DEFAULT_COMMAND:
        token = ENVVAR_MACRO.sub(lambda match: os.environ.get(match.group(1), match.group(1)), str(token))
        if token == "${args_json_file}":
            raise SweepError("${args_json_file} names a file the agent writes at run time; use ${args}")
        if token.startswith("${") and token.endswith("}"):
            command += macros.get(token[2:-1], [])
        else:
            command.append(token)
    return command


class _ParseOnlyCLI(IAPOCLI):
    """The project's CLI (the classes and options of src/cli.py) that stops after parsing the arguments."""

    def instantiate_classes(self) -> None:
        pass


def _cli_arguments(argv: list[str]) -> list[str]:
    """The arguments the agent's command gives src/cli.py, without the subcommand (`fit`)."""
    program = next((i for i, token in enumerate(argv) if token.endswith(".py")), None)
    if program is None:
        raise SweepError(f"the sweep's command runs no Python script (expected `python src/cli.py fit ...`): {argv}")
    arguments = argv[program + 1 :]
    if not arguments or arguments[0] not in LightningCLI.subcommands():
        raise SweepError(f"the sweep's command must name a subcommand ({', '.join(LightningCLI.subcommands())})")
    return arguments[1:]


def _parser(arguments: list[str]):
    """The project's LightningCLI parser and its config for `arguments` (parse errors raise, never exit)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
        options = {**CLI_OPTIONS, "parser_kwargs": {**CLI_OPTIONS["parser_kwargs"], "exit_on_error": False}}
        cli = _ParseOnlyCLI(**options, run=False, args=arguments)
    return cli.parser, cli.config


def _instantiate(parser, config) -> None:
    """Build the model, data module, loggers and callbacks of `config` (as LightningCLI does; no model weights are
    loaded before `configure_model`), so that values the classes reject are found too."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        parser.instantiate_classes(config)


CHECK_ERRORS = (argparse.ArgumentError, ValueError, TypeError)
"""What jsonargparse raises for an unknown key or an unparsable value, and what a class raises for a rejected one."""


def _reason(message: str) -> str:
    """The innermost line of a jsonargparse error (the one that says what was wrong)."""
    lines = [line for line in message.splitlines() if line.strip() and "NoneType" not in line]
    lines = [line for line in lines if not line.strip().startswith(("Given value", "Subtypes", "Errors:"))]
    return max(lines, key=lambda line: len(line) - len(line.lstrip())).strip(" -") if lines else message


def _resolved(config: Namespace, name: str) -> Any:
    """The value flag `--name` set in `config`, following dict-valued fields (`model.init_args.rewards.format`)."""
    node: Any = config
    for part in _field(config, name).split("."):
        node = node.get(part) if isinstance(node, Namespace | dict) else None
    return node


def _field(config: Namespace, name: str) -> str:
    """The config key that flag `--name` sets: jsonargparse also takes a class's arguments without `init_args.`
    (`--model.lr` sets `model.init_args.lr`)."""
    key: list[str] = []
    node: Any = config
    for part in name.split("."):
        if isinstance(node, Namespace) and part not in node and "init_args" in node:
            key.append("init_args")
            node = node["init_args"]
        key.append(part)
        node = node.get(part) if isinstance(node, Namespace) else None
    return ".".join(key)


def _same(requested: Any, resolved: Any) -> bool:
    if isinstance(resolved, bool) or isinstance(requested, bool):
        return str(requested).lower() == str(resolved).lower()
    if isinstance(resolved, int | float):
        try:
            return math.isclose(float(requested), float(resolved), rel_tol=1e-9)
        except (TypeError, ValueError):
            return False
    if isinstance(resolved, list | tuple) and isinstance(requested, list | tuple):
        return len(resolved) == len(requested) and all(map(_same, requested, resolved))
    return resolved == requested


def check_routing(
    sweep_config: dict, base_args: Sequence[str] = (), values: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Parse the agent's command with the project's LightningCLI and return `{name: value the run gets}`.

    The command is built with `agent_command`, parsed exactly as `src/cli.py` parses it, and its classes are
    instantiated without loading any model, so a value a class rejects (e.g. an unknown attribution method) is found.

    Args:
        sweep_config: the sweep file's content.
        base_args: CLI arguments inserted just before the parameters (e.g. `["--config", "configs/tiny.yaml"]`).
        values: the parameter values to route; by default one sample of each parameter, drawn to differ from what
            the run gets without it, so that an override cannot go unnoticed.

    Raises:
        SweepError naming every parameter that is not a config field, does not parse into its field's type, is
        rejected by its class, or does not arrive at its field (overridden by an argument after it).
    """
    template = list(sweep_config.get("command") or DEFAULT_COMMAND)
    at = next((i for i, token in enumerate(template) if token in PARAMETER_MACROS), None)
    if at is None:
        raise SweepError("the sweep's command never passes the parameters: add ${args} at its end")
    config = {**sweep_config, "command": template[:at] + list(base_args) + template[at:]}
    try:
        parser, baseline = _parser(_cli_arguments(agent_command(config, {})))
        _instantiate(parser, baseline)
    except CHECK_ERRORS as err:
        raise SweepError(f"the sweep's command fails even without parameters: {_reason(str(err))}") from err
    if values is None:
        rng = random.Random(0)
        values = {}
        for name, spec in sweep_config["parameters"].items():
            values[name] = sample_value(name, spec, rng)
            for _ in range(20):
                if not _same(values[name], _resolved(baseline, name)):
                    break
                values[name] = sample_value(name, spec, rng)

    def load(subset: dict[str, Any]):
        parsed = parser.parse_args(_cli_arguments(agent_command(config, subset)))
        _instantiate(parser, parsed)
        return parsed

    try:
        parsed = load(values)
    except CHECK_ERRORS as err:
        failures = []
        for name, value in values.items():
            try:
                load({name: value})
            except CHECK_ERRORS as single:
                failures.append(f"{name}={value}: {_reason(str(single))}")
        detail = "\n  ".join(failures) or _reason(str(err))
        raise SweepError(f"sweep parameters that do not reach a config field or are rejected:\n  {detail}") from err
    resolved = {name: _resolved(parsed, name) for name in values}
    lost = [
        f"{name}: sent {values[name]!r}, the run gets {resolved[name]!r}"
        for name in values
        if not _same(values[name], resolved[name])
    ]
    if lost:
        raise SweepError(
            "sweep values overridden before they reach their fields (keep ${args} at the end of `command`):\n  "
            + "\n  ".join(lost)
        )
    return resolved


def wandb_offline_reason() -> str | None:
    """What stops this machine from creating a sweep, with the fix; None when W&B looks usable."""
    mode = os.environ.get("WANDB_MODE")
    if mode in ("offline", "dryrun", "disabled"):
        return f"WANDB_MODE={mode}: unset it on a machine that reaches the W&B server"
    if not wandb_credentials_available():
        return "no W&B credentials: run `wandb login` or set WANDB_API_KEY (WANDB_BASE_URL for a private server)"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iapo.experiments.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_file", help="sweep YAML, e.g. configs/sweep.yaml (run from the repository root)")
    parser.add_argument("--project", default=None, help="W&B project (default: the file's `project`, else iapo)")
    parser.add_argument("--entity", default=None, help="W&B entity (default: the file's `entity`, else yours)")
    args = parser.parse_args(argv)
    try:
        config = load_sweep(args.sweep_file)
        resolved = check_routing(config)
    except SweepError as err:
        print(f"error: {args.sweep_file}: {err}", file=sys.stderr)
        return 2
    print(f"{args.sweep_file}: all {len(resolved)} parameters reach their config fields:")
    for name, value in resolved.items():
        print(f"  {name} (e.g. {value!r})")
    reason = wandb_offline_reason()
    if reason:
        print(f"error: the sweep was not created: creating one needs the W&B server; {reason}", file=sys.stderr)
        return 1
    project = args.project or config.get("project") or "iapo"
    entity = args.entity or config.get("entity")
    try:
        sweep_id = wandb.sweep(config, entity=entity, project=project)
        entity = entity or os.environ.get("WANDB_ENTITY") or wandb.Api().default_entity
    except Exception as err:  # the client raises many kinds (network, auth, validation); none is a crash of ours
        print(f"error: W&B did not create the sweep (or did not say for which entity): {err}", file=sys.stderr)
        return 1
    print(f"wandb agent {entity}/{project}/{sweep_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
