"""The project's LightningCLI: the LightningModule named by `model.class_path` (`IAPOModule`, `SFTModule`) and
`VQADataModule`.

Run it through `src/cli.py` (`python src/cli.py fit --config configs/iapo.yaml`); `iapo.experiments.sweep` parses sweep
commands with the same class and options.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import lightning as L
from jsonargparse import set_parsing_settings
from lightning.pytorch.cli import LightningCLI

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


class IAPOCLI(LightningCLI):
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
