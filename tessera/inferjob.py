"""One inference job: many tiles of a chunk, read straight from the chunk stacks, the model loaded once.

A job embeds the tiles of one part of a chunk (`tessera.plan.parts`: the whole chunk, or N tiles)
and writes each tile's embedding files (`tessera.embedfiles`) into its output directory. It loads
the model once, picks the GPU batch once, and prepares the next tile (its windows of the chunk
stacks paged in, its observation counts computed) on a background thread while the current tile
runs on the device.

Restarts. Tiles are written, as they finish, into a work directory next to the output
(``.partial-<part>-<stamp>``) whose stamp hashes everything the tiles depend on (settings, tiles,
stack files, checkpoint, device). Snakemake removes a failed job's outputs but not this directory,
so a rerun of the job (a retry, a resubmission, the same command after a crash) embeds only the
tiles that had not finished: a failed tile is recomputed alone. The work directory is renamed onto
the output when every tile is done.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from tessera import models
from tessera.config import ModelConfig
from tessera.embedfiles import tile_files, write_tile_embeddings
from tessera.errors import ConfigError
from tessera.grid import TileSpec
from tessera.infer import Evidence, infer_arrays, observation_counts
from tessera.plan import StoredPlan, parts
from tessera.stages import STAGE_VERSIONS
from tessera.staging import gpu_batch_size, inference_device
from tessera.tileio import ChunkStacks, TileArrays, read_tile

__all__ = ["InferJob", "embed_tile_dir", "parse_part", "run_infer_job"]

logger = logging.getLogger(__name__)


def parse_part(part: str) -> tuple[int, int | None]:
    """``(index, tiles_per_job)`` of a part name (`tessera.results.part_name`)."""
    if part == "all":
        return 0, None
    try:
        n, k = part.removeprefix("n").split("-")
        return int(k), int(n)
    except ValueError:
        raise ConfigError(f"inference part {part!r} is not 'all' or 'n<N>-<k>'; run `tessera plan`") from None


@dataclass(frozen=True)
class InferJob:
    """What one inference job embeds and where it writes."""

    model: ModelConfig
    """The model settings (device and batch size included)."""
    s2_source: str
    """The S2 provider (picks the v1.1 normalisation table)."""
    year: int
    """The year of the data (part of every pixel's sampling seed)."""
    plan: StoredPlan
    """The stored plan, opened with the tile size."""
    chunk: str
    """Chunk id."""
    part: str
    """Part of the chunk (`parse_part`)."""
    stack_dir: Path
    """The chunk's stacks (``<year>/stack/<chunk>``)."""
    out: Path
    """Output directory of per-tile embedding files."""
    settings: str
    """The stage's settings JSON (part of the restart stamp)."""

    def tiles(self) -> tuple[TileSpec, ...]:
        """This part's tiles."""
        index, per_job = parse_part(self.part)
        chunk_parts = parts(self.plan.tiles(self.chunk), per_job)
        if index >= len(chunk_parts):
            raise ConfigError(f"chunk {self.chunk} has {len(chunk_parts)} inference parts, not {index + 1}")
        return chunk_parts[index]


def _stamp(job: InferJob, tiles: tuple[TileSpec, ...], device: torch.device) -> str:
    """Hash of everything the part's tiles depend on: a work directory with this stamp can be resumed.

    The batch size is left out, as it is of the stage's params: a resubmitted job whose GPU has
    another amount of free memory picks another batch, and still keeps the tiles done before.
    """
    digest = hashlib.sha256(job.settings.encode())
    files = sorted(p for p in job.stack_dir.rglob("*.npy"))
    if job.model.checkpoint:
        files.append(Path(job.model.checkpoint))
    for p in files:
        st = p.stat()
        digest.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
    extra = {
        "year": job.year,
        "tiles": [t.name for t in tiles],
        "device": device.type,
        "version": STAGE_VERSIONS["infer"],
    }
    digest.update(json.dumps(extra, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def _work_dir(out: Path, stamp: str) -> Path:
    """The part's work directory; work directories of other stamps (stale settings or data) are removed."""
    work = out.parent / f".partial-{out.name}-{stamp}"
    for stale in out.parent.glob(f".partial-{out.name}-*"):
        if stale != work:
            logger.info("removing %s: it was made with other settings or data", stale)
            shutil.rmtree(stale)
    work.mkdir(parents=True, exist_ok=True)
    return work


@dataclass
class _Prepared:
    tile: TileSpec
    arrays: TileArrays
    counts: Evidence


def _prepare(stacks: ChunkStacks, plan: StoredPlan, job: InferJob, tile: TileSpec) -> _Prepared:
    """Page the tile's windows in and count its observations (runs ahead, on a background thread)."""
    chunk = plan.chunk(job.chunk)
    roi = plan.mask(chunk.grid.window(tile.x0, tile.y0, tile.x1 - tile.x0, tile.y1 - tile.y0))
    arrays = stacks.window(tile.x0, tile.y0, tile.x1, tile.y1, roi)
    # reads every S2 value of the window (s2_any), so the device then reads from memory
    counts = observation_counts(arrays)
    return _Prepared(tile, arrays, counts)


def run_infer_job(job: InferJob, *, on_tile: Callable[[TileSpec], None] | None = None) -> int:
    """Embed a part's tiles into ``job.out``, resuming finished tiles; returns how many tiles were embedded.

    Args:
        job: What to embed.
        on_tile: Called after each tile is written (progress hooks, tests).

    Raises:
        TileError, GridMismatchError: the chunk stacks are missing or do not fit the chunk.
        CheckpointError: the checkpoint cannot be loaded.
        ConfigError: ``model.device: cuda`` without a GPU, or an unknown chunk or part.
    """
    mcfg = job.model
    tiles = job.tiles()
    chunk = job.plan.chunk(job.chunk)
    stacks = ChunkStacks(job.stack_dir, chunk.grid)
    dev = inference_device(mcfg.device)
    model = models.load(mcfg.checkpoint, "cpu", mcfg.family, source=job.s2_source, dimensions=mcfg.dimensions)
    batch = gpu_batch_size(model, dev, mcfg.precision, mcfg.batch_size) if dev.type == "cuda" else mcfg.batch_size
    work = _work_dir(job.out, _stamp(job, tiles, dev))
    int8 = mcfg.output == "int8"
    todo = [t for t in tiles if not tile_files(work, t.name, int8).meta.exists()]
    if len(todo) < len(tiles):
        logger.info("resuming: %d of %d tiles were done by an earlier attempt", len(tiles) - len(todo), len(tiles))
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare") as ahead:
        pending: Future[_Prepared] | None = ahead.submit(_prepare, stacks, job.plan, job, todo[0]) if todo else None
        for i, tile in enumerate(todo):
            assert pending is not None
            ready = pending.result()
            pending = ahead.submit(_prepare, stacks, job.plan, job, todo[i + 1]) if i + 1 < len(todo) else None
            t0 = time.monotonic()
            result = infer_arrays(
                model,
                ready.arrays,
                origin=(chunk.grid.col + tile.x0, chunk.grid.row + tile.y0),
                year=job.year,
                device=dev,
                precision=mcfg.precision,
                batch_size=batch,
                repeats=mcfg.repeats,
                counts=ready.counts,
                nodata_policy=mcfg.nodata_policy,
            )
            write_tile_embeddings(tile_files(work, tile.name, int8), result, model, mcfg, job.year, batch)
            logger.info(
                "tile %d/%d %s: %d pixels embedded in %.1f s",
                len(tiles) - len(todo) + i + 1,
                len(tiles),
                tile.name,
                int(result.valid.sum()),
                time.monotonic() - t0,
            )
            if on_tile is not None:
                on_tile(tile)
    if job.out.exists():  # Snakemake removes outputs before a job; a hand-run may find an old one
        shutil.rmtree(job.out)
    work.rename(job.out)  # the part appears whole, or not at all
    logger.info("%d tiles of %s/%s in %.1f s -> %s", len(todo), job.chunk, job.part, time.monotonic() - start, job.out)
    return len(todo)


def embed_tile_dir(mcfg: ModelConfig, s2_source: str, year: int, tile_dir: Path, out: Path) -> None:
    """Embed one reference-layout tile directory (ours or the reference retiler's) into ``out`` (``<tile>.npy``).

    Writes ``<tile>.npy``, ``<tile>_scales.npy`` (int8) and ``<tile>.json`` next to ``out``.

    Raises:
        TileError: The tile directory is incomplete or malformed.
        CheckpointError: The checkpoint cannot be loaded.
        ConfigError: ``model.device: cuda`` without a GPU, or a setting the model cannot honour.
    """
    tile, grid = read_tile(tile_dir)
    dev = inference_device(mcfg.device)
    model = models.load(mcfg.checkpoint, "cpu", mcfg.family, source=s2_source, dimensions=mcfg.dimensions)
    result = infer_arrays(
        model,
        tile,
        origin=(grid.col, grid.row),
        year=year,
        device=dev,
        precision=mcfg.precision,
        batch_size=mcfg.batch_size,
        repeats=mcfg.repeats,
        nodata_policy=mcfg.nodata_policy,
    )
    files = tile_files(out.parent, out.stem, mcfg.output == "int8")
    write_tile_embeddings(files, result, model, mcfg, year, mcfg.batch_size)
