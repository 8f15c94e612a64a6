"""Quicklook PNG of an embeddings COG: its first three principal components as RGB.

The COG is read at a reduced size (GDAL serves it from the overviews) in strips of rows, three
times: validity, a seeded sample of valid pixels for the PCA, then the projection. Memory is one
strip of the reduced image, whatever the ROI size. Each component is stretched to its 2-98
percentiles over the sample; nodata pixels are transparent (alpha 0).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from tessera.io import write_png

__all__ = ["write_quicklook"]

logger = logging.getLogger(__name__)

_STRIP_ROWS = 64


class _Reader:
    """Reads the embeddings (dequantised) at ``1 / factor`` of the full size, strip by strip."""

    def __init__(self, cog: Path, scales: Path | None, max_size: int) -> None:
        self.cog, self.scales = cog, scales
        with rasterio.open(cog) as ds:
            self.height, self.width, self.dims = ds.height, ds.width, ds.count
            self.int8 = ds.dtypes[0] == "int8"
        self.factor = max(1, math.ceil(max(self.height, self.width) / max_size))
        self.out_h, self.out_w = math.ceil(self.height / self.factor), math.ceil(self.width / self.factor)

    def strips(self) -> Iterator[tuple[int, int]]:
        for r0 in range(0, self.out_h, _STRIP_ROWS):
            yield r0, min(r0 + _STRIP_ROWS, self.out_h)

    def _window(self, r0: int, r1: int) -> Window:
        f = self.factor
        return Window(0, r0 * f, self.width, min(r1 * f, self.height) - r0 * f)

    def read(self, r0: int, r1: int, bands: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(values (n, D) float32, valid (n,) bool)`` for the reduced rows ``r0:r1``."""
        shape = (r1 - r0, self.out_w)
        idx = bands or list(range(1, self.dims + 1))
        with rasterio.open(self.cog) as ds:
            raw = ds.read(idx, window=self._window(r0, r1), out_shape=(len(idx), *shape))
        values = np.moveaxis(raw, 0, -1).reshape(-1, len(idx)).astype(np.float32)
        if self.scales is not None:
            with rasterio.open(self.scales) as ss:
                sc = ss.read(1, window=self._window(r0, r1), out_shape=shape).reshape(-1)
            valid = np.isfinite(sc)
            values *= np.where(valid, sc, 0.0)[:, None]
        else:
            valid = np.isfinite(values).all(axis=1)
        values[~valid] = 0.0
        return values, valid


def _pca(sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and ``(D, 3)`` leading components, signs fixed so each has a positive largest loading."""
    mean = sample.mean(axis=0)
    _, _, vt = np.linalg.svd(sample - mean, full_matrices=False)
    comps = np.zeros((sample.shape[1], 3), np.float64)
    k = min(3, vt.shape[0])
    comps[:, :k] = vt[:k].T
    for j in range(k):
        if comps[np.argmax(np.abs(comps[:, j])), j] < 0:
            comps[:, j] *= -1
    return mean, comps


def write_quicklook(
    cog: Path, scales: Path | None, dst: Path, *, max_size: int = 1024, sample: int = 20000, seed: int = 0
) -> None:
    """Write an RGBA PNG of the first three principal components of the embeddings.

    Args:
        cog: Embeddings COG (int8 codes or float32).
        scales: Its scales COG (int8 products), or None.
        dst: PNG to write (the caller makes it atomic).
        max_size: Longest side of the PNG in pixels; larger products are decimated by an integer factor.
        sample: Valid pixels (at most) that the PCA and the stretch are fitted on.
        seed: Seed of the sample.
    """
    reader = _Reader(cog, scales, max_size)
    valid_rows = [reader.read(r0, r1, bands=[1])[1] for r0, r1 in reader.strips()]
    valid = np.concatenate(valid_rows)
    n_valid = int(valid.sum())
    rgba = np.zeros((4, reader.out_h * reader.out_w), np.uint8)
    if n_valid >= 2:
        rng = np.random.default_rng(seed)
        chosen = np.zeros(valid.size, bool)
        chosen[np.sort(rng.choice(np.flatnonzero(valid), size=min(sample, n_valid), replace=False))] = True
        parts, offset = [], 0
        for r0, r1 in reader.strips():
            values, _ = reader.read(r0, r1)
            parts.append(values[chosen[offset : offset + len(values)]])
            offset += len(values)
        fit = np.concatenate(parts).astype(np.float64)
        mean, comps = _pca(fit)
        proj = (fit - mean) @ comps
        lo, hi = np.percentile(proj, 2, axis=0), np.percentile(proj, 98, axis=0)
        span = np.where(hi > lo, hi - lo, 1.0)
        offset = 0
        for r0, r1 in reader.strips():
            values, ok = reader.read(r0, r1)
            rgb = np.clip(((values.astype(np.float64) - mean) @ comps - lo) / span, 0.0, 1.0) * 255.0
            sl = slice(offset, offset + len(values))
            rgba[:3, sl] = np.where(ok, np.round(rgb).T, 0).astype(np.uint8)
            rgba[3, sl] = np.where(ok, 255, 0).astype(np.uint8)
            offset += len(values)
    else:
        logger.warning("quicklook: fewer than 2 valid pixels, writing a transparent image")
    write_png(dst, rgba.reshape(4, reader.out_h, reader.out_w))  # a plain picture, not georeferenced
    logger.info(
        "quicklook: %d x %d px (1/%d of the product), PCA on %d pixels",
        reader.out_w,
        reader.out_h,
        reader.factor,
        min(sample, n_valid),
    )
