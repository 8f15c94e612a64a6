"""The QA report (`tessera.qa`): pixel classes, nodata totals and observation statistics as numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from tessera.grid import load_roi
from tessera.layout import PRODUCTS
from tessera.nodata import class_counts, classify
from tessera.plan import StoredPlan, write_plan
from tessera.qa import write_qa_report
from tessera.results import QA_FILE, VALID_COUNT_FILE

H, W = 20, 30  # 200 m chunks cut the ROI into two chunks, 20 and 10 pixels wide
S2_DATES, ASC, DESC = 5, 3, 4


def _roi(path: Path) -> Path:
    mask = np.ones((H, W), np.uint8)
    mask[:5, :6] = 0  # 30 pixels outside
    profile = {"driver": "GTiff", "height": H, "width": W, "count": 1, "dtype": "uint8", "crs": "EPSG:32631"}
    with rasterio.open(path, "w", transform=Affine(10, 0, 300_000, 0, -10, 5_790_000), **profile) as dst:
        dst.write(mask, 1)
    return path


def _evidence() -> tuple[np.ndarray, np.ndarray]:
    """Valid S2 and S1 counts on the ROI grid: an always-cloudy and a SAR-dark block across the chunk seam."""
    s2 = np.full((H, W), S2_DATES, np.uint16)
    s1 = np.full((H, W), ASC + DESC, np.uint16)
    s2[10:12, 18:21] = 0  # 6 pixels
    s1[10:13, 20:22] = 0  # 6 pixels, 2 of them also without S2 (rows 10-11, column 20)
    return s2, s1


def _inputs(tmp: Path, policy: str) -> tuple[StoredPlan, Path, list[Path]]:
    """A stored plan, the read steps' counts and QA, and one tile sidecar per chunk as inference writes it."""
    write_plan(load_roi(_roi(tmp / "roi.tif")), "k", 200, tmp / "plan")
    plan = StoredPlan(tmp / "plan")
    assert len(plan.chunks) == 2
    s2, s1 = _evidence()
    parts = []
    for chunk in plan.chunks:
        col, row = chunk.grid.offset_in(plan.grid)
        win = np.s_[row : row + chunk.grid.height, col : col + chunk.grid.width]
        counts = {
            "s2": s2[win],
            "s1-ascending": np.minimum(s1[win], ASC),
            "s1-descending": s1[win] - ASC * (s1[win] > 0),
        }
        for product in PRODUCTS:
            d = tmp / "stack" / chunk.id / product
            d.mkdir(parents=True)
            np.save(d / VALID_COUNT_FILE, counts[product].astype(np.uint16))
            dates = [f"2022-01-{i + 1:02d}" for i in range(S2_DATES if product == "s2" else ASC)]
            qa = {"scenes_found": len(dates), "scenes_used": len(dates), "dates": dates, "scenes_skipped": []}
            (d / QA_FILE).write_text(json.dumps(qa))
        roi = plan.mask(chunk.grid)
        classes = classify("random", policy, roi, s2[win], s1[win], np.ones_like(roi, bool))
        n_valid = int(np.isin(classes, (1, 2, 3, 4)).sum())
        reasons = {"outside_roi": int((roi == 0).sum()), "no_valid_observation": int((roi > 0).sum()) - n_valid}
        side = {
            "nodata_policy": policy,
            "valid_pixels": n_valid,
            "nodata_reasons": reasons,
            "pixel_classes": class_counts(classes),
        }
        part = tmp / "emb" / chunk.id / "all"
        part.mkdir(parents=True)
        (part / "0_0_20_20.json").write_text(json.dumps(side))
        parts.append(part)
    return plan, tmp / "stack", parts


def _table(report: str, header: str) -> dict[str, list[str]]:
    """Rows of the Markdown table under ``header``, keyed by their first cell."""
    lines = report.splitlines()
    rows = {}
    for line in lines[lines.index(header) + 1 :]:
        if line.startswith("## "):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0] not in ("class", "product", "chunk"):
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.parametrize("policy", ["reference", "strict"])
def test_class_table_and_totals(tmp_path: Path, policy: str) -> None:
    plan, stack, parts = _inputs(tmp_path, policy)
    out = tmp_path / "qa" / "tessera_2022_qa.md"
    out.parent.mkdir()
    assert write_qa_report(plan, "roi.tif", 2022, stack, parts, out) == []
    report = out.read_text()
    classes = {k: int(v[0]) for k, v in _table(report, f"## Pixels per class (model.nodata_policy: {policy})").items()}
    # 570 ROI pixels: 4 without S2 only, 4 without S1 only, 2 without either
    if policy == "reference":
        want = {"embedded_no_valid_s2": 4, "embedded_no_valid_s1": 4, "embedded_no_valid_observation": 2, "nodata": 0}
    else:
        want = {"embedded_no_valid_s2": 0, "embedded_no_valid_s1": 0, "embedded_no_valid_observation": 0, "nodata": 10}
    assert classes == {"outside_roi": 30, "embedded": 560, **want}
    embedded = 570 - want["nodata"]
    assert f"* embedded: {embedded}" in report.splitlines()
    assert f"* nodata, no valid observation: {want['nodata']}" in report.splitlines()
    assert "* nodata, outside roi: 30" in report.splitlines()
    stats = _table(report, "## Valid observations per pixel (inside the ROI)")
    assert stats == {"Sentinel-2": ["0", "5", "5"], "Sentinel-1 (both orbits)": ["0", "7", "7"]}
    chunks = _table(report, "## Scenes per chunk")
    assert set(chunks) == {c.id for c in plan.chunks}
    assert (out.parent / "tessera_2022_qa_counts.png").is_file()
