"""``tessera export <format>``: write a year's products in another tool's layout.

Registered in `tessera.cli` through ``add_cli``; the library raises `tessera.errors.TesseraError`
subclasses and `tessera.cli.main` reports them.

Two ways to call it, as for the other subcommands: the workflow's rule passes the stored plan
(``--plan``) and the product (``--cog``) and the output directory, nothing from the config (so
Snakemake's provenance is that of its inputs); a person may pass the run's ``--config`` instead,
and the product and output paths then default to the results layout (`tessera.results`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_cli", "cmd_export_geotessera"]


def cmd_export_geotessera(args: argparse.Namespace) -> None:
    """Write a year's 0.1-degree tiles in geotessera's layout (embeddings, landmasks, Parquet registries)."""
    from tessera.cli import _year
    from tessera.errors import ConfigError
    from tessera.export.cells import RoiMask
    from tessera.export.geotessera import export_geotessera
    from tessera.results import Results

    year = _year(args.year)
    roi: RoiMask
    if args.plan:
        from tessera.plan import StoredPlan

        if not (args.cog and args.out):
            raise ConfigError("with --plan, pass --cog and --out too (or pass --config instead of --plan)")
        roi, cog, out = StoredPlan(args.plan), Path(args.cog), Path(args.out)
    else:
        from tessera.config import read_config
        from tessera.grid import load_roi

        cfg = read_config(args.config)
        if year not in cfg.years:
            raise ConfigError(f"year {year} is not one of the config's years {list(cfg.years)}; pass one of them")
        results = Results(cfg.results_dir)
        roi = load_roi(cfg.roi, cfg.resolution, cfg.max_roi_area_km2)
        cog = Path(args.cog or results.product(year))
        out = Path(args.out or results.geotessera(year))
    summary = export_geotessera(roi, cog, year, out)
    print(f"{len(summary.tiles)} tile(s), {summary.bytes / 1e6:.1f} MB -> {summary.out}")


def add_cli(sub: Any) -> None:
    """Register ``tessera export geotessera`` with the top-level subparsers ``sub``."""
    export = sub.add_parser("export", help="write a year's products in another tool's layout")
    formats = export.add_subparsers(dest="format", required=True)
    p = formats.add_parser("geotessera", help=(cmd_export_geotessera.__doc__ or "").splitlines()[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--plan", help="the stored plan directory (<results>/plan/<key>; the workflow passes it)")
    where.add_argument("--config", help="the run config (YAML), for use by hand")
    p.add_argument("--year", required=True, type=int, help="year whose products are exported")
    p.add_argument("--cog", help="product COG (with --config: <results_dir>/<year>/products/tessera_<year>.tif)")
    p.add_argument("--out", help="export directory (with --config: <results_dir>/<year>/geotessera)")
    p.set_defaults(func=cmd_export_geotessera)
