"""Seeded reference-layout tiles laid out as the workflow's results directory, for the training tests.

`write_results` cuts a `tests.tilegen` world into ``size`` x ``size`` tiles under
``<root>/<year>/tiles/<chunk>/<x0_y0_x1_y1>/``; `tiny_config` is a training configuration small enough
to run a step in well under a second on one CPU core; `write_label_raster` writes evaluation labels
on the world's grid `WORLD`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from tessera.grid import Grid
from tessera.layout import tile_name
from tessera.train import TrainConfig
from tests.tilegen import cut, make_world, write_tile_dir

__all__ = ["WORLD", "WORLD_ORIGIN", "block_classes", "tiny_config", "write_label_raster", "write_results"]

#: `tests.tilegen`'s default origin of a world.
WORLD_ORIGIN = (30000, -520000)


def write_results(
    root: Path,
    year: int = 2022,
    *,
    seed: int = 3,
    side: int = 48,
    size: int = 24,
    dates: tuple[int, int, int] = (30, 14, 12),
    origin: tuple[int, int] = WORLD_ORIGIN,
) -> Path:
    """A results directory with ``(side / size)**2`` tiles of one seeded world for ``year``; returns ``root``.

    ``dates``: the S2, S1 ascending and S1 descending dates of the world; ``origin``: its top-left
    corner (metres, EPSG:32630).
    """
    t_s2, t_asc, t_desc = dates
    world = make_world(
        seed, side, side, t_s2=t_s2, t_asc=t_asc, t_desc=t_desc, valid_fraction=0.8, empty_fraction=0.05, origin=origin
    )
    for x0 in range(0, side, size):
        for y0 in range(0, side, size):
            tile, grid = cut(world, x0, y0, size)
            write_tile_dir(root / str(year) / "tiles" / "chunk" / tile_name(x0, y0, x0 + size, y0 + size), tile, grid)
    return root


def tiny_config(**overrides: object) -> TrainConfig:
    """The demo architecture with a narrow projector, short sequences and small batches, on one thread."""
    values: dict[str, object] = {
        "arch": "demo",
        "steps": 12,
        "batch_size": 32,
        "projector_dim": 32,
        "projector_layers": 1,
        "min_valid_timesteps": 5,
        "sample_size_s2": 8,
        "sample_size_s1": 8,
        "buffer_pixels": 256,
        "piece_pixels": 48,
        "checkpoint_every": 4,
        "log_every": 2,
        "threads": 1,
        "device": "cpu",
    }
    values.update(overrides)
    return TrainConfig.from_mapping(values)


#: The grid of `tests.traindata.write_results`' world (tests.tilegen's default origin, 48 x 48 pixels).
WORLD = Grid("EPSG:32630", 10.0, *WORLD_ORIGIN, 48, 48)


def write_label_raster(path: Path, classes: np.ndarray, transform: Affine = WORLD.transform) -> Path:
    """Class codes (0 = unlabelled) as band 1 and a regression target (class x 10 + noise) as band 2."""
    target = classes * 10.0 + np.random.default_rng(0).normal(0, 1, classes.shape)
    profile = {"driver": "GTiff", "height": classes.shape[0], "width": classes.shape[1], "count": 2}
    with rasterio.open(path, "w", dtype="float32", crs=WORLD.crs, transform=transform, nodata=0, **profile) as dst:
        dst.write(np.stack((classes, target)).astype(np.float32))
    return path


def block_classes(n_classes: int = 3, block: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(1, n_classes + 1, (WORLD.height // block, WORLD.width // block))
    return np.kron(coarse, np.ones((block, block), int))
