"""Per-pixel features to probe: a model's embeddings, a product's embeddings, or the raw annual median.

All functions take the labelled pixels as (tile index, flat pixel index) pairs over the same tiles
and return ``(N, D)`` float64 arrays with NaN rows where a pixel has no feature.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import rasterio
import rasterio.io
import rasterio.windows
from rasterio.crs import CRS
from rasterio.errors import RasterioIOError

from tessera.errors import GridMismatchError, ProductsMissingError, UnsupportedProductError
from tessera.grid import Grid
from tessera.infer import infer_arrays
from tessera.models.arch import Architecture
from tessera.models.spec import LoadedModel
from tessera.products import product_paths
from tessera.tileio import TileArrays

__all__ = [
    "check_product",
    "model_features",
    "product_features",
    "random_weights_model",
    "raw_median_features",
]

Tiles = Sequence[tuple[TileArrays, Grid]]

_MAKE_PRODUCT = (
    "the workflow's stitch step writes it as results/<year>/products/tessera_<year>.tif "
    "(`snakemake --configfile <config>`)"
)


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


def _lattice_problem(src: rasterio.io.DatasetReader, grid: Grid) -> str | None:
    """Why the product's pixels are not the pixels of a tile on ``grid``, or None when they are."""
    t = src.transform
    if src.crs is None:
        return f"the product has no CRS, the tiles are in {grid.crs}"
    if src.crs != CRS.from_user_input(grid.crs):
        return f"the product is in {src.crs.to_string()}, the tiles in {grid.crs}"
    if t.b != 0 or t.d != 0 or not math.isclose(t.a, -t.e) or not math.isclose(t.a, grid.resolution):
        shape = "" if t.b == 0 and t.d == 0 else " and rotated"
        return (
            f"the product's pixels are {t.a:g} x {-t.e:g}{shape}, the tiles' {grid.resolution:g} x "
            f"{grid.resolution:g} {grid.crs} units"
        )
    col, row = t.c / grid.resolution, -t.f / grid.resolution
    if not (math.isclose(col, round(col), abs_tol=1e-6) and math.isclose(row, round(row), abs_tol=1e-6)):
        return (
            f"the product's corner ({t.c:.10g}, {t.f:.10g}) is off the tiles' pixel lattice (multiples of "
            f"{grid.resolution:g} {grid.crs} units)"
        )
    return None


def check_product(cog: Path, grids: Sequence[Grid], names: Sequence[str] | None = None) -> None:
    """Check that the product COG (and, int8, its ``_scales.tif``) exists and lies on each tile's pixel lattice.

    Args:
        cog: The product COG.
        grids: Grids of the tiles whose pixels will be read from it.
        names: Names of those tiles for the message (default: their index).

    Raises:
        ProductsMissingError: The COG or its scales do not exist.
        UnsupportedProductError: The COG is not a readable raster.
        GridMismatchError: Its CRS, pixel size or lattice differ from a tile's: values would come from
            other places than the tiles' pixels.
    """
    if not cog.is_file():
        raise ProductsMissingError(
            f"product {cog} does not exist; {_MAKE_PRODUCT}: run it first, or point --product at an existing product"
        )
    labels = list(names) if names is not None else [f"#{k}" for k in range(len(grids))]
    problems: dict[str, list[str]] = {}
    try:
        with rasterio.open(cog) as src:
            for label, grid in zip(labels, grids, strict=True):
                if (why := _lattice_problem(src, grid)) is not None:
                    problems.setdefault(why, []).append(label)
            int8 = src.dtypes[0] == "int8"
    except RasterioIOError as exc:
        raise UnsupportedProductError(
            f"product {cog} is not a readable raster ({exc}); point --product at a product COG: {_MAKE_PRODUCT}"
        ) from exc
    scales = product_paths(cog, int8=True)["scales"]
    if int8 and not scales.is_file():
        raise ProductsMissingError(
            f"{scales} (the scales of the int8 product {cog.name}) does not exist; {_MAKE_PRODUCT} with its scales "
            "beside it: rerun that step, or copy the _scales.tif along with the product"
        )
    if problems:
        bad = sum(len(v) for v in problems.values())
        shown = "; ".join(
            f"{why} (tiles {', '.join(tiles[:3])}" + (f" and {len(tiles) - 3} more)" if len(tiles) > 3 else ")")
            for why, tiles in problems.items()
        )
        raise GridMismatchError(
            f"product {cog} does not lie on the pixel grid of {bad} of the {len(grids)} tiles holding labelled "
            f"pixels: {shown}; its values would come from other places than those pixels. Evaluate the product made "
            "from these tiles (same ROI, CRS and resolution), or point --data/--year at the tiles it was made from"
        )


def product_features(
    cog: Path, tiles: Tiles, tile_of: np.ndarray, pix: np.ndarray, names: Sequence[str] | None = None
) -> np.ndarray:
    """Dequantised embeddings of the pixels read from a product COG (``tessera_<year>.tif`` [+ ``_scales.tif``]).

    int8 products: ``code * scale`` from the ``_scales.tif`` beside the COG; code -128 or a NaN scale
    is nodata. float32 products: the values, NaN nodata. Pixels outside the product are NaN.

    Raises:
        ProductsMissingError, UnsupportedProductError, GridMismatchError: See `check_product` (only the
            tiles holding some of the pixels are checked; ``names`` names the tiles in its message).
    """
    used = sorted({int(k) for k in np.unique(tile_of)})
    check_product(cog, [tiles[k][1] for k in used], [names[k] for k in used] if names is not None else None)
    scales_path = product_paths(cog, int8=True)["scales"]
    with rasterio.open(cog) as src:
        out = np.full((len(pix), src.count), np.nan)
        for k, (tile, grid) in enumerate(tiles):
            rows = np.flatnonzero(tile_of == k)
            if not len(rows):
                continue
            ys, xs = np.divmod(pix[rows], tile.roi.shape[1])
            # check_product: the product's grid and the tile's lie on the same global pixel lattice (tessera.grid.Grid)
            left, top = src.transform.c, src.transform.f
            col_off = grid.col - round(left / grid.resolution)
            row_off = grid.row - round(-top / grid.resolution)
            window = rasterio.windows.Window(col_off, row_off, grid.width, grid.height)
            data = src.read(window=window, boundless=True, fill_value=src.nodata or 0)
            picked = data[:, ys, xs].T.astype(np.float64)
            # a float product without a nodata value fills the boundless read with 0: mark those pixels as NaN
            px_col, px_row = col_off + xs, row_off + ys
            outside = (px_col < 0) | (px_col >= src.width) | (px_row < 0) | (px_row >= src.height)
            if src.dtypes[0] == "int8":
                with rasterio.open(scales_path) as sc:
                    scale = sc.read(1, window=window, boundless=True, fill_value=np.nan)[ys, xs]
                bad = (picked == -128).any(axis=1) | ~np.isfinite(scale)
                picked = picked * scale[:, None]
                picked[bad] = np.nan
            picked[outside] = np.nan
            out[rows] = picked
    return out
