"""Per ROI-year QA report: scenes found and used per chunk, valid observations per pixel, nodata
pixels and why, retries. Written as Markdown with a small PNG map of valid-observation counts.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from tessera import __version__
from tessera.grid import Chunk, Roi, plan_chunks, plan_tiles
from tessera.io import atomic_path
from tessera.layout import PRODUCTS
from tessera.read import VALID_COUNT_FILE

__all__ = ["load_stack_qa", "skipped_scenes", "write_qa_report"]

log = logging.getLogger(__name__)

_MAP_MAX_SIDE = 512


def load_stack_qa(stack_dir: Path, chunk_ids: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{chunk: {product: qa.json}}`` for every chunk of a year."""
    return {cid: {p: json.loads((stack_dir / cid / p / "qa.json").read_text()) for p in PRODUCTS} for cid in chunk_ids}


def skipped_scenes(qa: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[tuple[str, str, str, str]]:
    """``(chunk, product, scene id, reason)`` of every scene a read step skipped (orbit mismatches excluded)."""
    rows = []
    for cid, products in qa.items():
        for product, q in products.items():
            for s in q.get("scenes_skipped", []):
                if not str(s.get("reason", "")).startswith("orbit "):
                    rows.append((cid, product, str(s["id"]), str(s["reason"])))
    return rows


def _count_map(roi: Roi, stack_dir: Path, chunks: list[Chunk], product: str) -> np.ndarray:
    """Valid-observation counts of one product on the ROI grid (0 outside every chunk)."""
    full = np.zeros(roi.grid.shape, np.uint16)
    for c in chunks:
        counts = np.load(stack_dir / c.id / product / VALID_COUNT_FILE)
        dx, dy = c.grid.offset_in(roi.grid)
        full[dy : dy + c.grid.height, dx : dx + c.grid.width] = counts
    return full


def _write_map(path: Path, s2: np.ndarray, s1: np.ndarray, inside: np.ndarray) -> None:
    """Two panels (S2 | S1 ascending + descending), grey levels scaled to each panel's maximum."""
    step = max(1, int(np.ceil(max(s2.shape) / _MAP_MAX_SIDE)))
    panels = []
    for counts in (s2, s1):
        small = counts[::step, ::step].astype(np.float64)
        top = max(1.0, float(small.max()))
        img = (40 + 215 * small / top).astype(np.uint8)
        img[~inside[::step, ::step]] = 0
        panels.append(img)
    gap = np.zeros((panels[0].shape[0], 4), np.uint8)
    image = np.concatenate([panels[0], gap, panels[1]], axis=1)
    with atomic_path(path) as tmp:
        profile = {"driver": "PNG", "height": image.shape[0], "width": image.shape[1], "count": 1, "dtype": "uint8"}
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(image, 1)
    for aux in path.parent.glob(f"{path.name}.aux.xml"):
        aux.unlink()


def _nodata_totals(embeddings_dir: Path, roi: Roi, chunks: list[Chunk], tile_size: int) -> dict[str, int]:
    totals: dict[str, int] = {"valid_pixels": 0}
    for c in chunks:
        for t in plan_tiles(roi, c, tile_size):
            meta = json.loads((embeddings_dir / c.id / f"{t.name}.json").read_text())
            totals["valid_pixels"] += int(meta.get("valid_pixels", 0))
            for reason, n in meta.get("nodata_reasons", {}).items():
                # tiles are padded past the grid edge: outside-ROI pixels are counted on the grid instead
                if reason != "outside_roi":
                    totals[reason] = totals.get(reason, 0) + int(n)
    return totals


def write_qa_report(
    cfg: Mapping[str, Any], roi: Roi, year: int, stack_dir: Path, embeddings_dir: Path, out: Path
) -> list[tuple[str, str, str, str]]:
    """Write the year's Markdown QA report ``out`` and its ``<stem>_counts.png`` map.

    Returns:
        The skipped scenes, so the caller can say so.
    """
    chunks = plan_chunks(roi, cfg["chunk_size_m"])
    chunk_ids = [c.id for c in chunks]
    qa = load_stack_qa(stack_dir, chunk_ids)
    inside = roi.mask(roi.grid).astype(bool)
    s2 = _count_map(roi, stack_dir, chunks, "s2")
    s1 = _count_map(roi, stack_dir, chunks, "s1-ascending") + _count_map(roi, stack_dir, chunks, "s1-descending")
    map_path = out.with_name(f"{out.stem}_counts.png")
    _write_map(map_path, s2, s1, inside)
    nodata = _nodata_totals(embeddings_dir, roi, chunks, cfg["tile_size"])
    nodata["outside_roi"] = int(inside.size - inside.sum())
    skipped = skipped_scenes(qa)
    lines = [
        f"# QA report: TESSERA embeddings {year}",
        "",
        f"ROI `{cfg['roi']}` on {roi.grid.crs}, {roi.grid.width} x {roi.grid.height} pixels of "
        f"{roi.grid.resolution:g} m ({int(inside.sum())} inside the ROI), {len(chunk_ids)} chunks. "
        f"Pipeline {__version__}, written {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}.",
        "",
        "## Pixels",
        "",
        f"* embedded: {nodata.pop('valid_pixels')}",
        *[f"* nodata, {reason.replace('_', ' ')}: {n}" for reason, n in sorted(nodata.items())],
        "",
        "## Valid observations per pixel (inside the ROI)",
        "",
        "| product | min | median | max |",
        "|---|---|---|---|",
        *[
            f"| {name} | {int(a[inside].min())} | {float(np.median(a[inside])):g} | {int(a[inside].max())} |"
            for name, a in (("Sentinel-2", s2), ("Sentinel-1 (both orbits)", s1))
        ],
        "",
        f"![valid observations: Sentinel-2 left, Sentinel-1 right]({map_path.name})",
        "",
        "## Scenes per chunk",
        "",
        "| chunk | product | found | used | skipped | dates | retries |",
        "|---|---|---|---|---|---|---|",
    ]
    for cid, products in qa.items():
        for product, q in products.items():
            skipped_n = len(q.get("scenes_skipped", []))
            lines.append(
                f"| {cid} | {product} | {q['scenes_found']} | {q['scenes_used']} | {skipped_n} | "
                f"{len(q['dates'])} | {q.get('retries', 0)} |"
            )
    lines += ["", "## Skipped scenes", ""]
    if skipped:
        lines += ["| chunk | product | scene | reason |", "|---|---|---|---|"]
        lines += [f"| {c} | {p} | {s} | {r} |" for c, p, s, r in skipped]
    else:
        lines.append("None.")
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    for cid, product, scene, reason in skipped:
        log.warning("scene %s skipped in %s/%s: %s", scene, cid, product, reason)
    return skipped
