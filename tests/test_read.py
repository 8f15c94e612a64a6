"""Reading real COG files through odc-stac onto a chunk grid, streaming dates into .npy stacks."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
import rasterio.warp
from affine import Affine
from rasterio.enums import Resampling

from tessera.config import SourceConfig
from tessera.errors import TransportError
from tessera.grid import Chunk, Grid, Roi
from tessera.layout import S2_BANDS
from tessera.read import NpyStream, group_by_date, read_s1, read_s2
from tessera.search import write_item_collection
from tessera.transport import RetryPolicy

CRS = "EPSG:32630"
#: The chunk: 16 x 12 pixels at 10 m; the scenes cover a larger area around it.
GRID = Grid(CRS, 10.0, 50000, -600000, 16, 12)
SCENE_ORIGIN = (GRID.bounds[0] - 40.0, GRID.bounds[3] + 40.0)
SCENE_10M = (20, 24)  # rows, cols at 10 m
TEN_M = {"B02", "B03", "B04", "B08"}
FAST = RetryPolicy(attempts=2, backoff_s=0.01, max_backoff_s=0.01)


def write_cog(path: Path, data: np.ndarray, res: float, nodata: float | None = 0) -> str:
    """A real single-band COG at ``res`` metres anchored at SCENE_ORIGIN; returns its file:// href."""
    transform = Affine(res, 0, SCENE_ORIGIN[0], 0, -res, SCENE_ORIGIN[1])
    profile = {
        "driver": "COG",
        "height": data.shape[0],
        "width": data.shape[1],
        "count": 1,
        "dtype": data.dtype.name,
        "crs": CRS,
        "transform": transform,
        "nodata": nodata,
        "compress": "deflate",
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    return path.resolve().as_uri()


def make_item(
    item_id: str,
    datetime: str,
    hrefs: Mapping[str, tuple[str, float, tuple[int, int]]],
    **properties: Any,
) -> pystac.Item:
    """A Planetary-Computer-shaped item: proj:epsg in properties, proj:shape/transform per asset."""
    x0, y0 = SCENE_ORIGIN
    lon_lat = rasterio.warp.transform_bounds(CRS, "EPSG:4326", x0, y0 - 400, x0 + 400, y0)
    bbox = list(lon_lat)
    geometry = {
        "type": "Polygon",
        "coordinates": [
            [[bbox[0], bbox[1]], [bbox[2], bbox[1]], [bbox[2], bbox[3]], [bbox[0], bbox[3]], [bbox[0], bbox[1]]]
        ],
    }
    when = pystac.utils.str_to_datetime(datetime)
    item = pystac.Item(item_id, geometry, bbox, when, {"proj:epsg": 32630, **properties})
    for key, (href, res, shape) in hrefs.items():
        item.add_asset(
            key,
            pystac.Asset(
                href,
                media_type="image/tiff; application=geotiff; profile=cloud-optimized",
                roles=["data"],
                extra_fields={"proj:shape": list(shape), "proj:transform": [res, 0, x0, 0, -res, y0]},
            ),
        )
    return item


def s2_item(
    tmp: Path,
    item_id: str,
    datetime: str,
    value: Callable[[str, int, int], np.ndarray],
    scl: np.ndarray,
    baseline: str = "05.09",
) -> pystac.Item:
    """An S2 item whose band ``b`` holds ``value(b, rows, cols)`` (uint16) and whose SCL (20 m) is ``scl``."""
    folder = tmp / item_id
    folder.mkdir(parents=True, exist_ok=True)
    hrefs = {}
    for band in (*S2_BANDS, "SCL"):
        res = 10.0 if band in TEN_M else 20.0
        rows, cols = (SCENE_10M[0], SCENE_10M[1]) if res == 10 else (SCENE_10M[0] // 2, SCENE_10M[1] // 2)
        data = scl.astype(np.uint8) if band == "SCL" else value(band, rows, cols).astype(np.uint16)
        hrefs[band] = (write_cog(folder / f"{band}.tif", data, res), res, (rows, cols))
    return make_item(item_id, datetime, hrefs, **{"s2:processing_baseline": baseline})


def const(v: int) -> Callable[[str, int, int], np.ndarray]:
    """Every band = ``v + band index``."""
    return lambda band, r, c: np.full((r, c), v + S2_BANDS.index(band), np.uint16)


SCL_VEG = np.full((SCENE_10M[0] // 2, SCENE_10M[1] // 2), 4, np.uint8)


def full_roi() -> Roi:
    x0, y0, x1, y1 = GRID.bounds
    poly = {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}
    return Roi(Path("roi.geojson"), "vector", GRID, (poly,))


def left_half_roi() -> Roi:
    x0, y0, x1, y1 = GRID.bounds
    xm = (x0 + x1) / 2
    poly = {"type": "Polygon", "coordinates": [[[x0, y0], [xm, y0], [xm, y1], [x0, y1], [x0, y0]]]}
    return Roi(Path("roi.geojson"), "vector", GRID, (poly,))


CHUNK = Chunk("test-chunk", GRID)
CFG_S2 = SourceConfig("stac", url="http://127.0.0.1:1/", collection="sentinel-2-l2a")


def run_s2(
    tmp: Path, items: list[pystac.Item], roi: Roi | None = None, cfg: SourceConfig | None = None
) -> dict[str, Any]:
    write_item_collection(items, tmp / "items.json")
    out = tmp / "out"
    read_s2(cfg or CFG_S2, (roi or full_roi()).mask(GRID), CHUNK, 2024, tmp / "items.json", out, policy=FAST)
    res: dict[str, Any] = {n: np.load(out / f"{n}.npy") for n in ("bands", "masks", "doys")}
    res["qa"] = json.loads((out / "qa.json").read_text())
    return res


def test_npy_stream_matches_np_save(tmp_path: Path) -> None:
    blocks = [np.full((3, 4, 2), i, np.int16) for i in range(5)]
    with open(tmp_path / "a.npy", "wb") as fh:
        stream = NpyStream(fh, (5, 3, 4, 2), "<i2")
        for b in blocks:
            stream.append(b)
        stream.check_complete()
    np.save(tmp_path / "b.npy", np.stack(blocks))
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()


def test_s2_read_onto_chunk_grid(tmp_path: Path) -> None:
    items = [
        s2_item(tmp_path, "A", "2024-12-31T10:00:00Z", const(2000), SCL_VEG, baseline="05.10"),
        s2_item(tmp_path, "B", "2024-03-01T10:00:00Z", const(2000), SCL_VEG, baseline="03.01"),
    ]
    r = run_s2(tmp_path, items)
    assert r["bands"].dtype == np.dtype("<u2") and r["bands"].shape == (2, 12, 16, 10)
    assert r["masks"].dtype == np.dtype("|u1") and r["masks"].shape == (2, 12, 16)
    assert r["doys"].dtype == np.dtype("<u2") and r["doys"].tolist() == [61, 366]
    # March 2024 baseline 03.01: as read; December baseline 05.10: offset removed (>= 1000 only)
    assert r["bands"][0, 5, 5].tolist() == [2000 + i for i in range(10)]
    assert r["bands"][1, 5, 5].tolist() == [1000 + i for i in range(10)]
    assert r["masks"].all()
    assert r["qa"]["baseline_offset_removed"] == ["A"] and r["qa"]["valid_pixels_per_date"]["2024-03-01"] == 192


def test_s2_20m_bands_bilinear_like_gdal(tmp_path: Path) -> None:
    def ramp(band: str, r: int, c: int) -> np.ndarray:
        return np.tile((np.arange(c) * 37 + 100).astype(np.uint16), (r, 1))

    item = s2_item(tmp_path, "R", "2024-06-01T10:00:00Z", ramp, SCL_VEG, baseline="02.14")
    r = run_s2(tmp_path, [item])
    src = ramp("B05", SCENE_10M[0] // 2, SCENE_10M[1] // 2).astype(np.float32)
    expected = np.zeros(GRID.shape, np.float32)
    rasterio.warp.reproject(
        src,
        expected,
        src_transform=Affine(20, 0, SCENE_ORIGIN[0], 0, -20, SCENE_ORIGIN[1]),
        src_crs=CRS,
        dst_transform=GRID.transform,
        dst_crs=CRS,
        resampling=Resampling.bilinear,
    )
    got = r["bands"][0, :, :, S2_BANDS.index("B05")]
    assert np.array_equal(got, expected.astype(np.uint16))
    assert len(np.unique(got[0])) > 8  # really interpolated, not nearest (which repeats pairs)


def test_s2_same_day_first_valid_wins_and_roi(tmp_path: Path) -> None:
    scl_a = SCL_VEG.copy()
    scl_a[:, :6] = 9  # cloud on the west half of the 20 m grid
    scl_b = SCL_VEG.copy()
    scl_b[:, :3] = 8  # also cloudy on the far west
    items = [
        s2_item(tmp_path, "b", "2024-05-05T10:00:05Z", const(3000), scl_b, baseline="02.14"),
        s2_item(tmp_path, "a", "2024-05-05T10:00:00Z", const(2000), scl_a, baseline="02.14"),
    ]
    r = run_s2(tmp_path, items, roi=left_half_roi())
    bands, mask = r["bands"][0, :, :, 0], r["masks"][0]
    col_scene = np.arange(GRID.width) + 4  # grid column -> 10 m scene column
    first = np.where(col_scene >= 12, 2000, np.where(col_scene >= 6, 3000, 2000))
    inside = np.arange(GRID.width) < 8
    assert bands[3].tolist() == np.where(inside, first, 0).tolist()
    assert mask[3].tolist() == np.where(inside & (col_scene >= 6), 1, 0).tolist()
    assert r["doys"].tolist() == [126]


def test_empty_collection_gives_t0(tmp_path: Path) -> None:
    r = run_s2(tmp_path, [])
    assert r["bands"].shape == (0, 12, 16, 10) and r["masks"].shape == (0, 12, 16) and r["doys"].shape == (0,)
    assert r["qa"]["scenes_found"] == 0


def test_missing_asset_skipped_and_recorded(tmp_path: Path) -> None:
    good = s2_item(tmp_path, "good", "2024-07-01T10:00:00Z", const(2000), SCL_VEG, baseline="02.14")
    gone = s2_item(tmp_path, "gone", "2024-07-01T09:00:00Z", const(5000), SCL_VEG, baseline="02.14")
    (tmp_path / "gone" / "B11.tif").unlink()
    r = run_s2(tmp_path, [good, gone])
    assert r["bands"][0, 0, 0, 0] == 2000
    assert [s["id"] for s in r["qa"]["scenes_skipped"]] == ["gone"]
    assert r["qa"]["retries"] == 1 and r["qa"]["scenes_used"] == 1


def test_corrupt_asset_raises_transport_error(tmp_path: Path) -> None:
    bad = s2_item(tmp_path, "bad", "2024-07-01T10:00:00Z", const(2000), SCL_VEG, baseline="02.14")
    (tmp_path / "bad" / "B04.tif").write_bytes(b"II*\x00 not really a tiff")
    with pytest.raises(TransportError, match="bad"):
        run_s2(tmp_path, [bad])
    assert not (tmp_path / "out" / "bands.npy").exists()


def s1_item(tmp: Path, item_id: str, datetime: str, vv: np.ndarray, vh: np.ndarray, orbit: str) -> pystac.Item:
    folder = tmp / item_id
    folder.mkdir(parents=True, exist_ok=True)
    hrefs = {
        "vv": (write_cog(folder / "vv.tif", vv.astype(np.float32), 10.0, nodata=None), 10.0, vv.shape),
        "vh": (write_cog(folder / "vh.tif", vh.astype(np.float32), 10.0, nodata=None), 10.0, vh.shape),
    }
    return make_item(item_id, datetime, hrefs, **{"sat:orbit_state": orbit})


def test_s1_read_encode_merge(tmp_path: Path) -> None:
    shape = SCENE_10M
    vv_a = np.full(shape, 0.5, np.float32)
    vv_a[:, :10] = 0.0  # no data in the west of scene a
    vh_a = np.full(shape, 0.001953125, np.float32)  # clips to 0 everywhere: b fills it
    items = [
        s1_item(tmp_path, "a", "2024-02-29T06:00:00Z", vv_a, vh_a, "ascending"),
        s1_item(tmp_path, "b", "2024-02-29T06:00:30Z", np.full(shape, 1.0), np.full(shape, 0.25), "ascending"),
        s1_item(tmp_path, "c", "2024-03-02T06:00:00Z", np.full(shape, 0.125), np.full(shape, 0.0625), "descending"),
    ]
    write_item_collection(items, tmp_path / "items.json")
    cfg = SourceConfig("stac", url="http://127.0.0.1:1/", collection="sentinel-1-rtc")
    read_s1(
        cfg,
        left_half_roi().mask(GRID),
        CHUNK,
        2024,
        "ascending",
        tmp_path / "items.json",
        tmp_path / "out",
        policy=FAST,
    )
    sar = np.load(tmp_path / "out" / "sar_ascending.npy")
    doy = np.load(tmp_path / "out" / "sar_ascending_doy.npy")
    qa = json.loads((tmp_path / "out" / "qa.json").read_text())
    assert sar.dtype == np.dtype("<i2") and sar.shape == (1, 12, 16, 2)
    assert doy.dtype == np.dtype("<i2") and doy.tolist() == [60]
    col_scene = np.arange(GRID.width) + 4
    inside = np.arange(GRID.width) < 8
    assert sar[0, 2, :, 0].tolist() == np.where(inside, np.where(col_scene >= 10, 8795, 10000), 0).tolist()
    assert sar[0, 2, :, 1].tolist() == np.where(inside, 7591, 0).tolist()
    assert [s["id"] for s in qa["scenes_skipped"]] == ["c"]


def test_group_by_date_utc_and_order() -> None:
    def it(i: str, d: str) -> pystac.Item:
        return pystac.Item(i, None, None, pystac.utils.str_to_datetime(d), {})

    groups = group_by_date(
        [it("z", "2024-01-02T00:00:01Z"), it("b", "2024-01-01T23:59:59Z"), it("a", "2024-01-01T23:59:59Z")]
    )
    assert [(d, [x.id for x in g]) for d, g in groups] == [("2024-01-01", ["a", "b"]), ("2024-01-02", ["z"])]


def _read_year(tmp: Path, items: list[pystac.Item], year: int, cfg: SourceConfig, period: str | None = None) -> Any:
    write_item_collection(items, tmp / "items.json")
    out = tmp / "out"
    read_s2(cfg, full_roi().mask(GRID), CHUNK, year, tmp / "items.json", out, policy=FAST, period=period)
    return np.load(out / "bands.npy"), np.load(out / "doys.npy"), json.loads((out / "qa.json").read_text())


@pytest.mark.parametrize("rule", [None, "processing-baseline", "acquisition-date"])
def test_s2_offset_rule_in_the_read_step(tmp_path: Path, rule: str | None) -> None:
    """Every case where the item's baseline and the reference's date rule disagree, read both ways."""
    cases = {  # id: (datetime, baseline, offset by baseline, offset by date)
        "reprocessed": ("2022-01-20T10:00:00Z", "05.00", True, False),
        "cutover-day": ("2022-01-25T10:00:00Z", "04.00", True, False),
        "old-baseline-late": ("2022-01-26T10:00:00Z", "03.01", False, True),
        "agree": ("2022-06-01T10:00:00Z", "04.00", True, True),
    }
    items = [s2_item(tmp_path, k, when, const(2000), SCL_VEG, baseline=b) for k, (when, b, _, _) in cases.items()]
    cfg = SourceConfig("stac", url="http://127.0.0.1:1/", collection="sentinel-2-l2a", offset_rule=rule)
    bands, _, qa = _read_year(tmp_path, items, 2022, cfg)
    by_date = rule == "acquisition-date"
    for t, (key, (_, _, base, date)) in enumerate(cases.items()):
        removed = date if by_date else base
        assert bands[t, 5, 5, 0] == (1000 if removed else 2000), key
        assert (key in qa["baseline_offset_removed"]) is removed, key
    assert qa["source"]["offset_rule"] == (rule or "processing-baseline")


def test_window_day_of_year_across_a_leap_day(tmp_path: Path) -> None:
    """period 10-01 of 2023: 2023-10-01 is day 1, 2024-02-29 day 152, 2024-09-30 day 366."""
    dates = ["2023-09-30T23:00:00Z", "2023-10-01T00:30:00Z", "2024-02-29T10:00:00Z", "2024-09-30T23:59:00Z"]
    items = [s2_item(tmp_path, f"s{i}", d, const(2000), SCL_VEG, baseline="02.14") for i, d in enumerate(dates)]
    _, doys, qa = _read_year(tmp_path, items, 2023, CFG_S2, period="10-01")
    assert doys.tolist() == [1, 152, 366]
    assert qa["window"] == "2023-10-01/2024-09-30" and qa["dates"] == ["2023-10-01", "2024-02-29", "2024-09-30"]
    assert [s["id"] for s in qa["scenes_skipped"]] == ["s0"]
    assert "outside the window 2023-10-01/2024-09-30" in qa["scenes_skipped"][0]["reason"]

    s1 = [
        s1_item(tmp_path, "p", "2024-03-01T06:00:00Z", np.full(SCENE_10M, 0.5), np.full(SCENE_10M, 0.1), "ascending"),
        s1_item(tmp_path, "q", "2023-12-31T06:00:00Z", np.full(SCENE_10M, 0.5), np.full(SCENE_10M, 0.1), "ascending"),
    ]
    write_item_collection(s1, tmp_path / "s1.json")
    cfg = SourceConfig("stac", url="http://127.0.0.1:1/", collection="sentinel-1-rtc")
    out = tmp_path / "s1"
    read_s1(
        cfg, full_roi().mask(GRID), CHUNK, 2023, "ascending", tmp_path / "s1.json", out, policy=FAST, period="10-01"
    )
    assert np.load(out / "sar_ascending_doy.npy").tolist() == [92, 153]
    # the calendar year (default) counts from 1 January, as the reference does
    _, doys, qa = _read_year(tmp_path / "calendar", items[2:3], 2024, CFG_S2)
    assert doys.tolist() == [60] and qa["window"] == "2024-01-01/2024-12-31"
