"""The Python API: docs/API.md's example runs as written; ``import distgan`` stays light and
leaves the host's logging, RNG and signal handlers alone."""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import distgan

DOC = Path(__file__).resolve().parents[1] / "docs" / "API.md"


def test_api_doc_example_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert blocks, f"{DOC}: no python example"
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), {"workdir": tmp_path})  # noqa: S102


def test_train_leaves_the_host_process_alone(tmp_path: Path) -> None:
    logger = logging.getLogger("distgan")
    propagate, handler = logger.propagate, signal.getsignal(signal.SIGINT)
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    run = distgan.train("smoke", out=tmp_path / "run", rounds=2)
    assert torch.rand(3).equal(expected)  # global RNG as it was
    assert logger.propagate == propagate and signal.getsignal(signal.SIGINT) is handler
    assert not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
                   for h in logger.handlers)
    assert (run.path / "log.txt").read_text()


def test_bad_override_names_the_setting() -> None:
    with pytest.raises(ValueError, match="roundz"):
        distgan.make_config("smoke", roundz=3)
    with pytest.raises(ValueError, match="train.rounds"):
        distgan.make_config("smoke", rounds=0)
    with pytest.raises(ValueError, match="no-such-preset"):
        distgan.make_config("no-such-preset")


def test_load_run_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a distgan run"):
        distgan.load_run(tmp_path)


def test_import_distgan_is_light() -> None:
    code = "import sys, distgan; assert distgan.__version__; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
