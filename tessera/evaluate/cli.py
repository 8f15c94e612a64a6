"""``tessera evaluate``: probe scores of a checkpoint or a product, with baselines, as a report."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from tessera.errors import LabelError

__all__ = ["add_cli", "format_table"]

log = logging.getLogger(__name__)


def format_table(report: dict[str, Any]) -> str:
    """The report's main table as plain text (feature set x probe: accuracy, macro F1, group macro F1)."""
    groups = list(report["groups"])
    head = f"{'features':<16} {'probe':<7} {'accuracy':>8} {'macro F1':>8}" + "".join(
        f" {g + ' F1':>12}" for g in groups
    )
    lines = [head, "-" * len(head)]
    for name, fset in report["features"].items():
        for probe in report["probes"]:
            m = fset[probe]
            extra = "".join(f" {m['group_macro_f1'].get(g, float('nan')):>12.3f}" for g in groups)
            lines.append(f"{name:<16} {probe:<7} {m['accuracy']:>8.3f} {m['macro_f1']:>8.3f}{extra}")
    return "\n".join(lines)


def _cmd_evaluate(args: argparse.Namespace) -> None:
    """Probe a checkpoint or product on labelled pixels against random weights and the raw annual median."""
    from tessera.evaluate import EvalSettings, evaluate
    from tessera.train import find_tiles

    product = Path(args.product) if args.product else None
    if args.out is None and product is None:
        raise LabelError("with --checkpoint, pass --out <prefix> for the report files (e.g. results/2022/probe)")
    out = Path(args.out) if args.out else product.with_name(product.stem + "_probe")  # type: ignore[union-attr]
    settings = EvalSettings(
        labels=Path(args.labels),
        year=args.year,
        classes_file=Path(args.classes) if args.classes else None,
        label_column=args.label_column,
        target_column=args.target_column,
        target_band=args.target_band,
        max_per_class=args.max_per_class,
        block_px=args.block_px,
        gap_px=args.gap_px,
        test_fraction=args.test_fraction,
        knn_k=args.k,
        seed=args.seed,
        random_seed=args.random_seed,
        device=args.device,
        source=args.source,
    )
    report = evaluate(
        settings,
        find_tiles([Path(d) for d in args.data], [args.year]),
        out,
        checkpoint=Path(args.checkpoint) if args.checkpoint else None,
        product=product,
        random_arch=args.random_arch,
    )
    print(format_table(report))
    log.info("probe report written to %s.md / .json / _confusion.png / _predictions.csv / _split.csv", out)


def add_cli(subparsers: Any) -> None:
    """Register ``tessera evaluate``."""
    p = subparsers.add_parser("evaluate", help=(_cmd_evaluate.__doc__ or "").strip().splitlines()[0])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", help="checkpoint to embed the labelled pixels with")
    what.add_argument("--product", help="product COG (tessera_<year>.tif) to read embeddings from")
    p.add_argument(
        "--labels", required=True, help="class raster (its nodata, or 0 if none is set, = unlabelled) or vector file"
    )
    p.add_argument("--data", nargs="+", required=True, help="results directories holding <year>/.../<tile>/ dirs")
    p.add_argument("--year", type=int, required=True, help="year of the tiles and embeddings")
    p.add_argument("--out", default=None, help="report prefix (default with --product: <product>_probe)")
    p.add_argument("--classes", default=None, help='JSON {"classes": {code: name}, "groups": {name: [codes]}}')
    p.add_argument("--label-column", default="class", help="vector labels: class column (default class)")
    p.add_argument(
        "--target-column", default=None, help="vector labels only: numeric column to regress (empty = no target)"
    )
    p.add_argument("--target-band", type=int, default=None, help="raster labels only: band to regress")
    p.add_argument("--max-per-class", type=int, default=2000, help="labelled pixels drawn per class (default 2000)")
    p.add_argument("--block-px", type=int, default=16, help="spatial split block side in pixels (default 16)")
    p.add_argument("--gap-px", type=int, default=1, help="gap between train and test pixels (default 1)")
    p.add_argument("--test-fraction", type=float, default=0.3, help="share of blocks in the test set (default 0.3)")
    p.add_argument("--k", type=int, default=5, help="neighbours of the k-NN probe (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of sampling, split and probes (default 0)")
    p.add_argument(
        "--random-seed",
        type=int,
        default=None,
        help="seed of the random-weights baseline (default: the training seed a tessera train checkpoint records, "
        "so the baseline is the model its training started from; else --seed)",
    )
    p.add_argument(
        "--random-arch",
        default=None,
        help="architecture of the random-weights baseline (default: the checkpoint's, or the one of the product's "
        "model family)",
    )
    p.add_argument(
        "--source",
        default=None,
        choices=["planetary-computer", "earth-search", "stac"],
        help="S2 source of the tiles, which picks v1.1's normalisation table (default: the product's, or "
        "planetary-computer)",
    )
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the models run")
    p.set_defaults(func=_cmd_evaluate)
