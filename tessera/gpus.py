"""Which GPU an inference job uses, when a machine has several: a lock file per GPU and slot.

Snakemake's local scheduler counts a ``gpu`` resource (``profiles/local``: ``gpu=N``) but does not
say which GPU a job may use, and PyTorch's ``cuda`` is the first visible one: without this, every
concurrent inference job of a workstation would run on ``cuda:0``. `claim_gpu` takes an exclusive
`fcntl.flock` on ``gpu<i>.slot<k>.lock`` in a directory of this user's on this host, trying every
GPU's first slot before any second slot, so N concurrent jobs on G GPUs spread evenly (one per GPU
while N <= G, then sharing in turn). The lock belongs to the process: the operating system drops it
when the job ends, however it ends, so a killed job never leaves a GPU taken.

Where one GPU is visible (a Slurm job with ``--gpus=1``, whose ``CUDA_VISIBLE_DEVICES`` names its
own; a workstation with one GPU) there is nothing to choose and no lock is taken.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
from pathlib import Path
from typing import IO

from tessera.errors import ConfigError

__all__ = ["GPU_LOCK_DIR_ENV", "MAX_SLOTS", "claim_gpu", "default_lock_dir"]

logger = logging.getLogger(__name__)

GPU_LOCK_DIR_ENV = "TESSERA_GPU_LOCK_DIR"
"""Environment variable naming the lock directory (default: `default_lock_dir`)."""
MAX_SLOTS = 64
"""Jobs that may share one GPU before `claim_gpu` gives up looking for a free slot."""

_held: list[IO[bytes]] = []
"""Open lock files of this process: closing one would release its GPU."""


def default_lock_dir() -> Path:
    """``$TESSERA_GPU_LOCK_DIR``, or ``<tmp>/tessera-gpu-locks-<uid>``: per host (GPUs are) and per user."""
    env = os.environ.get(GPU_LOCK_DIR_ENV)
    return Path(env) if env else Path(tempfile.gettempdir()) / f"tessera-gpu-locks-{os.getuid()}"


def _try_lock(path: Path) -> IO[bytes] | None:
    handle = path.open("ab")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def claim_gpu(count: int, lock_dir: Path | None = None) -> int:
    """The index of the GPU this process uses, of ``count`` visible ones; held until the process ends.

    Args:
        count: GPUs visible to this process (``torch.cuda.device_count()``).
        lock_dir: Where the lock files are (default: `default_lock_dir`); every job of a machine that
            should share out its GPUs must use the same one.

    Raises:
        ConfigError: The lock directory cannot be created or written.
    """
    if count <= 1:
        return 0
    where = lock_dir or default_lock_dir()
    try:
        where.mkdir(mode=0o700, parents=True, exist_ok=True)
        for slot in range(MAX_SLOTS):
            for gpu in range(count):
                if (handle := _try_lock(where / f"gpu{gpu}.slot{slot}.lock")) is not None:
                    _held.append(handle)
                    logger.info("GPU %d of %d (slot %d; locks in %s)", gpu, count, slot, where)
                    return gpu
    except OSError as e:
        raise ConfigError(
            f"cannot use the GPU lock directory {where} ({e.strerror}); set {GPU_LOCK_DIR_ENV} to a writable "
            "directory on this host, the same for every job of this machine"
        ) from e
    logger.warning("all %d slots of the %d GPUs are taken by other jobs; using GPU 0", MAX_SLOTS, count)
    return 0
