"""The geotessera export read back by geotessera 0.7.5 itself, with the network blocked.

Tolerance. An int8 product is exported code for code and scale for scale, so geotessera's
``code * scale`` equals the product's own dequantised value bit for bit: the tolerance is 0. A
float32 product is quantised on export with its family's rule, which rounds ``x / scale`` to the
nearest integer code, so each value may move by at most half a step: ``|x - code * scale| <=
scale / 2`` (plus float32 rounding of the product, ``4 * eps * |x|``); that bound is what the float32
test checks. Pixels without an embedding read as 0 (code 0, scale 0), the reference's encoding.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import geotessera  # noqa: F401  (a pinned test dependency: missing, it fails these tests, not skips them)
import numpy as np
import pandas as pd
import pytest
import rasterio
import rasterio.warp
import yaml
from affine import Affine

from tessera.errors import ExportConflictError, GridMismatchError, ProductsMissingError, UnsupportedProductError
from tessera.export import geotessera as export_module
from tessera.export.cells import Cell, cell_of, cells_touching, tile_grid
from tessera.export.geotessera import (
    EMBEDDINGS_DIR,
    LANDMASKS_DIR,
    METADATA_FILE,
    REGISTRY,
    export_geotessera,
    export_geotessera_years,
)
from tessera.grid import load_roi
from tessera.io import HOST
from tests.offline import block_network, child_env
from tests.productgen import RES, SyntheticProduct, write_config, write_product

BIN = Path(sys.executable).parent
YEAR = 2022
NAMES = ["grid_-0.05_52.15", "grid_0.05_52.15", "grid_-0.05_52.25", "grid_0.05_52.25"]


@pytest.fixture
def offline() -> Iterator[list[str]]:
    """Every non-loopback connect or lookup fails and is recorded in the yielded list."""
    blocked: list[str] = []
    undo = block_network(blocked.append)
    try:
        yield blocked
    finally:
        undo()


def test_network_guard_blocks_and_records(offline: list[str], tmp_path: Path) -> None:
    import socket

    with pytest.raises(Exception, match=r"blocked|192\.0\.2\.1"):
        socket.create_connection(("192.0.2.1", 80), timeout=1)
    with pytest.raises(OSError):
        socket.getaddrinfo("example.org", 443)
    assert len(offline) == 2
    log = tmp_path / "blocked.log"
    code = (
        "import socket\ntry:\n    socket.create_connection(('192.0.2.1', 80), timeout=1)\nexcept Exception:\n    pass\n"
    )
    subprocess.run([sys.executable, "-c", code], env=child_env(tmp_path / "site", log), check=True)
    assert "192.0.2.1" in log.read_text()


def test_cell_names_and_keys_match_geotessera() -> None:
    from geotessera.registry import coord_to_grid_int, tile_from_world, tile_to_grid_name

    rng = np.random.default_rng(5)
    points = [(0.17, 52.23), (-0.12, -0.03), (0.1, 52.2), (-180.0, -90.0), (179.99, 89.99)]
    points += [
        (float(x), float(y)) for x, y in zip(rng.uniform(-180, 180, 200), rng.uniform(-90, 90, 200), strict=True)
    ]
    for lon, lat in points:
        cell = cell_of(lon, lat)
        glon, glat = tile_from_world(lon, lat)
        assert (cell.lon, cell.lat) == (glon, glat), (lon, lat)
        assert cell.name == tile_to_grid_name(glon, glat)
        assert (cell.lon_i, cell.lat_i) == (coord_to_grid_int(glon), coord_to_grid_int(glat))


def test_cells_touched_and_tile_grids(tmp_path: Path) -> None:
    product = write_product(tmp_path)
    roi = load_roi(product.roi, RES)
    cells = cells_touching(roi)
    assert [c.name for c in cells] == NAMES
    for cell in cells:
        grid = tile_grid(cell, roi.grid.crs, RES)
        # the cell's envelope on the product's lattice: ~6.8 km x 11.1 km at 52 N, plus the grid rotation
        assert grid.crs == roi.grid.crs and grid.resolution == RES
        assert 68 <= grid.width <= 76 and 111 <= grid.height <= 116
        w, s, e, n = rasterio.warp.transform_bounds(grid.crs, "EPSG:4326", *grid.bounds)
        cw, cs, ce, cn = cell.bounds
        assert w <= cw and s <= cs and e >= ce and n >= cn
    assert Cell(15, 5215) not in cells  # grid_0.15_52.15: east of the ROI


def _points(
    product: SyntheticProduct, n: int, seed: int = 1
) -> tuple[list[tuple[float, float]], np.ndarray, np.ndarray]:
    """``n`` random points inside ROI pixels, a quarter of them in holes (ROI pixels without an embedding)
    if the product has any: ``(lon, lat)`` list and their product rows and columns."""
    rng = np.random.default_rng(seed)
    rows, cols = np.nonzero(product.inside)
    pick = rng.choice(len(rows), size=n, replace=True)
    r, c = rows[pick], cols[pick]
    hole_rows, hole_cols = np.nonzero(product.inside & ~product.valid)
    if len(hole_rows):
        holes = rng.choice(len(hole_rows), size=n // 4, replace=True)
        r[: n // 4], c[: n // 4] = hole_rows[holes], hole_cols[holes]
    with rasterio.open(product.cog) as src:
        xs, ys = src.transform @ (c + rng.uniform(0.02, 0.98, n), r + rng.uniform(0.02, 0.98, n))
        lon, lat = rasterio.warp.transform(src.crs, "EPSG:4326", xs, ys)
    return list(zip(lon, lat, strict=True)), r, c


def _client(out: Path, tmp: Path) -> object:
    from geotessera import GeoTessera

    return GeoTessera(embeddings_dir=out, registry_dir=out, cache_dir=tmp / "gt-cache")


def _check_round_trip(
    product: SyntheticProduct,
    out: Path,
    tmp: Path,
    atol: np.ndarray | None = None,
    mosaic: bool = True,
    year: int = YEAR,
) -> None:
    """geotessera's points and (with ``mosaic``) mosaic of ``year`` equal the product's values (``atol`` per
    pixel; 0 by default)."""
    gt = _client(out, tmp)
    points, r, c = _points(product, 300)
    got = gt.sample_embeddings_at_points(points, year=year, auto_download=False)  # type: ignore[attr-defined]
    want = product.values[r, c]
    ok = product.valid[r, c]
    assert ok.sum() >= 100
    assert (~ok).any() == (product.inside & ~product.valid).any()  # holes are sampled where there are any
    tol = 0.0 if atol is None else atol[r, c][ok, None]
    assert np.all(np.abs(got[ok] - want[ok]) <= tol), np.abs(got[ok] - want[ok]).max()
    assert np.array_equal(got[~ok], np.zeros_like(got[~ok]))  # nodata reads as the reference's 0
    if not mosaic:
        return

    with rasterio.open(product.cog) as src:
        crs, transform, (h, w) = src.crs, src.transform, src.shape
        west, south, east, north = rasterio.warp.transform_bounds(crs, "EPSG:4326", *src.bounds)
    # in the product's CRS the mosaic is a copy; in EPSG:4326 geotessera would resample embeddings
    # bilinearly and the comparison would test GDAL's interpolation rather than the export
    mosaic, mtransform, mcrs = gt.fetch_mosaic_for_region(  # type: ignore[attr-defined]
        (west, south, east, north), year=year, target_crs=crs.to_string(), auto_download=False
    )
    assert mcrs == crs.to_string() and (mtransform.a, mtransform.e) == (transform.a, transform.e)
    dc, dr = (transform.c - mtransform.c) / transform.a, (mtransform.f - transform.f) / transform.a
    assert dc == int(dc) and dr == int(dr), "mosaic off the product's pixel lattice"
    window = mosaic[int(dr) : int(dr) + h, int(dc) : int(dc) + w]
    inside = product.inside
    tol2 = 0.0 if atol is None else atol[product.valid][:, None]
    assert np.all(np.abs(window[product.valid] - product.values[product.valid]) <= tol2)
    assert not window[inside & ~product.valid].any()


def test_int8_round_trip_is_exact(tmp_path: Path, offline: list[str]) -> None:
    product = write_product(tmp_path)
    out = tmp_path / "results" / str(YEAR) / "geotessera"
    summary = export_geotessera(load_roi(product.roi, RES), product.cog, YEAR, out)
    assert list(summary.tiles) == NAMES
    _check_round_trip(product, out, tmp_path)
    assert offline == [], offline

    # landmask = ROI, on each tile's own grid, and the arrays have the landmask's shape
    roi = load_roi(product.roi, RES)
    for name in NAMES:
        with rasterio.open(out / LANDMASKS_DIR / f"{name}.tiff") as src:
            land = src.read(1)
            codes = np.load(out / EMBEDDINGS_DIR / str(YEAR) / name / f"{name}.npy")
            scales = np.load(out / EMBEDDINGS_DIR / str(YEAR) / name / f"{name}_scales.npy")
            assert codes.shape == (*land.shape, 128) and codes.dtype == np.int8
            assert scales.shape == land.shape and scales.dtype == np.float32
            assert land.sum() > 0 and set(np.unique(land)) <= {0, 1}
            assert not codes[land == 0].any() and not scales[land == 0].any()
            assert f"EPSG:{src.crs.to_epsg()}" == roi.grid.crs
    meta = json.loads((out / METADATA_FILE).read_text())
    assert meta["tiles"] == NAMES and meta["year"] == YEAR and meta["generator"] == "tessera-pipeline"
    # a product without window or policy tags was made from the calendar year under `strict`
    assert meta["window"] == "2022-01-01/2022-12-31" and meta["nodata_policy"] == "strict"


def test_float32_product_within_half_a_step(tmp_path: Path, offline: list[str]) -> None:
    tags = {"TESSERA_WINDOW": "2022-10-01/2023-09-30", "TESSERA_NODATA_POLICY": "reference"}
    product = write_product(tmp_path, output="float32", tags=tags)
    out = tmp_path / "export"
    export_geotessera(load_roi(product.roi, RES), product.cog, YEAR, out)
    meta = json.loads((out / METADATA_FILE).read_text())
    assert (meta["window"], meta["nodata_policy"]) == ("2022-10-01/2023-09-30", "reference")
    absmax = np.nan_to_num(np.abs(product.values)).max(axis=-1)
    half_step = absmax / 127 / 2
    _check_round_trip(product, out, tmp_path, atol=half_step + 4 * np.finfo(np.float32).eps * absmax)
    assert offline == []


def _tool(tmp_path: Path) -> Callable[..., str]:
    """A runner of geotessera's console scripts with the network guard on (blocked connects logged)."""
    env = child_env(tmp_path / "site", tmp_path / "blocked.log")

    def run(*argv: str) -> str:
        res = subprocess.run([str(BIN / argv[0]), *argv[1:]], env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stdout + res.stderr
        return res.stdout + res.stderr

    return run


def _info_and_coverage(out: Path, tmp_path: Path, names: Sequence[str], bbox: str) -> None:
    """``geotessera info`` and ``geotessera coverage`` list exactly the export's tiles of `YEAR`, offline."""
    run = _tool(tmp_path)
    info = run("geotessera", "info", "--tiles", str(out))
    assert f"Total tiles: {len(names)}" in " ".join(info.split()) and "NPY" in info and str(YEAR) in info
    cov = tmp_path / "coverage"
    cov.mkdir()
    run(
        "geotessera", "coverage", "--registry-dir", str(out), "--cache-dir", str(tmp_path / "cache"),
        "--year", str(YEAR), f"--bbox={bbox}", "--no-countries", "-o", str(cov / "coverage.png"),
    )  # fmt: skip
    listed = json.loads((cov / f"coverage_{YEAR}.json").read_text())
    assert sorted(listed) == sorted(n.removeprefix("grid_").replace("_", ",") for n in names)
    assert (cov / "coverage.png").stat().st_size > 0
    log = tmp_path / "blocked.log"
    assert not log.exists() or log.read_text() == ""


@pytest.mark.slow
def test_geotessera_tools_read_the_export(tmp_path: Path) -> None:
    """geotessera's CLI (info, coverage) and its registry tool (check, scan) accept the export."""
    product = write_product(tmp_path)
    out = tmp_path / "export"
    export_geotessera(load_roi(product.roi, RES), product.cog, YEAR, out)
    _info_and_coverage(out, tmp_path, NAMES, "-0.2,52.1,0.2,52.3")
    run = _tool(tmp_path)
    log = tmp_path / "blocked.log"
    check = run("geotessera-registry", "check", str(out), "--verify-hashes")
    assert "All hashes verified" in check
    # geotessera's own scanner, run on a copy, rebuilds exactly our registries from our SHA256 files
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, copy_function=shutil.copy2)
    for name in ("registry.parquet", "landmasks.parquet"):
        (copy / name).unlink()
    run("geotessera-registry", "scan", str(copy))
    for name in ("registry.parquet", "landmasks.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(out / name), pd.read_parquet(copy / name))
    assert not log.exists() or log.read_text() == ""


def test_export_errors(tmp_path: Path) -> None:
    product = write_product(tmp_path)
    roi = load_roi(product.roi, RES)
    with pytest.raises(ProductsMissingError, match="geotessera") as missing:
        export_geotessera(roi, tmp_path / "nowhere" / "tessera_2022.tif", YEAR, tmp_path / "x")
    assert isinstance(missing.value, FileNotFoundError)
    with pytest.raises(UnsupportedProductError, match="2022, not 2023"):
        export_geotessera(roi, product.cog, 2023, tmp_path / "x")
    small = write_product(tmp_path / "small", dims=64)
    with pytest.raises(UnsupportedProductError, match="64 dimensions"):
        export_geotessera(roi, small.cog, YEAR, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_export_directory_conflicts(tmp_path: Path) -> None:
    product = write_product(tmp_path)
    roi = load_roi(product.roi, RES)
    out = tmp_path / "export"
    export_geotessera(roi, product.cog, YEAR, out)
    first = {p: p.read_bytes() for p in sorted(out.rglob("*.npy"))}
    export_geotessera(roi, product.cog, YEAR, out)  # a re-export of the same tiles replaces them
    assert {p: p.read_bytes() for p in sorted(out.rglob("*.npy"))} == first
    # and so does one of the `geotessera` target's directory, which holds Snakemake's stamp
    (out / ".snakemake_timestamp").touch()
    export_geotessera(roi, product.cog, YEAR, out)
    assert {p: p.read_bytes() for p in sorted(out.rglob("*.npy"))} == first

    # a registry without our metadata (a geotessera download, say) is not ours to replace
    foreign = tmp_path / "foreign"
    shutil.copytree(out, foreign)
    (foreign / METADATA_FILE).unlink()
    with pytest.raises(ExportConflictError, match=r"registry that is not a tessera-pipeline export \(4 tile") as err:
        export_geotessera(roi, product.cog, YEAR, foreign)
    assert isinstance(err.value, FileExistsError)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    with pytest.raises(ExportConflictError, match="not a tessera-pipeline geotessera export"):
        export_geotessera(roi, product.cog, YEAR, notes)
    assert sorted(p.name for p in notes.iterdir()) == ["todo.txt"]

    # the export replaces its directory as a whole: a user's file in a previous export stops it
    (out / LANDMASKS_DIR / "my_notes.txt").write_text("mine")
    with pytest.raises(
        ExportConflictError, match=f"1 file\\(s\\) that no export writes \\(e.g. {LANDMASKS_DIR}/my_notes.txt"
    ):
        export_geotessera(roi, product.cog, YEAR, out)
    assert (out / LANDMASKS_DIR / "my_notes.txt").read_text() == "mine"
    assert {p: p.read_bytes() for p in sorted(out.rglob("*.npy"))} == first
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    with pytest.raises(ExportConflictError, match="is a file, not a directory"):
        export_geotessera(roi, product.cog, YEAR, a_file)
    assert a_file.read_text() == "mine"


def _export_state(out: Path) -> tuple[dict[str, bytes], pd.DataFrame, pd.DataFrame]:
    """The bytes of every file by relative path, but the registries' rows without ``mtime`` (the write time)."""
    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    registries = [files.pop(REGISTRY), files.pop("landmasks.parquet")]
    assert not [name for name in files if name.endswith(".parquet") or ".tmp-" in name]
    registry, landmasks = (pd.read_parquet(out / name) for name in (REGISTRY, "landmasks.parquet"))
    assert all(registries) and registry["mtime"].notna().all()
    return files, registry.drop(columns=["mtime"]), landmasks


def _assert_same_export(out: Path, ref: Path) -> None:
    """``out`` holds the same files as ``ref``, byte for byte, and the same registry rows."""
    files, registry, landmasks = _export_state(out)
    ref_files, ref_registry, ref_landmasks = _export_state(ref)
    assert sorted(files) == sorted(ref_files)
    assert files == ref_files  # tiles, scales, SHA256 files, landmasks and metadata
    pd.testing.assert_frame_equal(registry, ref_registry)
    pd.testing.assert_frame_equal(landmasks, ref_landmasks)


def _siblings(out: Path) -> list[str]:
    """Names in the directory that holds ``out``."""
    return sorted(p.name for p in out.parent.iterdir())


def test_interrupted_export_is_rerun_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run killed after writing its tiles, or failing before its registry, leaves nothing at ``out`` that
    looks like an export; the same command then writes exactly what an uninterrupted run writes."""
    product = write_product(tmp_path)
    roi = load_roi(product.roi, RES)
    ref = tmp_path / "ref" / "export"
    export_geotessera(roi, product.cog, YEAR, ref)
    out = tmp_path / "run" / "export"

    # 1. the process is killed (SIGKILL: no cleanup runs) once every tile is written, before the registries
    kill = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "import tessera.export.geotessera as g\n"
        "from tessera.grid import load_roi\n"
        "g._write_geoparquet = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\n"
        "roi, cog, out = sys.argv[1:4]\n"
        f"g.export_geotessera(load_roi(roi, {RES}), Path(cog), {YEAR}, Path(out))\n"
    )
    argv = [sys.executable, "-c", kill, str(product.roi), str(product.cog), str(out)]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert res.returncode == -signal.SIGKILL, res.stdout + res.stderr
    assert not out.exists()  # nothing where the export goes...
    (stale,) = (out.parent / name for name in _siblings(out))
    assert stale.name.startswith(".tmp-export.new.")  # ...its tiles are in the killed run's staging directory
    assert len(list(stale.rglob("*.npy"))) == 2 * len(NAMES) and not (stale / REGISTRY).exists()
    # staging directories of runs that may still go on are left alone
    alive = out.parent / f".tmp-export.new.{HOST}.{os.getppid()}.0123abcd"
    elsewhere = out.parent / ".tmp-export.new.another-host.12345.0123abcd"
    for d in (alive, elsewhere):
        d.mkdir()

    summary = export_geotessera(roi, product.cog, YEAR, out)  # the same command again
    assert list(summary.tiles) == NAMES
    assert _siblings(out) == sorted(["export", alive.name, elsewhere.name])  # the killed run's staging is gone
    _assert_same_export(out, ref)

    # 2. a re-export fails (here: its registry cannot be written) after writing everything else
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    write_geoparquet = export_module._write_geoparquet

    def no_registry(path: Path, records: list[dict[str, object]], order: list[str]) -> None:
        if path.name == REGISTRY:
            assert (path.parent / METADATA_FILE).is_file() and len(list(path.parent.rglob("*.npy"))) == 8
            raise OSError(28, "No space left on device")
        write_geoparquet(path, records, order)

    monkeypatch.setattr(export_module, "_write_geoparquet", no_registry)
    with pytest.raises(OSError, match="No space left"):
        export_geotessera(roi, product.cog, YEAR, out)
    # the previous export is untouched, byte for byte, and the failed run's staging is gone
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before
    assert _siblings(out) == sorted(["export", alive.name, elsewhere.name])
    monkeypatch.undo()
    export_geotessera(roi, product.cog, YEAR, out)
    _assert_same_export(out, ref)
    assert _siblings(out) == sorted(["export", alive.name, elsewhere.name])


def _moved_product(product: SyntheticProduct, root: Path, crs: str, transform: Affine) -> SyntheticProduct:
    """A copy of ``product`` (of any year) and its ROI, pixel for pixel, with another CRS and transform."""
    cog = root / "results" / product.cog.parent.parent.name / "products" / product.cog.name
    cog.parent.mkdir(parents=True)
    scales = product.cog.with_name(f"{product.cog.stem}_scales.tif")
    pairs = [(product.roi, root / "roi.tif"), (product.cog, cog)]
    pairs += [(scales, cog.with_name(scales.name))] if scales.exists() else []
    for src_path, dst_path in pairs:
        with rasterio.open(src_path) as src:
            profile = {**src.profile, "crs": crs, "transform": transform}
            with rasterio.open(dst_path, "w", **profile) as dst:
                dst.write(src.read())
                dst.update_tags(**src.tags())
    return dataclasses.replace(product, roi=root / "roi.tif", cog=cog)


def test_product_grid_must_be_projected_in_metres(
    tmp_path: Path, offline: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Products on a geographic CRS or off their pixel lattice are refused; any projected grid in metres
    (what the pipeline makes from a projected ROI) exports, and geotessera reads it back exactly."""
    product = write_product(tmp_path / "utm")
    roi = load_roi(product.roi, RES)
    degrees = _moved_product(product, tmp_path / "degrees", "EPSG:4326", Affine(0.001, 0, 0.0, 0, -0.001, 52.21))
    with pytest.raises(UnsupportedProductError, match=r"EPSG:4326 \(geographic, in degrees\)") as err:
        export_geotessera(roi, degrees.cog, YEAR, tmp_path / "x")
    message = str(err.value)
    assert "projected CRS in metres" in message and "UTM at 10 m" in message and "resolution" in message
    assert "snakemake --configfile <config>" in message
    shifted = Affine(RES, 0, 293_050.0, 0, -RES, 5_788_000.0)
    off_lattice = _moved_product(product, tmp_path / "shifted", "EPSG:32631", shifted)
    with pytest.raises(UnsupportedProductError, match="not aligned to multiples of 100"):
        export_geotessera(roi, off_lattice.cog, YEAR, tmp_path / "x")
    assert not (tmp_path / "x").exists()

    # British National Grid, 100 m: not UTM and not 10 m, yet a product this pipeline makes from a BNG ROI
    bng = _moved_product(product, tmp_path / "bng", "EPSG:27700", Affine(RES, 0, 534_700.0, 0, -RES, 258_000.0))
    out = tmp_path / "bng-export"
    with caplog.at_level(logging.WARNING, logger="tessera.export.geotessera"):
        summary = export_geotessera(load_roi(bng.roi, RES), bng.cog, YEAR, out)
    assert "published tiles are UTM at 10 m" in caplog.text
    assert summary.tiles
    with rasterio.open(out / LANDMASKS_DIR / f"{summary.tiles[0]}.tiff") as src:
        assert src.crs.to_epsg() == 27700 and src.res == (RES, RES)
    _check_round_trip(bng, out, tmp_path)
    assert offline == []


def test_roi_across_the_antimeridian(tmp_path: Path, offline: list[str]) -> None:
    """An ROI on both sides of 180 degrees (UTM zone 60, Fiji) touches cells at 179.95 and -179.95,
    and geotessera reads every point of it back (its mosaic refuses a bounding box across 180 degrees)."""
    from pyproj import Transformer

    from tests.productgen import HEIGHT, WIDTH

    x, y = Transformer.from_crs("EPSG:4326", "EPSG:32660", always_xy=True).transform(180.0, -16.5)
    x0, y0 = round((x - WIDTH * RES / 2) / RES) * RES, round((y + HEIGHT * RES / 2) / RES) * RES
    product = write_product(tmp_path / "base")
    moved = _moved_product(product, tmp_path / "fiji", "EPSG:32660", Affine(RES, 0, x0, 0, -RES, y0))
    out = tmp_path / "export"
    summary = export_geotessera(load_roi(moved.roi, RES), moved.cog, YEAR, out)
    lons = {name.split("_")[1] for name in summary.tiles}
    assert {"179.95", "-179.95"} <= lons, summary.tiles
    _check_round_trip(moved, out, tmp_path, mosaic=False)
    assert offline == []


def _two_years(root: Path) -> dict[int, SyntheticProduct]:
    """Products of 2022 and 2023 with other values on the same ROI (``root/roi.tif``) and results directory."""
    return {year: write_product(root, year=year, seed=year - YEAR) for year in (YEAR, YEAR + 1)}


def _cogs(products: dict[int, SyntheticProduct]) -> dict[int, Path]:
    return {year: product.cog for year, product in products.items()}


def _registry_rows(out: Path) -> list[tuple[int, str]]:
    registry = pd.read_parquet(out / REGISTRY)
    return [
        (int(y), f"grid_{lon:.2f}_{lat:.2f}")
        for y, lon, lat in zip(registry.year, registry.lon, registry.lat, strict=True)
    ]


def _tile_of(product: SyntheticProduct, transform: Affine, shape: tuple[int, ...]) -> np.ndarray:
    """What a tile of ``shape`` (H, W, D) at ``transform`` holds of ``product``: its values, 0 elsewhere."""
    with rasterio.open(product.cog) as src:
        at = src.transform
    dc, dr = round((at.c - transform.c) / RES), round((transform.f - at.f) / RES)
    h, w = product.values.shape[:2]
    rows, cols = slice(max(dr, 0), min(dr + h, shape[0])), slice(max(dc, 0), min(dc + w, shape[1]))
    assert rows.start < rows.stop and cols.start < cols.stop, "the tile misses the product"
    tile = np.zeros(shape, np.float32)
    tile[rows, cols] = np.nan_to_num(product.values[rows.start - dr : rows.stop - dr, cols.start - dc : cols.stop - dc])
    return tile


def test_two_year_store_read_by_geotessera(tmp_path: Path, offline: list[str]) -> None:
    """One store of 2022 and 2023: one registry row per (year, tile), landmasks once, and geotessera's
    tiles and points of each year are that year's product exactly."""
    products = _two_years(tmp_path)
    out = tmp_path / "store"
    summary = export_geotessera_years(load_roi(products[YEAR].roi, RES), dict(reversed(_cogs(products).items())), out)
    assert summary.years == (2022, 2023) and list(summary.tiles) == NAMES
    assert sorted(_registry_rows(out)) == sorted((y, n) for y in (2022, 2023) for n in NAMES)
    assert len(pd.read_parquet(out / "landmasks.parquet")) == len(NAMES)
    assert sorted(p.name for p in (out / LANDMASKS_DIR).iterdir()) == sorted(
        [*(f"{n}.tiff" for n in NAMES), "SHA256SUM"]
    )
    meta = json.loads((out / METADATA_FILE).read_text())
    assert meta["years"] == [2022, 2023] and meta["tiles"] == NAMES and "year" not in meta and "window" not in meta
    assert {y: m["window"] for y, m in meta["products"].items()} == {
        "2022": "2022-01-01/2022-12-31",
        "2023": "2023-01-01/2023-12-31",
    }
    assert meta["products"]["2023"]["source_product"].endswith("2023/products/tessera_2023.tif")

    gt = _client(out, tmp_path)
    for name in NAMES:
        lon, lat = (float(v) for v in name.removeprefix("grid_").split("_"))
        tiles = []
        for year, product in products.items():
            got, _, transform = gt.fetch_embedding(lon, lat, year=year)  # type: ignore[attr-defined]
            assert np.array_equal(got, _tile_of(product, transform, got.shape)), (name, year)
            tiles.append(got)
        assert not np.array_equal(*tiles)
    _check_round_trip(products[2023], out, tmp_path, mosaic=False, year=2023)
    assert offline == [], offline


def test_adding_a_year_replaces_our_export(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Exporting 2022 and 2023 into our export of 2022 (one written before stores held several years,
    whose metadata has ``year`` only) replaces it; exporting 2022 alone again drops 2023, with a warning."""
    products = _two_years(tmp_path)
    roi = load_roi(products[YEAR].roi, RES)
    out = tmp_path / "store"
    export_geotessera(roi, products[YEAR].cog, YEAR, out)
    meta = json.loads((out / METADATA_FILE).read_text())
    assert meta["years"] == [YEAR] and meta["year"] == YEAR and meta["products"][str(YEAR)]["window"] == meta["window"]
    old_form = {k: v for k, v in meta.items() if k not in ("years", "products")}
    (out / METADATA_FILE).write_text(json.dumps(old_form))
    first = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*.npy"))}

    export_geotessera_years(roi, _cogs(products), out)
    assert sorted(_registry_rows(out)) == sorted((y, n) for y in (2022, 2023) for n in NAMES)
    assert {p: (out / p).read_bytes() for p in first} == first
    assert json.loads((out / METADATA_FILE).read_text())["years"] == [2022, 2023]
    assert not [n for n in _siblings(out) if n.startswith(".tmp-")]

    with caplog.at_level(logging.WARNING, logger="tessera.export.geotessera"):
        export_geotessera(roi, products[YEAR].cog, YEAR, out)
    assert "holds 2023 too" in caplog.text
    assert sorted(_registry_rows(out)) == sorted((YEAR, n) for n in NAMES)
    assert not (out / EMBEDDINGS_DIR / "2023").exists()


def test_store_refuses_what_is_not_our_export(tmp_path: Path) -> None:
    """Adding a year never replaces a foreign registry, our export with a file of its own, or our export
    of other tiles; each stays as it was."""
    products = _two_years(tmp_path)
    roi = load_roi(products[YEAR].roi, RES)
    cogs = _cogs(products)
    foreign = tmp_path / "foreign"
    export_geotessera(roi, products[YEAR].cog, YEAR, foreign)
    (foreign / METADATA_FILE).unlink()
    with pytest.raises(ExportConflictError, match=r"not a tessera-pipeline export \(4 tile\(s\) of 2022, e\.g\."):
        export_geotessera_years(roi, cogs, foreign)

    mine = tmp_path / "mine"
    export_geotessera(roi, products[YEAR].cog, YEAR, mine)
    (mine / EMBEDDINGS_DIR / "notes.txt").write_text("mine")
    with pytest.raises(ExportConflictError, match=f"no export writes \\(e.g. {EMBEDDINGS_DIR}/notes.txt"):
        export_geotessera_years(roi, cogs, mine)

    east = Affine(RES, 0, 313_000.0, 0, -RES, 5_788_000.0)  # 20 km east: other tiles
    moved = _moved_product(products[YEAR], tmp_path / "east", "EPSG:32631", east)
    others = tmp_path / "others"
    export_geotessera(load_roi(moved.roi, RES), moved.cog, YEAR, others)
    with pytest.raises(ExportConflictError, match=r"a tessera-pipeline export of other tiles \(\d tile\(s\) of 2022"):
        export_geotessera_years(roi, cogs, others)
    for d in (foreign, mine, others):
        assert sorted(y for y, _ in _registry_rows(d)) == [YEAR] * len(_registry_rows(d))
    assert (mine / EMBEDDINGS_DIR / "notes.txt").read_text() == "mine"


def test_years_on_different_grids_are_refused(tmp_path: Path) -> None:
    """A store's years share its tiles and landmasks: a 2023 product one pixel east of 2022's is refused."""
    products = _two_years(tmp_path)
    shifted = Affine(RES, 0, 293_100.0, 0, -RES, 5_788_000.0)
    moved = _moved_product(products[2023], tmp_path / "shifted", "EPSG:32631", shifted)
    out = tmp_path / "store"
    with pytest.raises(GridMismatchError, match="products of 2022, 2023 lie on different grids") as err:
        export_geotessera_years(load_roi(products[YEAR].roi, RES), {YEAR: products[YEAR].cog, 2023: moved.cog}, out)
    assert isinstance(err.value, ValueError) and "rerun the workflow of 2023" in str(err.value)
    assert not out.exists()


def _two_year_config(root: Path, product: SyntheticProduct) -> Path:
    config = write_config(root, product)
    cfg = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**cfg, "years": [YEAR, YEAR + 1]}))
    return config


def _cli_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one-line error of a ``tessera`` command that must exit with status 2."""
    from tessera.cli import main

    capsys.readouterr()
    assert main(argv) == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_cli_exports_several_years_from_a_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--config`` with ``--year`` twice and ``--out`` writes one store; without ``--out``, or with
    ``--plan``, several years are refused."""
    from tessera.cli import main

    products = _two_years(tmp_path)
    config, out = _two_year_config(tmp_path, products[YEAR]), tmp_path / "store"
    argv = ["export", "geotessera", "--config", str(config), "--year", "2023", "--year", "2022"]
    assert "ConfigError: a store of several years" in _cli_error(argv, capsys)
    assert main([*argv, "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith("4 tile(s) of 2022, 2023, ")
    assert sorted(_registry_rows(out)) == sorted((y, n) for y in (2022, 2023) for n in NAMES)
    plan = ["export", "geotessera", "--plan", str(tmp_path / "plan"), "--year", "2022", "--year", "2023"]
    message = _cli_error([*plan, "--cog", str(products[YEAR].cog), "--out", str(tmp_path / "x")], capsys)
    assert "ConfigError: with --plan, pass one --year" in message


def test_cli_refuses_cog_with_several_years(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    products = _two_years(tmp_path)
    config, out = _two_year_config(tmp_path, products[YEAR]), tmp_path / "store"
    argv = ["export", "geotessera", "--config", str(config), "--year", "2022", "--year", "2023"]
    message = _cli_error([*argv, "--cog", str(products[YEAR].cog), "--out", str(out)], capsys)
    assert "ConfigError: --cog names one year's product" in message and "drop --cog" in message
    assert not out.exists()


def check_run_export(results: Path, roi_path: Path, out: Path, tmp: Path) -> SyntheticProduct:
    """geotessera reads the export ``out`` of a workflow run's 2022 product (int8) exactly as the product.

    Returns:
        The product's values, as `_check_round_trip` compared them.
    """
    from tests.e2e import read_embeddings

    codes, scales, _ = read_embeddings(results)
    roi = load_roi(roi_path, 10.0)
    valid = np.isfinite(scales)
    values = np.where(valid[..., None], np.moveaxis(codes, 0, -1).astype(np.float32) * scales[..., None], np.nan)
    product = SyntheticProduct(
        roi=roi_path,
        cog=results / "2022" / "products" / "tessera_2022.tif",
        inside=roi.mask(roi.grid) != 0,
        valid=valid,
        values=values.astype(np.float32),
        codes=None,
        scales=None,
    )
    _check_round_trip(product, out, tmp)
    return product


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.parametrize("policy", ["reference", "strict"])
def test_demo_run_export_round_trip(
    policy: str, request: pytest.FixtureRequest, tmp_path: Path, offline: list[str]
) -> None:
    """The real workflow's 2022 product of the e2e ROI, exported by `snakemake geotessera`, read by geotessera.

    Under ``strict`` the demo world's fallback patch is nodata: holes that must read as 0.
    """
    from tests.e2e import copy_run, job_counts, run_snakemake

    source: Path = request.getfixturevalue("base_run" if policy == "reference" else "strict_run")
    run = copy_run(source, tmp_path / "run")
    # a flag before the target: the helper's command line ends in --resources, which takes several values
    plan = run_snakemake(run / "config.yaml", "-n", "geotessera")
    assert job_counts(plan.stdout) == {"export_geotessera": 1, "geotessera": 1}  # the products exist
    run_snakemake(run / "config.yaml", "-p", "geotessera")
    out = run / "results" / "2022" / "geotessera"
    product = check_run_export(source / "results", source / "roi.tif", out, tmp_path)
    assert (product.inside & ~product.valid).sum() == (144 if policy == "strict" else 0)  # the patch (tests/e2e.py)
    assert offline == [], offline
    meta = json.loads((out / METADATA_FILE).read_text())
    assert meta["nodata_policy"] == policy and meta["window"] == "2022-01-01/2022-12-31"
    roi = load_roi(source / "roi.tif", 10.0)
    west, south, east, north = rasterio.warp.transform_bounds(roi.grid.crs, "EPSG:4326", *roi.grid.bounds)
    bbox = f"{west - 0.05:.3f},{south - 0.05:.3f},{east + 0.05:.3f},{north + 0.05:.3f}"
    _info_and_coverage(out, tmp_path, meta["tiles"], bbox)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"export: {len(meta['tiles'])} tiles, {size / 1e6:.1f} MB, {size / 1e6 / len(meta['tiles']):.1f} MB per tile")


@pytest.mark.slow
def test_snakemake_target_plans_one_export_per_year(tmp_path: Path) -> None:
    from tests.test_workflow import job_counts, run_config, snakemake

    config = run_config(tmp_path, years=[2022, 2023])
    res = snakemake("geotessera", "-n", "--quiet", "rules", "--configfile", str(config), cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    counts = job_counts(res.stdout)
    assert counts["export_geotessera"] == 2 and counts["stitch"] == 2 and counts["geotessera"] == 1
    default = job_counts(snakemake("-n", "--quiet", "rules", "--configfile", str(config), cwd=tmp_path).stdout)
    assert "export_geotessera" not in default  # not part of `all`: tiles are large
