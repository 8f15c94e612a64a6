"""Peak memory of ``read_s2`` must not grow with the number of dates.

Builds a synthetic 1000 x 1000-pixel chunk whose scenes are real local COGs (10 m and 20 m bands,
SCL) referenced by Planetary-Computer-shaped items with file:// hrefs, runs ``read_s2`` on 20 and
on 80 dates, each in a fresh child process, and prints the peak RSS of each and their ratio.

    python benchmarks/stack_memory.py [--workdir DIR]

Exits 1 if peak(80) / peak(20) > 1.3.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import rasterio
import rasterio.warp
from affine import Affine

from tessera.config import SourceConfig
from tessera.grid import Chunk, Grid
from tessera.layout import S2_BANDS
from tessera.read import read_s2
from tessera.search import write_item_collection

CRS = "EPSG:32630"
GRID = Grid(CRS, 10.0, 40000, -560000, 1000, 1000)
TEN_M = {"B02", "B03", "B04", "B08"}
#: Distinct scenes written to disk; dates cycle through them (distinct items, distinct ids and days).
SCENES = 10
LIMIT = 1.3


def _write_cog(path: Path, data: np.ndarray, res: float) -> None:
    x0, _, _, y1 = GRID.bounds
    profile = {
        "driver": "COG", "height": data.shape[0], "width": data.shape[1], "count": 1, "dtype": data.dtype.name,
        "crs": CRS, "transform": Affine(res, 0, x0, 0, -res, y1), "nodata": 0, "compress": "deflate",
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)


def _make_scene(folder: Path, seed: int) -> dict[str, tuple[str, float, tuple[int, int]]]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    hrefs = {}
    for band in (*S2_BANDS, "SCL"):
        res = 10.0 if band in TEN_M else 20.0
        n = int(GRID.width * 10 / res)
        if band == "SCL":
            data = rng.choice(np.array([4, 5, 8, 9], np.uint8), size=(n // 50, n // 50)).repeat(50, 0).repeat(50, 1)
        else:
            data = (rng.integers(500, 3000, size=(n // 10, n // 10)).repeat(10, 0).repeat(10, 1)).astype(np.uint16)
        _write_cog(folder / f"{band}.tif", data, res)
        hrefs[band] = ((folder / f"{band}.tif").resolve().as_uri(), res, (n, n))
    return hrefs


def _item(i: int, hrefs: dict[str, tuple[str, float, tuple[int, int]]]) -> pystac.Item:
    x0, y0, x1, y1 = GRID.bounds
    w, s, e, n = rasterio.warp.transform_bounds(CRS, "EPSG:4326", x0, y0, x1, y1)
    geom = {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}
    when = dt.datetime(2023, 1, 1, 10, 30, tzinfo=dt.UTC) + dt.timedelta(days=4 * i)
    props = {"proj:epsg": 32630, "s2:processing_baseline": "05.09" if i % 2 else "04.00"}
    item = pystac.Item(f"S2_SYNTH_{i:03d}", geom, [w, s, e, n], when, props)
    for band, (href, res, shape) in hrefs.items():
        extra = {"proj:shape": list(shape), "proj:transform": [res, 0, x0, 0, -res, y1]}
        item.add_asset(band, pystac.Asset(href, media_type="image/tiff; application=geotiff", extra_fields=extra))
    return item


def _child(items: str, out_dir: str, queue: Any) -> None:
    source = SourceConfig("stac", url="http://127.0.0.1:1", collection="sentinel-2-l2a")
    t0 = time.perf_counter()
    read_s2(source, np.ones(GRID.shape, np.uint8), Chunk("bench", GRID), 2023, Path(items), Path(out_dir))
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put({"peak_mib": peak_kib / 1024, "seconds": time.perf_counter() - t0})


def _run(items: Path, out_dir: Path) -> dict[str, float]:
    ctx = mp.get_context("spawn")  # fresh interpreter: no memory inherited from the parent
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(str(items), str(out_dir), queue))
    proc.start()
    result: dict[str, float] = queue.get()
    proc.join()
    if proc.exitcode != 0:
        raise SystemExit(f"read_s2 child failed with exit code {proc.exitcode}")
    return result


def main(argv: list[str] | None = None) -> int:
    """Build the synthetic chunk, measure both runs, print the figures; 1 if the ratio exceeds the limit."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the COGs (default: a temp dir)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tessera-bench-") as default:
        work = args.workdir or Path(default)
        t0 = time.perf_counter()
        scenes = [_make_scene(work / f"scene{s}", seed=s) for s in range(SCENES)]
        print(f"wrote {SCENES} scenes of {len(S2_BANDS) + 1} COGs in {time.perf_counter() - t0:.1f} s")
        results = {}
        for dates in (20, 80):
            coll = work / f"items-{dates}.json"
            write_item_collection([_item(i, scenes[i % SCENES]) for i in range(dates)], coll)
            results[dates] = _run(coll, work / f"out-{dates}")
            shape = np.load(work / f"out-{dates}" / "bands.npy", mmap_mode="r").shape
            print(f"{dates} dates: peak RSS {results[dates]['peak_mib']:.0f} MiB, "
                  f"{results[dates]['seconds']:.1f} s, bands.npy {shape}")  # fmt: skip
        ratio = results[80]["peak_mib"] / results[20]["peak_mib"]
        print(json.dumps({"peak_mib_20": round(results[20]["peak_mib"], 1),
                          "peak_mib_80": round(results[80]["peak_mib"], 1), "ratio": round(ratio, 3)}))  # fmt: skip
        print(f"ratio {ratio:.3f} {'<=' if ratio <= LIMIT else '>'} {LIMIT}")
        return 0 if ratio <= LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
