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
import time
from dataclasses import dataclass

import numpy as np
import torch

from tessera.models.spec import InputSpec, LoadedModel
from tessera.sampling import Norms, PixelSeries, bin_inputs, pixel_seeds, random_inputs, sequence_lengths
from tessera.staging import CPU_FORWARD_BATCH, GPU_GRANULE, GPU_MAX_BATCH, Runner, Stager, auto_batch, pixel_series
from tessera.tileio import TileArrays

__all__ = ["InferenceResult", "infer_arrays", "observation_counts"]

logger = logging.getLogger(__name__)

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


def observation_counts(tile: TileArrays) -> tuple[np.ndarray, np.ndarray]:
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


def _embed_chunk(
    runner: Runner,
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
            batch = min(GPU_MAX_BATCH, runner.batch * longest // (s2_len + s1_len)) // GPU_GRANULE * GPU_GRANULE
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
    counts: tuple[np.ndarray, np.ndarray] | None = None,
) -> InferenceResult:
    """Embed every valid pixel of tile arrays (in memory or memory-mapped).

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
        counts: `observation_counts` of ``tile`` if already computed (a job prepares the next tile's ahead).

    Returns:
        The embeddings and the nodata counts.
    """
    dev = torch.device(device)
    spec = model.spec
    h, w = tile.shape
    n2, n1 = observation_counts(tile) if counts is None else counts
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
    runner = Runner(model, dev, bf16, CPU_FORWARD_BATCH)
    if dev.type == "cuda":
        runner.batch = batch_size or auto_batch(runner, spec)
    chunk = chunk_pixels or (max(batch_size or 0, _CHUNK_PIXELS_CPU) if dev.type == "cpu" else _CHUNK_PIXELS_GPU)
    stager = Stager(tile, dev, rows=max(1, min(h, chunk // w)))
    lengths = [sequence_lengths(c[valid], spec) for c in counts] if spec.sampling != "random" else None
    n_valid = int(valid.sum())
    out = torch.empty((n_valid, spec.save_dim), device=dev)
    start = last = time.monotonic()
    done = 0
    for ch in stager.chunks(valid):
        px = pixel_series(ch, tile, dev)
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
