"""`evaluate`: probe scores of a checkpoint (or a product) against two baselines on labelled pixels.

1. Labelled pixels: inside a tile's ROI, labelled, with at least one valid S2 and one valid S1
   observation (what every feature set needs); up to ``max_per_class`` per class, drawn with the seed.
2. Spatial split (`tessera.evaluate.split`): blocks of the global grid, a gap between the sides.
3. Feature sets: ``model`` (the checkpoint's embeddings, computed as the workflow computes them, or
   the product's), ``random weights`` (the same architecture with seeded random weights: what training
   starts from; the seed is the checkpoint's training seed when it records one, see `EvalSettings.random_seed`)
   and ``raw median`` (each pixel's median of its valid S2 observations, 10 bands: a
   single annual composite).
   Pixels without a value in every set (outside a product, say), or without a regression target, are
   dropped before the split; the report counts them.
4. Probes (`tessera.evaluate.probes`) on each set; scores, predictions and confusion matrices go to
   the report (`tessera.evaluate.report`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from tessera import models
from tessera.errors import ArchitectureError, ConfigError, LabelError
from tessera.evaluate.features import (
    check_product,
    model_features,
    product_features,
    random_weights_model,
    raw_median_features,
)
from tessera.evaluate.labels import NO_LABEL, ClassInfo, LabelLayer, read_class_info, read_labels
from tessera.evaluate.probes import PROBES, class_metrics, fit_predict, regression_metrics
from tessera.evaluate.report import write_report
from tessera.evaluate.split import spatial_split
from tessera.models.arch import ARCHITECTURES, Architecture, architecture
from tessera.products import product_paths
from tessera.sampling import hash_keys
from tessera.tileio import read_tile
from tessera.train.data import TileSource

__all__ = ["EvalSettings", "evaluate"]

logger = logging.getLogger(__name__)

_SAMPLE_SALT = 0x5A3E


@dataclass(frozen=True)
class EvalSettings:
    """How labels are read, sampled, split and probed."""

    labels: Path
    """Label raster or vector file (`tessera.evaluate.labels`)."""
    year: int
    """Year of the tiles (part of the models' sampling seeds)."""
    classes_file: Path | None = None
    """JSON with class names and groups."""
    label_column: str = "class"
    """Vector labels: the class column."""
    target_column: str | None = None
    """Vector labels: a numeric column to regress."""
    target_band: int | None = None
    """Raster labels: a band to regress."""
    max_per_class: int = 2000
    """Labelled pixels drawn per class at most."""
    block_px: int = 16
    """Side of the spatial split's blocks, pixels."""
    gap_px: int = 1
    """Minimum distance (exclusive) between train and test pixels, pixels."""
    test_fraction: float = 0.3
    """Share of blocks in the test set."""
    knn_k: int = 5
    """Neighbours of the k-NN probe."""
    seed: int = 0
    """Seeds the sampling, the split and the probes (and the random-weights model, see `random_seed`)."""
    random_seed: int | None = None
    """Seeds the random-weights model. None: the training seed a checkpoint of `tessera.train` records
    in its ``config`` (so the baseline is the very model its training started from), else `seed`."""
    device: str = "cpu"
    """Where the models run."""
    source: str | None = None
    """S2 source of the tiles, which picks v1.1's normalisation table. None: a product's (its STAC Item
    names it), or planetary-computer with a checkpoint."""

    def __post_init__(self) -> None:
        """Refuse values that would split, sample or probe nonsensically (`ConfigError` naming the flag)."""
        checks = [
            ("max_per_class", "--max-per-class", self.max_per_class >= 1, "at least 1"),
            ("block_px", "--block-px", self.block_px >= 1, "at least 1 pixel"),
            ("gap_px", "--gap-px", self.gap_px >= 0, "0 (no gap) or more pixels"),
            ("test_fraction", "--test-fraction", 0.0 < self.test_fraction < 1.0, "strictly between 0 and 1"),
            ("knn_k", "--k", self.knn_k >= 1, "at least 1"),
            ("target_band", "--target-band", self.target_band is None or self.target_band >= 1, "1 or more"),
        ]
        for name, flag, ok, want in checks:
            if not ok:
                raise ConfigError(f"evaluation setting {name} ({flag}) is {getattr(self, name)!r}; it must be {want}")


@dataclass(frozen=True)
class _Pixels:
    """Labelled pixels: where they are (tile index, flat index in it, global grid position) and their labels."""

    tile: np.ndarray
    pix: np.ndarray
    col: np.ndarray
    row: np.ndarray
    epsg: np.ndarray
    label: np.ndarray
    target: np.ndarray

    def take(self, keep: np.ndarray) -> _Pixels:
        return _Pixels(*(getattr(self, f.name)[keep] for f in fields(self)))

    @classmethod
    def concat(cls, parts: list[_Pixels]) -> _Pixels:
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)))


def _labelled(tiles: list[Any], layers: list[LabelLayer], labels: Path) -> _Pixels:
    parts = []
    for k, ((tile, grid), layer) in enumerate(zip(tiles, layers, strict=True)):
        has_s2 = tile.masks.any(axis=0)
        has_s1 = (tile.sar_ascending != 0).any(axis=(0, 3)) | (tile.sar_descending != 0).any(axis=(0, 3))
        pix = np.flatnonzero((layer.classes != NO_LABEL) & (tile.roi > 0) & has_s2 & has_s1)
        ys, xs = np.divmod(pix, tile.roi.shape[1])
        n = len(pix)
        parts.append(
            _Pixels(
                tile=np.full(n, k),
                pix=pix,
                col=grid.col + xs.astype(np.int64),
                row=grid.row + ys.astype(np.int64),
                epsg=np.full(n, int(grid.crs.split(":")[1])),
                label=layer.classes.ravel()[pix],
                target=layer.target.ravel()[pix] if layer.target is not None else np.full(n, np.nan),
            )
        )
    if not sum(len(p.pix) for p in parts):
        raise LabelError(
            f"labels {labels} do not overlap the ROI of any of the {len(tiles)} tiles (no labelled pixel with "
            "observations inside them); check the labels' CRS and extent, or point --data/--year at their region"
        )
    return _Pixels.concat(parts)


def _sample(px: _Pixels, per_class: int, seed: int, labels: Path) -> _Pixels:
    codes = np.unique(px.label)
    if len(codes) < 2:
        raise LabelError(
            f"labels {labels} have a single class ({int(codes[0])}) on the tiles' pixels; a probe needs at least "
            "two classes: use a label file with two or more classes over the ROI"
        )
    # each pixel's draw priority is a hash of its global grid position and the seed, so the sample does
    # not depend on how the labelled area was tiled or in which order the tiles were found
    priority = hash_keys(_SAMPLE_SALT, px.col, px.row, px.epsg, seed)
    keep = []
    for c in codes:
        members = np.flatnonzero(px.label == c)
        order = np.lexsort((px.col[members], px.row[members], priority[members]))
        keep.append(members[order[:per_class]])
    chosen = np.concatenate(keep)
    return px.take(chosen[np.lexsort((px.col[chosen], px.row[chosen], px.epsg[chosen]))])


def _training_seed(checkpoint: Path) -> int | None:
    """The ``config.seed`` a checkpoint of `tessera.train` records (`tessera.train.checkpoint`), or None."""
    payload = models.load_payload(checkpoint, mmap=True)
    config = payload.get("config") if isinstance(payload, Mapping) else None
    seed = config.get("seed") if isinstance(config, Mapping) else None
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def _feature_sets(
    s: EvalSettings, tiles: list[Any], names: list[str], px: _Pixels, checkpoint: Path | None, product: Path | None,
    arch: str | None,
) -> tuple[dict[str, tuple[str, np.ndarray]], str, dict[str, Any]]:  # fmt: skip
    """``{name: (description, features)}``, the report's subject and how the random-weights model was made."""
    sets: dict[str, tuple[str, np.ndarray]] = {}
    trained_seed = None
    if checkpoint is not None:
        source = s.source or "planetary-computer"
        loaded = models.load(checkpoint, "cpu", source=source)
        name = (loaded.architecture or {}).get("name")  # a trained checkpoint names its architecture
        kind = f"{name} architecture, {loaded.family} family" if name and name != loaded.family else loaded.family
        subject = f"checkpoint {checkpoint.name} ({kind}, sha256 {str(loaded.checkpoint_sha256)[:12]})"
        feats = model_features(loaded, tiles, px.tile, px.pix, s.year, s.device)
        sets["model"] = (f"embeddings of {subject}", feats)
        own = Architecture.from_dict(loaded.architecture or {})
        base = own if arch is None else architecture(arch)
        if base == own:  # the training seed gives this architecture's starting weights, not another's
            trained_seed = _training_seed(checkpoint)
    else:
        assert product is not None
        subject = f"product {product.name}"
        feats = product_features(product, tiles, px.tile, px.pix, names)
        sets["model"] = (f"embeddings read from {product}", feats)
        base, source = product_baseline(product, arch, s.source)
    if s.random_seed is not None:
        seed, origin, why = s.random_seed, "--random-seed", "--random-seed"
    elif trained_seed is not None:
        seed, origin = trained_seed, "checkpoint"
        why = "the checkpoint's training seed: the weights its training started from"
    else:
        seed, origin = s.seed, "--seed"
        lacks = "the product does not record" if product is not None else "the checkpoint records no"
        why = f"--seed; {lacks} training seed"
    rnd = random_weights_model(base, seed, source)
    sets["random weights"] = (
        f"{base.name} architecture with seeded random weights (seed {seed}, {why})",
        model_features(rnd, tiles, px.tile, px.pix, s.year, s.device),
    )
    median = raw_median_features(tiles, px.tile, px.pix)
    sets["raw median"] = ("per-pixel median of the valid S2 observations, 10 bands", median)
    random = {"architecture": base.name, "seed": seed, "seed_from": origin}
    return sets, subject, random


def product_baseline(product: Path, arch: str | None = None, source: str | None = None) -> tuple[Architecture, str]:
    """The random-weights baseline of a product: its architecture and S2 source.

    What is not given comes from the product's STAC Item (``tessera_<year>.json`` beside the COG): the
    architecture of its model family, when only one architecture is of that family, and its S2 source
    (which picks v1.1's normalisation table).

    Raises:
        LabelError: The Item is needed but missing or unreadable, or names no S2 source.
        ArchitectureError: ``arch`` is unknown, or several architectures share the product's family (v1.0
            and demo; the v2 sizes): the message lists them, for ``--random-arch``.
    """
    if arch is not None and source is not None:
        return architecture(arch), source
    path = product_paths(product, int8=False)["item"]
    try:
        props: dict[str, Any] = json.loads(path.read_text())["properties"]
    except (OSError, ValueError, KeyError) as exc:
        raise LabelError(
            f"cannot read the STAC Item {path} of product {product.name} ({exc}); evaluate a product the workflow's "
            "stitch step wrote, which writes the Item beside it, or pass --random-arch and --source"
        ) from exc
    if source is None:
        source = props.get("tessera:data_source", {}).get("s2")
        if not isinstance(source, str):
            raise LabelError(f"the STAC Item {path} names no tessera:data_source s2; pass --source")
    if arch is not None:
        return architecture(arch), source
    family = props.get("tessera:model_family")
    candidates = sorted(name for name, a in ARCHITECTURES.items() if a.family == family)
    if len(candidates) != 1:
        raise ArchitectureError(
            f"product {product.name} was made by a {family} model, and "
            + (f"{', '.join(candidates)} are all {family} architectures" if candidates else "no architecture is")
            + ": name the random-weights baseline's architecture with --random-arch"
        )
    return architecture(candidates[0]), source


def _probe_all(
    s: EvalSettings, sets: dict[str, tuple[str, np.ndarray]], px: _Pixels, train: np.ndarray, test: np.ndarray,
    info: ClassInfo,
) -> tuple[dict[str, Any], dict[str, np.ndarray], list[list[np.ndarray]]]:  # fmt: skip
    """Fit every probe on every feature set: the report's scores, the predictions table, the confusion matrices."""
    regress = s.target_column is not None or s.target_band is not None
    labels = sorted(info.names)
    scores: dict[str, Any] = {}
    fits: dict[str, Any] = {}
    predictions = {"col": px.col[test], "row": px.row[test], "epsg": px.epsg[test], "label": px.label[test]}
    if regress:
        predictions["target"] = px.target[test]
    confusions = []
    for name, (description, feats) in sets.items():
        entry: dict[str, Any] = {"description": description, "dimensions": int(feats.shape[1])}
        row = []
        for probe in PROBES:
            pred = fit_predict(feats, px.label, train, test, probe, k=s.knn_k, seed=s.seed)
            metrics = class_metrics(px.label[test], pred, labels, info.groups)
            entry[probe] = metrics.to_dict()
            row.append(np.asarray(metrics.confusion))
            predictions[f"{name.replace(' ', '_')}:{probe}"] = pred
        scores[name] = entry
        confusions.append(row)
        if regress:
            fits[name] = {}
            for probe in PROBES:
                value = fit_predict(feats, px.target, train, test, probe, k=s.knn_k, regression=True)
                fits[name][probe] = regression_metrics(px.target[test], value)
                predictions[f"{name.replace(' ', '_')}:{probe}:target"] = value
    return {"features": scores, "regression": fits}, predictions, confusions


def evaluate(
    s: EvalSettings,
    sources: list[TileSource],
    out_prefix: Path,
    *,
    checkpoint: Path | None = None,
    product: Path | None = None,
    random_arch: str | None = None,
) -> dict[str, Any]:
    """Probe a checkpoint or a product on labelled pixels of the tiles and write the report.

    Args:
        s: Settings.
        sources: The tiles of ``s.year`` (`tessera.train.find_tiles`).
        out_prefix: Report files are ``<out_prefix>.json``, ``.md``, ``_confusion.png``, ``_predictions.csv``,
            ``_split.csv``.
        checkpoint: A checkpoint to embed the pixels with (exclusive with ``product``).
        product: A product COG to read the embeddings from.
        random_arch: Architecture of the random-weights baseline (default: the checkpoint's; with a product, the
            one of its model family, `product_baseline`).

    Returns:
        The report (as written to the JSON file).

    Raises:
        LabelError: Labels unreadable, outside the tiles, a single class, or too few pixels to split; a target
            flag of the other kind of labels.
        CheckpointError, ArchitectureError, TileError: Bad checkpoint, architecture name (checked first) or tile;
            a product whose family has several architectures and no ``random_arch``.
        ProductsMissingError, UnsupportedProductError, GridMismatchError: The product (or its scales) does not
            exist (checked first), is not a raster, or does not lie on the pixel grid of the labelled tiles.
    """
    if (checkpoint is None) == (product is None):
        raise LabelError("give exactly one of a checkpoint or a product to evaluate; pass --checkpoint or --product")
    # what can be checked before any label is read or any embedding computed
    if random_arch is not None:
        architecture(random_arch)
    if product is not None:
        check_product(product, [])
    tiles = [read_tile(src.path) for src in sources]
    layers, vector_names = read_labels(
        s.labels, [g for _, g in tiles], column=s.label_column, target_column=s.target_column,
        target_band=s.target_band,
    )  # fmt: skip
    labelled = _labelled(tiles, layers, s.labels)
    px = _sample(labelled, s.max_per_class, s.seed, s.labels)
    names = [src.name for src in sources]
    sets, subject, random = _feature_sets(s, tiles, names, px, checkpoint, product, random_arch)
    has_features = np.all([np.isfinite(f).all(axis=1) for _, f in sets.values()], axis=0)
    finite = has_features.copy()
    if s.target_column is not None or s.target_band is not None:
        finite &= np.isfinite(px.target)
    n_sampled = len(px.pix)
    no_features = {k: int((~np.isfinite(f).all(axis=1)).sum()) for k, (_, f) in sets.items()}
    dropped = {"no_features": int((~has_features).sum()), "no_target": int((has_features & ~finite).sum())}
    if dropped["no_features"]:
        logger.warning(
            "%d of the %d sampled pixels have no value in some feature set (%s) and are dropped",
            dropped["no_features"], n_sampled, ", ".join(f"{k}: {n}" for k, n in no_features.items() if n),
        )  # fmt: skip
    if dropped["no_target"]:
        logger.warning("%d of the %d sampled pixels have no target and are dropped", dropped["no_target"], n_sampled)
    px = px.take(finite)
    sets = {k: (d, f[finite]) for k, (d, f) in sets.items()}
    split = spatial_split(px.col, px.row, px.epsg, block=s.block_px, gap=s.gap_px, test_fraction=s.test_fraction,
                          seed=s.seed)  # fmt: skip
    if not split.train.any() or not split.test.any() or len(np.unique(px.label[split.train])) < 2:
        without = ", ".join(f"{k}: {n}" for k, n in no_features.items() if n) or "none"
        raise LabelError(
            f"labels {s.labels} cover too few blocks for a spatial split ({int(split.train.sum())} train, "
            f"{int(split.test.sum())} test of {n_sampled} sampled pixels; {dropped['no_features']} dropped without "
            f"features ({without}), {dropped['no_target']} without a target); use labels over a larger area, or "
            "lower --block-px"
        )
    info = read_class_info(s.classes_file, sorted(int(c) for c in np.unique(px.label)), vector_names)
    scores, predictions, confusions = _probe_all(s, sets, px, split.train, split.test, info)
    n_train, n_test = int(split.train.sum()), int(split.test.sum())
    report = {
        "subject": subject,
        "labels": str(s.labels),
        "year": s.year,
        "classes": {str(c): n for c, n in info.names.items()},
        "groups": info.groups,
        "pixels": {
            "labelled": len(labelled.pix),
            "sampled": n_sampled,
            "train": n_train,
            "test": n_test,
            "dropped": n_sampled - n_train - n_test,
            "dropped_by": {**dropped, "split_gap": len(px.pix) - n_train - n_test},
            "no_features_by_set": no_features,
        },
        "split": {"block_px": s.block_px, "gap_px": s.gap_px, "test_fraction": s.test_fraction, "seed": s.seed},
        "random_weights": random,
        "probes": list(PROBES),
        "knn_k": s.knn_k,
        **scores,
    }
    both = split.train | split.test
    sides = np.where(split.test[both], "test", "train")
    table = {"col": px.col[both], "row": px.row[both], "epsg": px.epsg[both], "side": sides}
    write_report(out_prefix, report, predictions, confusions, split=table)
    return report
