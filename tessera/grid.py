"""Output grid, region of interest, chunks and tiles.

Every run over the same place shares one grid: the ROI's projected CRS (or its local UTM
zone when the ROI is geographic), pixels of ``resolution`` metres whose edges lie on
multiples of the resolution. Chunks are cells of ``chunk_size_m`` anchored at multiples of
``chunk_size_m`` in that CRS, clipped to the ROI's pixel bounds; tiles are cut from each chunk
from its top-left corner, as the reference retiler cuts them from its stacked arrays.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.features
import rasterio.warp
import rasterio.windows
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling

from tessera.errors import RoiError
from tessera.layout import tile_name

__all__ = [
    "Chunk",
    "Grid",
    "Roi",
    "TileSpec",
    "chunk_masks",
    "grid_covering",
    "load_roi",
    "plan_chunks",
    "plan_tiles",
    "tiles_of_mask",
    "utm_crs_for",
]


@dataclass(frozen=True)
class Grid:
    """A north-up raster grid with square pixels whose edges lie on multiples of the resolution."""

    crs: str
    """CRS as ``"EPSG:<code>"``."""
    resolution: float
    """Pixel size in CRS units (metres)."""
    col: int
    """Global column of the left edge: ``x_left = col * resolution``."""
    row: int
    """Global row of the top edge: ``y_top = -row * resolution`` (rows grow southwards)."""
    width: int
    """Number of columns."""
    height: int
    """Number of rows."""

    @property
    def transform(self) -> Affine:
        """Affine transform of the grid's top-left pixel corner."""
        r = self.resolution
        return Affine(r, 0.0, self.col * r, 0.0, -r, -self.row * r)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in CRS units."""
        r = self.resolution
        left, top = self.col * r, -self.row * r
        return left, top - self.height * r, left + self.width * r, top

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``."""
        return self.height, self.width

    def window(self, col_off: int, row_off: int, width: int, height: int) -> Grid:
        """The sub-grid starting ``col_off``/``row_off`` pixels from this grid's corner."""
        return Grid(self.crs, self.resolution, self.col + col_off, self.row + row_off, width, height)

    def offset_in(self, outer: Grid) -> tuple[int, int]:
        """``(col_off, row_off)`` of this grid's corner inside ``outer`` (same CRS and resolution)."""
        if outer.crs != self.crs or outer.resolution != self.resolution:
            raise ValueError(f"grids differ: {self} vs {outer}")
        return self.col - outer.col, self.row - outer.row

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (see `from_dict`)."""
        return {
            "crs": self.crs,
            "resolution": self.resolution,
            "col": self.col,
            "row": self.row,
            "width": self.width,
            "height": self.height,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Grid:
        """Inverse of `to_dict`."""
        return cls(
            str(d["crs"]), float(d["resolution"]), int(d["col"]), int(d["row"]), int(d["width"]), int(d["height"])
        )

    @classmethod
    def from_transform(cls, crs: str, transform: Affine, width: int, height: int) -> Grid:
        """Grid of a raster whose transform is north-up, square and aligned to its resolution."""
        res = transform.a
        if not (math.isclose(-transform.e, res) and transform.b == 0 and transform.d == 0):
            raise ValueError(f"transform {transform} is not north-up with square pixels")
        col, row = transform.c / res, -transform.f / res
        if not (math.isclose(col, round(col), abs_tol=1e-6) and math.isclose(row, round(row), abs_tol=1e-6)):
            raise ValueError(f"transform {transform} is not aligned to multiples of {res}")
        return cls(crs, res, round(col), round(row), width, height)


def utm_crs_for(lon: float, lat: float) -> str:
    """The WGS 84 / UTM zone CRS of a point: ``EPSG:326zz`` north of the equator, ``327zz`` south."""
    zone = min(60, max(1, int((lon + 180.0) // 6) + 1))
    return f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"


def _epsg_string(crs: CRS, what: str) -> str:
    epsg = crs.to_epsg()
    if epsg is None:
        raise RoiError(f"{what} has a CRS without an EPSG code ({crs.to_string()}); reproject it to an EPSG CRS")
    return f"EPSG:{epsg}"


@dataclass(frozen=True)
class Roi:
    """A region of interest and the output grid that covers it."""

    path: Path
    """The ROI file."""
    kind: str
    """``"raster"`` or ``"vector"``."""
    grid: Grid
    """Output grid: the ROI's bounding box in the output CRS, snapped outwards to the resolution."""
    geometries: tuple[dict[str, Any], ...]
    """Vector ROIs: GeoJSON geometries in the output CRS (empty for rasters)."""

    def mask(self, grid: Grid) -> np.ndarray:
        """uint8 (H, W) mask of ``grid``: 1 where the pixel is inside the ROI, else 0.

        A raster ROI is read by window: only the part of the file that covers ``grid``.
        """
        if self.kind == "vector":
            return _vector_mask(self.shapes, grid)
        return _raster_mask(self.path, grid)

    @functools.cached_property
    def shapes(self) -> tuple[Any, ...]:
        """Vector ROIs: the geometries as (prepared) shapely objects, converted once."""
        import shapely
        import shapely.geometry

        geoms = tuple(shapely.geometry.shape(g) for g in self.geometries)
        for g in geoms:
            shapely.prepare(g)
        return geoms

    def touches(self, grid: Grid) -> bool:
        """Cheap test: False when a vector ROI certainly has no pixel in ``grid`` (rasters: always True)."""
        if self.kind != "vector":
            return True
        import shapely.geometry

        box = shapely.geometry.box(*grid.bounds)
        return any(g.intersects(box) for g in self.shapes)

    def count_inside(self, block: int = 4096) -> int:
        """Pixels of the ROI grid inside the ROI, counted block by block (bounded memory)."""
        g = self.grid
        return sum(
            int(self.mask(g.window(c, r, min(block, g.width - c), min(block, g.height - r))).sum(dtype=np.int64))
            for r in range(0, g.height, block)
            for c in range(0, g.width, block)
        )


def _vector_mask(geometries: tuple[Any, ...], grid: Grid) -> np.ndarray:
    import shapely
    import shapely.geometry

    box = shapely.geometry.box(*grid.bounds)
    # Clipping to the grid first keeps rasterising a small window of a huge polygon cheap. A clip can
    # leave a lower-dimensional sliver (a polygon touching the box gives a line), which would burn
    # pixels a full rasterisation does not: only parts of the input part's own dimension are kept.
    shapes = []
    for g in geometries:
        for part in shapely.get_parts(g):
            dim = shapely.get_dimensions(part)
            clipped = shapely.get_parts(part.intersection(box))
            shapes += [(shapely.geometry.mapping(c), 1) for c in clipped if shapely.get_dimensions(c) == dim]
    if not shapes:
        return np.zeros(grid.shape, np.uint8)
    burned: np.ndarray = rasterio.features.rasterize(
        shapes, out_shape=grid.shape, transform=grid.transform, fill=0, dtype="uint8"
    )
    return burned


def _raster_mask(path: Path, grid: Grid) -> np.ndarray:
    out = np.zeros(grid.shape, np.uint8)
    with rasterio.open(path) as src:
        bounds = rasterio.warp.transform_bounds(grid.crs, src.crs, *grid.bounds, densify_pts=21)
        win = rasterio.windows.from_bounds(*bounds, transform=src.transform)
        # a margin of whole pixels, so nearest-neighbour picks the same source pixel as a full read
        margin = 2
        col0, row0 = max(0, math.floor(win.col_off) - margin), max(0, math.floor(win.row_off) - margin)
        col1 = min(src.width, math.ceil(win.col_off + win.width) + margin)
        row1 = min(src.height, math.ceil(win.row_off + win.height) + margin)
        if col1 <= col0 or row1 <= row0:
            return out
        window = rasterio.windows.Window(col0, row0, col1 - col0, row1 - row0)
        data = (src.read(1, window=window, masked=True).filled(0) > 0).astype(np.uint8)
        rasterio.warp.reproject(
            source=data,
            destination=out,
            src_transform=src.window_transform(window),
            src_crs=src.crs,
            dst_transform=grid.transform,
            dst_crs=grid.crs,
            src_nodata=0,
            dst_nodata=0,
            resampling=Resampling.nearest,
        )
    return out


def _snap_bounds(bounds: tuple[float, float, float, float], res: float) -> tuple[int, int, int, int]:
    """Global (col0, row0, col1, row1) of the smallest resolution-aligned box holding ``bounds``."""
    left, bottom, right, top = bounds
    eps = 1e-6
    col0 = math.floor(left / res + eps)
    col1 = math.ceil(right / res - eps)
    row0 = math.floor(-top / res + eps)
    row1 = math.ceil(-bottom / res - eps)
    return col0, row0, max(col1, col0 + 1), max(row1, row0 + 1)


def load_roi(path: str | Path, resolution: float = 10.0, max_area_km2: float | None = None) -> Roi:
    """Read a ROI from a GeoTIFF mask (nonzero = inside) or a vector file and build its grid.

    Raises:
        RoiError: the file is missing, is neither raster nor vector, has no CRS, has no inside
            pixel, or covers more than ``max_area_km2``.
    """
    p = Path(path)
    resolution = float(resolution)
    if not p.exists():
        raise RoiError(f"ROI file {p} does not exist; set `roi` in the config to an existing GeoTIFF or vector file")
    if p.is_dir() and not p.suffix:
        raise RoiError(f"ROI path {p} is a directory; point `roi` at a GeoTIFF mask or a vector file")
    try:
        roi = _load_raster_roi(p, resolution)
    except _NotRaster:
        roi = _load_vector_roi(p, resolution)
    area_km2 = _roi_area_km2(roi)
    if area_km2 <= 0:
        raise RoiError(f"ROI {p} has no inside pixel at {resolution} m; check the mask values (nonzero = inside)")
    if max_area_km2 is not None and area_km2 > max_area_km2:
        raise RoiError(
            f"ROI {p} covers {area_km2:.1f} km2, more than max_roi_area_km2 = {max_area_km2}; "
            "raise max_roi_area_km2 in the config if you mean it, or use a smaller ROI"
        )
    return roi


class _NotRaster(Exception):
    pass


def _load_raster_roi(p: Path, resolution: float) -> Roi:
    try:
        src = rasterio.open(p)
    except rasterio.errors.RasterioIOError as exc:
        raise _NotRaster from exc
    with src:
        if src.crs is None:
            raise RoiError(f"ROI raster {p} has no CRS; write one into it (e.g. gdal_edit.py -a_srs EPSG:32630)")
        rows, cols = _inside_extent(src)
        if rows is None or cols is None:
            raise RoiError(
                f"ROI raster {p} has no inside pixel (all zero or nodata); "
                "check the mask: inside pixels must be nonzero"
            )
        t = src.transform
        xs = [t.c + t.a * cols[0], t.c + t.a * (cols[1] + 1)]
        ys = [t.f + t.e * rows[0], t.f + t.e * (rows[1] + 1)]
        src_bounds = (min(xs), min(ys), max(xs), max(ys))
        out_crs = _output_crs(src.crs, src_bounds, f"ROI raster {p}")
        bounds = rasterio.warp.transform_bounds(src.crs, out_crs, *src_bounds, densify_pts=21)
    col0, row0, col1, row1 = _snap_bounds(bounds, resolution)
    grid = Grid(out_crs, resolution, col0, row0, col1 - col0, row1 - row0)
    return Roi(p, "raster", grid, ())


def _inside_extent(src: Any, block_rows: int = 1024) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """First and last row and column holding a nonzero pixel, read in row blocks (bounded memory)."""
    rows: tuple[int, int] | None = None
    cols: tuple[int, int] | None = None
    for r0 in range(0, src.height, block_rows):
        win = rasterio.windows.Window(0, r0, src.width, min(block_rows, src.height - r0))
        data = src.read(1, window=win, masked=True).filled(0) > 0
        r = np.flatnonzero(data.any(axis=1))
        if not r.size:
            continue
        c = np.flatnonzero(data.any(axis=0))
        rows = (rows[0] if rows else r0 + int(r[0]), r0 + int(r[-1]))
        cols = (min(cols[0], int(c[0])), max(cols[1], int(c[-1]))) if cols else (int(c[0]), int(c[-1]))
    return rows, cols


def _output_crs(crs: CRS, bounds: tuple[float, float, float, float], what: str) -> str:
    if crs.is_geographic:
        lon0, lat0, lon1, lat1 = rasterio.warp.transform_bounds(crs, "EPSG:4326", *bounds)
        return utm_crs_for((lon0 + lon1) / 2, (lat0 + lat1) / 2)
    if not crs.linear_units or crs.linear_units.lower() not in ("metre", "meter", "m"):
        raise RoiError(f"{what} is in a projected CRS whose unit is {crs.linear_units!r}, not metres; reproject it")
    return _epsg_string(crs, what)


def _load_vector_roi(p: Path, resolution: float) -> Roi:
    import pyogrio
    import shapely
    from shapely.geometry import mapping

    try:
        meta, _, geoms, _ = pyogrio.raw.read(p)
    except Exception as exc:  # pyogrio raises DataSourceError and friends from GDAL
        raise RoiError(
            # GDAL's own advice ("prefix the path with a driver") would mislead here: keep its first clause
            f"ROI file {p} is neither a raster (GeoTIFF) nor a vector file (Shapefile, GeoPackage, GeoJSON): "
            f"{str(exc).split('; ')[0].rstrip('.')}; "
            "point `roi` in the config at a GeoTIFF mask or a vector file"
        ) from exc
    if geoms is None or meta.get("geometry_type") is None:
        raise RoiError(
            f"ROI file {p} is a table without geometries; point `roi` in the config at a GeoTIFF mask or a "
            "vector file with polygons"
        )
    if meta.get("crs") is None:
        raise RoiError(f"ROI vector {p} has no CRS; add one (GeoJSON is WGS 84 by definition: check the file)")
    shapes = [g for g in shapely.from_wkb(geoms) if g is not None and not g.is_empty]
    if not shapes:
        raise RoiError(f"ROI vector {p} has no geometry; add at least one polygon to it")
    src_crs = CRS.from_user_input(meta["crs"])
    union = shapely.union_all(shapes)
    out_crs = _output_crs(src_crs, union.bounds, f"ROI vector {p}")
    projected = rasterio.warp.transform_geom(src_crs, out_crs, mapping(union))
    geom = shapely.geometry.shape(projected)
    if geom.area <= 0:
        raise RoiError(
            f"ROI vector {p} has no area (only points or lines); use a polygon file, or buffer the points/lines first"
        )
    col0, row0, col1, row1 = _snap_bounds(geom.bounds, resolution)
    grid = Grid(out_crs, resolution, col0, row0, col1 - col0, row1 - row0)
    return Roi(p, "vector", grid, (dict(projected),))


def _roi_area_km2(roi: Roi) -> float:
    if roi.kind == "vector":
        import shapely.geometry

        return float(sum(shapely.geometry.shape(g).area for g in roi.geometries)) / 1e6
    return roi.count_inside() * roi.grid.resolution**2 / 1e6


@dataclass(frozen=True)
class Chunk:
    """A cell of the chunk lattice clipped to the ROI grid."""

    id: str
    """Stable id ``"<size>m_E<left>_N<top>"`` from the lattice cell's top-left corner in metres."""
    grid: Grid
    """The chunk's pixels (a window of the ROI grid)."""


@dataclass(frozen=True)
class TileSpec:
    """A tile of a chunk, in the chunk's pixel coordinates."""

    name: str
    """Reference tile name ``x0_y0_x1_y1``."""
    x0: int
    y0: int
    x1: int
    y1: int


def chunk_masks(roi: Roi, chunk_size_m: float) -> Iterator[tuple[Chunk, np.ndarray]]:
    """The chunks holding at least one ROI pixel, in row-major order, each with its ROI mask.

    One mask in memory at a time, each read or rasterised for its own window only.
    """
    g = roi.grid
    res = g.resolution
    step = round(chunk_size_m / res)
    if not math.isclose(step * res, chunk_size_m):
        raise RoiError(
            f"chunk_size_m = {chunk_size_m} is not a multiple of resolution = {res}; set chunk_size_m to a "
            f"multiple of it (e.g. {max(step, 1) * res:g})"
        )
    cx0, cx1 = math.floor(g.col / step), math.ceil((g.col + g.width) / step)
    cy0, cy1 = math.floor(g.row / step), math.ceil((g.row + g.height) / step)
    for cy in range(cy0, cy1):
        for cx in range(cx0, cx1):
            col0, col1 = max(cx * step, g.col), min((cx + 1) * step, g.col + g.width)
            row0, row1 = max(cy * step, g.row), min((cy + 1) * step, g.row + g.height)
            grid = Grid(g.crs, res, col0, row0, col1 - col0, row1 - row0)
            if not roi.touches(grid):
                continue
            mask = roi.mask(grid)
            if mask.any():
                cid = f"{int(chunk_size_m)}m_E{_fmt(cx * step * res)}_N{_fmt(-cy * step * res)}"
                yield Chunk(cid, grid), mask


def plan_chunks(roi: Roi, chunk_size_m: float) -> list[Chunk]:
    """The chunks holding at least one ROI pixel, in row-major order."""
    return [chunk for chunk, _ in chunk_masks(roi, chunk_size_m)]


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def tiles_of_mask(mask: np.ndarray, tile_size: int) -> list[TileSpec]:
    """The tiles of a chunk (given its ROI mask) holding at least one ROI pixel, in reference retiler order."""
    h, w = mask.shape
    tiles = []
    for y0 in range(0, h, tile_size):
        for x0 in range(0, w, tile_size):
            x1, y1 = min(x0 + tile_size, w), min(y0 + tile_size, h)
            if mask[y0:y1, x0:x1].any():
                tiles.append(TileSpec(tile_name(x0, y0, x1, y1), x0, y0, x1, y1))
    return tiles


def plan_tiles(roi: Roi, chunk: Chunk, tile_size: int) -> list[TileSpec]:
    """The tiles of ``chunk`` holding at least one ROI pixel, in reference retiler order."""
    return tiles_of_mask(roi.mask(chunk.grid), tile_size)


def grid_covering(crs: str, bounds: tuple[float, float, float, float], resolution: float) -> Grid:
    """The smallest grid in ``crs`` whose pixel edges lie on multiples of ``resolution`` and that holds ``bounds``."""
    col0, row0, col1, row1 = _snap_bounds(bounds, float(resolution))
    return Grid(crs, float(resolution), col0, row0, col1 - col0, row1 - row0)
