"""Seeded generator of reference-layout tiles for the inference tests and benchmarks.

A `World` is a small stacked region (all dates, the ROI mask, its `Grid`); `cut` takes a tile out of
it at any offset and size, zero-padded past the edge as the retiler pads, so the same pixel can be
embedded inside different tilings; `write_tile_dir` writes the reference's 7 ``.npy`` files and a
georeferenced ``roi.tiff``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import rasterio

from tessera.grid import Grid
from tessera.tileio import TileArrays

__all__ = [
    "World",
    "cut",
    "make_world",
    "with_extra_dates",
    "write_chunk_stacks",
    "write_roi_raster",
    "write_tile_dir",
]


@dataclass(frozen=True)
class World:
    """Stacked arrays of a region and its grid."""

    arrays: TileArrays
    grid: Grid


def _doys(rng: np.random.Generator, t: int, dtype: str) -> np.ndarray:
    return np.sort(rng.choice(np.arange(1, 366), size=t, replace=False)).astype(dtype)


def make_world(
    seed: int,
    height: int,
    width: int,
    *,
    t_s2: int = 12,
    t_asc: int = 6,
    t_desc: int = 5,
    valid_fraction: float = 0.6,
    empty_fraction: float = 0.1,
    origin: tuple[int, int] = (30000, -520000),
) -> World:
    """A seeded region: random DN / dB values, random validity, some pixels without any observation.

    ``empty_fraction`` of the pixels get no valid S2 and no S1 at all; about as many get no S1 only.
    The ROI mask is 1 except for a corner block.
    """
    rng = np.random.default_rng(seed)
    bands = rng.integers(1, 12000, (t_s2, height, width, 10)).astype("<u2")
    masks = (rng.random((t_s2, height, width)) < valid_fraction).astype("|u1")
    asc = rng.integers(1, 12000, (t_asc, height, width, 2)).astype("<i2")
    desc = rng.integers(1, 12000, (t_desc, height, width, 2)).astype("<i2")
    asc[rng.random((t_asc, height, width)) > valid_fraction] = 0
    desc[rng.random((t_desc, height, width)) > valid_fraction] = 0
    empty = rng.random((height, width)) < empty_fraction
    masks[:, empty] = 0
    no_s1 = empty | (rng.random((height, width)) < empty_fraction)
    asc[:, no_s1] = 0
    desc[:, no_s1] = 0
    roi = np.ones((height, width), np.uint8)
    roi[: max(1, height // 4), : max(1, width // 4)] = 0
    arrays = TileArrays(
        bands=bands,
        masks=masks,
        doys=_doys(rng, t_s2, "<u2"),
        sar_ascending=asc,
        sar_ascending_doy=_doys(rng, t_asc, "<i2"),
        sar_descending=desc,
        sar_descending_doy=_doys(rng, t_desc, "<i2"),
        roi=roi,
    )
    return World(arrays, Grid("EPSG:32630", 10.0, origin[0], origin[1], width, height))


def _window(arr: np.ndarray, x0: int, y0: int, size: int, time_axis: bool = True) -> np.ndarray:
    src = arr[:, y0 : y0 + size, x0 : x0 + size] if time_axis else arr[y0 : y0 + size, x0 : x0 + size]
    shape = (arr.shape[0], size, size, *arr.shape[3:]) if time_axis else (size, size)
    out = np.zeros(shape, arr.dtype)
    if time_axis:
        out[:, : src.shape[1], : src.shape[2]] = src
    else:
        out[: src.shape[0], : src.shape[1]] = src
    return out


def cut(world: World, x0: int, y0: int, size: int) -> tuple[TileArrays, Grid]:
    """The ``size x size`` tile at column ``x0``, row ``y0`` of the world, zero-padded past its edge."""
    a = world.arrays
    tile = TileArrays(
        bands=_window(a.bands, x0, y0, size),
        masks=_window(a.masks, x0, y0, size),
        doys=a.doys.copy(),
        sar_ascending=_window(a.sar_ascending, x0, y0, size),
        sar_ascending_doy=a.sar_ascending_doy.copy(),
        sar_descending=_window(a.sar_descending, x0, y0, size),
        sar_descending_doy=a.sar_descending_doy.copy(),
        roi=_window(a.roi, x0, y0, size, time_axis=False),
    )
    return tile, world.grid.window(x0, y0, size, size)


def _insert_dates(data: np.ndarray, doys: np.ndarray, extra: list[int]) -> tuple[np.ndarray, np.ndarray]:
    all_doys = np.concatenate((doys.astype(np.int64), np.asarray(extra, np.int64)))
    order = np.argsort(all_doys, kind="stable")
    padded = np.concatenate((data, np.zeros((len(extra), *data.shape[1:]), data.dtype)))
    return padded[order], all_doys[order].astype(doys.dtype)


def with_extra_dates(tile: TileArrays, s2: list[int], asc: list[int], desc: list[int]) -> TileArrays:
    """The same tile with extra all-invalid dates inserted in DOY order (as another chunk's date set would add)."""
    bands, doys = _insert_dates(tile.bands, tile.doys, s2)
    masks, _ = _insert_dates(tile.masks, tile.doys, s2)
    a, a_doy = _insert_dates(tile.sar_ascending, tile.sar_ascending_doy, asc)
    d, d_doy = _insert_dates(tile.sar_descending, tile.sar_descending_doy, desc)
    # invalid S2 dates may still carry band values (the reference marks invalidity only in masks.npy)
    bands = bands.copy()
    bands[masks == 0] = np.where(bands[masks == 0] == 0, 777, bands[masks == 0])
    return replace(
        tile,
        bands=bands,
        masks=masks,
        doys=doys,
        sar_ascending=a,
        sar_ascending_doy=a_doy,
        sar_descending=d,
        sar_descending_doy=d_doy,
    )


def write_tile_dir(path: Path, tile: TileArrays, grid: Grid, *, roi_value: int = 1) -> Path:
    """Write ``tile`` as a reference tile directory (``roi_value`` 255 mimics the reference's masks)."""
    path.mkdir(parents=True, exist_ok=True)
    for name, arr in (
        ("bands.npy", tile.bands),
        ("masks.npy", tile.masks),
        ("doys.npy", tile.doys),
        ("sar_ascending.npy", tile.sar_ascending),
        ("sar_ascending_doy.npy", tile.sar_ascending_doy),
        ("sar_descending.npy", tile.sar_descending),
        ("sar_descending_doy.npy", tile.sar_descending_doy),
    ):
        np.save(path / name, arr)
    h, w = tile.shape
    with rasterio.open(
        path / "roi.tiff",
        "w",
        driver="GTiff",
        height=h,
        width=w,
        count=1,
        dtype="uint8",
        crs=grid.crs,
        transform=grid.transform,
    ) as dst:
        dst.write((tile.roi > 0).astype(np.uint8) * roi_value, 1)
    return path


def write_roi_raster(path: Path, world: World) -> Path:
    """The world's ROI mask as a GeoTIFF on the world's grid."""
    g = world.grid
    profile = {"driver": "GTiff", "height": g.height, "width": g.width, "count": 1, "dtype": "uint8", "crs": g.crs}
    with rasterio.open(path, "w", transform=g.transform, **profile) as dst:
        dst.write(world.arrays.roi, 1)
    return path


def write_chunk_stacks(stack_dir: Path, world: World, chunk: Grid) -> Path:
    """The read steps' stacks (``s2/``, ``s1-ascending/``, ``s1-descending/``) of one chunk of the world."""
    col, row = chunk.offset_in(world.grid)
    a = world.arrays

    def win(arr: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(arr[:, row : row + chunk.height, col : col + chunk.width])

    files = {
        "s2": {"bands.npy": win(a.bands), "masks.npy": win(a.masks), "doys.npy": a.doys},
        "s1-ascending": {"sar_ascending.npy": win(a.sar_ascending), "sar_ascending_doy.npy": a.sar_ascending_doy},
        "s1-descending": {
            "sar_descending.npy": win(a.sar_descending),
            "sar_descending_doy.npy": a.sar_descending_doy,
        },
    }
    for product, arrays in files.items():
        (stack_dir / product).mkdir(parents=True, exist_ok=True)
        for name, arr in arrays.items():
            np.save(stack_dir / product / name, arr)
    return stack_dir
