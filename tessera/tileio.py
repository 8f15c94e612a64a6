"""Read and validate one reference-layout tile directory for inference.

The tile contract is `tessera.layout` (the reference's 7 ``.npy`` files plus ``roi.tiff``). Tiles
written by the reference's ``dpixel_retiler.py`` are accepted too: extra files are ignored, the
``roi.tiff`` mask may use 255 or 1 for "inside", and the 1-D day-of-year arrays may be stored with
any integer dtype (they are converted to the layout's dtype).
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from tessera.errors import GridMismatchError, TileError
from tessera.grid import Grid
from tessera.layout import ROI_FILE, TILE_FILES, TileFile

__all__ = ["ChunkStacks", "TileArrays", "read_tile", "tile_grid", "tile_roi"]

logger = logging.getLogger(__name__)

_MAX_DOY = 366


@dataclass(frozen=True)
class TileArrays:
    """The arrays of one tile, in the reference layout (axis order as stored)."""

    bands: np.ndarray
    """uint16 ``(T_s2, H, W, 10)`` S2 DN."""
    masks: np.ndarray
    """uint8 ``(T_s2, H, W)``, non-zero = valid."""
    doys: np.ndarray
    """uint16 ``(T_s2,)`` day of year."""
    sar_ascending: np.ndarray
    """int16 ``(T_a, H, W, 2)`` [VV, VH], 0 = nodata."""
    sar_ascending_doy: np.ndarray
    """int16 ``(T_a,)``."""
    sar_descending: np.ndarray
    """int16 ``(T_d, H, W, 2)``."""
    sar_descending_doy: np.ndarray
    """int16 ``(T_d,)``."""
    roi: np.ndarray
    """uint8 ``(H, W)``: 1 inside the ROI, 0 outside."""

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the tile."""
        return int(self.roi.shape[0]), int(self.roi.shape[1])


#: What to do about a broken file of a tile directory, or of a chunk's stacks.
_TILE_FIX = "write the tile directory again (`snakemake tiles`, or the reference's retiler)"
_STACK_FIX = "delete it and rerun the read step of this chunk"


def _load_npy(path: Path, spec: TileFile, mmap: bool, fix: str = _TILE_FIX) -> np.ndarray:
    if not path.is_file():
        raise TileError(f"tile file {path} is missing; {fix}")
    try:
        arr: np.ndarray = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise TileError(f"{path} is not a readable .npy file ({exc}); {fix}") from exc
    if arr.ndim != spec.ndim:
        raise TileError(f"{path} has shape {arr.shape} ({arr.ndim}-D), expected {spec.ndim}-D; {fix}")
    if spec.ndim == 1 and arr.dtype.kind in "iu":
        # the reference's doy arrays are small integers; accept its dtype and convert
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) > _MAX_DOY):
            raise TileError(f"{path} holds day-of-year values outside 0..{_MAX_DOY}; {fix}")
        return np.asarray(arr, dtype=spec.dtype)
    if arr.dtype.newbyteorder("=") != spec.dtype.newbyteorder("="):
        raise TileError(f"{path} has dtype {arr.dtype}, expected {spec.dtype}; {fix}")
    if spec.channels is not None and arr.shape[-1] != spec.channels:
        raise TileError(f"{path} has {arr.shape[-1]} channels, expected {spec.channels}; {fix}")
    return arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))


def tile_grid(tile_dir: str | Path) -> Grid:
    """A tile directory's `Grid`, from the header of its ``roi.tiff`` (no array is read).

    Raises:
        TileError: ``roi.tiff`` is missing, unreadable or not georeferenced.
    """
    return _tile_grid(Path(tile_dir) / ROI_FILE, read_mask=False)[1]


def tile_roi(tile_dir: str | Path) -> tuple[np.ndarray, Grid]:
    """A tile directory's ROI mask (uint8, 1 inside) and `Grid`, from its ``roi.tiff``.

    Raises:
        TileError: ``roi.tiff`` is missing, unreadable or not georeferenced.
    """
    return _tile_grid(Path(tile_dir) / ROI_FILE)


def _tile_grid(path: Path, *, read_mask: bool = True) -> tuple[np.ndarray, Grid]:
    if not path.is_file():
        raise TileError(f"{path} is missing; every tile needs its georeferenced ROI mask; {_TILE_FIX}")
    try:
        with warnings.catch_warnings():
            # an ungeoreferenced roi.tiff is reported as a TileError just below
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            src = rasterio.open(path)
        with src:
            mask = src.read(1) if read_mask else np.zeros((0, 0), np.uint8)
            crs, transform, width, height = src.crs, src.transform, src.width, src.height
    except RasterioIOError as exc:
        raise TileError(f"{path} is not a readable GeoTIFF ({exc}); {_TILE_FIX}") from exc
    if crs is None or transform.is_identity:
        raise TileError(f"{path} has no CRS or geotransform; {_TILE_FIX} so roi.tiff is georeferenced")
    epsg = crs.to_epsg()
    if epsg is None:
        raise TileError(f"{path} has a CRS without an EPSG code ({crs.to_string()}); {_TILE_FIX}")
    try:
        grid = Grid.from_transform(f"EPSG:{epsg}", transform, width, height)
    except ValueError as exc:
        res = transform.a
        if not (math.isclose(-transform.e, res) and transform.b == 0 and transform.d == 0):
            raise TileError(f"{path}: {exc}; tiles must be north-up with square pixels") from exc
        # reference tiles on a grid not snapped to multiples of the resolution: the nearest pixel
        # index still tells tiles of that ROI apart, which is all the sampling seed needs
        logger.warning("%s: %s; seeding from the nearest pixel index", path, exc)
        grid = Grid(f"EPSG:{epsg}", res, round(transform.c / res), round(-transform.f / res), width, height)
    return (mask > 0).astype(np.uint8), grid


def read_tile(tile_dir: str | Path, *, mmap: bool = True) -> tuple[TileArrays, Grid]:
    """Read and validate a tile directory.

    Args:
        tile_dir: The tile directory (our ``tile`` step's output or the reference retiler's).
        mmap: Memory-map the large arrays instead of reading them into RAM.

    Returns:
        The tile's arrays and its `Grid` (from ``roi.tiff``).

    Raises:
        TileError: A file is missing or unreadable, has the wrong dtype or shape, T differs between a
            data array and its day-of-year array, or ``roi.tiff`` is missing or not georeferenced.
    """
    path = Path(tile_dir)
    if not path.is_dir():
        raise TileError(f"tile directory {path} does not exist; write it first (`snakemake tiles`)")
    roi, grid = _tile_grid(path / ROI_FILE)
    arrays = {spec.name: _load_npy(path / spec.name, spec, mmap) for spec in TILE_FILES}
    for name, arr in arrays.items():
        if arr.ndim > 1 and arr.shape[1:3] != roi.shape:
            raise TileError(f"{path / name} covers {arr.shape[1:3]} pixels but roi.tiff is {roi.shape}; {_TILE_FIX}")
    if arrays["masks.npy"].shape[0] != arrays["bands.npy"].shape[0]:
        raise TileError(
            f"{path}: masks.npy has T = {arrays['masks.npy'].shape[0]} but bands.npy has "
            f"{arrays['bands.npy'].shape[0]}; {_TILE_FIX}"
        )
    for data, doy in (
        ("bands.npy", "doys.npy"),
        ("sar_ascending.npy", "sar_ascending_doy.npy"),
        ("sar_descending.npy", "sar_descending_doy.npy"),
    ):
        if arrays[data].shape[0] != arrays[doy].shape[0]:
            raise TileError(
                f"{path}: {data} has T = {arrays[data].shape[0]} but {doy} has {arrays[doy].shape[0]}; {_TILE_FIX}"
            )
    tile = TileArrays(
        bands=arrays["bands.npy"],
        masks=arrays["masks.npy"],
        doys=arrays["doys.npy"],
        sar_ascending=arrays["sar_ascending.npy"],
        sar_ascending_doy=arrays["sar_ascending_doy.npy"],
        sar_descending=arrays["sar_descending.npy"],
        sar_descending_doy=arrays["sar_descending_doy.npy"],
        roi=roi,
    )
    return tile, grid


class ChunkStacks:
    """A chunk's stacked arrays (memory-mapped), from which inference reads tile windows directly.

    The files are the read steps' outputs (`tessera.results.STACK_FILES`), the same arrays the
    reference's retiler cuts into tile directories, so a window of them is exactly what a tile
    directory would hold (without the padding past the chunk edge).
    """

    def __init__(self, stack_dir: str | Path, grid: Grid) -> None:
        """Open the arrays under ``stack_dir`` (``<year>/stack/<chunk>``) for a chunk on ``grid``.

        Raises:
            TileError: an array is missing, unreadable, or of the wrong dtype or axes.
            GridMismatchError: an array was read for another grid.
        """
        root = Path(stack_dir)
        self.grid = grid
        sources = {
            "bands.npy": "s2",
            "masks.npy": "s2",
            "doys.npy": "s2",
            "sar_ascending.npy": "s1-ascending",
            "sar_ascending_doy.npy": "s1-ascending",
            "sar_descending.npy": "s1-descending",
            "sar_descending_doy.npy": "s1-descending",
        }
        self.arrays: dict[str, np.ndarray] = {}
        for spec in TILE_FILES:
            path = root / sources[spec.name] / spec.name
            if not path.is_file():
                raise TileError(f"stacked array {path} is missing; run the read step of this chunk first")
            arr = _load_npy(path, spec, mmap=True, fix=_STACK_FIX)
            if arr.ndim > 1 and arr.shape[1:3] != grid.shape:
                raise GridMismatchError(
                    f"{path} has H, W = {arr.shape[1:3]} but its chunk is {grid.shape}; it was read for "
                    "another grid: delete it and rerun the read step"
                )
            self.arrays[spec.name] = arr

    def window(self, x0: int, y0: int, x1: int, y1: int, roi: np.ndarray) -> TileArrays:
        """Views of columns ``x0:x1`` and rows ``y0:y1`` (no copy); ``roi`` is the window's ROI mask."""
        a = self.arrays

        def win(name: str) -> np.ndarray:
            return a[name][:, y0:y1, x0:x1]

        return TileArrays(
            bands=win("bands.npy"),
            masks=win("masks.npy"),
            doys=np.asarray(a["doys.npy"]),
            sar_ascending=win("sar_ascending.npy"),
            sar_ascending_doy=np.asarray(a["sar_ascending_doy.npy"]),
            sar_descending=win("sar_descending.npy"),
            sar_descending_doy=np.asarray(a["sar_descending_doy.npy"]),
            roi=(roi > 0).astype(np.uint8),
        )
