"""Pure Sentinel-2 array kernels: SCL validity, baseline offset, same-day merge, uint16 encoding.

All functions take and return NumPy arrays; nothing here reads files or the network, so every
rule of reference-spec section 1.3 is unit-tested on small arrays.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import numpy as np

from tessera.layout import SCL_INVALID

__all__ = [
    "BASELINE_OFFSET",
    "OFFSET_BASELINE",
    "DateMerger",
    "apply_baseline_offset",
    "day_of_year",
    "needs_offset",
    "scl_valid",
    "to_uint16",
]

#: The +1000 DN offset ESA added to L2A reflectances from processing baseline 04.00 on.
BASELINE_OFFSET = 1000.0
#: First processing baseline that carries the offset.
OFFSET_BASELINE = (4, 0)

_INVALID = np.array(sorted(SCL_INVALID), dtype=np.float32)


def scl_valid(scl: np.ndarray) -> np.ndarray:
    """Bool mask: SCL class is valid (not in `tessera.layout.SCL_INVALID`); NaN counts as class 0."""
    classes = np.nan_to_num(scl, nan=0.0)
    return ~np.isin(classes, _INVALID)


def _baseline_tuple(value: Any) -> tuple[int, int] | None:
    try:
        major, minor = str(value).strip().split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return None


def needs_offset(properties: Mapping[str, Any], harmonised: bool) -> bool:
    """Whether the +1000 offset must be removed from this item's reflectances.

    Decided per item from ``s2:processing_baseline`` (never from the date). A harmonised source
    needs no correction, unless the item says ``earthsearch:boa_offset_applied: false``.
    """
    baseline = _baseline_tuple(properties.get("s2:processing_baseline"))
    if baseline is None or baseline < OFFSET_BASELINE:
        return False
    if harmonised:
        return properties.get("earthsearch:boa_offset_applied") is False
    return True


def apply_baseline_offset(bands: np.ndarray) -> np.ndarray:
    """Subtract `BASELINE_OFFSET` where the value is >= 1000; smaller values stay (reference rule)."""
    out: np.ndarray = np.where(bands >= BASELINE_OFFSET, bands - BASELINE_OFFSET, bands)
    return out


def to_uint16(values: np.ndarray) -> np.ndarray:
    """Float reflectances to uint16 DN as the reference writes them: NaN -> 0, truncation toward zero."""
    clean = np.nan_to_num(values, nan=0.0, posinf=65535.0, neginf=0.0)
    out: np.ndarray = np.clip(clean, 0, 65535).astype(np.uint16)
    return out


def day_of_year(date: str | dt.date) -> int:
    """1-based ordinal day of a UTC date (``"YYYY-MM-DD"``): Jan 1 -> 1, Dec 31 of a leap year -> 366."""
    d = dt.date.fromisoformat(date) if isinstance(date, str) else date
    return d.timetuple().tm_yday


class DateMerger:
    """Same-day mosaic of several items, fed one item at a time (items sorted by datetime, id).

    Each pixel takes the first item whose SCL is valid there; a pixel valid in no item takes the
    first item with any nonzero band (deterministic; the reference drew a random item) and mask 0.
    With a single item this is "band values as read, mask from SCL".
    """

    def __init__(self, height: int, width: int, n_bands: int) -> None:
        """Start an empty mosaic of ``n_bands`` float32 bands."""
        self.bands = np.zeros((n_bands, height, width), np.float32)
        self.valid = np.zeros((height, width), bool)
        self._filled = np.zeros((height, width), bool)

    def add(self, bands: np.ndarray, scl: np.ndarray) -> None:
        """Merge one item: ``bands`` (B, H, W) float, ``scl`` (H, W)."""
        item_valid = scl_valid(scl)
        take = item_valid & ~self.valid
        has_data = np.any(np.nan_to_num(bands) != 0, axis=0)
        fallback = has_data & ~self._filled & ~take
        pick = take | fallback
        self.bands[:, pick] = bands[:, pick]
        self.valid |= take
        self._filled |= pick

    def result(self, roi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(bands (H, W, B) uint16, mask (H, W) uint8)`` with everything outside ``roi`` set to 0."""
        inside = roi.astype(bool)
        mask = (self.valid & inside).astype(np.uint8)
        out = to_uint16(self.bands)
        out[:, ~inside] = 0
        return np.ascontiguousarray(np.moveaxis(out, 0, -1)), mask
