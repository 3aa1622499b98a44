"""The project's LightningCLI: the LightningModule named by `model.class_path` (`IAPOModule`, `SFTModule`) and
`VQADataModule`.

Run it through `src/cli.py` (`python src/cli.py fit --config configs/iapo.yaml`); `iapo.experiments.sweep` parses sweep
commands with the same class and options.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.cli import LightningCLI

from iapo.data.datamodule import VQADataModule

CLI_OPTIONS = {"model_class": L.LightningModule, "datamodule_class": VQADataModule, "subclass_mode_model": True}
"""Any LightningModule by `model.class_path` (`iapo.training.iapo_module.IAPOModule`, `iapo.training.sft_module.SFTModule`); configs name it."""


class IAPOCLI(LightningCLI):
    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict:
        """Route an adapter directory given as `--ckpt_path` to the student instead of Lightning's loader."""
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        path = kwargs.get("ckpt_path")
        if path and Path(path).is_dir():
            if subcommand == "fit":
                raise SystemExit(f"--ckpt_path {path} is a directory; `fit` resumes from a .ckpt file (or `last`)")
            self.model.student_settings.adapter = str(path)
            kwargs["ckpt_path"] = None
        return kwargs


def main(args: list[str] | None = None) -> LightningCLI:
    return IAPOCLI(**CLI_OPTIONS, save_config_kwargs={"overwrite": True}, args=args)
