"""``tessera demo``: the offline demo end to end (demo world, loopback servers, the Snakemake workflow).

Works from a source checkout and from an installed wheel: the demo ROI and config are package data
(`tessera.testing.data`), and the workflow (``Snakefile``, ``rules/``, ``profiles/``) ships in the
wheel as ``tessera/workflow``.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from tessera.io import atomic_path
from tessera.testing.servers import demo_servers
from tessera.testing.world import DEMO_ROI, generate_demo_data, is_generated

__all__ = ["DEMO_CONFIG", "DEMO_ROI", "add_cli", "run_demo", "workflow_dir", "write_demo_config"]

log = logging.getLogger(__name__)

_DATA = Path(str(resources.files("tessera.testing").joinpath("data")))
#: The demo run config (relative ``roi`` resolved against this file's directory).
DEMO_CONFIG = _DATA / "demo.yaml"


def workflow_dir() -> Path:
    """The directory holding the ``Snakefile``: the wheel's ``tessera/workflow`` or the source checkout."""
    with_package = Path(str(resources.files("tessera"))).parent
    for candidate in (Path(str(resources.files("tessera"))) / "workflow", with_package):
        if (candidate / "Snakefile").is_file():
            return candidate
    raise FileNotFoundError(f"no Snakefile under {with_package}: the tessera-pipeline installation is incomplete")


def write_demo_config(path: Path, stac_url: str, years: list[int], results_dir: Path) -> dict[str, Any]:
    """Write the demo run config: `DEMO_CONFIG` pointed at the live STAC API, with absolute paths.

    Returns:
        The config written.
    """
    import yaml

    cfg: dict[str, Any] = yaml.safe_load(DEMO_CONFIG.read_text())
    cfg["roi"] = str((DEMO_CONFIG.parent / cfg["roi"]).resolve())
    cfg["years"] = list(years)
    cfg["results_dir"] = str(results_dir.resolve())
    for kind in ("s2", "s1"):
        cfg[kind] = {**cfg[kind], "url": stac_url}
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return cfg


def run_demo(workdir: Path, cores: int, years: list[int], extra: list[str], seed: int = 0) -> int:
    """Generate (once) and serve the demo world, then run the workflow on it with Snakemake.

    Returns:
        Snakemake's exit status.

    Raises:
        ServerError: the servers could not be started (e.g. PostgreSQL is not installed).
    """
    workdir = workdir.resolve()
    data_dir = workdir / "data"
    if not is_generated(data_dir, years, seed, DEMO_ROI):
        generate_demo_data(data_dir, years, seed, DEMO_ROI)
    root = workflow_dir()
    with demo_servers(data_dir) as servers:
        config = workdir / "config.yaml"
        write_demo_config(config, servers.stac_url, years, workdir / "results")
        cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(root / "Snakefile")]
        cmd += ["--profile", str(root / "profiles" / "local"), "--configfile", str(config)]
        cmd += ["--cores", str(cores), *demo_targets(), *extra]
        # Jobs call the `tessera` script of this interpreter's environment.
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        log.info("demo: %s", " ".join(cmd))
        rc = subprocess.run(cmd, cwd=workdir, env=env, check=False).returncode
    if rc == 0:
        say_exports(workdir / "results", years)
    return rc


def demo_targets() -> list[str]:
    """The Snakemake targets of the demo: the products (``all``) and the geotessera export of each year."""
    return ["all", "geotessera"]


def say_exports(results: Path, years: list[int]) -> None:
    """Tell the user where the geotessera export of each demo year is, and how to open it."""
    for year in years:
        out = results / str(year) / "geotessera"
        print(
            f"demo: geotessera export of {year} in {out} "
            f"(open it offline with geotessera.GeoTessera(embeddings_dir='{out}', registry_dir='{out}'))"
        )


def _cmd_demo(args: argparse.Namespace) -> int:
    """Run the offline demo end to end (demo data, local servers, Snakemake)."""
    extra = [a for a in args.snakemake_args if a != "--"]
    return run_demo(Path(args.workdir), args.cores, list(args.years), extra, args.seed)


def add_cli(subparsers: Any) -> None:
    """Register ``tessera demo``."""
    d = subparsers.add_parser("demo", help=(_cmd_demo.__doc__ or "").strip())
    d.add_argument("--workdir", default="demo-run", help="directory of the demo data, config and results")
    d.add_argument("--cores", type=int, default=2, help="cores Snakemake may use")
    d.add_argument("--years", type=int, nargs="+", default=[2022], help="years to embed (default 2022)")
    d.add_argument("--seed", type=int, default=0, help="seed of the demo world")
    d.add_argument("snakemake_args", nargs=argparse.REMAINDER, help="after --: extra Snakemake arguments")
    d.set_defaults(func=_cmd_demo)
