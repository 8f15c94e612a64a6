"""The seeded demo world: deterministic bytes and Planetary-Computer-shaped items."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from tessera.s1 import encode_db
from tessera.testing.world import generate_demo_data, is_generated
from tests.e2e import FALLBACK_PATCH

S2_ASSETS = {"B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12", "SCL"}

# generating the demo world takes half a minute on 2 cores
pytestmark = pytest.mark.slow


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def _items(root: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (root / "items.ndjson").read_text().splitlines()]


def test_same_seed_same_bytes(demo_data_dir: Path, tmp_path: Path) -> None:
    generate_demo_data(tmp_path / "again", [2022, 2023], seed=0, fallback_patch=FALLBACK_PATCH)
    first, second = _hashes(demo_data_dir), _hashes(tmp_path / "again")
    assert len(first) > 500
    assert first == second
    assert is_generated(demo_data_dir, [2022, 2023], 0, fallback_patch=FALLBACK_PATCH)
    assert not is_generated(demo_data_dir, [2023], 0, fallback_patch=FALLBACK_PATCH)
    assert not is_generated(demo_data_dir, [2022, 2023], 0)  # the demo's world has no patch


def test_s2_items_have_the_planetary_computer_shape(demo_data_dir: Path) -> None:
    s2 = [it for it in _items(demo_data_dir) if it["collection"] == "sentinel-2-l2a"]
    by_day: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for it in s2:
        props = it["properties"]
        assert set(it["assets"]) >= S2_ASSETS
        for key in ("datetime", "platform", "proj:epsg", "eo:cloud_cover", "s2:mgrs_tile", "s2:processing_baseline"):
            assert key in props, key
        assert it["assets"]["B02"]["proj:shape"][0] == 2 * it["assets"]["SCL"]["proj:shape"][0]
        assert it["assets"]["B02"]["proj:transform"][0] == 10 and it["assets"]["B11"]["proj:transform"][0] == 20
        assert not it["assets"]["B02"]["href"].startswith(("/", "http"))
        lon0, lat0, lon1, lat1 = it["bbox"]
        assert -1 < lon0 < lon1 < 1 and 52 < lat0 < lat1 < 53
        by_day[props["datetime"][:10]].append(it)
    # every date has two granules of different tiles and footprints (same-day merging)
    assert len(by_day) >= 35
    for granules in by_day.values():
        assert len({g["properties"]["s2:mgrs_tile"] for g in granules}) == 2
        assert granules[0]["bbox"] != granules[1]["bbox"]
    baselines = {it["properties"]["datetime"][:10]: it["properties"]["s2:processing_baseline"] for it in s2}
    assert baselines["2022-01-24"] < "04.00" <= baselines["2022-02-03"]
    assert {c for c in (it["properties"]["eo:cloud_cover"] for it in s2)} != {0.0}


def test_baseline_offset_is_in_the_stored_dn(demo_data_dir: Path) -> None:
    s2 = {it["id"]: it for it in _items(demo_data_dir) if it["properties"].get("s2:mgrs_tile") == "31UCU"}
    pair = [
        next(it for it in s2.values() if it["properties"]["datetime"].startswith(d))
        for d in ("2022-01-24", "2022-02-03")
    ]
    assert [it["properties"]["s2:processing_baseline"] for it in pair] == ["03.01", "04.00"]
    b04, scl = [], []
    for it in pair:
        with rasterio.open(demo_data_dir / it["assets"]["B04"]["href"]) as src:
            assert src.profile["dtype"] == "uint16"
            b04.append(src.read(1)[::2, ::2].astype(np.int32))
        with rasterio.open(demo_data_dir / it["assets"]["SCL"]["href"]) as src:
            assert src.profile["dtype"] == "uint8"
            scl.append(src.read(1))
    clear = np.isin(scl[0], (4, 5, 6)) & np.isin(scl[1], (4, 5, 6))
    assert clear.sum() > 1000
    # reflectance barely changes in winter: the step between the two dates is the +1000 offset
    assert 950 < float(np.median(b04[1][clear] - b04[0][clear])) < 1050


def test_s1_items_have_both_orbits_on_different_days(demo_data_dir: Path) -> None:
    s1 = [it for it in _items(demo_data_dir) if it["collection"] == "sentinel-1-rtc"]
    days = defaultdict(set)
    for it in s1:
        props = it["properties"]
        assert {"vv", "vh"} <= set(it["assets"])
        assert props["sar:polarizations"] == ["VV", "VH"] and props["sar:instrument_mode"] == "IW"
        assert props["platform"].startswith("SENTINEL-1")
        days[props["sat:orbit_state"]].add(props["datetime"][:10])
    assert set(days) == {"ascending", "descending"}
    assert len(days["ascending"]) >= 25 and len(days["descending"]) >= 25
    assert not days["ascending"] & days["descending"]
    with rasterio.open(demo_data_dir / s1[0]["assets"]["vv"]["href"]) as src:
        vv = src.read(1)
        assert src.profile["dtype"] == "float32" and src.profile["driver"] == "GTiff"
    valid = vv[vv > 0]
    db = 10 * np.log10(valid)
    assert -25 < float(np.median(db)) < 0  # plausible land gamma0
    assert float(np.std(valid / np.median(valid))) > 0.2  # speckle


def test_labels_and_the_timing_classes(demo_data_dir: Path) -> None:
    from tessera.testing import world

    with rasterio.open(demo_data_dir / world.LABELS_FILE) as src:
        labels = src.read(1)
        assert src.nodata == 0 and src.crs is not None
    assert set(np.unique(labels)) == set(range(1, len(world.CLASS_NAMES) + 1))
    meta = json.loads((demo_data_dir / "labels.json").read_text())
    assert meta["classes"]["2"] == "winter crop" and meta["groups"]["timing"] == [2, 3]
    # the two crops: same annual median over the S2 dates (every 10 days from 4 January), different timing
    doys = np.arange(4, 366, 10)
    series = {}
    for cls in (world._WINTER_CROP, world._SPRING_CROP):
        off, peak = (np.asarray(v, float) for v in world._REFLECTANCE[cls])
        w = np.array([world._season_weight(int(d), cls) for d in doys])[:, None]
        series[cls] = (1 - w) * off + w * peak
    a, b = series[world._WINTER_CROP], series[world._SPRING_CROP]
    assert np.abs(np.median(a, 0) - np.median(b, 0)).max() < 5  # DN
    assert np.abs(a - b).max() > 1000


def test_fallback_patch_has_no_valid_observation(demo_data_dir: Path) -> None:
    """The patch's west two thirds are cloud on every S2 date, its east two thirds encode to S1 zeros."""
    x, y = FALLBACK_PATCH
    items = _items(demo_data_dir)
    s2 = [it for it in items if it["properties"].get("s2:mgrs_tile") == "31UCU"]  # the granule over the patch
    s1 = [it for it in items if it["collection"] == "sentinel-1-rtc" and it["properties"]["datetime"] < "2023"]
    assert len(s2) > 30 and len(s1) > 50

    def window(href: str, res: float, cols: int) -> np.ndarray:
        with rasterio.open(demo_data_dir / href) as src:
            row, col = src.index(x + res / 2, y - res / 2)
            return src.read(1, window=((row, row + int(120 // res)), (col, col + cols)))

    # 20 m SCL: columns 0-3 of the patch are cloudy (9) on every date; 4-5 (the SAR-dark third) sometimes clear
    scl = np.stack([window(it["assets"]["SCL"]["href"], 20.0, 6) for it in s2])
    assert (scl[:, :, :4] == 9).all() and not (scl[:, :, 4:] == 9).all()
    vv, vh = (np.stack([window(it["assets"][p]["href"], 10.0, 12) for it in s1]) for p in ("vv", "vh"))
    frames = (encode_db(vv) != 0) | (encode_db(vh) != 0)  # a frame is valid where any band encodes non-zero
    assert not frames[:, :, 4:].any() and frames[:, :, :4].all()
