"""Reference tile layout: names, dtypes, shapes, zero padding and roi.tiff georeferencing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from tessera.errors import GridMismatchError, TileError
from tessera.grid import Chunk, Grid, Roi, plan_tiles
from tessera.layout import ROI_FILE, TILE_FILES
from tessera.tileio import ChunkStacks
from tessera.tiles import validate_tile_dir, write_tile

GRID = Grid("EPSG:32631", 10.0, 30000, -500000, 13, 11)
CHUNK = Chunk("c", GRID)
P = 8


def roi_all() -> Roi:
    x0, y0, x1, y1 = GRID.bounds
    poly = {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}
    return Roi(Path("r.geojson"), "vector", GRID, (poly,))


def stacks(tmp: Path, t_s2: int = 3, t_a: int = 2, t_d: int = 0) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(7)
    h, w = GRID.shape
    s2, a, d = tmp / "s2", tmp / "s1-ascending", tmp / "s1-descending"
    for p in (s2, a, d):
        p.mkdir()
    np.save(s2 / "bands.npy", rng.integers(1, 9000, (t_s2, h, w, 10)).astype("<u2"))
    np.save(s2 / "masks.npy", rng.integers(0, 2, (t_s2, h, w)).astype("|u1"))
    np.save(s2 / "doys.npy", np.arange(1, t_s2 + 1).astype("<u2"))
    np.save(a / "sar_ascending.npy", rng.integers(1, 9000, (t_a, h, w, 2)).astype("<i2"))
    np.save(a / "sar_ascending_doy.npy", np.arange(5, 5 + t_a).astype("<i2"))
    np.save(d / "sar_descending.npy", np.zeros((t_d, h, w, 2), "<i2"))
    np.save(d / "sar_descending_doy.npy", np.zeros((t_d,), "<i2"))
    return s2, a, d


def test_tiles_match_reference_layout(tmp_path: Path) -> None:
    s2, a, _ = stacks(tmp_path)
    roi = roi_all()
    tiles = plan_tiles(roi, CHUNK, P)
    assert [t.name for t in tiles] == ["0_0_8_8", "8_0_13_8", "0_8_8_11", "8_8_13_11"]
    bands = np.load(s2 / "bands.npy")
    sar = np.load(a / "sar_ascending.npy")
    for tile in tiles:
        out = tmp_path / "tiles" / tile.name
        write_tile(ChunkStacks(tmp_path, GRID), CHUNK, tile, P, roi.mask(GRID), out)
        shapes = validate_tile_dir(out)
        assert sorted(p.name for p in out.iterdir()) == sorted([f.name for f in TILE_FILES] + [ROI_FILE])
        assert shapes["bands.npy"] == (3, P, P, 10) and shapes["sar_descending.npy"] == (0, P, P, 2)
        for spec in TILE_FILES:
            assert np.load(out / spec.name).dtype == spec.dtype
        h, w = tile.y1 - tile.y0, tile.x1 - tile.x0
        tb = np.load(out / "bands.npy")
        assert np.array_equal(tb[:, :h, :w], bands[:, tile.y0 : tile.y1, tile.x0 : tile.x1])
        assert not tb[:, h:].any() and not tb[:, :, w:].any()
        ts = np.load(out / "sar_ascending.npy")
        assert np.array_equal(ts[:, :h, :w], sar[:, tile.y0 : tile.y1, tile.x0 : tile.x1]) and not ts[:, h:].any()
        assert np.load(out / "sar_ascending_doy.npy").tolist() == [5, 6]
        with rasterio.open(out / ROI_FILE) as src:
            assert (src.width, src.height, src.dtypes[0]) == (P, P, "uint8")
            assert src.crs.to_string() == "EPSG:32631" and src.compression.name.lower() == "lzw"
            x0, y0 = GRID.bounds[0], GRID.bounds[3]
            assert src.transform == Affine(10, 0, x0 + 10 * tile.x0, 0, -10, y0 - 10 * tile.y0)
            m = src.read(1)
        assert m[:h, :w].all() and not m[h:].any() and not m[:, w:].any()


def test_tile_rejects_stack_of_other_grid(tmp_path: Path) -> None:
    s2, _, _ = stacks(tmp_path)
    np.save(s2 / "masks.npy", np.zeros((3, 5, 5), "|u1"))
    tile = plan_tiles(roi_all(), CHUNK, P)[0]
    with pytest.raises(GridMismatchError):
        write_tile(ChunkStacks(tmp_path, GRID), CHUNK, tile, P, roi_all().mask(GRID), tmp_path / "t")
    assert not (tmp_path / "t").exists()


def test_tile_missing_stack(tmp_path: Path) -> None:
    _, _, d = stacks(tmp_path)
    (d / "sar_descending.npy").unlink()
    tile = plan_tiles(roi_all(), CHUNK, P)[0]
    with pytest.raises(TileError, match="read step"):
        write_tile(ChunkStacks(tmp_path, GRID), CHUNK, tile, P, roi_all().mask(GRID), tmp_path / "t")


def test_validate_rejects_extra_file(tmp_path: Path) -> None:
    stacks(tmp_path)
    tile = plan_tiles(roi_all(), CHUNK, P)[0]
    write_tile(ChunkStacks(tmp_path, GRID), CHUNK, tile, P, roi_all().mask(GRID), tmp_path / "t")
    (tmp_path / "t" / "band_mean.npy").write_bytes(b"")
    with pytest.raises(TileError, match="exactly"):
        validate_tile_dir(tmp_path / "t")
