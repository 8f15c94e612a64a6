"""The demo's evaluation step on a real workflow product (the shared ``base_run``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tessera.evaluate.cli import format_table
from tessera.testing.demo import evaluate_demo


@pytest.mark.server
@pytest.mark.slow
def test_demo_evaluation_probes_the_product_beside_it(base_run: Path, demo_data_dir: Path) -> None:
    results = base_run / "results"
    report = evaluate_demo(demo_data_dir, results, 2022)
    products = results / "2022" / "products"
    for name in ("tessera_2022_probe.md", "tessera_2022_probe.json", "tessera_2022_probe_confusion.png"):
        assert (products / name).is_file(), name
    assert list(report["features"]) == ["model", "random weights", "raw median"]
    assert report["groups"] == {"timing": [2, 3]}
    assert report["pixels"]["test"] > 100
    table = format_table(report)
    assert "timing F1" in table and "raw median" in table
