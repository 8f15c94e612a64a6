"""Per-pixel features to probe: a model's embeddings, a product's embeddings, or the raw annual median.

All functions take the labelled pixels as (tile index, flat pixel index) pairs over the same tiles
and return ``(N, D)`` float64 arrays with NaN rows where a pixel has no feature.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import rasterio
import rasterio.windows

from tessera.grid import Grid
from tessera.infer import infer_arrays
from tessera.models.arch import Architecture
from tessera.models.spec import LoadedModel
from tessera.tileio import TileArrays

__all__ = ["model_features", "product_features", "random_weights_model", "raw_median_features"]

Tiles = Sequence[tuple[TileArrays, Grid]]


def model_features(
    model: LoadedModel, tiles: Tiles, tile_of: np.ndarray, pix: np.ndarray, year: int, device: str = "cpu"
) -> np.ndarray:
    """Embeddings of the pixels, computed as the workflow's inference computes them (same seeds).

    Only the requested pixels are run through the model: each tile's ROI mask is replaced by a mask of
    them, which leaves every pixel's seeded input, and so its embedding, unchanged.
    """
    out = np.full((len(pix), model.spec.save_dim), np.nan)
    for k, (tile, grid) in enumerate(tiles):
        rows = np.flatnonzero(tile_of == k)
        if not len(rows):
            continue
        wanted = np.zeros(tile.roi.size, np.uint8)
        wanted[pix[rows]] = 1
        only = replace(tile, roi=wanted.reshape(tile.roi.shape))
        result = infer_arrays(model, only, origin=(grid.col, grid.row), year=year, device=device, precision="fp32")
        out[rows] = result.embeddings.reshape(-1, result.embeddings.shape[-1])[pix[rows]]
    return out


def random_weights_model(arch: Architecture, seed: int, source: str = "planetary-computer") -> LoadedModel:
    """``arch`` with seeded random weights: the starting point `tessera.train` would use with this seed."""
    module = arch.build(seed=seed).eval()
    return LoadedModel(
        module, arch.family, arch.input_spec(source), checkpoint_sha256=None, random_weights=True,
        architecture=arch.to_dict(),
    )  # fmt: skip


def raw_median_features(tiles: Tiles, tile_of: np.ndarray, pix: np.ndarray) -> np.ndarray:
    """Per-pixel median over the valid S2 observations of the 10 bands (DN), the single-composite baseline."""
    out = np.full((len(pix), 10), np.nan)
    for k, (tile, _) in enumerate(tiles):
        rows = np.flatnonzero(tile_of == k)
        if not len(rows):
            continue
        t, h, w = tile.masks.shape
        bands = tile.bands.reshape(t, h * w, 10)[:, pix[rows]].astype(np.float64)
        valid = tile.masks.reshape(t, h * w)[:, pix[rows]] != 0
        bands[~valid] = np.nan
        has = valid.any(axis=0)
        out[rows[has]] = np.nanmedian(bands[:, has], axis=0)
    return out


def product_features(cog: Path, tiles: Tiles, tile_of: np.ndarray, pix: np.ndarray) -> np.ndarray:
    """Dequantised embeddings of the pixels read from a product COG (``tessera_<year>.tif`` [+ ``_scales.tif``]).

    int8 products: ``code * scale`` from the ``_scales.tif`` beside the COG; code -128 or a NaN scale
    is nodata. float32 products: the values, NaN nodata.
    """
    scales_path = cog.with_name(cog.stem + "_scales.tif")
    with rasterio.open(cog) as src:
        out = np.full((len(pix), src.count), np.nan)
        for k, (tile, grid) in enumerate(tiles):
            rows = np.flatnonzero(tile_of == k)
            if not len(rows):
                continue
            ys, xs = np.divmod(pix[rows], tile.roi.shape[1])
            # the product's grid and the tiles' lie on the same global pixel lattice (tessera.grid.Grid)
            left, top = src.transform.c, src.transform.f
            col_off = grid.col - round(left / grid.resolution)
            row_off = grid.row - round(-top / grid.resolution)
            window = rasterio.windows.Window(col_off, row_off, grid.width, grid.height)
            data = src.read(window=window, boundless=True, fill_value=src.nodata or 0)
            picked = data[:, ys, xs].T.astype(np.float64)
            if src.dtypes[0] == "int8":
                with rasterio.open(scales_path) as sc:
                    scale = sc.read(1, window=window, boundless=True, fill_value=np.nan)[ys, xs]
                bad = (picked == -128).any(axis=1) | ~np.isfinite(scale)
                picked = picked * scale[:, None]
                picked[bad] = np.nan
            out[rows] = picked
    return out
