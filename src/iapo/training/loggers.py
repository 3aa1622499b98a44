"""`WandbLogger` that never blocks: offline (synced later with `wandb sync`) when no API key is configured.

trainer:
  logger:
    - class_path: iapo.training.loggers.OfflineFallbackWandbLogger
      init_args: {project: iapo, name: iapo-3b, tags: [iapo]}
"""

from __future__ import annotations

import netrc
import os

from lightning.pytorch.loggers import WandbLogger


def wandb_credentials_available() -> bool:
    """True when WANDB_API_KEY is set or ~/.netrc has an entry for the W&B server."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc().hosts
    except (FileNotFoundError, netrc.NetrcParseError):
        return False
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1]
    return host in hosts


class OfflineFallbackWandbLogger(WandbLogger):
    """A `WandbLogger` that runs offline when no credentials exist or `WANDB_MODE=offline`."""

    def __init__(self, *args, offline: bool | None = None, **kwargs) -> None:
        if offline is None:
            offline = os.environ.get("WANDB_MODE") in ("offline", "dryrun") or not wandb_credentials_available()
        super().__init__(*args, offline=offline, **kwargs)
