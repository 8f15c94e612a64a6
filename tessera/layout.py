"""The reference tile-directory contract, stated once in code.

A tile directory holds exactly the files the reference's ``dpixel_retiler.py`` writes
(reference-spec section 0 and 2.1), so the reference's inference can read our tiles and ours
can read its tiles:

==========================  ======  ===============  =====================================
file                        dtype   shape            meaning
==========================  ======  ===============  =====================================
``bands.npy``               <u2     (T_s2, P, P, 10) S2 L2A DN, band order `S2_BANDS`
``masks.npy``               |u1     (T_s2, P, P)     1 = valid (SCL in `SCL_VALID`)
``doys.npy``                <u2     (T_s2,)          day of year, 1-based, ascending
``sar_ascending.npy``       <i2     (T_a, P, P, 2)   [VV, VH] scaled dB, 0 = nodata
``sar_ascending_doy.npy``   <i2     (T_a,)           day of year
``sar_descending.npy``      <i2     (T_d, P, P, 2)   [VV, VH]
``sar_descending_doy.npy``  <i2     (T_d,)           day of year
``roi.tiff``                uint8   (P, P) GeoTIFF   ROI mask (1/0) with CRS and transform
==========================  ======  ===============  =====================================

Tiles are always ``P x P`` (zero-padded past the raster edge) and named
``"{x0}_{y0}_{x1}_{y1}"`` (x = column offset, y = row offset in the stacked chunk array,
``x1 = min(x0 + P, W)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "S2_BANDS",
    "S2_BAND_DIRS",
    "S1_BANDS",
    "SCL_INVALID",
    "SCL_VALID",
    "ORBITS",
    "PRODUCTS",
    "TileFile",
    "TILE_FILES",
    "ROI_FILE",
    "tile_name",
    "parse_tile_name",
]

#: Sentinel-2 band order of ``bands.npy`` (reference ``s2_stack`` BANDS constant).
S2_BANDS: tuple[str, ...] = ("B04", "B02", "B03", "B08", "B8A", "B05", "B06", "B07", "B11", "B12")
#: The reference's per-band directory names, in the same order.
S2_BAND_DIRS: tuple[str, ...] = (
    "red",
    "blue",
    "green",
    "nir",
    "nir08",
    "rededge1",
    "rededge2",
    "rededge3",
    "swir16",
    "swir22",
)
#: Sentinel-1 channel order of ``sar_*.npy``.
S1_BANDS: tuple[str, ...] = ("vv", "vh")
#: SCL classes that make a pixel-date invalid: no data, saturated, dark, cloud shadow, cloud medium/high.
SCL_INVALID: frozenset[int] = frozenset({0, 1, 2, 3, 8, 9})
#: SCL classes that are valid: vegetation, not vegetated, water, unclassified, thin cirrus, snow.
SCL_VALID: frozenset[int] = frozenset({4, 5, 6, 7, 10, 11})
#: Sentinel-1 orbit directions, kept apart everywhere.
ORBITS: tuple[str, ...] = ("ascending", "descending")
#: The three searched products per chunk and year.
PRODUCTS: tuple[str, ...] = ("s2", "s1-ascending", "s1-descending")


@dataclass(frozen=True)
class TileFile:
    """One ``.npy`` file of a tile directory."""

    name: str
    """File name inside the tile directory."""
    dtype: np.dtype
    """Exact on-disk dtype (byte order included)."""
    ndim: int
    """Number of axes: 4 for (T, P, P, C), 3 for (T, P, P), 1 for (T,)."""
    channels: int | None
    """Size of the last axis for 4-D files, else None."""


TILE_FILES: tuple[TileFile, ...] = (
    TileFile("bands.npy", np.dtype("<u2"), 4, 10),
    TileFile("masks.npy", np.dtype("|u1"), 3, None),
    TileFile("doys.npy", np.dtype("<u2"), 1, None),
    TileFile("sar_ascending.npy", np.dtype("<i2"), 4, 2),
    TileFile("sar_ascending_doy.npy", np.dtype("<i2"), 1, None),
    TileFile("sar_descending.npy", np.dtype("<i2"), 4, 2),
    TileFile("sar_descending_doy.npy", np.dtype("<i2"), 1, None),
)
#: The ROI mask GeoTIFF of a tile.
ROI_FILE = "roi.tiff"


def tile_name(x0: int, y0: int, x1: int, y1: int) -> str:
    """Reference tile directory name: columns ``x0..x1``, rows ``y0..y1`` of the stacked array."""
    return f"{x0}_{y0}_{x1}_{y1}"


def parse_tile_name(name: str) -> tuple[int, int, int, int]:
    """Inverse of `tile_name`; raises ``ValueError`` on anything else."""
    parts = name.split("_")
    if len(parts) != 4:
        raise ValueError(f"tile name {name!r} is not of the form x0_y0_x1_y1")
    x0, y0, x1, y1 = (int(p) for p in parts)
    return x0, y0, x1, y1
