# Parse-time planning: validate the config, load the ROI, plan chunks and tiles.
# Input functions only; no numeric code here.
import json
import sys
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError

from tessera.config import validate_config
from tessera.errors import TesseraError
from tessera.grid import cached_roi, plan_chunks, plan_tiles
from tessera.io import write_json_atomic

if not config:
    with open(Path(workflow.basedir) / "config" / "config.yaml") as _fh:
        config.update(yaml.safe_load(_fh))

try:
    CFG = validate_config(config)
    ROI = cached_roi(CFG["roi"], float(CFG["resolution"]), float(CFG["max_roi_area_km2"]))
    CHUNKS = {c.id: c for c in plan_chunks(ROI, CFG["chunk_size_m"])}
    TILES = {cid: [t.name for t in plan_tiles(ROI, c, CFG["tile_size"])] for cid, c in CHUNKS.items()}
except TesseraError as _exc:
    raise WorkflowError(f"{type(_exc).__name__}: {_exc}") from None

RES = CFG["results_dir"]
YEARS = [str(y) for y in CFG["years"]]
INT8 = CFG["model"]["output"] == "int8"
# The validated config every job reads; rewritten only when it changes, so mtimes stay put.
CONFIG_JSON = f"{RES}/.tessera/config.json"
if not Path(CONFIG_JSON).exists() or json.loads(Path(CONFIG_JSON).read_text()) != CFG:
    write_json_atomic(CONFIG_JSON, CFG)
# One GPU per inference job unless the config pins inference to the CPU.
INFER_GPUS = 0 if CFG["model"]["device"] == "cpu" else 1
TILE_FILES = [
    "bands.npy",
    "masks.npy",
    "doys.npy",
    "sar_ascending.npy",
    "sar_ascending_doy.npy",
    "sar_descending.npy",
    "sar_descending_doy.npy",
    "roi.tiff",
]

print(
    f"tessera: ROI {CFG['roi']} -> grid {ROI.grid.crs} {ROI.grid.width}x{ROI.grid.height} px, "
    f"{len(CHUNKS)} chunks, {sum(map(len, TILES.values()))} tiles, years {', '.join(YEARS)}",
    file=sys.stderr,
)


wildcard_constraints:
    year=r"\d{4}",
    chunk=r"[0-9]+m_E-?[0-9.]+_N-?[0-9.]+",
    tile=r"\d+_\d+_\d+_\d+",
    product=r"s2|s1-ascending|s1-descending",
    orbit=r"ascending|descending",


def maybe_temp(path):
    """Tiles are large: temp() unless the config keeps them."""
    return path if CFG["keep_tiles"] else temp(path)


def tile_dir(wildcards):
    return f"{RES}/{wildcards.year}/tiles/{wildcards.chunk}/{wildcards.tile}"


def embedding_files(year, chunk, tile):
    """Named outputs of one tile's inference: embedding, sidecar metadata and (int8) scales."""
    stem = f"{RES}/{year}/embeddings/{chunk}/{tile}"
    files = {"embedding": f"{stem}.npy", "meta": f"{stem}.json"}
    return {**files, "scales": f"{stem}_scales.npy"} if INT8 else files


def year_embeddings(wildcards):
    """Every tile embedding of one year."""
    return [
        f
        for cid, tiles in TILES.items()
        for tile in tiles
        for f in embedding_files(wildcards.year, cid, tile).values()
    ]


def year_searches(wildcards):
    return [
        f"{RES}/{wildcards.year}/search/{cid}/{product}.json"
        for cid in CHUNKS
        for product in ("s2", "s1-ascending", "s1-descending")
    ]


def year_stack_qa(wildcards):
    """qa.json and valid-count map of every read step of one year."""
    return [
        f"{RES}/{wildcards.year}/stack/{cid}/{product}/{name}"
        for cid in CHUNKS
        for product in ("s2", "s1-ascending", "s1-descending")
        for name in ("qa.json", "valid_count.npy")
    ]


def product_files(year):
    """Named products of one year: COG, STAC Item, quicklook and (int8) the scales COG."""
    stem = f"{RES}/{year}/products/tessera_{year}"
    files = {"cog": f"{stem}.tif", "item": f"{stem}.json", "quicklook": f"{stem}_quicklook.png"}
    return {**files, "scales": f"{stem}_scales.tif"} if INT8 else files


def all_products():
    qa = [f"{RES}/{year}/products/tessera_{year}_qa.md" for year in YEARS]
    return [f for year in YEARS for f in product_files(year).values()] + qa


def report_skipped_scenes():
    """At the end of a run, say which scenes were skipped (never silently)."""
    from tessera.qa import load_stack_qa, skipped_scenes

    for year in YEARS:
        stack = Path(RES) / year / "stack"
        if not all((stack / cid / p / "qa.json").exists() for cid in CHUNKS for p in ("s2", "s1-ascending", "s1-descending")):
            continue
        rows = skipped_scenes(load_stack_qa(stack, list(CHUNKS)))
        if rows:
            print(f"tessera: {year}: {len(rows)} scene(s) skipped (details in {RES}/{year}/products/tessera_{year}_qa.md):", file=sys.stderr)
            for cid, product, scene, reason in rows:
                print(f"  {cid} {product} {scene}: {reason}", file=sys.stderr)
