"""Export the stitched products of one or more years as one geotessera store, so ``GeoTessera`` opens it offline.

What geotessera 0.7.5 reads (its ``registry.py``, ``tiles.py``, ``core.py``, ``registry_cli.py``)::

    <out>/                                        embeddings_dir and registry_dir of GeoTessera
      registry.parquet                            GeoParquet, one row per (year, tile)
      landmasks.parquet                           GeoParquet, one row per landmask
      tessera_metadata.json                       provenance of this export (ours; geotessera ignores it)
      global_0.1_degree_representation/<year>/grid_<lon>_<lat>/   for each year exported
        grid_<lon>_<lat>.npy                      int8 (H, W, 128) codes
        grid_<lon>_<lat>_scales.npy               float32 (H, W) scales; value = code * scale
        SHA256                                    sha256sum lines of the two .npy files
      global_0.1_degree_tiff_all/                 one landmask per tile, shared by every year
        grid_<lon>_<lat>.tiff                     uint8 landmask: the tile's CRS, transform, H and W
        SHA256SUM                                 sha256sum lines of the landmasks

The registry columns are those ``geotessera-registry scan`` writes (``lat, lon, year, hash,
scales_hash, mtime, file_size, scales_size, lon_i, lat_i`` + point geometry at the tile centre in
EPSG:4326, zstd); the client requires ``lat, lon, year, hash, file_size`` and a geometry column,
and ``lat, lon, hash, file_size`` for landmasks. Files already in ``embeddings_dir`` are used
without a hash check; hashes are checked on download only.

Values: the landmask is the ROI (1 inside, 0 outside), as the reference's production runs used
the landmask as their ROI. Pixels outside the ROI, and ROI pixels without an embedding, hold code
0 and scale 0, the reference's encoding of a pixel it did not embed. An int8 product's codes and
scales are copied unchanged; a float32 product is quantised with its family's rule
(`tessera.quantize`). Every tile is a window of the product grid (`tessera.export.cells`), so
nothing is resampled: a point has the same embedding in the export as in the product.

Years: a store holds every year it was asked for (`export_geotessera_years`), with the same tiles
and landmasks, so every year's product must lie on the ROI grid (`GridMismatchError` if not). A
year is added to a store by exporting all its years again into it: a previous export of ours of the
same tiles is replaced whatever years it held (`tessera.export.store.check_target`). ``tessera_metadata.json`` lists the
years and each year's provenance under ``products``; a one-year store also keeps that year's keys at
the top level, as one-year exports always had them.

Writing: the export is built in a temporary directory next to ``<out>`` and swapped onto it when
complete (`tessera.io.atomic_dir`), so ``<out>`` is only ever absent, the previous complete export or
the new one, and an interrupted run is rerun with the same command.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

import tessera
from tessera.cog import INT8_NODATA
from tessera.errors import (
    ConfigError,
    GridMismatchError,
    ProductsMissingError,
    UnsupportedProductError,
)
from tessera.export.cells import Cell, RoiMask, cells_touching, tile_grid
from tessera.export.store import (
    EMBEDDINGS_DIR,
    GENERATOR,
    LANDMASKS_DIR,
    LANDMASKS_REGISTRY,
    METADATA_FILE,
    REGISTRY,
    check_target,
    years_text,
)
from tessera.grid import Grid
from tessera.io import atomic_dir, atomic_path, save_npy_atomic, sha256_file, write_json_atomic
from tessera.period import window as year_window
from tessera.products import product_paths

__all__ = [
    "EMBEDDINGS_DIR",
    "GEOTESSERA_DIMS",
    "LANDMASKS_DIR",
    "LANDMASKS_REGISTRY",
    "METADATA_FILE",
    "REGISTRY",
    "ExportSummary",
    "export_geotessera",
    "export_geotessera_years",
]

log = logging.getLogger(__name__)

#: geotessera's point sampling and info assume 128 bands.
GEOTESSERA_DIMS = 128
#: The pixel size (metres) of the published geotessera tiles, which are in the UTM zone of each tile.
PUBLISHED_RESOLUTION = 10.0


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote."""

    out: Path
    """The export directory."""
    years: tuple[int, ...]
    """The years exported, ascending."""
    tiles: tuple[str, ...]
    """Tile names, sorted by (lat, lon); every year holds these tiles."""
    bytes: int
    """Total size of the files written."""


@dataclass(frozen=True)
class _Product:
    year: int
    cog: Path
    scales: Path | None
    grid: Grid
    dims: int
    tags: dict[str, str]

    @property
    def rule(self) -> str:
        return "v2" if self.tags.get("TESSERA_MODEL_FAMILY", "").startswith("v2") else "v1"


#: How a product geotessera tiles can be cut from is made; the end of every `_product_grid` message.
_MAKE_PRODUCT = (
    "make the product with this pipeline (`snakemake --configfile <config>`), which writes it on the ROI's "
    "projected CRS, or the UTM zone of a geographic ROI, at `resolution` metres (default 10, as the published tiles)"
)


def _product_grid(cog: Path, crs: CRS | None, transform: Affine, width: int, height: int) -> Grid:
    """The product's grid, if geotessera tiles can be cut from it; `UnsupportedProductError` if not.

    A tile is the envelope of a 0.1-degree cell on the product's pixel lattice, written with the
    product's CRS as an EPSG code into the landmask that geotessera reads: the product must be on a
    north-up grid of square pixels aligned to its resolution, in a projected CRS in metres that has
    an EPSG code. Every product of this pipeline is (`tessera.grid`: the ROI's projected CRS in
    metres, or the UTM zone of a geographic ROI, at any ``resolution``).
    """
    if crs is None:
        raise UnsupportedProductError(
            f"{cog} has no CRS; geotessera tiles are cut from a grid in a projected CRS in metres "
            f"(the published tiles: UTM at {PUBLISHED_RESOLUTION:g} m): {_MAKE_PRODUCT}"
        )
    units = (crs.linear_units or "").lower()
    if crs.is_geographic or units not in ("metre", "meter", "m"):
        found = "geographic, in degrees" if crs.is_geographic else f"in {crs.linear_units or 'unknown units'}"
        raise UnsupportedProductError(
            f"{cog} is in {crs.to_string()} ({found}) with pixels of {abs(transform.a):g} of those units; "
            f"geotessera tiles are cut from a grid in a projected CRS in metres (the published tiles: UTM at "
            f"{PUBLISHED_RESOLUTION:g} m): {_MAKE_PRODUCT}"
        )
    epsg = crs.to_epsg()
    if epsg is None:
        raise UnsupportedProductError(
            f"{cog} is in a CRS without an EPSG code ({crs.to_string()}); geotessera tiles record their CRS "
            f"as an EPSG code: {_MAKE_PRODUCT}"
        )
    try:
        return Grid.from_transform(f"EPSG:{epsg}", transform, width, height)
    except ValueError as e:
        raise UnsupportedProductError(
            f"{cog}: {e}; geotessera tiles are windows of a north-up grid of square pixels whose edges lie on "
            f"multiples of the pixel size: {_MAKE_PRODUCT}"
        ) from e


def _open_product(cog: Path, year: int) -> _Product:
    """The product of ``year``, if geotessera tiles can be cut from it; a named error if not."""
    if not cog.is_file():
        raise ProductsMissingError(
            f"no products of {year} yet: {cog} does not exist; use `snakemake geotessera --configfile <config>`, "
            f"which makes the products of every configured year and then this export, or make the products alone "
            f"with `snakemake --configfile <config>` first"
        )
    with rasterio.open(cog) as src:
        int8 = src.dtypes[0] == "int8"
        tags = dict(src.tags())
        grid = _product_grid(cog, src.crs, src.transform, src.width, src.height)
        dims = src.count
    scales = product_paths(cog, int8).get("scales")
    if scales is not None and not scales.is_file():
        raise ProductsMissingError(
            f"{scales} (the scales of the int8 product {cog.name}) does not exist; rerun the stitch step of {year}"
        )
    if tags.get("TESSERA_YEAR") != str(year):
        raise UnsupportedProductError(
            f"{cog} holds embeddings of {tags.get('TESSERA_YEAR')}, not {year}; export the product of {year}"
        )
    if dims != GEOTESSERA_DIMS:
        raise UnsupportedProductError(
            f"{cog} has {dims} dimensions; geotessera reads {GEOTESSERA_DIMS}-d embeddings only "
            "(set model.dimensions: 128 and rerun the workflow)"
        )
    epsg = int(grid.crs.removeprefix("EPSG:"))
    if grid.resolution != PUBLISHED_RESOLUTION or not (32601 <= epsg <= 32660 or 32701 <= epsg <= 32760):
        log.warning(
            "%s is on %s at %g m; geotessera reads it (each tile's CRS and transform come from its landmask), but the "
            "published tiles are UTM at %g m, so these tiles do not line up pixel for pixel with published ones",
            cog, grid.crs, grid.resolution, PUBLISHED_RESOLUTION,
        )  # fmt: skip
    return _Product(year, cog, scales, grid, dims, tags)


def _check_grids(products: Sequence[_Product], roi: RoiMask) -> None:
    """`GridMismatchError` unless every product lies on the ROI grid: the years of a store share its tiles."""
    by_grid: dict[Grid, list[int]] = {}
    for product in products:
        by_grid.setdefault(product.grid, []).append(product.year)
    if len(by_grid) > 1:
        held = "; ".join(f"{years_text(years)} on {grid}" for grid, years in by_grid.items())
        off = years_text(p.year for p in products if p.grid != roi.grid)
        raise GridMismatchError(
            f"the products of {years_text(p.year for p in products)} lie on different grids ({held}), but the "
            f"years of one store share its tiles and landmasks; rerun the workflow of {off} with this config (the "
            f"ROI grid is {roi.grid}), or export the years made with another ROI or resolution to another "
            "directory (--out)"
        )
    for product in products:
        if product.grid != roi.grid:
            raise GridMismatchError(
                f"{product.cog} lies on {product.grid}, not on the ROI grid {roi.grid}; it was made with another ROI "
                "or resolution: rerun the workflow with this config"
            )


def _quantise(values: np.ndarray, rule: str) -> tuple[np.ndarray, np.ndarray]:
    import torch

    from tessera.quantize import quantize

    q, s = quantize(torch.from_numpy(np.ascontiguousarray(values)), "v2" if rule == "v2" else "v1")
    return q.numpy(), s.numpy()


def _read(product: _Product, window: Grid) -> tuple[np.ndarray, np.ndarray]:
    """``(codes (D, h, w) int8, scales (h, w) float32)`` of a window of the product; 0 and 0 at nodata."""
    col, row = window.offset_in(product.grid)
    win = Window(col, row, window.width, window.height)
    with rasterio.open(product.cog) as src:
        data = src.read(window=win)
    if product.scales is not None:
        with rasterio.open(product.scales) as src:
            scales = src.read(1, window=win)
        valid = np.isfinite(scales) & (scales > 0) & (data[0] != INT8_NODATA)
        return np.where(valid, data, 0).astype(np.int8), np.where(valid, scales, 0).astype(np.float32)
    valid = np.isfinite(data).all(axis=0)
    codes = np.zeros(data.shape, np.int8)
    scales = np.zeros(window.shape, np.float32)
    if valid.any():
        q, s = _quantise(data[:, valid].T, product.rule)
        codes[:, valid], scales[valid] = q.T, s
    return codes, scales


def _overlap(outer: Grid, tile: Grid) -> tuple[Grid, tuple[slice, slice]] | None:
    """The window of ``outer`` inside ``tile`` and its ``(rows, cols)`` in ``tile``; None if they do not meet."""
    col0, row0 = max(outer.col, tile.col), max(outer.row, tile.row)
    col1 = min(outer.col + outer.width, tile.col + tile.width)
    row1 = min(outer.row + outer.height, tile.row + tile.height)
    if col0 >= col1 or row0 >= row1:
        return None
    window = Grid(outer.crs, outer.resolution, col0, row0, col1 - col0, row1 - row0)
    c, r = window.offset_in(tile)
    return window, (slice(r, r + window.height), slice(c, c + window.width))


def _write_landmask(roi: RoiMask, cell: Cell, tile: Grid, landmasks: Path) -> dict[str, Any]:
    """Write the tile's landmask, the ROI on the tile's grid; return its ``landmasks.parquet`` record."""
    landmask = np.zeros(tile.shape, np.uint8)
    if (overlap := _overlap(roi.grid, tile)) is not None:
        window, where = overlap
        landmask[where] = roi.mask(window) != 0
    profile = {
        "driver": "GTiff",
        "width": tile.width,
        "height": tile.height,
        "count": 1,
        "dtype": "uint8",
        "crs": tile.crs,
        "transform": tile.transform,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "lzw",
    }
    path = landmasks / f"{cell.name}.tiff"
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(landmask, 1)
    log.info("%s: %d x %d px in %s, %d ROI pixels", cell.name, tile.width, tile.height, tile.crs, landmask.sum())
    return {"lat": cell.lat, "lon": cell.lon, "hash": sha256_file(path), "file_size": path.stat().st_size}


def _write_tile(product: _Product, cell: Cell, tile: Grid, out: Path) -> dict[str, Any]:
    """Write a year's embedding, scales and SHA256 of one tile; return its ``registry.parquet`` record."""
    codes = np.zeros((product.dims, *tile.shape), np.int8)
    scales = np.zeros(tile.shape, np.float32)
    if (overlap := _overlap(product.grid, tile)) is not None:
        window, (rows, cols) = overlap
        codes[:, rows, cols], scales[rows, cols] = _read(product, window)
    grid_dir = out / EMBEDDINGS_DIR / str(product.year) / cell.name
    emb, sc = grid_dir / f"{cell.name}.npy", grid_dir / f"{cell.name}_scales.npy"
    save_npy_atomic(emb, np.ascontiguousarray(np.moveaxis(codes, 0, -1)))
    save_npy_atomic(sc, scales)
    hashes = {p.name: sha256_file(p) for p in (emb, sc)}
    with atomic_path(grid_dir / "SHA256") as tmp:
        tmp.write_text("".join(f"{h}  {name}\n" for name, h in sorted(hashes.items())))
    log.info("%d %s: %d pixel(s) with an embedding", product.year, cell.name, np.count_nonzero(scales))
    return {
        "lat": cell.lat,
        "lon": cell.lon,
        "year": product.year,
        "hash": hashes[emb.name],
        "scales_hash": hashes[sc.name],
        "mtime": emb.stat().st_mtime,
        "file_size": emb.stat().st_size,
        "scales_size": sc.stat().st_size,
    }


def _write_geoparquet(path: Path, records: list[dict[str, Any]], order: list[str]) -> None:
    """A GeoParquet of ``records`` with geotessera's integer keys and point geometry at the tile centres."""
    import geopandas as gpd
    import pandas as pd

    df = pd.DataFrame(records).sort_values(order).reset_index(drop=True)
    if "mtime" in df:
        df["mtime"] = pd.to_datetime(df["mtime"], unit="s")
    df["lon_i"] = (df["lon"] * 100).round().astype(np.int32)
    df["lat_i"] = (df["lat"] * 100).round().astype(np.int32)
    gdf = gpd.GeoDataFrame(df, geometry=gpd.points_from_xy(df["lon"], df["lat"]), crs="EPSG:4326")
    with atomic_path(path) as tmp:
        gdf.to_parquet(tmp, compression="zstd", index=False)


def _product_metadata(product: _Product, out: Path) -> dict[str, Any]:
    """The provenance of one year's product."""
    tags = product.tags
    return {
        "dataset_version": tags.get("TESSERA_DATASET_VERSION"),
        "model_family": tags.get("TESSERA_MODEL_FAMILY"),
        "checkpoint_sha256": tags.get("TESSERA_CHECKPOINT_SHA256"),
        "random_weights": tags.get("TESSERA_RANDOM_WEIGHTS") == "true",
        "data_source": tags.get("TESSERA_DATA_SOURCE"),
        # a product without these tags was made from the calendar year under `strict` (tessera.products)
        "window": tags.get("TESSERA_WINDOW") or year_window(product.year).label,
        "nodata_policy": tags.get("TESSERA_NODATA_POLICY") or "strict",
        "source_product": Path(_relative(product.cog, out)).as_posix(),
    }


def _metadata(products: Sequence[_Product], names: Sequence[str], out: Path) -> dict[str, Any]:
    """``tessera_metadata.json``: the store's years, tiles and layout, and each year's provenance under ``products``.

    A one-year store also has that year as ``year`` and its provenance at the top level, where one-year
    exports have always had them; a store of several years has neither, so no reader takes one year's
    provenance for another's.
    """
    meta: dict[str, Any] = {
        "generator": GENERATOR,
        "pipeline_version": tessera.__version__,
        "dataset_variant": GENERATOR,
        "years": [p.year for p in products],
        "format": "npy",
        "tile_count": len(names),
        "tiles": list(names),
        "embeddings_subdir": EMBEDDINGS_DIR,
        "landmasks_subdir": LANDMASKS_DIR,
        "quantization": "int8 codes, float32 per-pixel scale: value = code * scale",
        "nodata": "code 0 and scale 0; landmask 0 outside the ROI",
        "open_with": "geotessera.GeoTessera(embeddings_dir=<this directory>, registry_dir=<this directory>)",
        "products": {str(p.year): _product_metadata(p, out) for p in products},
    }
    if len(products) == 1:
        meta |= {"year": products[0].year, **meta["products"][str(products[0].year)]}
    return meta


def _relative(path: Path, start: Path) -> str:
    return os.path.relpath(path.resolve(), start.resolve())


def export_geotessera(roi: RoiMask, cog: Path, year: int, out: Path) -> ExportSummary:
    """Write one year's store: `export_geotessera_years` with the one product ``{year: cog}``."""
    return export_geotessera_years(roi, {year: cog}, out)


def export_geotessera_years(roi: RoiMask, cogs: Mapping[int, Path], out: Path) -> ExportSummary:
    """Write the 0.1-degree tiles that ``roi`` touches, from each year's stitched product, as one geotessera store.

    Args:
        roi: The region of interest the products were made for (its grid is every product's grid).
        cogs: The product COG ``tessera_<year>.tif`` (int8 with ``_scales.tif``, or float32) of each year;
            a year's tiles go under ``global_0.1_degree_representation/<year>``.
        out: The export directory (``embeddings_dir`` and ``registry_dir`` for ``GeoTessera``).

    Returns:
        What was written.

    Raises:
        ConfigError: ``cogs`` is empty.
        ProductsMissingError: A product (or its scales) does not exist yet.
        GridMismatchError: The products lie on different grids, or on another grid than the ROI's.
        UnsupportedProductError: A product is of another year, not 128-d, or not on a projected grid in
            metres with an EPSG code.
        ExportConflictError: ``out`` holds another registry, an export of other tiles, or files no export writes.
    """
    if not cogs:
        raise ConfigError("no year to export: pass the product of at least one year")
    out = Path(out)
    products = [_open_product(Path(cogs[year]), year) for year in sorted(cogs)]
    _check_grids(products, roi)
    years = [p.year for p in products]
    cells = cells_touching(roi)
    names = [c.name for c in cells]
    check_target(out, years, names)
    # staged next to the directory itself (same filesystem) if `out` is a link to it
    target = out.resolve()
    log.info("exporting %d tile(s) of %s to %s: %s", len(cells), years_text(years), out, ", ".join(names))
    with atomic_dir(target) as work:
        _write_export(products, roi, cells, work, _metadata(products, names, out))
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    log.info("wrote %d tile(s) of %s, %.1f MB, to %s", len(cells), years_text(years), size / 1e6, out)
    return ExportSummary(out, tuple(years), tuple(names), size)


def _write_export(
    products: Sequence[_Product], roi: RoiMask, cells: Sequence[Cell], work: Path, metadata: dict[str, Any]
) -> None:
    """Write every file of the store into the (empty) directory ``work``; the registry goes last."""
    tiles = {c: tile_grid(c, roi.grid.crs, roi.grid.resolution) for c in cells}
    landmasks = work / LANDMASKS_DIR
    lm_records = [_write_landmask(roi, cell, tile, landmasks) for cell, tile in tiles.items()]
    sums = sorted((cell.name, record["hash"]) for cell, record in zip(cells, lm_records, strict=True))
    with atomic_path(landmasks / "SHA256SUM") as tmp:
        tmp.write_text("".join(f"{h}  {name}.tiff\n" for name, h in sums))
    records = []
    for product in products:
        log.info("%d: %d tile(s) from %s", product.year, len(cells), product.cog)
        records += [_write_tile(product, cell, tile, work) for cell, tile in tiles.items()]
    _write_geoparquet(work / LANDMASKS_REGISTRY, lm_records, ["lat", "lon"])
    write_json_atomic(work / METADATA_FILE, metadata)
    _write_geoparquet(work / REGISTRY, records, ["year", "lat", "lon"])
