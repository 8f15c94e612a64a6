"""What the Snakefile computes when it parses: the validated config, the plan, the checked checkpoint.

Everything a user can get wrong in the config is found here, before any job runs: the schema,
the ROI, the chunk size against the resolution, and the checkpoint (missing, unreadable, or not
of ``model.family``). Parsing writes nothing: the plan is computed in memory, or read from its
content-addressed store when an earlier run's ``plan`` rule wrote it (so a cluster job, which
re-parses the workflow, reads a few kilobytes instead of re-planning the ROI).

The checks that need PyTorch (the checkpoint, the training settings) run in Snakemake's main process
only: a job's own parse (a cluster job, ``--mode remote``/``subprocess``) was preceded by the main
process's, which checked them before submitting anything, so a search or read job, which never uses
PyTorch, does not import it (about 1.8 s and 185 MB less per job; README).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import rasterio.errors
import rasterio.warp

import tessera
from tessera.config import Config, load_config, parse_config
from tessera.errors import ConfigError, RoiError, TesseraError
from tessera.grid import load_roi, utm_crs_for
from tessera.plan import Plan, compute_plan, parts, plan_key
from tessera.results import Results, part_name
from tessera.sources import earthdata_token, resolve_source
from tessera.stages import STAGE_VERSIONS, settings_json

__all__ = [
    "Setup",
    "default_config",
    "export_project_root",
    "or_exit",
    "setup",
    "train_settings",
]

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class Setup:
    """A parsed run: config, results layout, plan and model family."""

    cfg: Config
    """The validated config."""
    results: Results
    """The results layout."""
    plan: Plan
    """The plan (chunks and tiles)."""
    family: str | None
    """The model family the checkpoint was checked to be (``demo`` without a checkpoint); None in a
    job's parse, which does not check it (see the module docstring)."""
    plan_source: str
    """``stored`` or ``computed``: where the plan came from."""

    @property
    def key(self) -> str:
        """The plan's content address."""
        return self.plan.key

    def parts(self, chunk: str) -> list[str]:
        """Names of a chunk's inference jobs."""
        n = self.cfg.infer_tiles_per_job
        return [part_name(i, n) for i in range(len(parts(self.plan.tiles[chunk], n)))]

    def settings(self, stage: str) -> str:
        """A stage's settings (its params) as JSON."""
        return settings_json(self.cfg, stage)

    @staticmethod
    def version(stage: str) -> int:
        """A stage's code version (a param)."""
        return STAGE_VERSIONS[stage]

    def alignment_note(self) -> str | None:
        """A note for the parse log when the product grid is not the ROI's UTM zone at 10 m, the grid of
        published TESSERA (and AlphaEarth) tiles, so the products will not line up with them; else None."""
        g = self.plan.grid
        west, south, east, north = rasterio.warp.transform_bounds(g.crs, "EPSG:4326", *g.bounds)
        utm = utm_crs_for((west + east) / 2, (south + north) / 2)
        if g.crs == utm and g.resolution == 10:
            return None
        return (
            f"tessera: note: the products are on {g.crs} at {g.resolution:g} m (the ROI's CRS and `resolution`), "
            f"not on {utm} at 10 m like published TESSERA tiles, so they will not line up pixel for pixel with "
            f"them; give the ROI in {utm} or in EPSG:4326, and resolution 10, for products that do"
        )

    def summary(self) -> str:
        """One line for the parse log."""
        g = self.plan.grid
        return (
            f"tessera: ROI {self.cfg.roi} -> grid {g.crs} {g.width}x{g.height} px, {len(self.plan.chunks)} chunks, "
            f"{self.plan.tile_count} tiles in {sum(len(self.parts(c.id)) for c in self.plan.chunks)} inference jobs, "
            f"years {', '.join(map(str, self.cfg.years))}; model {self.family or 'checked by the main process'}; "
            f"plan {self.key} ({self.plan_source})"
        )


def _stored_plan(results: Results, key: str, tile_size: int) -> Plan | None:
    """The plan the ``plan`` rules stored, or None; without its tiles file (a job that starts while
    ``plan_tiles`` runs) the tiles are found from the stored mask, which is far cheaper than re-planning."""
    import json

    from tessera.plan import StoredPlan, tile_stored_plan

    chunks, tiles = Path(results.plan_chunks(key)), Path(results.plan_tiles(key, tile_size))
    if not chunks.is_file():
        return None
    try:
        if not tiles.is_file():
            return tile_stored_plan(StoredPlan(chunks.parent), tile_size)
        return Plan.from_documents(json.loads(chunks.read_text()), json.loads(tiles.read_text()))
    except (OSError, ValueError, KeyError, TesseraError, rasterio.errors.RasterioError) as exc:
        logger.warning("ignoring the unreadable stored plan %s (%s): planning again", chunks.parent, exc)
        return None


def setup(config: dict[str, Any], *, check: bool = True) -> Setup:
    """Validate ``config``, plan the ROI (or read the stored plan) and check the checkpoint.

    Args:
        config: The config mapping (validated here).
        check: Load the checkpoint and check its family (imports PyTorch), check that a source
            needing credentials (opera: an Earthdata token) has them and that a ``python:`` signer
            imports. False only where a parse of the same config already checked these (a Snakemake
            job's own parse).

    Raises:
        TesseraError: any problem with the config, the ROI, the checkpoint or the credentials
            (`ConfigError`, `RoiError`, `CheckpointError`, `DataSourceError`), with a message that says
            how to fix it.
    """
    cfg = parse_config(config)
    if Path(cfg.results_dir).exists() and not Path(cfg.results_dir).is_dir():
        raise ConfigError(f"results_dir {cfg.results_dir} is a file; set results_dir to a directory (new or existing)")
    results = Results(cfg.results_dir)
    if not Path(cfg.roi).exists():
        load_roi(cfg.roi)  # raises the RoiError that says so
    key = plan_key(cfg.roi, cfg.resolution, cfg.chunk_size_m)
    plan = _stored_plan(results, key, cfg.tile_size)
    source = "stored"
    if plan is not None:
        area_km2 = sum(plan.inside.values()) * cfg.resolution**2 / 1e6
        if area_km2 > cfg.max_roi_area_km2:
            raise RoiError(
                f"ROI {cfg.roi} covers {area_km2:.1f} km2, more than max_roi_area_km2 = {cfg.max_roi_area_km2}; "
                "raise max_roi_area_km2 in the config if you mean it, or use a smaller ROI"
            )
    else:
        start = time.monotonic()
        roi = load_roi(cfg.roi, cfg.resolution, cfg.max_roi_area_km2)
        plan = compute_plan(roi, key, cfg.chunk_size_m, cfg.tile_size)
        source = f"computed in {time.monotonic() - start:.1f} s"
    family = None
    if check:
        for kind in ("s2", "s1"):
            src = resolve_source(cfg.source(kind), kind)
            # before any job runs: without a token, or with a signer that cannot be imported, the
            # searches would run and every read fail later
            if src.auth == "earthdata":
                earthdata_token()
            if src.sign.startswith("python:"):
                src.href_patcher()
        from tessera import models

        m = cfg.model
        family = models.check(m.checkpoint, m.family, source=cfg.s2.source, dimensions=m.dimensions)
    return Setup(cfg, results, plan, family, source)


def export_project_root(root: Path) -> str:
    """Tell ``envs/tessera.post-deploy.sh`` what to install: the checkout at ``root``, or this release.

    Snakemake creates conda environments from copies of the env files, so the post-deploy script
    learns the checkout from ``TESSERA_PROJECT_ROOT`` in the environment of this process (set here,
    when the Snakefile parses; no file is written).
    """
    value = str(root) if (root / "pyproject.toml").is_file() else f"tessera-pipeline=={tessera.__version__}"
    os.environ["TESSERA_PROJECT_ROOT"] = value
    return value


def train_settings(basedir: Path, *, check: bool = True) -> list[str]:
    """The ``train`` target's settings file, validated now (a bad one fails the parse); [] for the defaults.

    ``TESSERA_TRAIN_CONFIG`` names the file; else ``config/train.yaml`` beside the Snakefile. ``check``
    False (a job's own parse, after the main process checked it) skips the validation, which imports
    PyTorch.
    """
    path = Path(os.environ.get("TESSERA_TRAIN_CONFIG", str(basedir / "config" / "train.yaml")))
    if not path.is_file():
        return []
    if check:
        from tessera.train import load_train_config

        load_train_config(path)
    return [str(path)]


def default_config(basedir: Path) -> dict[str, Any]:
    """The config of a run given no ``--configfile``: ``config/config.yaml`` beside the Snakefile, validated.

    Raises:
        ConfigError: There is no such file (an installed package ships none), or it is invalid.
    """
    path = basedir / "config" / "config.yaml"
    if not path.is_file():
        raise ConfigError(
            f"no config given, and {path} does not exist: pass --configfile <your config.yaml> (the repository's "
            "config/config.yaml is a documented example; `tessera config-docs` lists every key)"
        )
    return load_config(path)


def or_exit(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` for the Snakefile: a named error becomes Snakemake's one-line ``WorkflowError``.

    Example: ``S = or_exit(setup, config, check=workflow.is_main_process)``.
    """
    try:
        return fn(*args, **kwargs)
    except TesseraError as exc:
        raise _workflow_error(exc) from None


def _workflow_error(exc: TesseraError) -> Exception:
    from snakemake.exceptions import WorkflowError

    error: Exception = WorkflowError(f"{type(exc).__name__}: {' '.join(str(exc).split())}")
    return error
