"""Planning at cluster scale: parse-time planning, per-job lookup time and peak memory.

Two ROIs: a 100 x 100 km GeoTIFF mask (10 m, EPSG:32630) and a 50,000 km2 vector polygon (the
default ``max_roi_area_km2``). For each it prints:

* parse-time planning: `tessera.plan.compute_plan` (what the Snakefile does when no stored plan
  exists), its time and peak traced memory;
* writing the plan (the ``plan`` and ``plan_tiles`` rules);
* a job's lookup of its chunk, ROI mask and tiles in the stored plan (`tessera.plan.StoredPlan`),
  time and peak traced memory, and the peak RSS of a fresh process that does only that;
* the baseline in the same run: what every job did before the plan store, re-planning the whole ROI
  (`load_roi` + `plan_chunks` + `plan_tiles`, the raster read whole for every lattice cell), and the
  ratio. Target: lookup <= 0.5 s and <= 200 MB.

    python benchmarks/plan_scale.py [--workdir DIR] [--skip-baseline]
"""

from __future__ import annotations

import argparse
import math
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.features
import rasterio.warp
from affine import Affine
from rasterio.enums import Resampling

from tessera.grid import Grid, Roi, load_roi, tiles_of_mask
from tessera.plan import StoredPlan, compute_plan, plan_tiles_file, write_plan
from tessera.results import plan_tiles_name

CHUNK_M = 20_000
TILE = 500
LIMIT_S, LIMIT_MB = 0.5, 200.0


def _raster_roi(path: Path) -> Path:
    """A 100 x 100 km mask at 10 m (10000 x 10000): a disc with a lake cut out, written in row strips."""
    n = 10_000
    profile = {
        "driver": "GTiff", "height": n, "width": n, "count": 1, "dtype": "uint8", "crs": "EPSG:32630",
        "transform": Affine(10, 0, 400_000, 0, -10, 5_800_000), "tiled": True, "compress": "deflate",
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        for r0 in range(0, n, 1000):
            rows, cols = np.mgrid[r0 : r0 + 1000, 0:n]
            inside = (rows - n / 2) ** 2 + (cols - n / 2) ** 2 < (0.49 * n) ** 2
            inside &= (rows - 3000) ** 2 + (cols - 6000) ** 2 > 800**2
            dst.write(inside.astype(np.uint8), 1, window=rasterio.windows.Window(0, r0, n, 1000))
    return path


def _vector_roi(path: Path) -> Path:
    """A 50,000 km2 polygon: a 720-vertex wobbly disc in UTM 30N."""
    radius = math.sqrt(50_000e6 / math.pi) * 0.995
    angles = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    r = radius * (1 + 0.02 * np.sin(7 * angles))
    xs, ys = 500_000 + r * np.cos(angles), 5_600_000 + r * np.sin(angles)
    lon, lat = rasterio.warp.transform("EPSG:32630", "EPSG:4326", xs.tolist(), ys.tolist())
    ring = [[x, y] for x, y in zip(lon, lat, strict=True)] + [[lon[0], lat[0]]]
    import json

    path.write_text(json.dumps({"type": "Polygon", "coordinates": [ring]}))
    return path


def _measure(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """Result, seconds and peak traced memory (MB) of ``fn()``."""
    tracemalloc.start()
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return out, seconds, peak


def _lookup(plan_dir: Path, chunk_id: str) -> int:
    plan = StoredPlan(plan_dir, TILE)
    chunk = plan.chunk(chunk_id)
    mask = plan.mask(chunk.grid)
    return len(plan.tiles(chunk_id)) + int(mask.any())


# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the parent, VmHWM belongs to the new image
_CHILD = """
import sys
from pathlib import Path
def hwm():
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM"))
    return int(line.split()[1]) / 1024
from tessera.plan import StoredPlan
base = hwm()
plan = StoredPlan(sys.argv[1], int(sys.argv[3]))
chunk = plan.chunk(sys.argv[2])
plan.mask(chunk.grid); plan.tiles(sys.argv[2])
print(base, hwm())
"""


def _child_rss(plan_dir: Path, chunk_id: str) -> tuple[float, float]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(plan_dir), chunk_id, str(TILE)], capture_output=True, text=True, check=True
    ).stdout.split()
    return float(out[0]), float(out[1])


def _old_mask(roi: Roi, grid: Grid) -> np.ndarray:
    """The ROI mask as every job computed it before the plan store: the whole raster read per call."""
    if roi.kind == "vector":  # the whole polygon rasterised, unclipped
        burned: np.ndarray = rasterio.features.rasterize(
            [(g, 1) for g in roi.geometries], out_shape=grid.shape, transform=grid.transform, fill=0, dtype="uint8"
        )
        return burned
    out = np.zeros(grid.shape, np.uint8)
    with rasterio.open(roi.path) as src:
        rasterio.warp.reproject(
            (src.read(1) > 0).astype(np.uint8), out, src_transform=src.transform, src_crs=src.crs,
            dst_transform=grid.transform, dst_crs=grid.crs, src_nodata=0, dst_nodata=0,
            resampling=Resampling.nearest,
        )  # fmt: skip
    return out


def _old_job(path: Path, chunk_id: str) -> int:
    """A job's lookup before: load the ROI, plan every chunk, then the tiles of its own."""
    roi = load_roi(path, 10.0, 60_000)
    g, step = roi.grid, CHUNK_M // 10
    found = None
    for cy in range(math.floor(g.row / step), math.ceil((g.row + g.height) / step)):
        for cx in range(math.floor(g.col / step), math.ceil((g.col + g.width) / step)):
            col0, col1 = max(cx * step, g.col), min((cx + 1) * step, g.col + g.width)
            row0, row1 = max(cy * step, g.row), min((cy + 1) * step, g.row + g.height)
            grid = Grid(g.crs, 10.0, col0, row0, col1 - col0, row1 - row0)
            mask = _old_mask(roi, grid)
            cid = f"{CHUNK_M}m_E{cx * step * 10}_N{-cy * step * 10}"
            if mask.any() and cid == chunk_id:
                found = mask
    assert found is not None
    return len(tiles_of_mask(found, TILE))


def _report(name: str, roi_path: Path, work: Path, baseline: bool) -> bool:
    print(f"\n== {name}: {roi_path.name}")
    roi, t_load, m_load = _measure(lambda: load_roi(roi_path, 10.0, 60_000))
    plan, t_plan, m_plan = _measure(lambda: compute_plan(roi, "k", CHUNK_M, TILE))
    print(f"ROI {roi.grid.width} x {roi.grid.height} px; {len(plan.chunks)} chunks, {plan.tile_count} tiles")
    print(f"parse-time planning: load_roi {t_load:.2f} s ({m_load:.0f} MB), plan {t_plan:.2f} s ({m_plan:.0f} MB)")
    plan_dir = work / name
    _, t_write, m_write = _measure(lambda: write_plan(roi, "k", CHUNK_M, plan_dir))
    _, t_tiles, _ = _measure(lambda: plan_tiles_file(StoredPlan(plan_dir), TILE, plan_dir / plan_tiles_name(TILE)))
    print(f"plan rules: write_plan {t_write:.2f} s ({m_write:.0f} MB), plan_tiles {t_tiles:.2f} s")
    chunk_id = plan.chunks[len(plan.chunks) // 2].id
    _, t_look, m_look = _measure(lambda: _lookup(plan_dir, chunk_id))
    base_rss, rss = _child_rss(plan_dir, chunk_id)
    print(
        f"per-job lookup: {t_look * 1000:.0f} ms, {m_look:.1f} MB traced; fresh process peak RSS {rss:.0f} MB "
        f"({rss - base_rss:.0f} MB above its imports)"
    )
    ok = t_look <= LIMIT_S and rss <= LIMIT_MB
    if baseline:
        _, t_old, m_old = _measure(lambda: _old_job(roi_path, chunk_id))
        print(f"baseline (re-plan the ROI in every job): {t_old:.2f} s, {m_old:.0f} MB traced")
        print(f"ratio baseline / lookup: {t_old / t_look:.0f}x time, {m_old / max(m_look, 0.01):.0f}x memory")
    print(f"target <= {LIMIT_S} s and <= {LIMIT_MB:.0f} MB: {'met' if ok else 'NOT MET'}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the ROIs and plans")
    parser.add_argument("--skip-baseline", action="store_true", help="skip the (slow) re-planning baseline")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="plan-scale-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        raster, vector = _raster_roi(work / "roi_100km.tif"), _vector_roi(work / "roi_50000km2.geojson")
        print(f"ROIs written in {time.perf_counter() - t0:.1f} s; peak RSS so far", end=" ")
        print(f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
        ok = _report("raster-100km", raster, work, not args.skip_baseline)
        ok = _report("vector-50000km2", vector, work, not args.skip_baseline) and ok
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
