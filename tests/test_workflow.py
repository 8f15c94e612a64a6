"""The Snakemake workflow itself: lint, dry runs and parse-time validation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]
POLY = [[0.10, 52.20], [0.12, 52.20], [0.12, 52.21], [0.10, 52.21], [0.10, 52.20]]


def run_config(tmp_path: Path, **overrides: object) -> Path:
    roi = tmp_path / "roi.geojson"
    roi.write_text(
        json.dumps({"type": "Polygon", "coordinates": [POLY]}),
    )
    cfg = {"roi": str(roi), "years": [2022], "results_dir": str(tmp_path / "results"), "chunk_size_m": 1000}
    cfg.update(overrides)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def snakemake(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run([*SNAKEMAKE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def job_counts(stdout: str) -> dict[str, int]:
    """Parse Snakemake's 'Job stats' table."""
    counts: dict[str, int] = {}
    lines = stdout.splitlines()
    start = lines.index("Job stats:") + 3
    for line in lines[start:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


def test_lint_is_clean(tmp_path: Path) -> None:
    res = snakemake("--lint", "--configfile", str(run_config(tmp_path)), cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Congratulations, your workflow is in a good condition!" in res.stdout + res.stderr


def test_dry_run_plans_every_stage(tmp_path: Path) -> None:
    res = snakemake("-n", "--quiet", "rules", "--configfile", str(run_config(tmp_path)), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    counts = job_counts(res.stdout)
    chunks = counts["read_s2"]
    assert chunks > 1
    assert counts["search"] == 3 * chunks
    assert counts["read_s1"] == 2 * chunks
    assert counts["infer"] == chunks and "tile" not in counts and "export_tiles" not in counts
    assert counts["stitch"] == 1
    assert not (tmp_path / "results" / "2022").exists()


def test_two_years_double_the_jobs(tmp_path: Path) -> None:
    one = job_counts(snakemake("-n", "--configfile", str(run_config(tmp_path)), cwd=tmp_path).stdout)
    two = job_counts(
        snakemake("-n", "--configfile", str(run_config(tmp_path, years=[2022, 2023])), cwd=tmp_path).stdout
    )
    assert two["search"] == 2 * one["search"]
    assert two["stitch"] == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"years": [2016]}, "outside the mission years"),
        ({"chunk_sise_m": 3}, "chunk_sise_m"),
        ({"roi": "does/not/exist.tif"}, "does not exist"),
        ({"s1": {"source": "nowhere"}}, "is not one of"),
    ],
)
def test_bad_config_stops_before_any_job(tmp_path: Path, overrides: dict[str, object], message: str) -> None:
    res = snakemake("-n", "--configfile", str(run_config(tmp_path, **overrides)), cwd=tmp_path)
    assert res.returncode != 0
    assert message in res.stdout + res.stderr
    assert not (tmp_path / "results" / "2022").exists()
