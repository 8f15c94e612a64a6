"""``tessera export <format>``: write products in another tool's layout.

Registered in `tessera.cli` through ``add_cli``; the library raises `tessera.errors.TesseraError`
subclasses and `tessera.cli.main` reports them.

Two ways to call it, as for the other subcommands: the workflow's rule passes the stored plan
(``--plan``), one ``--year``, the product (``--cog``) and the output directory, nothing from the
config (so Snakemake's provenance is that of its inputs); a person may pass the run's ``--config``
instead, and the product and output paths then default to the results layout (`tessera.results`).
With ``--config``, ``--year`` may be repeated to write several years into one geotessera store: the
products are then those of the results layout, and ``--out`` is required (the results layout has
one geotessera directory per year).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_cli", "cmd_export_geotessera"]


def cmd_export_geotessera(args: argparse.Namespace) -> None:
    """Write years' 0.1-degree tiles as one geotessera store (embeddings, landmasks, Parquet registries)."""
    from tessera.cli import _year
    from tessera.errors import ConfigError
    from tessera.export.cells import RoiMask
    from tessera.export.geotessera import export_geotessera_years
    from tessera.results import Results

    years = sorted({_year(y) for y in args.year})
    roi: RoiMask
    if args.plan:
        from tessera.plan import StoredPlan

        if len(years) > 1:
            raise ConfigError(
                f"with --plan, pass one --year (the workflow exports each year on its own), not {len(years)}; "
                "pass --config instead of --plan to write several years into one store"
            )
        if not (args.cog and args.out):
            raise ConfigError("with --plan, pass --cog and --out too (or pass --config instead of --plan)")
        roi, cogs, out = StoredPlan(args.plan), {years[0]: Path(args.cog)}, Path(args.out)
    else:
        from tessera.config import read_config
        from tessera.grid import load_roi

        if len(years) > 1 and args.cog:
            raise ConfigError(
                "--cog names one year's product, and this export is of several years; drop --cog: each year's "
                "product is then the config's <results_dir>/<year>/products/tessera_<year>.tif"
            )
        if len(years) > 1 and not args.out:
            raise ConfigError(
                "a store of several years has no directory in the results layout, which has one per year "
                "(<results_dir>/<year>/geotessera); pass --out DIR"
            )
        cfg = read_config(args.config)
        for year in years:
            if year not in cfg.years:
                raise ConfigError(f"year {year} is not one of the config's years {list(cfg.years)}; pass one of them")
        results = Results(cfg.results_dir)
        roi = load_roi(cfg.roi, cfg.resolution, cfg.max_roi_area_km2)
        cogs = {year: Path(args.cog or results.product(year)) for year in years}
        out = Path(args.out or results.geotessera(years[0]))
    summary = export_geotessera_years(roi, cogs, out)
    print(
        f"{len(summary.tiles)} tile(s) of {', '.join(map(str, summary.years))}, "
        f"{summary.bytes / 1e6:.1f} MB -> {summary.out}"
    )


def add_cli(sub: Any) -> None:
    """Register ``tessera export geotessera`` with the top-level subparsers ``sub``."""
    export = sub.add_parser("export", help="write products in another tool's layout")
    formats = export.add_subparsers(dest="format", required=True)
    p = formats.add_parser("geotessera", help=(cmd_export_geotessera.__doc__ or "").splitlines()[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--plan", help="the stored plan directory (<results>/plan/<key>; the workflow passes it)")
    where.add_argument("--config", help="the run config (YAML), for use by hand")
    p.add_argument(
        "--year",
        required=True,
        type=int,
        action="append",
        help="year whose products are exported; with --config, repeat it to write several years into one store",
    )
    p.add_argument(
        "--cog", help="product COG of the one --year (with --config: <results_dir>/<year>/products/tessera_<year>.tif)"
    )
    p.add_argument(
        "--out",
        help="export directory (with --config and one --year: <results_dir>/<year>/geotessera; required for several)",
    )
    p.set_defaults(func=cmd_export_geotessera)
