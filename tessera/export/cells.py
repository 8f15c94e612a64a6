"""geotessera's global 0.1-degree tiles: naming, which tiles a ROI touches, and each tile's raster grid.

geotessera names a tile by its centre, ``grid_{lon:.2f}_{lat:.2f}`` with centres at x.x5, and keys
it by ``round(coordinate * 100)`` (reference-spec 7.1; ``geotessera.registry.tile_from_world``,
``coord_to_grid_int``). Centres are kept here as integers in hundredths of a degree, so names and
keys never suffer from binary fractions.

A tile's raster is whatever its landmask GeoTIFF says: geotessera reads the CRS and transform from
it and never recomputes them. The published tiles use the UTM zone of the tile centre, 10 m
pixels and the envelope of the tile's cell in that zone, with its origin at the envelope's corner.
Here a tile is the envelope of its cell in the product's CRS, snapped outwards to the product's
pixel lattice (pixel edges on multiples of the resolution, `tessera.grid`): a window of the
product grid, so its pixels are the product's own, copied without resampling, and a point gives
the same embedding in geotessera as in the product. Two consequences are documented in
docs/geotessera.md: our tile grids sit up to one pixel off the published ones, and a tile whose
centre lies in another UTM zone than the product's keeps the product's CRS (resampling it into
its own zone would move values by up to a pixel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import rasterio.features
import rasterio.warp

from tessera.grid import Grid, grid_covering

__all__ = ["Cell", "RoiMask", "cell_of", "cells_touching", "tile_grid"]

#: Points per cell edge when a cell is reprojected: its edges are curves in a projected CRS.
_DENSIFY = 21


class RoiMask(Protocol):
    """A ROI as the export needs it: its grid and its mask on any window of that grid.

    `tessera.plan.StoredPlan` (the workflow's stored plan) and `tessera.grid.Roi` both are one.
    """

    @property
    def grid(self) -> Grid:
        """The ROI grid (the product grid)."""
        ...

    def mask(self, grid: Grid) -> np.ndarray:
        """uint8 ROI mask of a window of `grid` (nonzero = inside)."""
        ...


@dataclass(frozen=True, order=True)
class Cell:
    """A 0.1-degree geotessera tile, by its centre in hundredths of a degree."""

    lon_i: int
    """Centre longitude x 100 (geotessera's ``lon_i``), always ending in 5."""
    lat_i: int
    """Centre latitude x 100 (``lat_i``)."""

    @property
    def lon(self) -> float:
        """Centre longitude in degrees."""
        return self.lon_i / 100

    @property
    def lat(self) -> float:
        """Centre latitude in degrees."""
        return self.lat_i / 100

    @property
    def name(self) -> str:
        """``grid_{lon:.2f}_{lat:.2f}``, the tile's directory and file stem."""
        return f"grid_{self.lon:.2f}_{self.lat:.2f}"

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(west, south, east, north)`` in degrees: the centre +/- 0.05."""
        return (self.lon_i - 5) / 100, (self.lat_i - 5) / 100, (self.lon_i + 5) / 100, (self.lat_i + 5) / 100

    def polygon(self) -> dict[str, object]:
        """GeoJSON polygon of the cell in EPSG:4326, each edge densified."""
        w, s, e, n = self.bounds
        t = np.linspace(0.0, 1.0, _DENSIFY)
        ring = (
            [(w + (e - w) * f, s) for f in t]
            + [(e, s + (n - s) * f) for f in t[1:]]
            + [(e - (e - w) * f, n) for f in t[1:]]
            + [(w, n - (n - s) * f) for f in t[1:]]
        )
        return {"type": "Polygon", "coordinates": [[(float(x), float(y)) for x, y in ring]]}


def cell_of(lon: float, lat: float) -> Cell:
    """The tile holding the point (geotessera's ``tile_from_world``: ``floor(coordinate * 10)``)."""
    return Cell(math.floor(lon * 10) * 10 + 5, math.floor(lat * 10) * 10 + 5)


def tile_grid(cell: Cell, crs: str, resolution: float) -> Grid:
    """The tile's raster: the cell's envelope in ``crs`` snapped outwards to multiples of ``resolution``."""
    bounds = rasterio.warp.transform_bounds("EPSG:4326", crs, *cell.bounds, densify_pts=_DENSIFY)
    return grid_covering(crs, bounds, resolution)


def cells_touching(roi: RoiMask) -> list[Cell]:
    """The tiles whose cell overlaps at least one ROI pixel, sorted by (lat, lon).

    A pixel counts when any part of it lies in the cell, so every point of every ROI pixel falls in
    an exported tile (geotessera picks a point's tile by the point, not by its pixel).
    """
    grid = roi.grid
    west, south, east, north = rasterio.warp.transform_bounds(grid.crs, "EPSG:4326", *grid.bounds, densify_pts=_DENSIFY)
    columns = list(range(math.floor(west * 10), math.floor(east * 10) + 1))
    if west > east:  # across the antimeridian: from west to 180 degrees, then from -180 to east
        columns = [*range(math.floor(west * 10), 1800), *range(-1800, math.floor(east * 10) + 1)]
    touched = []
    for iy in range(math.floor(south * 10), math.floor(north * 10) + 1):
        for ix in columns:
            cell = Cell(ix * 10 + 5, iy * 10 + 5)
            if _overlaps(roi, cell):
                touched.append(cell)
    return sorted(touched, key=lambda c: (c.lat_i, c.lon_i))


def _overlaps(roi: RoiMask, cell: Cell) -> bool:
    grid = roi.grid
    shape = rasterio.warp.transform_geom("EPSG:4326", grid.crs, cell.polygon())
    xs, ys = zip(*shape["coordinates"][0], strict=True)
    near = grid_covering(grid.crs, (min(xs), min(ys), max(xs), max(ys)), grid.resolution)
    col0, row0 = max(near.col, grid.col), max(near.row, grid.row)
    col1 = min(near.col + near.width, grid.col + grid.width)
    row1 = min(near.row + near.height, grid.row + grid.height)
    if col0 >= col1 or row0 >= row1:
        return False
    window = Grid(grid.crs, grid.resolution, col0, row0, col1 - col0, row1 - row0)
    in_cell = rasterio.features.rasterize(
        [(shape, 1)], out_shape=window.shape, transform=window.transform, all_touched=True, dtype="uint8"
    )
    return bool(np.any((in_cell != 0) & (roi.mask(window) != 0)))
