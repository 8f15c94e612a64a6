"""tessera.evaluate: labels, the spatial split, the probes and the report's numbers."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from tessera.cli import main
from tessera.errors import (
    ArchitectureError,
    ConfigError,
    GridMismatchError,
    LabelError,
    ProductsMissingError,
    UnsupportedProductError,
)
from tessera.evaluate import EvalSettings, evaluate, spatial_split
from tessera.evaluate.features import product_features
from tessera.evaluate.labels import NO_LABEL, read_labels
from tessera.evaluate.run import _Pixels, _sample, product_baseline
from tessera.grid import Grid
from tessera.models.arch import architecture
from tessera.tileio import read_tile
from tessera.train import find_tiles
from tessera.train.checkpoint import save_encoder
from tests.traindata import WORLD, block_classes, tiny_config, write_label_raster, write_results


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: the tiny models here gain nothing from two, and OpenMP stalls on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_results(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    arch = architecture("demo")
    path = tmp_path_factory.mktemp("ckpt") / "encoder.pt"
    torch.save(arch.encoder_payload(arch.build(seed=5).state_dict()), path)
    return path


def chebyshev_gap(cols: np.ndarray, rows: np.ndarray, a: np.ndarray, b: np.ndarray) -> int:
    """Smallest Chebyshev distance between a pixel of set ``a`` and one of set ``b``."""
    pa, pb = np.stack((cols[a], rows[a]), 1), np.stack((cols[b], rows[b]), 1)
    return int(np.abs(pa[:, None, :] - pb[None, :, :]).max(axis=2).min())


@pytest.mark.parametrize("gap", [1, 3])
def test_split_is_spatially_disjoint(gap: int) -> None:
    rng = np.random.default_rng(0)
    cols = rng.integers(-150, 150, 3000)
    rows = rng.integers(1000, 1300, 3000)
    epsg = np.full(3000, 32631)
    split = spatial_split(cols, rows, epsg, block=16, gap=gap, test_fraction=0.3, seed=2)
    assert not (split.train & split.test).any()
    assert split.train.sum() > 1000 and split.test.sum() > 300
    assert chebyshev_gap(cols, rows, split.train, split.test) > gap
    again = spatial_split(cols, rows, epsg, block=16, gap=gap, test_fraction=0.3, seed=2)
    assert np.array_equal(again.test, split.test)
    assert not np.array_equal(spatial_split(cols, rows, epsg, block=16, gap=gap, seed=3).test, split.test)


def test_raster_labels_are_resampled_onto_each_tile(results: Path, tmp_path: Path) -> None:
    classes = block_classes()
    # the same labels at 5 m: nearest-neighbour resampling must give back the 10 m classes
    fine = np.kron(classes, np.ones((2, 2), int))
    path = write_label_raster(tmp_path / "fine.tif", fine, WORLD.transform @ Affine.scale(0.5))
    grids = [read_tile(t.path)[1] for t in find_tiles([results], [2022])]
    layers, names = read_labels(path, grids, target_band=2)
    assert names == {}
    assert np.array_equal(layers[0].classes, classes[:24, :24])
    assert layers[3].target is not None and abs(float(layers[3].target[5, 5]) - classes[29, 29] * 10) < 5


def test_vector_labels_with_named_classes(results: Path, tmp_path: Path) -> None:
    left, top = WORLD.transform.c, WORLD.transform.f
    features = [
        {"type": "Feature", "properties": {"crop": "wheat", "yield": 7.5},
         "geometry": {"type": "Polygon", "coordinates": [[[left, top], [left + 240, top], [left + 240, top - 480],
                                                           [left, top - 480], [left, top]]]}},
        {"type": "Feature", "properties": {"crop": "barley", "yield": 5.0},
         "geometry": {"type": "Polygon", "coordinates": [[[left + 240, top], [left + 480, top],
                                                           [left + 480, top - 480], [left + 240, top - 480],
                                                           [left + 240, top]]]}},
    ]  # fmt: skip
    path = tmp_path / "fields.geojson"
    crs = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32630"}}
    path.write_text(json.dumps({"type": "FeatureCollection", "crs": crs, "features": features}))
    grids = [read_tile(t.path)[1] for t in find_tiles([results], [2022])]
    layers, names = read_labels(path, grids, column="crop", target_column="yield")
    assert names == {1: "barley", 2: "wheat"}
    # tiles in name order: 0_0 and 0_24 are the west half (wheat), 24_0 and 24_24 the east half (barley)
    assert [set(np.unique(layer.classes)) for layer in layers] == [{2}, {2}, {1}, {1}]
    assert layers[0].target is not None and float(layers[0].target[0, 0]) == 7.5


def test_report_numbers_are_recomputed_from_the_predictions(results: Path, checkpoint: Path, tmp_path: Path) -> None:
    labels = write_label_raster(tmp_path / "labels.tif", block_classes())
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps({"classes": {"1": "a", "2": "b", "3": "c"}, "groups": {"ab": [1, 2]}}))
    settings = EvalSettings(
        labels=labels, year=2022, classes_file=classes, target_band=2, block_px=6, seed=1, max_per_class=150
    )
    report = evaluate(settings, find_tiles([results], [2022]), tmp_path / "probe", checkpoint=checkpoint)
    assert list(report["features"]) == ["model", "random weights", "raw median"]
    # a checkpoint without a training config: the random weights are seeded with --seed
    assert report["random_weights"] == {"architecture": "demo", "seed": 1, "seed_from": "--seed"}
    assert report["subject"].startswith("checkpoint encoder.pt (demo architecture, v1.0 family, sha256 ")
    saved = json.loads((tmp_path / "probe.json").read_text())
    assert saved == json.loads(json.dumps(report))
    with (tmp_path / "probe_predictions.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == saved["pixels"]["test"] > 50
    # the split file: every train and test pixel, test rows as in the predictions, and no train pixel
    # within the gap of a test pixel (Chebyshev distance > gap_px on the global grid)
    with (tmp_path / "probe_split.csv").open() as fh:
        split = list(csv.DictReader(fh))
    side = np.array([r["side"] for r in split])
    assert (side == "train").sum() == saved["pixels"]["train"] and (side == "test").sum() == saved["pixels"]["test"]
    test_px = {(r["col"], r["row"], r["epsg"]) for r in split if r["side"] == "test"}
    assert test_px == {(r["col"], r["row"], r["epsg"]) for r in rows}
    cols, rows_ = (np.array([int(r[k]) for r in split]) for k in ("col", "row"))
    assert len({r["epsg"] for r in split}) == 1
    assert chebyshev_gap(cols, rows_, side == "train", side == "test") > saved["split"]["gap_px"]
    truth = np.array([int(r["label"]) for r in rows])
    for fname, fset in saved["features"].items():
        for probe in saved["probes"]:
            pred = np.array([int(float(r[f"{fname.replace(' ', '_')}:{probe}"])) for r in rows])
            m = fset[probe]
            assert m["accuracy"] == pytest.approx(float(np.mean(pred == truth)))
            f1 = {}
            for c in np.unique(truth):
                tp, fp, fn = (
                    np.sum((pred == c) & (truth == c)),
                    np.sum((pred == c) & (truth != c)),
                    np.sum((pred != c) & (truth == c)),
                )
                f1[str(c)] = 2 * tp / (2 * tp + fp + fn)
            assert m["per_class_f1"] == pytest.approx(f1)
            assert m["macro_f1"] == pytest.approx(np.mean(list(f1.values())))
            assert m["group_macro_f1"]["ab"] == pytest.approx(np.mean([f1["1"], f1["2"]]))
            counts = [
                [int(np.sum((truth == a) & (pred == b))) for b in m["confusion_labels"]] for a in m["confusion_labels"]
            ]
            assert m["confusion"] == counts
    assert set(saved["regression"]["raw median"]) == {"linear", "knn"}
    target = np.array([float(r["target"]) for r in rows])
    for fname, fits in saved["regression"].items():
        for probe, m in fits.items():
            value = np.array([float(r[f"{fname.replace(' ', '_')}:{probe}:target"]) for r in rows])
            residual = np.sum((target - value) ** 2)
            assert m["r2"] == pytest.approx(1 - residual / np.sum((target - target.mean()) ** 2))
            assert m["rmse"] == pytest.approx(np.sqrt(residual / len(target)))
    with rasterio.open(tmp_path / "probe_confusion.png") as png:
        assert png.count == 3 and png.width >= 2 * 120  # two probes side by side, each at least 120 px
    markdown = (tmp_path / "probe.md").read_text()
    assert "| raw median | linear |" in markdown and "probe_confusion.png" in markdown


@pytest.mark.parametrize(
    ("field", "value", "flag"),
    [
        ("gap_px", -1, "--gap-px"),
        ("block_px", 0, "--block-px"),
        ("test_fraction", 0.0, "--test-fraction"),
        ("test_fraction", 1.0, "--test-fraction"),
        ("knn_k", 0, "--k"),
        ("max_per_class", 0, "--max-per-class"),
        ("target_band", 0, "--target-band"),
    ],
)
def test_settings_that_cannot_split_or_probe_are_refused(field: str, value: float, flag: str) -> None:
    with pytest.raises(ConfigError, match=f"{field} \\({flag}\\) is {value!r}; it must be"):
        EvalSettings(labels=Path("labels.tif"), year=2022, **{field: value})  # type: ignore[arg-type]
    EvalSettings(labels=Path("labels.tif"), year=2022, gap_px=0)  # no gap is allowed
    with pytest.raises(ValueError, match="gap >= 0"):
        spatial_split(np.arange(3), np.arange(3), np.full(3, 32630), gap=-1)


def test_the_sample_of_labelled_pixels_does_not_depend_on_tiling_or_order() -> None:
    """Which pixels a class keeps follows from their global positions and the seed alone."""
    rng = np.random.default_rng(3)
    n = 600
    col, row = rng.permutation(10_000)[:n].astype(np.int64), rng.integers(0, 50, n).astype(np.int64)

    def pixels(order: np.ndarray, tiles: int) -> _Pixels:
        return _Pixels(
            tile=np.arange(n)[order] % tiles,
            pix=np.arange(n)[order],
            col=col[order],
            row=row[order],
            epsg=np.full(n, 32630, np.int64),
            label=(col[order] % 3) + 1,
            target=np.full(n, np.nan),
        )

    def chosen(px: _Pixels) -> set[tuple[int, int]]:
        return set(zip(px.col.tolist(), px.row.tolist(), strict=True))

    base = _sample(pixels(np.arange(n), 1), 50, 0, Path("labels.tif"))
    assert len(base.label) == 150 and sorted(np.unique(base.label, return_counts=True)[1]) == [50, 50, 50]
    shuffled = _sample(pixels(rng.permutation(n), 7), 50, 0, Path("labels.tif"))
    assert chosen(shuffled) == chosen(base)
    assert np.array_equal(shuffled.col, base.col) and np.array_equal(shuffled.row, base.row)  # same order too
    assert chosen(_sample(pixels(np.arange(n), 1), 50, 1, Path("labels.tif"))) != chosen(base)


def test_product_embeddings_are_dequantised_at_the_pixels(results: Path, tmp_path: Path) -> None:
    tiles = [read_tile(t.path) for t in find_tiles([results], [2022])]
    rng = np.random.default_rng(0)
    codes = rng.integers(-127, 128, (4, WORLD.height, WORLD.width)).astype(np.int8)
    codes[:, 0, 0] = -128  # nodata pixel
    scales = rng.uniform(0.01, 0.1, (WORLD.height, WORLD.width)).astype(np.float32)
    profile = {"driver": "GTiff", "height": WORLD.height, "width": WORLD.width, "crs": WORLD.crs}
    with rasterio.open(tmp_path / "p.tif", "w", count=4, dtype="int8", nodata=-128, transform=WORLD.transform,
                       **profile) as dst:  # fmt: skip
        dst.write(codes)
    with rasterio.open(tmp_path / "p_scales.tif", "w", count=1, dtype="float32", transform=WORLD.transform,
                       **profile) as dst:  # fmt: skip
        dst.write(scales, 1)
    tile_of, pix = np.array([0, 3, 3]), np.array([0, 0, 24 * 5 + 7])
    got = product_features(tmp_path / "p.tif", tiles, tile_of, pix)
    assert np.isnan(got[0]).all()
    np.testing.assert_allclose(got[1], codes[:, 24, 24] * scales[24, 24], rtol=1e-6)
    np.testing.assert_allclose(got[2], codes[:, 29, 31] * scales[29, 31], rtol=1e-6)


def test_a_products_baseline_is_the_architecture_of_its_family(tmp_path: Path) -> None:
    product = tmp_path / "tessera_2022.tif"
    with pytest.raises(LabelError, match="cannot read the STAC Item"):
        product_baseline(product)
    arch, source = product_baseline(product, "demo", "stac")  # both given: the Item is not needed
    assert (arch.name, source) == ("demo", "stac")

    def item(family: str, s2: str = "earth-search") -> None:
        props = {"tessera:model_family": family, "tessera:data_source": {"s2": s2, "s1": "planetary-computer"}}
        product.with_suffix(".json").write_text(json.dumps({"type": "Feature", "properties": props}))

    item("v1.1")
    arch, source = product_baseline(product)
    assert arch.name == "v1.1"
    assert source == "earth-search"  # v1.1's baseline takes that source's normalisation table
    item("v1.0-qat")
    assert product_baseline(product)[0].name == "v1.0-qat"
    for family, names in (("v1.0", "demo, v1.0"), ("v2", "v2-large, v2-medium, v2-nano, v2-small")):
        item(family)
        with pytest.raises(ArchitectureError, match=f"{names} are all {family} architectures: name .* --random-arch"):
            product_baseline(product)


def test_labels_outside_the_roi_and_single_class(results: Path, checkpoint: Path, tmp_path: Path) -> None:
    far = write_label_raster(tmp_path / "far.tif", block_classes(), WORLD.transform @ Affine.translation(5000, 0))
    sources = find_tiles([results], [2022])
    with pytest.raises(LabelError, match="do not overlap the ROI") as err:
        evaluate(EvalSettings(labels=far, year=2022), sources, tmp_path / "x", checkpoint=checkpoint)
    assert isinstance(err.value, ValueError)
    one = write_label_raster(tmp_path / "one.tif", np.full((48, 48), 2))
    with pytest.raises(LabelError, match="single class"):
        evaluate(EvalSettings(labels=one, year=2022), sources, tmp_path / "x", checkpoint=checkpoint)
    assert not (tmp_path / "x.json").exists()
    layers, _ = read_labels(far, [WORLD])
    assert (layers[0].classes == NO_LABEL).all()


def write_product(
    path: Path, values: np.ndarray, grid: Grid = WORLD, crs: str | None = None, nodata: float | None = None
) -> Path:
    """A float32 product COG of ``values`` (D, H, W) on ``grid`` (its CRS replaced by ``crs`` when given)."""
    profile = {"driver": "GTiff", "height": values.shape[1], "width": values.shape[2], "count": values.shape[0]}
    with rasterio.open(
        path, "w", dtype="float32", crs=crs or grid.crs, transform=grid.transform, nodata=nodata, **profile
    ) as dst:
        dst.write(values.astype(np.float32))
    return path


def vector_labels(path: Path, rows: list[dict[str, object]]) -> Path:
    """Vertical strips of WORLD, 120 m wide from its left edge, one per row of properties (EPSG:32630 GeoJSON)."""
    left, top, bottom = WORLD.transform.c, WORLD.transform.f, WORLD.transform.f - 480

    def strip(i: int) -> dict[str, object]:
        x0, x1 = left + 120 * i, left + 120 * (i + 1)
        return {"type": "Polygon", "coordinates": [[[x0, top], [x1, top], [x1, bottom], [x0, bottom], [x0, top]]]}

    features = [{"type": "Feature", "properties": p, "geometry": strip(i)} for i, p in enumerate(rows)]
    crs = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32630"}}
    path.write_text(json.dumps({"type": "FeatureCollection", "crs": crs, "features": features}))
    return path


@pytest.mark.parametrize(
    ("grid", "crs", "problem"),
    [
        (WORLD, "EPSG:32631", "the product is in EPSG:32631, the tiles in EPSG:32630"),
        (Grid("EPSG:32630", 20.0, 15000, -260000, 24, 24), None, "pixels are 20 x 20, the tiles' 10 x 10"),
    ],
)
def test_a_product_on_another_grid_is_refused(
    results: Path, tmp_path: Path, grid: Grid, crs: str | None, problem: str
) -> None:
    """Another CRS or pixel size than the tiles': the pixel offsets would read values from other places."""
    tiles = [read_tile(t.path) for t in find_tiles([results], [2022])]
    cog = write_product(tmp_path / "tessera_2022.tif", np.ones((4, grid.height, grid.width)), grid, crs)
    with pytest.raises(GridMismatchError, match=f"product {cog} does not lie on .*{problem}.* \\(tiles a, d\\)"):
        product_features(cog, tiles, np.array([0, 3]), np.array([0, 0]), names=["a", "b", "c", "d"])


def test_a_product_off_the_tiles_pixel_lattice_is_refused(results: Path, tmp_path: Path) -> None:
    tiles = [read_tile(t.path) for t in find_tiles([results], [2022])]
    shifted = tmp_path / "tessera_2022.tif"
    with rasterio.open(
        shifted, "w", driver="GTiff", height=48, width=48, count=2, dtype="float32", crs=WORLD.crs,
        transform=WORLD.transform @ Affine.translation(0.5, 0),
    ) as dst:  # fmt: skip
        dst.write(np.ones((2, 48, 48), np.float32))
    with pytest.raises(GridMismatchError, match=r"corner \(300005, 5200000\) is off the tiles' pixel lattice"):
        product_features(shifted, tiles, np.array([1]), np.array([5]))


def test_product_pixels_outside_the_product_are_nan(results: Path, tmp_path: Path) -> None:
    """A float product without nodata fills a boundless read with 0; those pixels have no embedding."""
    tiles = [read_tile(t.path) for t in find_tiles([results], [2022])]
    west = WORLD.window(0, 0, 24, 48)  # tiles 0_0 and 0_24 only
    values = np.random.default_rng(1).normal(size=(3, 48, 24)) + 5
    cog = write_product(tmp_path / "tessera_2022.tif", values, west)
    got = product_features(cog, tiles, np.array([1, 2]), np.array([24 * 2 + 3, 7]))
    np.testing.assert_allclose(got[0], values[:, 26, 3], rtol=1e-6)
    assert np.isnan(got[1]).all()  # tile 24_0 lies east of the product


def test_a_missing_or_unreadable_product_is_a_named_error(results: Path, tmp_path: Path) -> None:
    sources = find_tiles([results], [2022])
    labels = tmp_path / "labels.tif"  # never read: the product is checked first
    with pytest.raises(ProductsMissingError, match=r"nope\.tif does not exist; the workflow's stitch step") as err:
        evaluate(EvalSettings(labels=labels, year=2022), sources, tmp_path / "x", product=tmp_path / "nope.tif")
    assert isinstance(err.value, FileNotFoundError)
    text = tmp_path / "text.tif"
    text.write_text("not a raster")
    with pytest.raises(UnsupportedProductError, match=r"text\.tif is not a readable raster"):
        evaluate(EvalSettings(labels=labels, year=2022), sources, tmp_path / "x", product=text)
    tiles = [read_tile(t.path) for t in sources]
    int8 = tmp_path / "tessera_2022.tif"
    with rasterio.open(int8, "w", driver="GTiff", height=48, width=48, count=2, dtype="int8", crs=WORLD.crs,
                       transform=WORLD.transform) as dst:  # fmt: skip
        dst.write(np.ones((2, 48, 48), np.int8))
    with pytest.raises(ProductsMissingError, match=r"tessera_2022_scales\.tif .* does not exist"):
        product_features(int8, tiles, np.array([0]), np.array([0]))


def test_cli_reports_a_missing_product_in_one_line(
    results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["evaluate", "--product", str(tmp_path / "nope.tif"), "--labels", str(tmp_path / "l.tif"), "--data",
            str(results), "--year", "2022"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error: ProductsMissingError: product " in err and "Traceback" not in err


def test_a_non_numeric_vector_target_is_a_label_error(results: Path, tmp_path: Path) -> None:
    path = vector_labels(tmp_path / "v.geojson", [{"class": 1, "yield": "7.5"}, {"class": 2, "yield": "lots"}])
    grids = [read_tile(t.path)[1] for t in find_tiles([results], [2022])]
    with pytest.raises(LabelError, match="target column 'yield' holds 'lots', not a number; pass as --target-column"):
        read_labels(path, grids, target_column="yield")
    # an empty target is no target, not an error
    path = vector_labels(tmp_path / "w.geojson", [{"class": 1, "yield": 7.5}, {"class": 2, "yield": None}])
    layers, _ = read_labels(path, grids, target_column="yield")
    assert layers[0].target is not None
    assert float(layers[0].target[0, 0]) == 7.5 and np.isnan(layers[0].target[0, 20])


def test_a_target_flag_of_the_other_label_type_is_refused(results: Path, tmp_path: Path) -> None:
    grids = [read_tile(t.path)[1] for t in find_tiles([results], [2022])]
    raster = write_label_raster(tmp_path / "labels.tif", block_classes())
    with pytest.raises(LabelError, match=r"--target-column 'yield' applies to vector labels, .* with --target-band"):
        read_labels(raster, grids, target_column="yield")
    vector = vector_labels(tmp_path / "v.geojson", [{"class": 1, "yield": 1.0}, {"class": 2, "yield": 2.0}])
    with pytest.raises(LabelError, match=r"--target-band 2 applies to raster labels, .* with --target-column"):
        read_labels(vector, grids, target_band=2)


@pytest.mark.parametrize("codes", [[1, None, 2], [1.0, None, 2.0]])
def test_vector_features_without_a_class_are_skipped(
    results: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, codes: list[float | None]
) -> None:
    """A null class is no class ('nan'), and integral floats (an int column with nulls) are integer codes."""
    path = vector_labels(tmp_path / "v.geojson", [{"class": c} for c in codes])
    grids = [read_tile(t.path)[1] for t in find_tiles([results], [2022])]
    with caplog.at_level(logging.WARNING, logger="tessera.evaluate.labels"):
        layers, names = read_labels(path, grids)
    assert names == {}  # codes, named '1' and '2' by read_class_info
    top_left = layers[0].classes  # columns 0-11: class 1, 12-23: the null feature, unlabelled
    assert set(np.unique(top_left[:, :12])) == {1} and (top_left[:, 12:] == NO_LABEL).all()
    assert set(np.unique(layers[2].classes[:, :12])) == {2}
    assert "skipped 1 of 3 features whose 'class' is empty" in caplog.text


def test_pixels_without_features_or_target_are_counted_as_dropped(results: Path, tmp_path: Path) -> None:
    classes = block_classes()
    labels = write_label_raster(tmp_path / "labels.tif", classes)
    with rasterio.open(labels, "r+") as dst:  # no target (band 2 = nodata) in the bottom rows
        target = dst.read(2)
        target[40:] = 0
        dst.write(target, 2)
    values = np.random.default_rng(2).normal(size=(4, 48, 48))
    values[:, :, :6] = np.nan  # no embedding in the west-most columns
    cog = write_product(tmp_path / "tessera_2022.tif", values, nodata=float("nan"))
    settings = EvalSettings(labels=labels, year=2022, target_band=2, block_px=6, max_per_class=100, source="stac")
    report = evaluate(settings, find_tiles([results], [2022]), tmp_path / "probe", product=cog, random_arch="demo")
    px = report["pixels"]
    by = px["dropped_by"]
    assert by["no_features"] > 0 and by["no_target"] > 0 and by["split_gap"] > 0
    assert px["no_features_by_set"]["model"] == by["no_features"]
    assert px["no_features_by_set"]["raw median"] == 0
    assert px["dropped"] == by["no_features"] + by["no_target"] + by["split_gap"]
    assert px["sampled"] == px["train"] + px["test"] + px["dropped"] <= 300
    markdown = (tmp_path / "probe.md").read_text()
    assert f"{px['dropped']} dropped: {by['split_gap']} in the gaps" in markdown
    assert f"{by['no_features']} without a value in every feature set (model {by['no_features']})" in markdown


def test_random_weights_are_seeded_with_the_checkpoints_training_seed(results: Path, tmp_path: Path) -> None:
    arch = architecture("demo")
    trained = tmp_path / "encoder.pt"
    save_encoder(trained, arch, arch.build(seed=5), {"config": tiny_config(seed=7).to_dict()}, step=12)
    labels = write_label_raster(tmp_path / "labels.tif", block_classes())
    sources = find_tiles([results], [2022])
    settings = EvalSettings(labels=labels, year=2022, block_px=6, max_per_class=40, seed=1)
    report = evaluate(settings, sources, tmp_path / "probe", checkpoint=trained)
    assert report["random_weights"] == {"architecture": "demo", "seed": 7, "seed_from": "checkpoint"}
    assert "(seed 7, the checkpoint's training seed" in report["features"]["random weights"]["description"]
    assert report["split"]["seed"] == 1
    again = evaluate(replace(settings, random_seed=11), sources, tmp_path / "p", checkpoint=trained)
    assert again["random_weights"] == {"architecture": "demo", "seed": 11, "seed_from": "--random-seed"}


def test_an_unknown_random_arch_is_refused_before_any_embedding(
    results: Path, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_embeddings(*args: object, **kwargs: object) -> np.ndarray:
        raise AssertionError("embeddings computed before the architecture name was checked")

    monkeypatch.setattr("tessera.evaluate.run.model_features", no_embeddings)
    labels = write_label_raster(tmp_path / "labels.tif", block_classes())
    with pytest.raises(ArchitectureError, match="unknown architecture 'v9'"):
        evaluate(EvalSettings(labels=labels, year=2022), find_tiles([results], [2022]), tmp_path / "x",
                 checkpoint=checkpoint, random_arch="v9")  # fmt: skip
