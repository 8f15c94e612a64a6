"""``tessera demo``: the offline demo end to end (demo world, loopback servers, the Snakemake workflow).

1. The workflow runs on the demo world up to the reference-layout tiles.
2. The small demo model is trained on them with Barlow Twins (`tessera.train`, ``demo_train.yaml``:
   about a minute on one core) into ``<workdir>/train/encoder.pt``.
3. The workflow runs to the end with that checkpoint: the products hold the trained model's embeddings.
4. `tessera.evaluate` probes the product on the world's land-cover labels against the same model with
   random weights (the training's starting point) and the raw annual median, writes the report beside
   the product and prints the table.

``--no-train`` gives the plain workflow with the seeded random demo model instead. Works from a source
checkout and from an installed wheel: the demo ROI and configs are package data (`tessera.testing.data`),
and the workflow (``Snakefile``, ``rules/``, ``profiles/``) ships in the wheel as ``tessera/workflow``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from tessera.io import atomic_path, write_json_atomic
from tessera.results import Results
from tessera.testing.servers import DemoServers, demo_servers
from tessera.testing.world import DEMO_ROI, LABELS_FILE, generate_demo_data, is_generated

__all__ = [
    "DEMO_CONFIG",
    "DEMO_ROI",
    "DEMO_TRAIN_CONFIG",
    "add_cli",
    "evaluate_demo",
    "run_demo",
    "train_demo",
    "workflow_dir",
    "write_demo_config",
]

log = logging.getLogger(__name__)

_DATA = Path(str(resources.files("tessera.testing").joinpath("data")))
#: The demo run config (relative ``roi`` resolved against this file's directory).
DEMO_CONFIG = _DATA / "demo.yaml"
#: The demo's training settings.
DEMO_TRAIN_CONFIG = _DATA / "demo_train.yaml"
#: The workflow target that writes the tiles training needs (the reference-layout tile export).
TILES_TARGET = "tiles"
#: The demo's final targets: the products and each year's geotessera export.
EXPORT_TARGETS = ("all", "geotessera")


def workflow_dir() -> Path:
    """The directory holding the ``Snakefile``: the wheel's ``tessera/workflow`` or the source checkout."""
    with_package = Path(str(resources.files("tessera"))).parent
    for candidate in (Path(str(resources.files("tessera"))) / "workflow", with_package):
        if (candidate / "Snakefile").is_file():
            return candidate
    raise FileNotFoundError(f"no Snakefile under {with_package}: the tessera-pipeline installation is incomplete")


def write_demo_config(
    path: Path, stac_url: str, years: list[int], results_dir: Path, checkpoint: Path | None = None
) -> dict[str, Any]:
    """Write the demo run config: `DEMO_CONFIG` pointed at the live STAC API, with absolute paths.

    ``checkpoint`` (a trained demo model) replaces the seeded random demo model.

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
    if checkpoint is not None:
        cfg["model"] = {**cfg["model"], "checkpoint": str(checkpoint.resolve())}
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return cfg


def _snakemake(workdir: Path, config: Path, cores: int, extra: list[str]) -> int:
    """Run the workflow; ``extra`` starts with the targets (an option such as ``--quiet`` would take them)."""
    root = workflow_dir()
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(root / "Snakefile")]
    cmd += ["--profile", str(root / "profiles" / "local"), "--configfile", str(config)]
    cmd += ["--cores", str(cores), *extra]
    # Jobs call the `tessera` script of this interpreter's environment.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    log.info("demo: %s", " ".join(cmd))
    return subprocess.run(cmd, cwd=workdir, env=env, check=False).returncode


def train_demo(results: Path, years: list[int], out: Path) -> Path:
    """Train the demo model on the demo run's tiles (`DEMO_TRAIN_CONFIG`); a finished run is reused.

    A checkpoint of another run in ``out`` (the tiles or the settings changed) is moved aside and
    training starts afresh (`tessera.train.train`'s ``restart_if_changed``).

    Returns:
        The encoder checkpoint.
    """
    from tessera.train import find_tiles, load_train_config, train

    result = train(load_train_config(DEMO_TRAIN_CONFIG), find_tiles([results], years), out, restart_if_changed=True)
    log.info("demo: trained %d steps (%.0f pixels/s); encoder %s", result.steps, result.pixels_per_second, out)
    return result.encoder


def evaluate_demo(data_dir: Path, results: Path, year: int) -> dict[str, Any]:
    """Probe the year's product on the world's labels; the report goes beside the product.

    The random-weights baseline is built with the training seed: it is the trained model's starting point.

    Returns:
        The report (`tessera.evaluate.evaluate`).
    """
    from tessera.evaluate import EvalSettings, evaluate
    from tessera.train import find_tiles, load_train_config

    seed = load_train_config(DEMO_TRAIN_CONFIG).seed
    product = Path(Results(str(results)).product(year))
    labels = data_dir / LABELS_FILE
    settings = EvalSettings(
        labels=labels, year=year, classes_file=labels.with_suffix(".json"), seed=seed, random_seed=seed
    )
    out = product.with_name(f"{product.stem}_probe")
    return evaluate(settings, find_tiles([results], [year]), out, product=product, random_arch="demo")


def run_demo(workdir: Path, cores: int, years: list[int], extra: list[str], seed: int = 0, train: bool = True) -> int:
    """Generate (once) and serve the demo world, run the workflow, train, embed and evaluate (module docstring).

    Returns:
        Snakemake's exit status (0 when everything ran).

    Raises:
        ServerError: the servers could not be started (e.g. PostgreSQL is not installed).
    """
    from tessera.evaluate.cli import format_table

    workdir = workdir.resolve()
    data_dir, results = workdir / "data", workdir / "results"
    if not is_generated(data_dir, years, seed, DEMO_ROI):
        generate_demo_data(data_dir, years, seed, DEMO_ROI)
    config = workdir / "config.yaml"
    with demo_servers(data_dir, ports=_earlier_ports(workdir)) as servers:
        _save_ports(workdir, servers)
        write_demo_config(config, servers.stac_url, years, results)
        if not train or {"-n", "--dry-run", "--dryrun"} & set(extra):
            rc = _snakemake(workdir, config, cores, [*EXPORT_TARGETS, *extra])
            if rc == 0 and not {"-n", "--dry-run", "--dryrun"} & set(extra):
                say_exports(results, years)
                say_dry_run(workdir, config)
            return rc
        rc = _snakemake(workdir, config, cores, [TILES_TARGET, *extra])
        if rc:
            return rc
        encoder = train_demo(results, years, workdir / "train")
        write_demo_config(config, servers.stac_url, years, results, checkpoint=encoder)
        rc = _snakemake(workdir, config, cores, [*EXPORT_TARGETS, *extra])
        if rc:
            return rc
    say_exports(results, years)
    say_dry_run(workdir, config)
    for year in years:
        report = evaluate_demo(data_dir, results, year)
        print(
            f"\nProbe scores {year} (demo world labels; timing = the winter and spring crops):\n{format_table(report)}"
        )
    return 0


_PORTS_FILE = "servers.json"
"""The demo servers' ports, in the work directory: a rerun serves on the same ones where they are free."""


def _earlier_ports(workdir: Path) -> tuple[int | None, int | None]:
    """(STAC API, COG host) ports of the last demo in ``workdir``; None where there was none."""
    try:
        doc = json.loads((workdir / _PORTS_FILE).read_text())
        return int(doc["stac_port"]), int(doc["cog_port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None, None


def _save_ports(workdir: Path, servers: DemoServers) -> None:
    ports = {"stac_port": servers.pgstac.api_port, "cog_port": servers.range_server.port}
    if _earlier_ports(workdir) != (ports["stac_port"], ports["cog_port"]):
        if (workdir / _PORTS_FILE).exists():
            log.warning("demo: the servers' earlier ports are taken: the searches run again (new URLs)")
        write_json_atomic(workdir / _PORTS_FILE, ports)


def say_dry_run(workdir: Path, config: Path) -> None:
    """Tell the user how to see what a change to the demo's config would rerun."""
    snakefile = workflow_dir() / "Snakefile"
    command = f"cd {workdir} && snakemake -n -s {snakefile} --configfile {config.name}"
    print(f"demo: to see what a change to {config} would rerun: {command}")


def say_exports(results: Path, years: list[int]) -> None:
    """Tell the user where each demo year's geotessera export is, and how to open it."""
    for year in years:
        out = Path(Results(str(results)).geotessera(year))
        print(f"demo: geotessera export of {year} in {out} (GeoTessera(embeddings_dir=..., registry_dir=...) opens it)")


def _cmd_demo(args: argparse.Namespace) -> int:
    """Run the offline demo end to end (demo data, local servers, Snakemake)."""
    extra = [a for a in args.snakemake_args if a != "--"]
    return run_demo(Path(args.workdir), args.cores, list(args.years), extra, args.seed, train=not args.no_train)


def add_cli(subparsers: Any) -> None:
    """Register ``tessera demo``."""
    d = subparsers.add_parser("demo", help=(_cmd_demo.__doc__ or "").strip())
    d.add_argument("--workdir", default="demo-run", help="directory of the demo data, config and results")
    d.add_argument("--cores", type=int, default=2, help="cores Snakemake may use")
    d.add_argument("--years", type=int, nargs="+", default=[2022], help="years to embed (default 2022)")
    d.add_argument("--seed", type=int, default=0, help="seed of the demo world")
    d.add_argument("--no-train", action="store_true", help="skip training: embed with the seeded random demo model")
    d.add_argument("snakemake_args", nargs=argparse.REMAINDER, help="after --: extra Snakemake arguments")
    d.set_defaults(func=_cmd_demo)
