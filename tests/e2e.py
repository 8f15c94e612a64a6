"""Helpers for end-to-end tests: real Snakemake runs of the workflow against the loopback servers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import yaml
from affine import Affine

from tessera.testing.servers import DemoServers

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "Snakefile"

#: A 700 m x 600 m ROI (EPSG:32631) inside the demo world, centred on a corner of the 1 km chunk
#: lattice, with its north-west quarter cut out (an L): 1 km chunks split it in three (seams in x
#: and in y), 2 km chunks in two and 5 km chunks not at all. Every chunk reads every scene over it,
#: so three chunks rather than four keeps the many e2e runs quicker.
ROI_CENTRE = (302_000.0, 5_787_000.0)
ROI_HALF = (350.0, 300.0)
#: North-west corner of the demo world's fallback patch (`tessera.testing.world`) in the e2e world:
#: in the ROI's south-east quarter, inside one 1 km chunk, rows 40-51 and columns 51-62 of the
#: product. Columns 51-54 are always cloudy, 59-62 SAR-dark, 55-58 both: 48 pixels of each.
FALLBACK_PATCH = (302_160.0, 5_786_900.0)
#: The patch on the product grid: (rows, always-cloudy columns, SAR-dark columns).
PATCH_ROWS, PATCH_CLOUDY, PATCH_DARK = slice(40, 52), slice(51, 59), slice(55, 63)


def write_roi(path: Path) -> Path:
    """The e2e ROI as a raster mask (EPSG:32631, 10 m, the north-west quarter cut out)."""
    (cx, cy), (hx, hy) = ROI_CENTRE, ROI_HALF
    w, h = int(2 * hx / 10), int(2 * hy / 10)
    data = np.ones((h, w), np.uint8)
    data[: h // 2, : w // 2] = 0
    profile = {"driver": "GTiff", "height": h, "width": w, "count": 1, "dtype": "uint8", "crs": "EPSG:32631"}
    with rasterio.open(path, "w", transform=Affine(10, 0, cx - hx, 0, -10, cy + hy), **profile) as dst:
        dst.write(data, 1)
    return path


def write_config(workdir: Path, servers: DemoServers, name: str = "config.yaml", **overrides: Any) -> Path:
    """A run config over the e2e ROI, served by ``servers``; ``overrides`` replace top-level keys.

    Paths in it are relative to ``workdir`` (where the workflow runs), so a finished run can be copied.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    roi = workdir / "roi.tif"
    if not roi.exists():
        write_roi(roi)
    cfg: dict[str, Any] = {
        "roi": "roi.tif",
        "years": [2022],
        "results_dir": "results",
        "chunk_size_m": 1000,
        "tile_size": 50,
        "s2": {"source": "stac", "url": servers.stac_url, "collection": "sentinel-2-l2a", "harmonised": False},
        "s1": {"source": "stac", "url": servers.stac_url, "collection": "sentinel-1-rtc", "resampling": "nearest"},
        "model": {"checkpoint": None, "device": "cpu"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    path = workdir / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def copy_run(src: Path, dst: Path) -> Path:
    """A copy of a finished run's directory (results, config, ``.snakemake`` metadata, mtimes kept)."""
    shutil.copytree(src, dst, symlinks=True)
    return dst


def snakemake_cmd(config: Path, *args: str, cores: int | None = 2, snakefile: Path = SNAKEFILE) -> list[str]:
    """The workflow's command line; ``cores=None`` for a cluster run (the profile sets jobs and resources)."""
    local = ["--cores", str(cores), "--resources", "gpu=1"] if cores is not None else []
    workflow = ["--snakefile", str(snakefile), "--configfile", str(config)]
    return [sys.executable, "-m", "snakemake", *workflow, *local, *args]


#: Test-only switch of ``tests/bin/tessera``: ``<subcommand>=<marker dir>`` fails each job's first attempt.
FAIL_FIRST_ATTEMPT_ENV = "TESSERA_TEST_FAIL_FIRST_ATTEMPT"
_BIN = Path(sys.executable).parent


def env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test process's environment for workflow runs (rules call `tessera`).

    ``tests/bin`` comes first on PATH: its ``tessera`` honours `FAIL_FIRST_ATTEMPT_ENV`, then runs
    this venv's real script.
    """
    path = f"{ROOT / 'tests' / 'bin'}:{_BIN}:{os.environ['PATH']}"
    return {**os.environ, "PATH": path, "TESSERA_REAL_BIN": str(_BIN / "tessera"), **(extra or {})}


def run_snakemake(
    config: Path,
    *args: str,
    extra_env: Mapping[str, str] | None = None,
    timeout: float = 900,
    check: bool = True,
    snakefile: Path = SNAKEFILE,
) -> subprocess.CompletedProcess[str]:
    """Run the workflow in the config's directory; raise with the output on failure when ``check``."""
    res = subprocess.run(
        snakemake_cmd(config, *args, snakefile=snakefile),
        cwd=config.parent,
        env=env(extra_env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and res.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-6000:]}"
        )
    return res


def products(results: Path, year: int = 2022) -> dict[str, Path]:
    stem = results / str(year) / "products" / f"tessera_{year}"
    return {
        "cog": stem.with_suffix(".tif"),
        "scales": stem.with_name(f"{stem.name}_scales.tif"),
        "item": stem.with_suffix(".json"),
        "collection": stem.with_name(f"{stem.name}_collection.json"),
        "quicklook": stem.with_name(f"{stem.name}_quicklook.png"),
        "counts": stem.with_name(f"{stem.name}_counts.tif"),
        "qa": stem.with_name(f"{stem.name}_qa.md"),
    }


def read_embeddings(results: Path, year: int = 2022) -> tuple[np.ndarray, np.ndarray, Any]:
    """(int8 codes (D, H, W), scales (H, W), profile) of a year's product."""
    p = products(results, year)
    with rasterio.open(p["cog"]) as src:
        codes, profile = src.read(), src.profile
    with rasterio.open(p["scales"]) as src:
        scales = src.read(1)
    return codes, scales, profile


def job_counts(dry_run_stdout: str) -> dict[str, int]:
    """Snakemake's 'Job stats' table as {rule: count} (without the total); {} when there is nothing to do."""
    lines = dry_run_stdout.splitlines()
    if "Job stats:" not in lines:
        return {}
    counts: dict[str, int] = {}
    for line in lines[lines.index("Job stats:") + 3 :]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        if parts[0] != "total":
            counts[parts[0]] = int(parts[1])
    return counts


def tree_files(root: Path, exclude: Sequence[str] = (".snakemake",)) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not any(part in exclude for part in p.parts))
