"""Per-ROI, per-year products: the stitched embeddings COG, its STAC Item and a quicklook PNG.

``stitch`` checks that every planned tile is present and that all tiles come from one model, then
streams the tiles onto the ROI grid (`tessera.cog`), converts the mosaic to COGs, draws the
quicklook (`tessera.quicklook`) and writes the STAC Item (`tessera.stacitem`). All outputs are
renamed into place together at the end: a failure leaves none of them.

Files for ``out = .../tessera_2022.tif``:

* ``tessera_2022.tif``: D bands ``A00``.. on the ROI grid; int8 codes (nodata -128) or float32 (nodata NaN).
* ``tessera_2022_scales.tif`` (int8 only): float32 per-pixel scale, nodata NaN; value = code * scale.
* ``tessera_2022.json``: STAC Item (``emb:``, ``proj:``, ``processing:``), relative hrefs.
* ``tessera_2022_quicklook.png``: first three principal components, RGBA.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import pystac.validation

import tessera
from tessera.cog import TilePlacement, require_cog_driver, to_cog, write_mosaic
from tessera.errors import DataSourceError, TileError
from tessera.grid import Chunk, Roi, plan_chunks, plan_tiles
from tessera.io import atomic_path
from tessera.layout import PRODUCTS
from tessera.quicklook import write_quicklook
from tessera.stacitem import RANDOM_WARNING, ProductInfo, build_item, offline_validator

__all__ = ["MODEL_KEYS", "product_paths", "product_tags", "stitch"]

logger = logging.getLogger(__name__)

#: Sidecar keys on which every tile of a product must agree.
MODEL_KEYS = ("model_family", "checkpoint_sha256", "random_weights", "dimensions", "output")
_MODEL_VERSIONS = {"v1.0": "1.0", "v1.0-qat": "1.0-QAT", "v1.1": "1.1", "demo": "demo"}


def product_paths(out: Path, int8: bool) -> dict[str, Path]:
    """The product files that go with the COG ``out``: ``cog``, ``item``, ``quicklook`` and (int8) ``scales``."""
    stem = out.with_suffix("")
    paths = {
        "cog": out,
        "item": stem.with_suffix(".json"),
        "quicklook": stem.with_name(stem.name + "_quicklook.png"),
    }
    if int8:
        paths["scales"] = stem.with_name(stem.name + "_scales.tif")
    return paths


def _model_version(family: str) -> str:
    return "2.0" if family.startswith("v2") else _MODEL_VERSIONS.get(family, family)


def _collect(roi: Roi, chunks: list[Chunk], tile_size: int, emb_dir: Path, int8: bool) -> list[TilePlacement]:
    tiles, missing = [], []
    for chunk in chunks:
        for t in plan_tiles(roi, chunk, tile_size):
            col, row = chunk.grid.window(t.x0, t.y0, t.x1 - t.x0, t.y1 - t.y0).offset_in(roi.grid)
            base = emb_dir / chunk.id / t.name
            data, scales = base.with_suffix(".npy"), base.with_name(t.name + "_scales.npy") if int8 else None
            for path in (data, scales, base.with_suffix(".json")):
                if path is not None and not path.is_file():
                    missing.append(str(path))
            tiles.append(TilePlacement(f"{chunk.id}/{t.name}", data, scales, col, row, t.x1 - t.x0, t.y1 - t.y0))
    if missing:
        shown = "\n  ".join(missing[:20]) + (f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else "")
        raise TileError(
            f"{len(missing)} tile embedding file(s) missing under {emb_dir}:\n  {shown}\n"
            "run (or rerun) the infer jobs of these tiles before stitching"
        )
    if not tiles:
        raise TileError(f"the ROI {roi.path} plans no tile; check the ROI mask (nonzero = inside)")
    return tiles


def _read_sidecars(tiles: list[TilePlacement]) -> dict[str, dict[str, Any]]:
    sidecars = {}
    for t in tiles:
        path = t.data.with_suffix(".json")
        try:
            sidecars[t.label] = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise TileError(f"cannot read the tile sidecar {path}: {exc}; rerun the tile's infer job") from exc
    return sidecars


def _agreed_model(sidecars: dict[str, dict[str, Any]], cfg: dict[str, Any], year: int, emb_dir: Path) -> dict[str, Any]:
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
    wanted = cfg.get("model", {}).get("output", "int8")
    if first.get("output") != wanted:
        raise TileError(
            f"tiles under {emb_dir} hold {first.get('output')} embeddings but model.output is {wanted}; "
            "rerun the infer jobs (delete the tile embeddings) so they follow the config"
        )
    wrong_year = sorted(label for label, m in sidecars.items() if m.get("year") != year)
    if wrong_year:
        raise TileError(
            f"{len(wrong_year)} tile(s) under {emb_dir} were embedded for another year than {year}, "
            f"e.g. {', '.join(wrong_year[:5])}; rerun their infer jobs"
        )
    return {k: first.get(k) for k in MODEL_KEYS}


def _source_links(chunks: list[Chunk], search_dir: Path, base: Path) -> list[tuple[str, str, int]]:
    links = []
    for chunk in chunks:
        for product in PRODUCTS:
            path = search_dir / chunk.id / f"{product}.json"
            try:
                count = len(json.loads(path.read_text()).get("features", []))
            except (OSError, ValueError) as exc:
                raise DataSourceError(
                    f"cannot read the search result {path} ({exc}); rerun the search job of chunk {chunk.id}"
                ) from exc
            title = f"{product} source scenes of chunk {chunk.id} ({count} items, unsigned ItemCollection)"
            links.append((Path(os.path.relpath(path, base)).as_posix(), title, count))
    return links


def product_tags(model: dict[str, Any], cfg: dict[str, Any], year: int, quant: str) -> dict[str, str]:
    """GeoTIFF tags that make a product self-describing (model, checkpoint, data source, versions)."""
    family = str(model["model_family"])
    source = ";".join(f"{k}={cfg.get(k, {}).get('source', 'planetary-computer')}" for k in ("s2", "s1"))
    tags = {
        "TESSERA_MODEL_FAMILY": family,
        "TESSERA_MODEL_VERSION": _model_version(family),
        "TESSERA_CHECKPOINT_SHA256": str(model["checkpoint_sha256"] or "none"),
        "TESSERA_RANDOM_WEIGHTS": str(bool(model["random_weights"])).lower(),
        "TESSERA_DATA_SOURCE": source,
        "TESSERA_PIPELINE_VERSION": tessera.__version__,
        "TESSERA_YEAR": str(year),
        "TESSERA_DIMENSIONS": str(model["dimensions"]),
        "TESSERA_QUANTIZATION": quant,
        "TESSERA_DATASET_VERSION": _model_version(family),
        "TESSERA_DATASET_VARIANT": "tessera-pipeline",
        "TESSERA_DESCRIPTION": f"TESSERA {family} embeddings of {year}, {model['dimensions']} bands A00..",
    }
    if model["random_weights"]:
        tags["TESSERA_WARNING"] = RANDOM_WARNING
    return tags


def _quant_text(int8: bool, rule: str, scales_name: str) -> str:
    if not int8:
        return "none (float32)"
    return f"int8 per-pixel scale, rule {rule}: value = code * scale, scale in {scales_name}; code -128 = nodata"


def _info(
    cfg: dict[str, Any], year: int, model: dict[str, Any], sidecars: dict[str, dict[str, Any]], **kw: Any
) -> ProductInfo:
    mcfg = cfg.get("model", {})
    family = str(model["model_family"])
    checkpoint = mcfg.get("checkpoint")
    runtime = {
        "dimensions": int(model["dimensions"]),
        "output": model["output"],
        "precision": sorted({str(m.get("precision")) for m in sidecars.values()}),
        "device": sorted({str(m.get("device")) for m in sidecars.values()}),
        "batch_size": mcfg.get("batch_size"),
        "repeats": mcfg.get("repeats", 1),
        "tile_size": cfg["tile_size"],
        "chunk_size_m": cfg["chunk_size_m"],
    }
    return ProductInfo(
        year=year,
        dims=int(model["dimensions"]),
        int8=model["output"] == "int8",
        quant_rule="v2" if family.startswith("v2") else "v1",
        model_family=family,
        model_version=_model_version(family),
        checkpoint_sha256=model["checkpoint_sha256"],
        checkpoint_href=Path(checkpoint).name if checkpoint else None,
        random_weights=bool(model["random_weights"]),
        data_source={k: cfg.get(k, {}).get("source", "planetary-computer") for k in ("s2", "s1")},
        pipeline_version=tessera.__version__,
        runtime=runtime,
        **kw,
    )


def stitch(
    cfg: dict[str, Any],
    roi: Roi,
    year: int,
    embeddings_dir: Path,
    search_dir: Path,
    out: Path,
    *,
    block_size: int = 256,
    window_blocks: int = 1,
) -> None:
    """Stitch a year's tile embeddings into the ROI product: COG(s), STAC Item and quicklook.

    Args:
        cfg: The validated configuration (``chunk_size_m``, ``tile_size``, ``model``, ``s2``/``s1``).
        roi: The region of interest; its grid is the product grid.
        year: The year the tiles were embedded for.
        embeddings_dir: ``<chunk>/<tile>.npy`` (+ ``_scales.npy``) and ``<tile>.json`` per planned tile.
        search_dir: ``<chunk>/{s2,s1-ascending,s1-descending}.json`` source ItemCollections (linked).
        out: The COG to write; the other files are named after it (`product_paths`).
        block_size: COG block side in pixels (multiple of 16).
        window_blocks: Stitching window side in blocks (memory: one window of all bands).

    Raises:
        TileError: A planned tile is missing or malformed, or tiles come from different models.
        DataSourceError: A chunk's search result is missing.
    """
    require_cog_driver()
    out = Path(out)
    int8 = cfg.get("model", {}).get("output", "int8") == "int8"
    chunks = plan_chunks(roi, cfg["chunk_size_m"])
    tiles = _collect(roi, chunks, int(cfg["tile_size"]), Path(embeddings_dir), int8)
    sidecars = _read_sidecars(tiles)
    model = _agreed_model(sidecars, cfg, year, Path(embeddings_dir))
    paths = product_paths(out, int8)
    links = _source_links(chunks, Path(search_dir), out.parent)
    family = str(model["model_family"])
    rule = "v2" if family.startswith("v2") else "v1"
    tags = product_tags(model, cfg, year, _quant_text(int8, rule, paths.get("scales", out).name))
    if model["random_weights"]:
        logger.warning("RANDOM WEIGHTS: %s", RANDOM_WARNING)
    logger.info(
        "stitching %d tiles of %d chunks onto a %d x %d grid", len(tiles), len(chunks), roi.grid.width, roi.grid.height
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f".tmp-{out.stem}-stitch.", dir=out.parent)))
        tmp = {key: stack.enter_context(atomic_path(path)) for key, path in paths.items()}
        mosaic, scales = work / "embeddings.tif", (work / "scales.tif" if int8 else None)
        dims, inside = int(model["dimensions"]), roi.mask(roi.grid)
        valid = write_mosaic(
            mosaic, scales, roi.grid, tiles, dims, inside, tags=tags, block_size=block_size, window_blocks=window_blocks
        )
        to_cog(mosaic, tmp["cog"], block_size)
        if scales is not None:
            to_cog(scales, tmp["scales"], block_size)
        write_quicklook(tmp["cog"], tmp.get("scales"), tmp["quicklook"])
        names = {"embeddings": "cog", "quicklook": "quicklook", "scales": "scales"}
        info = _info(
            cfg, year, model, sidecars, item_id=out.stem, grid=roi.grid, valid_pixels=valid, source_links=links,
            assets={asset: paths[key].name for asset, key in names.items() if key in paths},
        )  # fmt: skip
        item = build_item(info)
        pystac.validation.validate_dict(item, validator=offline_validator())
        tmp["item"].write_text(json.dumps(item, indent=2) + "\n")
    logger.info("wrote %s (+ %s)", out, ", ".join(p.name for k, p in paths.items() if k != "cog"))
