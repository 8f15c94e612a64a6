"""The ``tessera`` console script: one subcommand per workflow step.

Each Snakemake rule calls exactly one of these. Library code raises `TesseraError` subclasses;
`main` reports them once, as one line on stderr, and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tessera import __version__
from tessera.errors import ConfigError, TesseraError
from tessera.layout import ORBITS, PRODUCTS

__all__ = ["main"]

log = logging.getLogger("tessera")

Handler = Callable[[argparse.Namespace], int | None]


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
        stream=sys.stderr,
    )
    for noisy in ("rasterio", "urllib3", "botocore", "asyncio", "numexpr", "distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _cfg(args: argparse.Namespace) -> dict[str, Any]:
    from tessera.config import load_config

    return load_config(args.config)


def _roi(cfg: dict[str, Any]) -> Any:
    from tessera.grid import load_roi

    return load_roi(cfg["roi"], cfg["resolution"], cfg["max_roi_area_km2"])


def _chunk(cfg: dict[str, Any], roi: Any, chunk_id: str) -> Any:
    from tessera.grid import plan_chunks

    for chunk in plan_chunks(roi, cfg["chunk_size_m"]):
        if chunk.id == chunk_id:
            return chunk
    raise ConfigError(
        f"chunk {chunk_id!r} is not a chunk of ROI {cfg['roi']} at chunk_size_m={cfg['chunk_size_m']}; "
        "run `tessera plan` to list the chunks"
    )


def _year(cfg: dict[str, Any], year: int) -> int:
    if year not in cfg["years"]:
        from tessera.config import validate_config

        validate_config({**cfg, "years": [year]})
    return year


# --- subcommands -------------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> None:
    """Validate a config file (and its ROI) and print the filled-in config."""
    cfg = _cfg(args)
    _roi(cfg)
    print(json.dumps(cfg, indent=2))


def cmd_config_docs(args: argparse.Namespace) -> None:
    """Print the Markdown reference of every config key (config/README.md)."""
    from tessera.config import schema_markdown

    print(schema_markdown(), end="")


def cmd_plan(args: argparse.Namespace) -> None:
    """Print the output grid, the chunks and their tiles as JSON."""
    from tessera.grid import plan_chunks, plan_tiles

    cfg = _cfg(args)
    roi = _roi(cfg)
    chunks = plan_chunks(roi, cfg["chunk_size_m"])
    out = {
        "grid": roi.grid.to_dict(),
        "chunks": [
            {"id": c.id, "grid": c.grid.to_dict(), "tiles": [t.name for t in plan_tiles(roi, c, cfg["tile_size"])]}
            for c in chunks
        ],
    }
    print(json.dumps(out, indent=2))


def cmd_search(args: argparse.Namespace) -> None:
    """Search one product for one chunk and year; write the unsigned ItemCollection."""
    from tessera.search import run_search

    cfg = _cfg(args)
    roi = _roi(cfg)
    run_search(cfg, _chunk(cfg, roi, args.chunk), _year(cfg, args.year), args.product, Path(args.out))


def cmd_read_s2(args: argparse.Namespace) -> None:
    """Read the Sentinel-2 scenes of an ItemCollection into the chunk's stacked arrays."""
    from tessera.read import read_s2

    cfg = _cfg(args)
    roi = _roi(cfg)
    read_s2(cfg, roi, _chunk(cfg, roi, args.chunk), _year(cfg, args.year), Path(args.items), Path(args.out_dir))


def cmd_read_s1(args: argparse.Namespace) -> None:
    """Read the Sentinel-1 scenes of one orbit direction into the chunk's stacked arrays."""
    from tessera.read import read_s1

    cfg = _cfg(args)
    roi = _roi(cfg)
    chunk = _chunk(cfg, roi, args.chunk)
    read_s1(cfg, roi, chunk, _year(cfg, args.year), args.orbit, Path(args.items), Path(args.out_dir))


def cmd_tile(args: argparse.Namespace) -> None:
    """Cut one reference-layout tile directory out of a chunk's stacked arrays."""
    from tessera.grid import plan_tiles
    from tessera.tiles import write_tile

    cfg = _cfg(args)
    roi = _roi(cfg)
    chunk = _chunk(cfg, roi, args.chunk)
    tiles = {t.name: t for t in plan_tiles(roi, chunk, cfg["tile_size"])}
    if args.tile not in tiles:
        raise ConfigError(f"tile {args.tile!r} is not a tile of chunk {chunk.id}; run `tessera plan` to list tiles")
    write_tile(
        roi,
        chunk,
        tiles[args.tile],
        cfg["tile_size"],
        Path(args.s2_dir),
        Path(args.s1_ascending_dir),
        Path(args.s1_descending_dir),
        Path(args.out_dir),
    )


def cmd_infer(args: argparse.Namespace) -> None:
    """Embed one tile directory."""
    from tessera.infer import infer_tile

    cfg = _cfg(args)
    infer_tile(cfg, _year(cfg, args.year), Path(args.tile_dir), Path(args.out))


def cmd_stitch(args: argparse.Namespace) -> None:
    """Stitch a year's tile embeddings into the ROI product (COG + STAC Item + quicklook)."""
    from tessera.products import stitch

    cfg = _cfg(args)
    roi = _roi(cfg)
    stitch(cfg, roi, _year(cfg, args.year), Path(args.embeddings_dir), Path(args.search_dir), Path(args.out))


def cmd_qa(args: argparse.Namespace) -> None:
    """Write a year's QA report (Markdown + valid-observation map) and warn about skipped scenes."""
    from tessera.qa import write_qa_report

    cfg = _cfg(args)
    roi = _roi(cfg)
    write_qa_report(cfg, roi, _year(cfg, args.year), Path(args.stack_dir), Path(args.embeddings_dir), Path(args.out))


def _add(
    sub: Any, name: str, func: Handler, arguments: Sequence[tuple[str, dict[str, Any]]], *, config: bool = True
) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=(func.__doc__ or "").strip().splitlines()[0])
    if config:
        p.add_argument("--config", required=True, help="validated run config (YAML or JSON)")
    for flag, kw in arguments:
        p.add_argument(flag, **kw)
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="tessera", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"tessera-pipeline {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    req = {"required": True}
    chunk_year: list[tuple[str, dict[str, Any]]] = [
        ("--chunk", {**req, "help": "chunk id (see `tessera plan`)"}),
        ("--year", {**req, "type": int, "help": "calendar year"}),
    ]
    _add(sub, "validate-config", cmd_validate, [])
    _add(sub, "plan", cmd_plan, [])
    _add(sub, "config-docs", cmd_config_docs, [], config=False)
    _add(
        sub,
        "search",
        cmd_search,
        [
            *chunk_year,
            ("--product", {**req, "choices": list(PRODUCTS)}),
            ("--out", {**req, "help": "ItemCollection JSON to write"}),
        ],
    )
    _add(sub, "read-s2", cmd_read_s2, [*chunk_year, ("--items", req), ("--out-dir", req)])
    _add(
        sub,
        "read-s1",
        cmd_read_s1,
        [*chunk_year, ("--orbit", {**req, "choices": list(ORBITS)}), ("--items", req), ("--out-dir", req)],
    )
    _add(
        sub,
        "tile",
        cmd_tile,
        [
            ("--chunk", req),
            ("--tile", req),
            ("--s2-dir", req),
            ("--s1-ascending-dir", req),
            ("--s1-descending-dir", req),
            ("--out-dir", req),
        ],
    )
    _add(
        sub,
        "infer",
        cmd_infer,
        [("--year", {**req, "type": int}), ("--tile-dir", req), ("--out", {**req, "help": "embedding .npy to write"})],
    )
    _add(
        sub,
        "stitch",
        cmd_stitch,
        [
            ("--year", {**req, "type": int}),
            ("--embeddings-dir", req),
            ("--search-dir", req),
            ("--out", {**req, "help": "product GeoTIFF to write"}),
        ],
    )
    _add(
        sub,
        "qa",
        cmd_qa,
        [
            ("--year", {**req, "type": int}),
            ("--stack-dir", req),
            ("--embeddings-dir", req),
            ("--out", {**req, "help": "Markdown report to write"}),
        ],
    )
    for module in _EXTRA_COMMANDS:
        __import__(module, fromlist=["add_cli"]).add_cli(sub)
    return parser


#: Modules that register their own subcommands with ``add_cli(subparsers)`` (demo, servers, QA).
_EXTRA_COMMANDS: list[str] = [
    "tessera.testing.world",
    "tessera.testing.servers",
    "tessera.testing.demo",
    "tessera.export.cli",
]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tessera`` console script."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        rc = args.func(args)
    except TesseraError as exc:
        message = " ".join(str(exc).split())  # one line, whatever the library wrote
        print(f"tessera {args.command}: error: {type(exc).__name__}: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tessera {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
