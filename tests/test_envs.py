"""The conda environment of the rules: what can be checked without conda.

Snakemake builds the environment from a copy of ``envs/tessera.yaml`` under ``.snakemake/conda/``,
so the file must not name a path; it pins every runtime dependency of ``pyproject.toml`` to the
version these tests run with, and ``envs/tessera.post-deploy.sh`` installs the package itself from
the checkout the Snakefile exports as ``TESSERA_PROJECT_ROOT``.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "envs" / "tessera.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pins = {}
    for line in pip:
        assert "/" not in line and not line.startswith("-"), f"{line!r} names a path or a pip option"
        name, _, version = line.partition("==")
        assert version, f"{line!r} is not pinned exactly"
        pins[name.lower()] = version
    return pins


def test_every_runtime_dependency_is_pinned_to_the_tested_version() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!\[ ;]", d)[0].lower() for d in deps}
    pins = _pins()
    assert set(pins) == names
    for name, version in pins.items():
        installed = importlib.metadata.version(name).split("+")[0]  # torch reports 2.13.0+cpu
        assert installed == version, f"{name}: pinned {version}, tests run {installed}"


def test_post_deploy_installs_the_checkout_editable_without_dependencies(tmp_path: Path) -> None:
    """The script as Snakemake runs it (a copy, another working directory), with ``python`` recorded."""
    shim = tmp_path / "bin" / "python"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "called"}\n')
    shim.chmod(0o755)
    script = tmp_path / "copy.post-deploy.sh"
    script.write_text((ROOT / "envs" / "tessera.post-deploy.sh").read_text())
    env = {**os.environ, "PATH": f"{shim.parent}:{os.environ['PATH']}", "TESSERA_PROJECT_ROOT": str(ROOT)}
    subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, check=True)
    assert (tmp_path / "called").read_text().split() == [
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--quiet",
        "--editable",
        str(ROOT),
    ]
    # from an installed wheel the Snakefile exports the release (tessera.parsetime.export_project_root)
    release = {**env, "TESSERA_PROJECT_ROOT": "tessera-pipeline==0.1.0"}
    subprocess.run(["bash", str(script)], cwd=tmp_path, env=release, check=True)
    called = (tmp_path / "called").read_text().split()
    assert called == ["-m", "pip", "install", "--no-deps", "--quiet", "tessera-pipeline==0.1.0"]
    unset = {k: v for k, v in env.items() if k != "TESSERA_PROJECT_ROOT"}
    res = subprocess.run(["bash", str(script)], cwd=tmp_path, env=unset, capture_output=True, text=True)
    assert res.returncode != 0 and "TESSERA_PROJECT_ROOT" in res.stderr


@pytest.mark.slow
def test_the_snakefile_exports_the_project_root(tmp_path: Path) -> None:
    roi = tmp_path / "roi.geojson"
    roi.write_text('{"type": "Polygon", "coordinates": [[[0.1, 52.2], [0.11, 52.2], [0.11, 52.21], [0.1, 52.2]]]}')
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"roi": str(roi), "years": [2022], "results_dir": str(tmp_path / "results")}))
    probe = tmp_path / "Snakefile"
    probe.write_text(
        f'include: "{ROOT / "Snakefile"}"\n\n\n'
        "rule probe:\n    output:\n        'root.txt',\n    log:\n        'probe.log',\n"
        "    shell:\n        'echo $TESSERA_PROJECT_ROOT > {output} 2> {log}'\n"
    )
    cmd = [sys.executable, "-m", "snakemake", "-s", str(probe), "--configfile", str(cfg), "-c1", "root.txt"]
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    subprocess.run(cmd, cwd=tmp_path, env={**os.environ, "PATH": path}, check=True, capture_output=True)
    assert (tmp_path / "root.txt").read_text().strip() == str(ROOT)
