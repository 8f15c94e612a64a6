"""Tile arrays to per-pixel embeddings: which pixels, their seeded inputs, the compute loop.

Devices, staging and batching are `tessera.staging`; the files a job writes are `tessera.embedfiles`;
a job over many tiles is `tessera.inferjob`.

Nodata. Which pixels are run through the model is `tessera.nodata.embedded` of the family's sampler
under ``model.nodata_policy``: ``reference`` embeds the pixels the reference embeds (v1.0 and demo:
any non-zero S2 value, with the reference's fallback draws over all T for a modality without a valid
observation; v1.1: every ROI pixel, zeros for a modality without one; v2: either modality), and
``strict`` only pixels with a valid observation in every modality the family needs (the behaviour of
earlier releases). Outside the ROI is always nodata. In memory, nodata is NaN
(`InferenceResult.embeddings`); the files encode it as the reference does (`tessera.embedfiles`).

Determinism. Inputs depend only on the pixel (`tessera.sampling`). On the CPU the model always runs
on batches of `CPU_FORWARD_BATCH` pixels, the last one padded, because a CPU GEMM's result for one
row can depend on how many rows it is given: a pixel's embedding is then bit-identical whatever the
tiling or ``model.batch_size`` (which on the CPU only sets how many pixels are prepared at once).
On a GPU the batch is ``model.batch_size`` or sized from free memory (once per job), bf16 autocast
unless ``model.precision: fp32``, and host-to-device copies run on a side stream from pinned memory,
overlapped with the model.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from tessera import nodata
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
    """ROI pixels not embedded: without the observations the family needs under the policy."""
    nodata_policy: str
    """``reference`` or ``strict`` (`tessera.nodata`)."""
    pixel_classes: dict[str, int]
    """Pixels per `tessera.nodata.PixelClass` (lower-case names) under the policy."""
    device: str
    """Device the model ran on (``cpu`` or ``cuda``)."""
    precision: str
    """``fp32`` or ``bf16``: what was actually used."""


#: Per-pixel evidence of a tile: valid S2 observations, valid S1 frames (both orbits), any S2 value != 0.
Evidence = tuple[np.ndarray, np.ndarray, np.ndarray]


def observation_counts(tile: TileArrays) -> Evidence:
    """``(n_s2, n_s1, s2_any)`` of every pixel (`tessera.nodata.observations`), ``(H, W)`` each.

    Host side, in row blocks to bound memory; it reads every S2 value, so it also pages a
    memory-mapped tile in.
    """
    h, w = tile.shape
    n2 = np.zeros((h, w), np.int64)
    n1 = np.zeros((h, w), np.int64)
    s2_any = np.zeros((h, w), bool)
    t = max(tile.masks.shape[0], tile.sar_ascending.shape[0], tile.sar_descending.shape[0], 1)
    step = max(1, (1 << 22) // max(1, w * t * tile.bands.shape[-1]))
    for r0 in range(0, h, step):
        rows = slice(r0, r0 + step)
        n2[rows], n1[rows], s2_any[rows] = nodata.observations(
            tile.bands[:, rows], tile.masks[:, rows], tile.sar_ascending[:, rows], tile.sar_descending[:, rows]
        )
    return n2, n1, s2_any


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
    fallback: bool,
) -> torch.Tensor:
    if spec.sampling == "random":
        total: torch.Tensor | None = None
        for r in range(repeats):
            out = runner(*random_inputs(px, pixel_seeds(cols, rows, year, r), spec, norms, fallback=fallback))
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
    counts: Evidence | None = None,
    nodata_policy: str = "reference",
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
        nodata_policy: ``reference`` or ``strict`` (`tessera.nodata`), as ``model.nodata_policy``.

    Returns:
        The embeddings and the nodata counts.
    """
    dev = torch.device(device)
    spec = model.spec
    h, w = tile.shape
    n2, n1, s2_any = observation_counts(tile) if counts is None else counts
    classes = nodata.classify(spec.sampling, nodata_policy, tile.roi, n2, n1, s2_any)
    valid = nodata.is_embedded(classes)
    outside = int(np.count_nonzero(tile.roi == 0))
    bf16 = dev.type == "cuda" and precision == "bf16"
    result = InferenceResult(
        embeddings=np.full((h, w, spec.save_dim), np.nan, np.float32),
        valid=valid,
        outside_roi=outside,
        no_valid_observation=h * w - outside - int(valid.sum()),
        nodata_policy=nodata_policy,
        pixel_classes=nodata.class_counts(classes),
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
    fallback = spec.sampling == "random" and nodata_policy == "reference"
    with torch.inference_mode():
        emb = _run(model, tile, valid, (n2, n1), origin, year, dev, bf16, batch_size, repeats, chunk_pixels, fallback)
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
    fallback: bool,
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
            runner, spec, norms, px, cols, rows, ch_lengths, year, repeats, fallback
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
