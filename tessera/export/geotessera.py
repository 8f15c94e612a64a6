"""Export a year's stitched product in geotessera's layout, so ``GeoTessera`` opens it offline.

What geotessera 0.7.5 reads (its ``registry.py``, ``tiles.py``, ``core.py``, ``registry_cli.py``)::

    <out>/                                        embeddings_dir and registry_dir of GeoTessera
      registry.parquet                            GeoParquet, one row per (year, tile)
      landmasks.parquet                           GeoParquet, one row per landmask
      tessera_metadata.json                       provenance of this export (ours; geotessera ignores it)
      global_0.1_degree_representation/<year>/grid_<lon>_<lat>/
        grid_<lon>_<lat>.npy                      int8 (H, W, 128) codes
        grid_<lon>_<lat>_scales.npy               float32 (H, W) scales; value = code * scale
        SHA256                                    sha256sum lines of the two .npy files
      global_0.1_degree_tiff_all/
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

Writing: the export is built in a temporary directory next to ``<out>`` and swapped onto it when
complete (`tessera.io.atomic_dir`), so ``<out>`` is only ever absent, the previous complete export or
the new one, and an interrupted run is rerun with the same command.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
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
from tessera.errors import ExportConflictError, GridMismatchError, ProductsMissingError, UnsupportedProductError
from tessera.export.cells import Cell, RoiMask, cells_touching, tile_grid
from tessera.grid import Grid
from tessera.io import TMP_PREFIX, atomic_dir, atomic_path, save_npy_atomic, sha256_file, write_json_atomic
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
]

log = logging.getLogger(__name__)

EMBEDDINGS_DIR = "global_0.1_degree_representation"
LANDMASKS_DIR = "global_0.1_degree_tiff_all"
REGISTRY = "registry.parquet"
LANDMASKS_REGISTRY = "landmasks.parquet"
METADATA_FILE = "tessera_metadata.json"
#: geotessera's point sampling and info assume 128 bands.
GEOTESSERA_DIMS = 128
#: The pixel size (metres) of the published geotessera tiles, which are in the UTM zone of each tile.
PUBLISHED_RESOLUTION = 10.0
_GENERATOR = "tessera-pipeline"


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote."""

    out: Path
    """The export directory."""
    year: int
    """The year exported."""
    tiles: tuple[str, ...]
    """Tile names, sorted by (lat, lon)."""
    bytes: int
    """Total size of the files written."""


@dataclass(frozen=True)
class _Product:
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


def _open_product(cog: Path, year: int, roi: RoiMask) -> _Product:
    """The product, if it can be exported for ``year`` on ``roi``'s grid; a named error if not."""
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
    if grid != roi.grid:
        raise GridMismatchError(
            f"{cog} lies on {grid}, not on the ROI grid {roi.grid}; it was made with another ROI or "
            "resolution: rerun the workflow with this config"
        )
    epsg = int(grid.crs.removeprefix("EPSG:"))
    if grid.resolution != PUBLISHED_RESOLUTION or not (32601 <= epsg <= 32660 or 32701 <= epsg <= 32760):
        log.warning(
            "%s is on %s at %g m; geotessera reads it (each tile's CRS and transform come from its landmask), but the "
            "published tiles are UTM at %g m, so these tiles do not line up pixel for pixel with published ones",
            cog, grid.crs, grid.resolution, PUBLISHED_RESOLUTION,
        )  # fmt: skip
    return _Product(cog, scales, grid, dims, tags)


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


def _clip(outer: Grid, g: Grid) -> Grid | None:
    col0, row0 = max(outer.col, g.col), max(outer.row, g.row)
    col1, row1 = min(outer.col + outer.width, g.col + g.width), min(outer.row + outer.height, g.row + g.height)
    if col0 >= col1 or row0 >= row1:
        return None
    return Grid(outer.crs, outer.resolution, col0, row0, col1 - col0, row1 - row0)


def _tile_arrays(product: _Product, roi: RoiMask, tile: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(codes (D, H, W), scales (H, W), landmask (H, W))`` of a tile grid on the product's lattice."""
    codes = np.zeros((product.dims, *tile.shape), np.int8)
    scales = np.zeros(tile.shape, np.float32)
    landmask = np.zeros(tile.shape, np.uint8)
    window = _clip(product.grid, tile)
    if window is None:
        return codes, scales, landmask
    c, r = window.offset_in(tile)
    rows, cols = slice(r, r + window.height), slice(c, c + window.width)
    codes[:, rows, cols], scales[rows, cols] = _read(product, window)
    landmask[rows, cols] = roi.mask(window) != 0
    return codes, scales, landmask


def _write_landmask(path: Path, tile: Grid, landmask: np.ndarray) -> None:
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
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(landmask, 1)


def _write_tile(product: _Product, roi: RoiMask, cell: Cell, year: int, out: Path) -> dict[str, Any]:
    """Write one tile's embedding, scales, SHA256 and landmask; return its registry record."""
    tile = tile_grid(cell, product.grid.crs, product.grid.resolution)
    codes, scales, landmask = _tile_arrays(product, roi, tile)
    grid_dir = out / EMBEDDINGS_DIR / str(year) / cell.name
    emb, sc = grid_dir / f"{cell.name}.npy", grid_dir / f"{cell.name}_scales.npy"
    save_npy_atomic(emb, np.ascontiguousarray(np.moveaxis(codes, 0, -1)))
    save_npy_atomic(sc, scales)
    hashes = {p.name: sha256_file(p) for p in (emb, sc)}
    with atomic_path(grid_dir / "SHA256") as tmp:
        tmp.write_text("".join(f"{h}  {name}\n" for name, h in sorted(hashes.items())))
    _write_landmask(out / LANDMASKS_DIR / f"{cell.name}.tiff", tile, landmask)
    log.info("%s: %d x %d px in %s, %d ROI pixels", cell.name, tile.width, tile.height, tile.crs, landmask.sum())
    return {
        "lat": cell.lat,
        "lon": cell.lon,
        "year": year,
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


def _registry_entries(path: Path) -> list[tuple[int, str]] | None:
    """``(year, tile name)`` rows of an existing registry, or None if it cannot be read."""
    import pandas as pd

    try:
        df = pd.read_parquet(path, columns=["year", "lon", "lat"])
    except (OSError, ValueError, KeyError):
        return None
    return sorted((int(y), f"grid_{lon:.2f}_{lat:.2f}") for y, lon, lat in zip(df.year, df.lon, df.lat, strict=True))


def _export_files(year: int, names: Sequence[str]) -> set[str]:
    """Paths (relative, POSIX) of every file an export of ``names`` in ``year`` writes."""
    files = {REGISTRY, LANDMASKS_REGISTRY, METADATA_FILE, f"{LANDMASKS_DIR}/SHA256SUM"}
    for n in names:
        tile = f"{EMBEDDINGS_DIR}/{year}/{n}"
        files |= {f"{tile}/{n}.npy", f"{tile}/{n}_scales.npy", f"{tile}/SHA256", f"{LANDMASKS_DIR}/{n}.tiff"}
    return files


_SNAKEMAKE_STAMP = ".snakemake_timestamp"
"""What Snakemake writes into a ``directory()`` output (the ``geotessera`` target's) when its job is done."""


def _check_target(out: Path, year: int, names: Sequence[str]) -> None:
    """Refuse to replace a directory that holds anything but a previous export of the same tiles.

    The export replaces ``out`` as a whole, so a previous export of the same tiles with a file no
    export writes (``.tmp-*`` leftovers of `tessera.io.atomic_path` and the stamp Snakemake leaves in
    the ``geotessera`` target's directory aside) is refused too.
    """
    if out.exists() and not out.is_dir():
        raise ExportConflictError(f"{out} is a file, not a directory; export to another directory (--out)")
    if not out.exists() or not any(out.iterdir()):
        return
    wanted = sorted((year, n) for n in names)
    try:
        meta = json.loads((out / METADATA_FILE).read_text())
    except (OSError, ValueError):
        meta = {}
    ours = (
        meta.get("generator") == _GENERATOR and sorted((meta.get("year"), n) for n in meta.get("tiles", [])) == wanted
    )
    registry = out / REGISTRY
    entries = _registry_entries(registry) if registry.exists() else None
    if ours and (not registry.exists() or entries == wanted):
        known = _export_files(year, names)
        foreign = sorted(
            rel
            for f in out.rglob("*")
            if (f.is_symlink() or not f.is_dir()) and not f.name.startswith(TMP_PREFIX) and f.name != _SNAKEMAKE_STAMP
            if (rel := f.relative_to(out).as_posix()) not in known
        )
        if not foreign:
            return
        raise ExportConflictError(
            f"{out} holds a previous export of these tiles and {len(foreign)} file(s) that no export writes "
            f"(e.g. {foreign[0]}); the export replaces the whole directory: move them out of it, or export to "
            "another directory (--out)"
        )
    if entries:
        years = sorted({y for y, _ in entries})
        held = f"a different registry ({len(entries)} tile(s) of {', '.join(map(str, years))}, e.g. {entries[0][1]})"
    elif registry.exists():
        held = f"a registry ({REGISTRY}) that cannot be read"
    else:
        held = "files that are not a tessera-pipeline geotessera export"
    raise ExportConflictError(
        f"{out} already holds {held}, not the {len(names)} tile(s) of {year} this export writes; "
        "export to another directory (--out) or delete that one first"
    )


def _metadata(product: _Product, year: int, names: Sequence[str], cog: Path, out: Path) -> dict[str, Any]:
    tags = product.tags
    return {
        "generator": _GENERATOR,
        "pipeline_version": tessera.__version__,
        "dataset_version": tags.get("TESSERA_DATASET_VERSION"),
        "dataset_variant": _GENERATOR,
        "model_family": tags.get("TESSERA_MODEL_FAMILY"),
        "checkpoint_sha256": tags.get("TESSERA_CHECKPOINT_SHA256"),
        "random_weights": tags.get("TESSERA_RANDOM_WEIGHTS") == "true",
        "data_source": tags.get("TESSERA_DATA_SOURCE"),
        "year": year,
        # a product without these tags was made from the calendar year under `strict` (tessera.products)
        "window": tags.get("TESSERA_WINDOW") or year_window(year).label,
        "nodata_policy": tags.get("TESSERA_NODATA_POLICY") or "strict",
        "format": "npy",
        "tile_count": len(names),
        "tiles": list(names),
        "embeddings_subdir": EMBEDDINGS_DIR,
        "landmasks_subdir": LANDMASKS_DIR,
        "source_product": Path(_relative(cog, out)).as_posix(),
        "quantization": "int8 codes, float32 per-pixel scale: value = code * scale",
        "nodata": "code 0 and scale 0; landmask 0 outside the ROI",
        "open_with": "geotessera.GeoTessera(embeddings_dir=<this directory>, registry_dir=<this directory>)",
    }


def _relative(path: Path, start: Path) -> str:

    return os.path.relpath(path.resolve(), start.resolve())


def export_geotessera(roi: RoiMask, cog: Path, year: int, out: Path) -> ExportSummary:
    """Write the 0.1-degree tiles that ``roi`` touches, from the year's stitched product, in geotessera's layout.

    Args:
        roi: The region of interest the product was made for (its grid is the product grid).
        cog: The product COG ``tessera_<year>.tif`` (int8 with ``_scales.tif``, or float32).
        year: The year of the product; tiles go under ``global_0.1_degree_representation/<year>``.
        out: The export directory (``embeddings_dir`` and ``registry_dir`` for ``GeoTessera``).

    Returns:
        What was written.

    Raises:
        ProductsMissingError: The product (or its scales) does not exist yet.
        GridMismatchError: The product lies on another grid than the ROI's.
        UnsupportedProductError: The product is of another year, not 128-d, or not on a projected grid in
            metres with an EPSG code.
        ExportConflictError: ``out`` holds another registry, files of another export or files no export writes.
    """
    cog, out = Path(cog), Path(out)
    if not cog.is_file():
        raise ProductsMissingError(
            f"no products of {year} yet: {cog} does not exist; use `snakemake geotessera --configfile <config>`, "
            f"which makes the products of every configured year and then this export, or make the products alone "
            f"with `snakemake --configfile <config>` first"
        )
    product = _open_product(cog, year, roi)
    cells = cells_touching(roi)
    names = [c.name for c in cells]
    _check_target(out, year, names)
    # staged next to the directory itself (same filesystem) if `out` is a link to it
    target = out.resolve()
    log.info("exporting %d tile(s) of %d to %s: %s", len(cells), year, out, ", ".join(names))
    with atomic_dir(target) as work:
        _write_export(product, roi, cells, year, work, _metadata(product, year, names, cog, out))
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    log.info("wrote %d tile(s), %.1f MB, to %s", len(cells), size / 1e6, out)
    return ExportSummary(out, year, tuple(names), size)


def _write_export(
    product: _Product, roi: RoiMask, cells: Sequence[Cell], year: int, work: Path, metadata: dict[str, Any]
) -> None:
    """Write every file of the export into the (empty) directory ``work``; the registry goes last."""
    records = [_write_tile(product, roi, cell, year, work) for cell in cells]
    landmasks = work / LANDMASKS_DIR
    sums = {c.name: sha256_file(landmasks / f"{c.name}.tiff") for c in cells}
    with atomic_path(landmasks / "SHA256SUM") as tmp:
        tmp.write_text("".join(f"{h}  {name}.tiff\n" for name, h in sorted(sums.items())))
    lm_records = [
        {"lat": c.lat, "lon": c.lon, "hash": sums[c.name], "file_size": (landmasks / f"{c.name}.tiff").stat().st_size}
        for c in cells
    ]
    _write_geoparquet(work / LANDMASKS_REGISTRY, lm_records, ["lat", "lon"])
    write_json_atomic(work / METADATA_FILE, metadata)
    _write_geoparquet(work / REGISTRY, records, ["year", "lat", "lon"])
