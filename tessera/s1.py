"""Pure Sentinel-1 array kernels: the reference's scaled-dB int16 encoding and same-day merge."""

from __future__ import annotations

import numpy as np

__all__ = ["encode_db", "merge_first_nonzero"]


def encode_db(values: np.ndarray) -> np.ndarray:
    """gamma0 (linear) -> int16 ``trunc(clip((20*log10(v) + 50) * 200, 0, 32767))``; 0 where v is not finite or <= 0.

    Computed in float64, exactly as the reference (which applied the amplitude formula 20*log10
    to power values; reproduced on purpose for compatibility with released checkpoints).
    """
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v) & (v > 0)
    safe = np.where(ok, v, 1.0)
    scaled = np.clip((20.0 * np.log10(safe) + 50.0) * 200.0, 0.0, 32767.0)
    return np.where(ok, np.trunc(scaled), 0.0).astype(np.int16)


def merge_first_nonzero(acc: np.ndarray | None, encoded: np.ndarray) -> np.ndarray:
    """Same-day same-orbit merge: keep ``acc`` where nonzero, else take ``encoded`` (per band and pixel).

    Feeding items in (datetime, id) order makes the first item with a nonzero value win, as the
    reference's ``rasterio.merge(method="first", nodata=0)``.
    """
    if acc is None:
        return encoded.copy()
    return np.where(acc != 0, acc, encoded)
