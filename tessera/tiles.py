"""Cut a chunk's stacked arrays into reference-layout tile directories (reference-spec section 2.1).

An export: inference reads windows of the chunk stacks directly (`tessera.tileio.ChunkStacks`). The
directories are for the reference's own inference, for `tessera train`, and for users who want the
reference's layout. Every tile is ``P x P``: the window ``[y0:y1, x0:x1]`` of each stacked array,
zero-padded past the chunk edge; day-of-year arrays are copied whole, so every tile of a chunk
carries the same T.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine

from tessera.errors import TileError
from tessera.grid import Chunk, TileSpec
from tessera.io import atomic_dir
from tessera.layout import ROI_FILE, TILE_FILES
from tessera.plan import StoredPlan
from tessera.tileio import ChunkStacks

__all__ = ["validate_tile_dir", "write_chunk_tiles", "write_tile"]

logger = logging.getLogger(__name__)


def _padded(arr: np.ndarray, tile: TileSpec, size: int) -> np.ndarray:
    """The tile window of a (T, H, W[, C]) array, zero-padded to (T, size, size[, C])."""
    out = np.zeros((arr.shape[0], size, size, *arr.shape[3:]), dtype=arr.dtype)
    out[:, : tile.y1 - tile.y0, : tile.x1 - tile.x0] = arr[:, tile.y0 : tile.y1, tile.x0 : tile.x1]
    return out


def _write_roi_tiff(path: Path, mask: np.ndarray, crs: str, transform: Affine) -> None:
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "height": mask.shape[0],
        "width": mask.shape[1],
        "count": 1,
        "dtype": "uint8",
        "crs": crs,
        "transform": transform,
        "compress": "lzw",
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(mask, 1)


def write_tile(
    stacks: ChunkStacks, chunk: Chunk, tile: TileSpec, tile_size: int, chunk_mask: np.ndarray, out_dir: Path
) -> None:
    """Write one tile directory (the reference's 7 ``.npy`` files and ``roi.tiff``) into ``out_dir``.

    Raises:
        TileError: the tile does not fit the chunk.
    """
    h, w = chunk.grid.shape
    if (
        not (0 <= tile.x0 < tile.x1 <= w and 0 <= tile.y0 < tile.y1 <= h)
        or max(tile.x1 - tile.x0, tile.y1 - tile.y0) > tile_size
    ):
        raise TileError(f"tile {tile.name} does not fit chunk {chunk.id} ({w} x {h}) at tile_size {tile_size}")
    out_dir.mkdir(parents=True, exist_ok=True)
    for spec in TILE_FILES:
        arr = stacks.arrays[spec.name]
        data = np.array(arr) if spec.ndim == 1 else _padded(arr, tile, tile_size)
        with open(out_dir / spec.name, "wb") as fh:
            np.save(fh, data, allow_pickle=False)
    mask = np.zeros((tile_size, tile_size), np.uint8)
    mask[: tile.y1 - tile.y0, : tile.x1 - tile.x0] = chunk_mask[tile.y0 : tile.y1, tile.x0 : tile.x1] > 0
    transform = chunk.grid.transform @ Affine.translation(tile.x0, tile.y0)
    _write_roi_tiff(out_dir / ROI_FILE, mask, chunk.grid.crs, transform)


def write_chunk_tiles(plan: StoredPlan, chunk_id: str, stack_dir: Path, out_dir: Path) -> int:
    """Write every tile directory of a chunk under ``out_dir`` (``<tile>/``), all at once atomically.

    Returns:
        The number of tiles written.
    """
    if plan.tile_size is None:
        raise ValueError("the plan must be opened with a tile size")
    chunk = plan.chunk(chunk_id)
    stacks = ChunkStacks(stack_dir, chunk.grid)
    mask = plan.mask(chunk.grid)
    tiles = plan.tiles(chunk_id)
    with atomic_dir(out_dir) as tmp:
        for i, tile in enumerate(tiles, 1):
            write_tile(stacks, chunk, tile, plan.tile_size, mask, tmp / tile.name)
            logger.info("tile %d/%d %s written", i, len(tiles), tile.name)
    return len(tiles)


def validate_tile_dir(path: Path) -> dict[str, tuple[int, ...]]:
    """Check that ``path`` holds exactly the reference tile files with the right dtypes and shapes.

    Returns:
        The shape of every ``.npy`` file, by name.

    Raises:
        TileError: a file is missing, extra, or of the wrong dtype or shape.
    """
    expected = {f.name for f in TILE_FILES} | {ROI_FILE}
    present = {p.name for p in path.iterdir()} if path.is_dir() else set()
    if present != expected:
        raise TileError(
            f"tile {path} holds {sorted(present)}; expected exactly {sorted(expected)}: re-run the tile step"
        )
    with rasterio.open(path / ROI_FILE) as src:
        size = src.width
        if src.height != size or src.dtypes[0] != "uint8":
            raise TileError(f"{path / ROI_FILE} is {src.height} x {src.width} {src.dtypes[0]}, expected square uint8")
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in TILE_FILES:
        arr = np.load(path / spec.name, mmap_mode="r", allow_pickle=False)
        ok = arr.dtype == spec.dtype and arr.ndim == spec.ndim
        if ok and spec.ndim > 1:
            ok = arr.shape[1:3] == (size, size) and (spec.channels is None or arr.shape[3] == spec.channels)
        if not ok:
            raise TileError(f"{path / spec.name} is {arr.dtype} {arr.shape}, not {spec.dtype} (T, {size}, {size}, ...)")
        shapes[spec.name] = tuple(arr.shape)
    for data, doy in (
        ("bands.npy", "doys.npy"),
        ("sar_ascending.npy", "sar_ascending_doy.npy"),
        ("sar_descending.npy", "sar_descending_doy.npy"),
    ):
        if shapes[data][0] != shapes[doy][0]:
            raise TileError(f"{path}: {data} has T = {shapes[data][0]} but {doy} has {shapes[doy][0]}")
    return shapes
