"""The Snakemake workflow itself: lint, dry runs and parse-time validation."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio.warp
import torch
import yaml

from tessera.models import v2
from tests.e2e import job_counts

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


def written(workdir: Path) -> list[str]:
    """What is in ``workdir`` besides the ROI and config `run_config` wrote and Snakemake's ``.snakemake/``."""
    return sorted(p.name for p in workdir.iterdir() if p.name not in ("roi.geojson", "config.yaml", ".snakemake"))


def test_lint_is_clean_and_writes_nothing(tmp_path: Path) -> None:
    res = snakemake("--lint", "--configfile", str(run_config(tmp_path)), cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Congratulations, your workflow is in a good condition!" in res.stdout + res.stderr
    assert written(tmp_path) == []


@pytest.mark.slow
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
    assert written(tmp_path) == []  # a dry run writes nothing, not even the plan


@pytest.mark.slow
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
@pytest.mark.slow
def test_bad_config_stops_before_any_job(tmp_path: Path, overrides: dict[str, object], message: str) -> None:
    res = snakemake("-n", "--configfile", str(run_config(tmp_path, **overrides)), cwd=tmp_path)
    assert res.returncode != 0
    assert message in res.stdout + res.stderr
    assert not (tmp_path / "results").exists()


def _checkpoint(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / "tessera.pt"
    if kind == "corrupt":
        path.write_bytes(b"not a checkpoint" * 64)
    elif kind == "other-family":
        # a v2 student (args + model) where the config says v1.1
        args = v2.StudentArgs(latent_dim=8, num_layers=1, nhead=2, dim_feedforward=16)
        torch.save({"args": args.to_dict(), "model": v2.build(args).state_dict()}, path)
    return path


@pytest.mark.parametrize(
    ("kind", "family", "error", "message"),
    [
        ("missing", "auto", "CheckpointError", "does not exist"),
        ("corrupt", "auto", "CheckpointError", "corrupt or not a PyTorch file"),
        ("other-family", "v1.1", "CheckpointError", "is a v2 student checkpoint"),
    ],
)
@pytest.mark.slow
def test_a_bad_checkpoint_fails_the_dry_run(tmp_path: Path, kind: str, family: str, error: str, message: str) -> None:
    model = {"checkpoint": str(_checkpoint(tmp_path, kind)), "family": family}
    res = snakemake("-n", "--configfile", str(run_config(tmp_path, model=model)), cwd=tmp_path)
    assert res.returncode != 0
    assert f"{error}: checkpoint {tmp_path / 'tessera.pt'}" in res.stdout + res.stderr
    assert message in res.stdout + res.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_a_jobs_own_parse_skips_the_checks_that_import_pytorch(tmp_path: Path) -> None:
    # the main process checked the checkpoint before submitting; a job's parse (here a subprocess job's,
    # as a cluster job's in --mode remote) does not load it again, nor import PyTorch for it
    cfg = run_config(tmp_path, model={"checkpoint": str(tmp_path / "missing.pt")})
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    argv = [sys.executable, "-X", "importtime", *SNAKEMAKE[1:], "-n", "--configfile", str(cfg), "--mode", "subprocess"]
    res = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "model checked by the main process" in res.stderr
    imported = {line.split("|")[-1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")}
    assert "snakemake" in imported and "tessera.parsetime" in imported
    assert "torch" not in imported
    assert not (tmp_path / "results").exists()


def _local_rules() -> set[str]:
    """Rules declared ``localrules`` in rules/*.smk, and the target rules (they run where Snakemake runs)."""
    names = set()
    for smk in (ROOT / "rules").glob("*.smk"):
        block = re.search(r"^localrules:\n((?:    \w+,\n)+)", smk.read_text(), re.MULTILINE)
        if block:
            names |= set(re.findall(r"(\w+),", block.group(1)))
    return names | {"all", "tiles", "geotessera"}


@pytest.mark.slow
def test_50000_km2_plans_fewer_than_1200_cluster_submissions(tmp_path: Path) -> None:
    """The default ROI size limit, the default Slurm profile: a dry run counts the jobs it submits."""
    radius = (50_000e6 / np.pi) ** 0.5 * 0.99
    angles = np.linspace(0, 2 * np.pi, 360, endpoint=False)
    xs, ys = 500_000 + radius * np.cos(angles), 5_600_000 + radius * np.sin(angles)
    lon, lat = rasterio.warp.transform("EPSG:32630", "EPSG:4326", xs.tolist(), ys.tolist())
    ring = [*zip(lon, lat, strict=True), (lon[0], lat[0])]
    roi = tmp_path / "region.geojson"
    roi.write_text(json.dumps({"type": "Polygon", "coordinates": [ring]}))
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"roi": str(roi), "years": [2022], "results_dir": str(tmp_path / "results")}))
    res = snakemake("-n", "--profile", str(ROOT / "profiles" / "slurm"), "--configfile", str(cfg), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    counts = job_counts(res.stdout)
    assert counts["read_s2"] > 100  # about 150 chunks of 20 km
    # no rule is grouped, so every job of a non-local rule is one Slurm submission
    assert "group job" not in res.stdout
    submissions = sum(n for rule, n in counts.items() if rule not in _local_rules())
    assert submissions <= 1200, (submissions, counts)
    assert counts["infer"] == counts["read_s2"]  # one inference job per chunk: the model loads once per chunk
    assert not (tmp_path / "results").exists()
