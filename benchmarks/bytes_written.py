"""Bytes written per pixel-year by a whole run of the workflow on the demo world.

Runs the workflow twice in this process, each time from scratch, over the demo ROI for 2022 (the
seeded demo world served by the loopback STAC API and COG host):

* baseline: ``keep_tiles: true``, the reference-layout tile directories written as well, as every
  run wrote them on its inference path before inference read the chunk stacks directly;
* default: ``keep_tiles: false``.

Bytes written are the block writes of Snakemake and all its jobs (``getrusage(RUSAGE_CHILDREN)``,
``ru_oublock`` x 512: every byte a job wrote, temporary files included), and, for comparison, the
size of what stays under ``results/``. Divided by the ROI's inside pixels (one year).

    python benchmarks/bytes_written.py [--workdir DIR] [--snakefile PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from tessera.testing.demo import workflow_dir, write_demo_config
from tessera.testing.servers import demo_servers
from tessera.testing.world import generate_demo_data


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and ".snakemake" not in p.parts)


def _inside_pixels(results: Path) -> int:
    (chunks,) = results.glob("plan/*/chunks.json")
    return sum(int(c["inside"]) for c in json.loads(chunks.read_text())["chunks"])


def measure(workdir: Path, stac_url: str, snakefile: Path, keep_tiles: bool) -> dict[str, float]:
    """One run from scratch; bytes written by its process tree, bytes left in results, per pixel-year."""
    workdir.mkdir(parents=True)
    config = workdir / "config.yaml"
    write_demo_config(config, stac_url, [2022], workdir / "results")
    cfg = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**cfg, "keep_tiles": keep_tiles}))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "--configfile", str(config), "--cores", "2"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_oublock
    t0 = time.perf_counter()
    subprocess.run([*cmd, "--resources", "gpu=1", "--quiet", "all"], cwd=workdir, env=env, check=True)
    written = (resource.getrusage(resource.RUSAGE_CHILDREN).ru_oublock - before) * 512
    results = workdir / "results"
    pixels = _inside_pixels(results)
    kept = _tree_bytes(results)
    return {
        "seconds": time.perf_counter() - t0,
        "pixels": pixels,
        "written": written,
        "kept": kept,
        "written_per_px": written / pixels,
        "kept_per_px": kept / pixels,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--snakefile", type=Path, default=workflow_dir() / "Snakefile")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bytes-written-") as tmp:
        work = args.workdir or Path(tmp)
        data = work / "data"
        generate_demo_data(data, [2022], 0)
        with demo_servers(data) as servers:
            rows = {
                "baseline (tile directories on the path)": measure(
                    work / "tiles", servers.stac_url, args.snakefile, True
                ),
                "default (inference reads the stacks)": measure(
                    work / "stacks", servers.stac_url, args.snakefile, False
                ),
            }
    print(f"{'run':42s} {'written/px-yr':>14s} {'kept/px-yr':>11s} {'written':>10s} {'seconds':>8s}")
    for name, r in rows.items():
        print(
            f"{name:42s} {r['written_per_px']:12.0f} B {r['kept_per_px']:9.0f} B "
            f"{r['written'] / 1e6:8.1f} MB {r['seconds']:8.0f}"
        )
    base, new = rows.values()
    ratios = f"{new['written'] / base['written']:.2f} written, {new['kept'] / base['kept']:.2f} kept"
    print(f"ratio default / baseline: {ratios}")


if __name__ == "__main__":
    main()
