"""The wheel: every module, the workflow and the demo's package data; ``tessera demo`` from an installed wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # built from a copy: setuptools writes build/ and *.egg-info next to the sources
    skip = shutil.ignore_patterns(
        ".git", ".venv*", ".whl", ".devrun", "build", "dist", "*.egg-info", "__pycache__", "results", "demo-run"
    )
    src = shutil.copytree(ROOT, out / "src", ignore=skip)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)]
    subprocess.run(cmd, check=True, capture_output=True, cwd=out)
    (path,) = out.glob("tessera_pipeline-*.whl")
    return path


@pytest.mark.slow
def test_wheel_holds_every_module_and_the_workflow(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "tessera").rglob("*.py")}
    assert modules <= names, f"not in the wheel (add the subpackage to [tool.setuptools] packages): {modules - names}"
    workflow = {"Snakefile", *(f"rules/{p.name}" for p in (ROOT / "rules").glob("*.smk"))}
    workflow |= {f"profiles/{p.parent.name}/config.yaml" for p in (ROOT / "profiles").glob("*/config.yaml")}
    workflow |= {f"envs/{p.name}" for p in (ROOT / "envs").iterdir()}
    assert {f"tessera/workflow/{n}" for n in workflow} <= names
    assert {"tessera/testing/data/demo.yaml", "tessera/testing/data/demo_roi.geojson"} <= names
    assert "tessera/schemas/config.schema.yaml" in names


@pytest.mark.slow
@pytest.mark.server
def test_tessera_demo_runs_from_an_installed_wheel(wheel: Path, tmp_path: Path) -> None:
    """The wheel installed on its own (its dependencies from this venv), run far from the checkout: a dry
    run, then the demo without training, every job running the wheel's ``tessera``."""
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": str(site), "PATH": f"{site / 'bin'}:{os.environ['PATH']}"}
    probe = "import tessera.testing.demo as d; print(d.workflow_dir(), d.DEMO_CONFIG)"
    where = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True)
    workflow, config = where.stdout.split()
    assert Path(workflow) == site / "tessera" / "workflow" and Path(config).is_relative_to(site)
    demo = [sys.executable, "-m", "tessera.cli", "demo", "--workdir", str(tmp_path / "demo")]
    cmd = [*demo, "--", "-n", "--quiet", "rules"]
    res = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "infer" in res.stdout and "stitch" in res.stdout
    assert str(site / "tessera" / "workflow" / "Snakefile") in res.stderr
    assert not (tmp_path / "demo" / "results").exists()
    # the whole demo but the training (about 2 minutes on 2 cores): products and the geotessera export
    res = subprocess.run([*demo, "--no-train"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    products = tmp_path / "demo" / "results" / "2022" / "products"
    for name in ("tessera_2022.tif", "tessera_2022_scales.tif", "tessera_2022_counts.tif", "tessera_2022.json"):
        assert (products / name).is_file(), name
    assert "geotessera export of 2022 in" in res.stdout and "snakemake -n -s " in res.stdout
    logs = "".join(p.read_text() for p in (tmp_path / "demo" / "results" / "logs" / "infer").rglob("*.log"))
    assert "tiles of" in logs
    # the demo's own geotessera export, read by geotessera with every socket but loopback blocked
    from tests.offline import block_network
    from tests.test_geotessera import check_run_export

    blocked: list[str] = []
    undo = block_network(blocked.append)
    try:
        results = tmp_path / "demo" / "results"
        check_run_export(results, Path(config).parent / "demo_roi.geojson", results / "2022" / "geotessera", tmp_path)
    finally:
        undo()
    assert blocked == []
    # the wheel ships no config/config.yaml: a run without --configfile says what to pass
    snakefile = site / "tessera" / "workflow" / "Snakefile"
    bare = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "-d", str(tmp_path / "bare"), "-n", "--cores", "1"]
    res = subprocess.run(bare, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    assert "ConfigError: no config given, and" in res.stdout + res.stderr
    assert "pass --configfile" in res.stdout + res.stderr
