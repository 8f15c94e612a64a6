"""Per-ROI, per-year products: the stitched embeddings COG, its STAC Item and a quicklook PNG.

``stitch`` checks that every planned tile is present and that all tiles come from one model, then
streams the tiles onto the ROI grid (`tessera.cog`), converts the mosaic to COGs, draws the
quicklook (`tessera.quicklook`) and writes the STAC Item (`tessera.stacitem`). All outputs are
renamed into place together at the end: a failure leaves none of them.

Files for ``out = .../tessera_2022.tif``:

* ``tessera_2022.tif``: D bands ``A00``.. on the ROI grid; int8 codes (nodata -128) or float32 (nodata NaN).
* ``tessera_2022_scales.tif`` (int8 only): float32 per-pixel scale, nodata NaN; value = code * scale.
* ``tessera_2022_counts.tif``: uint16 valid S2 and S1 observations per pixel (`tessera.counts`), nodata 65535.
* ``tessera_2022.json``: STAC Item (``emb:``, ``proj:``, ``processing:``), relative hrefs.
* ``tessera_2022_collection.json``: STAC Collection of the Item, relative hrefs.
* ``tessera_2022_quicklook.png``: first three principal components, RGBA.

Nodata. Every COG declares its nodata value in its metadata, so rasterio (``masked=True``), GDAL and
QGIS mask it. In the int8 product a pixel is nodata as a whole: code -128 in every band and scale
NaN; neither quantisation rule makes -128 for a real pixel (`tessera.cog.INT8_NODATA`). The tiles
and the geotessera export use the reference's encoding instead (code 0 and scale 0, or an all-zero
float32 vector), which is not a valid GeoTIFF nodata declaration for 128 bands of codes.

Tags. ``TESSERA_NODATA_POLICY`` (``reference``) and ``TESSERA_WINDOW`` (an ISO interval of dates)
are written when the product was made under the reference policy or from a window other than the
calendar year. A product without them was made with ``strict`` from the calendar year, which is
what every release before these settings made, so its COGs are byte for byte theirs (the STAC Item
gained properties and the counts asset). The STAC Item always names both.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tessera
from tessera.cog import TilePlacement, require_cog_driver, to_cog, write_mosaic
from tessera.counts import write_counts
from tessera.embedfiles import read_sidecar, tile_files
from tessera.errors import DataSourceError, TileError
from tessera.io import TMP_PREFIX, atomic_path
from tessera.layout import PRODUCTS
from tessera.period import Window, parse_window, window
from tessera.plan import StoredPlan
from tessera.quicklook import write_quicklook
from tessera.results import QA_FILE, part_chunk, search_path, stack_path
from tessera.stacitem import RANDOM_WARNING, ProductInfo, build_collection, build_item, validate_offline

__all__ = [
    "MODEL_KEYS",
    "ReadRecords",
    "data_sources",
    "data_window",
    "product_paths",
    "product_tags",
    "read_records",
    "source_details",
    "stitch",
]

logger = logging.getLogger(__name__)

#: Sidecar keys on which every tile of a product must agree.
MODEL_KEYS = ("model_family", "checkpoint_sha256", "random_weights", "dimensions", "output", "nodata_policy")
_MODEL_VERSIONS = {"v1.0": "1.0", "v1.0-qat": "1.0-QAT", "v1.1": "1.1", "demo": "demo"}


def product_paths(out: Path, int8: bool) -> dict[str, Path]:
    """The files that go with the COG ``out``: ``cog``, ``item``, ``collection``, ``quicklook``, ``counts``
    and (int8) ``scales``."""
    stem = out.with_suffix("")
    paths = {
        "cog": out,
        "item": stem.with_suffix(".json"),
        "collection": stem.with_name(stem.name + "_collection.json"),
        "quicklook": stem.with_name(stem.name + "_quicklook.png"),
        "counts": stem.with_name(stem.name + "_counts.tif"),
    }
    if int8:
        paths["scales"] = stem.with_name(stem.name + "_scales.tif")
    return paths


def _model_version(family: str) -> str:
    return "2.0" if family.startswith("v2") else _MODEL_VERSIONS.get(family, family)


def _collect(plan: StoredPlan, parts: Sequence[Path]) -> tuple[list[TilePlacement], bool]:
    """Every planned tile's embedding files in the inference jobs' directories, placed on the ROI grid.

    Returns:
        The placements and whether the tiles are int8 (they carry ``_scales.npy``).
    """
    found: dict[tuple[str, str], Path] = {}
    for part in parts:
        for meta in Path(part).glob("*.json"):
            found[(part_chunk(part), meta.stem)] = Path(part)
    int8 = any(Path(part, f"{name}_scales.npy").is_file() for (_, name), part in found.items())
    tiles, missing = [], []
    for chunk in plan.chunks:
        for t in plan.tiles(chunk.id):
            label = f"{chunk.id}/{t.name}"
            part_dir = found.get((chunk.id, t.name))
            if part_dir is None:
                missing.append(label)
                continue
            files = tile_files(part_dir, t.name, int8)
            for path in (files.data, files.scales):
                if path is not None and not path.is_file():
                    missing.append(str(path))
            col, row = chunk.grid.window(t.x0, t.y0, t.x1 - t.x0, t.y1 - t.y0).offset_in(plan.grid)
            tiles.append(TilePlacement(label, files.data, files.scales, col, row, t.x1 - t.x0, t.y1 - t.y0))
    if missing:
        shown = "\n  ".join(missing[:20]) + (f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else "")
        raise TileError(
            f"{len(missing)} tile embedding(s) missing from the inference outputs given:\n  {shown}\n"
            "run (or rerun) the infer jobs of these chunks before stitching"
        )
    if not tiles:
        raise TileError(f"the plan {plan.dir} has no tile; check the ROI mask (nonzero = inside)")
    return tiles, int8


def _read_sidecars(tiles: list[TilePlacement]) -> dict[str, dict[str, Any]]:
    return {t.label: read_sidecar(t.data.with_suffix(".json")) for t in tiles}


def _agreed_model(sidecars: dict[str, dict[str, Any]], year: int, emb_dir: str) -> dict[str, Any]:
    """The sidecar values all tiles share; a `TileError` naming the odd tiles if they differ."""
    groups: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for label, meta in sidecars.items():
        groups[tuple(json.dumps(meta.get(k)) for k in MODEL_KEYS)].append(label)
    if len(groups) > 1:
        ranked = sorted(groups.items(), key=lambda kv: -len(kv[1]))
        lines = [
            f"{len(labels)} tile(s) with {dict(zip(MODEL_KEYS, (json.loads(v) for v in key), strict=True))}: "
            + ", ".join(labels[:5])
            + (" ..." if len(labels) > 5 else "")
            for key, labels in ranked
        ]
        raise TileError(
            f"tiles under {emb_dir} come from different models:\n  " + "\n  ".join(lines) + "\n"
            "delete the embeddings of the tiles that differ from the current config and rerun their infer jobs"
        )
    first = next(iter(sidecars.values()))
    wrong_year = sorted(label for label, m in sidecars.items() if m.get("year") != year)
    if wrong_year:
        raise TileError(
            f"{len(wrong_year)} tile(s) under {emb_dir} were embedded for another year than {year}, "
            f"e.g. {', '.join(wrong_year[:5])}; rerun their infer jobs"
        )
    return {k: first.get(k) for k in MODEL_KEYS}


def _source_links(plan: StoredPlan, search_dir: Path, base: Path) -> list[tuple[str, str, int]]:
    links = []
    for chunk in plan.chunks:
        for product in PRODUCTS:
            path = search_path(search_dir, chunk.id, product)
            try:
                count = len(json.loads(path.read_text()).get("features", []))
            except (OSError, ValueError) as exc:
                raise DataSourceError(
                    f"cannot read the search result {path} ({exc}); rerun the search job of chunk {chunk.id}"
                ) from exc
            title = f"{product} source scenes of chunk {chunk.id} ({count} items, unsigned ItemCollection)"
            links.append((Path(os.path.relpath(path, base)).as_posix(), title, count))
    return links


ReadRecords = list[tuple[str, dict[str, Any]]]
"""``(kind, qa.json)`` of every read step of a year (``kind``: ``s2`` or ``s1``): `read_records`."""


def read_records(plan: StoredPlan, stack_dir: Path) -> ReadRecords:
    """``(kind, qa.json)`` of every read step of the year (``kind``: ``s2`` or ``s1``), read once for
    `data_sources`, `source_details` and `data_window`.

    Raises:
        DataSourceError: a read step's record is missing or unreadable.
    """
    records = []
    for chunk in plan.chunks:
        for product in PRODUCTS:
            path = stack_path(stack_dir, chunk.id, product, QA_FILE)
            try:
                record = json.loads(path.read_text())
                record["source"]["provider"]  # every read step records its source
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise DataSourceError(
                    f"cannot read the read step's record {path} ({exc}); rerun the read job of chunk {chunk.id}"
                ) from exc
            records.append(("s2" if product == "s2" else "s1", record))
    return records


def data_sources(records: ReadRecords) -> dict[str, str]:
    """``{"s2": provider, "s1": provider}`` as the read jobs recorded them in their ``qa.json``."""
    seen: dict[str, set[str]] = {"s2": set(), "s1": set()}
    for kind, record in records:
        seen[kind].add(str(record["source"]["provider"]))
    return {kind: "+".join(sorted(providers)) for kind, providers in seen.items()}


def source_details(records: ReadRecords) -> dict[str, list[dict[str, Any]]]:
    """Every distinct source record of the read steps (provider, API, collection, assets, offset and
    resampling settings; no credentials), per kind: what the data came from, beyond the provider's name."""
    seen: dict[str, list[dict[str, Any]]] = {"s2": [], "s1": []}
    for kind, record in records:
        if record["source"] not in seen[kind]:
            seen[kind].append(record["source"])
    return seen


def data_window(records: ReadRecords, year: int) -> Window:
    """The window the read steps read (their ``qa.json``), the calendar year if they do not say.

    Raises:
        DataSourceError: two read steps read different windows.
    """
    seen = {str(record.get("window") or window(year).label) for _, record in records}
    if len(seen) != 1:
        raise DataSourceError(
            f"the read steps of {year} read different windows ({', '.join(sorted(seen))}); "
            "rerun the workflow so that every read job runs with the current period"
        )
    return parse_window(seen.pop())


def product_tags(
    model: dict[str, Any], sources: dict[str, str], year: int, quant: str, span: Window | None = None
) -> dict[str, str]:
    """GeoTIFF tags that make a product self-describing (model, checkpoint, data source, versions, window)."""
    family = str(model["model_family"])
    span = span or window(year)
    covers = str(year) if span.is_calendar_year else f"the 12 months {span.label}"
    tags = {
        "TESSERA_MODEL_FAMILY": family,
        "TESSERA_MODEL_VERSION": _model_version(family),
        "TESSERA_CHECKPOINT_SHA256": str(model["checkpoint_sha256"] or "none"),
        "TESSERA_RANDOM_WEIGHTS": str(bool(model["random_weights"])).lower(),
        "TESSERA_DATA_SOURCE": ";".join(f"{k}={sources[k]}" for k in ("s2", "s1")),
        "TESSERA_PIPELINE_VERSION": tessera.__version__,
        "TESSERA_YEAR": str(year),
        "TESSERA_DIMENSIONS": str(model["dimensions"]),
        "TESSERA_QUANTIZATION": quant,
        "TESSERA_DATASET_VERSION": _model_version(family),
        "TESSERA_DATASET_VARIANT": "tessera-pipeline",
        "TESSERA_DESCRIPTION": f"TESSERA {family} embeddings of {covers}, {model['dimensions']} bands A00..",
    }
    if model["random_weights"]:
        tags["TESSERA_WARNING"] = RANDOM_WARNING
    # absent = strict and the calendar year: what every earlier release made (module docstring)
    policy = model.get("nodata_policy")
    if policy not in (None, "strict"):
        tags["TESSERA_NODATA_POLICY"] = str(policy)
    if not span.is_calendar_year:
        tags["TESSERA_WINDOW"] = span.label
    return tags


def _quant_text(int8: bool, rule: str, scales_name: str) -> str:
    if not int8:
        return "none (float32)"
    return f"int8 per-pixel scale, rule {rule}: value = code * scale, scale in {scales_name}; code -128 = nodata"


def _number(value: float) -> float | int:
    """``1000.0`` as ``1000``: config numbers read back as written."""
    return int(value) if float(value).is_integer() else value


def _runtime(model: dict[str, Any], sidecars: dict[str, dict[str, Any]], plan: StoredPlan) -> dict[str, Any]:
    """How the tiles were made, as their inference jobs recorded it."""

    def values(key: str) -> list[Any]:
        return sorted({json.dumps(m.get(key)) for m in sidecars.values()})

    def one_or_all(key: str) -> Any:
        found = [json.loads(v) for v in values(key)]
        return found[0] if len(found) == 1 else found

    return {
        "dimensions": int(model["dimensions"]),
        "output": model["output"],
        "precision": [json.loads(v) for v in values("precision")],
        "device": [json.loads(v) for v in values("device")],
        "batch_size": one_or_all("batch_size"),
        "repeats": one_or_all("repeats"),
        "tile_size": plan.tile_size,
        "chunk_size_m": _number(plan.doc["chunk_size_m"]),
    }


def stitch(
    plan: StoredPlan,
    year: int,
    parts: Sequence[Path],
    search_dir: Path,
    stack_dir: Path,
    out: Path,
    *,
    block_size: int = 256,
    window_blocks: int = 1,
) -> None:
    """Stitch a year's tile embeddings into the ROI product: COG(s), STAC Item and quicklook.

    The product's provenance comes from the jobs that made its inputs: the model, checkpoint and
    runtime from the tiles' sidecars, the data sources from the read steps' ``qa.json``.

    Args:
        plan: The stored plan, opened with the tile size; its ROI grid is the product grid.
        year: The year the tiles were embedded for.
        parts: The inference jobs' output directories (``<chunk>/<part>/<tile>.npy`` ...).
        search_dir: ``<chunk>/{s2,s1-ascending,s1-descending}.json`` source ItemCollections (linked).
        stack_dir: ``<chunk>/<product>/{qa.json,valid_count.npy}`` of the read steps.
        out: The COG to write; the other files are named after it (`product_paths`).
        block_size: COG block side in pixels (multiple of 16).
        window_blocks: Stitching window side in blocks (memory: one window of all bands).

    Raises:
        TileError: A planned tile is missing or malformed, or tiles come from different models.
        DataSourceError: A chunk's search result or read record is missing.
    """
    require_cog_driver()
    out = Path(out)
    tiles, int8 = _collect(plan, parts)
    sidecars = _read_sidecars(tiles)
    emb_dir = os.path.commonpath([str(p) for p in parts])
    model = _agreed_model(sidecars, year, emb_dir)
    paths = product_paths(out, int8)
    links = _source_links(plan, Path(search_dir), out.parent)
    records = read_records(plan, Path(stack_dir))
    sources, span = data_sources(records), data_window(records, year)
    family = str(model["model_family"])
    rule = "v2" if family.startswith("v2") else "v1"
    tags = product_tags(model, sources, year, _quant_text(int8, rule, paths.get("scales", out).name), span)
    if model["random_weights"]:
        logger.warning("RANDOM WEIGHTS: %s", RANDOM_WARNING)
    grid = plan.grid
    logger.info(
        "stitching %d tiles of %d chunks onto a %d x %d grid", len(tiles), len(plan.chunks), grid.width, grid.height
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    checkpoints = {m.get("checkpoint") for m in sidecars.values()}
    with contextlib.ExitStack() as stack:
        scratch = tempfile.TemporaryDirectory(prefix=f"{TMP_PREFIX}{out.stem}-stitch.", dir=out.parent)
        work = Path(stack.enter_context(scratch))
        tmp = {key: stack.enter_context(atomic_path(path)) for key, path in paths.items()}
        mosaic, scales = work / "embeddings.tif", (work / "scales.tif" if int8 else None)
        dims = int(model["dimensions"])
        valid = write_mosaic(
            mosaic, scales, grid, tiles, dims, plan.mask, tags=tags, block_size=block_size, window_blocks=window_blocks
        )
        to_cog(mosaic, tmp["cog"], block_size)
        if scales is not None:
            to_cog(scales, tmp["scales"], block_size)
        # the counts are the product's evidence: the same provenance, less what describes the embeddings
        embedding_only = ("TESSERA_DIMENSIONS", "TESSERA_QUANTIZATION", "TESSERA_DESCRIPTION")
        counts_tags = {k: v for k, v in tags.items() if k not in embedding_only}
        counts_tags["TESSERA_DESCRIPTION"] = f"valid S2 and S1 observations per pixel behind {out.name}"
        write_counts(plan, Path(stack_dir), tmp["counts"], work, block_size, tags=counts_tags)
        write_quicklook(tmp["cog"], tmp.get("scales"), tmp["quicklook"])
        names = {"embeddings": "cog", "quicklook": "quicklook", "scales": "scales", "observation_counts": "counts"}
        info = ProductInfo(
            item_id=out.stem,
            year=year,
            grid=grid,
            dims=dims,
            int8=int8,
            quant_rule=rule,
            model_family=family,
            model_version=_model_version(family),
            checkpoint_sha256=model["checkpoint_sha256"],
            checkpoint_name=next(iter(checkpoints)) if len(checkpoints) == 1 else None,
            random_weights=bool(model["random_weights"]),
            data_source=sources,
            sources=source_details(records),
            pipeline_version=tessera.__version__,
            runtime=_runtime(model, sidecars, plan),
            valid_pixels=valid,
            window=span,
            nodata_policy=str(model.get("nodata_policy") or "strict"),
            source_links=links,
            assets={asset: paths[key].name for asset, key in names.items() if key in paths},
            collection_href=paths["collection"].name,
        )
        item = build_item(info)
        validate_offline(item)
        tmp["item"].write_text(json.dumps(item, indent=2) + "\n")
        collection = build_collection(info, item, paths["item"].name)
        tmp["collection"].write_text(json.dumps(collection, indent=2) + "\n")
    logger.info("wrote %s (+ %s)", out, ", ".join(p.name for k, p in paths.items() if k != "cog"))
