"""Read a chunk's scenes with odc-stac onto the chunk grid and stream them, date by date, into the
stacked ``.npy`` arrays of the reference layout (reference-spec sections 1.3 to 1.6).

Memory is bounded by one date: the number of dates T is known from the ItemCollection, so each
output's ``.npy`` header for (T, H, W, C) is written first and every date's block is appended as
it is finished (T is the outer axis, so a date is one contiguous block). Nothing grows with T.

Day of year counts from the first day of the year's window (`tessera.period`): the calendar
ordinal by default, day 1 = the ``period`` month-day otherwise. A scene dated outside the window
is skipped and recorded (the search already leaves such scenes out).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Executor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import IO, Any

import numpy as np
import pystac
import rasterio.errors

from tessera import s1, s2
from tessera.config import SourceConfig
from tessera.errors import DataSourceError, GridMismatchError
from tessera.grid import Chunk, Grid
from tessera.io import atomic_path, write_json_atomic
from tessera.layout import S1_BANDS, S2_BANDS
from tessera.period import Window, window
from tessera.results import QA_FILE, VALID_COUNT_FILE
from tessera.sources import DataSource, resolve_source
from tessera.transport import (
    MissingAssetError,
    RetryPolicy,
    RetryStats,
    call_with_retries,
    gdal_env,
    install_redaction,
)

__all__ = ["NpyStream", "group_by_date", "item_time", "load_item", "load_item_with_retries", "read_s1", "read_s2"]

log = logging.getLogger(__name__)


class NpyStream:
    """Write a ``.npy`` file of known shape block by block along its first axis."""

    def __init__(self, fh: IO[bytes], shape: tuple[int, ...], dtype: np.dtype[Any] | str) -> None:
        """Write the header for ``shape``/``dtype`` to ``fh``; `append` the ``shape[0]`` blocks next."""
        self._fh, self.shape, self.dtype = fh, tuple(shape), np.dtype(dtype)
        self._written = 0
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
        np.lib.format.write_array_header_1_0(fh, header)

    def append(self, block: np.ndarray) -> None:
        """Append one (H, W[, C]) block."""
        if block.shape != self.shape[1:] or block.dtype != self.dtype:
            raise ValueError(f"block {block.shape} {block.dtype} does not fit {self.shape} {self.dtype}")
        if self._written >= self.shape[0]:
            raise ValueError(f"all {self.shape[0]} blocks already written")
        self._fh.write(np.ascontiguousarray(block).tobytes())
        self._written += 1

    def check_complete(self) -> None:
        """Raise ``ValueError`` unless every block was appended."""
        if self._written != self.shape[0]:
            raise ValueError(f"{self._written} of {self.shape[0]} blocks written")


@contextlib.contextmanager
def _npy_streams(specs: Mapping[Path, tuple[tuple[int, ...], str]]) -> Iterator[dict[Path, NpyStream]]:
    """Open one atomic `NpyStream` per path; all are renamed into place only if every one is complete."""
    with contextlib.ExitStack() as stack:
        streams = {}
        for path, (shape, dtype) in specs.items():
            tmp = stack.enter_context(atomic_path(path, suffix=".npy"))
            fh = stack.enter_context(open(tmp, "wb"))
            streams[path] = NpyStream(fh, shape, dtype)
        yield streams
        for stream in streams.values():
            stream.check_complete()


@dataclass
class ReadQa:
    """What one read step did (written to qa.json)."""

    product: str
    chunk: str
    year: int
    source: dict[str, Any]
    scenes_found: int = 0
    scenes_used: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    dates: list[str] = field(default_factory=list)
    window: str = ""
    valid_pixels: dict[str, int] = field(default_factory=dict)
    offset_removed: list[str] = field(default_factory=list)
    stats: RetryStats = field(default_factory=RetryStats)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "product": self.product,
            "chunk": self.chunk,
            "year": self.year,
            "source": self.source,
            "scenes_found": self.scenes_found,
            "scenes_used": len(self.scenes_used),
            "scenes_used_ids": self.scenes_used,
            "scenes_skipped": self.skipped,
            "dates": self.dates,
            "window": self.window,
            "valid_pixels_per_date": self.valid_pixels,
            "baseline_offset_removed": self.offset_removed,
            "retries": self.stats.retries,
            "failed_tries": self.stats.failures,
        }


def item_time(item: pystac.Item) -> dt.datetime:
    """The item's acquisition time in UTC (``datetime``, else ``start_datetime``)."""
    when = item.datetime or pystac.utils.str_to_datetime(str(item.properties.get("start_datetime")))
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC)


def _order(item: pystac.Item) -> tuple[dt.datetime, str]:
    return item_time(item), item.id


def _read_items(path: Path) -> list[pystac.Item]:
    try:
        collection = pystac.ItemCollection.from_file(str(path))
    except (OSError, ValueError, KeyError) as exc:
        raise DataSourceError(f"{path} is not a readable ItemCollection ({exc}); re-run the search step") from None
    return sorted(collection.items, key=_order)


def _in_window(items: Sequence[pystac.Item], span: Window, qa: ReadQa) -> list[pystac.Item]:
    """The items acquired (UTC date) inside ``span``; the others are recorded as skipped."""
    kept = []
    for item in items:
        day = item_time(item).date()
        if span.contains(day):
            kept.append(item)
        else:
            qa.skipped.append({"id": item.id, "reason": f"acquired {day}, outside the window {span.label}"})
    return kept


def group_by_date(items: Sequence[pystac.Item]) -> list[tuple[str, list[pystac.Item]]]:
    """Items grouped by UTC date (``datetime[:10]``), dates ascending, items by (datetime, id) within a date."""
    ordered = sorted(items, key=_order)
    return [(d, list(g)) for d, g in groupby(ordered, key=lambda it: item_time(it).date().isoformat())]


def _geobox(grid: Grid) -> Any:
    from odc.geo.geobox import GeoBox

    return GeoBox((grid.height, grid.width), grid.transform, grid.crs)


#: Assets read at once (the reads are I/O bound; each is a separate file).
_READ_THREADS = 4


def _read_pool() -> ThreadPoolExecutor:
    """The asset-read threads of one read step (created once, not per scene)."""
    return ThreadPoolExecutor(max_workers=_READ_THREADS, thread_name_prefix="read")


def load_item(
    item: pystac.Item,
    asset_keys: Sequence[str],
    grid: Grid,
    resampling: Mapping[str, str],
    patch_url: Callable[[str], str] | None,
) -> np.ndarray:
    """One item's assets on ``grid`` as float32 (len(asset_keys), H, W); NaN where the scene has no data."""
    import odc.stac

    ds = odc.stac.load(
        [item],
        bands=list(asset_keys),
        geobox=_geobox(grid),
        resampling=dict(resampling),
        dtype="float32",
        patch_url=patch_url,
        fail_on_error=True,
        chunks=None,
        groupby="id",
    )
    out = np.stack([ds[k].values[0] for k in asset_keys])
    if out.shape[1:] != grid.shape:
        raise GridMismatchError(f"odc-stac returned {out.shape[1:]} for grid {grid.shape}; this is a bug")
    return out


def load_item_with_retries(
    item: pystac.Item,
    asset_keys: Sequence[str],
    grid: Grid,
    resampling: Mapping[str, str],
    source: DataSource,
    stats: RetryStats,
    pool: Executor,
    policy: RetryPolicy | None = None,
) -> np.ndarray:
    """`load_item`, one asset per task on ``pool``, each asset retried on its own (`call_with_retries`).

    GDAL options are thread-local, so every task enters `gdal_env` itself. The first asset that
    fails for good cancels the ones not started and its error is raised once the running ones end.

    Raises:
        MissingAssetError: an asset is missing (skip the scene); TransportError: a read failed for good.
    """
    patch = source.href_patcher()
    options = source.gdal_options()

    def read_asset(key: str) -> np.ndarray:
        def attempt() -> np.ndarray:
            with gdal_env(options, policy):
                try:
                    band: np.ndarray = load_item(item, [key], grid, resampling, patch)[0]
                    return band
                except AssertionError as exc:
                    # odc-geo asserts that the opened file has a CRS; a header cut short in transfer
                    # can lose its GeoKeys, so this is retried like any other failed transfer
                    raise rasterio.errors.RasterioIOError(f"{key} opened without georeferencing ({exc!r})") from None

        return call_with_retries(attempt, f"scene {item.id} asset {key}", stats, policy)

    futures = [pool.submit(read_asset, key) for key in asset_keys]
    try:
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in futures:
            error = future.exception() if future in done else None
            if error is not None:
                raise error
        return np.stack([f.result() for f in futures])
    finally:
        # the pool outlives this scene: leave none of its reads queued or running
        for future in futures:
            future.cancel()
        wait(futures)


def _read_scene(
    item: pystac.Item,
    source: DataSource,
    keys: Sequence[str],
    grid: Grid,
    resampling: Mapping[str, str],
    qa: ReadQa,
    pool: Executor,
    policy: RetryPolicy | None,
) -> np.ndarray | None:
    """Read one scene with retries; None (recorded in ``qa``) if it lacks an asset or an asset is missing."""
    absent = [k for k in keys if k not in item.assets]
    if absent:
        qa.skipped.append({"id": item.id, "reason": f"no asset {', '.join(absent)} in the item"})
        return None
    try:
        data = load_item_with_retries(item, keys, grid, resampling, source, qa.stats, pool, policy)
    except MissingAssetError as exc:
        qa.skipped.append({"id": item.id, "reason": str(exc)})
        log.warning("skipping scene %s: %s", item.id, exc)
        return None
    qa.scenes_used.append(item.id)
    return data


def read_s2(
    source_cfg: SourceConfig,
    roi_mask: np.ndarray,
    chunk: Chunk,
    year: int,
    items: Path,
    out_dir: Path,
    policy: RetryPolicy | None = None,
    period: str | None = None,
) -> None:
    """Read a chunk's Sentinel-2 items into ``out_dir``/{bands,masks,doys}.npy and ``qa.json``.

    ``roi_mask`` is the chunk's ROI mask (`tessera.plan.StoredPlan.mask`): pixels outside are 0.
    ``period`` is the first month-day of the year's window (None: the calendar year). The +1000
    offset is removed per item by the source's ``offset_rule`` (`tessera.s2.offset_applies`).

    Raises:
        DataSourceError: the ItemCollection is unreadable; TransportError: a read failed after retries;
        PeriodError: ``period`` is not a month-day.
    """
    install_redaction()
    source = resolve_source(source_cfg, "s2")
    span = window(year, period)
    scl_key = source.asset("SCL")
    keys = [source.asset(b) for b in S2_BANDS] + [scl_key]
    resampling = {scl_key: "nearest", "*": "bilinear"}
    found = _read_items(items)
    qa = ReadQa("s2", chunk.id, year, source.describe(), scenes_found=len(found), window=span.label)
    dates = group_by_date(_in_window(found, span, qa))
    qa.dates = [d for d, _ in dates]
    h, w = chunk.grid.shape
    t = len(dates)
    log.info("S2 chunk %s %d: %d scenes on %d dates", chunk.id, year, len(found), t)
    bands_p, masks_p, doys_p = out_dir / "bands.npy", out_dir / "masks.npy", out_dir / "doys.npy"
    specs = {bands_p: ((t, h, w, len(S2_BANDS)), "<u2"), masks_p: ((t, h, w), "|u1")}
    counts = np.zeros((h, w), np.uint16)
    with _read_pool() as pool, _npy_streams(specs) as streams:
        for i, (date, group) in enumerate(dates, 1):
            merger = s2.DateMerger(h, w, len(S2_BANDS))
            for item in group:
                data = _read_scene(item, source, keys, chunk.grid, resampling, qa, pool, policy)
                if data is None:
                    continue
                spectral = data[:-1]
                acquired = item_time(item).date()
                if s2.offset_applies(source.offset_rule, item.properties, source.harmonised, acquired, source.provider):
                    spectral = s2.apply_baseline_offset(spectral)
                    qa.offset_removed.append(item.id)
                merger.add(spectral, data[-1])
            block, mask = merger.result(roi_mask)
            streams[bands_p].append(block)
            streams[masks_p].append(mask)
            counts += mask
            qa.valid_pixels[date] = int(mask.sum(dtype=np.int64))
            log.info(
                "S2 %s: date %d/%d %s, %d scenes, %d valid pixels",
                chunk.id,
                i,
                t,
                date,
                len(group),
                qa.valid_pixels[date],
            )
        doys = np.array([span.day_of_year(d) for d, _ in dates], dtype="<u2")
        _save_small(doys_p, doys)
    _save_small(out_dir / VALID_COUNT_FILE, counts)
    write_json_atomic(out_dir / QA_FILE, qa.to_dict())


def _save_small(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


def read_s1(
    source_cfg: SourceConfig,
    roi_mask: np.ndarray,
    chunk: Chunk,
    year: int,
    orbit: str,
    items: Path,
    out_dir: Path,
    policy: RetryPolicy | None = None,
    period: str | None = None,
) -> None:
    """Read a chunk's Sentinel-1 items of one orbit into ``out_dir``/sar_<orbit>{,_doy}.npy and ``qa.json``.

    ``roi_mask`` is the chunk's ROI mask: pixels outside are 0. ``period`` as for `read_s2`.

    Raises:
        DataSourceError: the ItemCollection is unreadable; TransportError: a read failed after retries;
        PeriodError: ``period`` is not a month-day.
    """
    install_redaction()
    source = resolve_source(source_cfg, "s1")
    span = window(year, period)
    keys = [source.asset(b) for b in S1_BANDS]
    resampling = {"*": source.resampling}
    found = _read_items(items)
    qa = ReadQa(f"s1-{orbit}", chunk.id, year, source.describe(), scenes_found=len(found), window=span.label)
    kept = []
    for item in _in_window(found, span, qa):
        state = str(item.properties.get("sat:orbit_state", "")).lower()
        if state == orbit:
            kept.append(item)
        else:
            qa.skipped.append({"id": item.id, "reason": f"orbit {state or 'unknown'!r} is not {orbit!r}"})
    dates = group_by_date(kept)
    qa.dates = [d for d, _ in dates]
    h, w = chunk.grid.shape
    roi_inside = roi_mask.astype(bool)
    t = len(dates)
    log.info("S1 %s chunk %s %d: %d scenes on %d dates", orbit, chunk.id, year, len(kept), t)
    sar_p, doy_p = out_dir / f"sar_{orbit}.npy", out_dir / f"sar_{orbit}_doy.npy"
    counts = np.zeros((h, w), np.uint16)
    with _read_pool() as pool, _npy_streams({sar_p: ((t, h, w, 2), "<i2")}) as streams:
        for i, (date, group) in enumerate(dates, 1):
            acc: np.ndarray | None = None
            for item in group:
                data = _read_scene(item, source, keys, chunk.grid, resampling, qa, pool, policy)
                if data is not None:
                    acc = s1.merge_first_nonzero(acc, s1.encode_db(data))
            block = np.zeros((2, h, w), np.int16) if acc is None else acc
            block[:, ~roi_inside] = 0
            streams[sar_p].append(np.ascontiguousarray(np.moveaxis(block, 0, -1)))
            valid = np.any(block != 0, axis=0)
            counts += valid
            qa.valid_pixels[date] = int(valid.sum(dtype=np.int64))
            log.info(
                "S1 %s %s: date %d/%d %s, %d scenes, %d valid pixels",
                orbit,
                chunk.id,
                i,
                t,
                date,
                len(group),
                qa.valid_pixels[date],
            )
        _save_small(doy_p, np.array([span.day_of_year(d) for d, _ in dates], dtype="<i2"))
    _save_small(out_dir / VALID_COUNT_FILE, counts)
    write_json_atomic(out_dir / QA_FILE, qa.to_dict())
