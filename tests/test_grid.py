"""ROI loading, output grid, chunk and tile planning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from tessera.errors import RoiError
from tessera.grid import Grid, load_roi, plan_chunks, plan_tiles, utm_crs_for

POLY = [[0.10, 52.20], [0.13, 52.20], [0.13, 52.218], [0.10, 52.218], [0.10, 52.20]]


def write_geojson(path: Path, coords: list[list[float]] = POLY) -> Path:
    fc = {
        "type": "FeatureCollection",
        "features": [{"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [coords]}}],
    }
    path.write_text(json.dumps(fc))
    return path


def write_mask(path: Path, data: np.ndarray, crs: str | None, transform: Affine) -> Path:
    profile = {"driver": "GTiff", "height": data.shape[0], "width": data.shape[1], "count": 1, "dtype": "uint8"}
    if crs:
        profile["crs"] = crs
    with rasterio.open(path, "w", transform=transform, **profile) as dst:
        dst.write(data, 1)
    return path


def test_utm_zone() -> None:
    assert utm_crs_for(0.1, 52.2) == "EPSG:32631"
    assert utm_crs_for(-0.1, 52.2) == "EPSG:32630"
    assert utm_crs_for(-70.0, -33.0) == "EPSG:32719"
    assert utm_crs_for(180.0, 10.0) == "EPSG:32660"


def test_vector_roi_grid_is_aligned(tmp_path: Path) -> None:
    roi = load_roi(write_geojson(tmp_path / "roi.geojson"), 10)
    assert roi.kind == "vector"
    assert roi.grid.crs == "EPSG:32631"
    t = roi.grid.transform
    assert t.c % 10 == 0 and t.f % 10 == 0 and t.a == 10 and t.e == -10
    mask = roi.mask(roi.grid)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    # the ROI is about 2.05 km x 2.0 km
    assert 3.5 < mask.sum() * 100 / 1e6 < 4.5


def test_raster_roi_any_crs_and_resolution(tmp_path: Path) -> None:
    # a 30 m mask in UTM with an origin off the 10 m lattice; 255 = inside (reference style)
    data = np.zeros((20, 30), np.uint8)
    data[5:15, 10:25] = 255
    path = write_mask(tmp_path / "roi.tif", data, "EPSG:32630", Affine(30, 0, 500_003, 0, -30, 5_800_007))
    roi = load_roi(path, 10)
    assert roi.grid.crs == "EPSG:32630"
    left, _bottom, right, top = roi.grid.bounds
    assert left <= 500_003 + 10 * 30 and right >= 500_003 + 25 * 30
    assert left % 10 == 0 and top % 10 == 0
    mask = roi.mask(roi.grid)
    assert mask.sum() == pytest.approx(10 * 15 * 9, rel=0.05)


def test_geographic_raster_goes_to_utm(tmp_path: Path) -> None:
    data = np.ones((10, 10), np.uint8)
    path = write_mask(tmp_path / "roi.tif", data, "EPSG:4326", Affine(0.001, 0, 0.1, 0, -0.001, 52.21))
    assert load_roi(path, 10).grid.crs == "EPSG:32631"


def test_missing_roi(tmp_path: Path) -> None:
    with pytest.raises(RoiError, match="does not exist"):
        load_roi(tmp_path / "nope.tif")


def test_not_raster_or_vector(tmp_path: Path) -> None:
    p = tmp_path / "roi.txt"
    p.write_text("this is not a map\n")
    with pytest.raises(RoiError, match="neither a raster"):
        load_roi(p)


def test_empty_raster_roi(tmp_path: Path) -> None:
    path = write_mask(tmp_path / "roi.tif", np.zeros((5, 5), np.uint8), "EPSG:32630", Affine(10, 0, 0, 0, -10, 0))
    with pytest.raises(RoiError, match="no inside pixel"):
        load_roi(path)


def test_raster_without_crs(tmp_path: Path) -> None:
    path = write_mask(tmp_path / "roi.tif", np.ones((5, 5), np.uint8), None, Affine(10, 0, 0, 0, -10, 0))
    with pytest.raises(RoiError, match="no CRS"):
        load_roi(path)


def test_roi_too_large(tmp_path: Path) -> None:
    with pytest.raises(RoiError, match="max_roi_area_km2"):
        load_roi(write_geojson(tmp_path / "roi.geojson"), 10, max_area_km2=1.0)


def test_chunks_are_stable_and_cover_the_roi(tmp_path: Path) -> None:
    roi = load_roi(write_geojson(tmp_path / "roi.geojson"), 10)
    chunks = plan_chunks(roi, 1000)
    ids = [c.id for c in chunks]
    assert len(ids) == len(set(ids))
    assert all(c.id.startswith("1000m_E") for c in chunks)
    # every ROI pixel lies in exactly one chunk
    full = roi.mask(roi.grid)
    count = np.zeros(full.shape, int)
    for c in chunks:
        dx, dy = c.grid.offset_in(roi.grid)
        count[dy : dy + c.grid.height, dx : dx + c.grid.width] += 1
        assert c.grid.width <= 100 and c.grid.height <= 100
    assert (count[full == 1] == 1).all()
    # a bigger ROI over the same place keeps the same ids for the chunks it shares
    bigger = [[0.095, 52.195], [0.135, 52.195], [0.135, 52.222], [0.095, 52.222], [0.095, 52.195]]
    roi2 = load_roi(write_geojson(tmp_path / "big.geojson", bigger), 10)
    ids2 = {c.id: c for c in plan_chunks(roi2, 1000)}
    interior = [c for c in chunks if c.grid.width == 100 and c.grid.height == 100]
    for c in interior:
        assert ids2[c.id].grid == c.grid


def test_chunks_skip_empty_cells(tmp_path: Path) -> None:
    data = np.zeros((300, 300), np.uint8)
    data[:50, :50] = 1
    data[250:, 250:] = 1
    path = write_mask(tmp_path / "roi.tif", data, "EPSG:32630", Affine(10, 0, 500_000, 0, -10, 5_800_000))
    chunks = plan_chunks(load_roi(path, 10), 1000)
    assert len(chunks) == 2


def test_tiles_follow_reference_naming(tmp_path: Path) -> None:
    roi = load_roi(write_geojson(tmp_path / "roi.geojson"), 10)
    chunk = max(plan_chunks(roi, 1000), key=lambda c: c.grid.width * c.grid.height)
    tiles = plan_tiles(roi, chunk, 40)
    for t in tiles:
        assert t.name == f"{t.x0}_{t.y0}_{t.x1}_{t.y1}"
        assert t.x1 - t.x0 <= 40 and t.y1 - t.y0 <= 40
        assert t.x1 <= chunk.grid.width and t.y1 <= chunk.grid.height


def test_grid_roundtrip() -> None:
    g = Grid("EPSG:32631", 10.0, 30182, -578925, 214, 209)
    assert Grid.from_dict(g.to_dict()) == g
    assert Grid.from_transform(g.crs, g.transform, g.width, g.height) == g
    with pytest.raises(ValueError):
        Grid.from_transform(g.crs, Affine(10, 0, 3.0, 0, -10, 0), 5, 5)
