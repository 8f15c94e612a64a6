"""Sharing out a workstation's GPUs among concurrent inference jobs (`tessera.gpus`), on the CPU."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
import torch

from tessera import gpus
from tessera.errors import ConfigError
from tessera.staging import inference_device


@pytest.fixture(autouse=True)
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[IO[bytes]]]:
    """This test's locks, released when it ends (a job holds its own until it exits)."""
    mine: list[IO[bytes]] = []
    monkeypatch.setattr(gpus, "_held", mine)
    yield mine
    for handle in mine:
        handle.close()


def test_one_gpu_takes_no_lock(tmp_path: Path) -> None:
    assert gpus.claim_gpu(1, tmp_path / "locks") == 0
    assert not (tmp_path / "locks").exists()


def test_jobs_spread_over_the_gpus_then_share_them_in_turn(tmp_path: Path, held: list[IO[bytes]]) -> None:
    assert [gpus.claim_gpu(3, tmp_path) for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    assert sorted(p.name for p in tmp_path.iterdir())[:4] == [
        "gpu0.slot0.lock",
        "gpu0.slot1.lock",
        "gpu0.slot2.lock",
        "gpu1.slot0.lock",
    ]
    held[1].close()  # the job on GPU 1 ends: the next one takes its place
    assert gpus.claim_gpu(3, tmp_path) == 1


_HOLDER = """
import sys
from pathlib import Path
from tessera.gpus import claim_gpu
print(claim_gpu(2, Path(sys.argv[1])), flush=True)
sys.stdin.read()
"""


def test_a_killed_job_leaves_its_gpu_free(tmp_path: Path) -> None:
    """The lock is the process's: another process sees the GPU taken, and free once the holder is SIGKILLed."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "0"
        assert gpus.claim_gpu(2, tmp_path) == 1
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        assert gpus.claim_gpu(2, tmp_path) == 0
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_the_lock_directory_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(gpus.GPU_LOCK_DIR_ENV, str(tmp_path / "shared"))
    assert gpus.default_lock_dir() == tmp_path / "shared"
    assert gpus.claim_gpu(2) == 0 and (tmp_path / "shared" / "gpu0.slot0.lock").is_file()


def test_an_unusable_lock_directory_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(ConfigError, match=rf"{gpus.GPU_LOCK_DIR_ENV} to a writable directory"):
        gpus.claim_gpu(2, tmp_path / "file" / "locks")


def test_an_inference_job_on_a_machine_of_three_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`inference_device` as a job calls it, with PyTorch's view of CUDA replaced by three GPUs."""
    current: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    monkeypatch.setenv(gpus.GPU_LOCK_DIR_ENV, str(tmp_path))
    devices = [inference_device(requested) for requested in ("auto", "cuda", "auto", "auto")]
    assert devices == [torch.device("cuda", i) for i in (0, 1, 2, 0)]
    assert current == [0, 1, 2, 0]  # made current, so side streams and memory queries use that GPU
