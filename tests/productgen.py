"""Small seeded stitched products (COG layout of `tessera.products`) for the export tests.

The ROI is 4 km x 2 km of EPSG:32631 at 100 m pixels, across 0 E and 52.2 N, so it touches four
geotessera tiles, two of whose centres lie in UTM zone 30; 100 m pixels keep those tiles small
(74 x 115 px). Its north-west corner is outside the ROI and a few ROI pixels are nodata (a pixel
the model did not embed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import yaml
from affine import Affine

from tessera.cog import INT8_NODATA

__all__ = ["RES", "SyntheticProduct", "write_config", "write_product"]

RES = 100.0
ORIGIN = (293_000.0, 5_788_000.0)
WIDTH, HEIGHT = 40, 20
HOLES = ((10, 20), (3, 30), (15, 2))


@dataclass(frozen=True)
class SyntheticProduct:
    """A product on disk and its values."""

    roi: Path
    cog: Path
    inside: np.ndarray
    """bool (H, W): ROI pixels."""
    valid: np.ndarray
    """bool (H, W): pixels with an embedding."""
    values: np.ndarray
    """float32 (H, W, D): the embeddings (dequantised for int8 products), NaN at nodata."""
    codes: np.ndarray | None
    """int8 (H, W, D) codes of an int8 product."""
    scales: np.ndarray | None
    """float32 (H, W) scales of an int8 product."""


def write_roi(path: Path) -> Path:
    mask = np.ones((HEIGHT, WIDTH), np.uint8)
    mask[:5, :6] = 0
    profile = {"driver": "GTiff", "width": WIDTH, "height": HEIGHT, "count": 1, "dtype": "uint8", "crs": "EPSG:32631"}
    with rasterio.open(path, "w", transform=Affine(RES, 0, ORIGIN[0], 0, -RES, ORIGIN[1]), **profile) as dst:
        dst.write(mask, 1)
    return path


def write_product(
    root: Path,
    *,
    year: int = 2022,
    output: str = "int8",
    dims: int = 128,
    family: str = "v1.0-qat",
    seed: int = 0,
    tags: dict[str, str] | None = None,
) -> SyntheticProduct:
    """ROI at ``root/roi.tif`` and the product at ``root/results/<year>/products/tessera_<year>.tif``.

    ``tags`` are added to the product's (year, model family, dataset version).
    """
    root.mkdir(parents=True, exist_ok=True)
    roi = write_roi(root / "roi.tif")
    rng = np.random.default_rng(seed)
    with rasterio.open(roi) as src:
        inside = src.read(1) != 0
        transform = src.transform
    valid = inside.copy()
    for r, c in HOLES:
        valid[r, c] = False
    cog = root / "results" / str(year) / "products" / f"tessera_{year}.tif"
    cog.parent.mkdir(parents=True, exist_ok=True)
    profile = {"driver": "GTiff", "width": WIDTH, "height": HEIGHT, "crs": "EPSG:32631", "transform": transform}
    tags = {
        "TESSERA_YEAR": str(year),
        "TESSERA_MODEL_FAMILY": family,
        "TESSERA_DATASET_VERSION": "1.0-QAT",
        **(tags or {}),
    }
    codes = scales = None
    if output == "int8":
        codes = rng.integers(-127, 128, (HEIGHT, WIDTH, dims)).astype(np.int8)
        scales = rng.uniform(0.002, 0.05, (HEIGHT, WIDTH)).astype(np.float32)
        values = codes.astype(np.float32) * scales[..., None]
        stored_codes = np.where(valid[..., None], codes, INT8_NODATA).astype(np.int8)
        with rasterio.open(cog, "w", count=dims, dtype="int8", nodata=INT8_NODATA, **profile) as dst:
            dst.write(np.moveaxis(stored_codes, -1, 0))
            dst.update_tags(**tags)
        with rasterio.open(
            cog.with_name(f"tessera_{year}_scales.tif"), "w", count=1, dtype="float32", nodata=np.nan, **profile
        ) as dst:
            dst.write(np.where(valid, scales, np.nan)[None])
    else:
        values = rng.normal(size=(HEIGHT, WIDTH, dims)).astype(np.float32)
        with rasterio.open(cog, "w", count=dims, dtype="float32", nodata=np.nan, **profile) as dst:
            dst.write(np.moveaxis(np.where(valid[..., None], values, np.nan), -1, 0))
            dst.update_tags(**tags)
    values = np.where(valid[..., None], values, np.nan).astype(np.float32)
    return SyntheticProduct(roi, cog, inside, valid, values, codes, scales)


def write_config(root: Path, product: SyntheticProduct, year: int = 2022) -> Path:
    """A run config whose ROI and results_dir are those of ``product``."""
    cfg = {"roi": str(product.roi), "years": [year], "results_dir": str(root / "results"), "resolution": RES}
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path
