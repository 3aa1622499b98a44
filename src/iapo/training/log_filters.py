"""Warnings and log lines that leave the user nothing to do, filtered once for every run of the project's modules
(imported by `policy_base`, the base of both modules); everything else a library reports is kept.
"""

from __future__ import annotations

import logging
import warnings

# The step updates the policy by hand (manual optimization), and a checkpoint taken after it holds the updated
# weights, which is what resuming needs; Lightning's ModelCheckpoint warns about this on every save.
warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization and every_n_train_steps")
# The frozen parts (teacher, reference, vision tower) are in eval mode on purpose, and transformers calls its own
# deprecated `is_gradient_checkpointing` from inside `from_pretrained`.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
# Lightning's own code calls a torch API that torch deprecated (lightning/pytorch/utilities/_pytree.py).
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


class DropLightningTips(logging.Filter):
    """Lightning advertises a cloud logger at the start of every fit; the project logs to CSV and W&B."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("💡 Tip")


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(DropLightningTips())
