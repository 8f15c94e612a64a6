"""The plan: content-addressed, the same in memory and on disk, and read by window."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.warp
import yaml
from affine import Affine
from rasterio.enums import Resampling

from tessera.errors import DataSourceError
from tessera.grid import Grid, load_roi, plan_chunks, plan_tiles
from tessera.parsetime import setup
from tessera.plan import StoredPlan, compute_plan, plan_key, plan_tiles_file, write_plan

POLY = [[0.10, 52.20], [0.125, 52.20], [0.125, 52.213], [0.10, 52.213], [0.10, 52.20]]


def _vector_roi(tmp: Path) -> Path:
    path = tmp / "roi.geojson"
    path.write_text(json.dumps({"type": "Polygon", "coordinates": [POLY]}))
    return path


def _raster_roi(tmp: Path) -> Path:
    """A 30 m mask in EPSG:3857 (another CRS and resolution than the 10 m UTM output grid)."""
    rng = np.random.default_rng(5)
    data = (rng.random((60, 80)) < 0.7).astype(np.uint8)
    data[:20, :30] = 0
    path = tmp / "roi.tif"
    profile = {"driver": "GTiff", "height": 60, "width": 80, "count": 1, "dtype": "uint8", "crs": "EPSG:3857"}
    with rasterio.open(path, "w", transform=Affine(30, 0, 11_200, 0, -30, 6_836_000), **profile) as dst:
        dst.write(data, 1)
    return path


def _full_read_mask(path: Path, grid: Grid) -> np.ndarray:
    """The ROI mask of ``grid`` from a read of the whole raster (what the windowed read must equal)."""
    out = np.zeros(grid.shape, np.uint8)
    with rasterio.open(path) as src:
        rasterio.warp.reproject(
            (src.read(1) > 0).astype(np.uint8),
            out,
            src_transform=src.transform,
            src_crs=src.crs,
            dst_transform=grid.transform,
            dst_crs=grid.crs,
            src_nodata=0,
            dst_nodata=0,
            resampling=Resampling.nearest,
        )
    return out


def test_key_follows_content_and_settings_not_mtime(tmp_path: Path) -> None:
    roi = _vector_roi(tmp_path)
    key = plan_key(roi, 10, 1000)
    os.utime(roi, (1, 1))
    assert plan_key(roi, 10, 1000) == key
    assert len({key, plan_key(roi, 20, 1000), plan_key(roi, 10, 2000)}) == 3
    roi.write_text(roi.read_text().replace("52.213", "52.214"))
    assert plan_key(roi, 10, 1000) != key


def test_key_is_the_same_for_a_renamed_or_moved_copy(tmp_path: Path) -> None:
    """The key addresses content: a renamed copy of the ROI (and of its sidecars) is the same plan."""
    roi = _vector_roi(tmp_path)
    (tmp_path / "moved").mkdir()
    copy = shutil.copy(roi, tmp_path / "moved" / "Region of Interest.GeoJSON")
    assert plan_key(copy, 10, 1000) == plan_key(roi, 10, 1000)

    raster = _raster_roi(tmp_path)
    (tmp_path / "roi.tif.aux.xml").write_text("<PAMDataset/>")
    renamed = shutil.copy(raster, tmp_path / "moved" / "field.tif")
    assert plan_key(renamed, 10, 1000) != plan_key(raster, 10, 1000)  # the original has a sidecar
    shutil.copy(tmp_path / "roi.tif.aux.xml", tmp_path / "moved" / "field.tif.aux.xml")
    assert plan_key(renamed, 10, 1000) == plan_key(raster, 10, 1000)


def test_key_reads_the_roi_and_its_sidecars_not_unrelated_files(tmp_path: Path) -> None:
    """An unrelated file with the ROI's stem (notes, a backup) must not rerun the workflow; a sidecar
    GDAL reads with the ROI (a shapefile's ``.dbf``, a raster's ``.aux.xml``) must."""
    roi = _vector_roi(tmp_path)
    key = plan_key(roi, 10, 1000)
    (tmp_path / "roi.yaml").write_text("notes: about the region\n")
    (tmp_path / "roi.geojson.bak").write_text("{}")
    assert plan_key(roi, 10, 1000) == key

    raster = _raster_roi(tmp_path)
    rkey = plan_key(raster, 10, 1000)
    (tmp_path / "roi.tif.aux.xml").write_text("<PAMDataset/>")
    assert plan_key(raster, 10, 1000) != rkey

    shp = tmp_path / "shape.shp"
    for ext in ("shp", "shx", "dbf", "prj"):
        (tmp_path / f"shape.{ext}").write_bytes(ext.encode())
    skey = plan_key(shp, 10, 1000)
    (tmp_path / "shape.qmd").write_text("QGIS metadata")
    assert plan_key(shp, 10, 1000) == skey
    (tmp_path / "shape.dbf").write_bytes(b"other attributes")
    assert plan_key(shp, 10, 1000) != skey


def test_windowed_raster_mask_equals_a_full_read(tmp_path: Path) -> None:
    roi = load_roi(_raster_roi(tmp_path), 10.0)
    chunks = plan_chunks(roi, 500)
    assert len(chunks) > 4
    for chunk in chunks:
        assert np.array_equal(roi.mask(chunk.grid), _full_read_mask(roi.path, chunk.grid))
    assert roi.count_inside(block=37) == int(_full_read_mask(roi.path, roi.grid).sum())


def test_stored_plan_matches_the_computed_one(tmp_path: Path) -> None:
    for roi_path in (_vector_roi(tmp_path), _raster_roi(tmp_path)):
        roi = load_roi(roi_path, 10.0)
        plan = compute_plan(roi, "k", 500, 16)
        out = tmp_path / roi_path.suffix.lstrip(".")
        write_plan(roi, "k", 500, out)
        plan_tiles_file(StoredPlan(out), 16, out / "tiles-16.json")
        stored = StoredPlan(out, 16)
        assert [c.id for c in stored.chunks] == [c.id for c in plan.chunks] == [c.id for c in plan_chunks(roi, 500)]
        for chunk in plan.chunks:
            assert stored.chunk(chunk.id) == chunk
            assert np.array_equal(stored.mask(chunk.grid), roi.mask(chunk.grid))
            assert stored.tiles(chunk.id) == list(plan.tiles[chunk.id]) == plan_tiles(roi, chunk, 16)
        assert stored.doc_inside() == plan.inside


def test_parse_writes_nothing_and_then_reads_the_stored_plan(tmp_path: Path) -> None:
    cfg = {"roi": str(_vector_roi(tmp_path)), "years": [2022], "results_dir": str(tmp_path / "results")}
    cfg |= {"chunk_size_m": 500, "tile_size": 16}
    before = sorted(tmp_path.rglob("*"))
    first = setup(yaml.safe_load(yaml.safe_dump(cfg)))
    assert first.plan_source.startswith("computed") and sorted(tmp_path.rglob("*")) == before
    out = Path(first.results.plan_dir(first.key))
    write_plan(load_roi(cfg["roi"]), first.key, 500, out)
    # a job that parses while `plan_tiles` still runs: the tiles come from the stored mask
    while_tiling = setup(cfg)
    assert while_tiling.plan_source == "stored" and while_tiling.plan == first.plan
    plan_tiles_file(StoredPlan(out), 16, Path(first.results.plan_tiles(first.key, 16)))
    second = setup(cfg)
    assert second.plan_source == "stored" and second.plan == first.plan


def test_parse_notes_a_product_grid_off_the_published_utm_10_m_grid(tmp_path: Path) -> None:
    """A vector ROI in EPSG:4326 gets its UTM zone at 10 m: no note. A projected ROI keeps its CRS, and a
    coarser resolution its pixel size: the note says the products will not line up and what to give."""
    cfg = {"roi": str(_vector_roi(tmp_path)), "years": [2022], "results_dir": str(tmp_path / "results")}
    assert setup(dict(cfg), check=False).alignment_note() is None
    note = setup({**cfg, "resolution": 20, "chunk_size_m": 1000}, check=False).alignment_note()
    assert note is not None and "EPSG:32631 at 20 m" in note and "resolution 10" in note
    web = setup({**cfg, "roi": str(_raster_roi(tmp_path)), "chunk_size_m": 1200, "resolution": 30}, check=False)
    note = web.alignment_note()
    assert note is not None and "EPSG:3857 at 30 m" in note and "give the ROI in EPSG:32631 or in EPSG:4326" in note


def test_parse_refuses_an_earthdata_source_without_a_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before any job runs: without the check, every search would run and every S1 read fail."""
    monkeypatch.delenv("EARTHDATA_TOKEN", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    cfg = {"roi": str(_vector_roi(tmp_path)), "years": [2022], "results_dir": str(tmp_path / "results")}
    cfg |= {"s1": {"source": "opera"}, "s2": {"source": "earth-search"}}
    with pytest.raises(DataSourceError, match="the opera source needs a NASA Earthdata token: set EARTHDATA_TOKEN"):
        setup(dict(cfg))
    assert setup(dict(cfg), check=False).cfg.s1.source == "opera"  # a job's own parse does not check again
    monkeypatch.setenv("EARTHDATA_TOKEN", "a-token")
    assert setup(dict(cfg)).cfg.s1.source == "opera"
