"""Pure Sentinel-2 array kernels: SCL validity, baseline offset, same-day merge, uint16 encoding.

All functions take and return NumPy arrays; nothing here reads files or the network, so every
rule of reference-spec section 1.3 is unit-tested on small arrays.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from tessera.layout import SCL_INVALID

__all__ = [
    "BASELINE_OFFSET",
    "OFFSET_BASELINE",
    "OFFSET_RULES",
    "REFERENCE_CUTOVER",
    "DateMerger",
    "OffsetRule",
    "apply_baseline_offset",
    "day_of_year",
    "needs_offset",
    "needs_offset_by_date",
    "offset_applies",
    "scl_valid",
    "to_uint16",
]

#: The +1000 DN offset ESA added to L2A reflectances from processing baseline 04.00 on.
BASELINE_OFFSET = 1000.0
#: First processing baseline that carries the offset.
OFFSET_BASELINE = (4, 0)

#: How the offset decision is made (config ``s2.offset_rule``): from the item's processing baseline
#: (the physical rule, default) or from the acquisition date as the reference decides it.
OffsetRule = Literal["processing-baseline", "acquisition-date"]
OFFSET_RULES: tuple[str, ...] = ("processing-baseline", "acquisition-date")
#: The reference removes the offset from acquisitions strictly after this UTC date (reference-spec 1.3).
REFERENCE_CUTOVER = dt.date(2022, 1, 25)

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


def needs_offset_by_date(acquired: dt.date, harmonised: bool) -> bool:
    """The reference's rule: remove the offset iff the acquisition's UTC date is after 2022-01-25.

    The reference applies it on the Planetary Computer path only and never on Earth Search
    (reference-spec 1.3); here that is "not ``harmonised``" (a source whose values still carry the
    offset), so a ``stac`` source that is not harmonised behaves like the Planetary Computer. The
    item's properties are not looked at: reprocessed pre-2022 items (baseline 05.xx) keep their
    offset, acquisitions on the cut-over day keep it, and items without a baseline after it lose it.
    """
    return not harmonised and acquired > REFERENCE_CUTOVER


def offset_applies(
    rule: str, properties: Mapping[str, Any], harmonised: bool, acquired: dt.date, provider: str | None = None
) -> bool:
    """Whether to remove the offset from one item under ``rule`` (`OFFSET_RULES`).

    Args:
        rule: ``processing-baseline`` (`needs_offset`) or ``acquisition-date`` (`needs_offset_by_date`).
        properties: The item's STAC properties.
        harmonised: The source already removed the offset (`tessera.sources.DataSource.harmonised`).
        acquired: The item's UTC acquisition date.
        provider: The source's provider (`tessera.sources.DataSource.provider`). Under
            ``acquisition-date`` an ``earth-search`` item is never corrected, even on a source
            configured ``harmonised: false``: the reference never corrects Earth Search.

    Raises:
        ValueError: ``rule`` is not one of `OFFSET_RULES`.
    """
    if rule == "processing-baseline":
        return needs_offset(properties, harmonised)
    if rule == "acquisition-date":
        return provider != "earth-search" and needs_offset_by_date(acquired, harmonised)
    raise ValueError(f"unknown s2 offset rule {rule!r}; use one of {list(OFFSET_RULES)}")


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
