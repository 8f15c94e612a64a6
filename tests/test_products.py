"""Stitched products: COG layout and values, STAC Item, quicklook, failure behaviour."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pystac.validation
import pytest
import rasterio
from affine import Affine

import tessera.cog
import tessera.products
from tessera.errors import TileError
from tessera.grid import Roi, load_roi
from tessera.plan import StoredPlan, plan_tiles_file, write_plan
from tessera.products import product_paths, stitch
from tessera.quicklook import write_quicklook
from tessera.stacitem import EMB_SCHEMA_URI, offline_validator, validate_offline

DIMS = 16
TILE = 16
CHUNK_M = 300.0  # 30 px chunks: the 70 x 50 ROI spans 3 x 2 chunks, most of them clipped
YEAR = 2022
SHA = "ab" * 32


@dataclass
class World:
    plan: StoredPlan
    roi: Roi
    emb_dir: Path
    search_dir: Path
    stack_dir: Path
    out: Path
    truth: np.ndarray
    """float32 (H, W, D) embeddings on the ROI grid, NaN outside the ROI."""


def _embedding(cols: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Structured embeddings: four zones, each with its own direction, plus a smooth ramp."""
    rng = np.random.default_rng(7)
    directions = rng.normal(size=(4, DIMS)).astype(np.float32)
    zone = (cols % 40 >= 20).astype(int) + 2 * (rows % 30 >= 15).astype(int)
    ramp = np.sin(cols[..., None] * 0.05 + rows[..., None] * 0.03 + np.arange(DIMS) * 0.4)
    return (directions[zone] + 0.3 * ramp).astype(np.float32)


def _quantize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scale = np.maximum(np.abs(x).max(axis=-1) / 127.0, 1e-8).astype(np.float32)
    return np.clip(np.round(x / scale[..., None]), -128, 127).astype(np.int8), scale


def _write_roi(path: Path) -> None:
    mask = np.ones((50, 70), np.uint8)
    rr, cc = np.mgrid[0:50, 0:70]
    mask[rr + cc > 95] = 0  # bottom-right corner outside; the bounding box stays 70 x 50
    profile = {"driver": "GTiff", "width": 70, "height": 50, "count": 1, "dtype": "uint8", "crs": "EPSG:32630"}
    with rasterio.open(path, "w", transform=Affine(10, 0, 500150, 0, -10, 5000080), **profile) as ds:
        ds.write(mask, 1)


def _sidecar(output: str, random_weights: bool, policy: str) -> dict[str, Any]:
    return {
        "nodata_policy": policy,
        "model_family": "demo" if random_weights else "v1.1",
        "checkpoint_sha256": None if random_weights else SHA,
        "checkpoint": None if random_weights else "tessera_v1_1.pt",
        "random_weights": random_weights,
        "dimensions": DIMS,
        "output": output,
        "precision": "fp32",
        "device": "cpu",
        "pipeline_version": "0.0.0",
        "year": YEAR,
        "valid_pixels": 1,
        "nodata_pixels": 0,
        "nodata_reasons": {},
    }


def _counts(product: str, cols: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """A read step's valid_count.npy pattern, from global positions (so chunks agree on it)."""
    k = {"s2": 3, "s1-ascending": 5, "s1-descending": 7}[product]
    return ((cols * k + rows) % (4 + k)).astype(np.uint16)


def _make_world(
    tmp: Path,
    output: str = "int8",
    random_weights: bool = False,
    policy: str = "strict",
    window: str | None = None,
    legacy_nodata: bool = False,
) -> World:
    """A stitch input world; ``legacy_nodata`` writes tiles as releases before the reference encoding did."""
    tmp.mkdir(parents=True, exist_ok=True)
    _write_roi(tmp / "roi.tif")
    roi = load_roi(tmp / "roi.tif", 10.0)
    write_plan(roi, "key", CHUNK_M, tmp / "plan")
    plan_tiles_file(StoredPlan(tmp / "plan"), TILE, tmp / "plan" / f"tiles-{TILE}.json")
    plan = StoredPlan(tmp / "plan", TILE)
    g = roi.grid
    rows, cols = np.mgrid[0 : g.height, 0 : g.width]
    truth = _embedding(cols + g.col, rows + g.row)
    truth[roi.mask(g) == 0] = np.nan
    emb_dir, search_dir, stack_dir = tmp / "embeddings", tmp / "search", tmp / "stack"
    for chunk in plan.chunks:
        (emb_dir / chunk.id / "all").mkdir(parents=True)
        (search_dir / chunk.id).mkdir(parents=True)
        for product in ("s2", "s1-ascending", "s1-descending"):
            feats = [{"type": "Feature", "id": f"{product}-{chunk.id}"}]
            (search_dir / chunk.id / f"{product}.json").write_text(
                json.dumps({"type": "FeatureCollection", "features": feats})
            )
            (stack_dir / chunk.id / product).mkdir(parents=True)
            collection = "sentinel-2-l2a" if product == "s2" else "sentinel-1-rtc"
            qa: dict[str, Any] = {"source": {"provider": "planetary-computer", "collection": collection}}
            if window is not None:
                qa["window"] = window
            (stack_dir / chunk.id / product / "qa.json").write_text(json.dumps(qa))
            crows, ccols = np.mgrid[0 : chunk.grid.height, 0 : chunk.grid.width]
            counts = _counts(product, ccols + chunk.grid.col, crows + chunk.grid.row)
            counts[plan.mask(chunk.grid) == 0] = 0  # the read steps count nothing outside the ROI
            np.save(stack_dir / chunk.id / product / "valid_count.npy", counts)
        for t in plan.tiles(chunk.id):
            col, row = chunk.grid.window(t.x0, t.y0, t.x1 - t.x0, t.y1 - t.y0).offset_in(g)
            real = truth[row : row + t.y1 - t.y0, col : col + t.x1 - t.x0]
            base = emb_dir / chunk.id / "all" / t.name
            if output == "int8":
                codes = np.full((TILE, TILE, DIMS), 99, np.int8)  # padding junk: must never be read
                scales = np.full((TILE, TILE), 5.0, np.float32)
                ok = np.isfinite(real).all(axis=-1)
                q, s = _quantize(np.nan_to_num(real))
                codes[: real.shape[0], : real.shape[1]] = np.where(ok[..., None], q, 0)
                scales[: real.shape[0], : real.shape[1]] = np.where(ok, s, np.nan if legacy_nodata else 0.0)
                np.save(base.with_suffix(".npy"), codes)
                np.save(base.with_name(t.name + "_scales.npy"), scales)
            else:
                values = np.full((TILE, TILE, DIMS), 7.0, np.float32)
                values[: real.shape[0], : real.shape[1]] = real if legacy_nodata else np.nan_to_num(real)
                np.save(base.with_suffix(".npy"), values)
            base.with_suffix(".json").write_text(json.dumps(_sidecar(output, random_weights, policy)))
    out = tmp / "products" / f"tessera_{YEAR}.tif"
    return World(plan, roi, emb_dir, search_dir, stack_dir, out, truth)


def _stitch(w: World) -> None:
    parts = sorted(w.emb_dir.glob("*/all"))
    stitch(w.plan, YEAR, parts, w.search_dir, w.stack_dir, w.out, block_size=16, window_blocks=2)


def _check_cog(path: Path, w: World, count: int, dtype: str) -> None:
    with rasterio.open(path) as ds:
        assert ds.crs.to_epsg() == 32630
        assert ds.transform == w.roi.grid.transform
        assert (ds.height, ds.width) == w.roi.grid.shape
        assert ds.count == count and ds.dtypes[0] == dtype
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert ds.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "DEFLATE"
        assert ds.overviews(1), "COG without overviews"
        assert ds.block_shapes[0] == (16, 16)


def test_int8_product_values_layout_and_tags(tmp_path: Path) -> None:
    w = _make_world(tmp_path)
    _stitch(w)
    paths = product_paths(w.out, int8=True)
    _check_cog(paths["cog"], w, DIMS, "int8")
    _check_cog(paths["scales"], w, 1, "float32")
    with rasterio.open(paths["cog"]) as ds, rasterio.open(paths["scales"]) as ss:
        codes, scales = ds.read(), ss.read(1)
        tags, descriptions, nodata = ds.tags(), ds.descriptions, ds.nodata
    assert nodata == -128
    assert descriptions == tuple(f"A{i:02d}" for i in range(DIMS))
    assert tags["TESSERA_MODEL_FAMILY"] == "v1.1" and tags["TESSERA_MODEL_VERSION"] == "1.1"
    assert tags["TESSERA_CHECKPOINT_SHA256"] == SHA and tags["TESSERA_RANDOM_WEIGHTS"] == "false"
    assert tags["TESSERA_YEAR"] == str(YEAR) and "TESSERA_WARNING" not in tags
    assert tags["TESSERA_DATA_SOURCE"] == "s2=planetary-computer;s1=planetary-computer"
    assert "per-pixel scale" in tags["TESSERA_QUANTIZATION"] and tags["TESSERA_PIPELINE_VERSION"]
    inside = np.isfinite(w.truth).all(axis=-1)
    assert (~inside).any() and inside.any()
    assert (codes[:, ~inside] == -128).all() and np.isnan(scales[~inside]).all()
    q, s = _quantize(np.nan_to_num(w.truth))
    np.testing.assert_array_equal(codes[:, inside], np.moveaxis(q, -1, 0)[:, inside])
    np.testing.assert_array_equal(scales[inside], s[inside])
    deq = np.moveaxis(codes, 0, -1).astype(np.float32) * scales[..., None]
    np.testing.assert_allclose(deq[inside], w.truth[inside], atol=float(np.nanmax(s)))


def test_float32_product_random_weights(tmp_path: Path) -> None:
    w = _make_world(tmp_path, output="float32", random_weights=True)
    _stitch(w)
    paths = product_paths(w.out, int8=False)
    assert "scales" not in paths and not (tmp_path / "products" / f"tessera_{YEAR}_scales.tif").exists()
    _check_cog(w.out, w, DIMS, "float32")
    with rasterio.open(w.out) as ds:
        values, tags = ds.read(), ds.tags()
        assert np.isnan(ds.nodata)
    np.testing.assert_array_equal(np.moveaxis(values, 0, -1), w.truth)  # NaN where the truth is NaN
    assert tags["TESSERA_RANDOM_WEIGHTS"] == "true" and "random weights" in tags["TESSERA_WARNING"]
    assert tags["TESSERA_CHECKPOINT_SHA256"] == "none" and tags["TESSERA_QUANTIZATION"].startswith("none")


def test_overview_pixels_dequantise_consistently(tmp_path: Path) -> None:
    w = _make_world(tmp_path)
    _stitch(w)
    paths = product_paths(w.out, int8=True)
    with rasterio.open(paths["cog"], overview_level=0) as ds, rasterio.open(paths["scales"], overview_level=0) as ss:
        codes, scales = ds.read(), ss.read(1)
    ok = np.isfinite(scales)
    assert ok.any() and (codes[:, ~ok] == -128).all()
    # nearest overviews keep whole pixels: every overview vector is one of the full-resolution vectors
    deq = np.moveaxis(codes, 0, -1)[ok].astype(np.float32) * scales[ok][:, None]
    full = w.truth[np.isfinite(w.truth).all(axis=-1)]
    dist = np.abs(deq[:, None, :] - full[None, :, :]).max(axis=-1).min(axis=1)
    assert dist.max() < 0.05


def test_writer_streams_window_by_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = _make_world(tmp_path)
    seen: list[tuple[int, int]] = []
    real_fill = tessera.cog._fill

    def spy(win: Any, *args: Any) -> Any:
        seen.append((int(win.height), int(win.width)))
        return real_fill(win, *args)

    monkeypatch.setattr(tessera.cog, "_fill", spy)
    _stitch(w)
    h, wd = w.roi.grid.shape
    assert len(seen) == -(-h // 32) * -(-wd // 32)  # 32 = block 16 x 2 blocks per window
    assert max(max(s) for s in seen) <= 32
    assert sum(a * b for a, b in seen) == h * wd  # every pixel written exactly once


def test_sidecar_disagreement_is_a_named_error(tmp_path: Path) -> None:
    w = _make_world(tmp_path)
    odd = sorted(w.emb_dir.glob("*/all/*.json"))[3]
    meta = json.loads(odd.read_text())
    meta["checkpoint_sha256"] = "cd" * 32
    odd.write_text(json.dumps(meta))
    with pytest.raises(TileError, match="different models") as err:
        _stitch(w)
    assert f"{odd.parent.parent.name}/{odd.stem}" in str(err.value) and "rerun" in str(err.value)
    assert not w.out.parent.exists() or not any(w.out.parent.iterdir())


def test_missing_tile_is_a_named_error(tmp_path: Path) -> None:
    w = _make_world(tmp_path)
    gone = sorted(w.emb_dir.glob("*/all/*_scales.npy"))[-1]
    gone.unlink()
    with pytest.raises(TileError, match="missing") as err:
        _stitch(w)
    assert str(gone) in str(err.value)


def test_wrong_tile_shape_is_a_named_error(tmp_path: Path) -> None:
    w = _make_world(tmp_path)
    bad = sorted(w.emb_dir.glob("*/all/*[0-9].npy"))[0]
    np.save(bad, np.zeros((TILE, TILE, DIMS + 1), np.int8))
    with pytest.raises(TileError, match=bad.stem):
        _stitch(w)
    assert not any(p.name.startswith("tessera_") for p in w.out.parent.iterdir())


def test_failure_leaves_no_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = _make_world(tmp_path)

    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(tessera.products, "write_quicklook", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        _stitch(w)
    assert list(w.out.parent.iterdir()) == []  # no final file, no temporary file


def test_stac_item_validates_offline(tmp_path: Path) -> None:
    w = _make_world(tmp_path)
    _stitch(w)
    paths = product_paths(w.out, int8=True)
    d = json.loads(paths["item"].read_text())
    item = pystac.Item.from_dict(d)
    assert item.validate(validator=offline_validator())
    assert EMB_SCHEMA_URI in d["stac_extensions"]
    p = d["properties"]
    assert p["start_datetime"].startswith(f"{YEAR}-01-01") and p["end_datetime"].startswith(f"{YEAR}-12-31")
    assert p["data_type"] == "int8" and p["gsd"] == 10.0 and p["emb:runtime_parameters"]["dimensions"] == DIMS
    assert p["emb:quantization"]["method"] == "per_pixel_scale" and p["emb:quantization"]["offset"] == 0
    assert p["emb:quantization"]["link"]["href"] == paths["scales"].name
    assert p["proj:code"] == "EPSG:32630" and p["proj:shape"] == [50, 70]
    assert p["tessera:checkpoint_sha256"] == SHA and p["tessera:random_weights"] is False
    # which API and collection the data came from, as the read steps recorded it (one source per kind here)
    assert p["tessera:sources"] == {
        "s2": [{"provider": "planetary-computer", "collection": "sentinel-2-l2a"}],
        "s1": [{"provider": "planetary-computer", "collection": "sentinel-1-rtc"}],
    }
    assert {"processing:datetime", "processing:version", "emb:preprocessing", "emb:postprocessing"} <= set(p)
    for key in ("embeddings", "scales", "quicklook"):
        assert (paths["item"].parent / d["assets"][key]["href"]).is_file()
    model = [link for link in d["links"] if link["rel"] == "emb:model"]
    assert len(model) == 1 and model[0]["href"] == f"urn:tessera:checkpoint:sha256:{SHA}" and SHA in model[0]["title"]
    assert model[0]["tessera:checkpoint_file"] == "tessera_v1_1.pt"
    sources = [link["href"] for link in d["links"] if link["rel"] == "emb:source-data"]
    assert len(sources) == 3 * len(w.plan.chunks)
    assert all(not Path(h).is_absolute() and (paths["item"].parent / h).is_file() for h in sources)
    assert "/somewhere" not in paths["item"].read_text()
    del d["assets"]["embeddings"]
    with pytest.raises(pystac.STACValidationError):
        validate_offline(d)


_SCHEMAS = Path(__file__).parent / "data" / "stac-schemas"


def published_schemas() -> Any:
    """A `referencing.Registry` of the recorded published schemas (tests/data/stac-schemas) and pystac's
    GeoJSON schemas; any other reference fails instead of being fetched."""
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT7

    def offline(uri: str) -> Resource[Any]:
        raise LookupError(f"{uri} is not recorded in {_SCHEMAS} (no network in tests)")

    docs = [json.loads(f.read_text()) for f in sorted(_SCHEMAS.glob("*.json"))]
    geojson = Path(pystac.__file__).parent / "validation" / "jsonschemas" / "geojson"
    resources = [(d["$id"].rstrip("#"), Resource.from_contents(d, default_specification=DRAFT7)) for d in docs]
    for name in ("Feature", "Geometry"):
        doc = json.loads((geojson / f"{name}.json").read_text())
        resources.append((f"https://geojson.org/schema/{name}.json", Resource.from_contents(doc, DRAFT7)))
    return Registry(retrieve=offline).with_resources(resources)  # type: ignore[call-arg]


@pytest.mark.parametrize("output", ["int8", "float32"])
def test_stac_item_validates_against_the_published_schemas(tmp_path: Path, output: str) -> None:
    """The Item against the Embeddings v0.0.1 schema as published (which builds on the STAC 1.0.0
    Item schema), processing v1.2.0 and projection v2.0.0, all recorded, offline."""
    from jsonschema import Draft7Validator

    w = _make_world(tmp_path, output=output)
    _stitch(w)
    paths = product_paths(w.out, int8=output == "int8")
    item = json.loads(paths["item"].read_text())
    collection = json.loads(paths["collection"].read_text())
    assert item["stac_version"] == collection["stac_version"] == "1.0.0"
    registry = published_schemas()
    for doc in (item, collection):
        for uri in doc["stac_extensions"]:
            validator = Draft7Validator(registry.contents(uri), registry=registry)
            errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]
            assert errors == [], (doc["type"], uri, errors)
    # the Collection holds the Embeddings fields an Item may not carry, and the two link each other
    assert (collection["emb:type"], collection["emb:dimensions"]) == ("pixel", DIMS)
    assert collection["data_type"] == output and collection["gsd"] == 10.0
    assert item["collection"] == collection["id"]
    (up,) = [link for link in item["links"] if link["rel"] == "collection"]
    (down,) = [link for link in collection["links"] if link["rel"] == "item"]
    assert (paths["item"].parent / up["href"]) == paths["collection"]
    assert (paths["collection"].parent / down["href"]) == paths["item"]
    emb = Draft7Validator(registry.contents(EMB_SCHEMA_URI), registry=registry)
    del item["assets"]["embeddings"]
    assert not emb.is_valid(item)
    del collection["emb:dimensions"]
    assert not emb.is_valid(collection)


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_quicklook_shows_structure(tmp_path: Path) -> None:
    w = _make_world(tmp_path)
    _stitch(w)
    with rasterio.open(product_paths(w.out, int8=True)["quicklook"]) as ds:
        assert ds.driver == "PNG" and ds.count == 4 and ds.dtypes[0] == "uint8"
        rgba = ds.read()
    inside = np.isfinite(w.truth).all(axis=-1)
    assert rgba.shape[1:] == inside.shape
    assert (rgba[3][~inside] == 0).all() and (rgba[3][inside] == 255).all()
    rgb = rgba[:3][:, inside].astype(float)
    assert all(c.std() > 20 for c in rgb)  # zones differ in colour
    # pixels of one zone look alike: the zone means are further apart than the within-zone spread
    zone = ((np.arange(70)[None, :] + w.roi.grid.col) % 40 >= 20) + 2 * (
        (np.arange(50)[:, None] + w.roi.grid.row) % 30 >= 15
    )
    means = np.array([rgba[:3][:, inside & (zone == z)].mean(axis=1) for z in range(4) if (inside & (zone == z)).any()])
    assert np.linalg.norm(means[:, None] - means[None], axis=-1)[np.triu_indices(len(means), 1)].min() > 30


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_quicklook_of_a_large_product_is_decimated(tmp_path: Path) -> None:
    w = _make_world(tmp_path, output="float32")
    _stitch(w)
    write_quicklook(w.out, None, tmp_path / "small.png", max_size=32)
    with rasterio.open(tmp_path / "small.png") as ds:
        assert (ds.height, ds.width) == (17, 24)  # 50 x 70 decimated by 3
        rgba = ds.read()
    assert rgba[3].any() and (rgba[3] == 0).any() and rgba[0][rgba[3] > 0].std() > 0


@pytest.mark.parametrize("output", ["int8", "float32"])
def test_the_tiles_nodata_encoding_does_not_change_the_product(tmp_path: Path, output: str) -> None:
    """Tiles with the reference's nodata (code 0 / scale 0, zero vectors) stitch to the bytes of the older NaN tiles."""
    new = _make_world(tmp_path / "new", output=output)
    old = _make_world(tmp_path / "old", output=output, legacy_nodata=True)
    _stitch(new)
    _stitch(old)
    for key in ("cog", "scales", "counts"):
        a, b = product_paths(new.out, output == "int8").get(key), product_paths(old.out, output == "int8").get(key)
        if a is not None:
            assert a.read_bytes() == b.read_bytes(), key  # type: ignore[union-attr]


@pytest.mark.parametrize("output", ["int8", "float32"])
def test_every_cog_declares_its_nodata_and_rasterio_masks_it(tmp_path: Path, output: str) -> None:
    w = _make_world(tmp_path, output=output)
    _stitch(w)
    inside = np.isfinite(w.truth).all(axis=-1)
    paths = product_paths(w.out, output == "int8")
    declared = {"cog": -128 if output == "int8" else "nan", "scales": "nan", "counts": 65535}
    for key, nodata in declared.items():
        if key not in paths:
            continue
        with rasterio.open(paths[key]) as ds:
            assert ds.nodata is not None, key
            assert np.isnan(ds.nodata) if nodata == "nan" else ds.nodata == nodata, (key, ds.nodata)
            masked = ds.read(masked=True)
            # GDAL's per-dataset mask (what QGIS uses) agrees: 0 at nodata
            gdal_mask = ds.dataset_mask()
        assert np.array_equal(np.ma.getmaskarray(masked).all(axis=0), ~inside), key
        assert np.array_equal(gdal_mask == 0, ~inside), key


def test_observation_counts_product(tmp_path: Path) -> None:
    w = _make_world(tmp_path)
    _stitch(w)
    path = product_paths(w.out, int8=True)["counts"]
    _check_cog(path, w, 2, "uint16")
    with rasterio.open(path) as ds:
        counts, descriptions, tags = ds.read(), ds.descriptions, ds.tags()
    assert descriptions == ("s2_valid", "s1_valid")
    # the product's provenance (model, checkpoint, data source, versions, year), as the embeddings carry it
    with rasterio.open(product_paths(w.out, int8=True)["cog"]) as ds:
        embedding_tags = ds.tags()
    for key in ("TESSERA_MODEL_FAMILY", "TESSERA_CHECKPOINT_SHA256", "TESSERA_DATA_SOURCE", "TESSERA_PIPELINE_VERSION"):
        assert tags[key] == embedding_tags[key], key
    assert tags["TESSERA_YEAR"] == str(YEAR) and "observations" in tags["TESSERA_DESCRIPTION"]
    assert "TESSERA_QUANTIZATION" not in tags
    g = w.roi.grid
    rows, cols = np.mgrid[0 : g.height, 0 : g.width]
    inside = np.isfinite(w.truth).all(axis=-1)
    s2 = _counts("s2", cols + g.col, rows + g.row)
    s1 = _counts("s1-ascending", cols + g.col, rows + g.row) + _counts("s1-descending", cols + g.col, rows + g.row)
    assert np.array_equal(counts[0][inside], s2[inside]) and np.array_equal(counts[1][inside], s1[inside])
    assert (counts[:, ~inside] == 65535).all()
    item = json.loads(product_paths(w.out, int8=True)["item"].read_text())
    asset = item["assets"]["observation_counts"]
    assert asset["href"] == path.name and asset["nodata"] == 65535 and "quality" in asset["roles"]


def test_policy_and_window_tags(tmp_path: Path) -> None:
    # strict and the calendar year: no new tag, so the COG is what earlier releases wrote
    plain = _make_world(tmp_path / "plain")
    _stitch(plain)
    with rasterio.open(plain.out) as ds:
        tags = ds.tags()
    assert "TESSERA_NODATA_POLICY" not in tags and "TESSERA_WINDOW" not in tags
    assert tags["TESSERA_DESCRIPTION"].startswith(f"TESSERA v1.1 embeddings of {YEAR},")
    item = json.loads(product_paths(plain.out, int8=True)["item"].read_text())["properties"]
    assert item["tessera:nodata_policy"] == "strict" and item["tessera:window"] == f"{YEAR}-01-01/{YEAR}-12-31"

    span = f"{YEAR}-10-01/{YEAR + 1}-09-30"
    w = _make_world(tmp_path / "window", policy="reference", window=span)
    _stitch(w)
    with rasterio.open(w.out) as ds, rasterio.open(product_paths(w.out, int8=True)["scales"]) as ss:
        tags, scale_tags = ds.tags(), ss.tags()
    assert tags["TESSERA_NODATA_POLICY"] == "reference" and tags["TESSERA_WINDOW"] == span
    assert scale_tags["TESSERA_WINDOW"] == span and tags["TESSERA_YEAR"] == str(YEAR)
    assert span in tags["TESSERA_DESCRIPTION"]
    d = json.loads(product_paths(w.out, int8=True)["item"].read_text())
    p = d["properties"]
    assert p["start_datetime"] == f"{YEAR}-10-01T00:00:00Z" and p["end_datetime"] == f"{YEAR + 1}-09-30T23:59:59Z"
    assert p["tessera:window"] == span and p["tessera:nodata_policy"] == "reference"
    assert f"{YEAR}-10-01 to {YEAR + 1}-09-30" in p["description"]
    assert pystac.Item.from_dict(d).validate(validator=offline_validator())


def test_read_steps_of_different_windows_are_a_named_error(tmp_path: Path) -> None:
    from tessera.errors import DataSourceError

    w = _make_world(tmp_path, window=f"{YEAR}-10-01/{YEAR + 1}-09-30")
    odd = sorted(w.stack_dir.glob("*/s2/qa.json"))[0]
    odd.write_text(json.dumps({"source": {"provider": "planetary-computer"}}))  # a calendar-year read
    with pytest.raises(DataSourceError, match="different windows"):
        _stitch(w)
