"""Command line of the project (LightningCLI): fit / validate / test / predict with layered YAML configs.

python src/cli.py predict --config configs/tiny.yaml
python src/cli.py predict --config configs/tiny.yaml --print_config     # the fully resolved config
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lightning.pytorch.cli import LightningCLI  # noqa: E402

from iapo.data.datamodule import VQADataModule  # noqa: E402
from iapo.module import IAPOModule  # noqa: E402


def main(args: list[str] | None = None) -> LightningCLI:
    return LightningCLI(
        IAPOModule,
        VQADataModule,
        subclass_mode_model=True,
        save_config_kwargs={"overwrite": True},
        args=args,
    )


if __name__ == "__main__":
    main()
