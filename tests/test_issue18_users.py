"""Issue 18, "What a new user sees": what a first run prints, folder scoring, evaluate, configs."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BNB = "Failed to load CPU gemm_4bit_forward"
MESHGRID = "torch.meshgrid: in an upcoming release"


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "default"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)


def test_building_a_swinir_and_its_lora_prints_neither_notice_while_other_warnings_stay():
    run = _python(
        "from sr_training.archs import build_generator\n"
        "from sr_training.config import ArchConfig\n"
        "from sr_training.ft.config import LoRAConfig\n"
        "from sr_training.ft.lora import attach_lora\n"
        "net = build_generator(ArchConfig(type='swinir', size='tiny', scale=4))\n"
        "model = attach_lora(net, 'swinir', LoRAConfig(rank=2))\n"
        "print('lora tensors', sum('lora_' in n for n, _ in model.named_parameters()))\n"
        "import warnings; warnings.warn('a warning of our own')\n")
    assert run.returncode == 0, run.stderr
    assert "lora tensors" in run.stdout and int(run.stdout.split()[-1]) > 0
    assert MESHGRID not in run.stderr and BNB not in run.stderr
    assert "a warning of our own" in run.stderr  # nothing blanket-silenced
    # the same torch build does warn for a meshgrid outside the SwinIR construction
    bare = _python("import torch; torch.meshgrid(torch.arange(2), torch.arange(2))")
    assert MESHGRID in bare.stderr


def test_the_bitsandbytes_filter_drops_only_its_one_notice():
    from bench.quiet import BNB_LOGGER, drop_bitsandbytes_cpu_kernel_notice

    drop_bitsandbytes_cpu_kernel_notice()
    drop_bitsandbytes_cpu_kernel_notice()  # idempotent
    logger = logging.getLogger(BNB_LOGGER)
    assert len(logger.filters) == 1
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    handler = Keep()
    logger.addHandler(handler)
    try:
        logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please ...", "x")
        logger.warning("another bitsandbytes problem")
    finally:
        logger.removeHandler(handler)
    assert seen == ["another bitsandbytes problem"]


def test_pyproject_license_is_an_spdx_string():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    assert "PolyForm" in (ROOT / "README.md").read_text()
