"""Two known third-party notices that say nothing about this project's runs, each dropped at its
source by message (never a blanket filter: every other warning and log line still shows).

* bitsandbytes (imported by peft) logs "Failed to load CPU gemm_4bit_forward from
  kernels-community ..." on CPUs with AVX512-BF16 when the optional ``kernels`` package is absent.
  That kernel serves 4-bit quantised layers only; the FT LoRA path uses none.
* spandrel's SwinIR calls ``torch.meshgrid`` without ``indexing`` while building its relative
  position index; torch warns that the argument will be required. The old default ('ij') is what
  SwinIR means, so the result is unaffected.
"""

from __future__ import annotations

import contextlib
import logging
import warnings

BNB_LOGGER = "bitsandbytes.backends.cpu.ops"
BNB_NOTICE = "Failed to load CPU gemm_4bit_forward from kernels-community"
MESHGRID_NOTICE = r"torch\.meshgrid: in an upcoming release, it will be required to pass the indexing argument"


class _DropNotice(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def drop_bitsandbytes_cpu_kernel_notice() -> None:
    """Install (once) a filter on bitsandbytes' CPU-ops logger; call before ``import peft``."""
    logger = logging.getLogger(BNB_LOGGER)
    if not any(isinstance(f, _DropNotice) for f in logger.filters):
        logger.addFilter(_DropNotice(BNB_NOTICE))


@contextlib.contextmanager
def meshgrid_indexing_notice():
    """Ignore torch's meshgrid-indexing UserWarning inside this block only (SwinIR construction)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=MESHGRID_NOTICE, category=UserWarning)
        yield
