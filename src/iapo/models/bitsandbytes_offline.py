"""bitsandbytes without its model-hub kernel lookup: `import_bitsandbytes()` before anything else imports it.

On a CPU with AVX512-BF16, importing bitsandbytes (>= 0.48) asks the Hugging Face Hub, through the `kernels`
package, for a fused NF4 matmul (``kernels-community/quantization-bitsandbytes``); the repository is not on the
`kernels` trust list, so the request fails and every run logs "Failed to load CPU gemm_4bit_forward from
kernels-community ... trust_remote_code". bitsandbytes documents no switch for this, so the import runs with
`kernels` hidden: `from kernels import get_kernel` raises ImportError, bitsandbytes keeps its own CPU kernel (what
it falls back to anyway), no hub request is made, and the fallback's warning — about a choice made here — is dropped.

    from iapo.models.bitsandbytes_offline import import_bitsandbytes
    bnb = import_bitsandbytes()
"""

from __future__ import annotations

import logging
import sys
from types import ModuleType

HUB_KERNEL_WARNING = "Failed to load CPU gemm_4bit_forward from kernels-community"
BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"


class _DropHubKernelWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(HUB_KERNEL_WARNING)


def import_bitsandbytes() -> ModuleType:
    """bitsandbytes, imported (once per process) without asking the hub for kernels."""
    if "bitsandbytes" in sys.modules:
        return sys.modules["bitsandbytes"]
    missing = object()
    kernels = sys.modules.get("kernels", missing)
    sys.modules["kernels"] = None  # `from kernels import ...` raises ImportError while bitsandbytes loads
    logger = logging.getLogger(BNB_CPU_LOGGER)
    drop = _DropHubKernelWarning()
    logger.addFilter(drop)
    try:
        import bitsandbytes
    finally:
        logger.removeFilter(drop)
        if kernels is missing:
            del sys.modules["kernels"]
        else:
            sys.modules["kernels"] = kernels
    return bitsandbytes
