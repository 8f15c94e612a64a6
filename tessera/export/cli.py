"""``tessera export <format>``: write a year's products in another tool's layout.

Registered in `tessera.cli` through ``add_cli``; the library raises `tessera.errors.TesseraError`
subclasses and `tessera.cli.main` reports them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_cli", "cmd_export_geotessera"]


def cmd_export_geotessera(args: argparse.Namespace) -> None:
    """Write a year's 0.1-degree tiles in geotessera's layout (embeddings, landmasks, Parquet registries)."""
    from tessera.cli import _cfg, _roi, _year
    from tessera.export.geotessera import export_geotessera

    cfg = _cfg(args)
    year = _year(cfg, args.year)
    results = Path(cfg["results_dir"]) / str(year)
    cog = Path(args.cog) if args.cog else results / "products" / f"tessera_{year}.tif"
    out = Path(args.out) if args.out else results / "geotessera"
    summary = export_geotessera(_roi(cfg), cog, year, out)
    print(f"{len(summary.tiles)} tile(s), {summary.bytes / 1e6:.1f} MB -> {summary.out}")


def add_cli(sub: Any) -> None:
    """Register ``tessera export geotessera`` with the top-level subparsers ``sub``."""
    export = sub.add_parser("export", help="write a year's products in another tool's layout")
    formats = export.add_subparsers(dest="format", required=True)
    p = formats.add_parser("geotessera", help=(cmd_export_geotessera.__doc__ or "").splitlines()[0])
    p.add_argument("--config", required=True, help="validated run config (YAML or JSON)")
    p.add_argument("--year", required=True, type=int, help="year whose products are exported")
    p.add_argument("--cog", help="product COG (default: <results_dir>/<year>/products/tessera_<year>.tif)")
    p.add_argument("--out", help="export directory (default: <results_dir>/<year>/geotessera)")
    p.set_defaults(func=cmd_export_geotessera)
