"""Bad inputs give a named error that says what was wrong and how to fix it, and leave no partial output.

One case per row of docs/bad-inputs.md (the ``#`` column is the case's position in `CASES`). Cases go
through the real ``tessera`` console script (`tessera.cli.main`) where a user would meet them, and through
the library function with a fast `RetryPolicy` where only the retry timing would differ. Every input is
tiny and seeded; the network cases use real HTTP servers on 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
import rasterio.warp
import torch
import yaml
from affine import Affine

from tessera.cli import main
from tessera.config import SourceConfig
from tessera.errors import TesseraError
from tessera.grid import Chunk, Grid, load_roi
from tessera.models import demo
from tessera.models.arch import architecture
from tessera.plan import StoredPlan, write_plan
from tessera.read import read_s2
from tessera.search import run_search, write_item_collection
from tessera.transport import RetryPolicy
from tests.tilegen import cut, make_world, write_tile_dir
from tests.traindata import WORLD, block_classes, tiny_config, write_label_raster, write_results

#: A ~1.4 km x 1.1 km field near Cambridge (UTM 31N).
POLY = [[0.10, 52.20], [0.12, 52.20], [0.12, 52.21], [0.10, 52.21], [0.10, 52.20]]
FAST = RetryPolicy(attempts=2, backoff_s=0.01, max_backoff_s=0.01, connect_timeout_s=2.0, read_timeout_s=2.0)
#: Words a message uses to tell the user what to do.
FIX_HINT = re.compile(
    r"\b(set|use|check|install|re-?run|point|remove|add|reproject|raise|write|fix|download|delete|buffer|pass)\b",
    re.IGNORECASE,
)
S2_ASSETS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12", "SCL")


@dataclass
class Run:
    """How one case is run, what must not exist afterwards, and what the message must name."""

    says: list[str]
    outputs: list[Path]
    argv: list[str] | None = None
    call: Callable[[], Any] | None = None


@dataclass(frozen=True)
class Case:
    id: str
    error: str
    build: Callable[[Path, str], Run]


# --- inputs ----------------------------------------------------------------------------------------


def polygon_roi(tmp: Path) -> Path:
    path = tmp / "roi.geojson"
    path.write_text(json.dumps({"type": "Polygon", "coordinates": [POLY]}))
    return path


def write_config(tmp: Path, roi: Path | None = None, **overrides: Any) -> Path:
    cfg: dict[str, Any] = {
        "roi": str(roi or polygon_roi(tmp)),
        "years": [2022],
        "chunk_size_m": 1000,
        "tile_size": 40,
        "model": {"device": "cpu"},
    }
    cfg.update(overrides)
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def search_run(tmp: Path, config: Path, says: list[str]) -> Run:
    """``tessera plan``: the checks the workflow makes when it parses, before any job and any file."""
    return Run(says, [tmp / "results"], argv=["plan", "--config", str(config)])


def config_case(tmp: Path, says: list[str], **overrides: Any) -> Run:
    return search_run(tmp, write_config(tmp, **overrides), says)


def roi_case(tmp: Path, roi: Path, says: list[str], **overrides: Any) -> Run:
    return search_run(tmp, write_config(tmp, roi, **overrides), says)


def write_raster(path: Path, data: np.ndarray, crs: str | None) -> Path:
    transform = Affine(10.0, 0.0, 300000.0, 0.0, -10.0, 5800000.0) if crs else Affine.identity()
    profile = {"driver": "GTiff", "height": data.shape[0], "width": data.shape[1], "count": 1, "dtype": "uint8"}
    with rasterio.open(path, "w", **profile, crs=crs, transform=transform) as dst:
        dst.write(data, 1)
    return path


def tile_dir(tmp: Path) -> Path:
    tile, grid = cut(make_world(0, 8, 8), 0, 0, 8)
    return write_tile_dir(tmp / "tiles" / "0_0_8_8", tile, grid)


def infer_run(tmp: Path, tile: Path, says: list[str]) -> Run:
    """``tessera embed-tile``: its three outputs must all be absent after a failure."""
    config = write_config(tmp, model={"device": "cpu"})
    out = tmp / "emb" / "0_0_8_8.npy"
    outputs = [out, out.with_name("0_0_8_8_scales.npy"), out.with_suffix(".json")]
    argv = ["embed-tile", "--config", str(config), "--year", "2022", "--tile-dir", str(tile), "--out", str(out)]
    return Run(says, outputs, argv=argv)


def checkpoint_run(tmp: Path, checkpoint: Path, says: list[str]) -> Run:
    """``tessera validate-config``: the checkpoint is checked when the workflow parses, before any download."""
    config = write_config(tmp, model={"device": "cpu", "checkpoint": str(checkpoint)})
    return Run(says, [tmp / "results"], argv=["validate-config", "--config", str(config)])


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def stac_cfg(url: str) -> SourceConfig:
    return SourceConfig("stac", url=url, collection="sentinel-2-l2a")


GRID = Grid("EPSG:32631", 10.0, 30200, -578500, 8, 8)


def remote_s2_item(base: str) -> pystac.Item:
    """An S2 item whose every asset is an http:// COG URL on ``base``."""
    bbox = list(rasterio.warp.transform_bounds(GRID.crs, "EPSG:4326", *GRID.bounds))
    ring = [[bbox[0], bbox[1]], [bbox[2], bbox[1]], [bbox[2], bbox[3]], [bbox[0], bbox[3]], [bbox[0], bbox[1]]]
    when = pystac.utils.str_to_datetime("2022-07-01T10:30:00Z")
    item = pystac.Item("S2B_20220701", {"type": "Polygon", "coordinates": [ring]}, bbox, when, {"proj:epsg": 32631})
    for band in S2_ASSETS:
        asset = pystac.Asset(f"{base}/cog503/{band}.tif", media_type="image/tiff; application=geotiff")
        asset.extra_fields.update({"proj:shape": [8, 8], "proj:transform": list(GRID.transform)[:6]})
        item.add_asset(band, asset)
    return item


# --- cases -----------------------------------------------------------------------------------------


def _unknown_key(tmp: Path, base: str) -> Run:
    return config_case(tmp, ["chunk_sise_m", "was unexpected"], chunk_sise_m=1000)


def _wrong_type(tmp: Path, base: str) -> Run:
    return config_case(tmp, ["tile_size", "'big' is not of type 'integer'"], tile_size="big")


def _year_out_of_range(tmp: Path, base: str) -> Run:
    return config_case(tmp, ["[2016]", "outside the mission years 2017.."], years=[2016, 2022])


def _unknown_source(tmp: Path, base: str) -> Run:
    return config_case(tmp, ["s2/source", "'sentinel-hub' is not one of"], s2={"source": "sentinel-hub"})


def _stac_without_url(tmp: Path, base: str) -> Run:
    return config_case(tmp, ["s1.source is 'stac'", "s1.url"], s1={"source": "stac"})


def _period_not_month_day(tmp: Path, base: str) -> Run:
    return config_case(tmp, ["period '10/01' is not a month-day", "MM-DD", "'10-01'"], period="10/01")


def _offset_rule_in_s1(tmp: Path, base: str) -> Run:
    s1 = {"source": "planetary-computer", "offset_rule": "acquisition-date"}
    return config_case(tmp, ["'offset_rule' was unexpected", "s2.offset_rule are Sentinel-2 keys"], s1=s1)


def _tile_larger_than_chunk(tmp: Path, base: str) -> Run:
    says = ["tile_size = 400 px is larger than a chunk (1000 m = 100 px at 10 m)", "at most 100"]
    return config_case(tmp, says, tile_size=400)


def _results_dir_is_a_file(tmp: Path, base: str) -> Run:
    notes = tmp / "results.txt"
    notes.write_text("not a directory\n")
    config = write_config(tmp, results_dir=str(notes))
    says = [f"results_dir {notes} is a file", "set results_dir to a directory"]
    return Run(says, [], argv=["plan", "--config", str(config)])


def _config_not_yaml(tmp: Path, base: str) -> Run:
    config = tmp / "config.yaml"
    config.write_text("roi: [unclosed\nyears: 2022\n")
    return search_run(tmp, config, [str(config), "not valid YAML"])


def _roi_missing(tmp: Path, base: str) -> Run:
    roi = tmp / "nowhere" / "roi.tif"
    return roi_case(tmp, roi, [str(roi), "does not exist"])


def _roi_not_geodata(tmp: Path, base: str) -> Run:
    roi = tmp / "roi.txt"
    roi.write_text("the wheat field north of the farm\n")
    return roi_case(tmp, roi, [str(roi), "neither a raster (GeoTIFF) nor a vector file"])


def _roi_table(tmp: Path, base: str) -> Run:
    roi = tmp / "roi.csv"
    roi.write_text("field,crop\n1,wheat\n")
    return roi_case(tmp, roi, [str(roi), "a table without geometries"])


def _roi_no_inside_pixel(tmp: Path, base: str) -> Run:
    roi = write_raster(tmp / "roi.tif", np.zeros((6, 6), np.uint8), "EPSG:32631")
    return roi_case(tmp, roi, [str(roi), "no inside pixel"])


def _roi_raster_no_crs(tmp: Path, base: str) -> Run:
    roi = write_raster(tmp / "roi.tif", np.ones((6, 6), np.uint8), None)
    return roi_case(tmp, roi, [str(roi), "has no CRS"])


def _roi_too_large(tmp: Path, base: str) -> Run:
    roi = polygon_roi(tmp)
    return roi_case(tmp, roi, [str(roi), "km2, more than max_roi_area_km2 = 0.5"], max_roi_area_km2=0.5)


def _vector(tmp: Path, geometry: dict[str, Any]) -> Path:
    roi = tmp / "roi.geojson"
    feature = {"type": "Feature", "properties": {}, "geometry": geometry}
    roi.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    return roi


def _roi_points(tmp: Path, base: str) -> Run:
    roi = _vector(tmp, {"type": "MultiPoint", "coordinates": POLY[:3]})
    return roi_case(tmp, roi, [str(roi), "no area (only points or lines)"])


def _roi_lines(tmp: Path, base: str) -> Run:
    roi = _vector(tmp, {"type": "LineString", "coordinates": POLY})
    return roi_case(tmp, roi, [str(roi), "no area (only points or lines)"])


def _checkpoint_missing(tmp: Path, base: str) -> Run:
    ckpt = tmp / "tessera_v1.pt"
    return checkpoint_run(tmp, ckpt, [str(ckpt), "does not exist", "model.checkpoint"])


def _checkpoint_corrupt(tmp: Path, base: str) -> Run:
    ckpt = tmp / "tessera_v1.pt"
    ckpt.write_bytes(np.random.default_rng(7).integers(0, 256, 512, dtype=np.uint8).tobytes())
    return checkpoint_run(tmp, ckpt, [str(ckpt), "corrupt or not a PyTorch file"])


def _checkpoint_other_architecture(tmp: Path, base: str) -> Run:
    # the demo model is v1.0-shaped but far narrower: every matrix has the wrong shape for v1.0
    ckpt = tmp / "tessera_v1.pt"
    torch.save({"model_state_dict": demo.build().state_dict()}, ckpt)
    return checkpoint_run(tmp, ckpt, [str(ckpt), "does not match the v1.0 architecture", "shape mismatches"])


def _tile_file_missing(tmp: Path, base: str) -> Run:
    tile = tile_dir(tmp)
    (tile / "masks.npy").unlink()
    return infer_run(tmp, tile, [str(tile / "masks.npy"), "is missing"])


def _tile_misshaped(tmp: Path, base: str) -> Run:
    tile = tile_dir(tmp)
    np.save(tile / "bands.npy", np.load(tile / "bands.npy")[:, :7])
    return infer_run(tmp, tile, [str(tile / "bands.npy"), "covers (7, 8) pixels but roi.tiff is (8, 8)"])


def _tile_wrong_dtype(tmp: Path, base: str) -> Run:
    tile = tile_dir(tmp)
    np.save(tile / "bands.npy", np.load(tile / "bands.npy").astype(np.float32))
    return infer_run(tmp, tile, [str(tile / "bands.npy"), "dtype float32, expected uint16"])


def _tile_roi_not_georeferenced(tmp: Path, base: str) -> Run:
    tile = tile_dir(tmp)
    (tile / "roi.tiff").unlink()
    write_raster(tile / "roi.tiff", np.ones((8, 8), np.uint8), None)
    return infer_run(tmp, tile, [str(tile / "roi.tiff"), "no CRS or geotransform"])


def _search_unreachable(tmp: Path, base: str) -> Run:
    url = f"http://127.0.0.1:{closed_port()}"
    out = tmp / "search" / "s2.json"
    chunk = Chunk("c", GRID)
    return Run(
        [url, "Connection refused", "s2.url"],
        [out],
        call=lambda: run_search(stac_cfg(url), chunk, 2022, "s2", out, policy=FAST),
    )


def _search_not_stac(tmp: Path, base: str) -> Run:
    url = f"{base}/not-stac"
    out = tmp / "search" / "s2.json"
    chunk = Chunk("c", GRID)
    return Run(
        [url, "Not Found", "STAC API root"],
        [out],
        call=lambda: run_search(stac_cfg(url), chunk, 2022, "s2", out, policy=FAST),
    )


def _scene_503(tmp: Path, base: str) -> Run:
    items = tmp / "s2.json"
    write_item_collection([remote_s2_item(base)], items)
    out = tmp / "stack" / "s2"
    return Run(
        ["S2B_20220701", "503", "failed 2 times"],
        [out / "bands.npy", out / "masks.npy", out / "doys.npy", out / "qa.json"],
        call=lambda: read_s2(
            stac_cfg(base), np.ones(GRID.shape, np.uint8), Chunk("c", GRID), 2022, items, out, policy=FAST
        ),
    )


def _items_not_json(tmp: Path, base: str) -> Run:
    roi = polygon_roi(tmp)
    plan_dir = tmp / "plan"
    write_plan(load_roi(roi), "k", 1000, plan_dir)
    chunk = StoredPlan(plan_dir).chunks[0].id
    items = tmp / "s2.json"
    items.write_text("<html>502 Bad Gateway</html>\n")
    out = tmp / "stack" / "s2"
    settings = json.dumps({"s2": {"source": "stac", "url": base, "collection": "sentinel-2-l2a"}})
    argv = ["read-s2", "--settings", settings, "--plan", str(plan_dir), "--chunk", chunk, "--year", "2022"]
    return Run(
        [str(items), "not a readable ItemCollection"],
        [out / "bands.npy", out / "masks.npy", out / "doys.npy", out / "qa.json"],
        argv=[*argv, "--items", str(items), "--out-dir", str(out)],
    )


def train_run(tmp: Path, says: list[str], years: str = "2022", *extra: str) -> Run:
    """``tessera train`` on small seeded tiles with tiny settings: no checkpoint may be written."""
    results = write_results(tmp / "results")
    settings = tmp / "train.yaml"
    settings.write_text(yaml.safe_dump({k: v for k, v in tiny_config().to_dict().items() if k != "arch"}))
    out = tmp / "train"
    argv = ["train", "--data", str(results), "--years", years, "--out-dir", str(out), "--train-config", str(settings)]
    return Run(says, [out / "encoder.pt", out / "checkpoint.pt"], argv=[*argv, *extra])


def _train_no_tiles_for_year(tmp: Path, base: str) -> Run:
    return train_run(tmp, ["no tiles for year 2021", "2021"], "2021")


def _train_unknown_architecture(tmp: Path, base: str) -> Run:
    return train_run(tmp, ["unknown architecture 'v3'", "v2-large"], "2022", "--arch", "v3")


def _train_resume_other_architecture(tmp: Path, base: str) -> Run:
    other = tmp / "other.pt"
    arch = architecture("v2-nano").to_dict()
    torch.save({"model_state_dict": {}, "arch": arch, "optimizer_state_dict": {}, "step": 3}, other)
    return train_run(tmp, [str(other), "architecture v2-nano", "not demo"], "2022", "--resume", str(other))


def _train_overlapping_tiles(tmp: Path, base: str) -> Run:
    run = train_run(tmp, [], "2022")
    tiles = tmp / "results" / "2022" / "tiles"
    first = sorted((tiles / "chunk").iterdir())[0]
    shutil.copytree(first, tiles / "old-chunk" / first.name)  # a stale export of an earlier chunking
    return dataclasses.replace(run, says=["cover the same pixels of 2022", "old-chunk", "delete it"])


REPORT_FILES = (".json", ".md", "_confusion.png", "_predictions.csv", "_split.csv")
"""What `tessera evaluate` writes next to its ``--out`` prefix."""


def evaluate_run(tmp: Path, classes: np.ndarray, transform: Affine, says: list[str]) -> Run:
    """``tessera evaluate`` of a random demo checkpoint: no report file may be written."""
    results = write_results(tmp / "results")
    checkpoint = tmp / "demo.pt"
    arch = architecture("demo")
    torch.save(arch.encoder_payload(arch.build(seed=0).state_dict()), checkpoint)
    labels = write_label_raster(tmp / "labels.tif", classes, transform)
    prefix = tmp / "probe"
    argv = ["evaluate", "--checkpoint", str(checkpoint), "--labels", str(labels), "--data", str(results)]
    outputs = [prefix.with_name(prefix.name + ext) for ext in REPORT_FILES]
    return Run([str(labels), *says], outputs, argv=[*argv, "--year", "2022", "--out", str(prefix)])


def _evaluate_labels_outside_roi(tmp: Path, base: str) -> Run:
    far = WORLD.transform @ Affine.translation(5000, 0)
    return evaluate_run(tmp, block_classes(), far, ["do not overlap the ROI of any of the 4 tiles"])


def _evaluate_single_class(tmp: Path, base: str) -> Run:
    return evaluate_run(tmp, np.full((48, 48), 2), WORLD.transform, ["single class (2)", "two or more classes"])


def _evaluate_product_missing(tmp: Path, base: str) -> Run:
    """``tessera evaluate --product`` of a product that was never made: refused before any label is read."""
    results = write_results(tmp / "results")
    labels = write_label_raster(tmp / "labels.tif", block_classes(), WORLD.transform)
    product, prefix = tmp / "results" / "2022" / "products" / "tessera_2022.tif", tmp / "probe"
    argv = ["evaluate", "--product", str(product), "--labels", str(labels), "--data", str(results)]
    outputs = [prefix.with_name(prefix.name + ext) for ext in REPORT_FILES]
    says = [f"product {product} does not exist", "point --product at an existing product"]
    return Run(says, outputs, argv=[*argv, "--year", "2022", "--out", str(prefix)])


def _export_without_products(tmp: Path, _: str) -> Run:
    """``tessera export geotessera`` for a year whose products were never made."""
    out = tmp / "results" / "2022" / "geotessera"
    argv = ["export", "geotessera", "--config", str(write_config(tmp)), "--year", "2022"]
    return Run(["no products of 2022 yet", "tessera_2022.tif does not exist", "snakemake"], [out], argv=argv)


def _export_other_registry(tmp: Path, _: str) -> Run:
    """An export into a directory that already holds a registry this pipeline did not write (a 2023 export
    without its ``tessera_metadata.json``, as a geotessera download looks)."""
    from tessera.export.geotessera import METADATA_FILE, export_geotessera
    from tests.productgen import RES, write_product
    from tests.productgen import write_config as product_config

    product = write_product(tmp)
    other = write_product(tmp / "other", year=2023)
    out = tmp / "geotessera"
    export_geotessera(load_roi(other.roi, RES), other.cog, 2023, out)
    (out / METADATA_FILE).unlink()
    argv = ["export", "geotessera", "--config", str(product_config(tmp, product)), "--year", "2022", "--out", str(out)]
    says = [f"{out} already holds a registry that is not a tessera-pipeline export (4 tile(s) of 2023", "--out"]
    return Run(says, [out / "global_0.1_degree_representation" / "2022"], argv=argv)


CASES = [
    Case("config-unknown-key", "ConfigError", _unknown_key),
    Case("config-wrong-type", "ConfigError", _wrong_type),
    Case("config-year-out-of-range", "ConfigError", _year_out_of_range),
    Case("config-unknown-source", "ConfigError", _unknown_source),
    Case("config-stac-without-url", "ConfigError", _stac_without_url),
    Case("config-not-yaml", "ConfigError", _config_not_yaml),
    Case("roi-missing", "RoiError", _roi_missing),
    Case("roi-not-raster-or-vector", "RoiError", _roi_not_geodata),
    Case("roi-table-without-geometry", "RoiError", _roi_table),
    Case("roi-no-inside-pixel", "RoiError", _roi_no_inside_pixel),
    Case("roi-raster-without-crs", "RoiError", _roi_raster_no_crs),
    Case("roi-too-large", "RoiError", _roi_too_large),
    Case("roi-only-points", "RoiError", _roi_points),
    Case("roi-only-lines", "RoiError", _roi_lines),
    Case("checkpoint-missing", "CheckpointError", _checkpoint_missing),
    Case("checkpoint-corrupt", "CheckpointError", _checkpoint_corrupt),
    Case("checkpoint-other-architecture", "CheckpointError", _checkpoint_other_architecture),
    Case("tile-file-missing", "TileError", _tile_file_missing),
    Case("tile-misshaped", "TileError", _tile_misshaped),
    Case("tile-wrong-dtype", "TileError", _tile_wrong_dtype),
    Case("tile-roi-not-georeferenced", "TileError", _tile_roi_not_georeferenced),
    Case("stac-api-unreachable", "DataSourceError", _search_unreachable),
    Case("stac-url-not-a-stac-api", "DataSourceError", _search_not_stac),
    Case("scene-read-persistent-503", "TransportError", _scene_503),
    Case("itemcollection-not-json", "DataSourceError", _items_not_json),
    Case("train-no-tiles-for-year", "NoTilesError", _train_no_tiles_for_year),
    Case("train-unknown-architecture", "ArchitectureError", _train_unknown_architecture),
    Case("train-resume-other-architecture", "ResumeMismatchError", _train_resume_other_architecture),
    Case("evaluate-labels-outside-roi", "LabelError", _evaluate_labels_outside_roi),
    Case("evaluate-single-class", "LabelError", _evaluate_single_class),
    Case("export-year-without-products", "ProductsMissingError", _export_without_products),
    Case("export-dir-holds-other-registry", "ExportConflictError", _export_other_registry),
    Case("config-period-not-month-day", "PeriodError", _period_not_month_day),
    Case("config-offset-rule-in-s1", "ConfigError", _offset_rule_in_s1),
    Case("train-overlapping-tiles", "TileError", _train_overlapping_tiles),
    Case("config-tile-larger-than-chunk", "ConfigError", _tile_larger_than_chunk),
    Case("config-results-dir-is-a-file", "ConfigError", _results_dir_is_a_file),
    Case("evaluate-product-missing", "ProductsMissingError", _evaluate_product_missing),
]


# --- the test --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def http_base() -> Iterator[str]:
    """A loopback server: ``/not-stac/*`` answers 404 with an HTML page, ``/cog503/*`` always 503."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.path.startswith("/cog503/"):
                self.send_response(503)
                self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = b"<!DOCTYPE html><html><body><h1>Not Found</h1></body></html>\n"
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_HEAD = do_GET
        do_POST = do_GET

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """Run the console script; check exit 2 and the one-line ``tessera <cmd>: error: <Name>: <message>``."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    prefix = f"tessera {argv[0]}: error: "
    lines = err.rstrip("\n").splitlines()
    assert lines and lines[-1].startswith(prefix), err
    assert sum(line.startswith(prefix) for line in lines) == 1
    name, _, message = lines[-1][len(prefix) :].partition(": ")
    return name, message


def run_library(call: Callable[[], Any]) -> tuple[str, str]:
    with pytest.raises(TesseraError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    return type(caught.value).__name__, message


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, http_base: str, capsys: pytest.CaptureFixture[str]) -> None:
    run = case.build(tmp_path, http_base)
    if run.argv is not None:
        name, message = run_cli(run.argv, capsys)
    else:
        assert run.call is not None
        name, message = run_library(run.call)
    assert name == case.error, message
    for fragment in run.says:
        assert fragment in message, (fragment, message)
    assert FIX_HINT.search(message), f"no fix hint in: {message}"
    for out in run.outputs:
        assert not out.exists(), out
        if out.parent.is_dir():
            leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(".tmp-")]
            assert not leftovers, leftovers


def test_every_case_is_in_the_docs_table() -> None:
    table = (Path(__file__).resolve().parents[1] / "docs" / "bad-inputs.md").read_text()
    rows = [line for line in table.splitlines() if re.match(r"\|\s*\d+\s*\|", line)]
    assert len(rows) == len(CASES) >= 18
    for number, (row, case) in enumerate(zip(rows, CASES, strict=True), 1):
        assert row.split("|")[1].strip() == str(number)
        assert f"`{case.id}`" in row and f"`{case.error}`" in row, row
