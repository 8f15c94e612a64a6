"""The console script: one error line per named error, the test-only failure switch, plan output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tessera.cli import main
from tessera.grid import load_roi
from tessera.plan import write_plan
from tests.e2e import FAIL_FIRST_ATTEMPT_ENV, env

POLY = [[0.10, 52.20], [0.12, 52.20], [0.12, 52.21], [0.10, 52.21], [0.10, 52.20]]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    roi = tmp_path / "roi.geojson"
    roi.write_text(json.dumps({"type": "Polygon", "coordinates": [POLY]}))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"roi": str(roi), "years": [2022], "chunk_size_m": 1000, "tile_size": 40}))
    return path


def test_plan_lists_chunks_and_tiles(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--config", str(config)]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["grid"]["crs"] == "EPSG:32631"
    assert len(plan["chunks"]) >= 2
    assert all(c["tiles"] for c in plan["chunks"])


def test_named_error_is_one_line_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate-config", "--config", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("tessera validate-config: error: ConfigError: config file")
    assert "Traceback" not in "\n".join(err)


def test_unknown_chunk_says_how_to_list_them(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = yaml.safe_load(config.read_text())
    write_plan(load_roi(cfg["roi"]), "k", 1000, tmp_path / "plan")
    settings = json.dumps({"s2": {"source": "planetary-computer"}})
    args = ["--chunk", "1000m_E0_N0", "--year", "2022", "--product", "s2", "--out", "x.json"]
    rc = main(["search", "--settings", settings, "--plan", str(tmp_path / "plan"), *args])
    assert rc == 2
    assert "tessera plan" in capsys.readouterr().err
    assert not Path("x.json").exists()


@pytest.mark.slow
def test_first_attempt_failure_switch_of_the_test_wrapper(config: Path, tmp_path: Path) -> None:
    """``tests/bin/tessera`` (test-only, outside the package) fails each job's first attempt."""
    environment = env({FAIL_FIRST_ATTEMPT_ENV: f"plan={tmp_path / 'markers'}"})

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tessera", *args], env=environment, capture_output=True, text=True, check=False)

    first = run("plan", "--config", str(config))
    assert first.returncode == 3 and "injected test failure" in first.stderr
    assert run("plan", "--config", str(config)).returncode == 0
    # other subcommands are unaffected
    assert run("validate-config", "--config", str(config)).returncode == 0


def test_jobs_that_do_not_embed_do_not_import_pytorch(config: Path, tmp_path: Path) -> None:
    # every job runs `tessera <command>`: registering the training and evaluation commands, the plan
    # jobs, and the modules of the search, read, tile, stitch, QA and export jobs must not pay PyTorch's
    # import (about a second and 150 MB per job); only inference, training and evaluation load it
    modules = ["search", "read", "tiles", "products", "qa", "counts", "export.geotessera", "export.cli"]
    code = (
        "import importlib, sys\n"
        "from tessera.cli import main\n"
        "from tessera.config import read_config\n"
        "from tessera.plan import plan_key\n"
        "from tessera.stages import settings_json\n"
        f"cfg = read_config({str(config)!r})\n"
        f"out = {str(tmp_path)!r} + '/' + plan_key(cfg.roi, cfg.resolution, cfg.chunk_size_m)\n"
        "assert main(['plan-chunks', '--settings', settings_json(cfg, 'plan'), '--out-dir', out]) == 0\n"
        "assert main(['plan-tiles', '--plan', out, '--tile-size', '40', '--out', out + '/tiles-40.json']) == 0\n"
        f"for m in {modules!r}: importlib.import_module('tessera.' + m)\n"
        "print('torch' in sys.modules, 'tessera.train.loop' in sys.modules)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env())
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "False False"
