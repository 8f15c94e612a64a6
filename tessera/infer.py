"""Tile arrays to per-pixel embeddings: nodata, seeded sampling, batching, device streaming, outputs.

Nodata. A pixel is not run through the model, and is NaN in float32 output (q = 0 with a NaN scale
in int8 output), when it lies outside the ROI (``roi.tiff == 0``) or has no valid observation. For
the ``random`` sampler (v1.0 family) "no valid observation" means no valid S2 *or* no valid S1
observation: the reference then falls back to draws over all T dates of the tile, which would make
the pixel depend on the tile's date set. The bin samplers follow the reference (a modality with no
observation is fed zeros) except that a pixel with neither modality is nodata.

Determinism. Inputs depend only on the pixel (`tessera.sampling`). On the CPU the model always runs
on batches of `CPU_FORWARD_BATCH` pixels, the last one padded, because a CPU GEMM's result for one
row can depend on how many rows it is given: a pixel's embedding is then bit-identical whatever the
tiling or ``model.batch_size`` (which on the CPU only sets how many pixels are prepared at once).
On a GPU the batch is ``model.batch_size`` or sized from free memory, bf16 autocast unless
``model.precision: fp32``, and host-to-device copies run on a side stream from pinned memory,
overlapped with the model.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import tessera
from tessera.errors import ConfigError
from tessera.io import save_npy_atomic, write_json_atomic
from tessera.models.spec import InputSpec, LoadedModel
from tessera.quantize import quantize
from tessera.sampling import Norms, PixelSeries, bin_inputs, pixel_seeds, random_inputs, sequence_lengths
from tessera.tileio import TileArrays, read_tile

__all__ = ["CPU_FORWARD_BATCH", "InferenceResult", "infer_arrays", "infer_tile", "resolve_device", "cpu_threads"]

logger = logging.getLogger(__name__)

CPU_FORWARD_BATCH = 64
"""Pixels per forward pass on the CPU, fixed for bit-reproducibility (see the module docstring)."""
_GPU_GRANULE = 64
_GPU_MAX_BATCH = 65536
_CHUNK_PIXELS_CPU = 4096
_CHUNK_PIXELS_GPU = 65536
_PROGRESS_SECONDS = 20.0


@dataclass
class InferenceResult:
    """Embeddings of one tile and what happened to its pixels."""

    embeddings: np.ndarray
    """float32 ``(H, W, D)``, NaN at nodata pixels."""
    valid: np.ndarray
    """bool ``(H, W)``: pixels that were embedded."""
    outside_roi: int
    """Pixels with ``roi.tiff == 0``."""
    no_valid_observation: int
    """ROI pixels without the observations the model family needs."""
    device: str
    """Device the model ran on (``cpu`` or ``cuda``)."""
    precision: str
    """``fp32`` or ``bf16``: what was actually used."""


def resolve_device(requested: str) -> torch.device:
    """The device for ``model.device``: ``auto`` picks CUDA when visible; ``cuda`` without a GPU is an error.

    Raises:
        ConfigError: ``cuda`` was asked for but no CUDA device is visible.
    """
    if requested == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        logger.info("model.device auto -> %s", device)
        return device
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "model.device is cuda but no CUDA device is visible to PyTorch; set model.device to auto or cpu "
            "(or run on a machine with a GPU and a CUDA build of torch)"
        )
    if requested not in ("cpu", "cuda"):
        raise ConfigError(f"model.device {requested!r} is not one of auto, cpu, cuda")
    return torch.device(requested)


def cpu_threads() -> int:
    """Threads for CPU inference: ``TESSERA_THREADS`` (Snakemake's ``threads``) or the CPUs this process may use."""
    env = os.environ.get("TESSERA_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError as exc:
            raise ConfigError(f"TESSERA_THREADS={env!r} is not an integer; unset it or give a thread count") from exc
    return len(os.sched_getaffinity(0))


def _observation_counts(tile: TileArrays) -> tuple[np.ndarray, np.ndarray]:
    """Valid S2 and S1 observations per pixel, ``(H, W)`` int64 each (host side, row blocks to bound memory)."""
    h, w = tile.shape
    n2 = np.zeros((h, w), np.int64)
    n1 = np.zeros((h, w), np.int64)
    step = max(1, (1 << 22) // max(1, w * max(tile.masks.shape[0], tile.sar_ascending.shape[0], 1)))
    for r0 in range(0, h, step):
        rows = slice(r0, r0 + step)
        n2[rows] = np.count_nonzero(tile.masks[:, rows], axis=0)
        for sar in (tile.sar_ascending, tile.sar_descending):
            n1[rows] += np.count_nonzero(np.any(sar[:, rows] != 0, axis=-1), axis=0)
    return n2, n1


def _valid_pixels(spec: InputSpec, roi: np.ndarray, n2: np.ndarray, n1: np.ndarray) -> np.ndarray:
    has_obs = (n2 > 0) & (n1 > 0) if spec.sampling == "random" else (n2 > 0) | (n1 > 0)
    return (roi > 0) & has_obs


@dataclass
class _Chunk:
    r0: int
    r1: int
    pix: np.ndarray  # flat indices of the chunk's valid pixels within the chunk
    out: np.ndarray  # their positions in the tile's list of valid pixels
    arrays: tuple[torch.Tensor, ...]  # device: bands (T2, n, 10) i16, masks (T2, n) u8, asc, desc (T, n, 2) i16
    ready: torch.cuda.Event | None


class _Stager:
    """Moves row blocks of the tile to the device; on CUDA through two pinned buffers and a side stream."""

    def __init__(self, tile: TileArrays, device: torch.device, rows: int) -> None:
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

    def stage(self, k: int, r0: int, r1: int, pix: np.ndarray, out: np.ndarray) -> _Chunk:
        """Start moving rows ``r0:r1`` to the device (asynchronously on CUDA)."""
        n = (r1 - r0) * self.tile.shape[1]
        slabs = [a[:, r0:r1].reshape(a.shape[0], n, *a.shape[3:]) for a in self.sources]
        if not self.cuda:
            return _Chunk(r0, r1, pix, out, tuple(torch.from_numpy(np.array(s)) for s in slabs), None)
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
        return _Chunk(r0, r1, pix, out, tuple(moved), event)

    def chunks(self, valid: np.ndarray) -> Iterator[_Chunk]:
        """Every row block that holds a valid pixel, staged one block ahead of the consumer."""
        h, w = valid.shape
        order = np.cumsum(valid.ravel()) - 1
        blocks = [(r0, min(h, r0 + self.rows)) for r0 in range(0, h, self.rows) if valid[r0 : r0 + self.rows].any()]
        pending: _Chunk | None = None
        for k, (r0, r1) in enumerate(blocks):
            pix = np.flatnonzero(valid[r0:r1].ravel())
            chunk = self.stage(k, r0, r1, pix, order[r0 * w + pix])
            if pending is not None:
                yield pending
            pending = chunk
        if pending is not None:
            yield pending


_TORCH = {np.dtype(np.int16): torch.int16, np.dtype(np.uint8): torch.uint8}


def _series(chunk: _Chunk, tile: TileArrays, device: torch.device) -> PixelSeries:
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


class _Runner:
    """Runs the model on batches with a fixed padding rule, under inference mode and autocast."""

    def __init__(self, model: LoadedModel, device: torch.device, bf16: bool, batch: int) -> None:
        self.model, self.device, self.bf16, self.batch = model, device, bf16, batch
        self.save_dim = model.spec.save_dim

    def __call__(self, s2: torch.Tensor, s1: torch.Tensor, batch: int | None = None) -> torch.Tensor:
        batch = batch or self.batch
        outs = []
        for i in range(0, s2.shape[0], batch):
            b2, b1 = s2[i : i + batch], s1[i : i + batch]
            n = b2.shape[0]
            size = self.batch if self.device.type == "cpu" else min(batch, -(-n // _GPU_GRANULE) * _GPU_GRANULE)
            if size > n:
                b2 = torch.cat((b2, b2.new_zeros((size - n, *b2.shape[1:]))))
                b1 = torch.cat((b1, b1.new_zeros((size - n, *b1.shape[1:]))))
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                out = self.model.module(b2, b1)
            outs.append(out[:n, : self.save_dim].float())
        return torch.cat(outs) if outs else s2.new_zeros((0, self.save_dim))


def _auto_batch(runner: _Runner, spec: InputSpec) -> int:
    """Largest GPU batch (multiple of 64) that fits 60% of free memory, from a measured probe at the longest input."""
    probe = _GPU_GRANULE
    t2, t1 = (spec.s2_steps, spec.s1_steps) if spec.sampling == "random" else (max(spec.bins), max(spec.bins))
    dev = runner.device
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    base = torch.cuda.memory_allocated(dev)
    runner(torch.zeros((probe, t2, 11), device=dev), torch.zeros((probe, t1, 3), device=dev), probe)
    torch.cuda.synchronize(dev)
    per_pixel = max(1, (torch.cuda.max_memory_allocated(dev) - base) // probe)
    free, _ = torch.cuda.mem_get_info(dev)
    batch = int(0.6 * free / per_pixel) // _GPU_GRANULE * _GPU_GRANULE
    batch = min(_GPU_MAX_BATCH, max(_GPU_GRANULE, batch))
    logger.info(
        "GPU batch size %d pixels (%.1f MiB per pixel measured, %.1f GiB free)", batch, per_pixel / 2**20, free / 2**30
    )
    return batch


def _embed_chunk(
    runner: _Runner,
    spec: InputSpec,
    norms: Norms,
    px: PixelSeries,
    cols: torch.Tensor,
    rows: torch.Tensor,
    lengths: tuple[np.ndarray, np.ndarray] | None,
    year: int,
    repeats: int,
) -> torch.Tensor:
    if spec.sampling == "random":
        total: torch.Tensor | None = None
        for r in range(repeats):
            out = runner(*random_inputs(px, pixel_seeds(cols, rows, year, r), spec, norms))
            total = out if total is None else total + out
        assert total is not None
        return total / repeats if repeats > 1 else total
    assert lengths is not None
    l2, l1 = lengths
    result = torch.empty((px.s2.shape[0], spec.save_dim), device=runner.device)
    keys = l2 * 1024 + l1
    for key in np.unique(keys):
        sel = np.flatnonzero(keys == key)
        s2_len, s1_len = int(key) // 1024, int(key) % 1024
        group = torch.as_tensor(sel, device=runner.device)
        batch = runner.batch
        if runner.device.type == "cuda":  # shorter sequences fit proportionally more pixels
            longest = 2 * max(spec.bins)
            batch = min(_GPU_MAX_BATCH, runner.batch * longest // (s2_len + s1_len)) // _GPU_GRANULE * _GPU_GRANULE
        result[group] = runner(*bin_inputs(px.select(group), s2_len, s1_len, spec, norms), batch)
    return result


def infer_arrays(
    model: LoadedModel,
    tile: TileArrays,
    *,
    origin: tuple[int, int],
    year: int,
    device: str | torch.device = "cpu",
    precision: str = "bf16",
    batch_size: int | None = None,
    repeats: int = 1,
    chunk_pixels: int | None = None,
) -> InferenceResult:
    """Embed every valid pixel of in-memory tile arrays.

    Args:
        model: A loaded model (its module is moved to ``device`` only if a pixel needs it).
        tile: The tile's arrays (`tessera.tileio.read_tile`).
        origin: Global ``(col, row)`` of the tile's top-left pixel (`tessera.grid.Grid`), for the seeds.
        year: The year, for the seeds.
        device: ``cpu`` or ``cuda``.
        precision: ``bf16`` (autocast, GPU only) or ``fp32``; the CPU always runs fp32.
        batch_size: GPU pixels per forward pass (None: from free memory); on the CPU, pixels prepared at once.
        repeats: Sampled sequences averaged per pixel (``random`` sampler only; bin samplers are deterministic).
        chunk_pixels: Pixels moved to the device at once (rounded to whole tile rows); None picks a default.

    Returns:
        The embeddings and the nodata counts.
    """
    dev = torch.device(device)
    spec = model.spec
    h, w = tile.shape
    n2, n1 = _observation_counts(tile)
    valid = _valid_pixels(spec, tile.roi, n2, n1)
    outside = int(np.count_nonzero(tile.roi == 0))
    bf16 = dev.type == "cuda" and precision == "bf16"
    result = InferenceResult(
        embeddings=np.full((h, w, spec.save_dim), np.nan, np.float32),
        valid=valid,
        outside_roi=outside,
        no_valid_observation=h * w - outside - int(valid.sum()),
        device=dev.type,
        precision="bf16" if bf16 else "fp32",
    )
    n_valid = int(valid.sum())
    if n_valid == 0:
        logger.info("no pixel of the tile has the observations %s needs: all nodata", model.family)
        return result
    if spec.sampling != "random" and repeats > 1:
        logger.info("%s inputs are deterministic: model.repeats %d has no effect", model.family, repeats)
    model.module.to(dev).eval()
    with torch.inference_mode():
        emb = _run(model, tile, valid, (n2, n1), origin, year, dev, bf16, batch_size, repeats, chunk_pixels)
    result.embeddings.reshape(h * w, -1)[np.flatnonzero(valid)] = emb
    return result


def _run(
    model: LoadedModel,
    tile: TileArrays,
    valid: np.ndarray,
    counts: tuple[np.ndarray, np.ndarray],
    origin: tuple[int, int],
    year: int,
    dev: torch.device,
    bf16: bool,
    batch_size: int | None,
    repeats: int,
    chunk_pixels: int | None,
) -> np.ndarray:
    spec, (h, w) = model.spec, tile.shape
    norms = Norms.from_spec(spec, dev)
    runner = _Runner(model, dev, bf16, CPU_FORWARD_BATCH)
    if dev.type == "cuda":
        runner.batch = batch_size or _auto_batch(runner, spec)
    chunk = chunk_pixels or (max(batch_size or 0, _CHUNK_PIXELS_CPU) if dev.type == "cpu" else _CHUNK_PIXELS_GPU)
    stager = _Stager(tile, dev, rows=max(1, min(h, chunk // w)))
    lengths = [sequence_lengths(c[valid], spec) for c in counts] if spec.sampling != "random" else None
    n_valid = int(valid.sum())
    out = torch.empty((n_valid, spec.save_dim), device=dev)
    start = last = time.monotonic()
    done = 0
    for ch in stager.chunks(valid):
        px = _series(ch, tile, dev)
        ys, xs = np.divmod(ch.pix, w)
        cols = torch.as_tensor(origin[0] + xs, dtype=torch.int64, device=dev)
        rows = torch.as_tensor(origin[1] + ch.r0 + ys, dtype=torch.int64, device=dev)
        ch_lengths = None if lengths is None else (lengths[0][ch.out], lengths[1][ch.out])
        out[torch.as_tensor(ch.out, device=dev)] = _embed_chunk(
            runner, spec, norms, px, cols, rows, ch_lengths, year, repeats
        )
        done += len(ch.pix)
        now = time.monotonic()
        if now - last >= _PROGRESS_SECONDS:
            last = now
            logger.info("%d / %d pixels embedded (%.0f px/s)", done, n_valid, done / (now - start))
    emb = out.cpu().numpy()
    elapsed = max(time.monotonic() - start, 1e-9)
    logger.info("embedded %d pixels in %.1f s (%.0f px/s) on %s", n_valid, elapsed, n_valid / elapsed, dev)
    return emb


def _write_outputs(out: Path, result: InferenceResult, model: LoadedModel, cfg: dict[str, Any], year: int) -> None:
    mcfg = cfg["model"]
    stem = out.with_suffix("")
    if mcfg.get("output", "int8") == "int8":
        flat = result.embeddings.reshape(-1, result.embeddings.shape[-1])
        keep = result.valid.ravel()
        q = np.zeros(flat.shape, np.int8)
        scales = np.full(flat.shape[0], np.nan, np.float32)
        if keep.any():
            qv, sv = quantize(torch.from_numpy(flat[keep]), model.spec.quantisation)
            q[keep], scales[keep] = qv.numpy(), sv.numpy()
        save_npy_atomic(out, q.reshape(result.embeddings.shape))
        save_npy_atomic(stem.with_name(stem.name + "_scales.npy"), scales.reshape(result.valid.shape))
    else:
        save_npy_atomic(out, result.embeddings)
    n_valid = int(result.valid.sum())
    write_json_atomic(
        stem.with_suffix(".json"),
        {
            "model_family": model.family,
            "checkpoint_sha256": model.checkpoint_sha256,
            "random_weights": model.random_weights,
            "dimensions": int(result.embeddings.shape[-1]),
            "output": mcfg.get("output", "int8"),
            "precision": result.precision,
            "device": result.device,
            "pipeline_version": tessera.__version__,
            "year": year,
            "valid_pixels": n_valid,
            "nodata_pixels": int(result.valid.size) - n_valid,
            "nodata_reasons": {
                "outside_roi": result.outside_roi,
                "no_valid_observation": result.no_valid_observation,
            },
        },
    )


def infer_tile(cfg: dict[str, Any], year: int, tile_dir: Path, out: Path) -> None:
    """Embed one tile directory and write ``out`` (``<tile>.npy``), ``<tile>_scales.npy`` (int8) and ``<tile>.json``.

    Args:
        cfg: The validated configuration (section ``model``; ``s2.source`` picks the v1.1 norm table).
        year: The year of the tile's data (part of the sampling seed).
        tile_dir: A reference-layout tile directory.
        out: The embedding ``.npy`` to write.

    Raises:
        TileError: The tile directory is incomplete or malformed.
        CheckpointError: The checkpoint cannot be loaded.
        ConfigError: ``model.device: cuda`` without a GPU, or a setting the model cannot honour.
    """
    from tessera import models

    mcfg = cfg["model"]
    tile, grid = read_tile(tile_dir)
    dev = resolve_device(mcfg.get("device", "auto"))
    if dev.type == "cpu":
        torch.set_num_threads(cpu_threads())
        logger.info("CPU inference with %d threads", torch.get_num_threads())
    # loaded on the CPU; infer_arrays moves it to the GPU only when a pixel needs it
    model = models.load(
        mcfg.get("checkpoint"),
        "cpu",
        mcfg.get("family", "auto"),
        source=cfg.get("s2", {}).get("source", "planetary-computer"),
        dimensions=int(mcfg.get("dimensions", 128)),
    )
    result = infer_arrays(
        model,
        tile,
        origin=(grid.col, grid.row),
        year=year,
        device=dev,
        precision=mcfg.get("precision", "bf16"),
        batch_size=mcfg.get("batch_size"),
        repeats=int(mcfg.get("repeats", 1)),
    )
    _write_outputs(Path(out), result, model, cfg, year)
