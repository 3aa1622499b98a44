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

from iapo.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
