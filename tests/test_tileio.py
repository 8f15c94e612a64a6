"""Reading and validating tile directories, ours and the reference's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from tessera.errors import TileError
from tessera.tileio import read_tile
from tests.tilegen import cut, make_world, write_tile_dir


@pytest.fixture
def tile_dir(tmp_path: Path) -> Path:
    world = make_world(11, 12, 12, t_desc=0)
    tile, grid = cut(world, 2, 4, 8)
    return write_tile_dir(tmp_path / "t", tile, grid)


def test_reads_arrays_and_grid(tile_dir: Path) -> None:
    tile, grid = read_tile(tile_dir)
    assert tile.shape == (8, 8)
    assert tile.bands.dtype == np.dtype("<u2") and tile.bands.shape[1:] == (8, 8, 10)
    assert tile.sar_descending.shape == (0, 8, 8, 2)
    assert (grid.col, grid.row, grid.width, grid.height) == (30002, -519996, 8, 8)
    assert grid.crs == "EPSG:32630"
    assert set(np.unique(tile.roi)) <= {0, 1}


def test_accepts_reference_roi_values_and_doy_dtype(tile_dir: Path) -> None:
    with rasterio.open(tile_dir / "roi.tiff", "r+") as dst:
        dst.write((dst.read(1) * 255).astype(np.uint8), 1)
    np.save(tile_dir / "doys.npy", np.load(tile_dir / "doys.npy").astype(np.int64))
    (tile_dir / "processing_info.txt").write_text("extra files are ignored")
    tile, _ = read_tile(tile_dir)
    assert tile.roi.max() == 1 and tile.doys.dtype == np.dtype("<u2")


@pytest.mark.parametrize("name", ["bands.npy", "sar_ascending_doy.npy", "roi.tiff"])
def test_missing_file(tile_dir: Path, name: str) -> None:
    (tile_dir / name).unlink()
    with pytest.raises(TileError, match=name.replace(".", r"\.")):
        read_tile(tile_dir)


def test_wrong_dtype(tile_dir: Path) -> None:
    np.save(tile_dir / "bands.npy", np.load(tile_dir / "bands.npy").astype(np.float32))
    with pytest.raises(TileError, match="dtype float32"):
        read_tile(tile_dir)


def test_wrong_shape(tile_dir: Path) -> None:
    np.save(tile_dir / "masks.npy", np.load(tile_dir / "masks.npy")[:, :5])
    with pytest.raises(TileError, match=r"roi\.tiff is"):
        read_tile(tile_dir)
    np.save(tile_dir / "masks.npy", np.zeros((3, 8), np.uint8))
    with pytest.raises(TileError, match="2-D"):
        read_tile(tile_dir)


def test_inconsistent_t(tile_dir: Path) -> None:
    np.save(tile_dir / "sar_ascending_doy.npy", np.load(tile_dir / "sar_ascending_doy.npy")[:-1])
    with pytest.raises(TileError, match=r"sar_ascending\.npy has T"):
        read_tile(tile_dir)


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_ungeoreferenced_roi(tile_dir: Path) -> None:
    (tile_dir / "roi.tiff").unlink()
    with rasterio.open(tile_dir / "roi.tiff", "w", driver="GTiff", height=8, width=8, count=1, dtype="uint8") as dst:
        dst.write(np.ones((8, 8), np.uint8), 1)
    with pytest.raises(TileError, match="no CRS"):
        read_tile(tile_dir)


def test_unreadable_roi(tile_dir: Path) -> None:
    (tile_dir / "roi.tiff").write_bytes(b"not a tiff")
    with pytest.raises(TileError, match="not a readable GeoTIFF"):
        read_tile(tile_dir)
