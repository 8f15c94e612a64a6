"""Spatial train/test split: whole blocks of the global pixel grid go to one side, with a gap between sides.

Neighbouring pixels are nearly copies of each other (same field, overlapping speckle), so a random
pixel split would score memory, not generalisation. Blocks of ``block`` x ``block`` pixels on the
global grid (`tessera.grid.Grid`) are assigned to the test side when a seeded 32-bit hash of (block
column, block row, EPSG, seed) falls below ``test_fraction``. A pixel is then dropped when any pixel
within ``gap`` pixels of it (Chebyshev distance) lies in a block of the other side, so every train
pixel is more than ``gap`` pixels away from every test pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tessera.sampling import hash_keys

__all__ = ["Split", "spatial_split"]

_SPLIT_SALT = 0x5B17


@dataclass(frozen=True)
class Split:
    """Which pixels train and which test (boolean masks over the pixels given)."""

    train: np.ndarray
    """(N,) bool."""
    test: np.ndarray
    """(N,) bool (never True together with `train`)."""


def _is_test(bcol: np.ndarray, brow: np.ndarray, epsg: np.ndarray, seed: int, test_fraction: float) -> np.ndarray:
    return (hash_keys(_SPLIT_SALT, bcol, brow, epsg, seed) < int(test_fraction * 2**32)).astype(bool)


def spatial_split(
    col: np.ndarray,
    row: np.ndarray,
    epsg: np.ndarray,
    *,
    block: int = 16,
    gap: int = 1,
    test_fraction: float = 0.3,
    seed: int = 0,
) -> Split:
    """Split pixels at global grid positions ``(col, row)`` (int64 arrays) by spatial blocks.

    Args:
        col: Global column of each pixel.
        row: Global row of each pixel.
        epsg: EPSG code of each pixel's grid.
        block: Block side in pixels.
        gap: Pixels closer than this (plus one) to the other side are dropped.
        test_fraction: Share of blocks on the test side.
        seed: Seeds the block assignment.

    Raises:
        ValueError: ``block`` < 1, ``gap`` < 0 or ``test_fraction`` not strictly between 0 and 1.
    """
    if block < 1 or gap < 0 or not 0.0 < test_fraction < 1.0:
        raise ValueError(
            f"spatial_split needs block >= 1, gap >= 0 and 0 < test_fraction < 1, not block={block}, gap={gap}, "
            f"test_fraction={test_fraction}"
        )
    col, row, epsg = (np.asarray(a, np.int64) for a in (col, row, epsg))
    own = _is_test(col // block, row // block, epsg, seed, test_fraction)
    mixed = np.zeros(len(col), bool)
    for dx in range(-gap, gap + 1):
        for dy in range(-gap, gap + 1):
            if dx or dy:
                other = _is_test((col + dx) // block, (row + dy) // block, epsg, seed, test_fraction)
                mixed |= other != own
    return Split(train=~own & ~mixed, test=own & ~mixed)
