"""Command line of the project (LightningCLI): fit / validate / test / predict with layered YAML configs.

    python src/cli.py fit --config configs/iapo.yaml --config configs/tiny.yaml --trainer.max_steps=3
    python src/cli.py test --config configs/eval.yaml --ckpt_path logs/iapo/adapters/last   # base + LoRA adapter
    python src/cli.py predict --config configs/tiny.yaml
    python src/cli.py fit --config configs/iapo.yaml --print_config                         # the resolved config

`--ckpt_path` takes a Lightning checkpoint (`.ckpt`, e.g. `last` to resume) or, for validate / test / predict,
an adapter directory written by `AdapterCheckpoint`, which is loaded on top of `model.student`.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lightning.pytorch.cli import LightningCLI  # noqa: E402

from iapo.data.datamodule import VQADataModule  # noqa: E402
from iapo.module import IAPOModule  # noqa: E402


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
    return IAPOCLI(
        IAPOModule,
        VQADataModule,
        subclass_mode_model=True,
        save_config_kwargs={"overwrite": True},
        args=args,
    )


if __name__ == "__main__":
    main()
