"""The workflow on a real one-node Slurm (slurmctld + slurmd + munged on 127.0.0.1).

Runs the e2e ROI through ``--profile profiles/slurm`` with the S1 read rule made to fail on its first
attempt (a test-only switch, ``tests/bin/tessera``), checks with Slurm's own tools that the jobs ran
under Slurm and that the failed jobs were resubmitted with more memory, that the one inference job
(all the chunk's tiles, the model loaded once) asked for the (count-only) GPU, and compares the
products with the session's local run (`base_run`, other chunking and tiling): identical.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tessera.testing.servers import DemoServers
from tests.e2e import FAIL_FIRST_ATTEMPT_ENV, ROOT, env, products, snakemake_cmd, write_config
from tests.slurm.cluster import LocalSlurm, SlurmUnavailable

pytestmark = [pytest.mark.server, pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSlurm]:
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"), memory_mb=20000)
    try:
        cluster.start()
    except SlurmUnavailable as exc:
        pytest.fail(f"Slurm could not start: {exc}")
    yield cluster
    pids = list(cluster.pids)
    cluster.stop()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def _jobs() -> list[dict[str, str]]:
    """Every job Slurm still remembers (MinJobAge keeps finished ones), from squeue."""
    fields = "JobID:16,State:16,MinMemory:16,tres-per-job:100,Comment:200"
    out = subprocess.run(["squeue", "-h", "-t", "all", "-O", fields], capture_output=True, text=True, check=True).stdout
    keys = ("id", "state", "mem", "tres_per_job", "comment")
    return [dict(zip(keys, line.split(), strict=True)) for line in out.splitlines() if line.strip()]


def test_demo_runs_under_slurm_with_a_resubmitted_failure(
    slurm: LocalSlurm, base_run: Path, demo_servers_session: DemoServers, tmp_path: Path
) -> None:
    # device auto: inference jobs ask Slurm for a GPU and, finding no CUDA (the GPU is count-only), use the CPU
    # one chunk and 64 px tiles (two tiles: fewer Slurm jobs than 50 px, and a third tile size)
    cfg = write_config(
        tmp_path / "slurm", demo_servers_session, chunk_size_m=5000, tile_size=64, model={"device": "auto"}
    )
    markers = tmp_path / "markers"
    before = {j["id"] for j in _jobs()}
    cmd = snakemake_cmd(
        cfg,
        "--profile",
        str(ROOT / "profiles" / "slurm"),
        # no accounting on this one-node cluster: poll squeue, early and often
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--seconds-between-status-checks",
        "2",
        "--slurm-no-account",
        cores=None,
    )
    res = subprocess.run(
        cmd,
        cwd=cfg.parent,
        env=env({FAIL_FIRST_ATTEMPT_ENV: f"read-s1={markers}"}),
        capture_output=True,
        text=True,
        timeout=270,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-6000:]
    jobs = [j for j in _jobs() if j["id"] not in before]
    reads = [j for j in jobs if "rule_read_s1" in j["comment"]]
    infers = [j for j in jobs if "rule_infer" in j["comment"]]
    assert len(list(markers.iterdir())) == 2  # one chunk: the ascending and the descending read
    # every S1 read failed once under Slurm and was resubmitted as a new job with twice the memory
    assert sorted(j["state"] for j in reads) == ["COMPLETED"] * 2 + ["FAILED"] * 2
    assert {j["mem"] for j in reads if j["state"] == "FAILED"} == {"6000M"}
    assert {j["mem"] for j in reads if j["state"] == "COMPLETED"} == {"12000M"}
    # one inference job embedded both 64 px tiles, and asked Slurm for the (count-only) GPU
    assert len(infers) == 1 and infers[0]["tres_per_job"] == "gres:gpu:1"
    log = (cfg.parent / "results/logs/infer/2022").glob("*/all.log")
    assert "2 tiles of" in next(log).read_text()
    assert all(j["tres_per_job"] == "N/A" for j in jobs if j not in infers)
    assert all(j["state"] == "COMPLETED" for j in jobs if j not in reads)
    # plan and search run where Snakemake runs; everything else was a Slurm job
    submitted = sorted({j["comment"].split("rule_")[1].split("_wildcards")[0] for j in jobs})
    assert submitted == ["infer", "qa_report", "read_s1", "read_s2", "stitch"], submitted
    ours, theirs = products(cfg.parent / "results"), products(base_run / "results")
    for key in ("cog", "scales", "counts", "quicklook"):
        assert ours[key].read_bytes() == theirs[key].read_bytes(), key
