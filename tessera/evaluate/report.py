"""The probe report: ``<prefix>.json`` (every number), ``<prefix>.md`` (tables), ``<prefix>_confusion.png``
(one confusion matrix per feature set and probe), ``<prefix>_predictions.csv`` (every test pixel's
true class and each probe's prediction, from which every score in the report can be recomputed) and
``<prefix>_split.csv`` (every train and test pixel's global grid position and side, from which the
split's gap can be checked).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tessera.io import atomic_path, write_json_atomic, write_png

__all__ = ["confusion_png", "write_report"]

_CELL, _GAP, _MIN_SIDE = 12, 6, 120
_LOW, _HIGH = np.array([255.0, 255.0, 255.0]), np.array([8.0, 48.0, 107.0])  # white -> dark blue


def confusion_png(path: Path, matrices: Sequence[Sequence[np.ndarray]]) -> None:
    """A grid of row-normalised confusion matrices (rows of the grid = feature sets, columns = probes).

    In each matrix a row is a true class and a column a predicted class, both in the report's class
    order (``confusion_labels``, ascending codes); cell colour goes from white (0 % of the true class)
    to dark blue (100 %), so the diagonal is the recall. Matrices are at least `_MIN_SIDE` px wide.
    """
    n = matrices[0][0].shape[0]
    cell = max(_CELL, -(-_MIN_SIDE // n))  # a few classes still make a matrix one can see
    side = n * cell
    rows, cols = len(matrices), len(matrices[0])
    image = np.full((rows * (side + _GAP) + _GAP, cols * (side + _GAP) + _GAP, 3), 200, np.uint8)
    for i, row in enumerate(matrices):
        for j, counts in enumerate(row):
            total = counts.sum(axis=1, keepdims=True)
            frac = np.divide(counts, total, out=np.zeros(counts.shape), where=total > 0)
            rgb = _LOW + frac[..., None] * (_HIGH - _LOW)
            cells = np.repeat(np.repeat(rgb, cell, axis=0), cell, axis=1).astype(np.uint8)
            y, x = _GAP + i * (side + _GAP), _GAP + j * (side + _GAP)
            image[y : y + side, x : x + side] = cells
    write_png(path, np.moveaxis(image, -1, 0))


def _predictions_csv(path: Path, columns: Mapping[str, np.ndarray]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(zip(*(c.tolist() for c in columns.values()), strict=True))
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue())


def _dropped(px: Mapping[str, Any]) -> str:
    """``"<n> dropped: <a> in the gaps between train and test blocks, <b> without features, ..."``."""
    by = px.get("dropped_by")
    if not by:
        return f"{px['dropped']} dropped"
    parts = [f"{by.get('split_gap', 0)} in the gaps between train and test blocks"]
    if by.get("no_features"):
        sets = ", ".join(f"{k} {n}" for k, n in px.get("no_features_by_set", {}).items() if n)
        parts.append(f"{by['no_features']} without a value in every feature set ({sets})")
    if by.get("no_target"):
        parts.append(f"{by['no_target']} without a target")
    return f"{px['dropped']} dropped: " + ", ".join(parts)


def _markdown(report: Mapping[str, Any], png_name: str) -> str:
    names = report["classes"]
    groups = list(report["groups"])
    px = report["pixels"]
    lines = [
        f"# Probe report: {report['subject']}",
        "",
        f"Labels `{report['labels']}`, year {report['year']}: {px['labelled']} labelled pixels, {px['sampled']} "
        f"sampled (seed {report['split']['seed']}), {px['train']} train / {px['test']} test in spatial blocks of "
        f"{report['split']['block_px']} px with a {report['split']['gap_px']} px gap ({_dropped(px)}).",
        "",
        "| features | probe | accuracy | macro F1 |" + "".join(f" {g} macro F1 |" for g in groups),
        "|---|---|---|---|" + "---|" * len(groups),
    ]
    for fname, fset in report["features"].items():
        for probe in report["probes"]:
            m = fset[probe]
            cells = "".join(f" {m['group_macro_f1'].get(g, float('nan')):.3f} |" for g in groups)
            lines.append(f"| {fname} | {probe} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} |{cells}")
    lines += ["", "Per-class F1 (linear probe):", "", "| class |" + "".join(f" {f} |" for f in report["features"])]
    lines.append("|---|" + "---|" * len(report["features"]))
    for code, name in names.items():
        row = [report["features"][f]["linear"]["per_class_f1"].get(code) for f in report["features"]]
        lines.append(f"| {code} {name} |" + "".join(" - |" if v is None else f" {v:.3f} |" for v in row))
    if report.get("regression"):
        lines += ["", "Regression of the target:", "", "| features | probe | R² | RMSE |", "|---|---|---|---|"]
        for fname, fset in report["regression"].items():
            lines += [f"| {fname} | {p} | {m['r2']:.3f} | {m['rmse']:.4g} |" for p, m in fset.items()]
    lines += [
        "",
        f"![confusion matrices: rows {', '.join(report['features'])}; columns {', '.join(report['probes'])}]"
        f"({png_name})",
        "",
        f"Confusion matrices ({png_name}): one per feature set (rows) and probe (columns); in each, a row is a "
        "true class and a column a predicted class, by ascending class code (`confusion_labels` in the JSON); "
        "white is 0 % and dark blue 100 % of the true class.",
        "",
        "Feature sets: " + "; ".join(f"**{k}**: {v['description']}" for k, v in report["features"].items()) + ".",
        "",
    ]
    return "\n".join(lines)


def write_report(
    prefix: Path,
    report: Mapping[str, Any],
    predictions: Mapping[str, np.ndarray],
    confusions: Sequence[Sequence[np.ndarray]],
    split: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Path]:
    """Write the report files next to ``prefix``; returns their paths by kind.

    ``split`` (columns ``col``, ``row``, ``epsg``, ``side``: every train and test pixel) goes to
    ``<prefix>_split.csv``, from which the split's gap can be checked.
    """
    paths = {
        "json": prefix.with_name(prefix.name + ".json"),
        "markdown": prefix.with_name(prefix.name + ".md"),
        "png": prefix.with_name(prefix.name + "_confusion.png"),
        "predictions": prefix.with_name(prefix.name + "_predictions.csv"),
    }
    if split is not None:
        paths["split"] = prefix.with_name(prefix.name + "_split.csv")
        _predictions_csv(paths["split"], split)
    confusion_png(paths["png"], confusions)
    _predictions_csv(paths["predictions"], predictions)
    write_json_atomic(paths["json"], report)
    with atomic_path(paths["markdown"]) as tmp:
        tmp.write_text(_markdown(report, paths["png"].name))
    return paths
