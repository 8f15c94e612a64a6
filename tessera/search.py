"""STAC search of one product for one chunk and year, written as an unsigned ItemCollection.

The year's window (`tessera.period`: the calendar year, or 12 months from ``period``) sets the
search's datetime interval; items whose UTC date lies outside it are dropped on the client too.

No cloud filter and no coverage threshold: which dates a pixel gets must depend only on that
pixel, never on the chunk it was processed in (reference-spec section 8.1).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pystac
import rasterio.warp

from tessera.config import SourceConfig
from tessera.errors import ConfigError, DataSourceError
from tessera.grid import Chunk
from tessera.io import write_json_atomic
from tessera.layout import PRODUCTS
from tessera.period import Window, window
from tessera.sources import DataSource, resolve_source
from tessera.transport import RetryPolicy, install_redaction, redact, stac_api_io

__all__ = [
    "ORBIT_PROPERTY",
    "run_search",
    "search_parameters",
    "select_items",
    "strip_signatures",
    "write_item_collection",
]

log = logging.getLogger(__name__)

#: Item property holding the S1 orbit direction.
ORBIT_PROPERTY = "sat:orbit_state"
#: Items per page requested from the API.
PAGE_SIZE = 250


def _product_kind(product: str) -> tuple[str, str | None]:
    if product not in PRODUCTS:
        raise ConfigError(f"product {product!r} is unknown; use one of {list(PRODUCTS)}")
    if product == "s2":
        return "s2", None
    return "s1", product.split("-", 1)[1]


def chunk_bbox(chunk: Chunk) -> tuple[float, float, float, float]:
    """The chunk's grid bounds in EPSG:4326 (edges densified, so the box holds the whole chunk)."""
    west, south, east, north = rasterio.warp.transform_bounds(
        chunk.grid.crs, "EPSG:4326", *chunk.grid.bounds, densify_pts=21
    )
    return float(west), float(south), float(east), float(north)


def search_parameters(
    source: DataSource, chunk: Chunk, year: int, orbit: str | None, period: str | None = None
) -> dict[str, Any]:
    """Keyword arguments of ``pystac_client.Client.search`` for one chunk, year (window) and orbit."""
    params: dict[str, Any] = {
        "collections": [source.collection],
        "bbox": list(chunk_bbox(chunk)),
        "datetime": window(year, period).datetime_range(),
        "limit": PAGE_SIZE,
    }
    if orbit is not None and source.orbit_query:
        params["query"] = {ORBIT_PROPERTY: {"eq": orbit}}
    return params


def _sort_key(item: pystac.Item) -> tuple[str, str]:
    from tessera.read import item_time

    return item_time(item).isoformat(), item.id


def select_items(items: Iterable[pystac.Item], orbit: str | None, within: Window | None = None) -> list[pystac.Item]:
    """Items of ``orbit`` (and in the window ``within``), sorted by (datetime, id).

    Both are checked on the client too: not every API honours ``query``, and a window's last instant
    is the API's to round.
    """
    from tessera.read import item_time

    kept: dict[str, pystac.Item] = {}
    for item in items:
        if orbit is not None and str(item.properties.get(ORBIT_PROPERTY, "")).lower() != orbit:
            continue
        if within is not None and not within.contains(item_time(item).date()):
            continue
        kept[item.id] = item
    return sorted(kept.values(), key=_sort_key)


def strip_signatures(items: Iterable[pystac.Item]) -> int:
    """Drop the signature query (`tessera.sources.unsigned_href`) from every asset and link href of
    ``items``, in place; returns how many hrefs carried one."""
    from tessera.sources import unsigned_href

    count = 0
    for item in items:
        for asset in item.assets.values():
            if (clean := unsigned_href(asset.href)) != asset.href:
                asset.href = clean
                count += 1
        for link in item.links:
            href = link.get_href(transform_href=False)
            if href is not None and (clean := unsigned_href(href)) != href:
                link.target = clean
                count += 1
    return count


def write_item_collection(items: list[pystac.Item], out: Path, extra: Mapping[str, Any] | None = None) -> None:
    """Write ``items`` as an ItemCollection JSON atomically; ``extra`` lands in its ``tessera:search`` field."""
    collection = pystac.ItemCollection(items, extra_fields={"tessera:search": dict(extra or {})})
    write_json_atomic(out, collection.to_dict(transform_hrefs=False))


def run_search(
    source_cfg: SourceConfig,
    chunk: Chunk,
    year: int,
    product: str,
    out: Path,
    policy: RetryPolicy | None = None,
    period: str | None = None,
) -> int:
    """Search ``product`` (``s2``, ``s1-ascending``, ``s1-descending``) over ``chunk`` for ``year``.

    ``source_cfg`` is the config's ``s2`` section for ``s2``, its ``s1`` section otherwise;
    ``period`` the window's first month-day (None: the calendar year).

    Writes the unsigned, (datetime, id)-sorted ItemCollection to ``out`` (also when empty) and
    returns the number of items. Hrefs the API returned signed are stored without their signature
    (`strip_signatures`), with a warning.

    Raises:
        ConfigError: unknown product or source; `PeriodError` if ``period`` is not a month-day.
        DataSourceError: the STAC API failed after retries or answered something unusable.
    """
    from pystac_client import Client
    from pystac_client.exceptions import APIError

    install_redaction()
    kind, orbit = _product_kind(product)
    source = resolve_source(source_cfg, kind)
    span = window(year, period)
    params = search_parameters(source, chunk, year, orbit, period)
    log.info("searching %s %s for chunk %s, %d, bbox %s", source.url, source.collection, chunk.id, year, params["bbox"])
    stac_io = stac_api_io(policy)  # outside the try: a bad transport setting is a ConfigError, not a failed search
    try:
        client = Client.open(source.url, stac_io=stac_io)  # type: ignore[arg-type]
        found: list[pystac.Item] = []
        for page in client.search(**params).pages():
            found.extend(page.items)
            log.info("%s: %d items so far", product, len(found))
    except (APIError, OSError, ValueError) as exc:
        detail = " ".join(redact(str(exc)).split())[:300]  # an HTML error page must not flood the log
        raise DataSourceError(
            f"STAC search of {source.collection} at {source.url} failed: {detail}; check that {kind}.url is a "
            f"STAC API root and {kind}.collection exists, or re-run later if the service is down"
        ) from None
    items = select_items(found, orbit, span)
    stripped = strip_signatures(items)
    if stripped:
        log.warning(
            "%d href(s) from %s came signed: stored without their signature, which expires and is a credential; "
            "the read step signs at read time (set %s.sign if the asset host needs signed URLs)",
            stripped,
            source.url,
            kind,
        )
    if not items:
        log.warning("no %s items for chunk %s in %d: writing an empty collection", product, chunk.id, year)
    # only what the search depends on (its rule's params): how bands are read is the read step's
    # provenance, and a copy here would go stale when a read setting changes without a new search
    meta = {"product": product, "chunk": chunk.id, "year": year, **params, "source": source.identity()}
    write_item_collection(items, out, meta)
    log.info("%s: %d items for chunk %s, %d -> %s", product, len(items), chunk.id, year, out)
    return len(items)
