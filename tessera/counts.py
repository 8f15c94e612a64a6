"""The observation-count product: per-pixel valid S2 and S1 observations of a year, as a COG.

``tessera_<year>_counts.tif`` ships with the embeddings so that users can mask low-evidence pixels
themselves (for instance pixels that ``model.nodata_policy: reference`` embedded from a fallback):

* band 1 ``s2_valid``: S2 dates whose SCL class is valid at the pixel (``masks.npy`` summed);
* band 2 ``s1_valid``: S1 frames, ascending plus descending, with any band != 0 at the pixel.

Both are uint16 on the product grid and come from the read steps' ``valid_count.npy``, so they
count exactly what inference saw. Outside the ROI the value is 65535, declared as the nodata
value, so QGIS and rasterio mask it; 0 inside the ROI means no valid observation. Written window
by window like the embeddings (`tessera.cog`): memory is one window and the chunks it overlaps.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from tessera.cog import to_cog
from tessera.errors import DataSourceError
from tessera.grid import Chunk
from tessera.layout import ORBITS
from tessera.plan import StoredPlan
from tessera.results import VALID_COUNT_FILE, stack_path

__all__ = ["COUNT_BANDS", "COUNTS_NODATA", "write_counts"]

logger = logging.getLogger(__name__)

#: Band names of the counts product.
COUNT_BANDS = ("s2_valid", "s1_valid")
#: Nodata value of the counts product (outside the ROI).
COUNTS_NODATA = 65535


def _chunk_counts(stack_dir: Path, chunk: Chunk) -> np.ndarray:
    """``(2, H, W)`` uint16 counts of one chunk from its read steps' ``valid_count.npy``."""

    def load(product: str) -> np.ndarray:
        path = stack_path(stack_dir, chunk.id, product, VALID_COUNT_FILE)
        try:
            arr: np.ndarray = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataSourceError(
                f"cannot read {path} ({exc}); rerun the read job of chunk {chunk.id} ({product})"
            ) from exc
        if arr.shape != chunk.grid.shape:
            raise DataSourceError(
                f"{path} is {arr.shape}, not the chunk's {chunk.grid.shape}; rerun the read job of chunk {chunk.id}"
            )
        return arr.astype(np.uint32)

    s1 = sum((load(f"s1-{o}") for o in ORBITS), np.zeros(chunk.grid.shape, np.uint32))
    both = np.stack([load("s2"), s1])
    out: np.ndarray = np.minimum(both, COUNTS_NODATA - 1).astype(np.uint16)
    return out


def write_counts(
    plan: StoredPlan,
    stack_dir: Path,
    dst: Path,
    work: Path,
    block_size: int = 256,
    tags: Mapping[str, str] | None = None,
) -> None:
    """Write the year's observation-count COG ``dst`` (``work``: a directory for the temporary GeoTIFF).

    ``tags`` (the product's provenance, `tessera.products.product_tags`) go into its metadata.

    Raises:
        DataSourceError: A chunk's ``valid_count.npy`` is missing or of the wrong shape.
    """
    grid = plan.grid
    tmp = work / "counts.tif"
    profile = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": len(COUNT_BANDS),
        "dtype": "uint16",
        "nodata": COUNTS_NODATA,
        "crs": grid.crs,
        "transform": grid.transform,
        "tiled": True,
        "blockxsize": block_size,
        "blockysize": block_size,
        "compress": "deflate",
        "bigtiff": "if_safer",
    }
    # one window = one row of blocks across the grid: every block is written once, and each chunk's
    # counts are loaded for the block rows it spans only
    rows_of = {c.id: c.grid.offset_in(grid)[1] for c in plan.chunks}
    with rasterio.open(tmp, "w", **profile) as ds:
        ds.update_tags(**dict(tags or {}))
        for i, name in enumerate(COUNT_BANDS, start=1):
            ds.set_band_description(i, name)
        for r0 in range(0, grid.height, block_size):
            h = min(block_size, grid.height - r0)
            band = grid.window(0, r0, grid.width, h)
            out = np.full((len(COUNT_BANDS), h, grid.width), COUNTS_NODATA, np.uint16)
            for chunk in plan.chunks:
                top = rows_of[chunk.id]
                if top >= r0 + h or top + chunk.grid.height <= r0:
                    continue
                counts = _chunk_counts(stack_dir, chunk)
                col, row = chunk.grid.offset_in(grid)
                ra, rb = max(r0, row), min(r0 + h, row + chunk.grid.height)
                ca, cb = max(0, col), min(grid.width, col + chunk.grid.width)
                out[:, ra - r0 : rb - r0, ca:cb] = counts[:, ra - row : rb - row, ca - col : cb - col]
            out[:, plan.mask(band) == 0] = COUNTS_NODATA
            ds.write(out, window=Window(0, r0, grid.width, h))
    to_cog(tmp, dst, block_size)
    logger.info("wrote %s", dst)
