"""``tessera train``: Barlow Twins training of any architecture on the workflow's tiles."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from tessera.errors import TrainingStoppedError

__all__ = ["add_cli"]

log = logging.getLogger(__name__)


def _cmd_train(args: argparse.Namespace) -> None:
    """Train an encoder with Barlow Twins on reference-layout tiles (resumable; see config/train.yaml)."""
    from tessera.train import find_tiles, load_train_config, train

    cfg = load_train_config(args.train_config).with_overrides(
        arch=args.arch,
        steps=args.steps,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        threads=args.threads,
        max_seconds=args.max_seconds,
    )
    sources = find_tiles([Path(d) for d in args.data], args.years)
    resume: bool | Path = False if args.no_resume else (Path(args.resume) if args.resume else True)
    result = train(cfg, sources, Path(args.out_dir), resume=resume, restart_if_changed=args.restart_if_changed)
    if args.require_complete and not result.complete:
        raise TrainingStoppedError(
            f"training stopped after max_seconds at step {result.steps} of {cfg.steps}; its checkpoint is saved in "
            f"{args.out_dir}: run again to continue from there (the encoder it wrote is not the finished model), "
            "or raise or unset max_seconds"
        )
    state = "complete" if result.complete else "stopped early (rerun the same command to resume)"
    log.info(
        "%s: %d steps, final loss %.4f, %.0f pixels/s; encoder %s",
        state, result.steps, result.final_loss, result.pixels_per_second, result.encoder,
    )  # fmt: skip


def add_cli(subparsers: Any) -> None:
    """Register ``tessera train``."""
    p = subparsers.add_parser("train", help=(_cmd_train.__doc__ or "").strip().splitlines()[0])
    p.add_argument(
        "--data", nargs="+", required=True, help="results directories holding <year>/.../<tile>/ dirs (one per region)"
    )
    p.add_argument("--years", type=int, nargs="+", required=True, help="years whose tiles to train on")
    p.add_argument("--out-dir", required=True, help="where encoder.pt, checkpoint.pt and train.json go")
    p.add_argument("--train-config", default=None, help="training settings YAML (default: built-in defaults)")
    p.add_argument("--arch", default=None, help="architecture: demo, v1.0, v1.0-qat, v1.1, v2-nano ... v2-large")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (overrides the file)")
    p.add_argument("--seed", type=int, default=None, help="seed (overrides the file)")
    p.add_argument("--batch-size", type=int, default=None, help="pixels per step (overrides the file)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="device (overrides the file)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (overrides the file)")
    p.add_argument("--max-seconds", type=float, default=None, help="stop early after this wall time, resumable")
    p.add_argument(
        "--require-complete",
        action="store_true",
        help="fail (TrainingStoppedError) when max_seconds stops training before its last step, so that a "
        "workflow does not take the encoder of a stopped run for a finished model (the train rule passes it)",
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--resume", default=None, help="full checkpoint to resume from (default: <out-dir>/checkpoint.pt)"
    )
    group.add_argument("--no-resume", action="store_true", help="start afresh even if <out-dir>/checkpoint.pt exists")
    group.add_argument(
        "--restart-if-changed",
        action="store_true",
        help="resume <out-dir>/checkpoint.pt if it is of this run; if it is of another (architecture, settings or "
        "tiles changed), move it (with encoder.pt, train.json) to <name>.stale-<time> and start afresh instead "
        "of failing",
    )
    p.set_defaults(func=_cmd_train)
