"""The project's LightningCLI: the LightningModule named by `model.class_path` (`IAPOModule`, `SFTModule`) and
`VQADataModule`.

Run it through `src/cli.py` (`python src/cli.py fit --config configs/iapo.yaml`); `iapo.experiments.sweep` parses sweep
commands with the same class and options.
"""

from __future__ import annotations

import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import yaml
from jsonargparse import Namespace, set_parsing_settings
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import Logger

from iapo.data.datamodule import VQADataModule
from iapo.serialization import readable_directory
from iapo.settings_errors import settings_error

# configs write `${trainer.default_root_dir}`: resolved within the subcommand's config (`fit`, `test`, ...)
set_parsing_settings(omegaconf_absolute_to_relative_paths=True)

CLI_OPTIONS = {
    "model_class": L.LightningModule,
    "datamodule_class": VQADataModule,
    "subclass_mode_model": True,
    # omegaconf+: `${trainer.default_root_dir}` in a config resolves after every overlay is merged
    "parser_kwargs": {"parser_mode": "omegaconf+"},
}
"""Any LightningModule by `model.class_path` (`iapo.training.iapo_module.IAPOModule`, `iapo.training.sft_module.SFTModule`); configs name it."""


LIGHTNING_CKPT_NAMES = ("last", "best", "hpc")
"""`--ckpt_path` values that Lightning resolves itself (as are ``registry...`` and remote ``scheme://`` paths)."""


def check_checkpoint_file(path: str) -> None:
    """Exit with one line naming `path` when it is not a readable PyTorch checkpoint, before Lightning's loader
    fails deep inside `torch.load` (a zero-byte file gives a bare `EOFError` there)."""
    if path in LIGHTNING_CKPT_NAMES or path.startswith("registry") or "://" in path:
        return
    file = Path(path)
    if not file.exists():
        raise SystemExit(f"--ckpt_path {path} does not exist; give a .ckpt file, `last`, or an adapter directory")
    try:
        with file.open("rb") as handle:
            head = handle.read(1)
    except OSError as err:
        raise SystemExit(f"--ckpt_path {path} cannot be read: {err.strerror or err}") from None
    if not head:
        raise SystemExit(f"--ckpt_path {path} is empty (0 bytes; its save was interrupted): use an earlier checkpoint")
    if not zipfile.is_zipfile(file) and head != b"\x80":  # torch.save writes a zip; old files a pickle
        raise SystemExit(f"--ckpt_path {path} is not a PyTorch checkpoint (truncated, or another kind of file)")


NAMED_GROUPS = {"callbacks": Callback, "loggers": Logger}
"""Top-level config keys holding named entries, and the class every entry must be."""


def named_entry_names(args: Sequence[str]) -> dict[str, list[str]]:
    """The entry names under `callbacks:` / `loggers:` in the config files (`--config FILE`) and flags
    (`--callbacks.NAME...`) of a command line, in order of appearance. Each becomes an argument of its own, so that
    layered configs merge entries by name; a file that cannot be read is left for jsonargparse to report."""
    names: dict[str, list[str]] = {group: [] for group in NAMED_GROUPS}
    for index, token in enumerate(args):
        path = args[index + 1] if token == "--config" and index + 1 < len(args) else None
        if token.startswith("--config="):
            path = token.split("=", 1)[1]
        found = config_entry_names(Path(path)) if path is not None else []
        for group in NAMED_GROUPS:
            if token.startswith(f"--{group}."):
                found.append((group, token[len(group) + 3 :].split("=", 1)[0].split(".", 1)[0]))
        for group, name in found:
            if isinstance(name, str) and name not in names[group]:
                names[group].append(name)
    return names


def config_entry_names(path: Path) -> list[tuple[str, object]]:
    """(group, name) of every named entry in one config file, at its top level or under a subcommand's key."""
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    if not isinstance(config, dict):
        return []
    sections = [config, *(config[sub] for sub in LightningCLI.subcommands() if isinstance(config.get(sub), dict))]
    return [
        (group, name)
        for section in sections
        for group in NAMED_GROUPS
        if isinstance(section.get(group), dict)
        for name in section[group]
    ]


def named_entries(group: Namespace | None) -> list:
    """The instances of a `callbacks:` / `loggers:` group in the order the configs named them, `null` ones left out."""
    return [] if group is None else [entry for entry in vars(group).values() if entry is not None]


class IAPOCLI(LightningCLI):
    """LightningCLI with named callbacks and loggers: configs write `callbacks: {checkpoint: {class_path, init_args},
    ...}` (and `loggers:`), and a later config or flag changes one entry by its name
    (`--callbacks.adapters.init_args.every_n_steps=10`), adds one, or removes one (`name: null`) — where Lightning's
    `trainer.callbacks` list is replaced whole by the last config that gives it. Both may be used; the named entries
    join the list."""

    def __init__(self, *positional, args: ArgsType = None, **kwargs) -> None:
        command_line = sys.argv[1:] if args is None else args
        self.entry_names = named_entry_names(list(command_line) if isinstance(command_line, list | tuple) else [])
        super().__init__(*positional, args=args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for group, base in NAMED_GROUPS.items():
            for name in self.entry_names[group]:
                parser.add_argument(
                    f"--{group}.{name}", type=base | None, default=None, help=f"{base.__name__} `{name}`"
                )

    def _instantiate_trainer(self, config: dict, callbacks: list[Callback]) -> L.Trainer:
        """Add the named callbacks and loggers that are not `null` to the trainer's arguments."""
        loggers = named_entries(self._get(self.config_init, "loggers"))
        if loggers:
            if config.get("logger") not in (None, True):
                raise SystemExit("error: give loggers either as `trainer.logger` or as named `loggers:`, not both")
            config = {**config, "logger": loggers}
        named_callbacks = named_entries(self._get(self.config_init, "callbacks"))
        return super()._instantiate_trainer(config, [*callbacks, *named_callbacks])

    def _parse_ckpt_path(self) -> None:
        """Check a `--ckpt_path` file before Lightning reads its hyper-parameters with `torch.load`."""
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if path and not readable_directory(Path(path)).is_dir():
            check_checkpoint_file(str(path))
        super()._parse_ckpt_path()

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict:
        """Route an adapter directory given as `--ckpt_path` to the student instead of Lightning's loader."""
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        path = kwargs.get("ckpt_path")
        adapter = readable_directory(Path(path)) if path else None
        if adapter is not None and adapter.is_dir():
            if subcommand == "fit":
                raise SystemExit(f"--ckpt_path {path} is a directory; `fit` resumes from a .ckpt file (or `last`)")
            if adapter != Path(path):
                print(f"--ckpt_path {path}: its last save was interrupted; reading the previous version {adapter}")
            self.model.student_settings.adapter = str(adapter)
            kwargs["ckpt_path"] = None
        return kwargs


def main(args: list[str] | None = None) -> LightningCLI:
    """Run the CLI; an invalid setting found while building the model or data ends it with its one line, not with
    jsonargparse's chain of "does not validate against any of the Union subtypes" tracebacks."""
    try:
        return IAPOCLI(**CLI_OPTIONS, save_config_kwargs={"overwrite": True}, args=args)
    except ValueError as error:
        cause = settings_error(error)
        if cause is None:
            raise
        raise SystemExit(f"error: {cause}") from None
