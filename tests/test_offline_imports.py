"""A run asks no model hub for code: importing the model loader (which imports bitsandbytes, then peft) logs no
kernel-hub warning and leaves bitsandbytes on its own CPU kernels."""

from __future__ import annotations

import os
import subprocess
import sys

from iapo.models.bitsandbytes_offline import HUB_KERNEL_WARNING

PROBE = """
import logging, sys
logging.basicConfig(level=logging.INFO)
import iapo.models.loader, peft, bitsandbytes
from bitsandbytes.backends.cpu import ops
print("hub kernel:", getattr(ops, "gemm_4bit_forward_kernel", None))
"""


def test_importing_the_loader_asks_no_hub_for_kernels() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    probe = subprocess.run((sys.executable, "-c", PROBE), env=env, capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert HUB_KERNEL_WARNING not in probe.stderr + probe.stdout
    assert "hub kernel: None" in probe.stdout
