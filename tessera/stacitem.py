"""The STAC Item of a stitched product, with the Embeddings (``emb:``), projection and processing extensions.

Validation works offline. pystac bundles the STAC core and GeoJSON schemas only; the extension
schemas live on stac-extensions.github.io. `offline_validator` is pystac's own JSON-Schema
validator whose schema cache also holds local stand-ins for the three extension schemas, written
here from their field lists (Embeddings v0.0.1, projection v2.0.0, processing v1.2.0), so
``item.validate(validator=offline_validator())`` never touches the network.

The stand-ins check the fields; ``tests/test_products.py`` validates Items against the published
schemas themselves (recorded in ``tests/data/stac-schemas/``), whose Embeddings v0.0.1 Item branch
builds on the STAC 1.0.0 Item schema: Items say ``stac_version: 1.0.0``.

The Embeddings v0.0.1 schema is followed as published: ``emb:type``, ``emb:dimensions`` and
``emb:temporal_resolution`` are Collection fields that an Item may not carry (its ``emb:*``
properties are a closed list), and ``emb:quantization.scale`` must be a number, so the per-pixel
scales are pointed to by the quantisation object's ``link`` and the ``scales`` asset, and the
dimensions are reported in ``emb:runtime_parameters`` and in ``data_type``/``gsd``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pystac
import rasterio.warp
from pystac.validation import JsonSchemaSTACValidator
from shapely.geometry import box, mapping, shape

from tessera.grid import Grid
from tessera.period import Window

__all__ = [
    "EMB_SCHEMA_URI",
    "PROCESSING_SCHEMA_URI",
    "PROJ_SCHEMA_URI",
    "STAC_VERSION",
    "ProductInfo",
    "build_collection",
    "build_item",
    "offline_validator",
    "validate_offline",
]

STAC_VERSION = "1.0.0"
"""The Item's STAC version: the one the Embeddings v0.0.1 schema validates Items against."""
EMB_SCHEMA_URI = "https://stac-extensions.github.io/embeddings/v0.0.1/schema.json"
PROJ_SCHEMA_URI = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
PROCESSING_SCHEMA_URI = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
RANDOM_WARNING = "embeddings from a model with seeded random weights: plumbing demo, no meaning"
_COG = "image/tiff; application=geotiff; profile=cloud-optimized"

_EXPRESSION: dict[str, Any] = {
    "type": "object",
    "required": ["format", "expression"],
    "properties": {"format": {"type": "string"}, "expression": {}},
}
_LINK: dict[str, Any] = {
    "type": "object",
    "required": ["rel", "href"],
    "properties": {"rel": {"type": "string"}, "href": {"type": "string"}},
}
_NUMBERS: dict[str, Any] = {"oneOf": [{"type": "number"}, {"type": "array", "items": {"type": "number"}}]}

#: Local stand-in for the Embeddings extension (Item part): the fields of its README at 91601b7.
EMB_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "$id": EMB_SCHEMA_URI,
    "type": "object",
    "required": ["type", "stac_extensions", "properties", "assets"],
    "properties": {
        "type": {"const": "Feature"},
        "stac_extensions": {"type": "array", "contains": {"const": EMB_SCHEMA_URI}},
        "assets": {"type": "object", "required": ["embeddings"]},
        "properties": {
            "type": "object",
            "properties": {
                "emb:runtime_parameters": {"type": "object"},
                "emb:preprocessing": _EXPRESSION,
                "emb:postprocessing": _EXPRESSION,
                "emb:fit_for_use": {"type": "array", "items": {"type": "string"}},
                "emb:spatial_coverage": {"type": "string"},
                "emb:uncertainty": {"type": "object"},
                "emb:quantization": {
                    "type": "object",
                    "required": ["method", "original_dtype"],
                    "additionalProperties": False,
                    "properties": {
                        "method": {"type": "string"},
                        "original_dtype": {"type": "string"},
                        "quantized_dtype": {"type": "string"},
                        "scale": _NUMBERS,
                        "offset": _NUMBERS,
                        "link": _LINK,
                    },
                },
            },
            "patternProperties": {"^(?!emb:)": {}},
            "additionalProperties": False,
        },
    },
}

#: Local stand-in for the projection extension v2.0.0 (Item properties).
PROJ_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "$id": PROJ_SCHEMA_URI,
    "type": "object",
    "properties": {
        "properties": {
            "type": "object",
            "properties": {
                "proj:code": {"type": ["string", "null"]},
                "proj:transform": {"type": "array", "items": {"type": "number"}, "minItems": 6, "maxItems": 9},
                "proj:shape": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 0},
                    "minItems": 2,
                    "maxItems": 2,
                },
                "proj:bbox": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 6},
            },
            "anyOf": [{"required": ["proj:code"]}, {"required": ["proj:wkt2"]}, {"required": ["proj:projjson"]}],
        }
    },
}

#: Local stand-in for the processing extension v1.2.0 (Item properties).
PROCESSING_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "$id": PROCESSING_SCHEMA_URI,
    "type": "object",
    "properties": {
        "properties": {
            "type": "object",
            "properties": {
                "processing:datetime": {"type": "string", "format": "date-time"},
                "processing:version": {"type": "string"},
                "processing:lineage": {"type": "string"},
                "processing:level": {"type": "string"},
                "processing:software": {"type": "object", "additionalProperties": {"type": "string"}},
                "processing:expression": _EXPRESSION,
            },
        }
    },
}


def offline_validator() -> JsonSchemaSTACValidator:
    """pystac's JSON-Schema validator with the extension schemas above preloaded (no network)."""
    validator = JsonSchemaSTACValidator()
    for uri, schema in (
        (EMB_SCHEMA_URI, EMB_SCHEMA),
        (PROJ_SCHEMA_URI, PROJ_SCHEMA),
        (PROCESSING_SCHEMA_URI, PROCESSING_SCHEMA),
    ):
        validator.schema_cache[uri] = schema
    return validator


@dataclass(frozen=True)
class ProductInfo:
    """What the Item says about a stitched product."""

    item_id: str
    year: int
    grid: Grid
    dims: int
    int8: bool
    quant_rule: str
    """``v1`` or ``v2`` (`tessera.quantize`)."""
    model_family: str
    model_version: str
    checkpoint_sha256: str | None
    checkpoint_name: str | None
    """The checkpoint's file name (never a path), or None for random weights or several names."""
    random_weights: bool
    data_source: dict[str, str]
    """``{"s2": provider, "s1": provider}``."""
    sources: dict[str, list[dict[str, Any]]]
    """Per kind, every distinct source the read steps recorded (`tessera.products.source_details`)."""
    pipeline_version: str
    runtime: dict[str, Any]
    """Runtime parameters (dimensions, output, precision, devices, batch size, repeats)."""
    valid_pixels: int
    window: Window
    """The 12 months embedded (the calendar year by default)."""
    nodata_policy: str
    """``reference`` or ``strict``: which pixels were embedded."""
    source_links: list[tuple[str, str, int]]
    """``(relative href, title, scene count)`` per source ItemCollection."""
    assets: dict[str, str]
    """Relative hrefs: ``embeddings``, ``quicklook``, ``observation_counts`` and (int8) ``scales``."""
    collection_href: str | None = None
    """Relative href of the product's Collection (`build_collection`), or None for an Item without one."""

    @property
    def collection_id(self) -> str:
        """The id of the product's Collection."""
        return f"{self.item_id}_collection"


def validate_offline(item: dict[str, Any]) -> None:
    """Validate a `build_item` Item without the network (`offline_validator`).

    pystac bundles the STAC 1.1.0 core schemas only, so the Item's fields are checked against those
    (they are the same fields under 1.0.0); ``tests/test_products.py`` validates the Item as written,
    ``stac_version: 1.0.0``, against the published 1.0.0 core and extension schemas.

    Raises:
        pystac.STACValidationError: The Item does not validate.
    """
    pystac.validation.validate_dict({**item, "stac_version": "1.1.0"}, validator=offline_validator())


def _footprint(grid: Grid) -> dict[str, Any]:
    geom = rasterio.warp.transform_geom(grid.crs, "EPSG:4326", mapping(box(*grid.bounds)), precision=7)
    return dict(geom)


def _covers(w: Window) -> str:
    return f"the calendar year {w.year}" if w.is_calendar_year else f"the 12 months {w.start} to {w.end}"


def _properties(info: ProductInfo, now: dt.datetime) -> dict[str, Any]:
    t = info.grid.transform
    props: dict[str, Any] = {
        "title": f"TESSERA embeddings {info.year}" + (" (RANDOM WEIGHTS DEMO)" if info.random_weights else ""),
        "description": (
            f"TESSERA {info.model_family} pixel embeddings ({info.dims} dimensions) of {_covers(info.window)} "
            f"from Sentinel-2 L2A ({info.data_source['s2']}) and Sentinel-1 RTC ({info.data_source['s1']}) time series."
        ),
        "data_type": "int8" if info.int8 else "float32",
        "gsd": info.grid.resolution,
        "proj:code": info.grid.crs,
        "proj:transform": [t.a, t.b, t.c, t.d, t.e, t.f],
        "proj:shape": [info.grid.height, info.grid.width],
        "processing:datetime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "processing:version": info.pipeline_version,
        "processing:software": {"tessera-pipeline": info.pipeline_version},
        "emb:runtime_parameters": info.runtime,
        "emb:preprocessing": {
            "format": "text",
            "expression": "per-pixel S2 L2A (SCL-masked) and S1 RTC (ascending and descending, scaled dB) time series "
            f"of {_covers(info.window)} (day of year counted from {info.window.start}); standardised with the "
            f"model family's band statistics; pixels embedded under nodata policy {info.nodata_policy}",
        },
        "emb:postprocessing": {
            "format": "text",
            "expression": f"first {info.dims} dimensions"
            + (f"; int8 per-pixel symmetric quantisation (rule {info.quant_rule})" if info.int8 else ""),
        },
        "tessera:model_family": info.model_family,
        "tessera:model_version": info.model_version,
        "tessera:checkpoint_sha256": info.checkpoint_sha256,
        "tessera:random_weights": info.random_weights,
        "tessera:data_source": info.data_source,
        "tessera:sources": info.sources,
        "tessera:pipeline_version": info.pipeline_version,
        "tessera:year": info.year,
        "tessera:window": info.window.label,
        "tessera:nodata_policy": info.nodata_policy,
        "tessera:valid_pixels": info.valid_pixels,
    }
    if info.random_weights:
        props["tessera:warning"] = RANDOM_WARNING
    if info.int8:
        props["emb:quantization"] = {
            "method": "per_pixel_scale",
            "original_dtype": "float32",
            "quantized_dtype": "int8",
            "offset": 0,
            "link": {
                "rel": "emb:scales",
                "href": info.assets["scales"],
                "type": _COG,
                "title": f"float32 per-pixel scale: value = code * scale; code -128 = nodata (rule {info.quant_rule})",
            },
        }
    return props


def _assets(info: ProductInfo) -> dict[str, pystac.Asset]:
    kind = "int8 codes (dequantise with the scales asset)" if info.int8 else "float32"
    assets = {
        "embeddings": pystac.Asset(
            info.assets["embeddings"],
            title=f"TESSERA embeddings, {info.dims} bands A00.., {kind}",
            media_type=_COG,
            roles=["data"],
            extra_fields={"nodata": -128 if info.int8 else "nan", "data_type": "int8" if info.int8 else "float32"},
        ),
        "quicklook": pystac.Asset(
            info.assets["quicklook"],
            title="first three principal components",
            media_type=pystac.MediaType.PNG,
            roles=["overview", "visual"],
        ),
        "observation_counts": pystac.Asset(
            info.assets["observation_counts"],
            title="valid observations per pixel: band 1 s2_valid (S2 dates), band 2 s1_valid (S1 frames, both orbits)",
            media_type=_COG,
            roles=["metadata", "quality"],
            extra_fields={"nodata": 65535, "data_type": "uint16"},
        ),
    }
    if info.int8:
        assets["scales"] = pystac.Asset(
            info.assets["scales"],
            title="per-pixel dequantisation scale",
            media_type=_COG,
            roles=["data"],
            extra_fields={"nodata": "nan", "data_type": "float32"},
        )
    return assets


def build_item(info: ProductInfo, now: dt.datetime | None = None) -> dict[str, Any]:
    """The product's STAC Item as a JSON-ready dict (relative hrefs, no self link).

    Args:
        info: What to describe.
        now: Processing time (UTC); defaults to the current time.
    """
    now = now or dt.datetime.now(dt.UTC)
    geom = _footprint(info.grid)
    item = pystac.Item(
        id=info.item_id,
        geometry=geom,
        bbox=list(shape(geom).bounds),
        datetime=None,
        properties=_properties(info, now),
        stac_extensions=[EMB_SCHEMA_URI, PROJ_SCHEMA_URI, PROCESSING_SCHEMA_URI],
        start_datetime=dt.datetime.combine(info.window.start, dt.time(0, 0, 0), tzinfo=dt.UTC),
        end_datetime=dt.datetime.combine(info.window.end, dt.time(23, 59, 59), tzinfo=dt.UTC),
    )
    for key, asset in _assets(info).items():
        item.add_asset(key, asset)
    sha = info.checkpoint_sha256 or "none"
    model_title = (
        f"TESSERA {info.model_family} model, no checkpoint: {RANDOM_WARNING}"
        if info.random_weights
        else f"TESSERA {info.model_family} checkpoint, sha256 {sha}"
    )
    # the checkpoint is named by its content: the file lies wherever the user keeps it, so a relative
    # href to its name would point at nothing
    href = (
        f"urn:tessera:checkpoint:sha256:{info.checkpoint_sha256}"
        if info.checkpoint_sha256
        else f"urn:tessera:model:{info.model_family}:random-weights"
    )
    extra: dict[str, Any] = {"checkpoint:sha256": info.checkpoint_sha256}
    if info.checkpoint_name:
        extra["tessera:checkpoint_file"] = info.checkpoint_name
    item.add_link(pystac.Link("emb:model", href, title=model_title, extra_fields=extra))
    for href, title, count in info.source_links:
        item.add_link(
            pystac.Link(
                "emb:source-data",
                href,
                media_type=pystac.MediaType.GEOJSON,
                title=title,
                extra_fields={"tessera:scenes": count},
            )
        )
    d = item.to_dict(include_self_link=False, transform_hrefs=False)
    # the Embeddings v0.0.1 schema builds on the STAC 1.0.0 Item schema, which requires stac_version
    # "1.0.0"; pystac writes its own (1.1.0), and nothing here uses a field that 1.0.0 lacks
    d["stac_version"] = STAC_VERSION
    if info.collection_href is not None:
        d["collection"] = info.collection_id
        d["links"].append({"rel": "collection", "href": info.collection_href, "type": "application/json"})
    return d


def build_collection(info: ProductInfo, item: dict[str, Any], item_href: str) -> dict[str, Any]:
    """The product's STAC Collection: the Embeddings extension's Collection fields, which an Item may
    not carry (``emb:type``, ``emb:dimensions``, ``emb:temporal_resolution``), with the Item's model and
    source-data links and a link to the Item (``item_href``, relative; the Collection lies beside it).
    """
    start, end = item["properties"]["start_datetime"], item["properties"]["end_datetime"]
    return {
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "stac_extensions": [EMB_SCHEMA_URI],
        "id": info.collection_id,
        "title": item["properties"]["title"],
        "description": item["properties"]["description"]
        + " Derived from Copernicus Sentinel data (Copernicus terms apply) and the model named by the emb:model link.",
        "license": "various",
        "extent": {"spatial": {"bbox": [item["bbox"]]}, "temporal": {"interval": [[start, end]]}},
        "emb:type": "pixel",
        "emb:dimensions": info.dims,
        "data_type": "int8" if info.int8 else "float32",
        "gsd": info.grid.resolution,
        "emb:temporal_resolution": "annual",
        "links": [
            {"rel": "item", "href": item_href, "type": "application/geo+json"},
            *(link for link in item["links"] if link["rel"] in ("emb:model", "emb:source-data")),
        ],
    }
