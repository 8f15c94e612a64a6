"""Evaluation labels on the tiles' pixels: a class raster or a vector file of classes.

* Raster: band 1 holds integer class codes; its nodata value (0 when it declares none) means
  "unlabelled". It is resampled onto each tile's grid with nearest neighbour, in any CRS.
  ``target_band`` names a band holding a regression target (NaN / nodata = none).
* Vector (GeoPackage, Shapefile, GeoJSON...): ``column`` holds the class of each polygon (numbers or
  names; names get codes 1, 2, ... in sorted order; integral floats such as 1.0 are the codes 1;
  features with an empty class are skipped), ``target_column`` optionally a number to regress.
  Polygons are burnt onto each tile's grid (pixel centres inside; later features win).

Class names come from a JSON file ``{"classes": {"<code>": "<name>"}, "groups": {"<group>": [codes]}}``
when one is given (groups are reported as the macro F1 over their classes), else from the codes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.features
import rasterio.warp
from rasterio.enums import Resampling

from tessera.errors import LabelError
from tessera.grid import Grid

__all__ = ["ClassInfo", "LabelLayer", "read_class_info", "read_labels"]

logger = logging.getLogger(__name__)

NO_LABEL = -1
"""Code of unlabelled pixels in a `LabelLayer`."""


@dataclass(frozen=True)
class LabelLayer:
    """Labels of one tile's pixels."""

    classes: np.ndarray
    """(H, W) int64 class code, `NO_LABEL` where unlabelled."""
    target: np.ndarray | None
    """(H, W) float64 regression target (NaN where none), or None."""


@dataclass(frozen=True)
class ClassInfo:
    """Names and groups of the class codes."""

    names: dict[int, str]
    """Code -> name."""
    groups: dict[str, list[int]] = field(default_factory=dict)
    """Named sets of codes (e.g. ``timing``: classes told apart only by their seasonal timing)."""


def read_class_info(path: str | Path | None, codes: Sequence[int], vector_names: dict[int, str]) -> ClassInfo:
    """Class names (from ``path``, else the vector file's names, else the codes) and groups.

    Raises:
        LabelError: The JSON file is missing or malformed.
    """
    names = {int(c): vector_names.get(int(c), str(c)) for c in codes}
    if path is None:
        return ClassInfo(names)
    file = Path(path)
    try:
        raw: dict[str, Any] = json.loads(file.read_text())
        names.update({int(k): str(v) for k, v in raw.get("classes", {}).items() if int(k) in names})
        groups = {str(g): sorted(int(c) for c in members) for g, members in raw.get("groups", {}).items()}
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise LabelError(
            f"class file {file} is not readable JSON of the form "
            f'{{"classes": {{"1": "water"}}, "groups": {{"timing": [2, 3]}}}} ({exc}); fix it'
        ) from exc
    # a group is scored over its classes that the sampled pixels have (a small ROI may miss some)
    present = {g: [c for c in members if c in names] for g, members in groups.items()}
    for group, members in groups.items():
        if len(present[group]) < len(members):
            logger.warning(
                "class group %s: classes %s have no labelled pixel here", group, sorted(set(members) - set(names))
            )
    return ClassInfo(names, {g: m for g, m in present.items() if m})


def _raster_layer(path: Path, grid: Grid, target_band: int | None) -> LabelLayer:
    with rasterio.open(path) as src:
        if src.crs is None:
            raise LabelError(f"label raster {path} has no CRS; write one into it (gdal_edit.py -a_srs EPSG:...)")
        nodata = src.nodata if src.nodata is not None else 0

        def warp(band: int, fill: float, dtype: str, resampling: Resampling) -> np.ndarray:
            out = np.full(grid.shape, fill, dtype)
            rasterio.warp.reproject(
                rasterio.band(src, band), out, src_nodata=nodata, dst_nodata=fill, dst_transform=grid.transform,
                dst_crs=grid.crs, resampling=resampling,
            )  # fmt: skip
            return out

        classes = warp(1, NO_LABEL, "int64", Resampling.nearest)
        target = None
        if target_band is not None:
            if not 1 <= target_band <= src.count:
                raise LabelError(f"label raster {path} has {src.count} bands, no band {target_band}; fix target band")
            target = warp(target_band, np.nan, "float64", Resampling.nearest)
    return LabelLayer(classes, target)


def _vector_shapes(path: Path, column: str, target_column: str | None) -> tuple[list[Any], dict[int, str], Any]:
    """``[(geometry, code, target)]`` in the file's CRS, the code -> name map and the CRS."""
    import pyogrio
    import shapely

    try:
        meta, _, geoms, values = pyogrio.raw.read(path)
    except Exception as exc:  # pyogrio raises DataSourceError and friends from GDAL
        raise LabelError(
            f"labels {path} are neither a raster nor a vector file ({exc}); point --labels at one"
        ) from exc
    fields = list(meta.get("fields", []))
    for name, flag in ((column, "--label-column"), (target_column, "--target-column")):
        if name is not None and name not in fields:
            raise LabelError(f"labels {path} have no column {name!r} (columns: {fields}); pass {flag}")
    if geoms is None or meta.get("crs") is None:
        raise LabelError(f"labels {path} have no geometries or no CRS; use a vector file with polygons and a CRS")
    raw_classes = values[fields.index(column)]
    raw_targets = values[fields.index(target_column)] if target_column else [None] * len(raw_classes)
    has_class = np.array([not _is_null(v) for v in raw_classes], bool)
    if not has_class.all():
        logger.warning(
            "labels %s: skipped %d of %d features whose %r is empty (null)",
            path, int((~has_class).sum()), len(raw_classes), column,
        )  # fmt: skip
    if len(has_class) and not has_class.any():
        raise LabelError(
            f"labels {path}: every feature's {column!r} is empty (null); fill in the classes, or pass the class "
            "column with --label-column"
        )
    kept = [v for v, ok in zip(raw_classes, has_class, strict=True) if ok]
    codes, code_names = _class_codes(kept)
    targets = [_target(path, target_column, t) for t, ok in zip(raw_targets, has_class, strict=True) if ok]
    geometries = [g for g, ok in zip(shapely.from_wkb(geoms), has_class, strict=True) if ok]
    shapes = [(g, c, t) for g, c, t in zip(geometries, codes, targets, strict=True) if g]
    return shapes, code_names, meta["crs"]


def _is_null(value: Any) -> bool:
    """A missing attribute: None, or NaN (pyogrio reads a numeric column with nulls as float with NaN)."""
    return value is None or (isinstance(value, float | np.floating) and bool(np.isnan(value)))


def _class_codes(raw: Sequence[Any]) -> tuple[list[int], dict[int, str]]:
    """Integer class codes of the (non-null) class values and the names of codes that stand for names.

    Integers, and floats that are all integral (an integer column with nulls reads as float), are the
    codes themselves; anything else is a name, coded 1, 2, ... in sorted order (numbers by value).
    """
    if all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in raw):
        return [int(v) for v in raw], {}
    numbers = all(isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool) for v in raw)
    if numbers and all(float(v).is_integer() for v in raw):
        return [int(v) for v in raw], {}
    names = sorted({str(v) for v in raw}, key=float if numbers else str)
    index = {n: i + 1 for i, n in enumerate(names)}
    return [index[str(v)] for v in raw], {i: n for n, i in index.items()}


def _target(path: Path, column: str | None, value: Any) -> float:
    """A regression target as a float (NaN: none, for a null value)."""
    if _is_null(value):
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise LabelError(
            f"labels {path}: target column {column!r} holds {value!r}, not a number; pass as --target-column a "
            "numeric column (empty values are fine: those features get no target)"
        ) from None


def _vector_layer(shapes: list[Any], crs: Any, grid: Grid, with_target: bool) -> LabelLayer:
    from shapely.geometry import mapping

    projected = [(rasterio.warp.transform_geom(crs, grid.crs, mapping(g)), c, t) for g, c, t in shapes]

    def burn(pairs: list[tuple[Any, float]], fill: float, dtype: str) -> np.ndarray:
        if not pairs:
            return np.full(grid.shape, fill, dtype)
        burnt: np.ndarray = rasterio.features.rasterize(
            pairs, grid.shape, fill=fill, transform=grid.transform, dtype=dtype
        )
        return burnt

    # rasterize has no int64 burn type; class codes fit int32
    classes = burn([(g, c) for g, c, _ in projected], NO_LABEL, "int32").astype(np.int64)
    target = burn([(g, t) for g, _, t in projected], np.nan, "float64") if with_target else None
    return LabelLayer(classes, target)


def read_labels(
    path: str | Path,
    grids: Sequence[Grid],
    *,
    column: str = "class",
    target_column: str | None = None,
    target_band: int | None = None,
) -> tuple[list[LabelLayer], dict[int, str]]:
    """Labels on each tile grid, and the names of vector class codes.

    Raises:
        LabelError: The file is missing or unreadable, lacks a CRS, the column or band is missing, a target
            value is not a number, or a target flag is of the other kind of labels (``target_column`` for
            a raster, ``target_band`` for a vector file).
    """
    file = Path(path)
    if not file.exists():
        raise LabelError(f"label file {file} does not exist; pass --labels <raster or vector file>")
    try:
        with rasterio.open(file):
            is_raster = True
    except rasterio.errors.RasterioIOError:
        is_raster = False
    kind, other = ("raster", "vector") if is_raster else ("vector", "raster")
    wrong = ("--target-column", target_column) if is_raster else ("--target-band", target_band)
    if wrong[1] is not None:
        right = "--target-band <band>" if is_raster else "--target-column <numeric column>"
        raise LabelError(
            f"{wrong[0]} {wrong[1]!r} applies to {other} labels, but {file} is a {kind}; name the target of "
            f"{kind} labels with {right}, or leave {wrong[0]} out"
        )
    if is_raster:
        return [_raster_layer(file, g, target_band) for g in grids], {}
    shapes, names, crs = _vector_shapes(file, column, target_column)
    return [_vector_layer(shapes, crs, g, target_column is not None) for g in grids], names
