"""The plan of a run (ROI grid, chunks, per-chunk ROI masks, tiles), made once and looked up by id.

A plan depends on the ROI file's content, the resolution and the chunk size (the tiles also on the
tile size), and is stored content-addressed under ``<results>/plan/<key>/`` (`tessera.results`):

* ``chunks.json``: the ROI grid and every chunk (id, grid, inside pixels);
* ``mask.tif``: the ROI mask on the ROI grid (1 bit per pixel, tiled), read by window;
* ``tiles-<P>.json``: every chunk's tiles at tile size ``P``.

The Snakefile computes the plan in memory when parsing (it shapes the DAG) and loads the stored one
instead when it exists, so a cluster job that re-parses the workflow reads a few kilobytes rather
than re-planning the ROI. The ``plan`` rules write it (a parse, a dry run and a lint write nothing).
Jobs get the plan directory and look their chunk or tile up by id: `StoredPlan`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from tessera.errors import ConfigError
from tessera.grid import Chunk, Grid, Roi, TileSpec, chunk_masks, tiles_of_mask
from tessera.io import atomic_path, write_json_atomic
from tessera.layout import parse_tile_name
from tessera.results import PLAN_CHUNKS, PLAN_MASK, plan_tiles_name
from tessera.stages import STAGE_VERSIONS

__all__ = [
    "PLAN_VERSION",
    "Plan",
    "StoredPlan",
    "compute_plan",
    "parts",
    "plan_key",
    "plan_tiles_file",
    "roi_files",
    "tile_stored_plan",
    "write_plan",
]

logger = logging.getLogger(__name__)

PLAN_VERSION = STAGE_VERSIONS["plan"]
"""The plan's code version (`STAGE_VERSIONS` ``plan``): part of the key, so a bump moves the plan to a
new directory, and every job, whose inputs are the plan files, reruns."""
_PROGRESS_SECONDS = 10.0
_MASK_BLOCK = 512


_SHAPEFILE_SIDECARS = (".shx", ".dbf", ".prj", ".cpg")
"""The files GDAL reads with a ``.shp``: geometry index, attributes, CRS and attribute encoding."""
_RASTER_SUFFIXES = frozenset({".tif", ".tiff", ".vrt", ".img", ".jp2"})
_WORLD_FILES = (".tfw", ".tifw", ".wld")


def roi_files(roi: str | Path) -> list[Path]:
    """The ROI file and the sidecars GDAL reads with it, and no other file.

    A shapefile brings its ``.shx``, ``.dbf``, ``.prj`` and ``.cpg``; a raster its ``<name>.aux.xml``
    (which can carry the CRS or nodata) and a world file; a GeoJSON or GeoPackage is one file. An
    unrelated file beside it with the same stem (``roi.yaml``, ``roi.shp.bak``) is not part of the
    ROI, so editing it leaves the plan key, and every job, alone.
    """
    p = Path(roi)
    suffix = p.suffix.lower()
    candidates = [p]
    if suffix == ".shp":
        candidates += [p.with_suffix(ext) for ext in _SHAPEFILE_SIDECARS]
        candidates += [p.with_suffix(ext.upper()) for ext in _SHAPEFILE_SIDECARS]
    elif suffix in _RASTER_SUFFIXES:
        candidates += [p.with_name(p.name + ".aux.xml")] + [p.with_suffix(ext) for ext in _WORLD_FILES]
    return sorted({q for q in candidates if q.is_file()})


def _role(path: Path, roi: Path) -> str:
    """What ``path`` is to the ROI file ``roi``, independent of the ROI's name: ``main``, ``.aux.xml``, ``.dbf``."""
    if path == roi:
        return "main"
    if path.name.startswith(roi.name):
        return path.name[len(roi.name) :].lower()
    return path.suffix.lower()


def plan_key(roi: str | Path, resolution: float, chunk_size_m: float) -> str:
    """Content address of a chunk plan: a hash of the ROI files' bytes, the resolution and the chunk size.

    Each file is hashed under its role (the ROI itself, or the sidecar's suffix), not its name, so a
    renamed or moved copy of the same ROI has the same key and reruns nothing.
    """
    roi = Path(roi)
    digest = hashlib.sha256(f"v{PLAN_VERSION} res={float(resolution)!r} chunk={float(chunk_size_m)!r}".encode())
    for path in sorted(roi_files(roi), key=lambda q: _role(q, roi)):
        digest.update(f"\0{_role(path, roi)}\0".encode())
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Plan:
    """A run's plan: the ROI grid, its chunks and every chunk's tiles."""

    key: str
    """Content address (`plan_key`)."""
    grid: Grid
    """The ROI grid (the product grid)."""
    chunk_size_m: float
    """Chunk side in metres."""
    chunks: tuple[Chunk, ...]
    """Chunks holding at least one ROI pixel, row-major."""
    inside: dict[str, int]
    """ROI pixels per chunk."""
    tile_size: int
    """Tile side in pixels."""
    tiles: dict[str, tuple[TileSpec, ...]]
    """Tiles holding at least one ROI pixel, per chunk, in reference retiler order."""

    def chunk(self, chunk_id: str) -> Chunk:
        """The chunk with this id; `ConfigError` if the plan has none."""
        for chunk in self.chunks:
            if chunk.id == chunk_id:
                return chunk
        raise ConfigError(f"chunk {chunk_id!r} is not in plan {self.key}; run `tessera plan` to list the chunks")

    @property
    def tile_count(self) -> int:
        """Tiles over all chunks."""
        return sum(len(t) for t in self.tiles.values())

    def chunks_document(self) -> dict[str, Any]:
        """``chunks.json``."""
        return {
            "version": PLAN_VERSION,
            "key": self.key,
            "grid": self.grid.to_dict(),
            "chunk_size_m": self.chunk_size_m,
            "chunks": [{"id": c.id, "grid": c.grid.to_dict(), "inside": self.inside[c.id]} for c in self.chunks],
        }

    def tiles_document(self) -> dict[str, Any]:
        """``tiles-<P>.json``."""
        return {
            "version": PLAN_VERSION,
            "key": self.key,
            "tile_size": self.tile_size,
            "tiles": {cid: [t.name for t in tiles] for cid, tiles in self.tiles.items()},
        }

    @classmethod
    def from_documents(cls, chunks: dict[str, Any], tiles: dict[str, Any]) -> Plan:
        """Inverse of `chunks_document` / `tiles_document`."""
        return cls(
            key=str(chunks["key"]),
            grid=Grid.from_dict(chunks["grid"]),
            chunk_size_m=float(chunks["chunk_size_m"]),
            chunks=tuple(Chunk(c["id"], Grid.from_dict(c["grid"])) for c in chunks["chunks"]),
            inside={c["id"]: int(c["inside"]) for c in chunks["chunks"]},
            tile_size=int(tiles["tile_size"]),
            tiles={cid: tuple(_tile(n) for n in names) for cid, names in tiles["tiles"].items()},
        )


def _tile(name: str) -> TileSpec:
    x0, y0, x1, y1 = parse_tile_name(name)
    return TileSpec(name, x0, y0, x1, y1)


def _chunk_masks_logged(roi: Roi, chunk_size_m: float) -> Iterator[tuple[Chunk, np.ndarray]]:
    start = last = time.monotonic()
    n = 0
    for n, (chunk, mask) in enumerate(chunk_masks(roi, chunk_size_m), 1):
        yield chunk, mask
        if time.monotonic() - last >= _PROGRESS_SECONDS:
            last = time.monotonic()
            logger.info("planning: %d chunks so far (%.0f s)", n, last - start)


def compute_plan(roi: Roi, key: str, chunk_size_m: float, tile_size: int) -> Plan:
    """Plan ``roi``: its chunks (one window of the ROI in memory at a time) and their tiles."""
    chunks, inside, tiles = [], {}, {}
    for chunk, mask in _chunk_masks_logged(roi, chunk_size_m):
        chunks.append(chunk)
        inside[chunk.id] = int(mask.sum(dtype=np.int64))
        tiles[chunk.id] = tuple(tiles_of_mask(mask, tile_size))
    return Plan(key, roi.grid, float(chunk_size_m), tuple(chunks), inside, int(tile_size), tiles)


def write_plan(roi: Roi, key: str, chunk_size_m: float, plan_dir: Path) -> None:
    """Plan ``roi`` and write ``chunks.json`` and ``mask.tif`` (rasterised chunk by chunk) into ``plan_dir``."""
    g = roi.grid
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": g.width,
        "height": g.height,
        "count": 1,
        "dtype": "uint8",
        "crs": g.crs,
        "transform": g.transform,
        "tiled": True,
        "blockxsize": _MASK_BLOCK,
        "blockysize": _MASK_BLOCK,
        "compress": "deflate",
        "nbits": 1,
        "sparse_ok": True,  # blocks outside every chunk are never written and read back as 0
        "bigtiff": "if_safer",
    }
    chunks, inside = [], {}
    with atomic_path(plan_dir / PLAN_MASK) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        # chunk by chunk: one chunk's mask in memory; GDAL's block cache assembles blocks shared by two chunks
        for chunk, mask in _chunk_masks_logged(roi, chunk_size_m):
            col, row = chunk.grid.offset_in(g)
            dst.write(mask, 1, window=Window(col, row, chunk.grid.width, chunk.grid.height))
            chunks.append(chunk)
            inside[chunk.id] = int(mask.sum(dtype=np.int64))
    plan = Plan(key, g, float(chunk_size_m), tuple(chunks), inside, 0, {})
    write_json_atomic(plan_dir / PLAN_CHUNKS, plan.chunks_document())


def tile_stored_plan(plan: StoredPlan, tile_size: int) -> Plan:
    """The stored plan with every chunk's tiles, found from the stored ROI mask (window by window)."""
    tiles = {c.id: tuple(tiles_of_mask(plan.mask(c.grid), tile_size)) for c in plan.chunks}
    return Plan(
        plan.doc["key"], plan.grid, plan.doc["chunk_size_m"], tuple(plan.chunks), plan.doc_inside(), tile_size, tiles
    )


def plan_tiles_file(plan: StoredPlan, tile_size: int, out: Path) -> None:
    """Write ``tiles-<P>.json``: every chunk's tiles, from the stored ROI mask."""
    write_json_atomic(out, tile_stored_plan(plan, tile_size).tiles_document())


def parts(tiles: Sequence[TileSpec], tiles_per_job: int | None) -> list[tuple[TileSpec, ...]]:
    """A chunk's tiles split into inference jobs: one job, or jobs of ``tiles_per_job`` tiles."""
    if tiles_per_job is None:
        return [tuple(tiles)]
    return [tuple(tiles[i : i + tiles_per_job]) for i in range(0, len(tiles), tiles_per_job)]


class StoredPlan:
    """A stored plan, for jobs: chunks and tiles by id, ROI mask windows from ``mask.tif``."""

    def __init__(self, plan_dir: str | Path, tile_size: int | None = None) -> None:
        """Read ``chunks.json`` (and ``tiles-<tile_size>.json`` when given) from ``plan_dir``.

        Raises:
            ConfigError: the plan files are missing or unreadable.
        """
        self.dir = Path(plan_dir)
        self.doc = _read(self.dir / PLAN_CHUNKS)
        self.grid = Grid.from_dict(self.doc["grid"])
        self._chunks = {c["id"]: Chunk(c["id"], Grid.from_dict(c["grid"])) for c in self.doc["chunks"]}
        self.tile_size = tile_size
        self._tiles: dict[str, list[str]] = (
            _read(self.dir / plan_tiles_name(tile_size))["tiles"] if tile_size is not None else {}
        )

    @property
    def chunks(self) -> list[Chunk]:
        """Every chunk, row-major."""
        return list(self._chunks.values())

    def doc_inside(self) -> dict[str, int]:
        """ROI pixels per chunk."""
        return {c["id"]: int(c["inside"]) for c in self.doc["chunks"]}

    def chunk(self, chunk_id: str) -> Chunk:
        """The chunk with this id."""
        try:
            return self._chunks[chunk_id]
        except KeyError:
            raise ConfigError(
                f"chunk {chunk_id!r} is not in the plan {self.dir}; run `tessera plan` to list the chunks"
            ) from None

    def tiles(self, chunk_id: str) -> list[TileSpec]:
        """The chunk's tiles (needs ``tile_size``)."""
        self.chunk(chunk_id)
        if self.tile_size is None:
            raise ValueError("StoredPlan was opened without a tile size")
        return [_tile(name) for name in self._tiles.get(chunk_id, [])]

    def mask(self, grid: Grid) -> np.ndarray:
        """uint8 ROI mask of ``grid`` (a window of the ROI grid), read from ``mask.tif``."""
        col, row = grid.offset_in(self.grid)
        with rasterio.open(self.dir / PLAN_MASK) as src:
            out: np.ndarray = src.read(
                1, window=Window(col, row, grid.width, grid.height), boundless=True, fill_value=0
            )
        return out


def _read(path: Path) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"the plan file {path} is missing or unreadable ({exc}); rerun the workflow (its `plan` rule writes it)"
        ) from exc
    return doc
