"""Devices and staging for inference: device choice, CPU threads, moving tile rows to the device, batching.

Everything here runs on the CPU as well as on a GPU, so the tests exercise the same staging,
batching and padding code a GPU run takes; only pinned host buffers, the side stream and the
events are CUDA-only.

* `Stager` moves row blocks of a tile to the device, one block ahead of the consumer: on CUDA from
  two pinned host buffers on a side stream, overlapped with the model.
* `inference_device` picks the device (on a machine of several GPUs, one per job: `tessera.gpus`).
* `Runner` runs the model on fixed-size batches: on the CPU always `CPU_FORWARD_BATCH` pixels (the
  last batch padded), because a CPU GEMM's result for one row can depend on how many rows it is
  given; on a GPU ``model.batch_size`` or `auto_batch` from free memory, under bf16 autocast unless
  ``fp32`` is asked for.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from tessera.errors import ConfigError
from tessera.gpus import claim_gpu
from tessera.models.spec import InputSpec, LoadedModel
from tessera.sampling import PixelSeries
from tessera.tileio import TileArrays

__all__ = [
    "CPU_FORWARD_BATCH",
    "GPU_GRANULE",
    "GPU_MAX_BATCH",
    "RowBlock",
    "Runner",
    "Stager",
    "auto_batch",
    "batch_for_memory",
    "cpu_threads",
    "gpu_batch_size",
    "inference_device",
    "pixel_series",
    "resolve_device",
]

logger = logging.getLogger(__name__)

CPU_FORWARD_BATCH = 64
"""Pixels per forward pass on the CPU, fixed for bit-reproducibility."""
GPU_GRANULE = 64
"""GPU batches are multiples of this many pixels."""
GPU_MAX_BATCH = 65536
"""Largest GPU batch."""


def resolve_device(requested: str, setting: str = "model.device") -> torch.device:
    """The device for a ``device`` setting: ``auto`` picks CUDA when visible; ``cuda`` without a GPU is an error.

    Args:
        requested: ``auto``, ``cpu`` or ``cuda``.
        setting: The setting's name as the user writes it, for messages (``model.device``; training
            passes ``device (config/train.yaml or --device)``).

    Raises:
        ConfigError: ``cuda`` was asked for but no CUDA device is visible, or ``requested`` is unknown.
    """
    if requested == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        logger.info("%s auto -> %s", setting, device)
        return device
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"{setting} is cuda but no CUDA device is visible to PyTorch; set {setting} to auto or cpu "
            "(or run on a machine with a GPU and a CUDA build of torch)"
        )
    if requested not in ("cpu", "cuda"):
        raise ConfigError(f"{setting} {requested!r} is not one of auto, cpu, cuda")
    return torch.device(requested)


def inference_device(requested: str) -> torch.device:
    """`resolve_device` for an inference job, made ready to use.

    On CUDA with several visible GPUs, the one `tessera.gpus.claim_gpu` gives this process (so the
    concurrent jobs of a workstation spread over its GPUs) is made the current device, which the
    side streams and the free-memory query then use; on the CPU, the thread count is set (`cpu_threads`).
    """
    dev = resolve_device(requested)
    if dev.type == "cuda":
        index = claim_gpu(torch.cuda.device_count())
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    torch.set_num_threads(cpu_threads())
    logger.info("CPU inference with %d threads", torch.get_num_threads())
    return dev


def cpu_threads() -> int:
    """Threads for CPU inference: ``TESSERA_THREADS`` (Snakemake's ``threads``) or the CPUs this process may use."""
    env = os.environ.get("TESSERA_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError as exc:
            raise ConfigError(f"TESSERA_THREADS={env!r} is not an integer; unset it or give a thread count") from exc
    return len(os.sched_getaffinity(0))


@dataclass
class RowBlock:
    """Rows ``r0:r1`` of a tile on their way to the device."""

    r0: int
    r1: int
    pix: np.ndarray  # flat indices of the chunk's valid pixels within the chunk
    out: np.ndarray  # their positions in the tile's list of valid pixels
    arrays: tuple[torch.Tensor, ...]  # device: bands (T2, n, 10) i16, masks (T2, n) u8, asc, desc (T, n, 2) i16
    ready: torch.cuda.Event | None


class Stager:
    """Moves row blocks of the tile to the device; on CUDA through two pinned buffers and a side stream."""

    def __init__(self, tile: TileArrays, device: torch.device, rows: int) -> None:
        """Stage ``rows`` tile rows at a time."""
        self.tile, self.device, self.rows = tile, device, rows
        self.cuda = device.type == "cuda"
        self.sources = (tile.bands.view(np.int16), tile.masks, tile.sar_ascending, tile.sar_descending)
        if self.cuda:
            self.stream = torch.cuda.Stream(device)
            # flat buffers, so that each chunk's view is contiguous and copies straight from pinned memory
            self.buffers = [
                [torch.empty(a[:, :rows].size, dtype=_TORCH[a.dtype], pin_memory=True) for a in self.sources]
                for _ in range(2)
            ]
            self.copied: list[torch.cuda.Event | None] = [None, None]

    def stage(self, k: int, r0: int, r1: int, pix: np.ndarray, out: np.ndarray) -> RowBlock:
        """Start moving rows ``r0:r1`` to the device (asynchronously on CUDA)."""
        n = (r1 - r0) * self.tile.shape[1]
        slabs = [a[:, r0:r1].reshape(a.shape[0], n, *a.shape[3:]) for a in self.sources]
        if not self.cuda:
            return RowBlock(r0, r1, pix, out, tuple(torch.from_numpy(np.array(s)) for s in slabs), None)
        slot = k % 2
        previous = self.copied[slot]
        if previous is not None:
            previous.synchronize()  # the buffer's last copy must be done before it is refilled
        moved = []
        for buf, slab in zip(self.buffers[slot], slabs, strict=True):
            host = buf[: slab.size].view(slab.shape)
            np.copyto(host.numpy(), slab)
            with torch.cuda.stream(self.stream):
                moved.append(host.to(self.device, non_blocking=True))
        event = torch.cuda.Event()
        event.record(self.stream)
        self.copied[slot] = event
        return RowBlock(r0, r1, pix, out, tuple(moved), event)

    def chunks(self, valid: np.ndarray) -> Iterator[RowBlock]:
        """Every row block that holds a valid pixel, staged one block ahead of the consumer."""
        h, w = valid.shape
        order = np.cumsum(valid.ravel()) - 1
        blocks = [(r0, min(h, r0 + self.rows)) for r0 in range(0, h, self.rows) if valid[r0 : r0 + self.rows].any()]
        pending: RowBlock | None = None
        for k, (r0, r1) in enumerate(blocks):
            pix = np.flatnonzero(valid[r0:r1].ravel())
            chunk = self.stage(k, r0, r1, pix, order[r0 * w + pix])
            if pending is not None:
                yield pending
            pending = chunk
        if pending is not None:
            yield pending


_TORCH = {np.dtype(np.int16): torch.int16, np.dtype(np.uint8): torch.uint8}


def pixel_series(chunk: RowBlock, tile: TileArrays, device: torch.device) -> PixelSeries:
    if chunk.ready is not None:
        torch.cuda.current_stream(device).wait_event(chunk.ready)
        for t in chunk.arrays:
            t.record_stream(torch.cuda.current_stream(device))
    pix = torch.as_tensor(chunk.pix, device=device)
    bands, masks, asc, desc = (a.index_select(1, pix) for a in chunk.arrays)
    s1 = torch.cat((asc, desc), dim=0).permute(1, 0, 2)
    orbit = torch.cat((torch.zeros(asc.shape[0], dtype=torch.int64), torch.ones(desc.shape[0], dtype=torch.int64)))
    s1_doy = np.concatenate((tile.sar_ascending_doy, tile.sar_descending_doy)).astype(np.int64)
    return PixelSeries(
        s2=bands.permute(1, 0, 2),
        s2_valid=masks.permute(1, 0) != 0,
        s2_doy=torch.as_tensor(tile.doys.astype(np.int64), device=device),
        s1=s1,
        s1_valid=(s1 != 0).any(-1),
        s1_doy=torch.as_tensor(s1_doy, device=device),
        s1_desc=orbit.to(device),
    )


class Runner:
    """Runs the model on batches with a fixed padding rule, under inference mode and autocast.

    Padding: ``fixed`` (the CPU's rule, the default there) pads every batch to ``batch`` pixels; the
    GPU's rule (the default on a GPU) pads the last batch only to the next multiple of `GPU_GRANULE`.
    The rule is a setting rather than a test of the device so that the CPU tests run the GPU's rule too.
    """

    def __init__(
        self, model: LoadedModel, device: torch.device, bf16: bool, batch: int, *, fixed: bool | None = None
    ) -> None:
        self.model, self.device, self.bf16, self.batch = model, device, bf16, batch
        self.fixed = device.type == "cpu" if fixed is None else fixed
        self.save_dim = model.spec.save_dim

    def __call__(self, s2: torch.Tensor, s1: torch.Tensor, batch: int | None = None) -> torch.Tensor:
        batch = batch or self.batch
        outs = []
        for i in range(0, s2.shape[0], batch):
            b2, b1 = s2[i : i + batch], s1[i : i + batch]
            n = b2.shape[0]
            size = self.batch if self.fixed else min(batch, -(-n // GPU_GRANULE) * GPU_GRANULE)
            if size > n:
                b2 = torch.cat((b2, b2.new_zeros((size - n, *b2.shape[1:]))))
                b1 = torch.cat((b1, b1.new_zeros((size - n, *b1.shape[1:]))))
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                out = self.model.module(b2, b1)
            outs.append(out[:n, : self.save_dim].float())
        return torch.cat(outs) if outs else s2.new_zeros((0, self.save_dim))


def gpu_batch_size(model: LoadedModel, device: torch.device, precision: str, batch_size: int | None) -> int:
    """The GPU batch a job uses for all its tiles: ``batch_size``, or `auto_batch` measured once."""
    if batch_size:
        return batch_size
    model.module.to(device).eval()
    with torch.inference_mode():
        return auto_batch(Runner(model, device, precision == "bf16", CPU_FORWARD_BATCH), model.spec)


def auto_batch(runner: Runner, spec: InputSpec) -> int:
    """Largest GPU batch (multiple of 64) that fits 60% of free memory, from a measured probe at the longest input."""
    probe = GPU_GRANULE
    t2, t1 = (spec.s2_steps, spec.s1_steps) if spec.sampling == "random" else (max(spec.bins), max(spec.bins))
    dev = runner.device
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    base = torch.cuda.memory_allocated(dev)
    runner(torch.zeros((probe, t2, 11), device=dev), torch.zeros((probe, t1, 3), device=dev), probe)
    torch.cuda.synchronize(dev)
    per_pixel = max(1, (torch.cuda.max_memory_allocated(dev) - base) // probe)
    free, _ = torch.cuda.mem_get_info(dev)
    batch = batch_for_memory(free, per_pixel)
    logger.info(
        "GPU batch size %d pixels (%.1f MiB per pixel measured, %.1f GiB free)", batch, per_pixel / 2**20, free / 2**30
    )
    return batch


def batch_for_memory(free_bytes: int, per_pixel_bytes: int) -> int:
    """The GPU batch that `auto_batch` picks: 60 % of the free memory at the measured cost per pixel,
    rounded down to a multiple of `GPU_GRANULE`, between `GPU_GRANULE` and `GPU_MAX_BATCH` pixels."""
    batch = int(0.6 * free_bytes / max(1, per_pixel_bytes)) // GPU_GRANULE * GPU_GRANULE
    return min(GPU_MAX_BATCH, max(GPU_GRANULE, batch))
