"""Streaming mosaic of per-tile embedding arrays onto the ROI grid, and its conversion to a COG.

The mosaic is written window by window: each window (a square of whole GeoTIFF blocks) is filled
from the slices of the tiles that overlap it, read through ``np.load(mmap_mode="r")``, and written
once. Memory is bounded by one window of ``dimensions`` bands, whatever the ROI size, and every
block of the compressed temporary GeoTIFF is written exactly once (a partially written compressed
block would be re-encoded and appended, growing the file). GDAL's COG driver then copies the
temporary file into the final layout and builds the overviews. The temporary file is band
interleaved because GDAL builds overviews band by band (about 4x faster than from a 128-band
pixel-interleaved file); the COG is pixel interleaved, so one block read gives whole embeddings.

Overviews use nearest-neighbour resampling for every band, int8 codes, float32 values and scales
alike: a mean of embeddings is not the embedding of any pixel, a mean of int8 codes that carry
different per-pixel scales is meaningless, and nearest picks the same source pixel in the codes
COG and in the scales COG (same shape and blocks), so an overview pixel still dequantises exactly.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from tessera.errors import TesseraError, TileError
from tessera.grid import Grid

__all__ = ["INT8_NODATA", "TilePlacement", "band_descriptions", "require_cog_driver", "to_cog", "write_mosaic"]

logger = logging.getLogger(__name__)

#: Nodata code of int8 products. Neither reference rule produces it for a real pixel: with
#: ``scale = max(max|x| / 127, 1e-8)`` (v1) or ``max(max|x|, 1e-12) / 127`` (v2, which also clips
#: to -127) every ``|x / scale| <= 127`` (the floors only make the quotient smaller)
#: (`tessera.quantize`). A real -128, should one ever arrive, is stored as -127.
INT8_NODATA = -128
_PROGRESS_SECONDS = 10.0


@dataclass(frozen=True)
class TilePlacement:
    """One tile's embedding file and where its real (unpadded) pixels lie in the ROI grid."""

    label: str
    """``<chunk id>/<tile name>``, for messages."""
    data: Path
    """``<tile>.npy``: int8 or float32 ``(P, P, D)``."""
    scales: Path | None
    """``<tile>_scales.npy`` float32 ``(P, P)`` for int8 tiles, else None."""
    col: int
    """Column of the tile's corner in the ROI grid."""
    row: int
    """Row of the tile's corner in the ROI grid."""
    width: int
    """Real columns (``x1 - x0``); columns past it are padding."""
    height: int
    """Real rows (``y1 - y0``)."""


def band_descriptions(dims: int) -> list[str]:
    """Band names ``A00``, ``A01``, ... (one per embedding dimension)."""
    return [f"A{i:02d}" for i in range(dims)]


def require_cog_driver() -> None:
    """Raise if the GDAL bundled with rasterio cannot write COGs (GDAL < 3.1)."""
    with rasterio.Env() as env:
        if "COG" not in env.drivers():
            raise TesseraError(
                f"the GDAL {rasterio.__gdal_version__} bundled with rasterio has no COG driver; "
                "install a rasterio wheel built with GDAL >= 3.1"
            )


def _windows(grid: Grid, size: int) -> Iterator[Window]:
    for r0 in range(0, grid.height, size):
        for c0 in range(0, grid.width, size):
            yield Window(c0, r0, min(size, grid.width - c0), min(size, grid.height - r0))


def _open_tile(path: Path, label: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise TileError(f"cannot read {path} (tile {label}): {exc}; rerun the tile's infer job") from exc
    ok = arr.ndim == len(shape) and arr.dtype == dtype
    ok = ok and all(have >= need for have, need in zip(arr.shape[:2], shape[:2], strict=False))
    ok = ok and (len(shape) < 3 or arr.shape[2] == shape[2])
    if not ok:
        raise TileError(
            f"{path} (tile {label}) is {arr.dtype} {arr.shape}, expected {dtype} of at least {shape}; "
            "rerun the tile's infer job"
        )
    result: np.ndarray = arr
    return result


def _fill(
    win: Window, tiles: Sequence[TilePlacement], dims: int, int8: bool, inside: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """The window's ``(D, h, w)`` values (and int8 scales), nodata where no tile or outside the ROI
    (``inside``: the window's ROI mask)."""
    h, w, r0, c0 = int(win.height), int(win.width), int(win.row_off), int(win.col_off)
    if int8:
        values = np.full((dims, h, w), INT8_NODATA, np.int8)
        scales: np.ndarray | None = np.full((h, w), np.nan, np.float32)
    else:
        values, scales = np.full((dims, h, w), np.nan, np.float32), None
    for t in tiles:
        ra, rb = max(r0, t.row), min(r0 + h, t.row + t.height)
        ca, cb = max(c0, t.col), min(c0 + w, t.col + t.width)
        if ra >= rb or ca >= cb:
            continue
        src_rows, src_cols = slice(ra - t.row, rb - t.row), slice(ca - t.col, cb - t.col)
        dst = (slice(None), slice(ra - r0, rb - r0), slice(ca - c0, cb - c0))
        need = (t.height, t.width, dims)
        if int8 and scales is not None and t.scales is not None:
            codes = _open_tile(t.data, t.label, need, np.dtype(np.int8))[src_rows, src_cols]
            sc = np.array(_open_tile(t.scales, t.label, need[:2], np.dtype(np.float32))[src_rows, src_cols])
            ok = np.isfinite(sc) & (sc > 0)
            block = np.where(ok[..., None], np.maximum(codes, INT8_NODATA + 1), INT8_NODATA).astype(np.int8)
            values[dst] = np.moveaxis(block, -1, 0)
            scales[dst[1:]] = np.where(ok, sc, np.nan)
        else:
            v = np.array(_open_tile(t.data, t.label, need, np.dtype(np.float32))[src_rows, src_cols])
            # a pixel is nodata as a whole vector: the tiles' all-zero vector (the reference's), or any NaN
            v[~np.isfinite(v).all(axis=-1) | ~v.any(axis=-1)] = np.nan
            values[dst] = np.moveaxis(v, -1, 0)
    outside = inside == 0
    values[:, outside] = INT8_NODATA if int8 else np.nan
    if scales is not None:
        scales[outside] = np.nan
    return values, scales


def _tiles_by_window(tiles: Sequence[TilePlacement], size: int) -> dict[tuple[int, int], list[TilePlacement]]:
    """The tiles overlapping each ``size`` window, so a window looks at its few tiles, not all of them."""
    index: dict[tuple[int, int], list[TilePlacement]] = {}
    for t in tiles:
        for wr in range(t.row // size, (t.row + t.height - 1) // size + 1):
            for wc in range(t.col // size, (t.col + t.width - 1) // size + 1):
                index.setdefault((wr, wc), []).append(t)
    return index


def _profile(grid: Grid, count: int, dtype: str, nodata: float, block: int) -> dict[str, object]:
    return {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": count,
        "dtype": dtype,
        "nodata": nodata,
        "crs": grid.crs,
        "transform": grid.transform,
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
        "interleave": "band",
        "compress": "deflate",
        "zlevel": 1,
        "bigtiff": "if_safer",
    }


def write_mosaic(
    dst: Path,
    scales_dst: Path | None,
    grid: Grid,
    tiles: Sequence[TilePlacement],
    dims: int,
    inside: Callable[[Grid], np.ndarray],
    *,
    tags: Mapping[str, str],
    block_size: int = 256,
    window_blocks: int = 1,
) -> int:
    """Write the tiles onto ``grid`` as a tiled GeoTIFF, one window at a time.

    Args:
        dst: GeoTIFF of ``dims`` bands (int8 when ``scales_dst`` is given, else float32).
        scales_dst: float32 one-band GeoTIFF of the per-pixel scales (int8 products), or None.
        grid: The ROI grid.
        tiles: Where each tile's real pixels go.
        dims: Embedding dimensions.
        inside: The ROI mask (uint8) of a window of ``grid``; pixels where it is 0 are nodata.
        tags: Dataset tags (``TESSERA_*``) written to both files.
        block_size: GeoTIFF block side (multiple of 16).
        window_blocks: Window side in blocks: memory is ``(block_size * window_blocks)**2 * dims`` values.

    Returns:
        The number of valid (non-nodata) pixels written.

    Raises:
        TileError: A tile file is unreadable or of the wrong dtype or shape.
    """
    int8 = scales_dst is not None
    size = block_size * window_blocks
    wins = list(_windows(grid, size))
    valid, start, last = 0, time.monotonic(), time.monotonic()
    dtype, nodata = ("int8", float(INT8_NODATA)) if int8 else ("float32", float("nan"))
    with rasterio.open(dst, "w", **_profile(grid, dims, dtype, nodata, block_size)) as ds:
        ds.update_tags(**tags)
        for i, name in enumerate(band_descriptions(dims), start=1):
            ds.set_band_description(i, name)
        sds = rasterio.open(scales_dst, "w", **_profile(grid, 1, "float32", np.nan, block_size)) if int8 else None
        try:
            if sds is not None:
                sds.update_tags(**tags)
                sds.set_band_description(1, "scale")
            by_window = _tiles_by_window(tiles, size)
            for k, win in enumerate(wins, start=1):
                window_grid = grid.window(int(win.col_off), int(win.row_off), int(win.width), int(win.height))
                near = by_window.get((int(win.row_off) // size, int(win.col_off) // size), [])
                values, scales = _fill(win, near, dims, int8, inside(window_grid))
                ds.write(values, window=win)
                if sds is not None and scales is not None:
                    sds.write(scales[None], window=win)
                    valid += int(np.isfinite(scales).sum())
                else:
                    valid += int(np.isfinite(values[0]).sum())
                if time.monotonic() - last >= _PROGRESS_SECONDS:
                    last = time.monotonic()
                    logger.info("stitched %d / %d windows (%.0f s)", k, len(wins), last - start)
        finally:
            if sds is not None:
                sds.close()
    logger.info("stitched %d windows of %d px: %d valid pixels", len(wins), size, valid)
    return valid


def to_cog(src: Path, dst: Path, block_size: int = 256) -> None:
    """Copy a GeoTIFF into a Cloud-Optimized GeoTIFF with nearest-neighbour overviews.

    DEFLATE with the predictor GDAL picks for the type (horizontal for integers, floating point
    for float32); tags, band descriptions and nodata are carried over.
    """
    require_cog_driver()
    rasterio.shutil.copy(
        src,
        dst,
        driver="COG",
        COMPRESS="DEFLATE",
        PREDICTOR="YES",
        BLOCKSIZE=str(block_size),
        OVERVIEWS="AUTO",
        OVERVIEW_RESAMPLING="NEAREST",
        BIGTIFF="IF_SAFER",
        NUM_THREADS=str(len(os.sched_getaffinity(0))),
    )
