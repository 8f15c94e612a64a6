"""End to end: real Snakemake runs against the real pgstac STAC API and range-serving COG host.

One complete run (1 km chunks, 50 px tiles; `base_run` in conftest) is shared; the other tests compare
their runs with it: rerunning does nothing, chunking and tiling do not change a single bit,
faults and SIGKILLs do not change the products, a missing asset is skipped and reported, no
signature or token leaks into any file, and adding a year runs only that year's jobs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
import torch

from tessera.layout import TILE_FILES
from tessera.models import v2
from tessera.nodata import PixelClass
from tessera.stacitem import offline_validator
from tessera.stages import STAGE_VERSIONS
from tessera.testing.servers import DemoServers
from tests.e2e import (
    PATCH_CLOUDY,
    PATCH_DARK,
    PATCH_ROWS,
    ROOT,
    copy_run,
    env,
    job_counts,
    products,
    read_embeddings,
    run_snakemake,
    snakemake_cmd,
    tree_files,
    write_config,
)

pytestmark = [pytest.mark.server, pytest.mark.slow]


def test_products_are_complete_and_georeferenced(base_run: Path) -> None:
    p = products(base_run / "results")
    codes, scales, profile = read_embeddings(base_run / "results")
    assert profile["crs"].to_epsg() == 32631
    t = profile["transform"]
    assert t.a == 10 and t.e == -10 and t.c % 10 == 0 and t.f % 10 == 0
    assert codes.shape == (128, 60, 70) and codes.dtype == np.int8
    assert profile["nodata"] == -128
    inside = scales > 0
    # the ROI mask has its top-left quarter cut off: those pixels are nodata, the rest embedded
    assert not inside[:15, :17].any()
    assert inside[30:, 30:].all()
    assert (codes[:, ~np.isfinite(scales)] == -128).all()
    with rasterio.open(p["cog"]) as src:
        tags = src.tags()
        assert src.overviews(1) or max(src.shape) <= 256
        assert src.descriptions[0] == "A00"
    assert tags["TESSERA_YEAR"] == "2022"
    assert tags["TESSERA_RANDOM_WEIGHTS"].lower() == "true"
    assert "random" in tags["TESSERA_WARNING"].lower()
    item = pystac.Item.from_file(str(p["item"]))
    item.validate(validator=offline_validator())
    (s2,) = item.properties["tessera:sources"]["s2"]
    assert (s2["provider"], s2["collection"], s2["harmonised"]) == ("stac", "sentinel-2-l2a", False)
    assert s2["url"].startswith("http://127.0.0.1:") and "?" not in s2["url"]
    assert "embeddings" in item.assets
    with rasterio.open(p["quicklook"]) as ql:
        assert ql.count >= 3 and ql.read(1).std() > 0
    qa = p["qa"].read_text()
    assert "Scenes per chunk" in qa and "1000m_E302000_N5787000" in qa
    assert "Pixels per class (model.nodata_policy: reference)" in qa
    assert tags["TESSERA_NODATA_POLICY"] == "reference" and "TESSERA_WINDOW" not in tags
    with rasterio.open(p["counts"]) as src:
        counts = src.read(masked=True)
        assert src.nodata == 65535 and src.descriptions == ("s2_valid", "s1_valid")
    roi = np.ones((60, 70), bool)
    roi[:30, :35] = False  # tests/e2e.py write_roi
    assert np.array_equal(np.ma.getmaskarray(counts[0]), ~roi) and np.array_equal(np.ma.getmaskarray(counts[1]), ~roi)
    # every pixel with S2 and S1 evidence is embedded (the reference policy embeds a superset of those)
    s2_valid, s1_valid = counts.filled(0)
    assert inside[(s2_valid > 0) & (s1_valid > 0)].all()


def _qa_classes(qa: str) -> dict[str, int]:
    """The QA report's "Pixels per class" table as {class: pixels}."""
    names = {c.name.lower() for c in PixelClass}
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in qa.splitlines() if line.startswith("| ")]
    return {row[0]: int(row[1]) for row in cells if row[0] in names}


def _evidence(counts: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROI mask and valid S2 / S1 observation masks from the counts product."""
    with rasterio.open(counts) as src:
        data = src.read(masked=True)
    inside = ~np.ma.getmaskarray(data[0])
    s2, s1 = data.filled(0) > 0
    return inside, s2, s1


def test_qa_classes_match_the_counts_product(base_run: Path) -> None:
    """The world's fallback patch: 48 always-cloudy, 48 SAR-dark and 48 both, embedded under `reference`."""
    p = products(base_run / "results")
    inside, s2, s1 = _evidence(p["counts"])
    classes = _qa_classes(p["qa"].read_text())
    assert classes == {
        "outside_roi": int((~inside).sum()),
        "embedded": int((inside & s2 & s1).sum()),
        "embedded_no_valid_s2": int((inside & ~s2 & s1).sum()),
        "embedded_no_valid_s1": int((inside & s2 & ~s1).sum()),
        "embedded_no_valid_observation": int((inside & ~s2 & ~s1).sum()),
        "nodata": 0,  # every ROI pixel of the demo world has S2 values: the reference embeds them all
    }
    assert classes["embedded_no_valid_s2"] == classes["embedded_no_valid_s1"] == 48
    assert classes["embedded_no_valid_observation"] == 48
    # the missing evidence is exactly the patch's
    patch_s2, patch_s1 = np.zeros_like(inside), np.zeros_like(inside)
    patch_s2[PATCH_ROWS, PATCH_CLOUDY] = patch_s1[PATCH_ROWS, PATCH_DARK] = True
    assert np.array_equal(~s2 & inside, patch_s2) and np.array_equal(~s1 & inside, patch_s1)
    _, scales, _ = read_embeddings(base_run / "results")
    assert (scales[inside] > 0).all()
    embedded = sum(n for name, n in classes.items() if name.startswith("embedded"))
    assert f"* embedded: {embedded}\n" in p["qa"].read_text() and embedded == int(inside.sum())


def test_strict_policy_writes_nodata_where_reference_falls_back(
    base_run: Path, strict_run: Path, demo_servers_session: DemoServers
) -> None:
    replanned = _replanned(base_run, demo_servers_session, model={"nodata_policy": "strict"})
    assert replanned == {"infer": 3, "stitch": 1, "qa_report": 1, "all": 1}  # what `strict_run` reran
    run = strict_run
    p = products(run / "results")
    inside, s2, s1 = _evidence(p["counts"])
    codes, scales, _ = read_embeddings(run / "results")
    base_codes, base_scales, _ = read_embeddings(base_run / "results")
    both = inside & s2 & s1
    assert np.isnan(scales[~both]).all() and (codes[:, ~both] == -128).all()
    # a pixel with both observations has the same bytes under either policy
    assert scales[both].tobytes() == base_scales[both].tobytes()
    assert codes[:, both].tobytes() == base_codes[:, both].tobytes()
    classes = _qa_classes(p["qa"].read_text())
    assert classes["nodata"] == 3 * 48 and classes["embedded"] == int(both.sum())
    assert classes["embedded_no_valid_s2"] == classes["embedded_no_valid_s1"] == 0
    assert classes["embedded_no_valid_observation"] == 0
    assert "Pixels per class (model.nodata_policy: strict)" in p["qa"].read_text()
    with rasterio.open(p["cog"]) as src:
        assert "TESSERA_NODATA_POLICY" not in src.tags()  # strict: the earlier releases' tags
    assert json.loads(p["item"].read_text())["properties"]["tessera:nodata_policy"] == "strict"


def test_tiles_have_the_reference_layout(base_run: Path) -> None:
    tiles = sorted(p for p in (base_run / "results/2022/tiles").glob("*/*") if p.is_dir())
    assert len(tiles) == 3  # one 50 px tile in each of the three 1 km chunks
    for tile in tiles:
        assert sorted(f.name for f in tile.iterdir()) == sorted([f.name for f in TILE_FILES] + ["roi.tiff"])
        bands = np.load(tile / "bands.npy", mmap_mode="r")
        assert bands.dtype == np.dtype("<u2") and bands.shape[1:] == (50, 50, 10)
        doys = np.load(tile / "doys.npy")
        assert doys.dtype == np.dtype("<u2") and len(doys) == bands.shape[0] and (np.diff(doys) > 0).all()
        asc = np.load(tile / "sar_ascending.npy", mmap_mode="r")
        assert asc.dtype == np.dtype("<i2") and asc.shape[1:] == (50, 50, 2)


def test_rerun_does_nothing(base_run: Path) -> None:
    res = run_snakemake(base_run / "config.yaml", "-n", "--rerun-triggers", "mtime", "params", "input", "code")
    assert job_counts(res.stdout) == {}
    assert "Nothing to be done" in res.stdout + res.stderr


# One chunk with 32 px tiles is the faulty run below (it too must match the base run bit for bit);
# the Slurm test runs one chunk with 64 px tiles.
@pytest.mark.parametrize(("chunk_size_m", "tile_size"), [(2000, 50)])
def test_chunking_and_tiling_do_not_change_a_bit(
    base_run: Path, demo_servers_session: DemoServers, tmp_path: Path, chunk_size_m: int, tile_size: int
) -> None:
    cfg = write_config(tmp_path, demo_servers_session, chunk_size_m=chunk_size_m, tile_size=tile_size)
    run_snakemake(cfg)
    base_codes, base_scales, base_profile = read_embeddings(base_run / "results")
    codes, scales, profile = read_embeddings(tmp_path / "results")
    assert profile["transform"] == base_profile["transform"]
    np.testing.assert_array_equal(codes, base_codes)
    np.testing.assert_array_equal(scales, base_scales)
    for key in ("cog", "scales"):
        assert products(tmp_path / "results")[key].read_bytes() == products(base_run / "results")[key].read_bytes()


def test_faults_on_a_fifth_of_requests_change_nothing(
    base_run: Path, faulty_demo_servers: Callable[..., DemoServers], tmp_path: Path
) -> None:
    servers = faulty_demo_servers(rate=0.2, seed=7, slow_s=3.0)
    # slow responses outlast the read timeout, so they are abandoned and retried; short delays keep
    # the test quick (production waits 1 s, doubling, and honours Retry-After on the STAC API)
    # one chunk and 32 px tiles: this run is also the one-chunk / second-tile-size invariance check
    cfg = write_config(tmp_path, servers, chunk_size_m=5000, tile_size=32)
    run_snakemake(cfg, extra_env={"TESSERA_HTTP_READ_TIMEOUT": "1", "TESSERA_HTTP_RETRY_DELAY": "0.1"})
    counters = servers.range_server.counters
    assert sum(counters.faults.values()) >= 0.15 * counters.requests > 0
    assert set(counters.faults) == {"429", "500", "503", "reset", "slow", "truncated"}
    for key in ("cog", "scales"):
        assert products(tmp_path / "results")[key].read_bytes() == products(base_run / "results")[key].read_bytes()


def _kill_when(proc: subprocess.Popen[str], ready: Callable[[], bool], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the run finished before it could be killed"
        assert time.monotonic() < deadline, "timed out waiting for the moment to kill"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _log_says(logs: Path, pattern: str, text: str) -> Callable[[], bool]:
    return lambda: any(text in p.read_text(errors="replace") for p in logs.glob(pattern))


def test_sigkill_while_reading_and_while_inferring_then_resume(
    base_run: Path, demo_servers_session: DemoServers, tmp_path: Path
) -> None:
    # 8 px tiles (the smallest): a dozen or more per inference job, so the kill lands after a job's first
    # tile is written and well before its last (with 25 px tiles the other 3 took 0.1-0.2 s, and a job
    # now and then finished before the poll below saw its first tile)
    cfg = write_config(tmp_path, demo_servers_session, tile_size=8)
    logs = tmp_path / "results/logs"
    for pattern, text in (("read_s2/2022/*.log", "date 3/"), ("infer/2022/*/*.log", "tile 1/")):
        proc = subprocess.Popen(
            snakemake_cmd(cfg),
            cwd=tmp_path,
            env=env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        _kill_when(proc, _log_says(logs, pattern, text))
        run_snakemake(cfg, "--unlock")
    run_snakemake(cfg, "--rerun-incomplete")
    # the killed inference job kept its finished tiles and embedded only the rest
    assert _log_says(logs, "infer/2022/*/*.log", "tiles were done by an earlier attempt")()
    # another tile size, the same bytes: no seams
    for key in ("cog", "scales"):
        assert products(tmp_path / "results")[key].read_bytes() == products(base_run / "results")[key].read_bytes()


def test_missing_asset_is_skipped_recorded_and_reported(demo_servers_session: DemoServers, tmp_path: Path) -> None:
    data = demo_servers_session.range_server.root
    victim = sorted((data / "s2" / "2022").glob("*/B04.tif"))[5]
    hidden = victim.with_name("B04.tif.hidden")
    victim.rename(hidden)
    try:
        res = run_snakemake(write_config(tmp_path, demo_servers_session, chunk_size_m=5000))
    finally:
        hidden.rename(victim)
    scene = victim.parent.name
    assert f"{scene}" in res.stderr and "skipped" in res.stderr
    qa = products(tmp_path / "results")["qa"].read_text()
    assert scene in qa
    stack_qa = json.loads(next((tmp_path / "results/2022/stack").glob("*/s2/qa.json")).read_text())
    assert any(s["id"] == scene for s in stack_qa["scenes_skipped"])


def test_no_token_or_signature_reaches_any_file(demo_servers_session: DemoServers, tmp_path: Path) -> None:
    token = "FAKE-EARTHDATA-TOKEN-8c1f3e"
    sign = {"sign": "python:tessera.testing.signing:fake_sas"}
    cfg = write_config(tmp_path, demo_servers_session, chunk_size_m=5000, s2=sign, s1=sign)
    res = run_snakemake(cfg, extra_env={"EARTHDATA_TOKEN": token})
    assert products(tmp_path / "results")["cog"].exists()
    needles = [token, "FAKE-SAS-SIGNATURE", "sig="]
    for path in tree_files(tmp_path, exclude=()):
        blob = path.read_bytes()
        for needle in needles:
            assert needle.encode() not in blob, f"{needle} leaked into {path}"
    for needle in needles:
        assert needle not in res.stdout + res.stderr
    # the signed URLs were really used: the server saw the fake SAS query
    assert any("FAKE-SAS-SIGNATURE" in q for q in demo_servers_session.range_server.counters.queries)


def test_adding_a_year_runs_only_that_year(base_run: Path, demo_servers_session: DemoServers, tmp_path: Path) -> None:
    run = copy_run(base_run, tmp_path / "run")
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in products(run / "results").values()}
    cfg = write_config(run, demo_servers_session, years=[2022, 2023], keep_tiles=True)
    plan = run_snakemake(cfg, "-n")
    counts = job_counts(plan.stdout)
    assert counts["stitch"] == 1 and counts["search"] > 0
    assert "2023" in plan.stdout and "year=2022" not in plan.stdout
    run_snakemake(cfg)
    assert products(run / "results", 2023)["cog"].exists()
    for p, (blob, mtime) in before.items():
        assert p.read_bytes() == blob and p.stat().st_mtime_ns == mtime


# --- exact reruns: a changed setting plans exactly the jobs whose output it changes ------------------


def _replanned(base_run: Path, servers: DemoServers, *args: str, **overrides: object) -> dict[str, int]:
    """Jobs a dry run of the finished base run plans with ``overrides`` in its config (nothing is run)."""
    cfg = write_config(base_run, servers, name="config-changed.yaml", keep_tiles=True, **overrides)
    try:
        return job_counts(run_snakemake(cfg, "-n", *args).stdout)
    finally:
        cfg.unlink()


def _tiny_v2_checkpoint(path: Path) -> Path:
    args = v2.StudentArgs(latent_dim=8, num_layers=1, nhead=2, dim_feedforward=16)
    torch.manual_seed(0)
    torch.save({"args": args.to_dict(), "model": v2.build(args).state_dict()}, path)
    return path


def test_an_s2_setting_reruns_read_s2_and_what_follows(base_run: Path, demo_servers_session: DemoServers) -> None:
    s2 = {"source": "stac", "url": demo_servers_session.stac_url, "collection": "sentinel-2-l2a", "harmonised": True}
    counts = _replanned(base_run, demo_servers_session, s2=s2)
    # three chunks: their S2 reads, tile exports (keep_tiles), inference jobs; one stitch and QA report
    assert counts == {"read_s2": 3, "export_tiles": 3, "infer": 3, "stitch": 1, "qa_report": 1, "all": 1}


@pytest.mark.parametrize("change", ["checkpoint", "output"])
def test_a_model_setting_reruns_inference_and_products(
    base_run: Path, demo_servers_session: DemoServers, tmp_path: Path, change: str
) -> None:
    model = {"checkpoint": str(_tiny_v2_checkpoint(tmp_path / "student.pt"))} if change == "checkpoint" else {}
    model |= {"output": "float32"} if change == "output" else {}
    counts = _replanned(base_run, demo_servers_session, model=model)
    assert counts == {"infer": 3, "stitch": 1, "qa_report": 1, "all": 1}


def test_a_renamed_roi_reruns_only_the_qa_report(
    base_run: Path, demo_servers_session: DemoServers, tmp_path: Path
) -> None:
    """The plan is addressed by the ROI's content: a renamed, moved copy plans nothing but the QA report,
    which names the ROI by its path."""
    roi = shutil.copy2(base_run / "roi.tif", tmp_path / "Renamed ROI.tif")
    assert _replanned(base_run, demo_servers_session, roi=str(roi)) == {"qa_report": 1, "all": 1}


def test_machine_settings_rerun_nothing(base_run: Path, demo_servers_session: DemoServers) -> None:
    model = {"batch_size": 512, "device": "auto"}
    assert _replanned(base_run, demo_servers_session, "--set-threads", "infer=1", "read_s2=1", model=model) == {}


_AFTER_INFER = {"infer": 3, "stitch": 1, "qa_report": 1, "all": 1}
_AFTER_SEARCH = {"read_s2": 3, "read_s1": 6, "export_tiles": 3, **_AFTER_INFER}
_BUMPED = {
    # the plan's version is part of its key: a new plan directory, and every job reads from it
    "plan": {"plan": 1, "plan_tiles": 1, "search": 9, **_AFTER_SEARCH},
    "search": {"search": 9, **_AFTER_SEARCH},  # 3 chunks x (S2, S1 ascending, S1 descending)
    "read_s2": {"read_s2": 3, "export_tiles": 3, **_AFTER_INFER},
    "read_s1": {"read_s1": 6, "export_tiles": 3, **_AFTER_INFER},
    "tiles": {"export_tiles": 3, "all": 1},  # nothing in `all` reads the exported tiles
    "infer": _AFTER_INFER,
    "stitch": {"stitch": 1, "all": 1},  # the QA report reads the tiles and stacks, not the COG
    "qa": {"qa_report": 1, "all": 1},
    # not part of `all`: bumped after a `snakemake geotessera`, that target reruns the export only
    "export_geotessera": {"export_geotessera": 1, "geotessera": 1},
}


def test_every_stage_version_has_a_bump_test() -> None:
    assert set(_BUMPED) == set(STAGE_VERSIONS)


@pytest.mark.parametrize("stage", list(_BUMPED))
def test_a_stage_version_bump_reruns_that_stage_and_its_descendants(
    base_run: Path, demo_servers_session: DemoServers, tmp_path: Path, stage: str
) -> None:
    # a release that changes the stage: a copy of the workflow and package with the stage's version bumped
    # (Snakemake puts the Snakefile's directory first on sys.path, so the copy's package is the one parsed)
    release = tmp_path / "release"
    for name in ("rules", "tessera", "envs", "config"):
        shutil.copytree(ROOT / name, release / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "Snakefile", release / "Snakefile")
    stages = release / "tessera" / "stages.py"
    text = stages.read_text()
    old, new = f'"{stage}": {STAGE_VERSIONS[stage]},', f'"{stage}": {STAGE_VERSIONS[stage] + 1},'
    assert old in text
    stages.write_text(text.replace(old, new))
    run, targets = base_run, []
    if stage == "export_geotessera":
        run, targets = copy_run(base_run, tmp_path / "run"), ["geotessera"]
        # a flag before the target: the helper's command line ends in --resources, which takes several values
        run_snakemake(write_config(run, demo_servers_session, keep_tiles=True), "-p", "geotessera")
    cfg = write_config(run, demo_servers_session, name="config-same.yaml", keep_tiles=True)
    try:
        assert job_counts(run_snakemake(cfg, "-n", *targets).stdout) == {}  # up to date before the bump
        res = run_snakemake(cfg, "-n", *targets, snakefile=release / "Snakefile")
    finally:
        cfg.unlink()
    assert job_counts(res.stdout) == _BUMPED[stage]
