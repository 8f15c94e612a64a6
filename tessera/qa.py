"""Per ROI-year QA report: scenes found and used per chunk, valid observations per pixel, nodata
pixels and why, pixels per nodata-policy class (`tessera.nodata.PixelClass`), retries. Written as
Markdown with a small PNG map of valid-observation counts.

Memory is bounded by one chunk: the statistics come from per-chunk histograms and the map is
downsampled chunk by chunk.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tessera import __version__
from tessera.embedfiles import read_sidecar
from tessera.io import atomic_path, write_png
from tessera.layout import ORBITS, PRODUCTS
from tessera.nodata import PixelClass
from tessera.plan import StoredPlan
from tessera.results import QA_FILE, VALID_COUNT_FILE, stack_path

__all__ = ["load_stack_qa", "skipped_scenes", "write_qa_report"]

log = logging.getLogger(__name__)

_MAP_MAX_SIDE = 512


def load_stack_qa(stack_dir: Path, chunk_ids: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{chunk: {product: qa.json}}`` for every chunk of a year."""
    return {
        cid: {p: json.loads(stack_path(stack_dir, cid, p, QA_FILE).read_text()) for p in PRODUCTS} for cid in chunk_ids
    }


def skipped_scenes(qa: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[tuple[str, str, str, str]]:
    """``(chunk, product, scene id, reason)`` of every scene a read step skipped (orbit mismatches excluded)."""
    rows = []
    for cid, products in qa.items():
        for product, q in products.items():
            for s in q.get("scenes_skipped", []):
                if not str(s.get("reason", "")).startswith("orbit "):
                    rows.append((cid, product, str(s["id"]), str(s["reason"])))
    return rows


class _Counts:
    """Valid-observation counts of one product inside the ROI: a histogram and a downsampled map."""

    def __init__(self, plan: StoredPlan, step: int) -> None:
        self.step = step
        h, w = plan.grid.shape
        self.map = np.zeros((-(-h // step), -(-w // step)), np.uint16)
        self.hist = np.zeros(1 << 16, np.int64)

    def add(self, counts: np.ndarray, inside: np.ndarray, row: int, col: int) -> None:
        self.hist += np.bincount(counts[inside > 0].ravel(), minlength=1 << 16)[: 1 << 16]
        # the map samples every step-th pixel of the ROI grid, whichever chunk it falls in
        r0, c0 = -row % self.step, -col % self.step
        sample = counts[r0 :: self.step, c0 :: self.step]
        mr, mc = (row + r0) // self.step, (col + c0) // self.step
        self.map[mr : mr + sample.shape[0], mc : mc + sample.shape[1]] = sample

    def stats(self) -> tuple[int, float, int]:
        """(min, median, max) inside the ROI."""
        values = np.flatnonzero(self.hist)
        total = int(self.hist.sum())
        cum = np.cumsum(self.hist)
        lo, hi = int(np.searchsorted(cum, (total - 1) // 2 + 1)), int(np.searchsorted(cum, total // 2 + 1))
        return int(values[0]), (lo + hi) / 2, int(values[-1])


def _count_maps(plan: StoredPlan, stack_dir: Path) -> tuple[_Counts, _Counts, np.ndarray]:
    """S2 and S1 (both orbits) counts, and the downsampled ROI mask, one chunk in memory at a time."""
    step = max(1, int(np.ceil(max(plan.grid.shape) / _MAP_MAX_SIDE)))
    s2, s1 = _Counts(plan, step), _Counts(plan, step)
    inside_map = np.zeros_like(s2.map, dtype=bool)
    for c in plan.chunks:
        inside = plan.mask(c.grid)
        col, row = c.grid.offset_in(plan.grid)
        s2.add(np.load(stack_path(stack_dir, c.id, "s2", VALID_COUNT_FILE)), inside, row, col)
        s1_counts = sum(np.load(stack_path(stack_dir, c.id, f"s1-{o}", VALID_COUNT_FILE)) for o in ORBITS)
        s1.add(np.asarray(s1_counts, np.uint16), inside, row, col)
        r0, c0 = -row % step, -col % step
        sample = inside[r0::step, c0::step] > 0
        mr, mc = (row + r0) // step, (col + c0) // step
        inside_map[mr : mr + sample.shape[0], mc : mc + sample.shape[1]] = sample
    return s2, s1, inside_map


def _write_map(path: Path, s2: np.ndarray, s1: np.ndarray, inside: np.ndarray) -> None:
    """Two panels (S2 | S1 ascending + descending), grey levels scaled to each panel's maximum."""
    panels = []
    for counts in (s2, s1):
        small = counts.astype(np.float64)
        top = max(1.0, float(small.max()))
        img = (40 + 215 * small / top).astype(np.uint8)
        img[~inside] = 0
        panels.append(img)
    gap = np.zeros((panels[0].shape[0], 4), np.uint8)
    write_png(path, np.concatenate([panels[0], gap, panels[1]], axis=1)[None])


def _nodata_totals(parts: Sequence[Path]) -> dict[str, int]:
    totals: dict[str, int] = {"valid_pixels": 0}
    for part in parts:
        for path in sorted(Path(part).glob("*.json")):
            meta = read_sidecar(path)
            totals["valid_pixels"] += int(meta.get("valid_pixels", 0))
            for reason, n in meta.get("nodata_reasons", {}).items():
                # outside-ROI pixels are counted on the ROI grid instead
                if reason != "outside_roi":
                    totals[reason] = totals.get(reason, 0) + int(n)
    return totals


#: What each pixel class means, for the report (`tessera.nodata.PixelClass`).
_CLASS_TEXT = {
    PixelClass.EMBEDDED: "embedded from valid S2 and valid S1 observations",
    PixelClass.EMBEDDED_NO_VALID_S2: "embedded without a valid S2 observation (S2 fallback)",
    PixelClass.EMBEDDED_NO_VALID_S1: "embedded without a valid S1 observation (S1 fallback)",
    PixelClass.EMBEDDED_NO_VALID_OBSERVATION: "embedded with neither (both fallbacks)",
    PixelClass.NODATA: "in the ROI, not embedded (lacks what the policy requires)",
    PixelClass.OUTSIDE_ROI: "outside the ROI (nodata)",
}


def _class_totals(parts: Sequence[Path]) -> tuple[list[str], dict[str, int]]:
    """The nodata policies the tiles were made with, and their pixels per class (outside the ROI excluded)."""
    policies: set[str] = set()
    totals = {c.name.lower(): 0 for c in PixelClass}
    for part in parts:
        for path in sorted(Path(part).glob("*.json")):
            meta = read_sidecar(path)
            policies.add(str(meta.get("nodata_policy") or "strict"))
            for name, n in meta.get("pixel_classes", {}).items():
                if name != "outside_roi" and name in totals:
                    totals[name] += int(n)
    return sorted(policies), totals


def _class_lines(parts: Sequence[Path], outside: int) -> list[str]:
    policies, totals = _class_totals(parts)
    totals["outside_roi"] = outside
    lines = [
        f"## Pixels per class (model.nodata_policy: {', '.join(policies) or 'unknown'})",
        "",
        "Per-pixel counts of valid observations ship in the `_counts.tif` product, to mask low-evidence pixels.",
        "",
        "| class | pixels | meaning |",
        "|---|---|---|",
    ]
    lines += [f"| {c.name.lower()} | {totals[c.name.lower()]} | {_CLASS_TEXT[c]} |" for c in PixelClass]
    return [*lines, ""]


def write_qa_report(
    plan: StoredPlan, roi_label: str, year: int, stack_dir: Path, parts: Sequence[Path], out: Path
) -> list[tuple[str, str, str, str]]:
    """Write the year's Markdown QA report ``out`` and its ``<stem>_counts.png`` map.

    Args:
        plan: The stored plan (chunks, ROI grid and mask).
        roi_label: How the report names the ROI (its path).
        year: The year.
        stack_dir: The read steps' outputs (``<chunk>/<product>/{qa.json,valid_count.npy}``).
        parts: The inference jobs' output directories (tile sidecars).
        out: The Markdown report.

    Returns:
        The skipped scenes, so the caller can say so.
    """
    chunk_ids = [c.id for c in plan.chunks]
    qa = load_stack_qa(stack_dir, chunk_ids)
    s2, s1, inside_map = _count_maps(plan, stack_dir)
    inside_total = int(sum(plan.doc_inside().values()))
    map_path = out.with_name(f"{out.stem}_counts.png")
    _write_map(map_path, s2.map, s1.map, inside_map)
    nodata = _nodata_totals(parts)
    nodata["outside_roi"] = plan.grid.width * plan.grid.height - inside_total
    skipped = skipped_scenes(qa)
    g = plan.grid
    lines = [
        f"# QA report: TESSERA embeddings {year}",
        "",
        f"ROI `{roi_label}` on {g.crs}, {g.width} x {g.height} pixels of "
        f"{g.resolution:g} m ({inside_total} inside the ROI), {len(chunk_ids)} chunks. "
        f"Pipeline {__version__}, written {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}.",
        "",
        "## Pixels",
        "",
        f"* embedded: {nodata.pop('valid_pixels')}",
        *[f"* nodata, {reason.replace('_', ' ')}: {n}" for reason, n in sorted(nodata.items())],
        "",
        *_class_lines(parts, nodata["outside_roi"]),
        "## Valid observations per pixel (inside the ROI)",
        "",
        "| product | min | median | max |",
        "|---|---|---|---|",
        *[
            f"| {name} | {lo} | {med:g} | {hi} |"
            for name, (lo, med, hi) in (("Sentinel-2", s2.stats()), ("Sentinel-1 (both orbits)", s1.stats()))
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
