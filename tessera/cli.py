"""The ``tessera`` console script: one subcommand per workflow step, plus a few for people.

Each Snakemake rule calls exactly one step subcommand, giving it its stage's settings as JSON
(``--settings``, the rule's params: `tessera.stages`), the stored plan directory (``--plan``) and
the paths it reads and writes. ``validate-config``, ``plan`` and ``embed-tile`` take a config file
instead, for use by hand. Library code raises `TesseraError` subclasses; `main` reports them
once, as one line on stderr, and exits with status 2.
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

__all__ = ["build_parser", "main"]

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


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--settings`` JSON (a partial config document), validated against the config schema."""
    from tessera.config import validate_settings

    try:
        doc = json.loads(args.settings)
    except ValueError as exc:
        raise ConfigError(f"--settings is not JSON ({exc}); the workflow passes each stage's settings") from exc
    return validate_settings(doc)


def _plan(args: argparse.Namespace, tile_size: int | None = None) -> Any:
    from tessera.plan import StoredPlan

    return StoredPlan(args.plan, tile_size)


def _source(args: argparse.Namespace, kind: str) -> Any:
    from tessera.config import SourceConfig

    doc = _settings(args)
    if kind not in doc:
        raise ConfigError(f"--settings has no {kind!r} section; the workflow passes the stage's source settings")
    return SourceConfig.from_dict(doc[kind])


def _year(year: int) -> int:
    from tessera.config import FIRST_YEAR, last_year

    if not FIRST_YEAR <= year <= last_year():
        raise ConfigError(f"year {year} is outside the mission years {FIRST_YEAR}..{last_year()}; pass another --year")
    return year


# --- for people --------------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> None:
    """Validate a config file, its ROI and its checkpoint, and print the filled-in config."""
    from tessera.config import load_config
    from tessera.parsetime import setup

    cfg = load_config(args.config)
    setup(cfg)
    print(json.dumps(cfg, indent=2))


def cmd_config_docs(args: argparse.Namespace) -> None:
    """Print the Markdown reference of every config key (config/README.md)."""
    from tessera.config import schema_markdown

    print(schema_markdown(), end="")


def cmd_plan(args: argparse.Namespace) -> None:
    """Print the output grid, the chunks, their tiles and inference jobs as JSON."""
    from tessera.config import load_config
    from tessera.parsetime import setup

    s = setup(load_config(args.config))
    out = {
        "key": s.key,
        "grid": s.plan.grid.to_dict(),
        "chunks": [
            {
                "id": c.id,
                "grid": c.grid.to_dict(),
                "tiles": [t.name for t in s.plan.tiles[c.id]],
                "inference_jobs": s.parts(c.id),
            }
            for c in s.plan.chunks
        ],
    }
    print(json.dumps(out, indent=2))


def cmd_embed_tile(args: argparse.Namespace) -> None:
    """Embed one reference-layout tile directory (ours, or the reference retiler's) with a config's model."""
    from tessera.config import read_config
    from tessera.inferjob import embed_tile_dir

    cfg = read_config(args.config)
    embed_tile_dir(cfg.model, cfg.s2.source, _year(args.year), Path(args.tile_dir), Path(args.out))


# --- workflow steps ----------------------------------------------------------------------------


def cmd_plan_chunks(args: argparse.Namespace) -> None:
    """Plan the ROI and write the plan's chunks.json and mask.tif (rule plan)."""
    from tessera.grid import load_roi
    from tessera.plan import plan_key, write_plan

    doc = _settings(args)
    roi = load_roi(doc["roi"], doc["resolution"], doc["max_roi_area_km2"])
    key = plan_key(doc["roi"], doc["resolution"], doc["chunk_size_m"])
    out = Path(args.out_dir)
    if out.name != key:
        raise ConfigError(f"the ROI's plan key is {key}, not {out.name}: the ROI file changed while the run started")
    write_plan(roi, key, doc["chunk_size_m"], out)


def cmd_plan_tiles(args: argparse.Namespace) -> None:
    """Write every chunk's tiles at one tile size from the stored plan (rule plan_tiles)."""
    from tessera.plan import plan_tiles_file

    plan_tiles_file(_plan(args), args.tile_size, Path(args.out))


def cmd_search(args: argparse.Namespace) -> None:
    """Search one product for one chunk and year; write the unsigned ItemCollection."""
    from tessera.search import run_search

    kind = "s2" if args.product == "s2" else "s1"
    chunk = _plan(args).chunk(args.chunk)
    period = _settings(args).get("period")
    run_search(_source(args, kind), chunk, _year(args.year), args.product, Path(args.out), period=period)


def cmd_read_s2(args: argparse.Namespace) -> None:
    """Read the Sentinel-2 scenes of an ItemCollection into the chunk's stacked arrays."""
    from tessera.read import read_s2

    plan = _plan(args)
    chunk = plan.chunk(args.chunk)
    source = _source(args, "s2")
    period = _settings(args).get("period")
    read_s2(source, plan.mask(chunk.grid), chunk, _year(args.year), Path(args.items), Path(args.out_dir), period=period)


def cmd_read_s1(args: argparse.Namespace) -> None:
    """Read the Sentinel-1 scenes of one orbit direction into the chunk's stacked arrays."""
    from tessera.read import read_s1

    plan = _plan(args)
    chunk = plan.chunk(args.chunk)
    source = _source(args, "s1")
    year = _year(args.year)
    period = _settings(args).get("period")
    read_s1(source, plan.mask(chunk.grid), chunk, year, args.orbit, Path(args.items), Path(args.out_dir), period=period)


def cmd_tiles(args: argparse.Namespace) -> None:
    """Write a chunk's reference-layout tile directories from its stacks (an export)."""
    from tessera.tiles import write_chunk_tiles

    write_chunk_tiles(_plan(args, args.tile_size), args.chunk, Path(args.stack_dir), Path(args.out_dir))


def cmd_infer(args: argparse.Namespace) -> None:
    """Embed the tiles of one inference job (a chunk, or part of one) from the chunk's stacks."""
    from tessera.config import ModelConfig
    from tessera.inferjob import InferJob, run_infer_job

    doc = _settings(args)
    model = ModelConfig.from_dict({**doc["model"], "device": args.device, "batch_size": args.batch_size or None})
    job = InferJob(
        model=model,
        s2_source=doc["s2"]["source"],
        year=_year(args.year),
        plan=_plan(args, int(doc["tile_size"])),
        chunk=args.chunk,
        part=args.part,
        stack_dir=Path(args.stack_dir),
        out=Path(args.out),
        settings=args.settings,
    )
    run_infer_job(job)


def cmd_stitch(args: argparse.Namespace) -> None:
    """Stitch a year's tile embeddings into the ROI product (COG + STAC Item + quicklook)."""
    from tessera.products import stitch

    plan = _plan(args, args.tile_size)
    parts = [Path(p) for p in args.parts]
    stitch(plan, _year(args.year), parts, Path(args.search_dir), Path(args.stack_dir), Path(args.out))


def cmd_qa(args: argparse.Namespace) -> None:
    """Write a year's QA report (Markdown + valid-observation map) and warn about skipped scenes."""
    from tessera.qa import write_qa_report

    parts = [Path(p) for p in args.parts]
    write_qa_report(_plan(args), args.roi, _year(args.year), Path(args.stack_dir), parts, Path(args.out))


def _add(sub: Any, name: str, func: Handler, arguments: Sequence[tuple[str, dict[str, Any]]]) -> None:
    p: argparse.ArgumentParser = sub.add_parser(name, help=(func.__doc__ or "").strip().splitlines()[0])
    for flag, kw in arguments:
        p.add_argument(flag, **kw)
    p.set_defaults(func=func)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="tessera", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"tessera-pipeline {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    req: dict[str, Any] = {"required": True}
    config = ("--config", {**req, "help": "run config (YAML)"})
    settings = ("--settings", {**req, "help": "the stage's settings as JSON (the workflow passes them)"})
    plan = ("--plan", {**req, "help": "the stored plan directory (<results>/plan/<key>)"})
    chunk = ("--chunk", {**req, "help": "chunk id (see `tessera plan`)"})
    year = ("--year", {**req, "type": int, "help": "calendar year, or the year the period starts in"})
    tile_size = ("--tile-size", {**req, "type": int, "help": "tile side in pixels"})
    parts = ("--parts", {**req, "nargs": "+", "help": "the inference jobs' output directories"})
    _add(sub, "validate-config", cmd_validate, [config])
    _add(sub, "plan", cmd_plan, [config])
    _add(sub, "config-docs", cmd_config_docs, [])
    _add(
        sub,
        "embed-tile",
        cmd_embed_tile,
        [config, year, ("--tile-dir", req), ("--out", {**req, "help": "embedding .npy to write"})],
    )
    _add(sub, "plan-chunks", cmd_plan_chunks, [settings, ("--out-dir", req)])
    _add(sub, "plan-tiles", cmd_plan_tiles, [plan, tile_size, ("--out", req)])
    product = ("--product", {**req, "choices": list(PRODUCTS)})
    _add(sub, "search", cmd_search, [settings, plan, chunk, year, product, ("--out", req)])
    _add(sub, "read-s2", cmd_read_s2, [settings, plan, chunk, year, ("--items", req), ("--out-dir", req)])
    orbit = ("--orbit", {**req, "choices": list(ORBITS)})
    _add(sub, "read-s1", cmd_read_s1, [settings, plan, chunk, year, orbit, ("--items", req), ("--out-dir", req)])
    _add(sub, "tiles", cmd_tiles, [plan, tile_size, chunk, ("--stack-dir", req), ("--out-dir", req)])
    machine: list[tuple[str, dict[str, Any]]] = [
        ("--device", {**req, "choices": ["auto", "cpu", "cuda"], "help": "model.device"}),
        ("--batch-size", {**req, "type": int, "help": "model.batch_size (0: chosen from free GPU memory)"}),
    ]
    _add(
        sub,
        "infer",
        cmd_infer,
        [settings, plan, chunk, ("--part", req), year, ("--stack-dir", req), ("--out", req), *machine],
    )
    stitch_args = [plan, tile_size, year, parts, ("--search-dir", req), ("--stack-dir", req), ("--out", req)]
    _add(sub, "stitch", cmd_stitch, stitch_args)
    _add(sub, "qa", cmd_qa, [plan, ("--roi", req), year, ("--stack-dir", req), parts, ("--out", req)])
    for module in _EXTRA_COMMANDS:
        __import__(module, fromlist=["add_cli"]).add_cli(sub)
    return parser


#: Modules that register their own subcommands with ``add_cli(subparsers)`` (demo, servers, exports,
#: training, evaluation).
_EXTRA_COMMANDS: list[str] = [
    "tessera.testing.world",
    "tessera.testing.servers",
    "tessera.testing.demo",
    "tessera.export.cli",
    "tessera.train.cli",
    "tessera.evaluate.cli",
]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tessera`` console script."""
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
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
