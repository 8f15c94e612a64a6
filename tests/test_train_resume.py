"""A training run killed with SIGKILL resumes from its last checkpoint and ends with the same bytes (CPU)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.traindata import tiny_config, write_results

ROOT = Path(__file__).resolve().parents[1]
STEPS = 60


def _train_cmd(results: Path, settings: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "tessera.cli", "train", "--data", str(results), "--years", "2022",
        "--train-config", str(settings), "--out-dir", str(out),
    ]  # fmt: skip


def _digests(out: Path) -> dict[str, str]:
    return {n: hashlib.sha256((out / n).read_bytes()).hexdigest() for n in ("encoder.pt", "checkpoint.pt")}


@pytest.mark.slow
def test_resume_after_sigkill_gives_the_same_bytes(tmp_path: Path) -> None:
    results = write_results(tmp_path / "results")
    settings = tmp_path / "train.yaml"
    settings.write_text(yaml.safe_dump(tiny_config(steps=STEPS, checkpoint_every=4).to_dict()))
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}

    straight = tmp_path / "straight"
    subprocess.run(_train_cmd(results, settings, straight), env=env, check=True, capture_output=True, timeout=300)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _train_cmd(results, settings, killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    while not (killed / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert not (killed / "encoder.pt").exists(), "the run finished before it could be killed"
    at_kill = int(torch.load(killed / "checkpoint.pt", weights_only=True)["step"])
    assert 0 < at_kill < STEPS

    subprocess.run(_train_cmd(results, settings, killed), env=env, check=True, capture_output=True, timeout=300)
    assert json.loads((killed / "train.json").read_text())["resumed_at_step"] == at_kill
    assert _digests(killed) == _digests(straight)
